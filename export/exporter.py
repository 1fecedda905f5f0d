"""`avemo-edge export`: run the stages that the chosen formats need, in order, into OUT/<format>/.

    checkpoint --onnx_export--> onnx --onnx_fp16--> onnx-fp16
                                     --onnx_int8--> onnx-int8, onnx-int8-face
                                     --trt_build--> tensorrt, tensorrt-fp16

Each written file is logged on one line with its size and the time it took; a stage that fails
raises an ExportError sentence and leaves the formats already written in place.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avemo_edge.checkpoint import load_checkpoint
from avemo_edge.errors import ExportError

from .common import FileRecord, Log
from .formats import ExportFormat
from .onnx_export import OPSET


@dataclass
class ExportReport:
    checkpoint: Path
    out_dir: Path
    formats: list[ExportFormat]
    records: list[FileRecord]
    seconds: float

    def folder(self, fmt: ExportFormat) -> Path:
        return self.out_dir / fmt.name


def export_checkpoint(
    checkpoint: Path,
    out_dir: Path,
    formats: list[ExportFormat],
    log: Log,
    opset: int = OPSET,
    max_batch: int = 8,
    data_dir: Path | None = None,
    calibration: tuple[int, int] = (128, 256),
) -> ExportReport:
    """Export `checkpoint` to each format (as `parse_formats` returns them: sources first)."""
    start = time.perf_counter()
    ckpt = load_checkpoint(checkpoint)
    if ckpt.dims.bidirectional:
        raise ExportError(
            f"checkpoint {checkpoint} has a bidirectional LSTM, which needs the future and cannot run step by step; "
            "export a unidirectional model"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"output folder {out_dir} is a file; pass a folder")
    made: dict[str, dict[str, Any]] = {}
    records: list[FileRecord] = []
    onnx_dir = out_dir / "onnx"
    for fmt in formats:
        dst = out_dir / fmt.name
        if fmt.source and fmt.source not in made:
            raise ExportError(f"format {fmt.name} is made from {fmt.source}, which was not exported first")
        if fmt.name == "onnx":
            from .onnx_export import export_onnx

            made[fmt.name], recs = export_onnx(ckpt, dst, log, opset)
        elif fmt.name == "onnx-fp16":
            from .onnx_fp16 import export_fp16

            made[fmt.name], recs = export_fp16(onnx_dir, made["onnx"], dst, log)
        elif fmt.name in ("onnx-int8", "onnx-int8-face"):
            from .onnx_int8 import export_int8

            made[fmt.name], recs = export_int8(
                ckpt, onnx_dir, made["onnx"], dst, log, data_dir, *calibration, format_name=fmt.name
            )
        elif fmt.backend == "tensorrt":
            from .trt_build import export_engines

            made[fmt.name], recs = export_engines(out_dir / fmt.source, made[fmt.source], dst, fmt, log, max_batch)
        else:
            raise ExportError(f"format {fmt.name} has no export stage")
        records += recs
    return ExportReport(checkpoint, out_dir, formats, records, time.perf_counter() - start)
