"""The streaming recognizer: one backend step plus the TCS filter per 100 ms.

It turns (face crop or None, audio slice or None) into a `StepResult` and carries the LSTM and
filter state between steps. Capture, face detection and publishing live elsewhere; this is the
piece the daemon, the benchmarks and the evaluation share.

Several faces (`step_faces`): the stream has one voice and one audio LSTM state, so the audio is
fused with one face (the caller's `voice` choice, `faces.VoicePolicy`) and every other face is a
visual-only row (audio masked; it neither reads nor moves the LSTM state). All rows go through
one `backends.step_rows` call (one visual encoder call on the (n_faces, C, S, S) batch). The
stream's own result (`primary`: voice + its face, one TCS filter carried across face changes,
exactly `step` when there is at most one face) is published at the top level; each track has its
own TCS filter, begun when the track begins and dropped when it ends.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .audio import LevelNormalizer
from .backends import Backend, step_rows
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


@dataclass
class FaceResult:
    """One tracked face's row of a step: its own TCS filter's output and its raw probabilities."""

    id: int  # the track id
    label: str  # shown label of this track's filter (argmax with the hold margin)
    probs: np.ndarray  # smoothed by this track's TCS filter
    raw: np.ndarray  # this row's softmax (with the voice for the fused face, visual only for the others)
    alpha: float
    beta: float  # > 0 only for the face the voice was fused with
    fused: bool  # the voice was fused with this face

    def as_dict(self, classes: tuple[str, ...]) -> dict[str, object]:
        return {
            "id": self.id,
            "label": self.label,
            "probs": {c: round(float(p), 4) for c, p in zip(classes, self.probs, strict=True)},
            "raw": {c: round(float(p), 4) for c, p in zip(classes, self.raw, strict=True)},
            "alpha": round(self.alpha, 4),
        }


@dataclass
class FacesStepResult:
    primary: StepResult  # the stream: the voice and the face it was fused with (the top-level fields)
    faces: list[FaceResult] = field(default_factory=list)  # one per tracked face, in the order given
    voice: int | None = None  # the track id the voice was fused with; None without a face


class StreamingRecognizer:
    def __init__(self, backend: Backend, smoothing: float = TCS_ALPHA, hold_margin: float = TCS_HOLD_MARGIN) -> None:
        self.backend = backend
        self.classes = backend.classes
        self.filter = TCSFilter(smoothing, hold_margin)
        tau = getattr(backend.dims, "audio_norm_s", 0.0)
        mode = getattr(backend.dims, "audio_norm", "band")
        self.level = LevelNormalizer(tau, mode) if tau > 0 else None  # the model's own audio front end
        self.state = backend.init_state()
        self.smoothing, self.hold_margin = smoothing, hold_margin
        self.track_filters: dict[int, TCSFilter] = {}  # track id -> that face's filter
        self._t0 = time.monotonic()

    def reset(self) -> None:
        """Forget the stream (a new speaker, or a source that came back after a long gap)."""
        self.state = self.backend.init_state()
        self.filter.reset()
        self.track_filters.clear()
        if self.level is not None:
            self.level.reset()

    def _level(self, audio: np.ndarray | None) -> np.ndarray | None:
        return self.level(audio).numpy() if audio is not None and self.level is not None else audio

    def _primary(
        self, logits: np.ndarray, alpha: float, beta: float, face: bool, audio: bool, t: float, start: float
    ) -> StepResult:
        raw = softmax(logits.astype(np.float64))
        if not face and not audio and self.filter.state.q is not None:
            probs = self.filter.state.q
        else:
            probs = self.filter(raw, t)
        latency = (time.perf_counter() - start) * 1000.0
        label = self.classes[int(np.argmax(probs)) if self.filter.shown is None else self.filter.shown]
        return StepResult(t, label, probs, raw, alpha, beta, face, audio, latency)

    def step(self, face: np.ndarray | None, audio: np.ndarray | None, t: float | None = None) -> StepResult:
        """One 100 ms step. `t` is the capture time (monotonic seconds); None means 'now'.

        With neither a face nor audio the network only has its prior, so the filter is left as
        it was and the result repeats the last smoothed probabilities, flagged face=audio=False.
        """
        t = time.monotonic() if t is None else t
        start = time.perf_counter()
        audio = self._level(audio)
        logits, alpha, beta, self.state = self.backend.step(face, audio, self.state)
        return self._primary(logits, alpha, beta, face is not None, audio is not None, t, start)

    def step_faces(
        self,
        faces: Sequence[tuple[int, np.ndarray]],
        audio: np.ndarray | None,
        t: float | None = None,
        voice: int | None = None,
    ) -> FacesStepResult:
        """One 100 ms step with every tracked face: `faces` is [(track id, crop)], `voice` the id
        the audio is fused with (None: the first face). The stream's result (`primary`) is what
        `step(voice's crop, audio)` gives; with at most one face it is exactly that call.
        """
        t = time.monotonic() if t is None else t
        start = time.perf_counter()
        audio = self._level(audio)
        ids = [i for i, _ in faces]
        if len(set(ids)) != len(ids):
            raise ValueError(f"track ids must be distinct within a step, got {ids}")
        if voice is None or voice not in ids:
            voice = ids[0] if ids else None
        k = ids.index(voice) if voice is not None else 0  # the fused row
        if len(faces) <= 1:  # the one-row step, unchanged
            crop = faces[0][1] if faces else None
            logits, alpha, beta, self.state = self.backend.step(crop, audio, self.state)
            all_logits, alphas, betas = logits[None], [alpha], [beta]
        else:  # one batched call: the fused row with the voice and the state, the others visual only
            crops = [c for _, c in faces]
            slices = [audio if j == k else None for j in range(len(faces))]
            states = [self.state if j == k else None for j in range(len(faces))]
            all_logits, alphas, betas, new_states = step_rows(self.backend, crops, slices, states)
            self.state = new_states[k]
            logits, alpha, beta = all_logits[k], float(alphas[k]), float(betas[k])
        results = []
        for j, track in enumerate(ids):
            f = self.track_filters.get(track) or TCSFilter(self.smoothing, self.hold_margin)
            self.track_filters[track] = f
            raw = softmax(all_logits[j].astype(np.float64))
            probs = f(raw, t)
            label = self.classes[int(np.argmax(probs)) if f.shown is None else f.shown]
            results.append(FaceResult(track, label, probs, raw, float(alphas[j]), float(betas[j]), j == k))
        for gone in set(self.track_filters) - set(ids):  # a track that ended takes its filter with it
            del self.track_filters[gone]
        primary = self._primary(logits, float(alpha), float(beta), bool(faces), audio is not None, t, start)
        return FacesStepResult(primary, results, voice)
