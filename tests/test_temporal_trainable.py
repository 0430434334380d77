"""The Ray Tune class trainable: steps and evaluation points, exact resume through
save/restore, resources, and one short real Tune run (a local Ray with 2 CPUs)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from data_prep.table import write_table
from tests.helpers import recipe_table
from trainables.job import ConfigError
from trainables.metrics import METRIC_NAMES
from trainables.temporal_trainable import CHECKPOINT_FILE, TemporalTrainable


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def config(tmp_path):
    t = write_table(recipe_table(videos=6, classes=6, name="tgt", seed=1), tmp_path / "t.parquet")
    s = write_table(recipe_table(videos=6, classes=4, name="src", seed=2), tmp_path / "s.parquet")
    return {
        "target_path": str(t), "target_split": 1, "source_path": str(s), "source_split": 2,
        "mode": "joint", "arrangement": "merged", "history": 16, "hidden": 16, "batch_size": 8,
        "lr": 0.01, "iterations": 24, "iterations_per_step": 8, "eval_at": [8],
    }


def _strip(result: dict) -> dict:
    keys = ("iteration", "loss", "done", "curve", *METRIC_NAMES)
    return {k: result[k] for k in keys if k in result}


def test_steps_resume_exactly_through_save_and_restore(config, tmp_path):
    whole = TemporalTrainable(config)
    expected = [_strip(whole.train()) for _ in range(3)]
    whole.stop()
    assert [r["iteration"] for r in expected] == [8, 16, 24]
    assert [r["done"] for r in expected] == [False, False, True]
    assert "frame_acc" in expected[0] and "frame_acc" not in expected[1]  # eval_at + end
    assert list(expected[2]["curve"]) == ["8", "24"]

    first = TemporalTrainable(config)
    assert _strip(first.train()) == expected[0]
    ckdir = tmp_path / "ck"
    first.save(str(ckdir))
    first.stop()
    assert (ckdir / CHECKPOINT_FILE).is_file()

    resumed = TemporalTrainable(config)
    resumed.restore(str(ckdir))
    assert [_strip(resumed.train()) for _ in range(2)] == expected[1:]
    resumed.stop()


def test_resources_threads_and_device(config):
    pgf = TemporalTrainable.default_resource_request({**config, "num_cpus": 2, "num_gpus": 0.5})
    assert pgf.required_resources == {"CPU": 2.0, "GPU": 0.5}
    assert TemporalTrainable.default_resource_request(config).required_resources == {"CPU": 1.0}
    t = TemporalTrainable({**config, "num_cpus": 2})  # outside Tune: the config's numbers
    assert torch.get_num_threads() == 2
    assert t.run.device.type == "cpu"  # no GPU requested
    t.stop()
    torch.set_num_threads(1)


def test_unknown_key_fails_setup(config):
    with pytest.raises(ConfigError, match="unknown key 'lerning_rate'"):
        TemporalTrainable({**config, "lerning_rate": 0.1})


def test_real_tune_run(config, tmp_path):
    """One short trial under a real local Ray Tune (2 CPUs, the trial takes 1), checkpointed
    at the end; the trial stops itself when ``done``."""
    import ray
    from ray import tune

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        tuner = tune.Tuner(
            TemporalTrainable,
            param_space={**config, "iterations": 16, "seed": tune.grid_search([3])},
            run_config=tune.RunConfig(
                storage_path=str(tmp_path / "tune"),
                name="lstm",
                checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=True),
                verbose=0,
            ),
        )
        results = tuner.fit()
    finally:
        ray.shutdown()
    assert len(results) == 1 and not results.errors
    r = results[0]
    assert r.config["seed"] == 3
    assert r.metrics["iteration"] == 16 and r.metrics["done"]
    assert r.metrics["training_iteration"] == 2  # two steps of iterations_per_step=8
    assert r.metrics["num_threads"] == 1  # torch threads follow the trial's 1 CPU
    assert 0 <= r.metrics["frame_acc"] <= 100 and r.metrics["input_acc"] > 0
    assert set(r.metrics["curve"]) == {"8", "16"}
    assert r.metrics["curve"]["16"] == r.metrics["frame_acc"]
    with r.checkpoint.as_directory() as d:
        assert (Path(d) / CHECKPOINT_FILE).is_file()
