"""Which tracked face the voice goes with: the stream has one microphone, one audio LSTM state, and
so one fused face per step; every other face is a visual-only step (docs/DESIGN.md, "Several faces").

    "largest"  the face with the largest box (the one nearest the camera and its microphone); the
               current choice stays until another face is VOICE_SWITCH_RATIO times larger, so two
               faces of about the same size do not swap the voice from step to step
    "oldest"   the face tracked the longest (the first to arrive keeps the voice until it leaves)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

from .detect import Box


class Tracked(Protocol):
    """A `track.Track` or a `cropper.FaceCrop`: a track id, a box, and when the track began."""

    @property
    def id(self) -> int: ...

    @property
    def box(self) -> Box: ...

    @property
    def since(self) -> int: ...


T = TypeVar("T", bound=Tracked)

VOICE_POLICIES = ("largest", "oldest")
VOICE_SWITCH_RATIO = 1.25  # "largest": another face takes the voice once its box area is 1.25 x the current one's


class VoicePolicy:
    """Tracks -> the one the voice is fused with (None when there is no face), remembering its choice."""

    def __init__(self, policy: str = "largest", switch_ratio: float = VOICE_SWITCH_RATIO) -> None:
        if policy not in VOICE_POLICIES:
            raise ValueError(f"unknown voice policy {policy!r}; use one of {', '.join(VOICE_POLICIES)}")
        self.policy, self.switch_ratio = policy, switch_ratio
        self.current: int | None = None  # the track id chosen last

    def reset(self) -> None:
        self.current = None

    def choose(self, tracks: Sequence[T]) -> T | None:
        if not tracks:
            self.current = None
            return None
        current = next((t for t in tracks if t.id == self.current), None)
        if self.policy == "oldest":
            pick = min(tracks, key=lambda t: (t.since, t.id))
        else:
            largest = max(tracks, key=lambda t: t.box.area)
            keep = current is not None and current.box.area * self.switch_ratio >= largest.box.area
            pick = current if keep else largest
        self.current = pick.id
        return pick
