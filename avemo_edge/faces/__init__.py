"""The face stage: `detect` (YuNet, Haar), `align` (eye-levelled crop in the training framing),
`track` (detect less, track more) and `cropper` (frame -> the model's face input)."""

from .align import FACE_CENTER_DY, FACE_MARGIN, crop_face, eye_angle, to_gray
from .cropper import FaceCropper
from .detect import DETECTORS, Box, FaceDetector, HaarFaceDetector, YuNetFaceDetector, create_detector
from .track import FaceTracker

__all__ = [
    "DETECTORS",
    "FACE_CENTER_DY",
    "FACE_MARGIN",
    "Box",
    "FaceCropper",
    "FaceDetector",
    "FaceTracker",
    "HaarFaceDetector",
    "YuNetFaceDetector",
    "create_detector",
    "crop_face",
    "eye_angle",
    "to_gray",
]
