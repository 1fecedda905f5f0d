"""The TensorRT backend: three serialized engines run with cuda-python, TensorRT 10/11 name-based I/O.

    backend = create_backend("tensorrt", "out/tensorrt-fp16")

As NVIDIA's samples (`common_runtime.py`, which moved from pycuda to cuda-python's
`cuda.bindings.runtime`): for each engine, one execution context, and for each input and output
tensor one pinned host buffer (`cudaMallocHost`) and one device buffer (`cudaMalloc`) allocated
once at the largest shape of optimization profile 0, bound with `set_tensor_address` once; a call
sets the real input shapes (`set_input_shape`), copies in (`cudaMemcpyAsync`), runs
`execute_async_v3` on one stream (`cudaStreamCreate`), copies out and waits
(`cudaStreamSynchronize`). The copies are part of every step, so a latency measured through this
backend includes them. The CUDA runtime API works in the device's primary context, the one torch
and onnxruntime share; `cudaSetDevice` makes it current on whichever thread runs a step.

Engines only run on the TensorRT version and the GPU architecture that built them: the manifest
records both, and a mismatch is refused with a sentence before deserializing.
`tensorrt` and cuda-python are imported in the constructor only; see docs/EXPORT.md to install them.
This module has never run on a GPU in this project's CI (no GPU there).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import cudart as rt
from .errors import AvemoError, ExportedModelError
from .graph_backend import GraphBackend
from .manifest import GRAPHS, load_export


class _Binding:
    """One I/O tensor: its dtype, the largest shape it can take, and its pinned host and device buffers."""

    def __init__(self, cudart: Any, name: str, dtype: np.dtype, max_shape: tuple[int, ...], is_input: bool) -> None:
        self.name, self.dtype, self.max_shape, self.is_input = name, dtype, max_shape, is_input
        self.cudart = cudart
        self.nbytes = int(np.prod(max_shape)) * dtype.itemsize
        self.host_ptr = rt.call(cudart, cudart.cudaMallocHost(self.nbytes), "cudaMallocHost")  # pinned: async copies
        self.host = rt.pinned_array(cudart, self.host_ptr, self.nbytes, dtype)
        self.device = rt.call(cudart, cudart.cudaMalloc(self.nbytes), "cudaMalloc")

    def free(self) -> None:
        rt.call(self.cudart, self.cudart.cudaFree(self.device), "cudaFree")
        rt.call(self.cudart, self.cudart.cudaFreeHost(self.host_ptr), "cudaFreeHost")


class _Engine:
    def __init__(self, trt: Any, cudart: Any, runtime: Any, path: Path, stream: Any) -> None:
        self.trt, self.cudart, self.stream, self.path = trt, cudart, stream, path
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ExportedModelError(
                f"TensorRT could not deserialize {path} (see its log above): an engine only runs on the "
                "TensorRT version and GPU that built it; build it again on this device"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.bindings: dict[str, _Binding] = {}
        for name in inputs:  # the profile's max shape for dynamic inputs, the fixed shape otherwise
            shape = tuple(self.engine.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                shape = tuple(self.engine.get_tensor_profile_shape(name, 0)[2])
            self.context.set_input_shape(name, shape)
            self.bindings[name] = _Binding(cudart, name, self._dtype(name), shape, True)
        for name in names:
            if name not in self.bindings:  # outputs, sized from the inputs' max shapes
                shape = tuple(self.context.get_tensor_shape(name))
                self.bindings[name] = _Binding(cudart, name, self._dtype(name), shape, False)
        for b in self.bindings.values():
            self.context.set_tensor_address(b.name, int(b.device))

    def _dtype(self, name: str) -> np.dtype:
        return np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name)))

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart = self.cudart
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, x in feeds.items():
            b = self.bindings[name]
            if x.ndim != len(b.max_shape) or any(s > m for s, m in zip(x.shape, b.max_shape, strict=True)):
                raise ExportedModelError(
                    f"input {name} of shape {x.shape} exceeds the largest shape {b.max_shape} that engine {self.path} "
                    "was built for; build it again with a larger --max-batch"
                )
            self.context.set_input_shape(name, x.shape)
            host = b.host[: x.size].reshape(x.shape)
            np.copyto(host, x, casting="same_kind")
            rt.call(cudart, cudart.cudaMemcpyAsync(b.device, b.host_ptr, host.nbytes, h2d, self.stream),
                    "cudaMemcpyAsync (host to device)")  # fmt: skip
        if not self.context.execute_async_v3(int(self.stream)):
            raise AvemoError(f"TensorRT failed to run engine {self.path} (see its log above)")
        out: dict[str, tuple[np.ndarray, tuple[int, ...]]] = {}
        for b in self.bindings.values():
            if not b.is_input:
                shape = tuple(self.context.get_tensor_shape(b.name))
                host = b.host[: int(np.prod(shape))]
                rt.call(cudart, cudart.cudaMemcpyAsync(b.host_ptr, b.device, host.nbytes, d2h, self.stream),
                        "cudaMemcpyAsync (device to host)")  # fmt: skip
                out[b.name] = (host, shape)
        rt.call(cudart, cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return {name: host.reshape(shape).astype(np.float32) for name, (host, shape) in out.items()}

    def free(self) -> None:
        for b in self.bindings.values():
            b.free()
        self.bindings.clear()


class TensorRTBackend(GraphBackend):
    name = "tensorrt"

    def __init__(self, model_path: str | Path, device: int = 0, warmup: int = 3) -> None:
        try:
            import tensorrt as trt
        except ImportError as e:
            raise AvemoError(
                f"the tensorrt backend needs TensorRT's Python bindings, which do not import here ({e}); on a Jetson "
                "use JetPack's python3-libnvinfer in a venv made with --system-site-packages, elsewhere pip install "
                "tensorrt (docs/EXPORT.md)"
            ) from None
        cudart = rt.load()

        exported = load_export(model_path, "tensorrt")
        super().__init__(exported)
        built = exported.manifest.get("tensorrt", {})
        self.device = device
        self.cudart = cudart
        try:
            self.device_name, cc = rt.device_info(cudart, device)
        except AvemoError as e:
            raise AvemoError(f"the tensorrt backend needs CUDA device {device}, which CUDA cannot open ({e})") from e
        here = {"version": trt.__version__, "compute_capability": ".".join(map(str, cc))}
        for key, value in here.items():
            if built.get(key) != value:
                raise ExportedModelError(
                    f"{exported.directory} was built with TensorRT {key.replace('_', ' ')} {built.get(key)!r} "
                    f"but this device has {value!r}; engines do not travel, so build them again here "
                    "(docs/EXPORT.md)"
                )
        self.max_batch = int(built.get("max_batch", 1))  # the optimisation profile's largest batch
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.stream = rt.call(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        runtime = trt.Runtime(self.logger)
        self.engines = {g: _Engine(trt, cudart, runtime, exported.path(g), self.stream) for g in GRAPHS}
        self._warmup(warmup)

    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # The runtime API's current device is per host thread: the daemon may step on another thread.
        rt.call(self.cudart, self.cudart.cudaSetDevice(self.device), f"cudaSetDevice({self.device})")
        return self.engines[graph].run(feeds)

    def describe(self) -> str:
        version = self.exported.manifest["tensorrt"]["version"]
        return f"TensorRT {version} {self.exported.export_format} on {self.device_name}"

    def close(self) -> None:
        """Free the engines' buffers and the stream."""
        rt.call(self.cudart, self.cudart.cudaSetDevice(self.device), f"cudaSetDevice({self.device})")
        for engine in self.engines.values():
            engine.free()
        self.engines.clear()
        rt.call(self.cudart, self.cudart.cudaStreamDestroy(self.stream), "cudaStreamDestroy")
