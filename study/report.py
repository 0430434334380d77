"""A study report: markdown tables in the paper's layout plus PNG figures, in one directory.

``write_report(load_study("studies/paper.yaml"), "report/")`` writes ``report/report.md`` and

* ``transfer_heatmap.png`` (and ``transfer_heatmap_joint.png`` when joint runs exist),
* ``convergence_<target>.png`` per target dataset with convergence curves.

Sections (all numbers in percent, means over seeds; "(+g)" is the mean paired gain over the
no-transfer baseline of the same target, split and seed, see :mod:`study.query`):

* **Baselines** (Table 4): per dataset and split, CNN input accuracy vs LSTM frame accuracy,
  edit and F1@{10,25,50}, with a per-dataset mean over splits.
* **Arrangement x mode** (Table 5): for every source -> target split that ran in more than one
  arrangement or mode, rows arrangements, columns modes.
* **Transfer into <target>** (Tables 6-8): rows target splits (+ mean over splits), columns the
  baseline and each (source, mode, arrangement).
* **Convergence** (Table 9): per target, frame accuracy at each evaluation point per source.
* **Best transfer pairs**: :meth:`StudyResults.best_transfer_pairs` with CI and p-value,
  ranked by the CI's lower bound; pairs with fewer than 3 seeds marked "!".
* **Searches**: per Optuna search, its best configuration and score
  (:meth:`StudyResults.search_summary`).

:func:`publish_convergence_plots` logs the convergence figures to the study's MLflow parent
run (``plots/convergence_<target>.png``); the runner calls it when a study finishes.

The directory is written atomically-ish: everything goes to a temporary sibling directory
that replaces ``out_dir`` by rename at the end, so a failure leaves the previous report (or
nothing) in place. An existing ``out_dir`` is replaced only if it is empty or holds a
``report.md`` (a previous report); anything else is refused rather than deleted.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from data_prep.errors import DataError
from trainables.metrics import METRIC_NAMES

from .budget import report_section as budget_section
from .estimates import report_section, write_scatter_plots
from .mlflow_layout import PLOTS_DIR, TAG_STUDY, TAG_STUDY_HASH
from .query import MIN_SEEDS, StudyResults
from .tracking import RunLogger

__all__ = ["publish_convergence_plots", "write_report"]

REPORT_FILE = "report.md"
#: Table 4's metric columns: the input scores' accuracy (the paper's CNN column) first.
_BASELINE_COLUMNS = ("input_acc", *(m for m in METRIC_NAMES if m != "input_acc"))
_HEADERS = {"input_acc": "CNN (input)", "frame_acc": "LSTM"}


def _fmt(v: float, gain: float | None = None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    s = f"{v:.2f}"
    if gain is not None and not math.isnan(gain):
        s += f" ({gain:+.2f})"
    return s


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _baselines(res: pd.DataFrame) -> str:
    b = res[res["kind"] == "baseline"]
    if b.empty:
        return "_No baseline runs._\n"
    cols = list(_BASELINE_COLUMNS)
    per_split = b.groupby(["target", "target_split"])[cols].mean()
    seeds = b.groupby(["target", "target_split"])["seed"].nunique()
    rows = []
    for ds in sorted(per_split.index.get_level_values(0).unique()):
        block = per_split.loc[ds]
        for split in sorted(block.index):
            rows.append([ds, split, str(seeds.loc[(ds, split)]),
                         *(_fmt(block.loc[split, c]) for c in cols)])
        if len(block) > 1:
            rows.append([ds, "**mean**", "", *(_fmt(block[c].mean()) for c in cols)])
    headers = [_HEADERS.get(c, c.replace("f1", "F1")) for c in cols]
    return _table(["dataset", "split", "seeds", *headers], rows)


def _arrangement_grid(res: pd.DataFrame, best: pd.DataFrame) -> str:
    base = res[res["kind"] == "baseline"].groupby(["target", "target_split"])["frame_acc"].mean()
    out = []
    for (src, ssplit, tgt, tsplit), g in best.groupby(
            ["source", "source_split", "target", "target_split"]):
        if g["arrangement"].nunique() < 2 and g["mode"].nunique() < 2:
            continue
        modes = sorted(g["mode"].unique())
        rows = []
        for arr in sorted(g["arrangement"].unique()):
            cells = []
            for mode in modes:
                hit = g[(g["arrangement"] == arr) & (g["mode"] == mode)]
                cells.append(_fmt(hit["mean"].iloc[0], hit["gain"].iloc[0]) if len(hit) else "-")
            rows.append([arr, *cells])
        b = base.get((tgt, tsplit), math.nan)
        out.append(f"### {src} ({ssplit}) -> {tgt} {tsplit}\n\nbaseline {_fmt(b)}\n\n"
                   + _table(["arrangement", *modes], rows))
    return "\n".join(out) if out else "_No pair ran in several arrangements or modes._\n"


def _transfer_tables(res: pd.DataFrame, best: pd.DataFrame) -> str:
    out = []
    base = res[res["kind"] == "baseline"].groupby(["target", "target_split"])["frame_acc"].mean()
    for tgt in sorted(best["target"].unique()):
        g = best[best["target"] == tgt]
        combos = sorted({(r.source, r.mode, r.arrangement) for r in g.itertuples()})
        splits = sorted(g["target_split"].unique())
        rows, means = [], {c: [] for c in ["baseline", *combos]}
        for split in splits:
            b = base.get((tgt, split), math.nan)
            means["baseline"].append(b)
            cells = [_fmt(b)]
            for src, mode, arr in combos:
                hit = g[(g["target_split"] == split) & (g["source"] == src)
                        & (g["mode"] == mode) & (g["arrangement"] == arr)]
                if len(hit):
                    cells.append(_fmt(hit["mean"].mean(), hit["gain"].mean()))
                    means[(src, mode, arr)].append(hit["mean"].mean())
                else:
                    cells.append("-")
            rows.append([split, *cells])
        if len(splits) > 1:
            rows.append(["**mean**", *(_fmt(sum(v) / len(v) if v else math.nan)
                                       for v in means.values())])
        header = ["split", "baseline", *(f"{s} {m}/{a}" for s, m, a in combos)]
        out.append(f"## Transfer into {tgt}\n\nLSTM frame accuracy (gain over the baseline)."
                   "\n\n" + _table(header, rows))
    return "\n".join(out) if out else "## Transfer\n\n_No transfer or joint runs._\n"


def _convergence(study: StudyResults, targets: Sequence[str]) -> str:
    out = []
    for tgt in targets:
        for mode in ("transfer", "joint"):
            w = study.convergence(tgt, mode=mode, wide=True)
            if w.empty or (mode == "joint" and list(w.columns) == ["baseline"]):
                continue
            rows = [[str(it), *(_fmt(w.loc[it, c]) for c in w.columns)] for it in w.index]
            out.append(f"### {tgt} ({mode})\n\n" + _table(["iterations", *w.columns], rows)
                       + (f"\n![convergence {tgt}](convergence_{tgt}.png)\n"
                          if mode == "transfer" else ""))
    return "\n".join(out) if out else "_No convergence curves._\n"


def _best(best: pd.DataFrame, k: int = 10) -> str:
    if best.empty:
        return "_No paired runs._\n"
    rows = []
    for r in best.head(k).itertuples():
        ci = "-" if math.isnan(r.ci_low) else f"[{r.ci_low:+.2f}, {r.ci_high:+.2f}]"
        p = "-" if math.isnan(r.p_value) else f"{r.p_value:.3g}"
        rows.append([f"{r.source} ({r.source_split})", f"{r.target} {r.target_split}", r.mode,
                     r.arrangement, _fmt(r.mean), _fmt(r.baseline), f"{r.gain:+.2f}", ci, p,
                     f"{r.n_seeds}{' !' if r.few_seeds else ''}"])
    note = ("\nRanked by the lower bound of the 95 % CI of the paired gain (pairs without an "
            "interval last, by gain).")
    if best.head(k)["few_seeds"].any():
        note += (f" ! = fewer than {MIN_SEEDS} seeds: the interval is wide or absent; "
                 "run more seeds before trusting the gain.")
    return _table(["source", "target", "mode", "arrangement", "mean", "baseline", "gain",
                   "95% CI", "p", "seeds"], rows) + note + "\n"


def _searches(study: StudyResults) -> str:
    summary = study.search_summary()
    if summary.empty:
        return ""
    out = ["## Searches\n"]
    for r in summary.itertuples():
        out.append(f"### {r.task_id}\n\nOptuna study `{r.optuna_study}`: "
                   f"{search_counts(r)}.\n")
        if r.best_params is None:
            out.append("_No trial ran to the end._\n")
            continue
        out.append(f"Best {r.metric} {r.best_value:.2f} (trial {r.best_number}): "
                   f"{params_text(r.best_params)}\n")
    return "\n".join(out)


def search_counts(row: Any) -> str:
    """``N trials (a complete, b pruned, c failed)`` of a
    :meth:`~study.query.StudyResults.search_summary` row (also ``kitchen-study best``)."""
    return (f"{row.trials} trials ({row.complete} complete, {row.pruned} pruned, "
            f"{row.failed} failed)")


def params_text(params: Mapping[str, Any], sep: str = ", ") -> str:
    """A search's best params as ``k=v`` by name; floats to 4 significant digits."""
    return sep.join(f"{k}={f'{v:.4g}' if isinstance(v, float) else v}"
                    for k, v in sorted(params.items()))


def _hmm_reference(study: StudyResults, res: pd.DataFrame) -> str:
    """What temporal context gives without training, beside the trained models: the
    HMM reference (:mod:`trainables.hmm_reference`, offline Viterbi and causal filtering,
    label statistics from each split's training videos) on every baseline's target split."""
    from data_prep.errors import DataError
    from data_prep.table import read_table
    from trainables.hmm_reference import reference

    base = [r for r in study.records if r.tags.get("ks.kind") == "baseline"
            and r.params.get("target_path")]
    seen: dict[tuple[str, str], str] = {}
    for r in base:
        seen.setdefault((r.tags.get("ks.target", "?"), str(r.params.get("target_split"))),
                        r.params["target_path"])
    if not seen:
        return ""
    rows = []
    for (target, split), path in sorted(seen.items()):
        model = res[(res["kind"] == "baseline") & (res["target"] == target)]
        trained = _fmt(float(model["frame_acc"].mean())) if len(model) else "-"
        try:
            ref = reference(read_table(path), split,
                            decoders=("input", "hmm_causal", "hmm_offline"), source=path)
        except (DataError, OSError, ValueError) as e:
            rows.append([target, split, "-", "-", "-", trained, f"not computed: {e}"])
            continue
        m = ref["metrics"]
        rows.append([target, split, _fmt(m["input"]["frame_acc"]),
                     _fmt(m["hmm_causal"]["frame_acc"]), _fmt(m["hmm_offline"]["frame_acc"]),
                     trained, ""])
    return ("## Temporal-context reference (HMM)\n\nFrame accuracy on the test videos: the "
            "input scores' argmax, an HMM decoding them with the split's training-label "
            "statistics (causal filtering; offline Viterbi; no training), and the trained "
            "baseline model (mean over seeds). What the HMM adds over the input is temporal "
            "structure a model can use without any learning (docs/reproduction.md).\n\n"
            + _table(["target", "split", "input", "HMM causal", "HMM offline", "baseline",
                      "note"], rows))


def render_markdown(study: StudyResults) -> str:
    """The report's markdown text (figures referenced by file name)."""
    res = study.results()
    best = study.best_transfer_pairs(k=None)
    curves = study.convergence()
    targets = sorted(curves["target"].unique()) if not curves.empty else []
    parts = [
        f"# Study `{study.name}`\n",
        f"Content hash `{study.study_hash}`; {len(res)} finished tasks "
        f"({', '.join(f'{n} {k}' for k, n in res['kind'].value_counts().sort_index().items())})."
        " Frame accuracy etc. in percent, means over seeds; (+g) = mean paired gain over the "
        "no-transfer baseline of the same target split and seed. "
        + ("Protocol `validation`: every metric is a run's reported model's (its best "
           "validation iteration) on the test videos; every choice read the validation "
           "people.\n" if study.protocol == "validation" else
           "Protocol `paper`: the last iteration on the test videos; searches and halving "
           "chose on test videos (optimistic).\n"),
        "## Baselines\n\n" + _baselines(res),
        "## Arrangement x mode\n\nFrame accuracy (gain).\n\n" + _arrangement_grid(res, best),
        _transfer_tables(res, best),
        "![transfer gains](transfer_heatmap.png)\n" if not best.empty else "",
        "## Convergence\n\nFrame accuracy by target training iterations.\n\n"
        + _convergence(study, targets),
        "## Best transfer pairs\n\n" + _best(best),
        _hmm_reference(study, res),
        _searches(study),
        report_section(study),  # transferability estimates vs measured gains (if logged)
        budget_section(study.budget()),  # study.budget: chosen and skipped edges (if any)
    ]
    return "\n".join(p for p in parts if p)


def _write_figures(study: StudyResults, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)  # figures are built without pyplot; no display needed
    modes = set(study.results()["mode"])
    for mode, name in (("transfer", "transfer_heatmap.png"),
                       ("joint", "transfer_heatmap_joint.png")):
        if mode in modes:
            study.plot_transfer_heatmap(mode=mode).savefig(out / name, dpi=100)
    curves = study.convergence()
    for tgt in sorted(curves["target"].unique()) if not curves.empty else []:
        study.plot_convergence(tgt).savefig(out / f"convergence_{tgt}.png", dpi=100)
    write_scatter_plots(study, out)


def _check_replaceable(out: Path) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise DataError("exists and is not a directory; choose another --out", out)
    if out.resolve() in (Path.cwd().resolve(), Path.home().resolve(), Path("/")):
        raise DataError("refusing to replace this directory with a report", out)
    if any(out.iterdir()) and not (out / REPORT_FILE).is_file():
        raise DataError(f"exists and holds no {REPORT_FILE}; refusing to replace it "
                        "(choose an empty or new directory)", out)


def write_report(study: StudyResults, out_dir: str | Path) -> Path:
    """Write ``report.md`` and PNG figures to ``out_dir`` (replaced as a whole); returns the
    markdown file's path. See the module docstring for the layout and replacement rule."""
    out = Path(out_dir)
    _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        (tmp / REPORT_FILE).write_text(render_markdown(study))
        _write_figures(study, tmp)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            out.rename(old / out.name)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / REPORT_FILE


def publish_convergence_plots(logger: RunLogger, study_run_id: str) -> list[str]:
    """Log one convergence figure per target (:meth:`StudyResults.plot_convergence`) to the
    study's parent run as ``plots/convergence_<target>.png``; returns the targets."""
    tags = logger.get_run(study_run_id).tags
    name, study_hash = tags[TAG_STUDY], tags[TAG_STUDY_HASH]
    results = StudyResults.from_logger(logger, name, study_hash)
    curves = results.convergence()
    targets = [] if curves.empty else sorted(curves["target"].unique())
    with tempfile.TemporaryDirectory() as tmp:
        for target in targets:
            # a bare Figure (no pyplot): nothing to close, no GUI backend involved
            path = Path(tmp) / f"convergence_{target}.png"
            results.plot_convergence(target).savefig(path, dpi=100)
            logger.log_artifact(study_run_id, path, PLOTS_DIR)
    return targets
