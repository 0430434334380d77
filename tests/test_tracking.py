"""One contract suite over both RunLogger implementations (like Optuna's storage tests):
``study.tracking.MlflowRunLogger`` and the in-memory ``tests.memory_logger.InMemoryRunLogger``.

The MLflow implementation runs against a real SQLite store in a temporary directory (one
store for the module: creating MLflow's tables takes seconds); every test uses its own study
name so tests do not see each other's runs.
"""

from __future__ import annotations

import math
import uuid
from pathlib import Path

import pytest

from study.mlflow_layout import (
    CHECKPOINT_ARTIFACT,
    MAX_PARAM_VALUE,
    ParamConflict,
    StudyNotFound,
    TaskMeta,
    flatten_params,
    metrics_from_result,
)
from study.tracking import (
    MlflowRunLogger,
    RunLogger,
    code_version,
    fetch_checkpoint,
    log_checkpoint,
    log_result,
)
from tests.helpers import empty_mlflow_db
from tests.memory_logger import InMemoryRunLogger


@pytest.fixture(scope="module")
def mlflow_store(request, tmp_path_factory) -> Path:
    return empty_mlflow_db(request.config, tmp_path_factory.mktemp("mlflow") / "mlflow.db")


@pytest.fixture(params=["memory", "mlflow"])
def logger(request) -> RunLogger:
    if request.param == "memory":
        return InMemoryRunLogger()
    return MlflowRunLogger(f"sqlite:///{request.getfixturevalue('mlflow_store')}")


@pytest.fixture
def name() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def meta(task_id: str = "finetune/a>b/s0", **kw) -> TaskMeta:
    fields = dict(kind="finetune", mode="transfer", target="b", target_split="split1",
                  source="a", source_split="split1", arrangement="concat", seed=0)
    fields.update(kw)
    return TaskMeta(task_id=task_id, **fields)


# -- pure helpers ---------------------------------------------------------------------------


def test_flatten_params_rules():
    flat = flatten_params({"lr": 0.001, "model": {"hidden": 128, "cell": "lstm"},
                           "eval_at": [512, 1024], "init_checkpoint": None, "empty": {}})
    assert flat == {"lr": "0.001", "model.hidden": "128", "model.cell": "lstm",
                    "eval_at": "[512, 1024]", "init_checkpoint": "None", "empty": "{}"}
    long = flatten_params({"x": "a" * (MAX_PARAM_VALUE + 10)})["x"]
    assert len(long) == MAX_PARAM_VALUE
    assert long.startswith("aaaa")
    assert f"[truncated {MAX_PARAM_VALUE + 10} chars, sha256 " in long
    # deterministic: a resumed task logs the identical truncated value
    assert flatten_params({"x": "a" * (MAX_PARAM_VALUE + 10)})["x"] == long


def test_metrics_from_result_keeps_study_metrics_only():
    m = metrics_from_result({"iteration": 512, "loss": 1.5, "frame_acc": 40.0, "f1@10": 30.0,
                             "done": True, "hostname": "x", "edit": None,
                             "curve": {256: 20.0, 512: 40.0}})
    # the curve is frame_acc's step history already: not logged again as flat metrics
    assert m == {"loss": 1.5, "frame_acc": 40.0, "f1_10": 30.0}


def test_one_per_step_keeps_mlflows_latest_value_at_each_step():
    from study.mlflow_layout import one_per_step

    nan = float("nan")
    # (step, timestamp, value): step 20 logged twice (the later timestamp wins), step 10
    # twice in one millisecond (the larger value wins, as MLflow's latest_metrics)
    got = one_per_step([(20, 5, 30.0), (10, 1, 1.0), (10, 1, 2.0), (20, 7, 25.0), (30, 9, nan)])
    assert got[:2] == [(10, 2.0), (20, 25.0)] and got[2][0] == 30 and got[2][1] != got[2][1]


def test_task_meta_rejects_unknown_role():
    with pytest.raises(ValueError, match="role"):
        meta(role="worker").to_tags()


# -- the contract ---------------------------------------------------------------------------


def test_study_run_is_resumed_not_duplicated(logger, name):
    rid = logger.start_study(name, "h1")
    logger.end_study(rid, "KILLED", reason="Ctrl-C")
    assert logger.get_run(rid).tags["ks.error"] == "Ctrl-C"
    again = logger.start_study(name, "h1")
    assert again == rid
    rec = logger.get_run(rid)
    assert rec.status == "RUNNING"
    assert "ks.error" not in rec.tags  # the resumed run has not failed (yet)
    assert rec.tags["ks.role"] == "study"
    assert rec.tags["ks.study"] == name and rec.tags["ks.study_hash"] == "h1"
    assert rec.tags["ks.code_version"] == code_version() != ""
    other = logger.start_study(name, "h2")  # a changed spec is a new parent run
    assert other != rid
    for r in (rid, other):
        logger.end_study(r)
    assert {r.run_id for r in logger.study_runs(name, "h1")} == {rid}


def test_task_and_trial_tags(logger, name):
    sid = logger.start_study(name, "h")
    tid = logger.start_task(sid, meta(node="10.0.0.2"), params={"lr": 0.01})
    rec = logger.get_run(tid)
    assert rec.parent_run_id == sid
    assert rec.status == "RUNNING"
    expected = {"ks.role": "task", "ks.study": name, "ks.study_hash": "h",
                "ks.task_id": "finetune/a>b/s0", "ks.kind": "finetune", "ks.mode": "transfer",
                "ks.target": "b", "ks.target_split": "split1", "ks.source": "a",
                "ks.source_split": "split1", "ks.arrangement": "concat", "ks.seed": "0",
                "ks.node": "10.0.0.2", "ks.code_version": code_version()}
    assert {k: rec.tags[k] for k in expected} == expected
    assert rec.params == {"lr": "0.01"}

    search = logger.start_task(sid, meta("search/b", kind="search", mode="none", source="",
                                         source_split="", arrangement=""))
    trial = logger.start_task(sid, meta("search/b/trial0", kind="search", mode="none",
                                        role="trial"), parent_run_id=search)
    assert logger.get_run(search).tags["ks.source"] == ""
    trec = logger.get_run(trial)
    assert trec.parent_run_id == search and trec.role == "trial"
    logger.set_tags(trial, {"ks.node": "n2"})
    assert logger.get_run(trial).tags["ks.node"] == "n2"


def test_params_are_immutable_but_relogging_is_a_noop(logger, name):
    sid = logger.start_study(name, "h")
    tid = logger.start_task(sid, meta(), params={"lr": 0.01, "model": {"hidden": 128}})
    logger.log_params(tid, {"lr": 0.01, "model": {"hidden": 128}, "batch": 64})  # resume
    with pytest.raises(ParamConflict, match=r"model\.hidden: '128' -> '64'"):
        logger.log_params(tid, {"model": {"hidden": 64}, "depth": 2})
    # the conflicting call logged nothing, not even its new key
    assert logger.get_run(tid).params == {"lr": "0.01", "model.hidden": "128", "batch": "64"}


def test_metrics_with_steps_and_latest_value(logger, name):
    sid = logger.start_study(name, "h")
    tid = logger.start_task(sid, meta())
    log_result(logger, tid, {"iteration": 100, "loss": 2.0, "frame_acc": 10.0,
                             "curve": {100: 10.0}})
    log_result(logger, tid, {"iteration": 150, "loss": 1.5})  # no evaluation here
    log_result(logger, tid, {"iteration": 200, "loss": 1.0, "frame_acc": 30.0, "edit": 25.0,
                             "f1@50": 12.5, "curve": {100: 10.0, 200: 30.0}})
    m = logger.get_run(tid).metrics
    assert m["frame_acc"] == 30.0 and m["loss"] == 1.0 and m["edit"] == 25.0
    assert m["f1_50"] == 12.5 and m["iteration"] == 200.0
    assert not [k for k in m if k.startswith("curve")]
    other = logger.start_task(sid, meta("other"))
    logger.log_metrics(other, {"frame_acc": 5.0}, step=7)
    logger.log_metrics(other, {"frame_acc": 6.0}, step=7)  # again at one step: counts once
    # in bulk, any order, unknown ids and runs without the metric absent
    hist = logger.metric_histories([other, "no-such-run", tid, other], "frame_acc")
    assert hist == {tid: [(100, 10.0), (200, 30.0)], other: [(7, 6.0)]}
    assert logger.metric_histories([tid], "loss") == {tid: [(100, 2.0), (150, 1.5),
                                                            (200, 1.0)]}
    assert logger.metric_histories([tid], "f1@50") == {tid: [(200, 12.5)]}  # f1_50 in MLflow
    assert logger.metric_histories([], "loss") == {}


def test_checkpoint_round_trip(logger, name, tmp_path):
    sid = logger.start_study(name, "h")
    tid = logger.start_task(sid, meta("pretrain/a/s0", kind="pretrain", mode="none"))
    ckpt = tmp_path / "trial" / "weights.bin"  # any name: stored as checkpoint/lstm.pt
    ckpt.parent.mkdir()
    payload = bytes(range(256)) * 40
    ckpt.write_bytes(payload)
    log_checkpoint(logger, tid, ckpt)
    got = fetch_checkpoint(logger, tid, tmp_path / "dl")
    assert got.name == Path(CHECKPOINT_ARTIFACT).name and got.is_relative_to(tmp_path / "dl")
    assert got.read_bytes() == payload
    with pytest.raises(FileNotFoundError):
        logger.download_artifact(tid, "checkpoint/missing.pt", tmp_path / "dl2")
    with pytest.raises(FileNotFoundError):
        log_checkpoint(logger, tid, tmp_path / "nope.pt")


def test_end_status_and_reason(logger, name):
    sid = logger.start_study(name, "h")
    ok = logger.start_task(sid, meta("a"))
    bad = logger.start_task(sid, meta("b"))
    logger.end_task(ok)
    logger.end_task(bad, "FAILED", reason="RuntimeError: boom")
    assert logger.get_run(ok).status == "FINISHED" and "ks.error" not in logger.get_run(ok).tags
    assert logger.get_run(bad).status == "FAILED"
    assert logger.get_run(bad).tags["ks.error"] == "RuntimeError: boom"
    with pytest.raises(ValueError, match="end status"):
        logger.end_task(ok, "DONE")
    r = logger.get_run(ok)
    assert r.end_time is not None and r.start_time is not None and r.end_time >= r.start_time


def test_finished_tasks_and_close_running(logger, name):
    sid = logger.start_study(name, "hx")
    first = logger.start_task(sid, meta("t1"))
    logger.end_task(first, "FAILED", reason="worker died")
    retry = logger.start_task(sid, meta("t1"))  # a second attempt of the same task
    logger.end_task(retry)
    running = logger.start_task(sid, meta("t2"))
    search = logger.start_task(sid, meta("s", kind="search"))
    trial = logger.start_task(sid, meta("s/0", role="trial"), parent_run_id=search)
    logger.end_task(trial)  # a finished trial is not a finished task
    # another study hash must not leak in
    other = logger.start_study(name, "hy")
    logger.end_task(logger.start_task(other, meta("t1")))

    assert logger.finished_tasks("hx") == {"t1": retry}
    closed = logger.close_running("hx", "KILLED", reason="driver crashed")
    assert sorted(closed) == sorted([running, search])
    for rid in (running, search):
        rec = logger.get_run(rid)
        assert rec.status == "KILLED" and rec.tags["ks.error"] == "driver crashed"
    assert logger.get_run(sid).status == "RUNNING"  # the parent is resumed, not closed
    assert logger.close_running("hx") == []
    runs = logger.study_runs(name, "hx")
    assert not [r for r in runs if r.role != "study" and r.status == "RUNNING"]
    assert len(runs) == 1 + 5  # parent, 2 attempts of t1, t2, search, trial
    assert logger.get_run(first).status == "FAILED"  # failed attempts stay as records


def test_study_runs_selects_latest_hash_and_reports_missing(logger, name):
    old = logger.start_study(name, "old")
    logger.end_task(logger.start_task(old, meta("t")))
    new = logger.start_study(name, "new")
    assert {r.run_id for r in logger.study_runs(name)} == {new}
    assert len(logger.study_runs(name, "old")) == 2
    with pytest.raises(StudyNotFound):
        logger.study_runs(name, "nope")
    with pytest.raises(StudyNotFound):
        logger.study_runs(f"{name}-absent")
    with pytest.raises(ValueError, match="hash"):
        logger.finished_tasks("x' OR '1'='1")


def test_report_publishes_a_convergence_plot_per_target(logger, name, tmp_path):
    from study.report import publish_convergence_plots

    sid = logger.start_study(name, "h")
    for target, source in (("b", "a"), ("c", "a")):
        for kind, mode, src in (("baseline", "none", ""), ("finetune", "transfer", source)):
            tid = logger.start_task(sid, meta(f"{kind}/{target}", kind=kind, mode=mode,
                                              target=target, source=src))
            log_result(logger, tid, {"iteration": 2, "frame_acc": 30.0})
            log_result(logger, tid, {"iteration": 4, "frame_acc": 50.0})
            logger.end_task(tid)
    assert publish_convergence_plots(logger, sid) == ["b", "c"]
    logger.end_study(sid)
    assert logger.get_run(sid).status == "FINISHED"
    for target in ("b", "c"):
        png = logger.download_artifact(sid, f"plots/convergence_{target}.png", tmp_path)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mlflow_artifacts_live_beside_the_database(mlflow_store, name):
    logger = MlflowRunLogger(f"sqlite:///{mlflow_store}")
    sid = logger.start_study(name, "h")
    uri = logger.client.get_run(sid).info.artifact_uri
    assert uri.startswith((mlflow_store.parent / "mlartifacts").as_uri())
    logger.end_study(sid)


def test_task_meta_from_a_planner_task():
    from study.plan import Task
    from trainables.train_config import TrainSpec

    ft = TrainSpec(target_path="/b.parquet", mode="transfer", arrangement="concat",
                   init_checkpoint="/lstm.pt")
    task = Task(id="finetune:a.split1>b.split2:concat:s3", kind="finetune",
                target="b", target_split="split2", seed=3, config=ft, source="a",
                source_split="split1", arrangement="concat")
    tags = TaskMeta.from_task(task, node="n1").to_tags()
    assert (tags["ks.task_id"], tags["ks.seed"], tags["ks.source"], tags["ks.node"]) == (
        task.id, "3", "a", "n1")
    assert tags["ks.mode"] == "transfer"  # the config's mode
    base = Task(id="baseline:b.split1:s0", kind="baseline", target="b",
                target_split="split1", seed=0, config=TrainSpec(target_path="/b.parquet"))
    tags = TaskMeta.from_task(base).to_tags()
    assert (tags["ks.kind"], tags["ks.mode"]) == ("baseline", "none")
    assert (tags["ks.source"], tags["ks.source_split"], tags["ks.arrangement"]) == (
        "", "", "identity")


def test_sqlite_fast_read_equals_mlflow_search_runs(mlflow_store, name):
    """The direct SQLite reader must return exactly what MLflow's search_runs returns."""
    writer = MlflowRunLogger(f"sqlite:///{mlflow_store}")
    sid = writer.start_study(name, "h1", params={"seeds": [0, 1]})
    ok = writer.start_task(sid, meta("t1"), params={"lr": 0.01, "model": {"hidden": 8}})
    log_result(writer, ok, {"iteration": 5, "loss": 1.0, "frame_acc": 10.0, "curve": {5: 10.0}})
    log_result(writer, ok, {"iteration": 9, "loss": float("nan"), "frame_acc": 20.0})
    writer.end_task(ok)
    bad = writer.start_task(sid, meta("t2"))
    writer.end_task(bad, "FAILED", reason="boom")
    writer.start_task(sid, meta("t2/0", role="trial"), parent_run_id=bad)  # left RUNNING
    later = writer.start_study(name, "h2")  # the latest hash

    def as_dicts(records):
        out = {}
        for r in records:
            metrics = {k: ("nan" if v != v else v) for k, v in r.metrics.items()}
            out[r.run_id] = (r.status, dict(r.tags), dict(r.params), metrics,
                             r.start_time, r.end_time)
        return out

    fast = MlflowRunLogger(f"sqlite:///{mlflow_store}")
    slow = MlflowRunLogger(f"sqlite:///{mlflow_store}", fast_read=False)
    for h in ("h1", "h2", None):
        got = as_dicts(fast.study_runs(name, h))
        assert got == as_dicts(slow.study_runs(name, h))
    assert len(as_dicts(fast.study_runs(name, "h1"))) == 4
    assert set(as_dicts(fast.study_runs(name))) == {later}
    assert as_dicts(fast.study_runs(name, "h1"))[ok][3]["loss"] == "nan"
    ids = [r.run_id for r in fast.study_runs(name, "h1")]
    for key in ("loss", "frame_acc"):  # repr: NaN == NaN
        assert repr(fast.metric_histories(ids, key)) == repr(slow.metric_histories(ids, key))
    assert repr(fast.metric_histories(ids, "loss")) == repr({ok: [(5, 1.0), (9, math.nan)]})
    assert fast.metric_histories(ids, "frame_acc") == {ok: [(5, 10.0), (9, 20.0)]}
    assert "client" not in vars(fast)  # answered by SQL alone: no MlflowClient was created
    for logger in (fast, slow):
        with pytest.raises(StudyNotFound):
            logger.study_runs(name, "h3")
        with pytest.raises(StudyNotFound):
            logger.study_runs(f"{name}-absent")


# -- what the MLflow UI shows (study.run_view) and `kitchen-study register` --------------------


def test_run_names_are_readable():
    from study.mlflow_layout import stopped_name, task_run_name, trial_run_name

    ft = TaskMeta("finetune:x", "finetune", "transfer", "breakfast", "split1", "salads",
                  "split1", "concat", 0)
    assert task_run_name(ft) == "finetune salads→breakfast s1 concat seed0"
    other = TaskMeta("joint:x", "joint", "joint", "breakfast", "split1", "salads", "split2",
                     "merged", 1)
    assert task_run_name(other, "5:3") == "joint salads s2→breakfast s1 merged 5:3 seed1"
    base = TaskMeta("baseline:x", "baseline", "none", "breakfast", "split1",
                    arrangement="identity")
    assert task_run_name(base) == "baseline breakfast s1 seed0"
    name = trial_run_name(3, {"hidden": 128, "depth": 1, "lr": 1e-3})
    assert name == "trial 3 · h128 d1 lr1e-3"
    assert stopped_name(name, 512) == "trial 3 · h128 d1 lr1e-3 · stopped @ 512"


def test_gain_book_pairs_whichever_finishes_later():
    from study.mlflow_layout import GainBook

    def meta(kind, mode, seed=0):
        return TaskMeta(f"{kind}{seed}", kind, mode, "b", "split1", "" if kind == "baseline"
                        else "a", "split1", "concat", seed)

    book = GainBook()
    assert book.add(meta("finetune", "transfer"), "ft", 30.0) == {}  # no baseline yet
    assert book.add(meta("baseline", "none"), "b1", 20.0) == {"ft": 10.0}
    assert book.add(meta("joint", "joint"), "j", 25.0) == {"j": 5.0}
    assert book.add(meta("finetune", "transfer", seed=1), "ft1", 30.0) == {}  # other seed
    # a second baseline of the same key: the mean changes, so every paired run is re-logged
    assert book.add(meta("baseline", "none"), "b2", 30.0) == {"ft": 5.0, "j": 0.0}
    assert book.add(meta("pretrain", "none"), "p", 50.0) == {}
    assert book.best == 5.0  # the current gains, not a stale one
    # intervals over seeds, per pair (source, splits, mode, arrangement), the query's rule
    assert book.intervals(["ft"]) == {}  # one seed of the pair has a gain: no interval yet
    assert book.add(meta("baseline", "none", seed=1), "b3", 26.0) == {"ft1": 4.0}
    iv = book.intervals(["ft1"])
    assert set(iv) == {"ft", "ft1"}  # every run of the pair gets it; the joint run is apart
    lo, hi, n = iv["ft"]
    half = 12.706204736174707 * 0.5  # t(0.975, 1) * sd([5, 4]) / sqrt(2) = t * 0.5
    assert n == 2 and lo == pytest.approx(4.5 - half) and hi == pytest.approx(4.5 + half)


def _lstm_checkpoint(dst: Path) -> Path:
    import torch

    from tests.helpers import recipe_table
    from trainables.arrangements import make_arrangement
    from trainables.split_data import SplitData
    from trainables.train_config import TrainConfig
    from trainables.train_job import Trainer, save_checkpoint

    torch.set_num_threads(1)
    data = SplitData.load(recipe_table(videos=4, classes=4, name="tgt", seed=1), 1)
    tr = Trainer(TrainConfig(history=8, hidden=8, batch_size=4, lr=0.02),
                 make_arrangement("identity", data.space), data)
    tr.train(5)
    dst.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(dst / Path(CHECKPOINT_ARTIFACT).name, tr.checkpoint())


def test_ui_view_and_register_through_the_cli(tmp_path, monkeypatch):
    """A finished tiny study written through the driver's RunView on a real MLflow store
    (no Ray): names, dataset inputs, gains, study metrics, the experiment note, a logged
    model per task; then `kitchen-study register` registers the best pair's model."""
    import contextlib

    import mlflow
    import yaml
    from typer.testing import CliRunner

    from study.cli import app
    from study.plan import make_plan
    from study.run_view import start_view
    from study.uri import open_study_at
    from tests.study_data import write_kitchens

    a, b = "synth_breakfast", "synth_salads"
    write_kitchens(tmp_path / "data", kitchens=2)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = {"name": "ui", "description": "two synthetic kitchens",
            "datasets": {a: {"path": f"data/{a}.parquet", "splits": [1]},
                         b: {"path": f"data/{b}.parquet", "splits": [1]}},
            "model": {"history": 16, "hidden": 8, "batch_size": 4},
            "experiments": {"seeds": [0], "iterations": 10, "baselines": [b],
                            "edges": [{"source": a, "target": b}]},
            "tracking_uri": uri}
    path = tmp_path / "ui.yaml"
    path.write_text(yaml.safe_dump(spec))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    loaded = open_study_at(path)
    plan = make_plan(loaded.spec, loaded.cards)
    logger = MlflowRunLogger(uri)
    study_run = logger.start_study("ui", loaded.hash)
    view = start_view(logger, study_run, plan, loaded, logger.tracking_uri, {})
    ckpt_dir = _lstm_checkpoint(tmp_path / "ckpt").parent
    acc = {"pretrain": 50.0, "finetune": 40.0, "baseline": 30.0}
    rids = {}
    # the fine-tune finishes before its baseline: the baseline's end logs the gain
    for kind in ("pretrain", "finetune", "baseline"):
        t = next(t for t in plan if t.kind == kind)
        rid = rids[kind] = logger.start_task(study_run, TaskMeta.from_task(t))
        view.task_started(t, rid)
        log_result(logger, rid, {"iteration": 10, "frame_acc": acc[kind]})
        logger.end_task(rid)
        view.task_finished(t, rid, {"frame_acc": acc[kind]},
                           lambda: contextlib.nullcontext(ckpt_dir))
    logger.end_study(study_run)

    client = mlflow.MlflowClient(uri)
    ft = client.get_run(rids["finetune"])
    assert ft.info.run_name == f"finetune {a}→{b} s1 concat seed0"
    names = [client.get_run(r).info.run_name for r in rids.values()]
    assert len(set(names)) == 3
    assert ft.data.metrics["gain.frame_acc"] == 10.0
    used = {d.dataset.name: d.dataset for d in ft.inputs.dataset_inputs}
    assert set(used) == {a, b}
    card = loaded.cards[b]
    assert used[b].digest == (card.content_digest or card.input_hash)[:36]
    assert used[b].source == str(loaded.spec.dataset_path(b))
    parent = client.get_run(study_run).data.metrics
    assert parent["tasks_finished"] == 3 and parent["best_gain.frame_acc"] == 10.0
    exp = client.get_experiment_by_name("kitchen-study/ui")
    assert "two synthetic kitchens" in exp.tags["mlflow.note.content"]
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # opens on runs
    for rid in rids.values():  # every task's final LSTM is a loadable model; runs stay ended
        assert client.get_run(rid).info.status == "FINISHED"
    from study.models import using_tracking_uri

    with using_tracking_uri(uri):  # runs:/ URIs resolve against the process's store
        model = mlflow.pyfunc.load_model(f"runs:/{rids['finetune']}/model")
    assert model.metadata.metadata["input_dim"] == 4

    # a trial ASHA stopped: its name says so (once)
    trial = logger.start_task(study_run, TaskMeta("s", "search", "none", b, "split1",
                                                  role="trial"))
    view.trial_started(next(iter(plan)), trial, 2, {"hidden": 64})
    view.trial_stopped(trial, 5)
    view.trial_stopped(trial, 5)
    assert client.get_run(trial).info.run_name == "trial 2 · h64 · stopped @ 5"

    res = CliRunner().invoke(app, ["register", str(path), "--target", b])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip().splitlines()[-1] == f"models:/ui-{b}/1"
    assert rids["finetune"] in res.stdout
    with using_tracking_uri(uri):
        registered = mlflow.pyfunc.load_model(f"models:/ui-{b}/1")
    assert registered.metadata.metadata["classes"] == model.metadata.metadata["classes"]
    res = CliRunner().invoke(app, ["register", str(path), "--target", a])
    assert res.exit_code == 2 and "no transfer run into" in res.output
