"""Choose the LSTM's learning rate on validation people only, from learning curves written by
``studies/validation_curve.py --out`` (one JSON per learning rate and seed, same split and
shapes otherwise):

    for seed in 0 1 2; do for lr in 0.001 0.003 0.01 0.03 0.1; do
      python studies/validation_curve.py data/breakfast_sim.parquet --iterations 3000 \\
          --eval-at 500,1000,1500,2000,2500,3000 --lr $lr --seed $seed --out curves/$lr-$seed.json
    done; done
    python studies/lr_choice.py curves/*.json

The rule (the validation protocol's, docs/study.md): each curve's reported checkpoint is its
best validation evaluation (ties to the earlier); the chosen learning rate has the highest
mean validation accuracy of those checkpoints over the seeds (ties to the smaller rate).
Test accuracy is printed beside it and never read by the rule. Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

#: The arguments that may differ between the curves compared (everything else must match).
_VARIED = ("lr", "seed")


def _load(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config, best-validation row) of one curve file; ValueError on anything else."""
    try:
        doc = json.loads(path.read_text())
    except OSError as e:
        raise ValueError(f"{path}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not JSON ({e.msg})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict) or not doc.get("rows"):
        raise ValueError(f"{path}: not a validation_curve.py --out file (no config or rows)")
    rows = doc["rows"]
    for r in rows:
        missing = [k for k in ("iteration", "val_acc", "test_acc", "test_input") if k not in r]
        if missing:
            raise ValueError(f"{path}: a row lacks {', '.join(missing)}")
    best = max(rows, key=lambda r: (r["val_acc"], -r["iteration"]))
    return doc["config"], best


def choose(curves: list[tuple[dict[str, Any], dict[str, Any]]]) -> tuple[float, list[dict]]:
    """(chosen lr, one summary row per lr, by lr) from (config, best row) pairs."""
    if not curves:
        raise ValueError("no curves given")
    fixed = {k: v for k, v in curves[0][0].items() if k not in _VARIED}
    by_lr: dict[float, list[dict[str, Any]]] = {}
    seen: set[tuple[float, int]] = set()
    for cfg, best in curves:
        other = {k: v for k, v in cfg.items() if k not in _VARIED}
        if other != fixed:
            diff = sorted(k for k in set(other) | set(fixed) if other.get(k) != fixed.get(k))
            raise ValueError(f"curves differ in more than lr and seed: {', '.join(diff)}")
        key = (float(cfg["lr"]), int(cfg["seed"]))
        if key in seen:
            raise ValueError(f"lr {key[0]} seed {key[1]} given twice")
        seen.add(key)
        by_lr.setdefault(key[0], []).append(best)
    seeds = {len(v) for v in by_lr.values()}
    if len(seeds) != 1:
        raise ValueError("every learning rate needs the same number of seeds")
    table = []
    for lr in sorted(by_lr):
        rows = by_lr[lr]
        table.append({
            "lr": lr, "seeds": len(rows),
            "val": statistics.fmean(r["val_acc"] for r in rows),
            "val_min": min(r["val_acc"] for r in rows),
            "test": statistics.fmean(r["test_acc"] for r in rows),
            "test_minus_input": statistics.fmean(r["test_acc"] - r["test_input"] for r in rows),
            "iterations": [r["iteration"] for r in rows],
        })
    best_val = max(t["val"] for t in table)
    chosen = min(t["lr"] for t in table if t["val"] >= best_val - 1e-12)
    return chosen, table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("curves", type=Path, nargs="+")
    a = ap.parse_args(argv)
    chosen, table = choose([_load(p) for p in a.curves])
    print("| lr | seeds | validation, mean (min) | reported iterations | test, mean "
          "(not used) | test − input |")
    print("|---|---|---|---|---|---|")
    for t in table:
        mark = " **(chosen)**" if t["lr"] == chosen else ""
        its = ", ".join(str(i) for i in t["iterations"])
        print(f"| {t['lr']:g}{mark} | {t['seeds']} | {t['val']:.2f} ({t['val_min']:.2f}) | "
              f"{its} | {t['test']:.2f} | {t['test_minus_input']:+.2f} |")
    return 0


if __name__ == "__main__":
    from _cli import run  # studies/ is the script's own folder, first on sys.path

    raise SystemExit(run(main))
