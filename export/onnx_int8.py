"""Stage 2b: fp32 ONNX graphs -> int8 graphs for onnxruntime on a CPU (format `onnx-int8`).

Static quantization with onnxruntime.quantization: QDQ format, uint8 activations and int8
per-channel weights (the pairing onnxruntime recommends on x86 with VNNI; AMX too), MinMax
calibration. Quantized: `Conv`, `Gemm` and `MatMul` in the visual encoder and the audio step,
where nearly all the multiply-adds are (format `onnx-int8-face`: in the visual encoder alone).
Kept fp32: the LSTM (onnxruntime's static QDQ quantizer has no LSTM support) and the whole
fusion head (a few thousand multiply-adds, and the gates would lose more accuracy than the head
saves in time).

Calibration data (`export.stream.calibration_set`): FER+ training faces and RAVDESS Actors
02-06 log-mel slices, each slice with the LSTM state the fp32 model reaches at that point of its
clip. Its accuracy cost is measured by `--verify` against torch fp32 on a separate stream.

Graphs at opset 18 and later (the dynamo exporter's) skip onnxruntime's symbolic shape
inference in the pre-processing step and keep ONNX's own: it has no rule for `ReduceL2`, whose
axes became an input at opset 18, loses the visual embedding's L2-norm shape and stops with a
TypeError in its `Expand` rule (seen with onnxruntime 1.32). Every dimension but the batch is static here,
which ONNX's shape inference resolves alone.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from avemo_edge.checkpoint import Checkpoint
from avemo_edge.manifest import GRAPHS, write_manifest

from .common import FileRecord, Log, derived_manifest, save_onnx
from .formats import BY_NAME
from .stream import Calibration, calibration_set

QUANTIZED = ("visual_encoder", "audio_step")
# onnx-int8-face quantizes the visual encoder alone: int8 cost the shipped file's voice 2.1 points
# of RAVDESS test accuracy and its face 0.2 (docs/RESULTS.md), and the face is most of the work.
QUANTIZED_BY_FORMAT = {"onnx-int8": QUANTIZED, "onnx-int8-face": ("visual_encoder",)}
OP_TYPES = ["Conv", "Gemm", "MatMul"]
BATCH = 16  # calibration batch


def _feeds(graph: str, cal: Calibration) -> list[dict[str, np.ndarray]]:
    out = []
    if graph == "visual_encoder":
        for i in range(0, len(cal.faces), BATCH):
            out.append({"face": cal.faces[i : i + BATCH]})
    else:
        for i in range(0, len(cal.mel), BATCH):
            h = np.ascontiguousarray(cal.h[i : i + BATCH].transpose(1, 0, 2))  # (L, B, H)
            c = np.ascontiguousarray(cal.c[i : i + BATCH].transpose(1, 0, 2))
            out.append({"mel": cal.mel[i : i + BATCH], "h_in": h, "c_in": c})
    return out


def quantize_graph(src: Path, dst: Path, feeds: list[dict[str, np.ndarray]], symbolic_shapes: bool = True) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        # shape inference and graph clean-up, as onnxruntime advises (symbolic: see the module docstring)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=not symbolic_shapes)
        quantize_static(
            str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=OP_TYPES,
            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )  # fmt: skip


def export_int8(
    ckpt: Checkpoint,
    source_dir: Path,
    source: dict[str, Any],
    out_dir: Path,
    log: Log,
    data_dir: Path | None = None,
    n_faces: int = 128,
    n_slices: int = 256,
    format_name: str = "onnx-int8",
) -> tuple[dict[str, Any], list[FileRecord]]:
    """`format_name`: onnx-int8 (visual encoder and audio step quantized) or onnx-int8-face (the visual encoder)."""
    import onnx

    quantized = QUANTIZED_BY_FORMAT[format_name]
    fmt = BY_NAME[format_name]
    t0 = time.perf_counter()
    cal = calibration_set(ckpt.build("cpu"), n_faces, n_slices, data_dir)
    log(f"{fmt.name:14s} calibration: {cal.source} ({time.perf_counter() - t0:.1f} s)")
    manifest = derived_manifest(
        source, fmt,
        int8={
            "method": "onnxruntime static QDQ, MinMax", "activations": "uint8", "weights": "int8 per channel",
            "ops": OP_TYPES, "quantized_graphs": list(quantized), "calibration": cal.source,
        },
    )  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for graph in GRAPHS:
        t0 = time.perf_counter()
        src = source_dir / source["graphs"][graph]["file"]
        dst = out_dir / f"{graph}.onnx"
        if graph in quantized:
            quantize_graph(src, dst, _feeds(graph, cal), symbolic_shapes=source["opset"] < 18)
            rec = save_onnx(onnx.load(str(dst)), dst, manifest, graph, fmt.name, t0)
        else:  # the fp32 graph, with this format's metadata
            rec = save_onnx(onnx.load(str(src)), dst, manifest, graph, fmt.name, t0)
        log(rec.line())
        records.append(rec)
    write_manifest(out_dir, manifest)
    return manifest, records
