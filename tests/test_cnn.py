"""The per-frame CNN: model factory, training on rendered videos, softmax export, SVM
baseline, checkpoints, the Ray Tune trainable and the ``kitchen-study cnn`` commands."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from data_prep.errors import DataError
from data_prep.table import DatasetCard, FrameTable, Split, VideoLabels, read_table, write_table
from study.cli import app
from trainables.cnn_config import CNNConfig, CNNSpec
from trainables.cnn_data import plan_epoch
from trainables.cnn_job import (
    CheckpointMismatch,
    CNNTrainer,
    ConfigError,
    export_features,
    load_checkpoint,
)
from trainables.cnn_model import build_model
from trainables.frames import FrameSource, render_toy_dataset
from trainables.svm_baseline import svm_baseline

# Small and fast on 2 shared CPU cores; the toy shapes are learnt in ~20 steps.
SMALL = {
    "model": "resnet18", "image_size": 32, "batch_size": 8, "optimizer": "adamw", "lr": 1e-3,
    "stride": 1, "shuffle_buffer": 32, "interleave": 3, "seed": 0,
}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    table = render_toy_dataset(root, participants=4, seed=0)
    path = write_table(table, root / "toy.parquet")
    return root, path


@pytest.fixture(scope="module")
def trained(toy):
    torch.set_num_threads(1)
    root, path = toy
    trainer = CNNTrainer(CNNConfig(**SMALL), read_table(path), 1, FrameSource(root / "videos"),
                         device="cpu")
    stats = trainer.train(20)
    ckpt = trainer.save(root / "ckpt" / "cnn.pt")
    return trainer, stats, ckpt


def _majority_share(table: FrameTable, videos: np.ndarray) -> float:
    labels = np.concatenate([table.video_labels(v) for v in videos])
    return float(np.bincount(labels).max() / labels.size * 100)


def invoke(*args):
    return CliRunner().invoke(app, [*map(str, args)])


# -- model ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_model_head_has_the_dataset_classes(name):
    model = build_model(name, 5).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 64, 64, dtype=torch.uint8))
    assert out.shape == (2, 5)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown torchvision classification model 'resnet19'"):
        build_model("resnet19", 3)


def test_local_weights_initialise_the_backbone(tmp_path):
    import torchvision.models as tvm

    torch.manual_seed(1)
    imagenet = tvm.resnet18(weights=None)
    torch.save(imagenet.state_dict(), tmp_path / "r18.pth")
    model = build_model("resnet18", 3, tmp_path / "r18.pth")
    assert torch.equal(model.backbone.conv1.weight, imagenet.conv1.weight)
    assert model.backbone.fc.out_features == 3  # fresh head, not the 1000-way one
    # weights of another architecture do not fit
    torch.save(tvm.mobilenet_v3_small(weights=None).state_dict(), tmp_path / "m.pth")
    with pytest.raises(DataError, match="weights do not fit resnet18"):
        build_model("resnet18", 3, tmp_path / "m.pth")
    with pytest.raises(DataError, match="weights file does not exist"):
        build_model("resnet18", 3, tmp_path / "nope.pth")


def test_imagenet_weights_come_from_disk_only(tmp_path, monkeypatch):
    import torchvision.models as tvm

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    with pytest.raises(DataError) as e:
        build_model("resnet18", 3, "imagenet")
    msg = str(e.value)
    assert "not on disk" in msg and "nothing is downloaded" in msg and "resnet18-" in msg
    # once torchvision's own file is in the hub cache, "imagenet" loads it
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    sd = tvm.resnet18(weights=None).state_dict()
    name = tvm.ResNet18_Weights.DEFAULT.url.rsplit("/", 1)[1]
    torch.save(sd, tmp_path / "hub" / "checkpoints" / name)
    model = build_model("resnet18", 3, "imagenet")
    assert torch.equal(model.backbone.layer1[0].conv1.weight, sd["layer1.0.conv1.weight"])


def test_inception_imagenet_weights_drop_the_aux_head(toy, tmp_path):
    import torchvision.models as tvm

    sd = tvm.inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict()
    assert any(k.startswith("AuxLogits.") for k in sd)
    torch.save(sd, tmp_path / "inception.pth")
    root, path = toy
    cfg = CNNConfig(model="inception_v3", weights=str(tmp_path / "inception.pth"), image_size=80)
    trainer = CNNTrainer(cfg, read_table(path), 1, FrameSource(root / "videos"), device="cpu")
    model = trainer.model
    assert model.backbone.AuxLogits is None and model.backbone.fc.out_features == 4
    assert model.backbone.transform_input  # what torchvision's ImageNet Inception expects
    assert not build_model("inception_v3", 4).backbone.transform_input  # random init
    assert torch.equal(model.backbone.Mixed_7c.branch1x1.conv.weight,
                       sd["Mixed_7c.branch1x1.conv.weight"])
    # a checkpoint remembers the input transform: the reloaded model gives the same softmax
    reloaded, meta = load_checkpoint(trainer.save(tmp_path / "inception_cnn.pt"))
    assert meta["transform_input"] is True and reloaded.backbone.transform_input
    x = torch.randint(0, 256, (2, 3, 80, 80), dtype=torch.uint8)
    with torch.no_grad():
        out = model.eval()(x)
        assert out.shape == (2, 4) and torch.allclose(out, reloaded(x), atol=1e-5)


# -- config and sampling -------------------------------------------------------------------


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="unknown key 'modle'"):
        CNNConfig.parse({"modle": "resnet18"})
    with pytest.raises(ConfigError, match="optimizer"):
        CNNConfig.parse({"optimizer": "adam"})
    with pytest.raises(ConfigError, match="crop_scale"):
        CNNConfig.parse({"crop_scale": (0.5, 0.2)})
    with pytest.raises(ConfigError, match="frames_root"):
        CNNSpec.parse({"table_path": "t.parquet"})
    with pytest.raises(ConfigError, match="eval_at 9 is outside"):
        CNNSpec.parse({"table_path": "t", "frames_root": "f", "iterations": 5, "eval_at": "2,9"})
    assert CNNConfig().learning_rate == 1e-3 and CNNConfig(optimizer="adamw").learning_rate == 1e-4


def test_plan_plain_takes_every_stride_th_frame():
    offsets = np.array([0, 10, 13, 40])
    labels = np.zeros(40, np.int16)
    plan = plan_epoch(offsets, labels, np.array([0, 1, 2]), 4, False, np.random.default_rng(0))
    assert sorted(v for v, _ in plan) == [0, 1, 2]
    for v, frames in plan:
        n = offsets[v + 1] - offsets[v]
        assert frames[0] < min(4, n) and np.all(np.diff(frames) == 4) and frames[-1] + 4 >= n


def test_plan_balanced_evens_out_classes():
    # class 0 has 90 % of the frames, classes 1 and 2 5 % each
    labels = np.concatenate([np.zeros(900), np.ones(50), np.full(50, 2)]).astype(np.int16)
    labels = np.concatenate([labels, labels])
    offsets = np.array([0, 1000, 2000])
    plan = plan_epoch(offsets, labels, np.array([0, 1]), 2, True, np.random.default_rng(0))
    drawn = np.concatenate([labels[offsets[v] + f] for v, f in plan])
    assert drawn.size == 1000
    share = np.bincount(drawn, minlength=3) / drawn.size
    assert np.all(np.abs(share - 1 / 3) < 0.06), share
    plain = plan_epoch(offsets, labels, np.array([0, 1]), 2, False, np.random.default_rng(0))
    assert np.bincount(np.concatenate([labels[offsets[v] + f] for v, f in plain]))[0] > 800


# -- training, evaluation, export ----------------------------------------------------------


def test_training_beats_the_majority_class(toy, trained):
    _, path = toy
    trainer, stats, _ = trained
    table = read_table(path)
    assert trainer.iteration == 20 and stats["frames_per_s"] > 0 and 0 <= stats["data_wait"] <= 1
    result = trainer.evaluate()
    _, test = table.split_indices(1)
    assert result["eval_frames"] == int(table.lengths[test].sum())
    assert result["frame_acc"] > _majority_share(table, test) + 10, result


def test_export_writes_one_softmax_row_per_frame(toy, trained, tmp_path):
    _, path = toy
    trainer, _, _ = trained
    out = tmp_path / "toy_cnn_split1.parquet"
    summary = trainer.export(out)
    exported = read_table(out)
    source = read_table(path)
    assert exported.features.shape == (source.num_frames, 4)
    assert np.allclose(exported.features.sum(1), 1, atol=1e-5)
    assert np.all(exported.features >= 0)
    assert np.array_equal(exported.labels, source.labels) and exported.videos == source.videos
    card = exported.card.features
    assert card["kind"] == "cnn_softmax" and card["model"] == "resnet18"
    assert card["split"] == "split1" and card["dim"] == 4 and card["iteration"] == 20
    assert summary["frames"] == source.num_frames and summary["padded"] == {}
    # the export's argmax accuracy on the test frames is the evaluation's
    assert summary["softmax_acc"]["test"] == pytest.approx(trainer.evaluate()["frame_acc"])
    pred = exported.features.argmax(1)
    _, test = source.split_indices(1)
    rows = np.concatenate([np.arange(source.offsets[v], source.offsets[v + 1]) for v in test])
    assert summary["softmax_acc"]["test"] == pytest.approx(
        np.mean(pred[rows] == source.labels[rows]) * 100)


def test_checkpoint_restores_the_model(toy, trained):
    root, path = toy
    trainer, _, ckpt = trained
    raw = torch.load(ckpt, weights_only=True)  # no pickled objects
    assert raw["format"] == "kitchen-study.cnn/1"
    fresh = CNNTrainer(CNNConfig(**SMALL), read_table(path), 1, FrameSource(root / "frames"),
                       device="cpu")
    fresh.load(ckpt)
    assert fresh.iteration == 20
    a = fresh.predict(np.array([0]))[1]
    fresh.source = trainer.source
    b, c = fresh.predict(np.array([0]))[1], trainer.predict(np.array([0]))[1]
    assert np.array_equal(b, c)
    assert np.abs(a - b).max() < 0.2  # JPEG frames vs H.264 frames: nearly the same input
    model, meta = load_checkpoint(ckpt)
    assert meta["split"] == "split1" and meta["classes"][0] == "background"
    # a table with other classes cannot take this checkpoint
    other = read_table(path)
    other = FrameTable.from_videos(
        other.card.replace(classes=("a", "b", "c", "d", "e"), background=None),
        [VideoLabels(v, other.video_labels(i), other.participant[i])
         for i, v in enumerate(other.videos)],
    )
    with pytest.raises(CheckpointMismatch, match="classes"):
        CNNTrainer(CNNConfig(**SMALL), other, 1, FrameSource(root / "videos"), device="cpu").load(
            ckpt)


def test_the_two_jobs_checkpoints_are_not_interchangeable(toy, trained, tmp_path):
    """A CNN checkpoint given to the LSTM, and an LSTM checkpoint given to the CNN: one clean
    CheckpointError (a DataError: exit 2 in the CLI) naming the file and both formats."""
    from tests.helpers import recipe_table
    from trainables.job import CheckpointError
    from trainables.train_job import TrainRun
    from trainables.train_job import load_checkpoint as load_lstm

    root, path = toy
    _, _, cnn_ckpt = trained
    lstm_table = write_table(recipe_table(videos=4, classes=4), tmp_path / "r.parquet")
    run = TrainRun.create({"target_path": str(lstm_table), "iterations": 1, "history": 8,
                           "hidden": 4, "batch_size": 2})
    run.run()
    lstm_ckpt = run.save(tmp_path / "lstm.pt")

    with pytest.raises(CheckpointError, match=rf"^{cnn_ckpt}: a kitchen-study\.cnn/1 checkpoint, "
                       r"not the kitchen-study\.temporal/1"):
        load_lstm(cnn_ckpt)
    with pytest.raises(CheckpointError,
                       match=rf"^{lstm_ckpt}: a kitchen-study\.temporal/1 checkpoint"):
        load_checkpoint(lstm_ckpt)
    fresh = CNNTrainer(CNNConfig(**SMALL), read_table(path), 1, FrameSource(root / "videos"),
                       device="cpu")
    with pytest.raises(CheckpointError, match="kitchen-study.temporal/1 checkpoint"):
        fresh.load(lstm_ckpt)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a loadable checkpoint"):
        fresh.load(tmp_path / "empty.pt")
    # the CLIs: exit 2, one line, no traceback and no advice to load the file unsafely
    for args in (["train", lstm_table, "--iterations", "1", "--init", cnn_ckpt],
                 ["train", lstm_table, "--iterations", "1", "--init", tmp_path / "empty.pt"],
                 ["cnn", "export", lstm_ckpt, path, "--frames", root / "videos", "--out",
                  tmp_path / "x.parquet"],
                 ["cnn", "export", tmp_path / "empty.pt", path, "--frames", root / "videos",
                  "--out", tmp_path / "x.parquet"]):
        r = invoke(*args)
        assert r.exit_code == 2, r.output
        assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
        assert "checkpoint" in r.stderr and "weights_only" not in r.stderr
    assert not (tmp_path / "x.parquet").exists()


def test_loader_workers_give_the_same_results(toy, trained, tmp_path):
    # the multi-process path (what a GPU run uses): same softmax rows, errors still DataError
    root, path = toy
    trainer, _, _ = trained
    which = np.arange(read_table(path).num_videos)
    rows0, p0, _ = trainer.predict(which, workers=0)
    rows2, p2, _ = trainer.predict(which, workers=2)
    assert np.array_equal(np.sort(rows0), np.sort(rows2))
    assert np.allclose(p0[np.argsort(rows0)], p2[np.argsort(rows2)], atol=1e-6)
    table, source = _broken(root, tmp_path, "missing")
    with pytest.raises(DataError, match=f"video '{table.videos[0]}': no video file"):
        export_features(trainer.model, table, source, tmp_path / "w.parquet", split="split1",
                        image_size=32, device="cpu", workers=2)
    assert not (tmp_path / "w.parquet").exists()
    cfg = CNNConfig(**{**SMALL, "workers": 2, "batch_size": 4, "shuffle_buffer": 4})
    two = CNNTrainer(cfg, read_table(path), 1, FrameSource(root / "videos"), device="cpu")
    assert two.train(2)["frames_per_s"] > 0 and two.iteration == 2
    two.close()


def test_export_refuses_to_overwrite_its_input(toy, trained):
    root, path = toy
    trainer, _, _ = trained
    with pytest.raises(DataError, match="overwrite its input"):
        export_features(trainer.model, read_table(path), FrameSource(root / "videos"), path,
                        split="split1", source_path=path, image_size=32, device="cpu")


# -- bad input: a clear error naming the video, and no output file ---------------------------


def _broken(root, tmp_path, kind):
    """A copy of the toy frames with the first video damaged in one way."""
    table = read_table(root / "toy.parquet")
    first = table.videos[0]
    if kind in ("missing", "corrupt", "short"):
        frames = tmp_path / "videos"
        shutil.copytree(root / "videos", frames)
        video = frames / f"{first}.mp4"
        if kind == "missing":
            video.unlink()
        elif kind == "corrupt":
            video.write_bytes(b"not a video" * 100)
        else:  # the table claims 8 more frames than the video has
            table = FrameTable.from_videos(table.card, [
                VideoLabels(v, np.concatenate([table.video_labels(i), np.zeros(8, np.int64)])
                            if i == 0 else table.video_labels(i), table.participant[i], "toy")
                for i, v in enumerate(table.videos)
            ])
    else:
        frames = tmp_path / "frames"
        shutil.copytree(root / "frames", frames)
        if kind == "missing_folder":
            shutil.rmtree(frames / first)
        else:
            (frames / first / "img_00004.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return table, FrameSource(frames)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "no video file or frame folder found"),
        ("corrupt", "cannot open"),
        ("short", "8 trailing frames are missing"),
        ("missing_folder", "no video file or frame folder found"),
        ("bad_image", "frame 3: cannot decode image"),
    ],
)
def test_bad_input_leaves_no_export(toy, trained, tmp_path, kind, message):
    root, _ = toy
    trainer, _, _ = trained
    table, source = _broken(root, tmp_path, kind)
    outdir = tmp_path / "out"
    outdir.mkdir()
    with pytest.raises(DataError) as e:
        export_features(trainer.model, table, source, outdir / "x.parquet", split="split1",
                        image_size=32, device="cpu")
    assert message in str(e.value) and f"'{table.videos[0]}'" in str(e.value)
    assert list(outdir.iterdir()) == []


# -- SVM baseline ---------------------------------------------------------------------------


def _feature_table(noise: float, seed: int = 0) -> FrameTable:
    """Four videos whose features are noisy one-hot vectors of their labels."""
    rng = np.random.default_rng(seed)
    videos = []
    for i in range(4):
        labels = np.repeat(rng.permutation(3), 40)
        feats = np.eye(3)[labels] + rng.normal(0, noise, (labels.size, 3))
        videos.append(VideoLabels(f"v{i}", labels, f"p{i}", features=feats.astype(np.float32)))
    card = DatasetCard("feat", 15.0, ("a", "b", "c"), None, "test", "1",
                       (Split("split1", ("v0", "v1", "v2"), ("v3",)),))
    return FrameTable.from_videos(card, videos)


def test_svm_baseline_grid_search():
    table = _feature_table(noise=0.3)
    out = svm_baseline(table, 1, max_train=200, folds=3, C=(0.01, 10.0), gamma=(0.1, 1.0))
    assert out["train_frames"] == 200 and out["test_frames"] == 120
    assert out["C"] in (0.01, 10.0) and out["gamma"] in (0.1, 1.0)
    assert out["svm_acc"] > 90 and out["cv_acc"] > 90
    assert out["softmax_acc"] == pytest.approx(
        np.mean(table.features[360:].argmax(1) == table.labels[360:]) * 100)
    with pytest.raises(DataError, match="no features"):
        svm_baseline(read_table_without_features(table), 1)


def read_table_without_features(table: FrameTable) -> FrameTable:
    import dataclasses

    return dataclasses.replace(table, features=None)


# -- CLI and the LSTM on the export ----------------------------------------------------------


def test_cli_export_svm_and_lstm_train(toy, trained, tmp_path):
    root, path = toy
    _, _, ckpt = trained
    out = tmp_path / "toy_cnn.parquet"
    r = invoke("cnn", "export", ckpt, path, "--frames", root / "frames", "--out", out, "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    table = read_table(out)
    assert summary["frames"] == table.num_frames and table.feature_dim == 4
    assert np.allclose(table.features.sum(1), 1, atol=1e-5)
    _, test = table.split_indices(1)
    assert summary["softmax_acc"]["test"] > _majority_share(table, test)

    r = invoke("cnn", "svm", out, "--split", "1", "--max-train", "60", "--folds", "3",
               "--c", "1,10", "--gamma", "1", "--json")
    assert r.exit_code == 0, r.output
    svm = json.loads(r.stdout)
    assert svm["train_frames"] == 60 and 0 <= svm["svm_acc"] <= 100
    assert svm["softmax_acc"] == pytest.approx(summary["softmax_acc"]["test"])

    # the LSTM trains on the exported softmax (the paper's stage 3)
    r = invoke("train", out, "--split", "1", "--iterations", "4", "--history", "16",
               "--hidden", "8", "--batch", "4", "--json")
    assert r.exit_code == 0, r.output
    lstm = json.loads(r.stdout)
    assert lstm["iterations"] == 4 and 0 <= lstm["frame_acc"] <= 100
    assert lstm["input_acc"] == pytest.approx(summary["softmax_acc"]["test"])


def test_cli_train_json_and_errors(toy, tmp_path):
    root, path = toy
    out = tmp_path / "e.parquet"
    args = ["cnn", "train", path, "--frames", root / "videos", "--model", "resnet18",
            "--image-size", "32", "--batch", "4", "--optimizer", "adamw", "--stride", "4",
            "--set", "shuffle_buffer=4", "--device", "cpu"]
    r = invoke(*args, "--iterations", "2", "--save", tmp_path / "c.pt", "--export", out, "--json")
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert result["iterations"] == 2 and result["split"] == "split1"
    assert result["frame_acc"] == result["export"]["softmax_acc"]["test"]
    assert out.is_file() and (tmp_path / "c.pt").is_file()

    r = invoke(*args, "--iterations", "1", "--set", "shufle_buffer=4")
    assert r.exit_code == 2 and "unknown key 'shufle_buffer'" in r.output
    r = invoke(*args, "--iterations", "1", "--split", "7")
    assert r.exit_code == 2 and "no split 'split7'" in r.output
    r = invoke(*args[:3], "--frames", tmp_path / "nowhere", "--iterations", "1")
    assert r.exit_code == 2 and "frame root folder does not exist" in r.output
    r = invoke("cnn", "export", tmp_path / "c.pt", path, "--frames", tmp_path / "nowhere",
               "--out", tmp_path / "f.parquet")
    assert r.exit_code == 2 and not (tmp_path / "f.parquet").exists()


# -- Ray Tune trainable ----------------------------------------------------------------------


def _trainable_config(root, path, **over):
    return {
        **SMALL, "batch_size": 4, "shuffle_buffer": 4, "table_path": str(path),
        "frames_root": str(root / "videos"), "iterations": 4, "iterations_per_step": 2,
        "eval_at": [2], "eval_stride": 3, "device": "cpu", **over,
    }


def test_trainable_steps_saves_and_restores(toy, tmp_path):
    from trainables.cnn_trainable import CNNTrainable

    root, path = toy
    t = CNNTrainable(config=_trainable_config(root, path))
    r1 = t.train()
    assert r1["iteration"] == 2 and "frame_acc" in r1 and r1["curve"] == {"2": r1["frame_acc"]}
    assert not r1["done"]
    ckpt_dir = tmp_path / "ck"
    ckpt_dir.mkdir()
    t.save_checkpoint(str(ckpt_dir))
    assert (ckpt_dir / "cnn.pt").is_file()
    r2 = t.train()
    assert r2["iteration"] == 4 and r2["done"] and set(r2["curve"]) == {"2", "4"}
    t.stop()

    restored = CNNTrainable(config=_trainable_config(root, path))
    restored.load_checkpoint(str(ckpt_dir))
    assert restored.run.iteration == 2 and restored.run.curve == {"2": r1["frame_acc"]}
    assert torch.get_num_threads() == 1  # follows num_cpus (1) outside Tune
    restored.stop()

    with pytest.raises(ConfigError, match="unknown key 'itrations'"):
        CNNTrainable(config=_trainable_config(root, path, itrations=3))


@pytest.mark.slow
def test_trainable_under_ray_tune(toy, tmp_path):
    import ray
    from ray import tune

    from trainables.cnn_trainable import CNNTrainable

    root, path = toy
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        tuner = tune.Tuner(
            CNNTrainable,
            param_space=_trainable_config(root, path, export_path=str(tmp_path / "x.parquet")),
            run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), name="cnn",
                                      checkpoint_config=tune.CheckpointConfig(
                                          checkpoint_at_end=True)),
        )
        result = tuner.fit()[0]
    finally:
        ray.shutdown()
    assert result.error is None
    assert result.metrics["iteration"] == 4 and result.metrics["done"]
    assert result.checkpoint is not None
    assert read_table(tmp_path / "x.parquet").feature_dim == 4
