"""A checkpoint's weights with the face-and-mirror average switched on (`ModelDims.face_mirror`).

    python -m training.mirror runs/visual6/best.pt runs/visual6m/best.pt

The network then averages the visual features of each face and of its mirror image (the same
weights; no training), so a mirror image of a face gets exactly the same label.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from avemo_edge.checkpoint import load_checkpoint, save_checkpoint
from avemo_edge.model import AVEmotionNet


def mirrored(src: Path, dst: Path) -> str:
    """Write `src` with face_mirror on to `dst`; returns the new file's sha256."""
    ckpt = load_checkpoint(src)
    model = AVEmotionNet(dataclasses.replace(ckpt.dims, face_mirror=True))
    model.load_state_dict(ckpt.build().state_dict())
    meta = {**ckpt.meta, "mirrored_from": str(src), "mirrored_from_sha256": ckpt.sha256}
    return save_checkpoint(dst, model, meta)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("out", type=Path)
    a = ap.parse_args(argv)
    print(f"{a.out}: sha256 {mirrored(a.checkpoint, a.out)}")


if __name__ == "__main__":
    main()
