"""Face-only scores of checkpoints on FER+ validation faces, for choosing between them.

    python -m training.face_choice CKPT [CKPT ...] [--cache cache] [--split val] [--robust 500]

Faster than `training.face_report --split val` (which goes face by face through the recognizer
and the detector): the faces go through the network in batches, audio masked, as training's
validation does, and the robustness sample is scored the same way. One line per checkpoint:
accuracy, macro F1, per-class recall, and the share of labels changed by the camera
perturbations of `training.face_report` (mean, max, mirror).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from avemo_edge.checkpoint import load_checkpoint
from avemo_edge.model import EMOTIONS, AVEmotionNet

from .data import FaceCache
from .face_report import PERTURBATIONS, perturb


@torch.no_grad()
def predict(model: AVEmotionNet, faces: np.ndarray, batch: int = 256) -> np.ndarray:
    """(N, S, S) uint8 grey faces -> (N,) labels of the face-only path."""
    out = []
    for s in range(0, len(faces), batch):
        x = torch.from_numpy(faces[s : s + batch].astype(np.float32) / 255.0)[:, None, None]
        logits, *_ = model(x, None)
        out.append(logits[:, 0].argmax(-1).numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def score(ckpt: str, faces: np.ndarray, labels: np.ndarray, robust: int) -> str:
    from sklearn.metrics import f1_score, recall_score

    model = load_checkpoint(ckpt).build()
    pred = predict(model, faces)
    recall = recall_score(labels, pred, average=None, labels=range(len(EMOTIONS)), zero_division=0)
    base = pred[:robust]
    changed = {k: float(np.mean(predict(model, np.stack([perturb(f, k) for f in faces[:robust]])) != base))
               for k in PERTURBATIONS}  # fmt: skip
    rec = " ".join(f"{e} {100 * r:.0f}" for e, r in zip(EMOTIONS, recall, strict=True))
    return (f"{ckpt}: accuracy {100 * np.mean(pred == labels):.2f} %, macro F1 "
            f"{100 * f1_score(labels, pred, average='macro', zero_division=0):.2f} %; recall % {rec}; labels changed "
            f"on {len(base)} faces: mean {100 * np.mean(list(changed.values())):.1f} %, max "
            f"{100 * max(changed.values()):.1f} %, mirror {100 * changed['mirror']:.1f} %")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--cache", type=Path, default=Path("cache"), help="the folder `avemo-edge prepare` wrote")
    ap.add_argument("--split", default="val", choices=("val", "test"))
    ap.add_argument("--robust", type=int, default=500, help="faces in the robustness sample (the first ones)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    fc = FaceCache(args.cache / "faces")
    idx = fc.indices(args.split)
    faces = np.stack([img[0] if img.ndim == 3 else img for img in fc.images[idx]])
    for ckpt in args.checkpoints:
        print(score(ckpt, faces, fc.labels[idx], args.robust), flush=True)


if __name__ == "__main__":
    main()
