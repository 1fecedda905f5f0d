"""What the numbers were measured on: CPU, GPU, library versions, thread settings, load, memory.

A benchmark without this is not comparable with anything, so every report carries it.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import resource
from pathlib import Path
from typing import Any

import torch

from avemo_edge.doctor import cpu_name

LIBRARIES = (
    "avemo-edge",
    "torch",
    "numpy",
    "opencv-python",
    "av",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "tensorrt",
    "cuda-python",
)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "KMP_AFFINITY", "ONEDNN_MAX_CPU_ISA")


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask), which can be fewer than the machine has."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def rss_mb() -> dict[str, float]:
    """This process's resident memory now and its peak, MB (from /proc, else getrusage's peak)."""
    out: dict[str, float] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):  # kB
                out["rss_mb" if key == "VmRSS" else "peak_rss_mb"] = round(int(value.split()[0]) / 1024, 1)
    except OSError:
        pass
    if "peak_rss_mb" not in out:  # ru_maxrss is kB on Linux
        out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def gpu_memory_mb() -> dict[str, float] | None:
    """torch's own peak allocation and the device-wide use (which also counts onnxruntime / TensorRT), MB."""
    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info()
    return {
        "torch_peak_allocated_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
        "torch_reserved_mb": round(torch.cuda.memory_reserved() / 2**20, 1),
        "device_used_mb": round((total - free) / 2**20, 1),
        "device_total_mb": round(total / 2**20, 1),
    }


def memory_now() -> dict[str, Any]:
    return {**rss_mb(), "gpu": gpu_memory_mb()}


def gpu_description() -> dict[str, Any] | None:
    if not torch.cuda.is_available():
        return None
    p = torch.cuda.get_device_properties(0)
    return {
        "name": p.name,
        "count": torch.cuda.device_count(),
        "memory_mb": round(p.total_memory / 2**20),
        "compute_capability": f"{p.major}.{p.minor}",
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        # conv in fp32 may use TF32 tensor cores (cuDNN's default) while fp32 matmul does not (torch's default)
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }


def thread_settings() -> dict[str, Any]:
    import cv2

    return {
        "torch_intra_op_threads": torch.get_num_threads(),
        "torch_inter_op_threads": torch.get_num_interop_threads(),
        "opencv_threads": cv2.getNumThreads(),  # the Haar face detector's parallel loops
        **{k: os.environ.get(k) for k in THREAD_VARIABLES},
    }


def describe() -> dict[str, Any]:
    """The machine, its libraries and its settings, as one JSON-ready dict."""
    return {
        "cpu": cpu_name(),
        "cpu_cores_logical": os.cpu_count(),
        "cpu_usable": usable_cpus(),
        "cpu_isa": torch.backends.cpu.get_cpu_capability(),
        "load_average_1_5_15": load_average(),
        "gpu": gpu_description(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": {d: v for d in LIBRARIES if (v := _version(d))},
        "torch_version": torch.__version__,
        "threads": thread_settings(),
    }


def load_warning(env: dict[str, Any]) -> str | None:
    """A sentence when the machine was busy as the run started (the numbers then understate it)."""
    load = env.get("load_average_1_5_15")
    cores = env.get("cpu_usable") or 1
    if load and load[0] > 0.5 * cores:
        return (
            f"the 1-minute load average was {load[0]} on {cores} usable CPUs when the run started: other work "
            "was competing for the CPU, so these timings are not representative of an idle machine"
        )
    return None
