"""`kitchen-study run --dry-run`'s wall-time estimate: the arithmetic (pure, with a given
throughput) and the printed lines (a throughput measured on this machine, then cached)."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from study.cli import app
from study.plan import make_plan
from study.spec_data import open_study
from study.walltime import Shape, estimate, task_frames
from tests.study_data import write_kitchens

A, B = "synth_breakfast", "synth_salads"


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("walltime")
    write_kitchens(root / "data", kitchens=2, videos=4)
    p = root / "wt.yaml"
    p.write_text(yaml.safe_dump({
        "name": "wt",
        "datasets": {A: {"path": f"data/{A}.parquet", "splits": [1]},
                     B: {"path": f"data/{B}.parquet", "splits": [1]}},
        "model": {"history": 16, "hidden": 8, "batch_size": 4},
        "experiments": {"seeds": [0], "iterations": 30, "pretrain_iterations": 30,
                        "baselines": [B], "edges": [{"source": A, "target": B}]},
        "search": {"space": "small", "target": B, "num_samples": 2, "max_concurrent": 2,
                   "iterations": 20},
        "tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
    }))
    return p


def test_estimate_arithmetic(spec_path):
    loaded = open_study(spec_path)
    plan = make_plan(loaded.spec, loaded.cards)
    seen: list[tuple[Shape, int]] = []

    def fps(shape: Shape, width: int) -> float:
        seen.append((shape, width))
        return 1000.0

    one = estimate(plan, (), 1, fps)
    frames = sum(task_frames(t) * t.trials for t in plan)
    assert one.frames == frames == sum(t.config.iterations * 4 * 16 * t.trials for t in plan)
    assert one.trials == plan.trial_count
    assert one.compute_s == pytest.approx(frames / 1000)
    assert one.wall_s == pytest.approx(one.compute_s)  # one slot: everything in a row
    assert len(seen) == len(set(seen))  # each shape measured once
    # many slots: the longest dependency chain, pre-train (30 it) then fine-tune (30 it)
    wide = estimate(plan, (), 100, fps)
    assert wide.chain_s == pytest.approx(2 * 30 * 4 * 16 / 1000)
    assert wide.wall_s == pytest.approx(wide.chain_s)
    # finished tasks are not counted
    done = estimate(plan, set(plan.ids), 4, fps)
    assert (done.trials, done.frames, done.wall_s) == (0, 0, 0.0)


def test_each_task_is_costed_at_its_own_label_width(spec_path):
    # a fine-tune reads source + target classes, a baseline the target's only: each at the
    # figure measured for its own width, once per (shape, width)
    loaded = open_study(spec_path)
    plan = make_plan(loaded.spec, loaded.cards)
    widths = {t.id: (3 if t.source else 2) for t in plan}
    seen: list[tuple[Shape, int]] = []

    def fps(shape: Shape, width: int) -> float:
        seen.append((shape, width))
        return 1000.0 * width

    est = estimate(plan, (), 1, fps, lambda t: widths[t.id])
    assert len(seen) == len(set(seen)) and {w for _, w in seen} == {2, 3}
    assert est.compute_s == pytest.approx(
        sum(task_frames(t) * t.trials / (1000.0 * widths[t.id]) for t in plan))


def test_dry_run_prints_an_estimate_and_caches_the_throughput(spec_path, tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    r = CliRunner().invoke(app, ["run", str(spec_path), "--dry-run", "--num-cpus", "2"],
                           env=env)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    head = next(ln for ln in lines if ln.startswith("estimate ("))
    assert head.startswith("estimate (not a measurement): about ")
    assert "wall time for the 5 trial(s) still to run" in head
    measured = [ln for ln in lines if "frames/s at lstm (history 16, depth 1, hidden 8" in ln]
    assert measured and all("(measured now, median of 5 steps after 2 warm-up" in ln
                            for ln in measured)
    assert any("2 trial(s) in parallel (2 CPUs / 1 per trial)" in ln for ln in lines)
    assert any(ln.strip().startswith("not included:") for ln in lines)
    cache = tmp_path / "cache" / "kitchen-study" / "throughput.json"
    entries = json.loads(cache.read_text())
    assert entries and all(v["frames_per_s"] > 0 for v in entries.values())
    assert all("torch " in k and "history 16" in k for k in entries)

    again = CliRunner().invoke(app, ["run", str(spec_path), "--dry-run", "--num-cpus", "2"],
                               env=env)
    assert again.exit_code == 0, again.output
    assert "(cached, measured " in again.stdout and "measured now" not in again.stdout

    # an entry measured on a busy machine is used, and the line says so
    for v in entries.values():
        v["load_average"], v["cpus"] = 7.5, 2
    cache.write_text(json.dumps(entries))
    busy = CliRunner().invoke(app, ["run", str(spec_path), "--dry-run", "--num-cpus", "2"],
                              env=env)
    assert busy.exit_code == 0, busy.output
    assert "measured at load average 7.5 on 2 CPUs" in busy.stdout
    assert "measured now" not in busy.stdout

    # an entry another version measured (no method recorded) is measured again, not trusted
    for v in entries.values():
        del v["method"]
        v["frames_per_s"] = 1.0
    cache.write_text(json.dumps(entries))
    old = CliRunner().invoke(app, ["run", str(spec_path), "--dry-run", "--num-cpus", "2"],
                             env=env)
    assert old.exit_code == 0, old.output
    assert "measured now" in old.stdout and "(cached" not in old.stdout
    assert all(v["frames_per_s"] > 1.0 and v["method"]
               for v in json.loads(cache.read_text()).values())
