"""Exported models describe themselves: `manifest.json` beside the graphs, read and checked here.

An export folder holds the three graphs of one format (ONNX files or TensorRT engines) and a
`manifest.json` with everything a backend needs without the checkpoint: tensor names, shapes and
dtypes, the model dimensions, preprocessing constants, class names, the source checkpoint's
sha256 and each file's sha256. Each ONNX file also carries the manifest (less the file hashes,
which a file cannot hold about itself) in its metadata under `METADATA_KEY`.

The tensor names below are the contract between `export/` (which writes them) and the backends
(which feed them); both import them from here.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checkpoint import check_header, dims_from_description
from .errors import ExportedModelError
from .model import ModelDims

MANIFEST_NAME = "manifest.json"
FORMAT = "avemo-edge-export"
FORMAT_VERSION = 1
METADATA_KEY = "avemo_edge.manifest"  # ONNX metadata_props key holding the manifest (without file hashes)
# Masks are float32 0.0 / 1.0 (one per batch row), not bool: the network multiplies by them
# anyway, and float inputs keep TensorRT bindings and the fp16 conversion simple.
MASK_ENCODING = "float32, 1.0 = present, 0.0 = missing; the graph thresholds at 0.5"


@dataclass(frozen=True)
class GraphIO:
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


# The three graphs, in the order a step runs them. Shapes (B = batch, H = hidden, R = state rows:
# the LSTM layers, plus 2 when the audio branch pools statistics, `ModelDims.state_shape`):
#   visual_encoder  face (B, C, S, S) in [0, 1]                    -> visual_emb (B, 128), unit length
#   audio_step      mel (B, 64, N), h_in, c_in (R, B, H)           -> audio_emb (B, 128), h_out, c_out (R, B, H)
#   fusion_head     visual_emb, audio_emb (B, 128), masks (B,)     -> logits (B, 7), alpha (B,), beta (B,)
GRAPHS: dict[str, GraphIO] = {
    "visual_encoder": GraphIO(("face",), ("visual_emb",)),
    "audio_step": GraphIO(("mel", "h_in", "c_in"), ("audio_emb", "h_out", "c_out")),
    "fusion_head": GraphIO(("visual_emb", "audio_emb", "face_mask", "audio_mask"), ("logits", "alpha", "beta")),
}


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(directory: str | Path, manifest: dict[str, Any]) -> Path:
    """Write `manifest.json` atomically (a crash never leaves half a manifest under the real name)."""
    path = Path(directory) / MANIFEST_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


@dataclass
class ExportedModel:
    """A checked export folder: every file present and matching the sha256 its manifest records."""

    directory: Path
    manifest: dict[str, Any]
    dims: ModelDims
    classes: tuple[str, ...]

    @property
    def export_format(self) -> str:
        return str(self.manifest["export_format"])

    def path(self, graph: str) -> Path:
        return self.directory / self.manifest["graphs"][graph]["file"]

    def tensors(self, graph: str, kind: str) -> list[dict[str, Any]]:
        """`kind` 'inputs' or 'outputs': [{'name', 'shape', 'dtype'}, ...] as the manifest records them."""
        return self.manifest["graphs"][graph][kind]


GRAPH_SUFFIXES = (".onnx", ".engine", ".plan", ".trt")


def _resolve(path: Path, runtime: str = "onnxruntime") -> Path:
    """A folder, its manifest.json, or one of its graph files -> the folder."""
    if path.is_file():
        if path.name == MANIFEST_NAME or path.suffix.lower() in GRAPH_SUFFIXES:
            return path.parent
        what = "a torch checkpoint" if path.suffix.lower() in (".pt", ".pth") else "a file"
        raise ExportedModelError(
            f"{path} is {what}, but the {runtime} backend runs the folder that `avemo-edge export` writes: "
            f"export it first (avemo-edge export {path} --out DIR) and pass DIR/<format>, or use backend torch"
        )
    if not path.is_dir():
        raise ExportedModelError(
            f"exported model {path} does not exist; pass the folder that `avemo-edge export` wrote"
        )
    if (path / MANIFEST_NAME).is_file():
        return path
    inner = sorted(p.parent.name for p in path.glob(f"*/{MANIFEST_NAME}"))
    if inner:
        choices = ", ".join(str(path / name) for name in inner)
        raise ExportedModelError(f"{path} holds several exports; pass one of them: {choices}")
    raise ExportedModelError(f"{path} has no {MANIFEST_NAME}; pass a folder that `avemo-edge export` wrote")


def load_export(path: str | Path, runtime: str, check_files: bool = True) -> ExportedModel:
    """Read and check an export folder for `runtime` ('onnxruntime' or 'tensorrt').

    Every problem is an ExportedModelError with one sentence: no manifest, a manifest of another
    kind or version, preprocessing this runtime does not compute, a missing file, or a file whose
    sha256 differs from the manifest's (altered, truncated, or from another export).
    """
    directory = _resolve(Path(path), runtime)
    mpath = directory / MANIFEST_NAME
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportedModelError(f"{mpath} is not readable JSON ({e}); export the model again") from e
    check_header(manifest, FORMAT, FORMAT_VERSION, str(mpath), "an avemo-edge export manifest", ExportedModelError)
    if manifest.get("runtime") != runtime:
        raise ExportedModelError(
            f"{directory} is a {manifest.get('export_format')!r} export for the {manifest.get('runtime')} backend, "
            f"not for {runtime}; pick the backend that matches the folder"
        )
    audio = manifest.get("preprocessing", {}).get("audio", {})
    dims = dims_from_description(str(mpath), audio, manifest.get("dims") or {}, ExportedModelError)
    graphs = manifest.get("graphs", {})
    for name, io in GRAPHS.items():
        entry = graphs.get(name)
        if not entry:
            raise ExportedModelError(f"{mpath} lists no {name} graph; export the model again")
        got_in = [t["name"] for t in entry["inputs"]]
        got_out = [t["name"] for t in entry["outputs"]]
        if got_in != list(io.inputs) or got_out != list(io.outputs):
            raise ExportedModelError(
                f"{mpath} gives {name} inputs {got_in} and outputs {got_out}, "
                f"but this runtime feeds {list(io.inputs)} and reads {list(io.outputs)}"
            )
        if check_files:
            file = directory / entry["file"]
            if not file.is_file():
                raise ExportedModelError(f"{file} is missing; copy the whole export folder or export again")
            digest = sha256_file(file)
            if digest != entry["sha256"]:
                raise ExportedModelError(
                    f"{file} has sha256 {digest[:12]}… but {MANIFEST_NAME} records {entry['sha256'][:12]}…: "
                    "the file was altered or comes from another export, so it is refused; export it again"
                )
    return ExportedModel(directory, manifest, dims, tuple(manifest["classes"]))
