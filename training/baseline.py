"""The clip-statistics baseline that the streaming audio network has to beat.

    python -m training.baseline [--cache cache] [--out docs/results/baseline]

Per clip: the 64-band log-mel of `avemo_edge.audio` (the runtime's own features), the frames
within 30 dB of the clip's loudest, and per band the mean, standard deviation, 10th and 90th
percentiles and the standard deviation of the frame-to-frame difference (320 numbers),
standardised, into scikit-learn's `SVC(C=3, gamma="scale")`. It sees a whole clip at once (not
causal, not streaming), so it is a yardstick for training, not a product. It prints accuracy and
macro-F1 on the paper split (fitted on the train + validation actors, scored on test actors
21-24) and over two 5-fold actor cross-validations: the project's folds (`training.splits`, the
ones `train --set split=cvK` uses) and folds by (actor - 1) % 5.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avemo_edge.audio import log_mel_frames
from avemo_edge.model import EMOTIONS

from .data import RavdessCache
from .report import write_report
from .splits import CV_TEST_FOLDS, PAPER_SPLIT

ACTIVE_DB = 30.0  # frames within this many dB of the clip's loudest frame


NORMS = ("raw", "level", "band")


def clip_features(wave: np.ndarray, norm: str = "raw") -> np.ndarray:
    """(n,) 16 kHz float -> (320,) statistics of the loud frames' log-mel.

    `norm` asks what a normalisation costs: "level" subtracts the loud frames' mean level (one
    number, log10 units) from every band, "band" each band's own mean (its mean statistics are
    then 0 and left out: 256 numbers)."""
    mel = log_mel_frames(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))).numpy()  # (64, F)
    energy = 10 * np.log10((10.0**mel).sum(0) + 1e-30)  # frame level, dB
    keep = energy >= energy.max() - ACTIVE_DB
    x = mel[:, keep]
    if norm == "level":
        x = x - energy[keep].mean() / 10.0
    elif norm == "band":
        x = x - x.mean(1, keepdims=True)
    diff = np.diff(x, axis=1) if x.shape[1] > 1 else np.zeros((64, 1))
    stats = [x.std(1), np.percentile(x, 10, 1), np.percentile(x, 90, 1), diff.std(1)]
    return np.concatenate(stats if norm == "band" else [x.mean(1), *stats])


def _fit_score(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    clf = make_pipeline(StandardScaler(), SVC(C=3, gamma="scale")).fit(x[train], y[train])
    pred = clf.predict(x[test])
    per_class = f1_score(y[test], pred, average=None, labels=range(len(EMOTIONS)), zero_division=0)
    return {"accuracy": float(accuracy_score(y[test], pred)),
            "macro_f1": float(f1_score(y[test], pred, average="macro", zero_division=0)),
            "per_class_f1": dict(zip(EMOTIONS, map(float, per_class), strict=True))}  # fmt: skip


def _cv(x: np.ndarray, y: np.ndarray, actors: np.ndarray, folds: list[tuple[int, ...]]) -> dict[str, Any]:
    rows = [_fit_score(x, y, ~np.isin(actors, f), np.isin(actors, f)) for f in folds]
    out: dict[str, Any] = {"folds": rows}
    for k in ("accuracy", "macro_f1"):
        v = np.array([r[k] for r in rows])
        out[k] = {"mean": float(v.mean()), "sd": float(v.std(ddof=1))}
    return out


def run(cache: Path, norm: str = "raw") -> dict[str, Any]:
    rav = RavdessCache(cache / "ravdess")
    clips = [c for c in rav.clips if c["audio"]]
    t0 = time.monotonic()
    x = np.stack([clip_features(rav.waveform(c), norm) for c in clips])
    y = np.array([c["label"] for c in clips])
    actors = np.array([c["actor"] for c in clips])
    test = np.isin(actors, PAPER_SPLIT["test"])
    return {
        "clips": len(clips),
        "norm": norm,
        "paper": _fit_score(x, y, ~test, test),
        "cv_project_folds": _cv(x, y, actors, list(CV_TEST_FOLDS)),
        "cv_mod5_folds": _cv(x, y, actors, [tuple(a for a in range(1, 25) if (a - 1) % 5 == k) for k in range(5)]),
        "seconds": round(time.monotonic() - t0, 1),
    }


def render(r: dict[str, Any]) -> str:
    def cv(name: str, c: dict[str, Any]) -> str:
        a, f = c["accuracy"], c["macro_f1"]
        acc = f"{100 * a['mean']:.1f} +- {100 * a['sd']:.1f}"
        return f"| {name} | {acc} | {100 * f['mean']:.1f} +- {100 * f['sd']:.1f} |"

    p = r["paper"]
    lines = [
        f"Clip-statistics + SVM baseline ({r['clips']} RAVDESS speech clips, {r['seconds']} s): "
        f"`python -m training.baseline{'' if r.get('norm', 'raw') == 'raw' else ' --norm ' + r['norm']}`",
        "",
        "| evaluation | accuracy % | macro F1 % |",
        "| --- | ---: | ---: |",
        f"| paper split (fit on actors 1-20, test 21-24) | {100 * p['accuracy']:.1f} | {100 * p['macro_f1']:.1f} |",
        cv("5-fold CV, the project's folds (mean +- sd)", r["cv_project_folds"]),
        cv("5-fold CV, folds (actor - 1) % 5 (mean +- sd)", r["cv_mod5_folds"]),
        "",
        "Paper split per-class F1 %: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in p["per_class_f1"].items()),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path("cache"), help="the folder `avemo-edge prepare` wrote")
    ap.add_argument("--out", type=Path, help="also write baseline.json and baseline.md here")
    ap.add_argument(
        "--norm", default="raw", choices=NORMS, help="the log-mel as is, less its level, or less each band's mean"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    r = run(args.cache, args.norm)
    write_report(args.out, "baseline", r, render(r))


if __name__ == "__main__":
    main()
