"""Face detectors behind one protocol: YuNet (default, shipped with the package) and OpenCV's Haar cascade.

Both take a grey or BGR uint8 image and return `Box`es in that image's pixel coordinates. YuNet also
gives five landmarks (the eyes, the nose tip, the mouth corners), which `align` uses to level the eyes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

YUNET_MODEL = Path(__file__).resolve().parent.parent / "assets" / "yunet" / "face_detection_yunet_2023mar.onnx"
DETECTORS = ("yunet", "haar")
# Where distribution OpenCV packages (Debian/Ubuntu, JetPack) put the cascades; cv2.data exists
# only in the pip wheels.
HAAR_DIRS = (
    "/usr/share/opencv4/haarcascades",
    "/usr/share/opencv/haarcascades",
    "/usr/local/share/opencv4/haarcascades",
    "/usr/local/share/opencv/haarcascades",
)
HAAR_FILE = "haarcascade_frontalface_default.xml"
# Each detector's crop framing (margin per side, centre shift down, both in box sides) that cuts a
# face out as FER+ did, measured by `python -m bench.face_framing [--detector haar]` on the 3,573
# FER+ test images (docs/DESIGN.md): YuNet's median box is 0.979 of the image side and 0.005 sides
# high, Haar's 0.974 and centred.
YUNET_FRAMING = (0.01, 0.005)
HAAR_FRAMING = (0.013, 0.0)


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int
    # (5, 2) landmarks in image pixels: right eye, left eye (the person's), nose tip, mouth corners.
    landmarks: tuple[tuple[float, float], ...] | None = field(default=None, compare=False)
    score: float = field(default=1.0, compare=False)

    @property
    def area(self) -> int:
        return self.w * self.h

    def shifted(self, dx: float, dy: float, scale: float = 1.0) -> Box:
        """This box in another image's coordinates: (v * scale) + offset."""
        lm = None
        if self.landmarks is not None:
            lm = tuple((px * scale + dx, py * scale + dy) for px, py in self.landmarks)
        return Box(
            int(round(self.x * scale + dx)),
            int(round(self.y * scale + dy)),
            int(round(self.w * scale)),
            int(round(self.h * scale)),
            lm,
            self.score,
        )


class FaceDetector(Protocol):
    def detect(self, image: np.ndarray) -> list[Box]:
        """All faces in a uint8 image (grey or BGR), in that image's pixel coordinates."""
        ...


def shrink(image: np.ndarray, scale: float) -> np.ndarray:
    """`image` scaled by `scale` <= 1 (pixel coordinates map as x * scale), for a detector to look at.

    INTER_AREA is exact but slow at a fractional factor (0.50 ms for 300 -> 160 px here) and fast at
    a whole one (0.03 ms for 2x: OpenCV averages k x k cells). So the image is first averaged by the
    largest whole factor k with 1 / k >= scale, then scaled by the rest (> 1/2, so without
    aliasing) with INTER_LINEAR: 0.08 ms. Right and bottom pixels that do not fill a k x k cell
    are left out (at most k - 1 of them).
    """
    if scale >= 1:
        return image
    k = int(1 / scale + 1e-9)
    rest = scale * k
    if k >= 2:
        h, w = image.shape[:2]
        if h >= k and w >= k:
            whole = image[: h // k * k, : w // k * k]
            image = cv2.resize(whole, None, fx=1 / k, fy=1 / k, interpolation=cv2.INTER_AREA)
        else:
            rest = scale
    if rest < 1 - 1e-9:
        image = cv2.resize(image, None, fx=rest, fy=rest, interpolation=cv2.INTER_LINEAR)
    return image


def _scaled(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    scale = min(1.0, max_side / max(image.shape[:2]))
    return shrink(image, scale), scale


class YuNetFaceDetector:
    """YuNet (`cv2.FaceDetectorYN`) on the image scaled to `max_side` pixels on its longer side."""

    framing = YUNET_FRAMING

    def __init__(
        self,
        model_path: str | Path = YUNET_MODEL,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.3,
        max_side: int = 320,
    ) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"YuNet face detector model {path} does not exist; reinstall avemo-edge")
        if not hasattr(cv2, "FaceDetectorYN"):
            raise FileNotFoundError(
                f"OpenCV {cv2.__version__} has no FaceDetectorYN (4.8 or later needed); use [face] detector = 'haar'"
            )
        self.path, self.max_side = path, max_side
        self.score_threshold, self.nms_threshold = score_threshold, nms_threshold
        # One network per input size: `setInputSize` rebuilds the network's buffers (a window call
        # took 2.97 ms with the size changing each call against 1.80 ms at a fixed 160 px), and the
        # tracker alternates full frames with its fixed-size windows.
        self._nets: dict[tuple[int, int], Any] = {}
        self._net((max_side, max_side))  # loads the model now: a bad file fails at start, not at the first frame

    def _net(self, size: tuple[int, int]) -> Any:
        net = self._nets.get(size)
        if net is None:
            if len(self._nets) >= self.MAX_NETS:  # sizes keep changing (e.g. a resized stream): start over
                self._nets.clear()
            net = cv2.FaceDetectorYN.create(str(self.path), "", size, self.score_threshold, self.nms_threshold)
            self._nets[size] = net
        return net

    MAX_NETS = 4

    def detect(self, image: np.ndarray) -> list[Box]:
        small, scale = _scaled(image, self.max_side)
        if small.ndim == 2:
            small = cv2.cvtColor(small, cv2.COLOR_GRAY2BGR)
        elif small.shape[2] == 4:
            small = cv2.cvtColor(small, cv2.COLOR_BGRA2BGR)
        _, found = self._net((small.shape[1], small.shape[0])).detect(small)
        if found is None:
            return []
        out = []
        for f in found:
            # On tiny inputs (a 30 px tracking window) OpenCV's YuNet has returned rows with infinite
            # coordinates; such a row is no face.
            if not np.isfinite(f[:15]).all() or f[2] <= 0 or f[3] <= 0:
                continue
            lm = tuple((float(f[4 + 2 * i]) / scale, float(f[5 + 2 * i]) / scale) for i in range(5))
            x, y, w, h = (float(v) / scale for v in f[:4])
            out.append(Box(int(round(x)), int(round(y)), int(round(w)), int(round(h)), lm, float(f[14])))
        return out


def haar_cascade_path() -> Path:
    """The frontal-face cascade: from the pip wheel's cv2.data, else the usual system folders."""
    data = getattr(cv2, "data", None)
    folders = ([data.haarcascades] if data is not None and hasattr(data, "haarcascades") else []) + list(HAAR_DIRS)
    for folder in folders:
        path = Path(folder) / HAAR_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"no {HAAR_FILE} found (this OpenCV has no cv2.data and none is in {', '.join(HAAR_DIRS)}); "
        "use [face] detector = 'yunet' or install OpenCV's data files"
    )


class HaarFaceDetector:
    """OpenCV's Haar cascade; frames are scaled down to `max_side` pixels for speed. No landmarks."""

    framing = HAAR_FRAMING

    def __init__(
        self,
        cascade_path: str | Path | None = None,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size_frac: float = 0.08,
        max_side: int = 480,
    ) -> None:
        path = Path(cascade_path) if cascade_path else haar_cascade_path()
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise FileNotFoundError(
                f"Haar cascade {path} could not be loaded; install opencv-python<5, which ships the cascades"
            )
        self.scale_factor, self.min_neighbors = scale_factor, min_neighbors
        self.min_size_frac, self.max_side = min_size_frac, max_side

    def detect(self, image: np.ndarray) -> list[Box]:
        from .align import to_gray

        small, scale = _scaled(to_gray(image), self.max_side)
        min_side = max(16, int(self.min_size_frac * min(small.shape[:2])))
        found = self.cascade.detectMultiScale(
            small, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(min_side, min_side)
        )
        return [Box(*(int(round(v / scale)) for v in b)) for b in found]


def create_detector(name: str = "yunet") -> FaceDetector:
    """A detector by its config name ('yunet' or 'haar')."""
    if name == "yunet":
        return YuNetFaceDetector()
    if name == "haar":
        return HaarFaceDetector()
    raise ValueError(f"unknown face detector {name!r}; use one of {', '.join(DETECTORS)}")
