import numpy as np
import pytest

from avemo_edge.face import Box, FaceCropper, HaarFaceDetector, crop_face


@pytest.fixture(scope="module")
def cropper():
    return FaceCropper(size=48, channels=1)


def test_face_found_on_real_photo(astronaut_bgr, cropper):
    box = cropper.find(astronaut_bgr)
    assert box is not None
    # The astronaut's face lies around x 180-270, y 65-160 in the 512x512 photo.
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    assert 190 < cx < 260 and 80 < cy < 150, box
    crop = cropper(astronaut_bgr)
    assert crop.shape == (1, 48, 48) and crop.dtype == np.float32
    assert 0.0 <= crop.min() and crop.max() <= 1.0 and crop.std() > 0.05


def test_rgb_crop_for_the_paper_size(astronaut_bgr):
    crop = FaceCropper(size=224, channels=3)(astronaut_bgr)
    assert crop.shape == (3, 224, 224)
    # RGB order: the photo's red channel (BGR index 2) is channel 0 of the crop.
    box = FaceCropper().find(astronaut_bgr)
    assert np.allclose(crop, crop_face(astronaut_bgr, box, 224, 3))


def test_grey_and_bgra_frames(astronaut_bgr, cropper):
    import cv2

    grey = cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2GRAY)
    bgra = cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2BGRA)
    assert cropper(grey) is not None and cropper(bgra) is not None


@pytest.mark.parametrize("frame", [np.zeros((480, 640, 3), np.uint8), np.full((240, 320), 200, np.uint8)])
def test_no_face_gives_none(frame, cropper):
    assert cropper(frame) is None


def test_empty_or_missing_frame_gives_none(cropper):
    assert cropper(None) is None
    assert cropper(np.zeros((0, 0, 3), np.uint8)) is None


def test_largest_face_is_chosen(astronaut_bgr):
    class TwoFaces:
        def detect(self, gray):
            return [Box(0, 0, 20, 20), Box(100, 100, 60, 60), Box(300, 300, 30, 30)]

    assert FaceCropper(detector=TwoFaces()).find(astronaut_bgr) == Box(100, 100, 60, 60)


def test_crop_at_frame_edge_is_padded():
    frame = np.random.default_rng(0).integers(0, 255, (100, 100, 3), dtype=np.uint8)
    crop = crop_face(frame, Box(80, -10, 40, 40), 48, 1)
    assert crop.shape == (1, 48, 48)


def test_bad_cascade_path_is_a_sentence(tmp_path):
    with pytest.raises(FileNotFoundError, match="could not be loaded"):
        HaarFaceDetector(tmp_path / "nope.xml")
