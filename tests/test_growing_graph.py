"""A graph that grows: tasks keyed by content, reused across study versions.

Plan level (no Ray): adding a dataset to a demo-like spec adds exactly the new node's
baselines (which are also its pre-trains) and the new edges, and every other task keeps its
key; changing the model or one dataset changes exactly the keys that depend on it. Store
level (in-memory logger): a new version adopts the finished runs of the old one. One real
run pair on a tiny spec (local Ray, SQLite MLflow): the second version trains only the new
tasks.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from data_prep.table import read_card, read_table, write_table
from study.mlflow_layout import TAG_REUSED_FROM, TAG_REUSED_FROM_STUDY, TAG_TASK_KEY
from study.plan import Plan, make_plan
from study.spec import load_spec
from study.spec_data import content_hash
from tests.study_data import (
    A,
    B,
    C,
    merged,
    small_spec,
    store_settings,
    write_kitchens,
    write_spec,
)


def _demo_like(names: list[str], **over) -> dict:
    """The demo's shape: baselines, all pairs in two arrangements, one joint edge, a search;
    pre-trains as long as the baselines (so they are the same jobs)."""
    d = small_spec("grow", names, experiments={
        "seeds": [0, 1], "baselines": True,
        "all_pairs": {"mode": "transfer", "arrangement": ["concat", "merged"]},
        "edges": [{"source": B, "target": A, "mode": "joint", "ratio": "5:3"}]},
        search={"space": "small", "target": A, "num_samples": 2, "iterations": 20})
    return merged(d, over)


def _plan(folder: Path, d: dict, name: str = "s.yaml") -> Plan:
    spec = load_spec(write_spec(folder, d, name))
    cards = {n: read_card(spec.dataset_path(n)) for n in spec.datasets}
    return make_plan(spec, cards)


def _keys(plan: Plan) -> dict[str, str]:
    return {t.id: t.key for t in plan}


def test_adding_a_dataset_runs_exactly_the_new_node_and_edges(kitchens_root):
    old = _plan(kitchens_root, _demo_like([A, B]))
    new = _plan(kitchens_root, _demo_like([A, B, C]))
    k_old, k_new = _keys(old), _keys(new)
    assert len(set(k_new.values())) == len(k_new)  # one key per task
    # every task of the old version is in the new one with the same key: reused, not rerun
    assert {t: k_new.get(t) for t in k_old} == k_old
    to_run = {t for t, k in k_new.items() if k not in set(k_old.values())}
    expected = set()
    for s in (0, 1):
        expected.add(f"baseline:{C}.split1:s{s}")  # also C's pre-train (the same job)
        for other in (A, B):
            for arr in ("concat", "merged"):
                expected.add(f"finetune:{C}.split1>{other}.split1:{arr}:s{s}")
                expected.add(f"finetune:{other}.split1>{C}.split1:{arr}:s{s}")
    assert to_run == expected
    # counted from the plans: 2 baselines + 2 seeds x 4 new ordered pairs x 2 arrangements
    assert len(new) - len(old) == len(to_run) == 2 + 16
    assert "pretrain" not in new.counts()
    # the new fine-tunes out of C start from C's baselines
    assert {new[t].deps for t in to_run if t.startswith(f"finetune:{C}")} == {
        (f"baseline:{C}.split1:s0",), (f"baseline:{C}.split1:s1",)}


def test_keys_change_exactly_where_the_inputs_do(kitchens_root, tmp_path):
    base = _plan(kitchens_root, _demo_like([A, B, C]))
    k = _keys(base)
    # moving the data, resources and step size change no key (execution only)
    moved = _demo_like([A, B, C], resources={"cpu": 2}, iterations_per_step=5)
    (tmp_path / "elsewhere").mkdir()
    for n in (A, B, C):
        (tmp_path / "elsewhere" / f"{n}.parquet").write_bytes(
            (kitchens_root / "data" / f"{n}.parquet").read_bytes())
        moved["datasets"][n]["path"] = str(tmp_path / "elsewhere" / f"{n}.parquet")
    assert _keys(_plan(kitchens_root, moved, "moved.yaml")) == k
    # the model config: every task
    other_model = _keys(_plan(kitchens_root, _demo_like([A, B, C], model={"hidden": 12}), "m.yaml"))
    assert all(other_model[t] != k[t] for t in k)
    # one dataset's content: exactly the tasks that read it or start from one that did
    changed = tmp_path / "changed"
    changed.mkdir()
    t = read_table(kitchens_root / "data" / f"{C}.parquet")
    t.features = t.features[:, ::-1].copy()
    write_table(t, changed / f"{C}.parquet")
    d = _demo_like([A, B, C])
    d["datasets"][C]["path"] = str(changed / f"{C}.parquet")
    k2 = _keys(_plan(kitchens_root, d, "c.yaml"))
    differ = {tid for tid in k if k2[tid] != k[tid]}
    touches_c = {tid for tid in k if C in tid}
    assert differ == touches_c and differ


def test_a_new_version_adopts_the_finished_tasks(kitchens_root):
    """Store level, through the in-memory logger: v2 adopts v1's runs (tagged with where
    they came from), so its results include them; only the new tasks are left to run."""
    from study.mlflow_layout import RunRecord, TaskMeta
    from study.query import StudyResults
    from study.reuse import adopt_finished, origin_run, reusable
    from tests.memory_logger import InMemoryRunLogger

    class Logger(InMemoryRunLogger):
        def finished_task_runs(self, name: str) -> list[RunRecord]:
            return [self.get_run(rid) for rid in list(self._runs)
                    if self.get_run(rid).role == "task"]

    log = Logger()
    old, new = _plan(kitchens_root, _demo_like([A, B])), _plan(kitchens_root, _demo_like([A, B, C]))
    v1 = log.start_study("grow", "h1")
    first: dict[str, str] = {}
    for t in old:
        rid = log.start_task(v1, TaskMeta.from_task(t), params=t.trial_config())
        log.log_metrics(rid, {"frame_acc": 50.0 + len(first), "iteration": 30.0}, step=30)
        log.end_task(rid)
        first[t.id] = rid
    assert all(log.get_run(r).tags[TAG_TASK_KEY] == old[t].key for t, r in first.items())
    v2 = log.start_study("grow", "h2")
    adopted = adopt_finished(log, v2, new, {}, "grow")
    assert set(adopted) == set(old.ids)  # zero repeats of finished tasks
    todo = [t.id for t in new if t.id not in adopted]
    assert len(todo) == len(new) - len(old) == 18
    for tid, rid in adopted.items():
        r = log.get_run(rid)
        assert r.status == "FINISHED" and r.tags[TAG_REUSED_FROM] == first[tid]
        assert r.tags[TAG_REUSED_FROM_STUDY] == "h1" and r.tags["ks.study_hash"] == "h2"
        assert r.metrics["frame_acc"] == log.get_run(first[tid]).metrics["frame_acc"]
        assert origin_run(log, rid) == first[tid]
    res = StudyResults.from_logger(log, "grow", "h2").results()
    assert set(res["task_id"]) == set(old.ids)
    # a third version adopting from the second points at the run that trained
    v3 = log.start_study("grow", "h3")
    again = adopt_finished(log, v3, old, {}, "grow")
    assert all(log.get_run(r).tags[TAG_REUSED_FROM] == first[t] for t, r in again.items())
    # what a dry run shows: nothing left to adopt once a version has every task
    from study.reuse import finished_by_key

    done = {t: "" for t in again}
    assert reusable(old, finished_by_key(log, "grow"), done) == {}


def test_baseline_is_the_same_job_as_the_pretrain(kitchens_root):
    """The planner runs one task for both: a baseline's evaluations do not change its
    training, so its final weights equal an un-evaluated pre-train's."""
    import torch

    from trainables.train_job import TrainRun

    cfg = {"target_path": str(kitchens_root / "data" / f"{A}.parquet"), "target_split": "split1",
           "history": 16, "hidden": 8, "batch_size": 4, "iterations": 20,
           "iterations_per_step": 10, "seed": 3, "device": "cpu"}
    runs = []
    for eval_at in ([], [5, 10, 15]):
        run = TrainRun.create({**cfg, "eval_at": eval_at})
        while not run.done:
            run.step()
        runs.append(run.trainer.state_dict()["model"])
    assert runs[0].keys() == runs[1].keys()
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_hash_changes_but_keys_stay_when_a_dataset_is_added(kitchens_root):
    s1 = load_spec(write_spec(kitchens_root, _demo_like([A, B]), "one.yaml"))
    s2 = load_spec(write_spec(kitchens_root, _demo_like([A, B, C]), "two.yaml"))
    c1 = {n: read_card(s1.dataset_path(n)) for n in s1.datasets}
    c2 = {n: read_card(s2.dataset_path(n)) for n in s2.datasets}
    assert content_hash(s1, c1) != content_hash(s2, c2)


# -- one real run pair ------------------------------------------------------------------------


def _tiny(names: list[str], folder: Path) -> dict:
    d = _demo_like(names)
    d["experiments"] = {"seeds": [0], "iterations": 10, "baselines": True,
                        "all_pairs": {"mode": "transfer", "arrangement": "concat"}}
    d.pop("search")
    return {**d, **store_settings(folder)}


@pytest.mark.slow  # about 2.5 min on a loaded 2-core machine (two studies on local Ray)
def test_real_run_pair_trains_only_the_new_tasks(tmp_path, local_ray):  # one Ray for both
    """v1 on two datasets, v2 adds a third: v2 trains its baseline and the four new edges
    and adopts the rest (local Ray, SQLite MLflow)."""
    pytest.importorskip("ray")
    from study.query import load_study
    from study.runner import run_study
    from study.spec_data import open_study

    write_kitchens(tmp_path / "data", kitchens=3)
    p1 = write_spec(tmp_path, _tiny([A, B], tmp_path), "v1.yaml")
    p2 = write_spec(tmp_path, _tiny([A, B, C], tmp_path), "v2.yaml")
    first = run_study(open_study(p1), num_cpus=2, progress=False)
    assert first.status == "FINISHED" and len(first.finished) == 4 and not first.reused
    loaded = open_study(p2)
    second = run_study(loaded, num_cpus=2, progress=False)
    assert second.status == "FINISHED", second
    assert sorted(second.reused) == sorted(first.finished)
    assert sorted(second.finished) == sorted([
        f"baseline:{C}.split1:s0",
        f"finetune:{A}.split1>{C}.split1:concat:s0", f"finetune:{B}.split1>{C}.split1:concat:s0",
        f"finetune:{C}.split1>{A}.split1:concat:s0", f"finetune:{C}.split1>{B}.split1:concat:s0",
    ])
    study = load_study(p2)
    res = study.results()
    assert len(res) == 3 + 6 and set(res["task_id"]) == set(make_plan(
        loaded.spec, loaded.cards).ids)
    # every edge (trained here or adopted) carries its estimates, logged before it trained
    tab = study.transferability()
    assert len(tab) == 6 and (tab["n_estimated"] == 1).all()
    assert tab[["logme", "leep", "nce", "label_structure"]].notna().all().all()
    # v1 again: nothing to run, nothing to adopt (its own runs are finished)
    again = run_study(open_study(p1), num_cpus=2, progress=False)
    assert again.finished == [] and again.reused == [] and len(again.skipped_done) == 4


def test_resume_of_a_new_version_names_the_changed_dataset(tmp_path):
    """A table rewritten under the same path is a new version; ``resume`` says which."""
    from study.mlflow_layout import StudyNotFound
    from study.reuse import study_params
    from study.runner import run_study
    from study.spec_data import open_study
    from study.tracking import MlflowRunLogger

    write_kitchens(tmp_path / "data", kitchens=2)
    p = write_spec(tmp_path, _tiny([A, B], tmp_path), "v.yaml")
    loaded = open_study(p)
    log = MlflowRunLogger(loaded.spec.tracking_uri)
    sid = log.start_study("grow", loaded.hash, params={"hash": loaded.hash,
                                                       **study_params(loaded)})
    log.end_study(sid)
    t = read_table(tmp_path / "data" / f"{B}.parquet")
    t.features = t.features[:, ::-1].copy()
    write_table(t, tmp_path / "data" / f"{B}.parquet")
    with pytest.raises(StudyNotFound) as ei:
        run_study(open_study(p), resume=True, progress=False)
    msg = str(ei.value)
    assert f"content of dataset {B!r} changed" in msg and A not in msg
    assert loaded.short_hash in msg and "new version" in msg
