"""The query API and the report on a real MLflow SQLite store populated with known numbers
through the tracking API; every expected number is computed by hand in the comments."""

from __future__ import annotations

import math
import uuid

import matplotlib
import pandas as pd
import pytest

from data_prep.errors import DataError
from study.mlflow_layout import TaskMeta
from study.query import StudyNotFound, StudyResults, load_study
from study.report import write_report
from study.tracking import MlflowRunLogger
from tests.memory_logger import InMemoryRunLogger
from tests.study_data import RUNS, S1, S2, populate, task_id

matplotlib.use("Agg")

N_FINISHED = len(RUNS)  # 24


def test_results_table(study):
    df = study.results()
    assert len(df) == N_FINISHED  # the FAILED attempt is not a result
    assert set(df["status"]) == {"FINISHED"}
    assert list(df.columns[:15]) == ["task_id", "kind", "mode", "source", "source_split",
                                     "target", "target_split", "arrangement", "seed",
                                     "frame_acc", "input_acc", "edit", "f1@10", "f1@25", "f1@50"]
    assert {"iterations", "run_id", "status"} <= set(df.columns)
    row = df[df["task_id"] == task_id(RUNS[9])].iloc[0]  # a->b concat seed 0, acc 55
    assert (row["source"], row["target"], row["seed"], row["arrangement"]) == ("a", "b", 0,
                                                                              "concat")
    assert (row["frame_acc"], row["input_acc"], row["edit"]) == (55.0, 35.0, 50.0)
    assert (row["f1@10"], row["f1@25"], row["f1@50"]) == (45.0, 40.0, 25.0)
    assert row["iterations"] == 1024
    assert len(study.results(include_unfinished=True)) == N_FINISHED + 1


def test_gains_pair_with_the_same_target_split_and_seed(study):
    g = study.gains(mode="transfer")
    # 12 transfer runs; b->c seed 5 has no baseline of (c, split1, 5) -> 11 gains
    assert len(g) == 11
    a_b = g[(g["source"] == "a") & (g["target"] == "b") & (g["arrangement"] == "concat")]
    assert sorted(a_b["gain"]) == [-2.0, 4.0, 5.0, 6.0]  # 58-60 (split2), 56-52, 55-50, 60-54


def test_transfer_matrix(study):
    # transfers ran in two arrangements (concat, merged): never averaged, one column each
    m = study.transfer_matrix("frame_acc")
    assert m.attrs["arrangements"] == ["concat", "merged"]
    assert list(m.columns.names) == ["target", "arrangement"]
    assert list(m.index) == ["a", "b", "c"]
    assert list(m.columns) == [("b", "concat"), ("b", "merged"), ("c", "concat")]
    # a->b concat: gains 5, 4, 6 (split1), -2 (split2) -> 13 / 4; merged: 7 (one seed)
    assert m.loc["a", ("b", "concat")] == pytest.approx(13 / 4)
    assert m.loc["a", ("b", "merged")] == pytest.approx(7.0)
    assert m.loc["a", ("c", "concat")] == pytest.approx(3.5)  # (5 + 2) / 2
    assert m.loc["b", ("c", "concat")] == pytest.approx(2.0)  # 42 - 40; seed 5 unpaired
    assert m.loc["c", ("b", "concat")] == pytest.approx(-1 / 3)  # (-1 + 1 - 1) / 3
    assert math.isnan(m.loc["b", ("b", "concat")]) and math.isnan(m.loc["c", ("c", "concat")])
    # one arrangement chosen: plain target columns
    concat = study.transfer_matrix(arrangement="concat")
    assert list(concat.columns) == ["b", "c"] and concat.attrs["arrangements"] == ["concat"]
    assert concat.loc["a", "b"] == pytest.approx(13 / 4)
    assert study.transfer_matrix(arrangement="merged").loc["a", "b"] == pytest.approx(7.0)
    by_split = study.transfer_matrix(by_split=True)
    assert list(by_split.columns.names) == ["target", "target_split", "arrangement"]
    assert by_split.loc[("a", S1), ("b", S2, "concat")] == pytest.approx(-2.0)
    assert by_split.loc[("a", S1), ("b", S1, "concat")] == pytest.approx(5.0)
    assert by_split.loc[("a", S1), ("b", S1, "merged")] == pytest.approx(7.0)
    one = study.transfer_matrix(by_split=True, arrangement="concat")
    assert one.loc[("a", S1), ("b", S1)] == pytest.approx(5.0)
    joint = study.transfer_matrix(mode="joint")  # joint ran in concat only
    assert joint.shape == (1, 1) and joint.loc["a", "b"] == pytest.approx(1.0)
    # another metric: edit = frame_acc - 5 everywhere, so the gains are the same
    assert study.transfer_matrix("edit", arrangement="concat").loc["a", "b"] == pytest.approx(
        13 / 4)
    with pytest.raises(ValueError, match="unknown metric"):
        study.transfer_matrix("accuracy")


def test_best_transfer_pairs_gain_ci_and_p_value(study):
    best = study.best_transfer_pairs(k=None)
    order = [(r.source, r.target, r.target_split, r.mode, r.arrangement)
             for r in best.itertuples()]
    # ranked by the 95 % interval's lower bound; pairs without one (one seed) last, by gain
    assert order == [("a", "b", S1, "transfer", "concat"),   # 5 - 2.48 = +2.52
                     ("a", "b", S1, "joint", "concat"),      # 1 - 0
                     ("c", "b", S1, "transfer", "concat"),   # -1/3 - 2.87 = -3.20
                     ("a", "c", S1, "transfer", "concat"),   # 3.5 - 19.06 = -15.56
                     ("a", "b", S1, "transfer", "merged"),   # +7, one seed
                     ("b", "c", S1, "transfer", "concat"),   # +2, one seed
                     ("a", "b", S2, "transfer", "concat")]   # -2, one seed
    assert list(best["few_seeds"]) == [False, False, False, True, True, True, True]
    # the mean gain alone still ranks on request
    by_gain = study.best_transfer_pairs(k=None, rank_by="gain")
    assert list(by_gain["gain"]) == sorted(by_gain["gain"], reverse=True)
    with pytest.raises(ValueError, match="rank_by"):
        study.best_transfer_pairs(rank_by="p")
    # c->b: d = -1, 1, -1: mean -1/3, sd = sqrt(4/3), half = 4.302653 * 1.154701 / 1.732051
    assert best.iloc[2]["ci_low"] == pytest.approx(-1 / 3 - 2.868435, abs=1e-5)

    top = best.iloc[0]  # a->b split1 concat: d = 5, 4, 6
    # mean 5, sd 1, half = t(0.975, df=2) * 1 / sqrt(3) = 4.302653 / 1.732051 = 2.484138
    assert top["n_seeds"] == 3
    assert (top["mean"], top["baseline"], top["gain"]) == pytest.approx((57.0, 52.0, 5.0))
    assert top["ci_low"] == pytest.approx(5 - 2.484138, abs=1e-5)
    assert top["ci_high"] == pytest.approx(5 + 2.484138, abs=1e-5)
    # t = 5 / (1 / sqrt 3) = 8.660254; for df = 2, p = 1 - |t| / sqrt(t^2 + 2) = 0.013072
    t = 5 * math.sqrt(3)
    assert top["p_value"] == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=1e-6)

    ac = best.iloc[3]  # a->c: d = 5, 2: mean 3.5, sd = 3 / sqrt 2, se = 1.5
    # half = t(0.975, df=1) * 1.5 = 12.706205 * 1.5 = 19.059307; df=1: p = 1 - 2/pi atan|t|
    assert ac["n_seeds"] == 2
    assert (ac["ci_low"], ac["ci_high"]) == pytest.approx((3.5 - 19.059307, 3.5 + 19.059307),
                                                          abs=1e-5)
    assert ac["p_value"] == pytest.approx(1 - 2 / math.pi * math.atan(3.5 / 1.5), rel=1e-6)

    joint = best.iloc[1]  # d = 1, 1, 1: zero-width interval, t = +inf, p = 0 (scipy's rule)
    assert (joint["ci_low"], joint["ci_high"]) == (1.0, 1.0)
    assert joint["p_value"] == 0.0
    for single in (best.iloc[4], best.iloc[5], best.iloc[6]):  # one seed: no interval, no test
        assert single["n_seeds"] == 1
        assert math.isnan(single["ci_low"]) and math.isnan(single["p_value"])

    only_b = study.best_transfer_pairs(target="b", k=2)
    assert len(only_b) == 2 and list(only_b["gain"]) == [5.0, 1.0]
    assert list(study.best_transfer_pairs(target="b", mode="joint")["gain"]) == [1.0]
    assert study.best_transfer_pairs(target="nope").empty


def test_convergence_long_and_wide(study):
    long = study.convergence("b")
    # into b: baselines 3 seeds split1 + 1 split2 and transfers a [concat] 4, a [merged] 1,
    # each at 512 and 1024; c [concat] 3 at 1024 only (no evaluation before the end)
    assert len(long) == (4 + 4 + 1) * 2 + 3
    assert set(long["series"]) == {"baseline", "a [concat]", "a [merged]", "c"}
    wide = study.convergence("b", wide=True)
    assert list(wide.index) == [512, 1024]  # the legacy curve.frame_acc.256 is not read
    assert list(wide.columns) == ["baseline", "a [concat]", "a [merged]", "c"]
    # baseline 512: (30 + 31 + 32 + 20) / 4; 1024 (the final values): (50 + 52 + 54 + 60) / 4
    assert wide.loc[512, "baseline"] == pytest.approx(28.25)
    assert wide.loc[1024, "baseline"] == pytest.approx(54.0)
    # a [concat] 512: (45 + 46 + 47 + 44) / 4; 1024: (55 + 56 + 60 + 58) / 4
    assert wide.loc[512, "a [concat]"] == pytest.approx(45.5)
    assert wide.loc[1024, "a [concat]"] == pytest.approx(57.25)
    assert wide.loc[1024, "a [merged]"] == 57.0
    # c: (49 + 53 + 53) / 3 at the end, nothing at 512
    assert math.isnan(wide.loc[512, "c"]) and wide.loc[1024, "c"] == pytest.approx(155 / 3)
    split1 = study.convergence("b", target_split=S1, wide=True)
    assert split1.loc[512, "baseline"] == pytest.approx(31.0)
    into_c = study.convergence("c")  # 2 baselines, a->c 2, b->c 2: final values only
    assert len(into_c) == 6 and set(into_c["iteration"]) == {1024}
    with pytest.raises(ValueError, match="target"):
        study.convergence(wide=True)


def test_convergence_reads_the_step_history(tmp_path):
    """One value per step (a value logged again at a step counts once: the later one); an
    adopted run shows its origin's curve; a search's run has no curve; results built from
    records alone cannot answer."""
    from study.mlflow_layout import TAG_REUSED_FROM

    mem = InMemoryRunLogger()
    sid = mem.start_study("h", "h1")
    base = mem.start_task(sid, TaskMeta("baseline/b", "baseline", "none", "b", S1))
    for it, v in ((10, 20.0), (20, 30.0), (20, 35.0), (30, 40.0)):  # 20 again: a retry
        mem.log_metrics(base, {"frame_acc": v, "iteration": it}, step=it)
    mem.end_task(base)
    v2 = mem.start_study("h", "h2")
    adopted = mem.start_task(v2, TaskMeta("baseline/b", "baseline", "none", "b", S1))
    mem.set_tags(adopted, {TAG_REUSED_FROM: base})
    mem.log_metrics(adopted, {"frame_acc": 40.0, "iteration": 30}, step=30)
    mem.end_task(adopted)
    search = mem.start_task(v2, TaskMeta("search/b", "search", "none", "b", S1))
    mem.log_metrics(search, {"frame_acc": 45.0, "best.frame_acc": 45.0})  # step 0
    mem.end_task(search)
    for h in ("h1", "h2"):
        long = StudyResults.from_logger(mem, "h", h).convergence("b")
        assert list(zip(long["iteration"], long["frame_acc"], strict=True)) == [
            (10, 20.0), (20, 35.0), (30, 40.0)]
    bare = StudyResults.from_records("h", "h2", mem.study_runs("h", "h2"))
    with pytest.raises(ValueError, match="metric histories"):
        bare.convergence("b")


def test_plots_are_figures(study):
    from matplotlib.figure import Figure

    heat = study.plot_transfer_heatmap()
    assert isinstance(heat, Figure)
    texts = {t.get_text() for t in heat.axes[0].texts}
    # one column per arrangement (a->b concat 3.25, merged 7), named in the title
    assert {"+3.2", "+7.0", "+3.5", "+2.0", "-0.3", "-"} <= texts
    assert "arrangements concat, merged" in heat.axes[0].get_title()
    conv = study.plot_convergence("b")
    assert isinstance(conv, Figure)
    labels = [line.get_label() for line in conv.axes[0].get_lines()]
    assert labels == ["baseline", "a [concat]", "a [merged]", "c"]
    assert conv.axes[0].get_xscale() == "log"


def test_in_memory_logger_gives_the_same_answers(study):
    mem = InMemoryRunLogger()
    populate(mem, "same")
    other = StudyResults.from_logger(mem, "same")
    cols = ["task_id", "frame_acc", "edit", "f1@50", "seed", "iterations"]
    pd.testing.assert_frame_equal(other.results()[cols], study.results()[cols])
    pd.testing.assert_frame_equal(other.best_transfer_pairs(k=None),
                                  study.best_transfer_pairs(k=None))
    pd.testing.assert_frame_equal(other.convergence().drop(columns="run_id"),
                                  study.convergence().drop(columns="run_id"))


def test_hash_selection_and_missing_studies(store, tmp_path):
    uri, name = store
    assert load_study(name, uri, study_hash="hq").study_hash == "hq"
    with pytest.raises(StudyNotFound):
        load_study(name, uri, study_hash="other")
    with pytest.raises(StudyNotFound):
        load_study(f"{name}-nope", uri)
    missing = tmp_path / "none.db"
    with pytest.raises(StudyNotFound, match="no MLflow database"):
        load_study(name, f"sqlite:///{missing}")
    assert not missing.exists()  # a query never creates a store


def test_spec_path_selects_the_spec_version(store, tmp_path):
    """load_study(SPEC) reads the spec's name, tracking URI and content hash."""
    import yaml

    from study.spec_data import open_study
    from tests.study_data import write_kitchens

    uri, _ = store
    paths = write_kitchens(tmp_path / "data", kitchens=1, videos=4)
    name = f"spec{uuid.uuid4().hex[:8]}"
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({
        "name": name, "tracking_uri": uri,
        "datasets": {n: {"path": str(p), "splits": [1]} for n, p in paths.items()},
        "experiments": {"iterations": 10}}))
    h = open_study(spec).hash
    logger = MlflowRunLogger(uri)
    populate(logger, name, study_hash=h, runs=RUNS[:2])
    newer = logger.start_study(name, "edited-spec")  # a later version of the study
    logger.end_study(newer)
    got = load_study(spec)
    assert (got.name, got.study_hash, len(got.results())) == (name, h, 2)
    # without the data the hash cannot be computed: the latest version, with a warning
    next(iter(paths.values())).unlink()
    with pytest.warns(UserWarning, match="cannot compute the study hash"):
        latest = load_study(spec)
    assert latest.study_hash == "edited-spec" and latest.results().empty


def test_report(study, tmp_path):
    out = tmp_path / "report"
    write_report(study, out)
    md = (out / "report.md").read_text()
    assert "## Baselines" in md and "## Transfer into b" in md and "## Convergence" in md
    # Table-5-like arrangement x mode for a -> b split1: concat transfer mean 57, joint 53
    assert "| concat | 53.00 (+1.00) | 57.00 (+5.00) |" in md
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert "transfer_heatmap.png" in pngs and "convergence_b.png" in pngs
    # writing again replaces the report as a whole (no stale files, no temp dirs left)
    (out / "stale.txt").write_text("x")
    write_report(study, out)
    assert not (out / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["report"]
    # a directory that is not a report is never replaced
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep")
    with pytest.raises(DataError, match="refusing to replace"):
        write_report(study, other)
    assert (other / "mine.txt").read_text() == "keep"
