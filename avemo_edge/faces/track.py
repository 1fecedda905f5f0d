"""Detect less, track more: a full-frame detection every `detect_every` steps or when a face is
lost; in between, the detector runs only on a window around each tracked box, scaled down.

`MultiFaceTracker` follows up to `max_faces` faces, each with a track id that stays the same for
as long as the face is followed (ids are never reused within a tracker's life). At a full-frame
detection the `max_faces` largest faces are the tracked set: a detection that overlaps a track's
last box continues that track (its id), the others start new tracks, and a track none continues
ends. A face that leaves is reported gone on the first step on which neither its window nor a
full-frame detection finds it, so it is gone within one step (0.1 s at the daemon's 10 steps a
second). A new face that enters while fewer than `max_faces` are tracked is found at the next
full detection (within `detect_every` steps). With several tracks, a step whose windows together
would hold more (scaled) pixels than the scaled full frame detects on the full frame instead.
`FaceTracker` is the one-face case (the largest).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .detect import Box, FaceDetector, shrink

# Two tracks whose boxes overlap this much follow the same face; the younger one ends.
SAME_FACE_IOU = 0.5


def _iou(a: Box, b: Box) -> float:
    x0, y0 = max(a.x, b.x), max(a.y, b.y)
    x1, y1 = min(a.x + a.w, b.x + b.w), min(a.y + a.h, b.y + b.h)
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class Track:
    """One tracked face in one frame: its id (stable while it is followed), its box and when it began."""

    id: int
    box: Box
    since: int  # the tracker's update count when the track began (smaller = older)


class MultiFaceTracker:
    """frame -> the tracked faces (a list of `Track`, largest first), with full-frame detection only now and then."""

    def __init__(
        self,
        detector: FaceDetector,
        detect_every: int = 10,
        max_faces: int = 1,
        window: float = 1.0,
        window_px: int = 128,
    ) -> None:
        if detect_every < 1:
            raise ValueError(f"detect_every must be at least 1, got {detect_every}")
        if max_faces < 1:
            raise ValueError(f"max_faces must be at least 1, got {max_faces}")
        self.detector, self.detect_every, self.max_faces = detector, detect_every, max_faces
        self.window, self.window_px = window, window_px  # window: box sides added on each side
        self.tracks: list[Track] = []
        self._since_full = 0
        self._updates = 0
        self._next_id = 1
        self.full_detections = 0
        self.window_detections = 0

    def reset(self) -> None:
        """Forget every track (their ids are not given out again)."""
        self.tracks, self._since_full = [], 0

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def _full(self, frame: np.ndarray) -> list[Track]:
        self.full_detections += 1
        self._since_full = 0
        boxes = sorted(self.detector.detect(frame), key=lambda b: b.area, reverse=True)[: self.max_faces]
        # Each detection continues the track it overlaps most (greedy, best overlaps first).
        pairs = sorted(
            ((_iou(b, t.box), i, j) for i, b in enumerate(boxes) for j, t in enumerate(self.tracks)), reverse=True
        )
        taken_box: dict[int, Track] = {}
        taken_track: set[int] = set()
        for iou, i, j in pairs:
            if iou <= 0:
                break
            if i in taken_box or j in taken_track:
                continue
            taken_box[i] = Track(self.tracks[j].id, boxes[i], self.tracks[j].since)
            taken_track.add(j)
        return [taken_box.get(i) or Track(self._new_id(), b, self._updates) for i, b in enumerate(boxes)]

    def _window(self, frame: np.ndarray, last: Box) -> tuple[int, int, int, int]:
        side = max(last.w, last.h)
        grow = self.window * side
        h, w = frame.shape[:2]
        x0, y0 = max(0, int(last.x - grow)), max(0, int(last.y - grow))
        x1, y1 = min(w, int(last.x + last.w + grow)), min(h, int(last.y + last.h + grow))
        return x0, y0, x1, y1

    def _full_is_cheaper(self, frame: np.ndarray) -> bool:
        """Whether one full-frame detection looks at fewer pixels than a window per track (several tracks).

        The detector scales a full frame to `max_side` and each window to `window_px`, so from about
        three faces on, one full-frame detection costs less than following each face in its window.
        """
        max_side = getattr(self.detector, "max_side", None)
        if len(self.tracks) < 2 or not max_side:
            return False
        h, w = frame.shape[:2]
        s = min(1.0, max_side / max(h, w))
        windows = 0.0
        for t in self.tracks:
            x0, y0, x1, y1 = self._window(frame, t.box)
            ws = min(1.0, self.window_px / max(x1 - x0, y1 - y0, 1))
            windows += (x1 - x0) * (y1 - y0) * ws * ws
        return h * w * s * s <= windows

    def _in_window(self, frame: np.ndarray, last: Box) -> Box | None:
        self.window_detections += 1
        x0, y0, x1, y1 = self._window(frame, last)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return None
        region = frame[y0:y1, x0:x1]
        scale = min(1.0, self.window_px / max(region.shape[:2]))
        region = shrink(region, scale)
        # padded (right and bottom, black) to one fixed square, so the detector keeps one input size
        pad_y, pad_x = self.window_px - region.shape[0], self.window_px - region.shape[1]
        if pad_y > 0 or pad_x > 0:
            region = cv2.copyMakeBorder(region, 0, max(0, pad_y), 0, max(0, pad_x), cv2.BORDER_CONSTANT, value=0)
        boxes = [b.shifted(x0, y0, 1 / scale) for b in self.detector.detect(region)]
        if not boxes:
            return None
        best = max(boxes, key=lambda b: (_iou(b, last), b.area))
        return best if _iou(best, last) > 0 else None

    def _follow(self, frame: np.ndarray) -> list[Track] | None:
        """Every track followed in its window, or None when one is lost (then a full detection decides)."""
        out: list[Track] = []
        for t in self.tracks:
            box = self._in_window(frame, t.box)
            if box is None:
                return None
            if any(_iou(box, o.box) > SAME_FACE_IOU for o in out):
                continue  # two windows found the same face: the older track keeps it, this one ends
            out.append(Track(t.id, box, t.since))
        return out

    def update(self, frame: np.ndarray | None) -> list[Track]:
        """The faces in this frame, largest first (at most `max_faces`); [] when there is none."""
        self._updates += 1
        if frame is None or frame.size == 0:
            self.reset()
            return []
        self._since_full += 1
        tracks = None
        if self.tracks and self._since_full < self.detect_every and not self._full_is_cheaper(frame):
            tracks = self._follow(frame)
        if tracks is None:
            tracks = self._full(frame)
        self.tracks = sorted(tracks, key=lambda t: t.box.area, reverse=True)
        return list(self.tracks)


class FaceTracker(MultiFaceTracker):
    """One face: frame -> the tracked (largest) face's Box or None."""

    def __init__(
        self, detector: FaceDetector, detect_every: int = 10, window: float = 1.0, window_px: int = 128
    ) -> None:
        super().__init__(detector, detect_every, 1, window, window_px)

    @property
    def box(self) -> Box | None:
        return self.tracks[0].box if self.tracks else None

    def update(self, frame: np.ndarray | None) -> Box | None:  # type: ignore[override]
        """The face in this frame (the largest at each full detection, then followed), or None."""
        tracks = super().update(frame)
        return tracks[0].box if tracks else None
