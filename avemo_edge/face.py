"""Faces: detect, keep the largest, crop with a margin, convert to the model's input.

Frames are OpenCV images: uint8 BGR (H, W, 3), BGRA (H, W, 4) or grey (H, W). The output of
`FaceCropper` is float32 (C, H, W) in [0, 1], the visual encoder's input, or `None` when the
frame holds no face: a missing face is a normal event in a stream, never an exception.

The default detector is OpenCV's frontal-face Haar cascade, which `opencv-python<5` ships, so
it works offline straight after `pip install`. Other detectors plug in through `FaceDetector`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

FACE_MARGIN = 0.15  # fraction of the detected box's side added on each side before cropping


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int

    @property
    def area(self) -> int:
        return self.w * self.h


class FaceDetector(Protocol):
    def detect(self, gray: np.ndarray) -> list[Box]:
        """All faces in a grey uint8 image, in that image's pixel coordinates."""
        ...


class HaarFaceDetector:
    """OpenCV's Haar cascade; frames are scaled down to `max_side` pixels for speed."""

    def __init__(
        self,
        cascade_path: str | Path | None = None,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size_frac: float = 0.08,
        max_side: int = 480,
    ) -> None:
        path = (
            Path(cascade_path) if cascade_path else Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        )
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise FileNotFoundError(
                f"Haar cascade {path} could not be loaded; install opencv-python<5, which ships the cascades"
            )
        self.scale_factor, self.min_neighbors = scale_factor, min_neighbors
        self.min_size_frac, self.max_side = min_size_frac, max_side

    def detect(self, gray: np.ndarray) -> list[Box]:
        scale = min(1.0, self.max_side / max(gray.shape[:2]))
        small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray
        min_side = max(16, int(self.min_size_frac * min(small.shape[:2])))
        found = self.cascade.detectMultiScale(
            small, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(min_side, min_side)
        )
        return [Box(*(int(round(v / scale)) for v in b)) for b in found]


def to_gray(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return frame
    code = {3: cv2.COLOR_BGR2GRAY, 4: cv2.COLOR_BGRA2GRAY}.get(frame.shape[2])
    if code is None:
        raise ValueError(f"a frame must be grey, BGR or BGRA, got shape {frame.shape}")
    return cv2.cvtColor(frame, code)


def crop_face(frame: np.ndarray, box: Box, size: int, channels: int, margin: float = FACE_MARGIN) -> np.ndarray:
    """A square crop around `box` grown by `margin` per side -> float32 (channels, size, size) in [0, 1].

    Parts of the square outside the frame repeat the edge pixels.
    """
    if channels not in (1, 3):
        raise ValueError(f"face crops have 1 (grey) or 3 (RGB) channels, not {channels}")
    side = int(round(max(box.w, box.h) * (1 + 2 * margin)))
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    h, w = frame.shape[:2]
    pad = max(0, -x0, -y0, x0 + side - w, y0 + side - h)
    if pad:
        frame = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0 = x0 + pad, y0 + pad
    crop = frame[y0 : y0 + side, x0 : x0 + side]
    crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if side > size else cv2.INTER_LINEAR)
    if channels == 1:
        out = to_gray(crop)[None]
    elif crop.ndim == 2:
        out = np.repeat(crop[None], 3, axis=0)
    else:
        out = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB if crop.shape[2] == 3 else cv2.COLOR_BGRA2RGB).transpose(2, 0, 1)
    return np.ascontiguousarray(out, dtype=np.float32) / 255.0


class FaceCropper:
    """frame -> the model's face input, or None when no face is found (or the frame is empty)."""

    def __init__(
        self, size: int = 48, channels: int = 1, margin: float = FACE_MARGIN, detector: FaceDetector | None = None
    ) -> None:
        self.size, self.channels, self.margin = size, channels, margin
        self.detector = detector if detector is not None else HaarFaceDetector()

    def find(self, frame: np.ndarray | None) -> Box | None:
        """The largest face in the frame, or None."""
        if frame is None or frame.size == 0:
            return None
        boxes = self.detector.detect(to_gray(frame))
        return max(boxes, key=lambda b: b.area) if boxes else None

    def __call__(self, frame: np.ndarray | None) -> np.ndarray | None:
        box = self.find(frame)
        return None if box is None else crop_face(frame, box, self.size, self.channels, self.margin)
