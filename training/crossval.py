"""Summarise the 5-fold actor cross-validation: one row per fold, then mean +- sd.

    python -m training.crossval runs/audio-cv0/eval runs/audio-cv1/eval ... [--out DIR]

Reads each fold's `metrics.json` (written by `avemo-edge evaluate`), prints a markdown table and,
with --out, writes it as `crossval.md` and `crossval.json` in DIR (`crossval-<variant>.*` with
`--variant NAME`, an ablation row of the reports such as 'TCS loss + TCS filter'). The sd is the sample
standard deviation across folds (ddof 1).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from avemo_edge.errors import AvemoError
from avemo_edge.model import EMOTIONS

COLUMNS = (("accuracy", "accuracy %"), ("macro_f1", "macro F1 %"), ("weighted_f1", "weighted F1 %"))


def summarise(eval_dirs: list[Path], variant: str | None = None) -> dict[str, Any]:
    """Per-fold numbers and mean +- sd. `variant` names an ablation row of the reports (such as
    'TCS loss + TCS filter'); None takes each report's main row (the device's smoothing)."""
    folds = []
    for d in eval_dirs:
        path = d / "metrics.json"
        if not path.is_file():
            raise AvemoError(f"{d} has no metrics.json; run `avemo-edge evaluate` for that fold first")
        m = json.loads(path.read_text())
        if variant is None:
            t = m["test"]
        elif variant in m.get("ablations", {}):
            t = m["ablations"][variant]
        else:
            raise AvemoError(f"{path} has no variant {variant!r}; it has {', '.join(m.get('ablations', {}))}")
        folds.append({"fold": d.parent.name, "data": m["data"], **{k: t[k] for k, _ in COLUMNS},
                      "macro_auc": t.get("macro_auc", float("nan")),
                      "f1": {c: t["per_class"][c]["f1-score"] for c in EMOTIONS}})  # fmt: skip
    stats = {}
    for k in (*(k for k, _ in COLUMNS), "macro_auc"):
        v = np.array([f[k] for f in folds], dtype=float)
        stats[k] = {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
    per_class = {c: float(np.mean([f["f1"][c] for f in folds])) for c in EMOTIONS}
    return {"variant": variant or "main", "folds": folds, "stats": stats, "per_class_f1_mean": per_class}


def render(s: dict[str, Any]) -> str:
    head = "| fold | test clips | " + " | ".join(n for _, n in COLUMNS) + " | macro AUC |"
    lines = [head, "|" + " --- |" * 2 + " ---: |" * (len(COLUMNS) + 1)]
    for f in s["folds"]:
        cells = [f"{100 * f[k]:.2f}" for k, _ in COLUMNS] + [f"{f['macro_auc']:.3f}"]
        lines.append(f"| {f['fold']} | {f['data']} | " + " | ".join(cells) + " |")
    st = s["stats"]
    cells = [f"**{100 * st[k]['mean']:.2f} +- {100 * st[k]['sd']:.2f}**" for k, _ in COLUMNS]
    cells.append(f"**{st['macro_auc']['mean']:.3f} +- {st['macro_auc']['sd']:.3f}**")
    lines.append(f"| mean +- sd ({len(s['folds'])} folds) | | " + " | ".join(cells) + " |")
    lines += ["", "Mean per-class F1 across folds: "
              + ", ".join(f"{c} {100 * v:.1f} %" for c, v in s["per_class_f1_mean"].items()), ""]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("eval_dirs", type=Path, nargs="+", help="each fold's evaluate folder")
    ap.add_argument("--out", type=Path, help="also write crossval.md and crossval.json here")
    ap.add_argument("--variant", help="an ablation row of the reports, e.g. 'TCS loss + TCS filter' (default: main)")
    a = ap.parse_args()
    try:
        s = summarise(a.eval_dirs, a.variant)
    except AvemoError as e:
        raise SystemExit(f"error: {e}") from None
    text = render(s)
    print(text)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        stem = "crossval" if a.variant is None else "crossval-" + "".join(c if c.isalnum() else "-" for c in a.variant)
        (a.out / f"{stem}.md").write_text(text)
        (a.out / f"{stem}.json").write_text(json.dumps(s, indent=1))


if __name__ == "__main__":
    main()
