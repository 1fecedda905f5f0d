"""How every number in the benchmark is timed, in one place.

- Intervals come from `time.perf_counter()` (monotonic, the highest-resolution clock), never
  from the wall clock.
- Warm-up first: the first `warmup` calls are run and thrown away (allocator, caches, lazy
  kernel selection, oneDNN primitive creation, cuDNN autotuning).
- On a GPU, `torch.cuda.synchronize()` runs before the clock starts and before it stops, so a
  sample is the time of the work, not of the kernel launches.
- Outliers are never dropped: the percentiles are over all timed samples. `over_2x_median`
  counts the samples slower than twice the median and `max` shows the worst, so that
  interference (another process, a frequency drop, a GC pause) is visible instead of hidden.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from avemo_edge.errors import AvemoError

OUTLIER_POLICY = (
    "no sample is dropped: percentiles are over every timed call after the warm-up; "
    "'over_2x_median' counts samples slower than twice the median and 'max' is the worst one"
)


def no_sync() -> None:
    """The synchroniser for work that finishes before its call returns (CPU)."""


def cuda_sync(device: object) -> Callable[[], None]:
    """A synchroniser for one CUDA device: waits until every queued kernel has finished."""
    import torch

    return lambda: torch.cuda.synchronize(device)


@dataclass
class Stats:
    """Summary of n timed samples, in milliseconds."""

    n: int
    mean: float
    p50: float
    p95: float
    p99: float
    min: float
    max: float
    over_2x_median: int

    @classmethod
    def of(cls, samples_ms: list[float] | np.ndarray) -> Stats:
        x = np.asarray(samples_ms, dtype=np.float64)
        if x.size == 0:
            raise ValueError("no timed samples to summarise")
        p50, p95, p99 = np.percentile(x, [50, 95, 99])
        return cls(
            n=int(x.size),
            mean=float(x.mean()),
            p50=float(p50),
            p95=float(p95),
            p99=float(p99),
            min=float(x.min()),
            max=float(x.max()),
            over_2x_median=int((x > 2 * p50).sum()),
        )

    def as_dict(self) -> dict[str, float | int]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass
class Timed:
    """Timed calls: per-call samples (ms) and the throughput they imply."""

    samples_ms: list[float]
    items_per_call: int = 1

    @property
    def stats(self) -> Stats:
        return Stats.of(self.samples_ms)

    @property
    def per_second(self) -> float:
        """Items per second over the timed calls: n * items / total time (not 1000 / p50)."""
        total = sum(self.samples_ms) / 1000.0
        return len(self.samples_ms) * self.items_per_call / total if total > 0 else float("inf")


def time_calls(
    fn: Callable[[], object],
    *,
    warmup: int,
    seconds: float,
    min_calls: int = 5,
    max_calls: int | None = None,
    sync: Callable[[], None] = no_sync,
    items_per_call: int = 1,
) -> Timed:
    """Call `fn` `warmup` times untimed, then time calls until `seconds` have passed (at least `min_calls`)."""
    for _ in range(warmup):
        fn()
    sync()
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(samples) < min_calls or time.perf_counter() < deadline:
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        samples.append((time.perf_counter() - t0) * 1000.0)
        if max_calls is not None and len(samples) >= max_calls:
            break
    return Timed(samples, items_per_call)


class StageClock:
    """Per-stage timing inside one loop iteration: `lap(stage)` charges the time since the last lap."""

    def __init__(self, stages: tuple[str, ...], sync: Callable[[], None] = no_sync) -> None:
        self.stages = stages
        self.samples: dict[str, list[float]] = {s: [] for s in stages}
        self.total: list[float] = []
        self._sync = sync
        self._t0 = self._last = 0.0
        self._current: dict[str, float] = {}

    def start(self) -> None:
        self._sync()
        self._t0 = self._last = time.perf_counter()
        self._current = dict.fromkeys(self.stages, 0.0)

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self._current[stage] += (now - self._last) * 1000.0
        self._last = now

    def charge(self, stage: str, ms: float, taken_from: str) -> None:
        """Move `ms` already lapped into `taken_from` over to `stage` (a stage timed inside another)."""
        self._current[stage] += ms
        self._current[taken_from] -= ms

    def stop(self, keep: bool = True) -> float:
        """End the iteration; `keep=False` discards it (warm-up). Returns its total in ms."""
        total = (time.perf_counter() - self._t0) * 1000.0
        if keep:
            for s in self.stages:
                self.samples[s].append(self._current[s])
            self.total.append(total)
        return total

    def breakdown(self) -> dict[str, dict[str, float]]:
        """Mean, p50 and p95 ms of each stage (the means add up to the mean total)."""
        out = {}
        for s in self.stages:
            if self.samples[s]:
                st = Stats.of(self.samples[s])
                out[s] = {"mean": round(st.mean, 4), "p50": round(st.p50, 4), "p95": round(st.p95, 4)}
        return out


def parse_duration(text: str) -> float:
    """'30m', '90s', '1h', '1.5' (seconds) -> seconds."""
    t = text.strip().lower()
    units = {"h": 3600.0, "m": 60.0, "s": 1.0}
    scale = units.get(t[-1:], None)
    number = t[:-1] if scale is not None else t
    try:
        value = float(number) * (scale or 1.0)
    except ValueError:
        raise AvemoError(f"duration {text!r} is not a number with an optional unit s, m or h (e.g. 30m)") from None
    if value <= 0:
        raise AvemoError(f"duration {text!r} must be positive")
    return value


def parse_ints(text: str, what: str) -> list[int]:
    """'1,8,32' -> [1, 8, 32], each at least 1."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise AvemoError(f"{what} {text!r} must be comma-separated whole numbers such as 1,8,32") from None
    if not values or min(values) < 1:
        raise AvemoError(f"{what} {text!r} must list whole numbers of at least 1")
    return values
