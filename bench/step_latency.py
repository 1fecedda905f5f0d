"""Parameter count and one-step CPU latency of the network, for each model configuration.

    python -m bench.step_latency [--steps 200] [--threads 2]
    python -m bench.step_latency --backend onnxruntime --model out/onnx     (one exported model)

One step = one face through the ResNet-18, one log-mel slice through the CNN and one LSTM
step, and the fusion head: what the device runs every 100 ms. Weights are random (latency does
not depend on their values). The step runs through the runtime's torch backend, batch 1, with
the LSTM state carried; warm-up steps are discarded and p50 / p95 are reported.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from avemo_edge.backends import Backend, TorchBackend, create_backend
from avemo_edge.checkpoint import Checkpoint
from avemo_edge.doctor import cpu_name
from avemo_edge.model import PAPER_DIMS, AVEmotionNet, ModelDims, count_parameters

CONFIGS = {"default (48 px grey, small stem)": ModelDims(), "paper (224 px RGB, ImageNet stem)": PAPER_DIMS}


def measure(dims: ModelDims, precision: str, steps: int) -> tuple[int, float, float]:
    model = AVEmotionNet(dims)
    backend = TorchBackend(Checkpoint(dims, model.state_dict()), precision=precision, warmup=10)
    return (count_parameters(model), *time_steps(backend, steps))


def time_steps(backend: Backend, steps: int) -> tuple[float, float]:
    """p50 and p95 ms of one step (face + slice, state carried) through `backend`, after its warm-up."""
    dims = backend.dims
    rng = np.random.default_rng(0)
    face = rng.random((dims.face_channels, dims.face_size, dims.face_size), dtype=np.float32)
    audio = rng.standard_normal((dims.n_mels, dims.slice_frames)).astype(np.float32)
    state, times = backend.init_state(), []
    for _ in range(steps):
        t0 = time.perf_counter()
        _, _, _, state = backend.step(face, audio, state)
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--backend", default=None, help="time one model through this backend (torch, onnxruntime, ...)")
    ap.add_argument("--model", default=None, help="its checkpoint (torch) or export folder (onnxruntime, tensorrt)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_name()}, torch {torch.__version__}, {args.threads} threads, {args.steps} timed steps")
    if args.backend or args.model:
        if not (args.backend and args.model):
            ap.error("--backend and --model go together")
        options = {"threads": args.threads} if args.backend == "onnxruntime" else {}
        backend = create_backend(args.backend, args.model, **options)
        p50, p95 = time_steps(backend, args.steps)
        what = backend.describe() if hasattr(backend, "describe") else args.backend
        print(f"{what}: p50 {p50:.2f} ms, p95 {p95:.2f} ms, {1000 / p50:.1f} steps/s (inputs in, outputs out included)")
        return
    print(f"{'model':36s} {'params':>11s} {'precision':>9s} {'p50 ms':>8s} {'p95 ms':>8s} {'steps/s':>8s}")
    for name, dims in CONFIGS.items():
        for precision in ("fp32", "bf16"):
            n, p50, p95 = measure(dims, precision, args.steps)
            print(f"{name:36s} {n:11,d} {precision:>9s} {p50:8.2f} {p95:8.2f} {1000 / p50:8.1f}")


if __name__ == "__main__":
    main()
