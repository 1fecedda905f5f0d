"""The TensorRT backend: three serialized engines run with pycuda, TensorRT 10 name-based I/O.

    backend = create_backend("tensorrt", "out/tensorrt-fp16")

As NVIDIA's samples (`common_runtime.py`): for each engine, one execution context, and for each
input and output tensor one pinned host buffer (`pagelocked_empty`) and one device buffer
(`mem_alloc`) allocated once at the largest shape of optimization profile 0, bound with
`set_tensor_address` once; a call sets the real input shapes (`set_input_shape`), copies in
(`memcpy_htod_async`), runs `execute_async_v3` on one stream and copies out. The copies are part
of every step, so a latency measured through this backend includes them.

Engines only run on the TensorRT version and the GPU architecture that built them: the manifest
records both, and a mismatch is refused with a sentence before deserializing.
`tensorrt` and `pycuda` are imported in the constructor only; see docs/EXPORT.md to install them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .errors import AvemoError, ExportedModelError
from .graph_backend import GraphBackend
from .manifest import GRAPHS, load_export


class _Binding:
    """One I/O tensor: its dtype, the largest shape it can take, and its pinned host and device buffers."""

    def __init__(self, cuda: Any, name: str, dtype: np.dtype, max_shape: tuple[int, ...], is_input: bool) -> None:
        self.name, self.dtype, self.max_shape, self.is_input = name, dtype, max_shape, is_input
        self.host = cuda.pagelocked_empty(int(np.prod(max_shape)), dtype)  # pinned: truly async copies
        self.device = cuda.mem_alloc(self.host.nbytes)


class _Engine:
    def __init__(self, trt: Any, cuda: Any, runtime: Any, path: Path, stream: Any) -> None:
        self.trt, self.cuda, self.stream, self.path = trt, cuda, stream, path
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
            self.bindings[name] = _Binding(cuda, name, self._dtype(name), shape, True)
        for name in names:
            if name not in self.bindings:  # outputs, sized from the inputs' max shapes
                shape = tuple(self.context.get_tensor_shape(name))
                self.bindings[name] = _Binding(cuda, name, self._dtype(name), shape, False)
        for b in self.bindings.values():
            self.context.set_tensor_address(b.name, int(b.device))

    def _dtype(self, name: str) -> np.dtype:
        return np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name)))

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cuda = self.cuda
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
            cuda.memcpy_htod_async(b.device, host, self.stream)
        if not self.context.execute_async_v3(self.stream.handle):
            raise ExportedModelError(f"TensorRT failed to run engine {self.path} (see its log above)")
        out: dict[str, tuple[np.ndarray, tuple[int, ...]]] = {}
        for b in self.bindings.values():
            if not b.is_input:
                shape = tuple(self.context.get_tensor_shape(b.name))
                host = b.host[: int(np.prod(shape))]
                cuda.memcpy_dtoh_async(host, b.device, self.stream)
                out[b.name] = (host, shape)
        self.stream.synchronize()
        return {name: host.reshape(shape).astype(np.float32) for name, (host, shape) in out.items()}


class TensorRTBackend(GraphBackend):
    name = "tensorrt"

    def __init__(self, model_path: str | Path, device: int = 0, warmup: int = 3) -> None:
        import pycuda.driver as cuda
        import tensorrt as trt

        exported = load_export(model_path, "tensorrt")
        super().__init__(exported)
        built = exported.manifest.get("tensorrt", {})
        try:
            cuda.init()
            dev = cuda.Device(device)
        except cuda.Error as e:
            raise AvemoError(f"the tensorrt backend needs CUDA device {device}, which CUDA cannot open ({e})") from e
        here = {"version": trt.__version__, "compute_capability": ".".join(map(str, dev.compute_capability()))}
        for key, value in here.items():
            if built.get(key) != value:
                raise ExportedModelError(
                    f"{exported.directory} was built with TensorRT {key.replace('_', ' ')} {built.get(key)!r} "
                    f"but this device has {value!r}; engines do not travel, so build them again here "
                    "(docs/EXPORT.md)"
                )
        self.device_name = dev.name()
        self._ctx = dev.retain_primary_context()  # the context torch and onnxruntime share on this GPU
        self.logger = trt.Logger(trt.Logger.WARNING)
        with self._active():
            self.stream = cuda.Stream()
            runtime = trt.Runtime(self.logger)
            self.engines = {g: _Engine(trt, cuda, runtime, exported.path(g), self.stream) for g in GRAPHS}
        self._warmup(warmup)

    @contextmanager
    def _active(self) -> Iterator[None]:
        self._ctx.push()
        try:
            yield
        finally:
            self._ctx.pop()

    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._active():
            return self.engines[graph].run(feeds)

    def describe(self) -> str:
        version = self.exported.manifest["tensorrt"]["version"]
        return f"TensorRT {version} {self.exported.export_format} on {self.device_name}"

    def close(self) -> None:
        """Free the engines and buffers while their CUDA context is current."""
        with self._active():
            self.engines.clear()
        self._ctx.detach()
