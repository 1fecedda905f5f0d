"""The one table of export formats. It drives `--formats` checking, the parity bounds of
`--verify`, the table in docs/EXPORT.md (a test keeps them equal) and, later, the benchmark.

Each format is written to its own folder `OUT/<name>/` holding the three graphs and a
`manifest.json`, so that one folder is what gets copied to a device.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from avemo_edge.errors import ExportError


@dataclass(frozen=True)
class ExportFormat:
    name: str  # the --formats key and the output folder's name
    what: str
    precision: str  # inside the graphs; inputs and outputs are float32 for every format
    suffix: str
    backend: str  # the avemo_edge backend that runs it
    source: str | None  # the format it is made from (None: from the checkpoint)
    needs: tuple[str, ...]  # Python modules that making it needs, beyond torch
    runs_on: str
    max_abs: float | None  # bound on |p - p_torch| per step and class; None: reported, not gated
    min_argmax: float | None  # bound on the fraction of steps whose argmax agrees with torch

    def bound(self) -> str:
        parts = []
        if self.max_abs is not None:
            parts.append(f"max abs <= {self.max_abs:g}")
        if self.min_argmax is not None:
            parts.append(f"argmax >= {self.min_argmax:.0%}")
        return ", ".join(parts) or "reported, no bound"


FORMATS: tuple[ExportFormat, ...] = (
    ExportFormat(
        "onnx", "ONNX, fp32", "fp32", ".onnx", "onnxruntime", None, ("onnx", "onnxruntime"),
        "onnxruntime: CPU, CUDA or TensorRT provider", 1e-4, None,
    ),
    ExportFormat(
        "onnx-fp16", "ONNX, fp16 weights and activations, fp32 inputs/outputs", "fp16", ".onnx", "onnxruntime",
        "onnx", ("onnx", "onnxruntime"),
        "onnxruntime CUDA or TensorRT provider (the CPU provider runs it through inserted casts)", 1e-2, 0.99,
    ),
    ExportFormat(
        "onnx-int8", "ONNX, int8 QDQ (static, calibrated) convolutions and matmuls", "int8", ".onnx",
        "onnxruntime", "onnx", ("onnx", "onnxruntime"), "onnxruntime CPU (VNNI / AMX)", None, None,
    ),
    ExportFormat(
        "onnx-int8-face", "ONNX, the visual encoder as in onnx-int8; audio step and fusion head fp32", "int8-face",
        ".onnx", "onnxruntime", "onnx", ("onnx", "onnxruntime"), "onnxruntime CPU (VNNI / AMX)", None, None,
    ),
    ExportFormat(
        "tensorrt", "TensorRT engines, fp32 (TF32 off)", "fp32", ".engine", "tensorrt", "onnx",
        ("tensorrt", "cuda.bindings"), "the GPU and TensorRT version that built them", 1e-4, None,
    ),
    ExportFormat(
        "tensorrt-fp16", "TensorRT engines, FP16 (strongly typed from onnx-fp16)", "fp16", ".engine", "tensorrt",
        "onnx-fp16", ("tensorrt", "cuda.bindings"), "the GPU and TensorRT version that built them", 1e-2, 0.99,
    ),
)  # fmt: skip

BY_NAME = {f.name: f for f in FORMATS}


def parse_formats(text: str) -> list[ExportFormat]:
    """'onnx,onnx-fp16' -> formats in table order, each source first; a bad name or missing package is refused."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ExportError(f"no export format given; choose from {', '.join(BY_NAME)}")
    for n in names:
        if n not in BY_NAME:
            raise ExportError(f"unknown export format {n!r}; choose from {', '.join(BY_NAME)}")
    wanted = set(names)
    for n in names:
        source = BY_NAME[n].source
        while source:  # tensorrt-fp16 <- onnx-fp16 <- onnx
            wanted.add(source)
            source = BY_NAME[source].source
    chosen = [f for f in FORMATS if f.name in wanted]
    for f in chosen:
        missing = [m for m in f.needs if not _importable(m)]
        if missing:
            raise ExportError(
                f"export format {f.name!r} needs the Python package(s) {', '.join(missing)}, which are not "
                f"installed here; {_install_hint(f)}"
            )
    return chosen


def _importable(module: str) -> bool:
    """find_spec, without its ModuleNotFoundError for a dotted name whose parent is missing (cuda.bindings)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _install_hint(f: ExportFormat) -> str:
    if f.backend == "tensorrt":
        return "build TensorRT engines on the device that runs them, with JetPack's TensorRT or the tensorrt wheel and cuda-python (docs/EXPORT.md)"  # noqa: E501
    return "install avemo-edge[onnx] (docs/EXPORT.md)"


def formats_markdown() -> str:
    """The table for docs/EXPORT.md."""
    rows = [
        "| format | what | runs on | made from | parity bound vs torch fp32 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for f in FORMATS:
        src = f"`{f.source}`" if f.source else "checkpoint"
        rows.append(f"| `{f.name}` | {f.what} | {f.runs_on} (`{f.backend}` backend) | {src} | {f.bound()} |")
    return "\n".join(rows)
