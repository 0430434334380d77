"""Newcomer stumbles of issue 19, checked the way a new user met them.

1. docs/cluster.md's `ray job submit` entrypoint, pasted as written, with the shipped
   ``studies/paper.yaml`` (paths ``../data/...``) and ``--data-root`` the project folder on
   the nodes: the driver runs in Ray's copy of the working directory (a ``_ray_pkg_*``
   folder holding only the uploaded files), here laid out as Ray lays it out, as a dry run.
7. ``best`` says how many pairs it shows of how many, and that it ranks by ci_low.
8. A dry run of a spec that asks for GPUs says no trial can be scheduled on a machine
   without them.
10. ``transfer_matrix`` says it holds gains.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from data_prep.synth import make_kitchens
from data_prep.table import write_table
from study.cli import app
from study.commands import _best_text
from study.walltime import not_schedulable_here

ROOT = Path(__file__).resolve().parents[1]


def _docs_entrypoint() -> list[str]:
    """The `kitchen-study ...` entrypoint of docs/cluster.md's `ray job submit` example."""
    text = (ROOT / "docs" / "cluster.md").read_text()
    block = re.search(r"```bash\n(export RAY_AUTH_MODE.*?ray job submit.*?)```", text, re.S)
    assert block is not None, "docs/cluster.md lost its ray job submit example"
    command = block.group(1).replace("\\\n", " ")
    entry = command.split(" -- ", 1)[1].strip()
    return shlex.split(entry)


def _job_layout(tmp_path: Path) -> tuple[Path, Path]:
    """(the job's working dir as Ray makes it, the project folder on the nodes with data)."""
    job = tmp_path / "session_1" / "runtime_resources" / "working_dir_files" / "_ray_pkg_ab12"
    shutil.copytree(ROOT / "studies", job / "studies")  # uploaded: the specs, not data/
    node = tmp_path / "home" / "ray" / "kitchen-study"
    tables = make_kitchens(seed=0, kitchens=3, videos=8, participants=4)
    for name, table in zip(("breakfast_sim", "salads_sim", "mpii_sim"), tables.values(),
                           strict=True):
        write_table(table, node / "data" / f"{name}.parquet")
    return job, node


def test_the_cluster_docs_command_works_with_the_shipped_spec(tmp_path, monkeypatch):
    entry = _docs_entrypoint()
    assert entry[:3] == ["kitchen-study", "run", "studies/paper.yaml"], entry
    assert entry[entry.index("--data-root") + 1] == "/home/ray/kitchen-study"  # the project
    job, node = _job_layout(tmp_path)
    head_store = f"sqlite:///{tmp_path / 'head' / 'mlflow.db'}"
    (tmp_path / "head").mkdir()
    given = {"$MLFLOW_TRACKING_URI": head_store, "/home/ray/kitchen-study": str(node)}
    args = [given.get(a, a) for a in entry[1:]]
    monkeypatch.chdir(job)
    monkeypatch.delenv("KITCHEN_DATA_ROOT", raising=False)  # --data-root sets it: restored
    monkeypatch.setenv("RAY_JOB_ID", "02000000")  # what Ray sets for a job's driver
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    res = CliRunner().invoke(app, [*args, "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "study paper (hash" in res.output
    assert "tasks" in res.output and "estimate (not a measurement)" in res.output


def test_a_data_root_without_the_data_says_how_the_paths_were_resolved(tmp_path, monkeypatch):
    job, _ = _job_layout(tmp_path)
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    monkeypatch.chdir(job)
    monkeypatch.delenv("KITCHEN_DATA_ROOT", raising=False)  # --data-root sets it: restored
    monkeypatch.setenv("RAY_JOB_ID", "02000000")
    res = CliRunner().invoke(app, ["run", "studies/paper.yaml", "--data-root", str(empty),
                                   "--dry-run"])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    assert f"no such file: {empty / 'data' / 'breakfast_sim.parquet'}" in res.output
    assert f"relative dataset paths resolve against {empty / 'studies'}" in res.output
    assert "every node" in res.output
    assert "pass --data-root" not in res.output  # it was passed


def test_without_a_data_root_a_ray_job_is_told_to_pass_one(tmp_path, monkeypatch):
    job, _ = _job_layout(tmp_path)
    monkeypatch.chdir(job)
    monkeypatch.delenv("KITCHEN_DATA_ROOT", raising=False)  # --data-root sets it: restored
    monkeypatch.setenv("RAY_JOB_ID", "02000000")
    res = CliRunner().invoke(app, ["run", "studies/paper.yaml", "--dry-run"])
    assert res.exit_code == 2 and "pass --data-root DIR" in res.output, res.output


# -- 8: a GPU spec on a machine without the GPUs ------------------------------------------


def test_no_trial_can_be_scheduled_without_the_gpus_a_spec_asks_for():
    line = not_schedulable_here(cpu=4, gpu=0.25, cpus=16, gpus=0)
    assert line is not None and line.startswith("no trial can be scheduled on this machine")
    assert "0.25 GPU(s) per trial" in line and "it has none" in line
    assert "only 1" in not_schedulable_here(cpu=1, gpu=2, cpus=16, gpus=1)
    assert "100 CPUs per trial" in not_schedulable_here(cpu=100, gpu=0, cpus=16, gpus=0)
    assert not_schedulable_here(cpu=4, gpu=0.25, cpus=16, gpus=1) is None
    assert not_schedulable_here(cpu=1, gpu=0, cpus=2, gpus=0) is None


def test_the_paper_dry_run_says_so_on_a_cpu_only_machine(tmp_path, monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the paper's trials can be scheduled here")
    job, node = _job_layout(tmp_path)
    monkeypatch.chdir(job)
    monkeypatch.delenv("KITCHEN_DATA_ROOT", raising=False)  # --data-root sets it: restored
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    res = CliRunner().invoke(app, ["run", "studies/paper.yaml", "--data-root", str(node),
                                   "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
                                   "--dry-run"])
    assert res.exit_code == 0, res.output
    assert ("no trial can be scheduled on this machine: the spec asks for 0.25 GPU(s) per "
            "trial (resources.gpu) and it has none") in res.output


# -- 7: best says what it shows and how it ranks ------------------------------------------


def test_best_says_how_many_pairs_it_shows_and_how_it_ranks(study):
    every = study.best_transfer_pairs(k=None)
    n = len(every)
    assert n > 3
    text = _best_text(every.head(3), "frame_acc", total=n)
    head = text.splitlines()[0]
    assert f"the 3 best of {n} pairs (--k {n} or --all: every pair)" in head
    assert "ranked by ci_low, the lower bound of the 95 % CI" in head
    # the largest mean gain (a -> b merged, +7, one seed) is ranked last: said under the table
    full = _best_text(every, "frame_acc", total=n)
    assert f"all {n} pair(s)" in full.splitlines()[0]
    last = full.splitlines()[-1]
    top = every["gain"].idxmax()
    assert last.startswith("ranked by ci_low, not the mean gain: the largest mean gain, a -> b")
    assert f"is row {top + 1} because it has no interval (one seed)" in last


def test_best_says_nothing_extra_when_the_orders_agree():
    table = pd.DataFrame({"source": ["a", "b"], "target": ["c", "c"], "gain": [5.0, 2.0],
                          "ci_low": [3.0, 1.0], "ci_high": [7.0, 3.0], "n_seeds": [3, 3]})
    text = _best_text(table, "frame_acc", total=2)
    assert "not the mean gain" not in text and "all 2 pair(s)" in text


# -- 10: transfer_matrix holds gains ------------------------------------------------------


def test_transfer_matrix_says_it_holds_gains(study):
    m = study.transfer_matrix("frame_acc", arrangement="concat")
    assert m.attrs["values"] == "gain in frame_acc over the no-transfer baseline (points)"
    assert "**gains**, not scores" in type(study).transfer_matrix.__doc__
    readme = (ROOT / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if "s.transfer_matrix(" in ln)
    assert "GAINS" in line
