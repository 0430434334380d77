"""The query API's figures: matplotlib ``Figure`` objects (no pyplot, no GUI backend)
drawn from a :class:`~study.query.StudyResults`. Users call them as its methods
(``results.plot_convergence("b")``, ``results.plot_transfer_heatmap()``); the report
(:mod:`study.report`) saves them as PNG files.

matplotlib and scipy are imported inside the functions: ``kitchen-study best`` and
``status`` load the query API without either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .mlflow_layout import metric_column

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .query import StudyResults

__all__ = ["plot_convergence", "plot_transfer_heatmap"]


def plot_transfer_heatmap(study: StudyResults, metric: str = "frame_acc",
                          mode: str = "transfer", *, arrangement: str | None = None) -> Figure:
    """Heatmap of :meth:`StudyResults.transfer_matrix` (gain in points; diverging, centred at 0)."""
    from matplotlib.figure import Figure

    m = study.transfer_matrix(metric, mode, arrangement=arrangement)
    fig = Figure(figsize=(1.6 + 1.2 * max(1, m.shape[1]), 1.4 + 0.8 * max(1, m.shape[0])),
                 layout="constrained")
    ax = fig.add_subplot()
    col = metric_column(metric)
    arrs = m.attrs.get("arrangements") or ([arrangement] if arrangement else [])
    which = (f"arrangement {arrs[0]}" if len(arrs) == 1
             else f"arrangements {', '.join(arrs)}: one column each" if arrs else "")
    title = f"{study.name}\n{col} gain over baseline ({mode}" + (
        f", {which})" if which else ")")
    if m.empty:
        ax.text(0.5, 0.5, "no paired runs", ha="center", va="center")
        ax.set_axis_off()
        ax.set_title(title)
        return fig
    vals = m.to_numpy(float)
    lim = float(np.nanmax(np.abs(vals))) if np.isfinite(vals).any() else 1.0
    im = ax.imshow(vals, cmap="RdBu", vmin=-lim or -1, vmax=lim or 1)
    ax.set_xticks(range(m.shape[1]), [_label(c) for c in m.columns], rotation=30,
                  ha="right")
    ax.set_yticks(range(m.shape[0]), [_label(i) for i in m.index])
    ax.set_xlabel("target")
    ax.set_ylabel("source")
    for (i, j), v in np.ndenumerate(vals):
        dark = bool(np.isfinite(v) and abs(v) > 0.6 * lim)  # white text on dark cells
        ax.text(j, i, "-" if np.isnan(v) else f"{v:+.1f}", ha="center", va="center",
                color="white" if dark else "black")
    fig.colorbar(im, ax=ax, label=f"{col} gain (points)")
    ax.set_title(title)
    return fig


def plot_convergence(study: StudyResults, target: str, *, target_split: str | None = None,
                     mode: str = "transfer") -> Figure:
    """Frame accuracy vs iterations (log2 axis) per source and the baseline, like the
    paper's Figs 3-5: the mean of :meth:`StudyResults.convergence` ``(wide=True)`` and, in the same
    colour, a band = the 95 % t-interval of that mean over the runs (seeds; and splits
    when ``target_split`` is None), where a series has at least 2 runs at a point. Each
    series has its own colour (the baseline black, dashed); the bands are labelled
    (``PolyCollection.get_label()``, and one legend entry); x ticks are the evaluation
    points."""
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import NullLocator
    from scipy.special import stdtrit

    long = study.convergence(target, target_split=target_split, mode=mode)
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    title = f"{target}" + (f" {target_split}" if target_split else "") + f" ({mode})"
    if long.empty:
        ax.text(0.5, 0.5, "no convergence curves", ha="center", va="center")
        ax.set_axis_off()
        ax.set_title(title)
        return fig
    # the mean is convergence(wide=True)'s (every run counts once); the band is the 95 %
    # t-interval of that mean over the runs at each point
    stats = long.groupby(["series", "iteration"])["frame_acc"].agg(["mean", "std", "count"])
    n = stats["count"].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = np.where(n >= 2, stdtrit(np.maximum(n - 1, 1), 0.975)
                        * stats["std"].to_numpy(float) / np.sqrt(n), np.nan)
    stats["lo"], stats["hi"] = stats["mean"] - half, stats["mean"] + half
    series = stats.index.get_level_values("series").unique()
    ordered = (["baseline"] if "baseline" in series else []) + sorted(
        s for s in series if s != "baseline")
    over = "seeds" if long["target_split"].nunique() <= 1 else "seeds and splits"
    band_label = f"95 % CI over {over}"
    colours = iter(f"C{i}" for i in range(10_000))
    for s in ordered:
        st = stats.loc[s]
        colour = "black" if s == "baseline" else next(colours)
        ax.plot(st.index, st["mean"], marker="o", label=s, color=colour,
                linestyle="--" if s == "baseline" else "-")
        ok = st["lo"].notna().to_numpy()
        if ok.any():
            ax.fill_between(st.index, st["lo"], st["hi"], where=ok, alpha=0.18,
                            color=colour, linewidth=0, label=f"{s}: {band_label}")
    points = sorted(long["iteration"].unique())
    ax.set_xscale("log", base=2)
    ax.set_xticks(points, [str(int(p)) for p in points])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("target training iterations (evaluation points)")
    ax.set_ylabel("frame accuracy (%)")
    ax.set_title(title)
    handles, _ = ax.get_legend_handles_labels()
    lines = [h for h in handles if not isinstance(h, PolyCollection)]
    band = Patch(facecolor="grey", alpha=0.3, label=f"band: {band_label} (t, where n ≥ 2)")
    ax.legend(handles=[*lines, band])
    ax.grid(True, alpha=0.3)
    return fig


def _label(key: Any) -> str:
    """A matrix row/column key as text: ``("b", "concat")`` -> ``b / concat``."""
    return " / ".join(map(str, key)) if isinstance(key, tuple) else str(key)
