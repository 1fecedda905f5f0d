"""The face stage: `detect` (YuNet, Haar), `align` (eye-levelled crop in the training framing),
`track` (detect less, track more; several faces with track ids), `voice` (which face the voice is
fused with) and `cropper` (frame -> the model's face inputs)."""

from .align import FACE_CENTER_DY, FACE_MARGIN, crop_face, eye_angle, to_gray
from .cropper import FaceCrop, FaceCropper
from .detect import DETECTORS, Box, FaceDetector, HaarFaceDetector, YuNetFaceDetector, create_detector
from .track import FaceTracker, MultiFaceTracker, Track
from .voice import VOICE_POLICIES, VoicePolicy

__all__ = [
    "DETECTORS",
    "FACE_CENTER_DY",
    "FACE_MARGIN",
    "VOICE_POLICIES",
    "Box",
    "FaceCrop",
    "FaceCropper",
    "FaceDetector",
    "FaceTracker",
    "HaarFaceDetector",
    "MultiFaceTracker",
    "Track",
    "VoicePolicy",
    "YuNetFaceDetector",
    "create_detector",
    "crop_face",
    "eye_angle",
    "to_gray",
]
