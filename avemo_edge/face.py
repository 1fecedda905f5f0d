"""Compatibility module: the face stage now lives in `avemo_edge.faces` (detect, align, track).

Existing callers keep importing `Box`, `FaceCropper`, `HaarFaceDetector`, `crop_face`, `to_gray`
and `FACE_MARGIN` from here.
"""

from .faces import (  # noqa: F401
    DETECTORS,
    FACE_CENTER_DY,
    FACE_MARGIN,
    Box,
    FaceCropper,
    FaceDetector,
    FaceTracker,
    HaarFaceDetector,
    YuNetFaceDetector,
    create_detector,
    crop_face,
    eye_angle,
    to_gray,
)
