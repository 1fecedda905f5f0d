"""Parameter count and one-step latency of the network, for each model configuration.

    python -m bench.step_latency [--steps 200] [--threads 2]
    python -m bench.step_latency --backend onnxruntime --model out/onnx     (one exported model)

One step = one face through the ResNet-18, one log-mel slice through the CNN and one LSTM
step, and the fusion head: what the device runs every 100 ms. Weights are random (latency does
not depend on their values). The step runs through a runtime backend's own `step()`, batch 1,
numpy in and out, with the LSTM state carried; warm-up steps are discarded and p50 / p95 are
reported. This is the quick view; `avemo-edge bench model` measures the same step (with the
same code, `bench.graphs.backend_step_call` and `bench.timing.time_calls`) next to each graph
alone, the batch sweep and the compute bound.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from avemo_edge.backends import Backend, create_backend
from avemo_edge.doctor import cpu_name
from avemo_edge.model import count_parameters

from .graphs import backend_step_call
from .models import resolve_model
from .timing import time_calls

CONFIGS = {"default (48 px grey, small stem)": "small", "paper (224 px RGB, ImageNet stem)": "paper"}
WARMUP = 10


def time_steps(backend: Backend, steps: int) -> tuple[float, float]:
    """p50 and p95 ms of `steps` streaming steps (face + slice, state carried) through `backend`, after a warm-up."""
    timed = time_calls(backend_step_call(backend), warmup=WARMUP, seconds=0.0, min_calls=steps, max_calls=steps)
    return timed.stats.p50, timed.stats.p95


def measure(arch: str, precision: str, steps: int, workdir: Path) -> tuple[int, float, float]:
    model = resolve_model(arch, workdir)
    backend = create_backend("torch", str(model.path), precision=precision)
    return (count_parameters(backend.model), *time_steps(backend, steps))


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
    with tempfile.TemporaryDirectory(prefix="avemo-bench-") as tmp:
        for name, arch in CONFIGS.items():
            for precision in ("fp32", "bf16"):
                n, p50, p95 = measure(arch, precision, args.steps, Path(tmp))
                print(f"{name:36s} {n:11,d} {precision:>9s} {p50:8.2f} {p95:8.2f} {1000 / p50:8.1f}")


if __name__ == "__main__":
    main()
