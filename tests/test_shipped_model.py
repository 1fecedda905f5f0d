"""Properties of the model that ships (`avemo_edge/assets/default.pt`) that its users rely on.

- The voice branch does not change its answer when the speaker is quieter or louder.
- The face branch does not change its answer when the camera frames or exposes a face a little
  differently, or sees it mirrored.

The RAVDESS and FER+ parts read `../shared/data` and skip where it is absent; the embedded
sample clip is always there.
"""

from pathlib import Path

import numpy as np
import pytest

from avemo_edge.audio import SAMPLE_RATE, resample, to_float_mono
from avemo_edge.backends import TorchBackend
from avemo_edge.capture import SAMPLE_CLIP
from avemo_edge.checkpoint import load_checkpoint
from avemo_edge.doctor import default_model_path
from avemo_edge.media import decode_audio
from avemo_edge.recognizer import StreamingRecognizer

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RAVDESS = SHARED / "ravdess_speech_16k"
FER_TEST = SHARED / "ferplus" / "FER2013Test"
GAINS_DB = (-20.0, -10.0, 6.0)
MAX_CHANGED = 0.05  # the issues' target: at most 5 % of labels change


@pytest.fixture(scope="module")
def backend():
    import torch

    torch.set_num_threads(1)
    return TorchBackend(load_checkpoint(default_model_path()))


def _wave(path: Path) -> np.ndarray:
    x, rate = decode_audio(path)
    x = to_float_mono(x)
    return (x if rate == SAMPLE_RATE else resample(x, rate)).numpy()


def _clip_label(backend, wave: np.ndarray) -> int:
    from training.audio_report import stream_clip

    raw, _, _ = stream_clip(StreamingRecognizer(backend), wave)
    return int(raw.mean(0).argmax())  # the clip label of the audio issue: argmax of the mean probabilities


def _ravdess_test_clips(n_per_actor: int = 8) -> list[Path]:
    """A fixed sample of test-actor (21-24) recordings: every 7th file of each actor."""
    files = []
    for actor in (21, 22, 23, 24):
        files += sorted((RAVDESS / f"Actor_{actor:02d}").glob("*.flac"))[::7][:n_per_actor]
    return files


def test_sample_clip_voice_label_survives_gain(backend):
    wave = _wave(SAMPLE_CLIP)
    ref = _clip_label(backend, wave)
    for g in GAINS_DB:
        assert _clip_label(backend, wave * np.float32(10 ** (g / 20))) == ref, f"{g:+g} dB changed the label"


@pytest.mark.skipif(not RAVDESS.is_dir(), reason="RAVDESS speech is not in ../shared/data")
def test_ravdess_voice_labels_survive_gain(backend):
    waves = [_wave(f) for f in _ravdess_test_clips()]
    ref = np.array([_clip_label(backend, w) for w in waves])
    for g in GAINS_DB:
        got = np.array([_clip_label(backend, w * np.float32(10 ** (g / 20))) for w in waves])
        assert np.mean(got != ref) <= MAX_CHANGED, f"{g:+g} dB changed {np.mean(got != ref):.1%} of {len(waves)} labels"


@pytest.mark.skipif(not FER_TEST.is_dir(), reason="FER+ test images are not in ../shared/data")
@pytest.mark.xfail(
    strict=True,
    reason="target of issue #12 missed by the session-9 default model: shifts, scale and brightness change 8-13 % of "
    "500 FER+ test faces' labels, contrast 4.6-5.4 %, mirror 0 (docs/RESULTS.md); strict, so the test fails once a "
    "shipped model meets it and this mark must go",
)
def test_face_labels_survive_framing_exposure_and_mirror(backend):
    import cv2

    from training.face_report import label_changes

    faces = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in sorted(FER_TEST.glob("*.png"))[:200]]
    changed = label_changes(backend, faces)
    bad = {k: f"{v:.1%}" for k, v in changed.items() if v > MAX_CHANGED}
    assert not bad, f"labels changed on more than {MAX_CHANGED:.0%} of {len(faces)} FER+ test faces: {bad}"
