"""`avemo-edge bench`: run one mode over every row and collect the report (see docs/BENCHMARKS.md).

model     each graph alone and one whole step, batch 1 and batched, and the compute bound
pipeline  end to end on a media file, for N concurrent streams, and for N faces in one stream
soak      the pipeline for a long time (--duration 30m), in windows, for drift
"""

from __future__ import annotations

import datetime as dt
import gc
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from avemo_edge.errors import AvemoError

from . import PAPER_FPS, environment
from .flops import FLOP_METHOD, PRECISION_DTYPES, bound_ratio, count_flops, matmul_peak
from .graphs import measure_row
from .models import ModelSource, resolve_model
from .pipeline import resolve_input, run_pipeline
from .timing import OUTLIER_POLICY
from .variants import Built, all_variants, build, error_sentence, select

MODES = ("model", "pipeline", "soak")
SCHEMA = "avemo-edge-bench/1"


@dataclass
class BenchOptions:
    mode: str
    model: str = "default"  # a checkpoint path, 'default', 'paper' or 'small'
    exported: Path | None = None  # a folder with one sub-folder per export format
    only: str | None = None  # comma-separated row keys
    seconds: float = 5.0  # model: per measurement; pipeline: per row and stream count; soak: the duration
    warmup: int = 10  # untimed calls (model) or steps (pipeline) first
    batches: list[int] = field(default_factory=lambda: [1, 8])
    streams: list[int] = field(default_factory=lambda: [1])
    faces: list[int] = field(default_factory=lambda: [1])  # pipeline: faces per frame (tiled copies), one stream
    pool_streams: bool = False  # pipeline: each stream count above 1 also with the streams' steps batched together
    input: str = "sample"
    window: float = 60.0  # soak: seconds per window
    threads: int | None = None  # torch intra-op (and onnxruntime) threads; None keeps the defaults
    target_fps: float = PAPER_FPS  # a second target column when it differs from the paper's 22
    matmul_size: int | None = None
    matmul_seconds: float = 1.0
    ort_provider: str = "auto"

    def check(self) -> None:
        if self.mode not in MODES:
            raise AvemoError(f"unknown bench mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.seconds <= 0 or self.warmup < 0:
            raise AvemoError("the run's seconds must be positive and its warm-up at least 0")
        if self.faces != [1] and self.mode != "pipeline":
            raise AvemoError("--faces is a pipeline sweep; use it with 'avemo-edge bench pipeline'")
        if self.threads is not None and self.threads < 1:
            raise AvemoError(f"--threads must be at least 1, not {self.threads}")
        if self.mode == "soak" and self.window * 2 > self.seconds:
            raise AvemoError(
                f"a soak of {self.seconds:g} s with {self.window:g} s windows has fewer than two windows to compare; "
                "lengthen --duration or shorten --window"
            )


def _row_head(b: Built) -> dict[str, Any]:
    v = b.variant
    return {
        "key": v.key,
        "backend": v.backend,
        "precision": v.precision,
        "device": b.device if b.backend else v.device,
        "describe": b.describe,
        "status": b.status,
        "detail": b.detail,
        "model_mb": b.model_mb,
        "copies": b.copies if b.backend else None,
    }


def _no_peak(row: dict[str, Any]) -> str | None:
    """Why a row's visual encoder has no compute bound, or None when it has one."""
    if row["precision"] not in PRECISION_DTYPES:
        return f"no {row['precision']} matrix-product peak is measured (torch has no general {row['precision']} matmul)"
    if row["backend"] != "torch" and row["device"] == "cpu" and row["precision"] == "fp16":
        return (
            "onnxruntime's CPU provider runs an fp16 graph in fp32 through inserted casts, so no fp16 peak bounds it; "
            "compare the fp32 row"
        )
    return None


def _limit(model: ModelSource, rows: list[dict[str, Any]], opts: BenchOptions, log: Callable[[str], None]) -> dict:
    """The visual encoder's measured time next to FLOPs / matmul peak, per row that timed it."""
    d = model.checkpoint.dims
    flops = count_flops(model.checkpoint.build().visual, torch.zeros(1, d.face_channels, d.face_size, d.face_size))
    peaks: dict[tuple[str, str], dict[str, Any]] = {}  # (device, precision) -> one measurement for every row
    out = []
    for r in rows:
        cell = r.get("stages", {}).get("visual_encoder", {})
        if r["status"] != "ok" or cell.get("status") != "ok":
            continue
        entry: dict[str, Any] = {"key": r["key"], "precision": r["precision"], "device": r["device"]}
        why = _no_peak(r)
        if why:
            out.append({**entry, "status": "n/a", "detail": why})
            continue
        key = (r["device"], r["precision"])
        if key not in peaks:
            log(f"matmul peak: {r['precision']} on {r['device']}")
            try:
                peaks[key] = matmul_peak(r["precision"], r["device"], opts.matmul_size, opts.matmul_seconds)
            except Exception as e:
                peaks[key] = {"error": error_sentence(e)}
        peak = peaks[key]
        if "error" in peak:
            out.append({**entry, "status": "error", "detail": f"the matmul peak failed: {peak['error']}"})
            continue
        gflops = peak["gflops"]
        entry.update(status="ok", peak_gflops=gflops, batch1=bound_ratio(flops, gflops, cell["latency_ms"]["p50"]))
        sweep = [s for s in r.get("batch_sweep", []) if s.get("status") == "ok"]
        if sweep:
            big = max(sweep, key=lambda s: s["batch"])
            per_face_ms = 1000.0 / big["visual_encoder"]["per_second"]
            entry["batched"] = {"batch": big["batch"], **bound_ratio(flops, gflops, per_face_ms)}
        out.append(entry)
    return {
        "visual_flops": flops,
        "gflops_per_face": round(flops / 1e9, 4),
        "flop_method": FLOP_METHOD,
        "measured": "p50 of the visual encoder alone at batch 1 (and the mean per face at the largest batch)",
        "peaks": [p for p in peaks.values() if "error" not in p],
        "rows": out,
    }


def run_bench(opts: BenchOptions, log: Callable[[str], None] = lambda _: None) -> dict:
    """Run `opts.mode` over every selected row; returns the report (JSON-ready but for '_'-prefixed keys)."""
    opts.check()
    old_threads = torch.get_num_threads()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    try:
        with tempfile.TemporaryDirectory(prefix="avemo-bench-") as workdir:  # random-weight checkpoints
            return _run(opts, log, Path(workdir))
    finally:
        torch.set_num_threads(old_threads)


def _run(opts: BenchOptions, log: Callable[[str], None], workdir: Path) -> dict:
    env = environment.describe()
    warnings = [w for w in [environment.load_warning(env)] if w]
    model = resolve_model(opts.model, workdir)
    uri = resolve_input(opts.input) if opts.mode != "model" else None
    variants = select(all_variants(), opts.only)
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "mode": opts.mode,
        "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "environment": env,
        "warnings": warnings,
        "model": model.describe(),
        "input": uri,
        "settings": {
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()},
            "clock": "time.perf_counter",
            "outliers": OUTLIER_POLICY,
            "gpu_sync": "torch.cuda.synchronize() before starting and before stopping the clock on CUDA rows",
        },
        "rows": [],
    }
    for v in variants:
        log(f"{v.key}: building")
        b = build(v, model, opts.exported, opts.threads, opts.ort_provider)
        row = _row_head(b)
        if b.backend is not None:
            log(f"{v.key}: {b.describe}, measuring")
            row.update(_measure(b, uri, opts))
            if row["status"] == "ok":
                fps = row.get("fps_per_stream", row.get("fps"))  # pipeline: per stream; model: batch-1 steps
                row.update(meets_paper_fps=fps >= PAPER_FPS, meets_target_fps=fps >= opts.target_fps)
            row["memory_after"] = environment.memory_now()
        log(f"{v.key}: {row['status']}{(' - ' + row['detail']) if row.get('detail') else ''}")
        report["rows"].append(row)
        del b
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if opts.mode == "model":
        report["limit"] = _limit(model, report["rows"], opts, log)
    return report


def _measure(b: Built, uri: str | None, opts: BenchOptions) -> dict[str, Any]:
    if opts.mode == "model":
        return measure_row(b, opts.batches, opts.warmup, opts.seconds)
    if opts.mode == "soak":
        res = run_pipeline(b, uri, opts.seconds, opts.warmup, opts.streams[0], opts.window)
        return _as_row(res)
    sweep = []
    for n in opts.streams:
        sweep.append(run_pipeline(b, uri, opts.seconds, opts.warmup, n))
        if opts.pool_streams and n > 1:
            sweep.append(run_pipeline(b, uri, opts.seconds, opts.warmup, n, pool=True))
    main = next((s for s in sweep if s["streams"] == 1), sweep[0])
    out = _as_row(main)
    if len(sweep) > 1 or opts.streams != [1]:
        out["stream_sweep"] = [{k: v for k, v in s.items() if k not in ("stages", "_samples_ms")} for s in sweep]
    if opts.faces != [1]:  # one stream with n faces per frame; the 1-stream run above is the 1-face point
        points = []
        for n in opts.faces:
            reuse = n == 1 and main["streams"] == 1
            points.append(_face_point(main if reuse else run_pipeline(b, uri, opts.seconds, opts.warmup, 1, faces=n)))
        out["face_sweep"] = points
    return out


def _face_point(res: dict[str, Any]) -> dict[str, Any]:
    """One point of the faces sweep: the step's cost and the face and inference stages, per step and per face."""
    if res["status"] != "ok":
        return {"faces": res["faces"], "status": "error", "detail": res["detail"]}
    stages = res["stages"]
    tracked = res["faces_tracked"]
    mean = {s: stages.get(s, {}).get("mean") for s in ("face", "inference")}
    return {
        "faces": res["faces"],
        "status": "ok",
        "faces_tracked": tracked,
        "fps": res["fps"],
        "latency_ms": res["latency_ms"],
        "face_ms": mean["face"],
        "inference_ms": mean["inference"],
        "inference_ms_per_face": round(mean["inference"] / tracked, 3) if tracked and mean["inference"] else None,
        "realtime": res["realtime"],
    }


def _as_row(res: dict[str, Any]) -> dict[str, Any]:
    """A pipeline result as the row's cells; a failed run turns the row's status into an error."""
    if res["status"] != "ok":
        return {"status": "error", "detail": f"the pipeline failed: {res['detail']}"}
    return {k: v for k, v in res.items() if k != "detail"}  # keep the row's own note from building it
