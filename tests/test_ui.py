"""What the MLflow UI shows of a study's best pair (issue 19, stumble 2): the study run and
the experiment's description name the pair ``kitchen-study best`` ranks first, with its mean
gain and 95 % CI, and the transfer heatmap is an artifact of the study run.

Fast: the fake study of known numbers (``tests.study_data.RUNS``) in a real SQLite store; the
browser check (a real ``mlflow server`` and headless Chromium) is slow and skips without
Chromium.
"""

from __future__ import annotations

import html
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest

from study.mlflow_layout import GainBook, TaskMeta
from study.run_view import (
    BEST_PAIR_TAG,
    HEATMAP_ARTIFACT,
    pair_label,
    publish_best_pair,
    rank_live,
)
from study.tracking import MlflowRunLogger
from tests.study_data import RUNS, task_id


def _study_run(uri: str, name: str) -> str:
    return next(r.run_id for r in MlflowRunLogger(uri).study_runs(name) if r.role == "study")


@pytest.fixture(scope="module")
def published(store, study):
    """The fake study's run after :func:`publish_best_pair` (twice: a resumed study
    publishes again)."""
    uri, name = store
    logger = MlflowRunLogger(uri)
    logger.set_experiment_note(name, f"**kitchen-study {name}** — the fake study\n\nmore")
    sid = _study_run(uri, name)
    publish_best_pair(logger, sid)
    publish_best_pair(logger, sid)
    return uri, name, sid


def test_the_study_run_names_the_pair_kitchen_study_best_ranks_first(published, study):
    uri, name, sid = published
    top = study.best_transfer_pairs(k=None).iloc[0]
    # the fake study's first pair: a -> b concat on split1, per-seed gains 5, 4, 6
    assert (top["source"], top["target"], top["arrangement"], top["gain"]) == ("a", "b",
                                                                             "concat", 5.0)
    client = mlflow.MlflowClient(uri)
    run = client.get_run(sid)
    tags, metrics = run.data.tags, run.data.metrics
    assert tags[BEST_PAIR_TAG] == pair_label(top) == "a s1→b s1 transfer concat"
    assert (tags["best.source"], tags["best.target"], tags["best.mode"]) == ("a", "b",
                                                                           "transfer")
    assert metrics["best.gain.frame_acc"] == pytest.approx(top["gain"])
    assert metrics["best.gain_ci_low.frame_acc"] == pytest.approx(top["ci_low"])
    assert metrics["best.gain_ci_high.frame_acc"] == pytest.approx(top["ci_high"])
    assert metrics["best.seeds"] == 3 and metrics["best.pairs"] == 7
    # what the runs table shows without expanding anything: the run's name ...
    assert run.info.run_name == (f"study {name} · best a→b concat +5.00 "
                                 f"[{top['ci_low']:+.2f}, {top['ci_high']:+.2f}]")
    # ... and the first line of the experiment's description (once, after two calls)
    note = client.get_experiment_by_name(f"kitchen-study/{name}").tags["mlflow.note.content"]
    first = note.splitlines()[0]
    assert first == (f"**Best pair: a→b concat, +5.00** frame_acc points over the baseline "
                     f"(95 % CI {top['ci_low']:+.2f} to {top['ci_high']:+.2f}, 3 seeds)")
    assert len(first) < 110  # the bar shows one line of about 110 characters
    assert note.count("**Best pair") == 1 and note.count("(study version hq") == 1
    assert "the fake study" in note
    # the run's description says it in words, and why the largest mean gain is not first
    text = tags["mlflow.note.content"]
    assert "**Best pair: a s1→b s1 transfer concat**" in text and "3 seeds" in text
    assert "The largest mean gain, +7.00 (a s1→b s1 transfer merged" in text
    assert "with one seed it has no interval" in text
    # the heatmap, an image on the study run
    arts = [a.path for a in client.list_artifacts(sid, str(Path(HEATMAP_ARTIFACT).parent))]
    assert HEATMAP_ARTIFACT in arts
    local = client.download_artifacts(sid, HEATMAP_ARTIFACT, tempfile.mkdtemp())
    assert Path(local).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_driver_ranks_pairs_as_kitchen_study_best_does(study):
    """The study run's running ``best_gain.frame_acc`` (the driver's GainBook) follows the
    ranking of ``best_transfer_pairs``, pair for pair, not the best single run."""
    book = GainBook()
    # baselines last: every transfer's gain is logged when its baseline arrives
    for run in sorted(RUNS, key=lambda r: r[0] == "baseline"):
        kind, mode, src, ssplit, tgt, tsplit, arr, seed, acc, _ = run
        book.add(TaskMeta(task_id(run), kind, mode, tgt, tsplit, src, ssplit, arr, seed),
                 task_id(run), acc)
    live = rank_live(book)
    table = study.best_transfer_pairs(k=None)
    keys = ["source", "source_split", "target", "target_split", "mode", "arrangement"]
    assert [r["pair"] for r in live] == [tuple(row[k] for k in keys)
                                         for _, row in table.iterrows()]
    for r, (_, row) in zip(live, table.iterrows(), strict=True):
        assert r["gain"] == pytest.approx(row["gain"]) and r["seeds"] == row["n_seeds"]
        assert (math.isnan(r["ci_low"]) and math.isnan(row["ci_low"])) or \
            r["ci_low"] == pytest.approx(row["ci_low"])
    # the largest single-run gain (+7, one seed of a -> b merged) is not what it reports
    assert max(book.gains.values()) == 7.0 and live[0]["gain"] == 5.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chromium() -> str | None:
    return next((p for p in ("/usr/bin/chromium", shutil.which("chromium"),
                             shutil.which("chromium-browser"), shutil.which("google-chrome"))
                 if p and os.access(p, os.X_OK)), None)


@pytest.mark.slow
def test_the_mlflow_ui_in_a_browser_shows_the_best_pair(published, tmp_path):
    """A real ``mlflow server`` on the store and headless Chromium: the experiment's runs
    page, as rendered, holds the best pair's line and the study run's name."""
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium (apt-get install chromium)")
    uri, name, _ = published
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                    break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, \
                    "mlflow server did not start"
                time.sleep(1)
        exp = mlflow.MlflowClient(uri).get_experiment_by_name(f"kitchen-study/{name}")
        dom = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
             "--virtual-time-budget=30000", "--dump-dom",
             f"http://127.0.0.1:{port}/#/experiments/{exp.experiment_id}/runs"],
            capture_output=True, text=True, timeout=120).stdout
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)
    text = html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom)))
    assert "Best pair: a→b concat, +5.00 frame_acc points over the baseline (95 % CI " \
           "+2.52 to +7.48, 3 seeds)" in text, text[:2000]
    assert f"study {name} · best a→b concat +5.00 [+2.52, +7.48]" in text
