"""Stage 4: parity of each exported format against torch fp32 on one real stream.

Every backend runs the same stream (`export.stream.parity_stream`: at least 50 steps of real
speech and face crops, some steps without a face, some without audio, one with neither) through
the unchanged `StreamingRecognizer`, carrying the LSTM state from step to step, exactly as on a
device. Per step the unsmoothed class probabilities are compared with the torch backend's:

    max |dp|     largest difference over all steps and classes (the bound of the format table)
    argmax       fraction of steps whose most likely class agrees with torch
    max |dgate|  largest difference of the alpha / beta gates

A format passes when it meets its bounds in `export.formats.FORMATS`; a format without bounds
(int8) is reported, not judged. A backend that cannot start or run fails its own row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avemo_edge.backends import Backend, TorchBackend, create_backend
from avemo_edge.checkpoint import Checkpoint
from avemo_edge.recognizer import StreamingRecognizer

from .common import Log
from .formats import ExportFormat
from .stream import Stream, parity_stream

MIN_STEPS = 50


@dataclass
class ParityRow:
    export_format: str
    backend: str
    steps: int
    bound: str
    status: str  # "pass", "FAIL", "reported", or "error: <why>"
    max_abs: float = float("nan")
    mean_abs: float = float("nan")
    argmax: float = float("nan")
    gate_max_abs: float = float("nan")

    @property
    def failed(self) -> bool:
        return self.status not in ("pass", "reported")


@dataclass
class ParityReport:
    stream: str
    reference: str
    rows: list[ParityRow]

    @property
    def ok(self) -> bool:
        return not any(r.failed for r in self.rows)

    def lines(self) -> list[str]:
        """The parity table as fixed-width text (what the CLI prints and docs/EXPORT.md quotes)."""
        head = f"{'format':14s} {'max |dp|':>9s} {'mean |dp|':>9s} {'argmax':>7s} {'max |dgate|':>11s}  "
        head += f"{'bound':30s} result"
        out = [f"parity against {self.reference}", f"stream: {self.stream}", head]
        for r in self.rows:
            out.append(
                f"{r.export_format:14s} {r.max_abs:9.2e} {r.mean_abs:9.2e} {r.argmax:7.1%} {r.gate_max_abs:11.2e}  "
                f"{r.bound:30s} {r.status}"
            )
        out += [f"  {r.export_format}: {r.backend}" for r in self.rows]
        return out


@dataclass
class Trace:
    probs: np.ndarray  # (T, classes), unsmoothed
    gates: np.ndarray  # (T, 2): alpha, beta


def run_stream(backend: Backend, stream: Stream) -> Trace:
    rec = StreamingRecognizer(backend)
    results = [rec.step(f, a, t=0.1 * i) for i, (f, a) in enumerate(zip(stream.faces, stream.audio, strict=True))]
    return Trace(np.stack([r.raw for r in results]), np.array([(r.alpha, r.beta) for r in results]))


def compare(fmt: ExportFormat, backend: str, ref: Trace, got: Trace) -> ParityRow:
    diff = np.abs(got.probs - ref.probs)
    agree = float(np.mean(got.probs.argmax(1) == ref.probs.argmax(1)))
    row = ParityRow(
        fmt.name, backend, len(ref.probs), fmt.bound(), "pass",
        float(diff.max()), float(diff.mean()), agree, float(np.abs(got.gates - ref.gates).max()),
    )  # fmt: skip
    if fmt.max_abs is None and fmt.min_argmax is None:
        row.status = "reported"
    elif (fmt.max_abs is not None and row.max_abs > fmt.max_abs) or (
        fmt.min_argmax is not None and row.argmax < fmt.min_argmax
    ):
        row.status = "FAIL"
    return row


def verify_exports(
    ckpt: Checkpoint,
    out_dir: Path,
    formats: list[ExportFormat],
    log: Log,
    steps: int = 60,
    data_dir: Path | None = None,
    stream: Stream | None = None,
    threads: int | None = None,
) -> ParityReport:
    """Run each format's backend from `out_dir/<format>/` and torch fp32 on one stream; compare.

    `threads` caps onnxruntime's threads (torch's are set by the caller, `torch.set_num_threads`).
    """
    from avemo_edge.errors import AvemoError

    if steps < MIN_STEPS:
        raise AvemoError(f"the parity stream needs at least {MIN_STEPS} steps, not {steps}")
    stream = stream if stream is not None else parity_stream(ckpt.dims, steps, data_dir)
    ref = run_stream(TorchBackend(ckpt), stream)
    rows = []
    for fmt in formats:
        name = fmt.backend
        try:
            options = {"threads": threads} if threads and fmt.backend == "onnxruntime" else {}
            backend = create_backend(fmt.backend, out_dir / fmt.name, **options)
            name = backend.describe() if hasattr(backend, "describe") else fmt.backend
            rows.append(compare(fmt, name, ref, run_stream(backend, stream)))
        except Exception as e:  # noqa: BLE001 - any failure of one backend is that row's result, not the run's
            rows.append(ParityRow(fmt.name, name, len(stream), fmt.bound(), f"error: {e}"))
    return ParityReport(stream.summary(), "torch fp32 on the CPU (TorchBackend)", rows)
