"""The streaming recognizer: one backend step plus the TCS filter per 100 ms.

It turns (face crop or None, audio slice or None) into a `StepResult` and carries the LSTM and
filter state between steps. Capture, face detection and publishing live elsewhere; this is the
piece the daemon, the benchmarks and the evaluation share.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .audio import LevelNormalizer
from .backends import Backend
from .smoothing import TCS_ALPHA, TCS_HOLD_MARGIN, TCSFilter


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max())
    return z / z.sum()


@dataclass
class StepResult:
    t: float  # the step's capture time, seconds (monotonic clock)
    label: str  # the shown label: argmax of the smoothed probabilities, with the hold margin
    probs: np.ndarray  # smoothed (TCS filter) probabilities
    raw: np.ndarray  # this step's softmax before smoothing
    alpha: float  # visual gate
    beta: float  # audio gate
    face: bool  # a face was present this step
    audio: bool  # an audio slice was present this step
    latency_ms: float  # backend step + filter time

    def as_dict(self, classes: tuple[str, ...]) -> dict[str, object]:
        return {
            "t": round(self.t, 3),
            "label": self.label,
            "probs": {c: round(float(p), 4) for c, p in zip(classes, self.probs, strict=True)},
            "raw": {c: round(float(p), 4) for c, p in zip(classes, self.raw, strict=True)},
            "alpha": round(self.alpha, 4),
            "beta": round(self.beta, 4),
            "face": self.face,
            "audio": self.audio,
            "latency_ms": round(self.latency_ms, 2),
        }


class StreamingRecognizer:
    def __init__(self, backend: Backend, smoothing: float = TCS_ALPHA, hold_margin: float = TCS_HOLD_MARGIN) -> None:
        self.backend = backend
        self.classes = backend.classes
        self.filter = TCSFilter(smoothing, hold_margin)
        tau = getattr(backend.dims, "audio_norm_s", 0.0)
        self.level = LevelNormalizer(tau) if tau > 0 else None  # the model's own audio front end
        self.state = backend.init_state()
        self._t0 = time.monotonic()

    def reset(self) -> None:
        """Forget the stream (a new speaker, or a source that came back after a long gap)."""
        self.state = self.backend.init_state()
        self.filter.reset()
        if self.level is not None:
            self.level.reset()

    def step(self, face: np.ndarray | None, audio: np.ndarray | None, t: float | None = None) -> StepResult:
        """One 100 ms step. `t` is the capture time (monotonic seconds); None means 'now'.

        With neither a face nor audio the network only has its prior, so the filter is left as
        it was and the result repeats the last smoothed probabilities, flagged face=audio=False.
        """
        t = time.monotonic() if t is None else t
        start = time.perf_counter()
        if audio is not None and self.level is not None:
            audio = self.level(audio).numpy()
        logits, alpha, beta, self.state = self.backend.step(face, audio, self.state)
        raw = softmax(logits.astype(np.float64))
        if face is None and audio is None and self.filter.state.q is not None:
            probs = self.filter.state.q
        else:
            probs = self.filter(raw, t)
        latency = (time.perf_counter() - start) * 1000.0
        label = self.classes[int(np.argmax(probs)) if self.filter.shown is None else self.filter.shown]
        return StepResult(t, label, probs, raw, alpha, beta, face is not None, audio is not None, latency)
