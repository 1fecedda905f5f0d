"""Where the runtime's face detector puts its box on a training face: the crop framing to reproduce.

FER+ faces are 48 x 48 tight crops. Each test image is upscaled (x4 to 192 px by default) and
padded with a replicated border so that the detector sees some context, then YuNet runs on it as
the runtime runs it. For each detection: box side / image side, and the box centre's offset from
the image centre in box sides. The runtime crop that reproduces the training framing then has
margin = (image side / box side - 1) / 2 and its centre at box centre - offset.

    python -m bench.face_framing [--data ../shared/data/ferplus/FER2013Test] [--limit 0] [--detector yunet]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np


def measure(folder: Path, detector_name: str, scale: int, pad_frac: float, limit: int) -> dict[str, float]:
    from avemo_edge.faces.detect import create_detector

    det = create_detector(detector_name)
    files = sorted(folder.glob("*.png"))
    if limit:
        files = files[:limit]
    if not files:
        raise SystemExit(f"no PNG images in {folder}")
    side_ratio, dx, dy, rolls = [], [], [], []
    t0 = time.perf_counter()
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        s = img.shape[0] * scale
        big = cv2.resize(img, (s, s), interpolation=cv2.INTER_CUBIC)
        pad = int(round(pad_frac * s))
        big = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        boxes = det.detect(big)
        if not boxes:
            continue
        b = max(boxes, key=lambda b: b.area)
        bs = max(b.w, b.h)
        side_ratio.append(bs / s)
        dx.append((b.x + b.w / 2 - (pad + s / 2)) / bs)
        dy.append((b.y + b.h / 2 - (pad + s / 2)) / bs)
        if b.landmarks is not None:
            (rx, ry), (lx, ly) = b.landmarks[0], b.landmarks[1]
            rolls.append(np.degrees(np.arctan2(ly - ry, lx - rx)))
    n = len(side_ratio)
    r, mdx, mdy = float(np.median(side_ratio)), float(np.median(dx)), float(np.median(dy))
    return {
        "images": len(files),
        "detected": n,
        "detection_rate": n / len(files),
        "median_side_ratio": r,
        "p25_side_ratio": float(np.percentile(side_ratio, 25)),
        "p75_side_ratio": float(np.percentile(side_ratio, 75)),
        "median_center_dx": mdx,
        "median_center_dy": mdy,
        "median_abs_roll_deg": float(np.median(np.abs(rolls))) if rolls else float("nan"),
        "margin": (1 / r - 1) / 2,
        "center_dy": -mdy,
        "ms_per_image": (time.perf_counter() - t0) * 1000 / len(files),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data/ferplus/FER2013Test"))
    p.add_argument("--detector", default="yunet", choices=("yunet", "haar"))
    p.add_argument("--scale", type=int, default=4, help="upscale factor (48 px -> 192 px at 4)")
    p.add_argument("--pad", type=float, default=0.5, help="replicated border per side, in upscaled image sides")
    p.add_argument("--limit", type=int, default=0, help="first N images only (0 = all)")
    a = p.parse_args(argv)
    cv2.setNumThreads(1)
    res = measure(a.data, a.detector, a.scale, a.pad, a.limit)
    for k, v in res.items():
        print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")


if __name__ == "__main__":
    main()
