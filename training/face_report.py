"""The face branch on FER+ test faces, as the device sees them: direct, through the detector, perturbed.

    python -m training.face_report CKPT [--out DIR] [--robust 500]

1. **direct**: each 48 px test face is the model's input (the runtime's crop over the whole
   image, no margin: a plain resize), as in training.
2. **detector**: each face upscaled x4 (192 px) with a replicated border of half a side on each
   side (the framing bench's images, `bench.face_framing`), then the runtime's own detector and
   crop (`FaceCropper`); faces the detector misses are counted and left out of the metrics.
3. **robustness**: on the first N test faces (a fixed sample), the share of faces whose label
   changes when the crop is shifted or scaled by 10 %, brightness or contrast changed by 30 %,
   or the image mirrored (`label_changes`, also used by the suite on the shipped model).

Both scorings go through `avemo-edge evaluate-faces` (`avemo_edge.evaluate_faces`), one
recognizer step per image from a fresh stream, exactly as a user's own folder is scored.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from avemo_edge.model import EMOTIONS

from .data import FaceCache
from .report import write_report

UPSCALE, PAD = 4, 0.5  # bench.face_framing's defaults
SHIFT, SCALE, LIGHT = 0.10, 0.10, 0.30
PERTURBATIONS = (
    "shift left", "shift right", "shift up", "shift down", "scale -10 %", "scale +10 %",
    "brightness -30 %", "brightness +30 %", "contrast -30 %", "contrast +30 %", "mirror",
)  # fmt: skip


def write_folders(images: np.ndarray, labels: np.ndarray, root: Path) -> tuple[Path, Path]:
    """FER+ faces as <root>/direct/<emotion>/i.png (48 px) and <root>/detector/<emotion>/i.png (upscaled)."""
    direct, detector = root / "direct", root / "detector"
    for i, (img, y) in enumerate(zip(images, labels, strict=True)):
        face = img[0] if img.ndim == 3 else img
        for base in (direct, detector):
            (base / EMOTIONS[y]).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(direct / EMOTIONS[y] / f"{i:05d}.png"), face)
        s = face.shape[0] * UPSCALE
        big = cv2.resize(face, (s, s), interpolation=cv2.INTER_CUBIC)
        pad = int(round(PAD * s))
        big = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        cv2.imwrite(str(detector / EMOTIONS[y] / f"{i:05d}.png"), big)
    return direct, detector


def perturb(face: np.ndarray, kind: str) -> np.ndarray:
    """(S, S) uint8 face -> the same face as a camera might frame or expose it differently (uint8)."""
    s = face.shape[0]
    f = face.astype(np.float32)
    if kind.startswith("shift") or kind.startswith("scale"):
        dx = {"shift left": -SHIFT, "shift right": SHIFT}.get(kind, 0.0) * s
        dy = {"shift up": -SHIFT, "shift down": SHIFT}.get(kind, 0.0) * s
        zoom = {"scale -10 %": 1 - SCALE, "scale +10 %": 1 + SCALE}.get(kind, 1.0)
        m = cv2.getRotationMatrix2D((s / 2, s / 2), 0.0, zoom)
        m[:, 2] += (dx, dy)
        f = cv2.warpAffine(f, m, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    elif kind.startswith("brightness"):
        f = f + (LIGHT if kind.endswith("+30 %") else -LIGHT) * 255
    elif kind.startswith("contrast"):
        f = (f - f.mean()) * (1 + (LIGHT if kind.endswith("+30 %") else -LIGHT)) + f.mean()
    elif kind == "mirror":
        f = f[:, ::-1]
    else:
        raise ValueError(f"unknown perturbation {kind!r}")
    return np.clip(f, 0, 255).astype(np.uint8)


def predict_faces(backend: Any, faces: list[np.ndarray]) -> np.ndarray:
    """Labels the runtime gives for (S, S) uint8 faces: one step each from a fresh stream, no audio."""
    from avemo_edge.evaluate_faces import face_label
    from avemo_edge.recognizer import StreamingRecognizer

    rec = StreamingRecognizer(backend)
    return np.array([face_label(rec, cv2.cvtColor(face, cv2.COLOR_GRAY2BGR)) for face in faces])


def label_changes(backend: Any, faces: list[np.ndarray]) -> dict[str, float]:
    """Share of faces whose label changes under each perturbation."""
    base = predict_faces(backend, faces)
    return {k: float(np.mean(predict_faces(backend, [perturb(f, k) for f in faces]) != base)) for k in PERTURBATIONS}


def run(ckpt: str, cache: Path, robust: int, backend_name: str = "torch", split: str = "test") -> dict[str, Any]:
    from avemo_edge.backends import create_backend
    from avemo_edge.evaluate_faces import evaluate_faces

    fc = FaceCache(cache / "faces")
    idx = fc.indices(split)
    images, labels = fc.images[idx], fc.labels[idx]
    res: dict[str, Any] = {"checkpoint": ckpt, "backend": backend_name, "split": split, "faces": len(idx)}
    with tempfile.TemporaryDirectory() as tmp:
        direct, detector = write_folders(images, labels, Path(tmp))
        for name, folder, det in (("direct", direct, False), ("detector", detector, True)):
            e = evaluate_faces(folder, model=ckpt, backend=backend_name, detector=det)
            res[name] = {"accuracy": e.accuracy, "macro_f1": e.macro_f1, "recall": e.recall,
                         "missed_share": e.no_face_share, "confusion": e.confusion, "labels": e.labels}  # fmt: skip
    backend = create_backend(backend_name, ckpt)
    sample = [img[0] if img.ndim == 3 else img for img in images[:robust]]
    res["robustness"] = {"faces": len(sample), "label_changes": label_changes(backend, sample)}
    return res


def render(r: dict[str, Any]) -> str:
    lines = [f"# Face branch on FER+ {r.get('split', 'test')} ({r['faces']} faces): `{r['checkpoint']}`", "",
             "| input | accuracy % | macro F1 % | detector missed % |", "| --- | ---: | ---: | ---: |"]  # fmt: skip
    for name in ("direct", "detector"):
        d = r[name]
        acc, f1, miss = (100 * d[k] for k in ("accuracy", "macro_f1", "missed_share"))
        lines.append(f"| {name} | {acc:.2f} | {f1:.2f} | {miss:.2f} |")
    for name in ("direct", "detector"):
        rec = ", ".join(f"{k} {100 * v:.1f}" for k, v in r[name]["recall"].items())
        lines += ["", f"Recall % ({name}): {rec}"]
    rob = r["robustness"]
    lines += ["", f"Labels changed on {rob['faces']} test faces (the first ones, a fixed sample):", "",
              "| change | labels changed % |", "| --- | ---: |"]  # fmt: skip
    lines += [f"| {k} | {100 * v:.1f} |" for k, v in rob["label_changes"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--cache", type=Path, default=Path("cache"), help="the folder `avemo-edge prepare` wrote")
    ap.add_argument("--robust", type=int, default=500, help="test faces in the robustness sample")
    ap.add_argument("--out", type=Path, help="also write face_report.json and face_report.md here")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backend", default="torch", help="torch (a .pt) or onnxruntime (an export folder)")
    ap.add_argument("--split", default="test", choices=("val", "test"), help="val: for choosing between models")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    cv2.setNumThreads(1)
    r = run(a.checkpoint, a.cache, a.robust, a.backend, a.split)
    write_report(a.out, "face_report", r, render(r))


if __name__ == "__main__":
    main()
