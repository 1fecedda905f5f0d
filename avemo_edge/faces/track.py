"""Detect less, track more: a full-frame detection every `detect_every` steps or when the face is
lost; in between, the detector runs only on a window around the last box, scaled down.

A face that leaves is reported gone on the first step on which neither the window nor a full-frame
detection finds it, so it is gone within one step (0.1 s at the daemon's 10 steps a second).
"""

from __future__ import annotations

import cv2
import numpy as np

from .detect import Box, FaceDetector


def _iou(a: Box, b: Box) -> float:
    x0, y0 = max(a.x, b.x), max(a.y, b.y)
    x1, y1 = min(a.x + a.w, b.x + b.w), min(a.y + a.h, b.y + b.h)
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


class FaceTracker:
    """frame -> the tracked (largest) face's Box or None, with full-frame detection only now and then."""

    def __init__(
        self, detector: FaceDetector, detect_every: int = 10, window: float = 1.0, window_px: int = 160
    ) -> None:
        if detect_every < 1:
            raise ValueError(f"detect_every must be at least 1, got {detect_every}")
        self.detector, self.detect_every = detector, detect_every
        self.window, self.window_px = window, window_px  # window: box sides added on each side
        self.box: Box | None = None
        self._since_full = 0
        self.full_detections = 0
        self.window_detections = 0

    def reset(self) -> None:
        self.box, self._since_full = None, 0

    def _full(self, frame: np.ndarray) -> Box | None:
        self.full_detections += 1
        self._since_full = 0
        boxes = self.detector.detect(frame)
        return max(boxes, key=lambda b: b.area) if boxes else None

    def _in_window(self, frame: np.ndarray, last: Box) -> Box | None:
        self.window_detections += 1
        side = max(last.w, last.h)
        grow = self.window * side
        h, w = frame.shape[:2]
        x0, y0 = max(0, int(last.x - grow)), max(0, int(last.y - grow))
        x1, y1 = min(w, int(last.x + last.w + grow)), min(h, int(last.y + last.h + grow))
        if x1 - x0 < 8 or y1 - y0 < 8:
            return None
        region = frame[y0:y1, x0:x1]
        scale = min(1.0, self.window_px / max(region.shape[:2]))
        if scale < 1:
            region = cv2.resize(region, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        boxes = [b.shifted(x0, y0, 1 / scale) for b in self.detector.detect(region)]
        if not boxes:
            return None
        best = max(boxes, key=lambda b: (_iou(b, last), b.area))
        return best if _iou(best, last) > 0 else None

    def update(self, frame: np.ndarray | None) -> Box | None:
        """The face in this frame (the largest at each full detection, then followed), or None."""
        if frame is None or frame.size == 0:
            self.reset()
            return None
        self._since_full += 1
        box = None
        if self.box is not None and self._since_full < self.detect_every:
            box = self._in_window(frame, self.box)
        if box is None:
            box = self._full(frame)
        self.box = box
        return box
