"""Crop a detected face to the model's input: level the eyes, frame it as the training images are.

Training faces are FER+ 48 x 48 tight crops. `bench/face_framing.py` runs YuNet on upscaled FER+
test images and measures where its box falls in them; the crop below inverts that: its side is
the box side x (1 + 2 * FACE_MARGIN) and its centre the box centre moved down by FACE_CENTER_DY
box sides, so that a detected face is cut out as FER+ cut it (docs/DESIGN.md has the numbers).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .detect import YUNET_FRAMING, Box

# YuNet's framing (detect.YUNET_FRAMING, measured by `python -m bench.face_framing`), the default:
# FACE_MARGIN is the fraction of the box side added on each side, FACE_CENTER_DY the crop centre's
# shift below the box centre in box sides.
FACE_MARGIN, FACE_CENTER_DY = YUNET_FRAMING


def to_gray(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return frame
    code = {3: cv2.COLOR_BGR2GRAY, 4: cv2.COLOR_BGRA2GRAY}.get(frame.shape[2])
    if code is None:
        raise ValueError(f"a frame must be grey, BGR or BGRA, got shape {frame.shape}")
    return cv2.cvtColor(frame, code)


def eye_angle(box: Box) -> float:
    """The roll of the face in degrees (0 when the eyes are level, or without landmarks)."""
    if box.landmarks is None:
        return 0.0
    (rx, ry), (lx, ly) = box.landmarks[0], box.landmarks[1]
    return math.degrees(math.atan2(ly - ry, lx - rx))


def _channels(crop: np.ndarray, channels: int) -> np.ndarray:
    if channels == 1:
        out = to_gray(crop)[None]
    elif crop.ndim == 2:
        out = np.repeat(crop[None], 3, axis=0)
    else:
        out = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB if crop.shape[2] == 3 else cv2.COLOR_BGRA2RGB).transpose(2, 0, 1)
    return np.ascontiguousarray(out, dtype=np.float32) / 255.0


def shrink_towards(frame: np.ndarray, f: float, x_max: float, y_max: float) -> np.ndarray:
    """The frame scaled by `f` < 1 with INTER_AREA, as far right and down as (x_max, y_max) needs.

    INTER_AREA's cells are laid out from the image's top-left corner, so the top-left part of a
    scaled frame is, pixel for pixel, that part of the whole frame scaled. The crop reads only the
    scaled pixels up to (x_max, y_max) (frame pixels) plus the bilinear neighbour, so the frame is
    cut off a few pixels past that first: the same pixels, without scaling the rest of the frame
    (a 96 px square of a 480 x 360 frame costs a fraction of the whole; tests/test_face.py checks
    that the crops are bit-identical to scaling the whole frame).
    """
    h, w = frame.shape[:2]
    # the last scaled column / row the warp may read, with a margin of 2, and the frame pixels
    # that complete its cell (cell j covers frame pixels [j / f, (j + 1) / f))
    x1 = min(w, math.ceil((math.ceil(max(x_max, 0.0) * f) + 4) / f) + 1)
    y1 = min(h, math.ceil((math.ceil(max(y_max, 0.0) * f) + 4) / f) + 1)
    if max(x1, y1) * (1 - f) < 1:  # the part's scaled size may round to its own, and OpenCV then copies it
        return cv2.resize(frame, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    return cv2.resize(frame[:y1, :x1], None, fx=f, fy=f, interpolation=cv2.INTER_AREA)


def crop_face(
    frame: np.ndarray,
    box: Box,
    size: int,
    channels: int,
    margin: float = FACE_MARGIN,
    center_dy: float = FACE_CENTER_DY,
    align: bool = True,
) -> np.ndarray:
    """A square crop around `box` -> float32 (channels, size, size) in [0, 1].

    The square's side is max(w, h) x (1 + 2 margin), its centre the box centre plus `center_dy`
    sides downwards; with `align` and landmarks it is rotated about that centre so the eyes are
    level. Parts outside the frame repeat the edge pixels.
    """
    if channels not in (1, 3):
        raise ValueError(f"face crops have 1 (grey) or 3 (RGB) channels, not {channels}")
    box_side = max(box.w, box.h)
    side = max(1.0, box_side * (1 + 2 * margin))
    cx, cy = box.x + box.w / 2, box.y + box.h / 2 + center_dy * box_side
    angle = eye_angle(box) if align else 0.0
    if side > 2 * size:  # shrink first so the warp's bilinear sampling does not alias: by a whole
        f = 1 / math.ceil(side / (2 * size))  # factor, INTER_AREA's fast path, to between 1 and 2 sizes
        frame = shrink_towards(frame, f, cx + side / math.sqrt(2), cy + side / math.sqrt(2))
        cx, cy, side = cx * f, cy * f, side * f
    # rotate by `angle` about the crop centre, scale the square to size, put its centre in the middle
    m = cv2.getRotationMatrix2D((cx, cy), angle, size / side)
    m[0, 2] += size / 2 - cx
    m[1, 2] += size / 2 - cy
    crop = cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return _channels(crop, channels)
