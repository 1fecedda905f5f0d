"""Temporal Consistency Smoothing (paper section 3.3) and the stability metrics around it.

- `tcs_loss`: L_TCS = 1/(T-1) * sum_{t=2..T} ||p_t - p_{t-1}||^2 on softmax outputs (training).
- `TCSFilter` / `smooth`: q_t = a * q_{t-1} + (1 - a) * p_t with a = 0.8 per 100 ms step
  (inference). The filter has no parameters; its state (q, time) is explicit.
- `hold_label`: the label shown from the smoothed probabilities, with hysteresis: it changes
  only when another class leads the shown one by a margin (0 = plain argmax, the paper).
- `flips_per_minute`, `probability_jitter`, `switch_latency`: how stable a stream of
  predictions is, for the evaluation reports.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

TCS_WEIGHT = 0.1  # lambda in L_total = L_CE + lambda * L_TCS (paper eq. 4 and 7)
TCS_ALPHA = 0.8  # filter coefficient per step (paper eq. 5)
TCS_STEP_SECONDS = 0.1  # the step the coefficient is defined for
TCS_HOLD_MARGIN = 0.0  # label hysteresis on the smoothed probabilities (0: argmax, as in the paper)
# Time constant of the filter: a = exp(-step / tau) -> tau = -0.1 / ln(0.8) = 0.448 s.


def tcs_loss(probs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over consecutive steps of the squared L2 distance between probability vectors.

    probs (B, T, C) softmax outputs; mask (B, T) bool marks the valid steps of padded clips
    (a pair of steps counts only when both are valid). Clips shorter than 2 steps add nothing.
    """
    diff = (probs[:, 1:] - probs[:, :-1]).square().sum(-1)  # (B, T-1)
    if mask is None:
        return diff.mean() if diff.numel() else probs.sum() * 0.0
    pair = (mask[:, 1:] & mask[:, :-1]).to(diff.dtype)
    per_clip = (diff * pair).sum(1) / pair.sum(1).clamp_min(1.0)  # 1/(T_b - 1) per clip
    has_pairs = pair.sum(1) > 0
    return per_clip[has_pairs].mean() if bool(has_pairs.any()) else probs.sum() * 0.0


def step_coefficient(dt: float, alpha: float = TCS_ALPHA, step: float = TCS_STEP_SECONDS) -> float:
    """The coefficient for a step of `dt` seconds with the same time constant as `alpha` per `step`."""
    if dt <= 0:
        return 1.0 if dt == 0 else 0.0
    return alpha ** (dt / step)


@dataclass
class FilterState:
    q: np.ndarray | None = None  # last smoothed probabilities
    t: float | None = None  # time of the last update (seconds, monotonic)


def smooth(
    p: np.ndarray, state: FilterState, t: float | None = None, alpha: float = TCS_ALPHA
) -> tuple[np.ndarray, FilterState]:
    """One filter update. `t` is the step's time in seconds; None means exactly one 100 ms step.

    The first update returns p itself (the filter starts from the first prediction, not from
    a uniform guess, so a stream does not open with a transient).
    """
    p = np.asarray(p, dtype=np.float64)
    if state.q is None:
        return p, FilterState(p, t)
    dt = TCS_STEP_SECONDS if t is None or state.t is None else t - state.t
    a = step_coefficient(dt, alpha)
    q = a * state.q + (1.0 - a) * p
    return q, FilterState(q, t)


def hold_label(q: np.ndarray, shown: int | None, margin: float = TCS_HOLD_MARGIN) -> int:
    """The label to show after smoothed probabilities `q`, given the label shown so far.

    The argmax, except that the shown label stays until another class leads it by at least
    `margin` (hysteresis). margin 0 is the plain argmax.
    """
    k = int(np.argmax(q))
    if shown is None or k == shown or q[k] - q[shown] >= margin:
        return k
    return shown


class TCSFilter:
    """The inference filter and the shown label, with their state, for a single stream."""

    def __init__(self, alpha: float = TCS_ALPHA, margin: float = TCS_HOLD_MARGIN) -> None:
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"the smoothing coefficient must be in [0, 1), got {alpha}")
        if not 0.0 <= margin < 1.0:
            raise ValueError(f"the label hold margin must be in [0, 1), got {margin}")
        self.alpha, self.margin = alpha, margin
        self.state = FilterState()
        self.shown: int | None = None  # index of the label shown after the last update

    def __call__(self, p: np.ndarray, t: float | None = None) -> np.ndarray:
        q, self.state = smooth(p, self.state, t, self.alpha)
        self.shown = hold_label(q, self.shown, self.margin)
        return q

    def reset(self) -> None:
        self.state = FilterState()
        self.shown = None


def smooth_sequence(probs: np.ndarray, alpha: float = TCS_ALPHA) -> np.ndarray:
    """(T, C) per-step probabilities at 100 ms -> (T, C) filtered."""
    f = TCSFilter(alpha)
    return np.stack([f(p) for p in np.asarray(probs)]) if len(probs) else np.asarray(probs, dtype=np.float64)


def shown_sequence(
    probs: np.ndarray, alpha: float = TCS_ALPHA, margin: float = TCS_HOLD_MARGIN
) -> tuple[np.ndarray, np.ndarray]:
    """(T, C) per-step probabilities -> the filtered (T, C) and the (T,) labels a stream shows."""
    f = TCSFilter(alpha, margin)
    qs, shown = [], []
    for p in np.asarray(probs):
        qs.append(f(p))
        shown.append(f.shown)
    if not qs:
        return np.asarray(probs, dtype=np.float64), np.zeros(0, dtype=np.int64)
    return np.stack(qs), np.asarray(shown, dtype=np.int64)


# --- stability metrics --------------------------------------------------------------------
def label_flips(labels: Sequence[int]) -> int:
    labels = np.asarray(labels)
    return int((labels[1:] != labels[:-1]).sum()) if labels.size > 1 else 0


def flips_per_minute(labels: Sequence[int], step_seconds: float = TCS_STEP_SECONDS) -> float:
    """Changes of the argmax label per minute of stream (a stream of n steps lasts n * step)."""
    n = len(labels)
    return label_flips(labels) / (n * step_seconds / 60.0) if n else 0.0


def probability_jitter(probs: np.ndarray) -> float:
    """Mean total-variation distance between consecutive probability vectors, in [0, 1].

    TV(p, q) = 0.5 * sum |p - q|: the probability mass that moved between two steps.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if len(probs) < 2:
        return 0.0
    return float(0.5 * np.abs(np.diff(probs, axis=0)).sum(axis=1).mean())


def switch_latency(
    pred_labels: Sequence[int], change_step: int, new_label: int, step_seconds: float = TCS_STEP_SECONDS
) -> float:
    """Seconds from the step where the true emotion changes until the prediction first shows it.

    Returns `inf` when the prediction never reaches the new label in the stream.
    """
    pred = np.asarray(pred_labels)[change_step:]
    hits = np.flatnonzero(pred == new_label)
    return float(hits[0] * step_seconds) if hits.size else math.inf
