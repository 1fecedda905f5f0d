"""`FaceCropper`: frame -> the model's face input (float32 (C, S, S) in [0, 1]) or None."""

from __future__ import annotations

import numpy as np

from .align import FACE_CENTER_DY, FACE_MARGIN, crop_face
from .detect import Box, FaceDetector, create_detector
from .track import FaceTracker


class FaceCropper:
    """frame -> the model's face input, or None when no face is found (or the frame is empty).

    Without a `detector` it uses YuNet. `margin` and `center_dy` default to the detector's
    `framing` attribute (its measured match to the training crops), else YuNet's. With
    `detect_every` > 1 consecutive calls track the face (see `track.FaceTracker`); 1 detects on
    the full frame every call.
    """

    def __init__(
        self,
        size: int = 48,
        channels: int = 1,
        margin: float | None = None,
        detector: FaceDetector | None = None,
        center_dy: float | None = None,
        align: bool = True,
        detect_every: int = 10,
    ) -> None:
        self.detector = detector if detector is not None else create_detector("yunet")
        # the detector's own framing (measured by bench.face_framing) unless one is given
        d_margin, d_dy = getattr(self.detector, "framing", (FACE_MARGIN, FACE_CENTER_DY))
        self.margin = d_margin if margin is None else margin
        self.center_dy = d_dy if center_dy is None else center_dy
        self.size, self.channels, self.align = size, channels, align
        self.tracker = FaceTracker(self.detector, detect_every)

    def find(self, frame: np.ndarray | None) -> Box | None:
        """The face in the frame (the largest when tracking starts), or None."""
        return self.tracker.update(frame)

    def crop(self, frame: np.ndarray, box: Box) -> np.ndarray:
        return crop_face(frame, box, self.size, self.channels, self.margin, self.center_dy, self.align)

    def __call__(self, frame: np.ndarray | None) -> np.ndarray | None:
        box = self.find(frame)
        return None if box is None else self.crop(frame, box)
