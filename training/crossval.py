"""Summarise the 5-fold actor cross-validation: one row per fold, then mean +- sd.

    python -m training.crossval runs/audio-cv0/eval runs/audio-cv1/eval ... [--out DIR]
    python -m training.crossval runs/audio10p-cv/cv0 ... [--out DIR]   # folders of training.audio_report

Reads each fold's `metrics.json` (written by `avemo-edge evaluate`), or its `audio_report.json`
(written by `python -m training.audio_report ... --split cvK --out DIR`: the voice streamed
through the device's recognizer, clip label = mean per-step probabilities, and the labels a gain
changes), prints a markdown table and,
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


def _read(folder: Path, name: str, how: str) -> dict[str, Any]:
    path = folder / name
    if not path.is_file():
        raise AvemoError(f"{folder} has no {name}; run {how} for that fold first")
    return json.loads(path.read_text())


def _mean_sd(folds: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Each key's mean and sample sd (ddof 1) across folds."""
    stats = {}
    for k in keys:
        v = np.array([f[k] for f in folds], dtype=float)
        stats[k] = {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
    return stats


def summarise(eval_dirs: list[Path], variant: str | None = None) -> dict[str, Any]:
    """Per-fold numbers and mean +- sd. `variant` names an ablation row of the reports (such as
    'TCS loss + TCS filter'); None takes each report's main row (the device's smoothing)."""
    folds = []
    for d in eval_dirs:
        path = d / "metrics.json"
        m = _read(d, path.name, "`avemo-edge evaluate`")
        if variant is None:
            t = m["test"]
        elif variant in m.get("ablations", {}):
            t = m["ablations"][variant]
        else:
            raise AvemoError(f"{path} has no variant {variant!r}; it has {', '.join(m.get('ablations', {}))}")
        folds.append({"fold": d.parent.name, "data": m["data"], **{k: t[k] for k, _ in COLUMNS},
                      "macro_auc": t.get("macro_auc", float("nan")),
                      "f1": {c: t["per_class"][c]["f1-score"] for c in EMOTIONS}})  # fmt: skip
    stats = _mean_sd(folds, (*(k for k, _ in COLUMNS), "macro_auc"))
    per_class = {c: float(np.mean([f["f1"][c] for f in folds])) for c in EMOTIONS}
    return {"variant": variant or "main", "folds": folds, "stats": stats, "per_class_f1_mean": per_class}


GAINS = ("-20 dB", "-10 dB", "+6 dB")


def summarise_audio_reports(dirs: list[Path]) -> dict[str, Any]:
    """Per-fold numbers of `training.audio_report` folders and their mean +- sd."""
    folds = []
    for d in dirs:
        r = _read(d, "audio_report.json", f"`python -m training.audio_report ... --out {d}`")
        row = r["+0 dB"]["mean_probs"]
        folds.append({"fold": d.name, "split": r["split"], "clips": r["clips"], "accuracy": row["accuracy"],
                      "macro_f1": row["macro_f1"], "f1": row["per_class_f1"],
                      "at_1s": r["+0 dB"]["shown_1s_after_onset_accuracy"],
                      "at_end": r["+0 dB"]["shown_at_end"]["accuracy"],
                      "changed": {g: r[g]["labels_changed"] for g in GAINS}})  # fmt: skip
    stats = _mean_sd(folds, ("accuracy", "macro_f1", "at_1s", "at_end"))
    per_class = {c: float(np.mean([f["f1"][c] for f in folds])) for c in folds[0]["f1"]}
    changed = {g: float(np.mean([f["changed"][g] for f in folds])) for g in GAINS}
    return {"variant": "audio_report", "folds": folds, "stats": stats, "per_class_f1_mean": per_class,
            "labels_changed_mean": changed}  # fmt: skip


def render_audio_reports(s: dict[str, Any]) -> str:
    lines = ["| fold | split | clips | accuracy % | macro F1 % | right 1 s after onset / at the end % | "
             + " / ".join(GAINS) + " changed % | lowest class F1 % |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for f in s["folds"]:
        changed = " / ".join(f"{100 * f['changed'][g]:.1f}" for g in GAINS)
        lines.append(f"| {f['fold']} | {f['split']} | {f['clips']} | {100 * f['accuracy']:.1f} | "
                     f"{100 * f['macro_f1']:.1f} | {100 * f['at_1s']:.1f} / {100 * f['at_end']:.1f} | {changed} | "
                     f"{100 * min(f['f1'].values()):.1f} |")  # fmt: skip
    st = s["stats"]
    ms = lambda k: f"{100 * st[k]['mean']:.1f} +- {100 * st[k]['sd']:.1f}"  # noqa: E731
    changed = " / ".join(f"{100 * v:.1f}" for v in s["labels_changed_mean"].values())
    lines.append(f"| mean +- sd ({len(s['folds'])} folds) | | | **{ms('accuracy')}** | **{ms('macro_f1')}** | "
                 f"{100 * st['at_1s']['mean']:.1f} / {100 * st['at_end']['mean']:.1f} | {changed} | |")  # fmt: skip
    lines += ["", "Mean per-class F1 across folds: "
              + ", ".join(f"{c} {100 * v:.1f} %" for c, v in s["per_class_f1_mean"].items()), ""]  # fmt: skip
    return "\n".join(lines)


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
    ap.add_argument("eval_dirs", type=Path, nargs="+", help="each fold's evaluate or audio_report folder")
    ap.add_argument("--out", type=Path, help="also write crossval.md and crossval.json here")
    ap.add_argument("--variant", help="an ablation row of the reports, e.g. 'TCS loss + TCS filter' (default: main)")
    a = ap.parse_args()
    audio = all((d / "audio_report.json").is_file() for d in a.eval_dirs)
    try:
        if audio and a.variant:
            raise AvemoError("--variant names a row of `avemo-edge evaluate` reports; these are audio reports")
        s = summarise_audio_reports(a.eval_dirs) if audio else summarise(a.eval_dirs, a.variant)
    except AvemoError as e:
        raise SystemExit(f"error: {e}") from None
    text = render_audio_reports(s) if audio else render(s)
    print(text)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        stem = "crossval" if a.variant is None else "crossval-" + "".join(c if c.isalnum() else "-" for c in a.variant)
        (a.out / f"{stem}.md").write_text(text)
        (a.out / f"{stem}.json").write_text(json.dumps(s, indent=1))


if __name__ == "__main__":
    main()
