"""`FaceCropper`: frame -> the model's face input (float32 (C, S, S) in [0, 1]) or None, or, with
`max_faces` > 1, every tracked face with its track id, box and crop (`faces`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .align import FACE_CENTER_DY, FACE_MARGIN, crop_face
from .detect import Box, FaceDetector, create_detector
from .track import MultiFaceTracker


@dataclass(frozen=True)
class FaceCrop:
    """One tracked face of a frame: its track id, its box in the frame, the model's input and when it began."""

    id: int
    box: Box
    crop: np.ndarray  # float32 (C, S, S) in [0, 1]
    since: int = 0  # the tracker's update count when the track began


class FaceCropper:
    """frame -> the model's face input, or None when no face is found (or the frame is empty).

    Without a `detector` it uses YuNet. `margin` and `center_dy` default to the detector's
    `framing` attribute (its measured match to the training crops), else YuNet's. With
    `detect_every` > 1 consecutive calls track the faces (see `track.MultiFaceTracker`); 1 detects
    on the full frame every call. `max_faces` faces are tracked (`faces`); calling the cropper
    (or `find`) gives the largest of them.
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
        max_faces: int = 1,
    ) -> None:
        self.detector = detector if detector is not None else create_detector("yunet")
        # the detector's own framing (measured by bench.face_framing) unless one is given
        d_margin, d_dy = getattr(self.detector, "framing", (FACE_MARGIN, FACE_CENTER_DY))
        self.margin = d_margin if margin is None else margin
        self.center_dy = d_dy if center_dy is None else center_dy
        self.size, self.channels, self.align = size, channels, align
        self.tracker = MultiFaceTracker(self.detector, detect_every, max_faces)

    @property
    def max_faces(self) -> int:
        return self.tracker.max_faces

    def find(self, frame: np.ndarray | None) -> Box | None:
        """The largest tracked face in the frame (the largest when tracking starts), or None."""
        tracks = self.tracker.update(frame)
        return tracks[0].box if tracks else None

    def crop(self, frame: np.ndarray, box: Box) -> np.ndarray:
        return crop_face(frame, box, self.size, self.channels, self.margin, self.center_dy, self.align)

    def faces(self, frame: np.ndarray | None) -> list[FaceCrop]:
        """Every tracked face in the frame (at most `max_faces`, largest first) with its id, box and crop."""
        tracks = self.tracker.update(frame)
        return [FaceCrop(t.id, t.box, self.crop(frame, t.box), t.since) for t in tracks]

    def __call__(self, frame: np.ndarray | None) -> np.ndarray | None:
        box = self.find(frame)
        return None if box is None else self.crop(frame, box)
