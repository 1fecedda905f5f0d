"""Choose the device's smoothing (TCS filter coefficient and label hold margin) on validation clips.

    python -m training.tune_smoothing runs/joint/best.pt [--joins 200]

Streams the checkpoint's *validation* clips (never the test actors) and joined validation
streams, then prints, for each (coefficient, margin) on a grid, the clip accuracy, label flips
per minute relative to the raw per-step argmax, and the median switch latency from the join
and from the new clip's speech onset. The suggested setting is the one with the lowest latency
from speech onset among those with at least `--flip-ratio` times fewer flips than raw and no
lower clip accuracy than the raw stream; `avemo-edge evaluate --smoothing A --hold-margin M`
then reports it on the test actors.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import torch

from avemo_edge.checkpoint import load_checkpoint

from .evaluate import (
    RAW,
    Smoothing,
    clip_dataset,
    clip_scores,
    eval_config,
    joined_streams,
    run_clips,
    stability,
    switch_latencies,
)

ALPHAS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9)
MARGINS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4)


def grid(checkpoint: Path, cache: Path, n_joins: int, flip_ratio: float) -> tuple[list[dict], dict | None]:
    ckpt = load_checkpoint(checkpoint)
    model = ckpt.build()
    stage = ckpt.meta.get("stage", "audio")
    cfg = eval_config(ckpt.meta)
    ds, _ = clip_dataset(cfg, stage, cache, cfg.split, "val")
    streams, joins = run_clips(model, ds), joined_streams(model, ds, n_joins)
    y = streams.labels

    def row(sm: Smoothing) -> dict:
        _, pred = clip_scores(streams, sm)
        sw = switch_latencies(joins, sm)
        return {"alpha": sm.alpha, "margin": sm.margin, "accuracy": float(np.mean(pred == y)),
                "flips_per_min": stability(streams, sm)["flips_per_min"], "latency_s": sw["median_s"],
                "latency_onset_s": sw["median_from_onset_s"], "never": sw["never_switched"]}  # fmt: skip

    raw = row(RAW)
    rows = [row(Smoothing(a, m)) for a, m in itertools.product(ALPHAS, MARGINS)]
    for r in rows:
        r["flip_ratio"] = raw["flips_per_min"] / max(r["flips_per_min"], 1e-9)
    ok = [r for r in rows if r["flip_ratio"] >= flip_ratio and r["accuracy"] >= raw["accuracy"]]
    best = min(ok, key=lambda r: (r["latency_onset_s"], r["never"], -r["flip_ratio"])) if ok else None
    return rows, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--cache", type=Path, default=Path("cache"))
    ap.add_argument("--joins", type=int, default=200)
    ap.add_argument("--flip-ratio", type=float, default=5.0, help="required flips reduction vs the raw stream")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows, best = grid(args.checkpoint, args.cache, args.joins, args.flip_ratio)
    print("| alpha | margin | val accuracy | flips/min | fewer flips than raw | latency s | from onset s | never |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        cells = (f"{r['alpha']:g}", f"{r['margin']:g}", f"{100 * r['accuracy']:.2f}", f"{r['flips_per_min']:.1f}",
                 f"{r['flip_ratio']:.1f}x", f"{r['latency_s']:.2f}", f"{r['latency_onset_s']:.2f}",
                 f"{100 * r['never']:.0f} %")  # fmt: skip
        print("| " + " | ".join(cells) + " |")
    if best is None:
        print(f"no setting reaches {args.flip_ratio:g}x fewer flips without losing validation accuracy")
    else:
        print(f"suggested: --smoothing {best['alpha']:g} --hold-margin {best['margin']:g}")


if __name__ == "__main__":
    main()
