"""Training and inference cost of the ResNet-18 visual encoder at several widths and face sizes.

    python -m bench.visual_width [--threads 2] [--configs 64x48,32x48,48x48,32x64]

Per configuration (width x face size): milliseconds for one AdamW training step on a batch of 64
grey faces (bf16 autocast, the recipe's setting), the implied seconds per FER+ epoch (28,217
training faces), milliseconds for one face in inference, and the encoder's parameter count.
Random inputs: it measures cost, not accuracy. Timings depend on what else runs on the machine.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from avemo_edge.model import ModelDims, VisualEncoder

FERPLUS_TRAIN = 28_217


def measure(width: int, size: int, batch: int = 64, steps: int = 4) -> dict[str, float]:
    enc = VisualEncoder(ModelDims(face_size=size, face_width=width))
    head = torch.nn.Linear(128, 7)
    opt = torch.optim.AdamW([*enc.parameters(), *head.parameters()], 1e-3)
    x, y = torch.randn(batch, 1, size, size), torch.randint(0, 7, (batch,))
    for i in range(steps + 2):
        if i == 2:
            t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(head(enc(x)).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    train_ms = (time.perf_counter() - t0) / steps * 1000
    enc.eval()
    one = torch.randn(1, 1, size, size)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        enc(one)
        t0 = time.perf_counter()
        for _ in range(50):
            enc(one)
    return {"train_ms": train_ms, "epoch_s": FERPLUS_TRAIN / batch * train_ms / 1000,
            "infer_ms": (time.perf_counter() - t0) / 50 * 1000,
            "params_m": sum(p.numel() for p in enc.parameters()) / 1e6}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--configs", default="64x48,32x48,48x48,32x64", help="comma-separated WIDTHxSIZE")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("| width | face px | train step ms (batch 64) | FER+ epoch s | one face ms | params M |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for item in args.configs.split(","):
        w, s = (int(v) for v in item.lower().split("x"))
        m = measure(w, s)
        print(f"| {w} | {s} | {m['train_ms']:.0f} | {m['epoch_s']:.0f} | {m['infer_ms']:.2f} | {m['params_m']:.2f} |")


if __name__ == "__main__":
    main()
