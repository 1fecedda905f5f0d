"""The compute bound: how fast the visual encoder could possibly run on this machine.

bound = FLOPs of one forward pass / peak FLOP/s this machine reaches on a large matrix product
in the same precision, measured in the same run. The ratio measured / bound says how far the
encoder is from what the hardware does on the friendliest possible workload (1.0 = at the peak).

FLOPs are *counted*, not looked up: forward hooks on every `nn.Conv2d` and `nn.Linear` read the
real input and output shapes of one forward pass and add 2 FLOPs (a multiply and an add) per
multiply-accumulate:

    Conv2d: 2 * B * C_out * H_out * W_out * (C_in / groups) * k_h * k_w   (+ B * C_out * H_out * W_out with bias)
    Linear: 2 * (elements of the input / in_features) * in_features * out_features  (+ the same / in_features with bias)

Batch norm, activations, pooling, the residual additions and the L2 normalisation are not
counted: together they are well under 1 % of a ResNet-18's FLOPs and bound by memory, not by
arithmetic. (Check: torchvision's ResNet-18 at 224 px is 1.81 GMAC = 3.6 GFLOP; `test_bench`
checks the counter against it.)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import nn

FLOP_METHOD = (
    "counted with forward hooks on Conv2d and Linear (2 FLOPs per multiply-accumulate, bias adds included); "
    "batch norm, activations, pooling and residual adds are not counted (< 1 % of a ResNet-18)"
)
PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def count_flops(module: nn.Module, *inputs: torch.Tensor) -> int:
    """FLOPs of `module(*inputs)` in its Conv2d and Linear layers (one forward pass, in float32)."""
    total = 0

    def conv_hook(m: nn.Conv2d, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = m.kernel_size
        per_output = (m.in_channels // m.groups) * kh * kw
        total += 2 * out.numel() * per_output + (out.numel() if m.bias is not None else 0)

    def linear_hook(m: nn.Linear, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        rows = args[0].numel() // m.in_features
        total += 2 * rows * m.in_features * m.out_features + (rows * m.out_features if m.bias is not None else 0)

    handles = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    try:
        with torch.inference_mode():
            module(*inputs)
    finally:
        for h in handles:
            h.remove()
    return total


def matmul_peak(
    precision: str,
    device: torch.device | str = "cpu",
    size: int | None = None,
    seconds: float = 1.0,
    sync: Callable[[], None] | None = None,
) -> dict[str, float | int | str]:
    """The best FLOP/s of an (n x n) @ (n x n) product in `precision` on `device` over `seconds` of repeats.

    The best repeat (not the mean) is the machine's reachable peak; one untimed product warms up first.
    """
    dtype = PRECISION_DTYPES.get(precision)
    if dtype is None:
        raise ValueError(f"no matmul peak for precision {precision!r}; choose one of {', '.join(PRECISION_DTYPES)}")
    device = torch.device(device)
    n = size or (8192 if device.type == "cuda" else 2048)
    if sync is None:
        sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    with torch.inference_mode():
        torch.matmul(a, b, out=out)
        sync()
        best, repeats = math.inf, 0
        deadline = time.perf_counter() + seconds
        while repeats < 3 or time.perf_counter() < deadline:
            sync()
            t0 = time.perf_counter()
            torch.matmul(a, b, out=out)
            sync()
            best = min(best, time.perf_counter() - t0)
            repeats += 1
    flops = 2 * n**3
    return {
        "precision": precision,
        "device": str(device),
        "size": n,
        "repeats": repeats,
        "best_ms": round(best * 1000, 4),
        "gflops": round(flops / best / 1e9, 2),
    }


def bound_ratio(flops: int, peak_gflops: float, measured_ms: float) -> dict[str, float]:
    """The compute bound in ms and measured / bound."""
    bound_ms = flops / (peak_gflops * 1e9) * 1000.0
    return {
        "bound_ms": round(bound_ms, 4),
        "measured_ms": round(measured_ms, 4),
        "ratio": round(measured_ms / bound_ms, 2),
    }
