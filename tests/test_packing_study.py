"""Packing in the study runner (issue 13, part 3): study.packed_trial, on the CPU.

Without Ray: a :class:`~study.packed_trial.PackRun` of K members against K ordinary
``TrainRun`` s, checkpoint round trip, a member's failure, and which tasks may share a pack.
With a real local Ray and a real SQLite MLflow store: the same small study with packing
forced on and off gives the same MLflow runs, and a member's failure loses no other member.

Tolerance on final metrics: one packed step equals the unpacked step to ~1e-5 in float32
(tests/test_packed_lstm.py; only the summation order differs), and after a few dozen Adam
steps the weights still agree to ~1e-4. Predictions are argmaxes, so they can differ only
where two class scores are that close (a near tie): a handful of frames at most. The test
sets have ~1000-2000 frames, so frame accuracy is compared within 1 percentage point (about
10-20 flipped frames), and every other metric is only checked to exist. In practice the
runs below agree exactly or nearly (the measured largest difference is printed).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from study.plan import make_plan
from study.spec_data import open_study
from tests.study_data import A, B, link_data, small_spec, write_spec

#: |frame_acc packed - unpacked| allowed, in percentage points (see the module docstring)
FRAME_ACC_TOL = 1.0


def _config(root: Path, dataset: str, seed: int, **over) -> dict:
    return {"target_path": str(root / "data" / f"{dataset}.parquet"), "target_split": "split1",
            "mode": "none", "history": 16, "hidden": 8, "batch_size": 4, "lr": 0.01,
            "seed": seed, "iterations": 30, "iterations_per_step": 10, "eval_at": [10, 20],
            "device": "cpu", **over}


# -- without Ray ---------------------------------------------------------------------------


def _runs(configs):
    from trainables.train_job import TrainRun

    return [TrainRun.create(c) for c in configs]


def test_pack_run_matches_separate_runs(kitchens_root):
    import torch

    from study.packed_trial import MEMBER_ERROR, PackRun

    torch.set_num_threads(1)
    configs = [_config(kitchens_root, A, 0), _config(kitchens_root, B, 1, lr=0.003, clip=0.5),
               _config(kitchens_root, A, 2)]
    alone = [r.run() for r in _runs(configs)]
    pack = PackRun(_runs(configs))
    steps = []
    while not pack.done:
        steps.append(pack.step())
    assert [sorted(s) for s in steps] == [[0, 1, 2]] * 3
    assert [s[0]["iteration"] for s in steps] == [10, 20, 30]
    assert all("frame_acc" in s[i] for s in steps for i in range(3))  # at 10, 20 and the end
    for i, want in enumerate(alone):
        got = steps[-1][i]
        assert MEMBER_ERROR not in got and got["done"]
        assert abs(got["frame_acc"] - want["frame_acc"]) <= FRAME_ACC_TOL
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-3)
        assert set(got["curve"]) == {"10", "20", "30"}


def test_pack_checkpoint_round_trip_and_member_failure(kitchens_root, tmp_path):
    import torch

    from study.packed_trial import MEMBER_ERROR, PackRun
    from trainables.train_job import load_checkpoint

    torch.set_num_threads(1)
    configs = [_config(kitchens_root, A, 0), _config(kitchens_root, A, 1)]
    # member 1's loss goes non-finite after iteration 10; member 0 goes on
    pack = PackRun(_runs(configs), faults=[None, {"iteration": 10}])
    first = pack.step()
    assert MEMBER_ERROR not in first[1] and first[1]["iteration"] == 10
    second = pack.step()
    assert "non-finite loss at iteration 11" in second[1][MEMBER_ERROR]
    assert second[0]["iteration"] == 20 and MEMBER_ERROR not in second[0]
    pack.save(tmp_path / "ckpt")
    # each member's file is an ordinary single-model checkpoint
    c0 = load_checkpoint(tmp_path / "ckpt" / "m0" / "lstm.pt")
    assert c0.iteration == 20 and c0.meta["run"]["curve"].keys() == {"10", "20"}
    # the failed member's weights are what failed it: loading them is refused (one line)
    from trainables.job import CheckpointError

    with pytest.raises(CheckpointError, match="non-finite"):
        load_checkpoint(tmp_path / "ckpt" / "m1" / "lstm.pt")

    # a fresh pack restored from it: the failed member stays failed, member 0 finishes
    restored = PackRun(_runs(configs))
    restored.load(tmp_path / "ckpt")
    last = restored.step()
    assert last[0]["done"] and last[0]["iteration"] == 30 and restored.done
    assert "non-finite loss" in last[1][MEMBER_ERROR]
    # ... exactly as the uninterrupted pack does
    pack_last = pack.step()
    assert pack_last[0]["frame_acc"] == pytest.approx(last[0]["frame_acc"])
    assert pack_last[0]["loss"] == pytest.approx(last[0]["loss"], rel=1e-6)


def _spec_dict(root: Path, name: str, **over) -> dict:
    """Two seeds of B's baseline and an edge A -> B in both modes and two arrangements."""
    return small_spec(name, store=root, experiments={
        "seeds": [0, 1], "baselines": [B],
        "edges": [{"source": A, "target": B, "mode": ["transfer", "joint"],
                   "arrangement": ["concat", "merged"]}]}, **over)


def test_pack_keys_group_by_shape_and_schedule(kitchens_root):
    from study.packed_trial import make_packer
    from study.spec import parse_spec
    from study.spec_data import check_spec

    def packer(**packing):
        spec = parse_spec(_spec_dict(kitchens_root, "keys", packing=packing),
                          base_dir=kitchens_root)
        said: list[str] = []
        return make_packer(spec, check_spec(spec), say=said.append), said, spec

    off, said, _ = packer(max_trials=8)
    assert off is None and "off" in said[0]  # trials without a GPU: packing is off
    on, _, spec = packer(max_trials=8, force_cpu=True)
    groups: dict[tuple, list[str]] = {}
    for t in make_plan(spec):
        groups.setdefault(on.key(t), []).append(t.id)
    key = {tid: k for k, ids in groups.items() for tid in ids}
    pre = [f"pretrain:{A}.split1:s{s}" for s in (0, 1)]
    base = f"baseline:{B}.split1:s0"
    # pre-trains: the baselines' shape (17 classes) but their own schedule (no eval_at)
    assert key[pre[0]] == key[pre[1]] != key[base] and len(groups[key[pre[0]]]) == 2
    # concat (17 + 17 = 34 classes) fine-tunes and joint runs: one shape and schedule
    concat = [t for t in key if ":concat:" in t]
    assert len(concat) == 4 and {key[t] for t in concat} == {key[concat[0]]} != {key[base]}
    # merged: the two kitchens' 17 labels agree, so 17 classes, as the baselines
    merged = [t for t in key if ":merged:" in t]
    assert {key[t] for t in merged} == {key[base]} and len(groups[key[base]]) == 6


# -- the study on Ray ------------------------------------------------------------------------

ray = pytest.importorskip("ray")


def _task_runs(uri: str, name: str):
    from study.tracking import MlflowRunLogger

    return [r for r in MlflowRunLogger(uri).study_runs(name) if r.role == "task"]


def test_packed_study_same_runs_as_unpacked(kitchens_root, tmp_path, local_ray):
    from study.runner import run_study

    roots = {"off": tmp_path / "off", "on": tmp_path / "on"}
    loaded = {}
    for mode, root in roots.items():
        link_data(kitchens_root, root)
        extra = {"packing": {"max_trials": 4, "force_cpu": True}} if mode == "on" else {}
        d = _spec_dict(root, "pk", **extra)
        d["experiments"]["edges"][0]["arrangement"] = ["concat"]  # 8 tasks: keeps it short
        loaded[mode] = open_study(write_spec(root, d))
    assert loaded["on"].hash == loaded["off"].hash  # packing is how it runs, not what
    plan = make_plan(loaded["on"].spec)
    # the store named explicitly: once one study has run, MLflow's $MLFLOW_TRACKING_URI (set
    # by mlflow.set_tracking_uri in this process) would outrank the second spec's
    outs = {m: run_study(loaded[m], progress=False, tracking_uri=loaded[m].spec.tracking_uri)
            for m in ("off", "on")}
    for m, out in outs.items():
        assert out.status == "FINISHED", (m, out)
        assert sorted(out.finished) == sorted(plan.ids), (m, out)

    runs = {m: {r.task_id: r for r in _task_runs(loaded[m].spec.tracking_uri, "pk")}
            for m in roots}
    assert sorted(runs["on"]) == sorted(runs["off"]) == sorted(plan.ids)
    packs: dict[str, list[str]] = {}
    worst = 0.0
    for tid, packed in runs["on"].items():
        plain = runs["off"][tid]
        assert packed.status == plain.status == "FINISHED"
        assert "ks.pack" not in plain.tags
        # nested as today: a child of the study run, the same task tags and params
        assert packed.parent_run_id and packed.tags["ks.kind"] == plain.tags["ks.kind"]
        for tag in ("ks.mode", "ks.target", "ks.source", "ks.arrangement", "ks.seed"):
            assert packed.tags[tag] == plain.tags[tag], tag
        same = {k: v for k, v in plain.params.items() if k != "init_checkpoint"}
        assert {k: packed.params[k] for k in same} == same
        assert set(plain.metrics) <= set(packed.metrics)
        assert packed.metrics["iteration"] == plain.metrics["iteration"] == 30
        worst = max(worst, abs(packed.metrics["frame_acc"] - plain.metrics["frame_acc"]))
        if "ks.pack" in packed.tags:
            packs.setdefault(packed.tags["ks.pack"], []).append(tid)
    print(f"largest |frame_acc packed - unpacked|: {worst:.3f} points")
    assert worst <= FRAME_ACC_TOL
    # every task ran in a pack here (each has its other seed as a companion); a pack
    # holds one shape and schedule: pre-trains among themselves
    packed_ids = sorted(t for ids in packs.values() for t in ids)
    assert packed_ids == sorted(plan.ids)
    pre = {runs["on"][f"pretrain:{A}.split1:s{s}"].tags["ks.pack"] for s in (0, 1)}
    assert len(pre) == 1 and sorted(packs[pre.pop()]) == [f"pretrain:{A}.split1:s0",
                                                          f"pretrain:{A}.split1:s1"]
    # a fine-tune started from its pre-train's checkpoint artifact, after it was stored
    from study.tracking import MlflowRunLogger

    logger = MlflowRunLogger(loaded["on"].spec.tracking_uri)
    for s in (0, 1):
        pre_run = runs["on"][f"pretrain:{A}.split1:s{s}"]
        ft = runs["on"][f"finetune:{A}.split1>{B}.split1:concat:s{s}"]
        art = logger.client.get_run(pre_run.run_id).info.artifact_uri
        assert ft.params["init_checkpoint"] == f"{art}/checkpoint/lstm.pt"
        assert ft.start_time >= pre_run.end_time


def test_member_failure_and_resume(kitchens_root, tmp_path, local_ray):
    from study.runner import run_study

    link_data(kitchens_root, tmp_path)
    d = _spec_dict(tmp_path, "pkfail", packing={"max_trials": 4, "force_cpu": True})
    d["experiments"] = {**d["experiments"], "edges": []}
    loaded = open_study(write_spec(tmp_path, d))
    bad, good = f"baseline:{B}.split1:s1", f"baseline:{B}.split1:s0"
    uri = loaded.spec.tracking_uri
    out = run_study(loaded, inject_faults={bad: 10}, progress=False, tracking_uri=uri)
    assert out.status == "FAILED"
    assert set(out.failed) == {bad} and "non-finite loss" in out.failed[bad]
    assert out.finished == [good]
    runs = {r.task_id: r for r in _task_runs(loaded.spec.tracking_uri, "pkfail")}
    assert runs[good].status == "FINISHED" and runs[bad].status == "FAILED"
    assert "non-finite loss at iteration 11" in runs[bad].tags["ks.error"]
    assert runs[good].tags["ks.pack"] == runs[bad].tags["ks.pack"]
    assert runs[good].metrics["iteration"] == 30 and not math.isnan(
        runs[good].metrics["frame_acc"])

    # resume is per task: the finished member is skipped, the failed one runs again (alone,
    # so as an ordinary trial) and finishes
    again = run_study(loaded, resume=True, progress=False, tracking_uri=uri)
    assert again.status == "FINISHED", again
    assert again.skipped_done == [good] and again.finished == [bad]
    runs = _task_runs(loaded.spec.tracking_uri, "pkfail")
    fin = [r for r in runs if r.status == "FINISHED"]
    assert sorted(r.task_id for r in fin) == sorted([good, bad])
    assert "ks.pack" not in next(r for r in fin if r.task_id == bad).tags


def test_packing_spec_is_validated(kitchens_root):
    from study.spec import SpecError, parse_spec

    for bad, key in (({"max_trials": 1}, "packing.max_trials"),
                     ({"max_trials": 4, "gpu_only": True}, "packing.gpu_only"),
                     ({}, "packing.max_trials")):
        with pytest.raises(SpecError) as ei:
            parse_spec(_spec_dict(kitchens_root, "bad", packing=bad))
        assert key in dict(ei.value.problems), ei.value.problems
    assert parse_spec(_spec_dict(kitchens_root, "none")).packing is None  # off by default
