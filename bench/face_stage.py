"""Face-stage time per 100 ms step (detect + track + crop) for each detector, with and without tracking.

The frames are the newest frame before each step's end of a clip (the embedded sample by default),
looped `--loops` times, through the runtime's `FaceCropper` as the daemon builds it.

    python -m bench.face_stage [--input clip.mp4] [--loops 10] [--threads 1]

`--window-px 160,128 --repeats 6` compares tracking-window sizes instead (YuNet, tracking on):
the sizes alternate `--repeats` times so that a busy machine slows them alike, and each size's
boxes are compared with per-frame detection's (centre distance and side, in box sides).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np


def step_frames(path: Path) -> list[np.ndarray]:
    from avemo_edge.audio import STEP_SECONDS
    from avemo_edge.media import BGRConverter, iter_video

    to_bgr = BGRConverter()
    frames = [(t, to_bgr(f)) for t, f in iter_video(path)]
    out, i = [], 0
    for k in range(int(frames[-1][0] / STEP_SECONDS) + 1):  # the newest frame before each step's end
        while i + 1 < len(frames) and frames[i + 1][0] < (k + 1) * STEP_SECONDS:
            i += 1
        out.append(frames[i][1])
    return out


def time_stage(
    frames: list[np.ndarray], detector: str, detect_every: int, loops: int, window_px: int | None = None
) -> dict[str, float]:
    from avemo_edge.faces import FaceCropper, create_detector

    cropper = FaceCropper(48, 1, detector=create_detector(detector), detect_every=detect_every)
    if window_px is not None:
        cropper.tracker.window_px = window_px
    cropper(frames[0])  # warm-up
    ms, found = [], 0
    for _ in range(loops):
        for f in frames:
            t0 = time.perf_counter()
            face = cropper(f)
            ms.append((time.perf_counter() - t0) * 1000)
            found += face is not None
    a = np.array(ms)
    return {
        "steps": len(a),
        "face_rate": found / len(a),
        "mean_ms": float(a.mean()),
        "p50_ms": float(np.percentile(a, 50)),
        "p95_ms": float(np.percentile(a, 95)),
        "full_detections": cropper.tracker.full_detections,
    }


def compare_windows(frames: list[np.ndarray], sizes: list[int], repeats: int, loops: int) -> None:
    from avemo_edge.faces import create_detector
    from avemo_edge.faces.track import FaceTracker

    det = create_detector("yunet")
    ref = [max(det.detect(f), key=lambda b: b.area, default=None) for f in frames]
    times: dict[int, list[float]] = {px: [] for px in sizes}
    for _ in range(repeats):
        for px in sizes:
            times[px].append(time_stage(frames, "yunet", 10, loops, px)["mean_ms"])
    print("| window px | mean ms (median of repeats) | repeats | centre diff mean | side diff mean | steps |")
    print("| ---: | ---: | --- | ---: | ---: | ---: |")
    for px in sizes:
        tracker, centre, side = FaceTracker(det, detect_every=10, window_px=px), [], []
        for f, r in zip(frames, ref, strict=True):
            b = tracker.update(f)
            if b is None or r is None:
                continue
            s = max(r.w, r.h)
            centre.append(np.hypot(b.x + b.w / 2 - r.x - r.w / 2, b.y + b.h / 2 - r.y - r.h / 2) / s)
            side.append(abs(max(b.w, b.h) / s - 1))
        print(
            f"| {px} | {np.median(times[px]):.2f} | {' '.join(f'{t:.2f}' for t in times[px])} | "
            f"{np.mean(centre):.3f} | {np.mean(side):.3f} | {len(centre)} |"
        )


def main(argv: list[str] | None = None) -> None:
    from avemo_edge.capture import SAMPLE_CLIP

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", type=Path, default=SAMPLE_CLIP)
    p.add_argument("--loops", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="OpenCV threads")
    p.add_argument("--window-px", default="", help="comma-separated tracking-window sizes to compare, e.g. 160,128")
    p.add_argument("--repeats", type=int, default=6, help="with --window-px: how often the sizes alternate")
    a = p.parse_args(argv)
    cv2.setNumThreads(a.threads)
    frames = step_frames(a.input)
    h, w = frames[0].shape[:2]
    print(f"{a.input.name}: {len(frames)} steps of {w}x{h}, x{a.loops}, {a.threads} OpenCV thread(s)")
    if a.window_px:
        compare_windows(frames, [int(v) for v in a.window_px.split(",")], a.repeats, a.loops)
        return
    print("| detector | detect_every | face found | mean ms | p50 ms | p95 ms | full detections |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for det in ("yunet", "haar"):
        for every in (1, 10):
            r = time_stage(frames, det, every, a.loops)
            print(
                f"| {det} | {every} | {r['face_rate']:.3f} | {r['mean_ms']:.2f} | {r['p50_ms']:.2f} | "
                f"{r['p95_ms']:.2f} | {r['full_detections']} |"
            )


if __name__ == "__main__":
    main()
