"""What the voice branch of a checkpoint hears, streamed through the device's own recognizer.

    python -m training.audio_report CHECKPOINT [--cache cache] [--split paper] [--out DIR]

Every test clip of the split goes step by step through `StreamingRecognizer` with the torch
backend (faces absent), exactly as the daemon runs it, at the recording's own level and at
-20, -10 and +6 dB (float gain, no clipping). It prints accuracy, macro-F1 and per-class F1 for
the clip label taken two ways (argmax of the mean per-step probabilities; the label the device
shows at the last step), the share of clip labels that change under each gain, and how often
the shown label is right 1.0 s after speech starts compared with at the clip's end. For the
5-fold CV of a recipe, train `--set split=cvK`, evaluate each fold and use `training.crossval`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avemo_edge.audio import STEP_SECONDS, log_mel_slices
from avemo_edge.backends import TorchBackend
from avemo_edge.checkpoint import load_checkpoint
from avemo_edge.config import RecognitionConfig
from avemo_edge.model import EMOTIONS
from avemo_edge.recognizer import StreamingRecognizer

from .data import RavdessCache, speech_onset_step
from .report import write_report

GAINS_DB = (0.0, -20.0, -10.0, 6.0)
EARLY_S = 1.0  # "right by 1.0 s after speech starts"


def stream_clip(rec: StreamingRecognizer, wave: np.ndarray) -> tuple[np.ndarray, list[str], int]:
    """Raw per-step probabilities (T, 7), shown labels and the speech onset step of one clip."""
    rec.reset()
    slices = log_mel_slices(wave)
    raws, shown = [], []
    for t, s in enumerate(slices.numpy()):
        r = rec.step(None, s, t=t * STEP_SECONDS)
        raws.append(r.raw)
        shown.append(r.label)
    return np.stack(raws), shown, speech_onset_step(slices)


def _scores(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, f1_score

    per = f1_score(y, pred, average=None, labels=range(len(EMOTIONS)), zero_division=0)
    return {"accuracy": float(accuracy_score(y, pred)), "macro_f1": float(f1_score(y, pred, average="macro",
            zero_division=0)), "per_class_f1": dict(zip(EMOTIONS, map(float, per), strict=True))}  # fmt: skip


def report(
    checkpoint: Path, cache: Path, split: str = "paper", backend: str = "torch", part: str = "test"
) -> dict[str, Any]:
    """`checkpoint` is a .pt file (torch) or, with another backend, an export folder."""
    if backend == "torch":
        ckpt = load_checkpoint(checkpoint)
        be = TorchBackend(ckpt)
        digest = ckpt.sha256
    else:
        from avemo_edge.backends import create_backend

        be, digest = create_backend(backend, str(checkpoint)), ""
    device = RecognitionConfig()  # the daemon's smoothing: 'shown' is what the device shows
    rec = StreamingRecognizer(be, device.smoothing, device.hold_margin)
    rav = RavdessCache(cache / "ravdess")
    clips = rav.split(split, "audio")[part]
    y = np.array([c["label"] for c in clips])
    index = {c: i for i, c in enumerate(be.classes)}
    out: dict[str, Any] = {"checkpoint": str(checkpoint), "backend": backend, "sha256": digest, "split": split,
                           "part": part, "clips": len(clips)}  # fmt: skip
    labels: dict[float, np.ndarray] = {}
    for gain in GAINS_DB:
        mean_pred, end_pred, early_right = [], [], []
        for c in clips:
            wave = rav.waveform(c) * np.float32(10 ** (gain / 20))
            raw, shown, onset = stream_clip(rec, wave)
            mean_pred.append(int(raw.mean(0).argmax()))
            end_pred.append(index[shown[-1]])
            early = min(onset + int(round(EARLY_S / STEP_SECONDS)), len(shown) - 1)
            early_right.append(index[shown[early]] == c["label"])
        labels[gain] = np.array(mean_pred)
        row = {"mean_probs": _scores(y, labels[gain]), "shown_at_end": _scores(y, np.array(end_pred)),
               "shown_1s_after_onset_accuracy": float(np.mean(early_right))}  # fmt: skip
        if gain:
            row["labels_changed"] = float(np.mean(labels[gain] != labels[0.0]))
        out[f"{gain:+g} dB"] = row
    return out


def render(r: dict[str, Any]) -> str:
    part = r.get("part", "test")
    flag = " --part val" if part == "val" else ""
    lines = [f"Audio-only, {r['split']} split {part} actors, {r['clips']} clips, streamed through the device's "
             f"recognizer: `python -m training.audio_report {r['checkpoint']} "
             f"--backend {r.get('backend', 'torch')}{flag}`", "",
             "| gain | accuracy % (mean probs) | macro F1 % | accuracy % (shown at end) | macro F1 % "
             "| right 1.0 s after onset % | labels changed vs 0 dB |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for gain in GAINS_DB:
        g = r[f"{gain:+g} dB"]
        m, e = g["mean_probs"], g["shown_at_end"]
        changed = f"{100 * g['labels_changed']:.1f} %" if "labels_changed" in g else "-"
        lines.append(f"| {gain:+g} dB | {100 * m['accuracy']:.1f} | {100 * m['macro_f1']:.1f} | "
                     f"{100 * e['accuracy']:.1f} | {100 * e['macro_f1']:.1f} | "
                     f"{100 * g['shown_1s_after_onset_accuracy']:.1f} | {changed} |")  # fmt: skip
    per = r["+0 dB"]["mean_probs"]["per_class_f1"]
    lines += ["", "Per-class F1 % at 0 dB (mean probs): " + ", ".join(f"{k} {100 * v:.1f}" for k, v in per.items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--cache", type=Path, default=Path("cache"))
    ap.add_argument("--split", default="paper")
    ap.add_argument("--part", default="test", choices=("val", "test"), help="val: the validation actors, for choosing")
    ap.add_argument("--out", type=Path, help="also write audio_report.json and .md here")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backend", default="torch", help="torch (a .pt) or onnxruntime (an export folder)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    r = report(args.checkpoint, args.cache, args.split, args.backend, args.part)
    write_report(args.out, "audio_report", r, render(r))


if __name__ == "__main__":
    main()
