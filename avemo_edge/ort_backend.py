"""The onnxruntime backend: an export folder of three ONNX graphs, on the CPU, CUDA or TensorRT provider.

    backend = create_backend("onnxruntime", "out/onnx", provider="auto")

`provider` is 'auto' (TensorRT, then CUDA, then CPU: the first this onnxruntime build has),
'tensorrt', 'cuda' or 'cpu'. onnxruntime silently falls back to the CPU when a GPU provider
cannot start (a missing CUDA library, say); this backend refuses instead, so that a number
measured "on CUDA" never comes from the CPU. The CPU provider is always listed last so that a
node a GPU provider does not support still runs.

onnxruntime also falls back at run time: when an execution provider fails inside
`session.run()` (`EPFail`), it prints to stdout, switches the session to the CPU and retries.
Every session here has `disable_fallback()` called, so such a failure raises instead, and
`_run` turns it into one `BackendError` sentence (the daemon logs it and restarts the backend).
stdout may carry the JSON-lines stream, so onnxruntime must never print there: its C++ log goes
to stderr at warning severity and above (`log_severity_level`), and the Python `print`s of its
construction-time fallback are caught and sent to `logging` instead.

Inputs and outputs are float32 for every format (the fp16 export casts inside the graph).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import AvemoError, BackendError
from .graph_backend import GraphBackend
from .manifest import GRAPHS, load_export

log = logging.getLogger("avemo_edge")

ORT_LOG_WARNING = 2  # onnxruntime's severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal
PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}


def _cache_dir(digest: str) -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "avemo-edge" / "ort-tensorrt" / digest[:16]


class OnnxRuntimeBackend(GraphBackend):
    name = "onnxruntime"

    def __init__(
        self,
        model_path: str | Path,
        provider: str = "auto",
        threads: int | None = None,
        warmup: int = 3,
        device_id: int = 0,
    ) -> None:
        import onnxruntime as ort

        exported = load_export(model_path, "onnxruntime")
        super().__init__(exported)
        available = ort.get_available_providers()
        if provider == "auto":
            # A GPU build lists its providers even where their libraries are missing; try each in turn.
            candidates = [k for k, v in PROVIDERS.items() if v in available or k == "cpu"]
        elif provider not in PROVIDERS:
            raise AvemoError(f"onnxruntime provider must be one of auto, {', '.join(PROVIDERS)}; not {provider!r}")
        elif PROVIDERS[provider] not in available:
            raise AvemoError(
                f"onnxruntime provider {provider!r} is not in this onnxruntime build (it has {', '.join(available)}); "
                "install onnxruntime-gpu on a GPU machine (see docs/EXPORT.md) or use provider='cpu'"
            )
        else:
            candidates = [provider]

        ort.set_default_logger_severity(ORT_LOG_WARNING)
        options = ort.SessionOptions()
        options.log_severity_level = ORT_LOG_WARNING
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        # onnxruntime's worker threads busy-wait after each run by default; on a small box that
        # steals the cores the face detector and decoder need between steps (on the 2-core CI
        # machine it nearly doubled the Haar detector's time, docs/BENCHMARKS.md). A 100 ms step
        # loop gains nothing from spinning, so the workers sleep instead.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        for key in candidates:
            self.sessions = self._sessions(ort, options, key, device_id)
            self.provider = self.sessions["visual_encoder"].get_providers()[0]
            if self.provider == PROVIDERS[key]:
                break
        else:
            raise AvemoError(
                f"onnxruntime could not start {PROVIDERS[candidates[-1]]} and fell back to {self.provider}; "
                "its log above names the missing library (CUDA, cuDNN or TensorRT)"
            )
        self._outputs = {g: list(io.outputs) for g, io in GRAPHS.items()}
        self._warmup(warmup)

    def _sessions(self, ort: Any, options: Any, key: str, device_id: int) -> dict[str, Any]:
        """One session per graph on provider `key` (CUDA and CPU behind it for nodes it does not take)."""
        providers: list[Any] = []
        if key == "tensorrt":
            # Engines are built on the first run (minutes) and cached; the export's precision is kept
            # (no trt_fp16_enable: an fp32 export stays fp32).
            cache = _cache_dir(self.exported.manifest["graphs"]["visual_encoder"]["sha256"])
            cache.mkdir(parents=True, exist_ok=True)
            providers.append(
                (
                    PROVIDERS["tensorrt"],
                    {"device_id": device_id, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache)},
                )
            )
        if key in ("tensorrt", "cuda"):
            providers.append((PROVIDERS["cuda"], {"device_id": device_id}))
        providers.append(PROVIDERS["cpu"])
        # onnxruntime's x86 NCHWc layout pass dereferences a null op on the fp16 audio graph's
        # Transpose -> Cast(fp16 -> fp32) -> MatMul chain and crashes the process (segfault, seen with
        # onnxruntime 1.32; microsoft/onnxruntime#28392); it only rewrites CPU convolutions, so it is
        # turned off for fp16 exports only.
        disabled = ["NchwcTransformer"] if self.exported.manifest.get("precision") == "fp16" else []
        sessions = {}
        for g in GRAPHS:
            printed = io.StringIO()
            # A provider that raises while the session is made is retried on the CPU with a print();
            # that print is kept off stdout, and the provider check in __init__ refuses the result.
            with contextlib.redirect_stdout(printed):
                session = ort.InferenceSession(
                    str(self.exported.path(g)), options, providers=providers, disabled_optimizers=disabled
                )
            for line in printed.getvalue().splitlines():
                if line.strip("* "):
                    log.warning("onnxruntime (%s): %s", g, line)
            session.disable_fallback()  # a provider failure in run() raises instead of moving to the CPU
            sessions[g] = session
        return sessions

    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from onnxruntime.capi.onnxruntime_pybind11_state import EPFail

        names = self._outputs[graph]
        try:
            outputs = self.sessions[graph].run(names, feeds)
        except EPFail as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BackendError(
                f"onnxruntime's {self.provider} failed running graph {graph} ({first}); it does not fall back to "
                "the CPU, so restart the backend or choose provider='cpu'"
            ) from e
        return dict(zip(names, outputs, strict=True))

    def describe(self) -> str:
        return f"onnxruntime {self.exported.export_format} on {self.provider}"
