"""What every export stage shares: the manifest's common part, saving a graph with its metadata,
and the one line printed per written file."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from avemo_edge import __version__
from avemo_edge.checkpoint import Checkpoint
from avemo_edge.manifest import FORMAT, FORMAT_VERSION, MASK_ENCODING, METADATA_KEY, sha256_file

from .formats import ExportFormat

Log = Callable[[str], None]

STATE_NOTE = (
    "audio_step is one step of the unidirectional LSTM: feed h_out, c_out back as h_in, c_in at the next "
    "step (zeros at the start of a stream); for a step without audio skip audio_step and keep h, c"
)


@dataclass
class FileRecord:
    export_format: str
    path: Path
    seconds: float
    sha256: str
    bytes: int

    def line(self) -> str:
        return (
            f"{self.export_format:14s} {self.path.name:22s} {self.bytes / 1e6:8.2f} MB {self.seconds:7.1f} s   "
            f"{self.path}"
        )


def base_manifest(ckpt: Checkpoint, fmt: ExportFormat, opset: int, versions: dict[str, str]) -> dict[str, Any]:
    """The manifest of a format made from the checkpoint, without its graph entries yet."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "export_format": fmt.name,
        "runtime": fmt.backend,
        "precision": fmt.precision,
        "io_dtype": "float32",
        "opset": opset,
        "avemo_edge_version": __version__,
        "versions": versions,
        "source_checkpoint": {"file": ckpt.path.name if ckpt.path else None, "sha256": ckpt.sha256},
        "dims": asdict(ckpt.dims),
        "classes": list(ckpt.classes),
        "preprocessing": ckpt.preprocessing,
        "mask_encoding": MASK_ENCODING,
        "state": STATE_NOTE,
        "graphs": {},
    }


def derived_manifest(source: dict[str, Any], fmt: ExportFormat, **extra: Any) -> dict[str, Any]:
    """The manifest of a format made from another export (fp16, int8, engines from the fp32 ONNX)."""
    m = {k: v for k, v in source.items() if k != "graphs"}
    m.update(export_format=fmt.name, runtime=fmt.backend, precision=fmt.precision)
    m["made_from"] = {
        "export_format": source["export_format"],
        "sha256": {g: e["sha256"] for g, e in source["graphs"].items()},
    }
    m.update(extra)
    m["graphs"] = {}
    return m


def describe_io(model: Any) -> dict[str, list[dict[str, Any]]]:
    """Names, shapes ('batch' for the dynamic dimension) and dtypes of an ONNX graph's inputs and outputs."""
    import onnx

    def one(v: Any) -> dict[str, Any]:
        t = v.type.tensor_type
        shape = [d.dim_param if d.dim_param else int(d.dim_value) for d in t.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
        return {"name": v.name, "shape": shape, "dtype": dtype}

    inits = {i.name for i in model.graph.initializer}
    return {
        "inputs": [one(v) for v in model.graph.input if v.name not in inits],
        "outputs": [one(v) for v in model.graph.output],
    }


def save_onnx(
    model: Any, path: Path, manifest: dict[str, Any], graph: str, export_format: str, started: float
) -> FileRecord:
    """Embed the manifest (less file hashes) in the graph's metadata, check it, save it, record it."""
    import onnx

    io = describe_io(model)
    meta = {k: v for k, v in manifest.items() if k != "graphs"}
    meta.update(graph=graph, **io)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(meta, sort_keys=True)})
    model.doc_string = f"avemo-edge {graph} ({export_format}); see the {METADATA_KEY} metadata"
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return add_file(manifest, graph, path, io, export_format, started)


def add_file(
    manifest: dict[str, Any], graph: str, path: Path, io: dict[str, Any], export_format: str, started: float
) -> FileRecord:
    rec = FileRecord(export_format, path, time.perf_counter() - started, sha256_file(path), path.stat().st_size)
    manifest["graphs"][graph] = {"file": path.name, "sha256": rec.sha256, "bytes": rec.bytes, **io}
    return rec


def log_io(log: Log, graph: str, io: dict[str, list[dict[str, Any]]]) -> None:
    """One line per input and output: name, dtype, shape (TensorRT samples log every one)."""
    for kind in ("inputs", "outputs"):
        for t in io[kind]:
            shape = "(" + ", ".join(str(d) for d in t["shape"]) + ")"
            log(f"    {graph:15s} {kind[:-1]:6s} {t['name']:11s} {t['dtype']:8s} {shape}")
