"""Figures and headlines that say what they show: the convergence plot's colours, labelled
95 % CI bands (computed, not min-max) and ticks at the evaluation points; the heatmap title
names the arrangement; the report ranks pairs by the CI's lower bound and flags few seeds.
Built on the known numbers of tests/test_query.py (in memory, matplotlib Agg)."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from matplotlib.colors import to_rgba

from study.query import StudyResults
from study.report import render_markdown
from tests.memory_logger import InMemoryRunLogger
from tests.study_data import S1, populate

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def study() -> StudyResults:
    mem = InMemoryRunLogger()
    populate(mem, "rep")
    return StudyResults.from_logger(mem, "rep")


def _t975(df: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.975, df))


def _band_at(coll, x: float) -> tuple[float, float]:
    v = np.concatenate([p.vertices for p in coll.get_paths()])
    ys = v[np.isclose(v[:, 0], x), 1]
    return float(ys.min()), float(ys.max())


def test_convergence_bands_colours_and_ticks(study):
    fig = study.plot_convergence("b")
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert [ln.get_label() for ln in lines] == ["baseline", "a [concat]", "a [merged]", "c"]
    colours = [to_rgba(ln.get_color()) for ln in lines]
    assert len(set(colours)) == 4  # one colour per series
    # bands where a series has >= 2 runs: baseline (4 runs), a [concat] (4), c (3, at the
    # end only); not a [merged] (1)
    bands = {c.get_label(): c for c in ax.collections}
    over = "95 % CI over seeds and splits"  # b has runs on split1 and split2
    assert set(bands) == {f"baseline: {over}", f"a [concat]: {over}", f"c: {over}"}
    for line in (lines[0], lines[1], lines[3]):  # each band in its own line's colour
        face = bands[f"{line.get_label()}: {over}"].get_facecolor()[0]
        assert np.allclose(face[:3], to_rgba(line.get_color())[:3])
    # the band is the t-interval of the mean over the runs, not min-max:
    # baseline at 512: 30, 31, 32, 20 -> mean 28.25, sd 5.5603, half = t(3) * sd / 2
    vals = np.array([30.0, 31.0, 32.0, 20.0])
    half = _t975(3) * vals.std(ddof=1) / 2
    lo, hi = _band_at(bands[f"baseline: {over}"], 512)
    assert (lo, hi) == pytest.approx((vals.mean() - half, vals.mean() + half))
    assert lo < vals.min() and hi > vals.max()  # wider than min-max here: 4 runs, wide t
    # ticks at the evaluation points, written as numbers (not 2^9, 2^10)
    assert list(ax.get_xticks()) == [512, 1024]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["512", "1024"]
    assert not ax.xaxis.get_minorticklocs().size
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:4] == ["baseline", "a [concat]", "a [merged]", "c"]
    assert legend[4] == f"band: {over} (t, where n ≥ 2)"


def test_convergence_one_split_is_over_seeds(study):
    ax = study.plot_convergence("b", target_split=S1).axes[0]
    labels = {c.get_label() for c in ax.collections}
    assert labels == {"baseline: 95 % CI over seeds", "a [concat]: 95 % CI over seeds",
                      "c: 95 % CI over seeds"}
    # split1 baseline at 1024 (the final values): 50, 52, 54 -> 52 +- t(2) * 2 / sqrt 3
    band = next(c for c in ax.collections if c.get_label().startswith("baseline"))
    half = _t975(2) * 2 / np.sqrt(3)
    assert _band_at(band, 1024) == pytest.approx((52 - half, 52 + half))


def test_heatmap_title_names_the_arrangement(study):
    title = study.plot_transfer_heatmap(arrangement="concat").axes[0].get_title()
    assert "arrangement concat" in title
    both = study.plot_transfer_heatmap()
    assert "arrangements concat, merged: one column each" in both.axes[0].get_title()
    ticks = [t.get_text() for t in both.axes[0].get_xticklabels()]
    assert ticks == ["b / concat", "b / merged", "c / concat"]


def test_report_ranks_by_ci_lower_bound_and_flags_few_seeds(study):
    md = render_markdown(study)
    best = md.split("## Best transfer pairs")[1]
    assert "Ranked by the lower bound of the 95 % CI" in best
    assert "! = fewer than 3 seeds" in best
    rows = [ln for ln in best.splitlines() if ln.startswith("| a (split1)")]
    # first row: a->b split1 concat, 3 seeds, no flag; a->c (2 seeds) flagged
    assert rows[0].startswith("| a (split1) | b split1 | transfer | concat |")
    assert rows[0].endswith("| 3 |")
    assert any("| c split1 |" in r and r.endswith("| 2 ! |") for r in rows)


def test_report_shows_the_hmm_reference_beside_the_baseline(tmp_path):
    """The report's temporal-context reference: the HMM on each baseline's target split,
    computed from the table the baseline trained on, beside the trained model."""
    from data_prep.synth import make_kitchens
    from data_prep.table import read_table, write_table
    from study.mlflow_layout import TaskMeta
    from study.tracking import log_result
    from trainables.hmm_reference import reference

    name, table = next(iter(make_kitchens(0, 1, 8, participants=4).items()))
    path = write_table(table, tmp_path / f"{name}.parquet")
    mem = InMemoryRunLogger()
    sid = mem.start_study("hmm", "h1")
    rid = mem.start_task(sid, TaskMeta(f"baseline:{name}.split1:s0", "baseline", "none", name,
                                       "split1", "", "", "", 0),
                         params={"target_path": str(path), "target_split": "split1",
                                 "validation": "people"})
    log_result(mem, rid, {"iteration": 10, "frame_acc": 12.5})
    mem.end_task(rid)
    mem.end_study(sid)
    text = render_markdown(StudyResults.from_logger(mem, "hmm"))
    assert "## Temporal-context reference (HMM)" in text
    assert "Protocol `validation`" in text
    ref = reference(read_table(path), "split1",
                    decoders=("input", "hmm_causal", "hmm_offline"))["metrics"]
    section = text.split("## Temporal-context reference (HMM)")[1]
    row = next(ln for ln in section.splitlines() if ln.startswith(f"| {name} | split1 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[2]) == pytest.approx(ref["input"]["frame_acc"], abs=0.01)
    assert float(cells[3]) == pytest.approx(ref["hmm_causal"]["frame_acc"], abs=0.01)
    assert float(cells[4]) == pytest.approx(ref["hmm_offline"]["frame_acc"], abs=0.01)
    assert float(cells[5]) == pytest.approx(12.5)
