"""The transfer-graph planner (pure: no Ray, no MLflow, no data files)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from study.plan import KINDS, TASK_KINDS, Task, asha_rungs, checkpoint_of, make_plan
from study.spec import SpecError, load_spec
from tests.study_data import plan_spec

ROOT = Path(__file__).resolve().parents[1]


def test_counts_all_pairs():
    plan = make_plan(plan_spec(all_pairs=True))
    c = plan.counts()
    # 3 datasets with 2 + 1 + 2 splits, 2 seeds
    assert c["baseline"] == 5 * 2
    # one pre-train per (source, its first split, seed), shared by all its edges
    assert c["pretrain"] == 3 * 2
    # every ordered pair into every split of the target: a->b(1) a->c(2) b->a(2) b->c(2)
    # c->a(2) c->b(1) = 10 per seed
    assert c["finetune"] == 10 * 2
    assert c["search"] == 1 and "joint" not in c
    assert plan.trial_count == 10 + 6 + 20 + 5
    assert list(c) == [k for k in KINDS if k in c]


def test_no_duplicate_pretraining_and_dependencies():
    plan = make_plan(plan_spec(all_pairs=True, edges=[
        {"source": "a", "target": "b", "mode": ["transfer", "joint"],
         "arrangement": ["merged", "concat"]},
    ]))
    ids = plan.ids
    assert len(ids) == len(set(ids))
    keys = Counter((t.target, t.target_split, t.seed) for t in plan.of_kind("pretrain"))
    assert all(n == 1 for n in keys.values())
    by_id = {t.id: t for t in plan}
    for t in plan:
        if t.kind == "finetune":
            (dep,) = t.deps
            pre = by_id[dep]
            assert pre.kind == "pretrain"
            assert (pre.target, pre.target_split, pre.seed) == (t.source, t.source_split, t.seed)
            cfg = t.trial_config()
            # the pre-train's checkpoint, which the runner replaces by its URI
            assert cfg["mode"] == "transfer" and cfg["init_checkpoint"] == checkpoint_of(dep)
            assert "source_path" not in cfg  # the space comes from the checkpoint
            # dependencies come earlier in the release order
            assert ids.index(dep) < ids.index(t.id)
        else:
            assert t.deps == ()
    # the explicit a->b concat transfer edge equals the all_pairs one: one task
    assert sum(1 for t in plan if t.id.startswith("finetune:a.split1>b.split1:concat:")) == 2
    # a's pre-train serves a->b (merged, concat) and a->c
    pre_a0 = "pretrain:a.split1:s0"
    assert {t.target for t in plan.dependents(pre_a0)} == {"b", "c"}
    joint = plan.of_kind("joint")
    assert len(joint) == 2 * 2  # 2 arrangements x 2 seeds
    assert all(j.trial_config()["joint_ratio"] == [5, 3] for j in joint)
    assert all(j.trial_config()["source_path"] == "/data/study/a.parquet" for j in joint)


def test_multiple_random_pretrains_per_target():
    plan = make_plan(plan_spec(edges=[
        {"source": "a", "target": "b", "arrangement": ["concat", "multiple_random"], "k": 4},
        {"source": "a", "target": "c", "arrangement": "multiple_random"},
    ]))
    pre = {t.id: t for t in plan.of_kind("pretrain")}
    assert set(pre) == {
        "pretrain:a.split1:s0", "pretrain:a.split1:s1",
        "pretrain:a.split1:multiple_random-k4>b:s0", "pretrain:a.split1:multiple_random-k4>b:s1",
        "pretrain:a.split1:multiple_random-k3>c:s0", "pretrain:a.split1:multiple_random-k3>c:s1",
    }
    mr_task = pre["pretrain:a.split1:multiple_random-k4>b:s0"]
    # the task says what its config trains: one mode vocabulary (TrainSpec.mode)
    assert mr_task.mode == "pretrain" and pre["pretrain:a.split1:s0"].mode == "none"
    mr = mr_task.trial_config()
    assert mr["mode"] == "pretrain" and mr["arrangement_k"] == 4
    assert mr["source_path"] == "/data/study/a.parquet"
    assert mr["target_path"] == "/data/study/b.parquet"
    ft = plan["finetune:a.split1>b.split1:multiple_random:s0"]
    assert ft.deps == ("pretrain:a.split1:multiple_random-k4>b:s0",)
    assert ft.trial_config()["arrangement_k"] == 4
    plain = plan["finetune:a.split1>b.split1:concat:s0"]
    assert plain.deps == ("pretrain:a.split1:s0",)


def test_configs():
    plan = make_plan(plan_spec(all_pairs=True))
    base = plan["baseline:c.split3:s1"]
    assert base.trial_config()["target_path"] == "/data/study/c.parquet"
    assert base.trial_config()["target_split"] == "split3" and base.trial_config()["seed"] == 1
    assert base.trial_config()["hidden"] == 8 and base.trial_config()["mode"] == "none"
    assert base.trial_config()["iterations"] == 40 and base.trial_config()["eval_at"] == [10, 20]
    pre = plan["pretrain:b.split1:s0"]
    assert pre.trial_config()["iterations"] == 60 and pre.trial_config()["eval_at"] == []
    assert pre.trial_config()["target_path"] == "/data/study/b.parquet"
    assert pre.trial_config()["mode"] == "none"
    s = plan.of_kind("search")[0]
    assert s.trials == 5 and s.search is not None
    assert s.trial_config()["eval_at"] == [10, 20, 40]  # ASHA rungs 10, 20 (x2) and the end


def test_configs_are_valid_trainable_configs():
    from trainables.train_config import TrainSpec

    plan = make_plan(plan_spec(all_pairs=True, edges=[
        {"source": "a", "target": "b", "mode": ["transfer", "joint"],
         "arrangement": ["merged", "random", "multiple_random", "concat"]}]))
    for t in plan:
        assert isinstance(t.config, TrainSpec) and t.mode == t.config.mode
        assert t.mode in TASK_KINDS[t.kind].modes
        cfg = t.trial_config()
        assert TrainSpec.parse(cfg) == t.config  # what the trial receives is the same config
        if t.kind == "finetune":
            cfg["init_checkpoint"] = "/somewhere/lstm.pt"
        TrainSpec.parse(cfg)


def test_a_config_the_trainable_rejects_is_a_spec_error_naming_the_task():
    spec = plan_spec(baselines=["b"])
    bad = spec.model_copy(update={"model": {"hidden": 0}})
    with pytest.raises(SpecError) as ei:
        make_plan(bad)
    keys = [k for k, _ in ei.value.problems]
    assert "task baseline:b.split1:s0" in keys and "hidden" in str(ei.value)


def test_task_kinds_and_modes_are_one_vocabulary():
    from trainables.train_config import TrainSpec

    t = make_plan(plan_spec(baselines=["b"]))["baseline:b.split1:s0"]
    assert list(TASK_KINDS) == list(KINDS)
    with pytest.raises(ValueError, match="a baseline task runs in mode none"):
        Task(id="x", kind="baseline", target="b", target_split="split1", seed=0,
             config=TrainSpec.parse({**t.trial_config(), "mode": "joint",
                                     "source_path": "/a.parquet", "arrangement": "concat"}))
    with pytest.raises(ValueError, match="unknown kind"):
        Task(id="x", kind="transfer", target="b", target_split="split1", seed=0,
             config=t.config)


def test_deterministic_and_stable_ids():
    a = make_plan(plan_spec(all_pairs=True))
    b = make_plan(plan_spec(all_pairs=True))
    assert a == b and a.to_json() == b.to_json()
    # in a fresh interpreter too (no dependence on hash seeds or dict order)
    code = (
        "from tests.study_data import plan_spec; from study.plan import make_plan; "
        "print(make_plan(plan_spec(all_pairs=True)).to_json())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT, env={"PYTHONHASHSEED": "123", "PATH": ""})
    assert out.stdout.strip() == a.to_json()


def test_adding_an_edge_keeps_existing_ids():
    a = make_plan(plan_spec(all_pairs=True))
    b = make_plan(plan_spec(all_pairs=True,
                            edges=[{"source": "a", "target": "b", "mode": "joint"}]))
    assert set(a.ids) < set(b.ids)
    assert all(a[i] == b[i] for i in a.ids)


def test_no_edges_only_baselines():
    plan = make_plan(plan_spec(baselines=["b"]))
    ids = [t.id for t in plan if t.kind != "search"]
    assert ids == ["baseline:b.split1:s0", "baseline:b.split1:s1"]


def test_asha_rungs():
    assert asha_rungs(100, 3, 1000) == [100, 300, 900, 1000]
    assert asha_rungs(10, 2, 10) == [10]


@pytest.mark.parametrize("name", ["demo.yaml", "paper.yaml"])
def test_shipped_plans(name):
    plan = make_plan(load_spec(ROOT / "studies" / name))
    c = plan.counts()
    if name == "demo.yaml":
        # pretrain_iterations == iterations: each source's pre-train IS its baseline (one
        # job, one task), so the fine-tunes start from the baselines' checkpoints
        assert c == {"finetune": 24, "joint": 2, "baseline": 6, "search": 1}
        assert plan.trial_count == 36
        assert {d for t in plan.of_kind("finetune") for d in t.deps} == {
            t.id for t in plan.of_kind("baseline")}
    else:
        # Table 4: 3 datasets x 4 splits x 3 seeds
        assert c["baseline"] == 36
        # Tables 6-8: 6 ordered pairs x 4 target splits x 3 seeds; Table 5 adds 3
        # non-concat transfer arrangements on breakfast split 1 x 3 seeds
        assert c["finetune"] == 6 * 4 * 3 + 3 * 3
        assert c["joint"] == 4 * 3
        assert c["pretrain"] == 3 * 3 + 3  # + multiple_random's own pre-train per seed


def test_a_pretrain_that_is_a_baseline_runs_once():
    """Same iterations, same split, baselines on: the pre-train and the baseline are one job."""
    plan = make_plan(plan_spec(all_pairs=True, pretrain_iterations=40))
    c = plan.counts()
    assert "pretrain" not in c and c["baseline"] == 10 and c["finetune"] == 20
    by_id = {t.id: t for t in plan}
    ids = plan.ids
    for t in plan.of_kind("finetune"):
        (dep,) = t.deps
        assert dep == f"baseline:{t.source}.{t.source_split}:s{t.seed}"
        assert t.trial_config()["init_checkpoint"] == checkpoint_of(dep)
        assert ids.index(dep) < ids.index(t.id)  # still topological
        assert by_id[dep].trial_config()["iterations"] == 40
    # a source without baselines keeps its own pre-train
    plan = make_plan(plan_spec(all_pairs=True, pretrain_iterations=40, baselines=["a", "b"]))
    assert {t.id for t in plan.of_kind("pretrain")} == {"pretrain:c.split1:s0",
                                                        "pretrain:c.split1:s1"}
    # multiple_random pre-trains in the joint space: never a baseline
    plan = make_plan(plan_spec(pretrain_iterations=40, edges=[
        {"source": "a", "target": "b", "arrangement": "multiple_random"}]))
    assert [t.id for t in plan.of_kind("pretrain")] == [
        "pretrain:a.split1:multiple_random-k3>b:s0", "pretrain:a.split1:multiple_random-k3>b:s1"]
