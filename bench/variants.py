"""The rows of a benchmark: one per backend x precision that this install has, and the model they run.

Rows come from `avemo_edge.backends.BACKENDS` at run time, so a backend added there gets rows
without a change here: `torch` gives fp32 and bf16 on the CPU (and fp32 and fp16 on CUDA when
torch sees a GPU); every other backend gives one row per export format that names it in
`export.formats.FORMATS` (the export table), each read from `EXPORTED/<format>/`. A row whose
backend cannot be built (a missing package, no exported model, no GPU) is kept, with its status
cell saying why, and the run goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from avemo_edge.backends import BACKENDS, Backend, create_backend
from avemo_edge.errors import AvemoError

from .models import ModelSource
from .timing import cuda_sync, no_sync

# The export table's (format folder, backend, precision) until `export.formats` is importable here.
FALLBACK_FORMATS = (
    ("onnx", "onnxruntime", "fp32"),
    ("onnx-fp16", "onnxruntime", "fp16"),
    ("onnx-int8", "onnxruntime", "int8"),
    ("tensorrt", "tensorrt", "fp32"),
    ("tensorrt-fp16", "tensorrt", "fp16"),
)


class Skipped(AvemoError):
    """A row that cannot run here for a reason that is not a fault (no exported model given, no GPU)."""


@dataclass(frozen=True)
class Variant:
    key: str  # the row's name, also what --only selects
    backend: str  # a key of BACKENDS
    precision: str
    device: str = "cpu"  # torch rows: the torch device; graph rows: 'auto' (the backend picks)
    folder: str | None = None  # graph rows: the export format's folder under --exported


def export_formats() -> list[tuple[str, str, str]]:
    """(folder, backend, precision) of every export format, from the export table when it is importable."""
    try:
        from export.formats import FORMATS
    except ImportError:
        return list(FALLBACK_FORMATS)
    return [(f.name, f.backend, f.precision) for f in FORMATS]


def all_variants(cuda: bool | None = None) -> list[Variant]:
    """Every row this install has, in BACKENDS order."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    formats = export_formats()
    out: list[Variant] = []
    for name in BACKENDS:
        if name == "torch":
            out += [Variant("torch-fp32", "torch", "fp32"), Variant("torch-bf16", "torch", "bf16")]
            if cuda:
                out += [
                    Variant("torch-cuda-fp32", "torch", "fp32", "cuda"),
                    Variant("torch-cuda-fp16", "torch", "fp16", "cuda"),
                ]
            continue
        mine = [(folder, prec) for folder, backend, prec in formats if backend == name]
        if not mine:  # a backend the export table does not know: one row that says so
            out.append(Variant(name, name, "?", "auto"))
        seen: set[str] = set()
        for folder, prec in mine:
            key = f"{name}-{prec}" if f"{name}-{prec}" not in seen else f"{name}-{folder}"
            seen.add(key)
            out.append(Variant(key, name, prec, "auto", folder))
    return out


def select(variants: list[Variant], only: str | None) -> list[Variant]:
    """Keep the rows named in a comma-separated --only list (all when None)."""
    if not only:
        return variants
    wanted = [k.strip() for k in only.split(",") if k.strip()]
    keys = [v.key for v in variants]
    unknown = [k for k in wanted if k not in keys]
    if unknown:
        raise AvemoError(f"--only names unknown row(s) {', '.join(unknown)}; the rows here are {', '.join(keys)}")
    return [v for v in variants if v.key in wanted]


@dataclass
class Built:
    """A row's backend, or why there is none."""

    variant: Variant
    status: str  # 'ok', 'skipped' or 'error'
    detail: str = ""
    backend: Backend | None = None
    describe: str = ""
    model_mb: float | None = None
    device: str = "cpu"  # 'cpu' or 'cuda': where the network runs
    sync: Callable[[], None] = no_sync
    copies: str = "none: everything runs on the CPU"


def _folder_mb(folder: Path) -> float:
    return round(sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) / 1e6, 2)


def error_sentence(e: Exception) -> str:
    if isinstance(e, AvemoError):
        return str(e)
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {first[:300]}" if first else type(e).__name__


def build(
    v: Variant, model: ModelSource, exported: Path | None, threads: int | None, ort_provider: str = "auto"
) -> Built:
    """Construct the row's backend (its warm-up runs in the constructor); failures become the status."""
    try:
        if v.backend == "torch":
            backend = create_backend("torch", str(model.path), device=v.device, precision=v.precision)
            b = Built(
                v,
                "ok",
                backend=backend,
                describe=f"torch {v.precision} on {v.device}",
                device=v.device,
                model_mb=round(model.path.stat().st_size / 1e6, 2),
            )
            if v.device.startswith("cuda"):
                b.sync = cuda_sync(backend.device)
                b.copies = (
                    "whole step: included (numpy in, host-to-device, device-to-host out); "
                    "single graphs: excluded (inputs already on the GPU)"
                )
            return b
        if v.folder is None:
            raise Skipped(f"the export table has no format for backend {v.backend!r}, so there is nothing to load")
        if exported is None:
            raise Skipped(
                f"no exported model given: pass --exported DIR with DIR/{v.folder}/ from "
                f"`avemo-edge export {model.path} --out DIR --formats {v.folder}`"
            )
        folder = exported / v.folder
        if not folder.is_dir():
            raise Skipped(
                f"{folder} does not exist: make it with "
                f"`avemo-edge export {model.path} --out {exported} --formats {v.folder}`"
            )
        options: dict[str, Any] = {}
        if v.backend == "onnxruntime":
            options = {"provider": ort_provider, **({"threads": threads} if threads else {})}
        backend = create_backend(v.backend, str(folder), **options)
        what = backend.describe() if hasattr(backend, "describe") else v.backend
        on_gpu = v.backend == "tensorrt" or any(p in what for p in ("CUDA", "Tensorrt", "TensorRT"))
        b = Built(
            v, "ok", backend=backend, describe=what, model_mb=_folder_mb(folder), device="cuda" if on_gpu else "cpu"
        )
        if on_gpu:  # both backends return host arrays, so each call has finished when it returns
            b.copies = "included in every timing: numpy in, host-to-device and device-to-host copies, numpy out"
        source = getattr(getattr(backend, "exported", None), "manifest", {}).get("source_checkpoint", {})
        if source.get("sha256") and source["sha256"] != model.checkpoint.sha256:
            b.detail = (
                f"{folder} was exported from checkpoint sha256 {source['sha256'][:12]}, not from --model "
                f"{model.path} ({model.checkpoint.sha256[:12]}): this row runs another model"
            )
        return b
    except Skipped as e:
        return Built(v, "skipped", str(e))
    except Exception as e:  # any failure of one row (missing package, bad file, driver) is that row's status
        return Built(v, "error", error_sentence(e))
