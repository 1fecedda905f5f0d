"""The CUDA runtime through cuda-python (`cuda.bindings.runtime`), as NVIDIA's TensorRT samples use it.

NVIDIA's TensorRT Python samples replaced pycuda with cuda-python: every call returns a tuple
whose first item is a `cudaError_t`, then its results. `call` checks that error and returns the
results; a failure becomes one sentence naming the call and CUDA's error name. Imported only by
the TensorRT backend and engine build, inside their functions (never at import time of the
runtime), so that everything else works where cuda-python is absent.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from .errors import AvemoError


def load(error: type[AvemoError] = AvemoError) -> Any:
    """`cuda.bindings.runtime` (cuda-python >= 12.6), else one sentence saying what to install."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError as e:
        raise error(
            f"the TensorRT backend needs cuda-python's CUDA runtime bindings (cuda.bindings.runtime), which do not "
            f"import here ({e}); pip install 'cuda-python>=12.6' matching this machine's CUDA (docs/EXPORT.md)"
        ) from None
    return cudart


def call(cudart: Any, result: tuple[Any, ...], what: str, error: type[AvemoError] = AvemoError) -> Any:
    """(err, *values) -> values (one value alone), or `error` with CUDA's name for err."""
    err, values = result[0], result[1:]
    if err != cudart.cudaError_t.cudaSuccess:
        name = cudart.cudaGetErrorName(err)[1]
        name = name.decode() if isinstance(name, bytes) else str(name)
        raise error(f"CUDA call {what} failed with {name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def device_info(cudart: Any, device: int, error: type[AvemoError] = AvemoError) -> tuple[str, tuple[int, int]]:
    """(name, (major, minor) compute capability) of CUDA device `device`, made current for this thread."""
    count = call(cudart, cudart.cudaGetDeviceCount(), "cudaGetDeviceCount", error)
    if not 0 <= device < count:
        raise error(f"CUDA device {device} does not exist; this machine has {count} CUDA device(s)")
    call(cudart, cudart.cudaSetDevice(device), f"cudaSetDevice({device})", error)
    prop = call(cudart, cudart.cudaGetDeviceProperties(device), f"cudaGetDeviceProperties({device})", error)
    name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    return name.rstrip("\0").strip(), (int(prop.major), int(prop.minor))


def pinned_array(cudart: Any, ptr: int, nbytes: int, dtype: np.dtype) -> np.ndarray:
    """A numpy view of `nbytes` of page-locked host memory at `ptr` (from cudaMallocHost)."""
    raw = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_uint8)), (nbytes,))
    return raw.view(dtype)
