import numpy as np
import pytest

from avemo_edge.backends import TorchBackend, create_backend
from avemo_edge.checkpoint import Checkpoint
from avemo_edge.errors import AvemoError
from avemo_edge.model import AVEmotionNet, ModelDims
from avemo_edge.recognizer import StreamingRecognizer


@pytest.fixture(scope="module")
def backend():
    model = AVEmotionNet(ModelDims(face_size=32))
    return TorchBackend(Checkpoint(model.dims, model.state_dict()))


def test_stream_of_steps(backend):
    rec = StreamingRecognizer(backend)
    rng = np.random.default_rng(0)
    face = rng.random((1, 32, 32), dtype=np.float32)
    results = []
    for i in range(20):
        f = face if i % 3 else None
        a = rng.standard_normal((64, 10)).astype(np.float32) if i < 15 else None
        results.append(rec.step(f, a, t=i * 0.1))
    for r in results:
        assert r.probs.shape == (7,) and abs(r.probs.sum() - 1) < 1e-6 and r.label in backend.classes
        assert 0 <= r.alpha <= 1 and 0 <= r.beta <= 1
    assert results[0].face is False and results[0].alpha == 0
    assert results[16].audio is False and results[16].beta == 0
    # neither modality (step 18: i % 3 == 0, no audio): the smoothed output is held
    assert results[18].face is False and results[18].audio is False
    assert np.array_equal(results[18].probs, results[17].probs)
    d = results[5].as_dict(backend.classes)
    assert set(d["probs"]) == set(backend.classes)


def test_recognizer_matches_model_on_the_same_stream(backend):
    import torch

    rng = np.random.default_rng(1)
    faces = rng.random((6, 1, 32, 32), dtype=np.float32)
    audio = rng.standard_normal((6, 64, 10)).astype(np.float32)
    rec = StreamingRecognizer(backend, smoothing=0.0)  # no smoothing: raw == probs
    got = np.stack([rec.step(f, a).raw for f, a in zip(faces, audio, strict=True)])
    with torch.no_grad():
        logits, *_ = backend.model(torch.from_numpy(faces)[None], torch.from_numpy(audio)[None])
    assert np.allclose(got, logits[0].softmax(-1).numpy(), atol=1e-5)


class ScriptedBackend:
    """A backend whose logits alternate between two close classes: a flickering stream."""

    classes = ("a", "b", "c")
    dims = ModelDims()  # the Backend protocol's dims (no level normalisation)

    def __init__(self) -> None:
        self.i = 0

    def init_state(self) -> None:
        return None

    def step(self, face, audio, state):  # noqa: ANN001, ANN201
        self.i += 1
        logits = np.log(np.array([0.46, 0.44, 0.10] if self.i % 2 else [0.44, 0.46, 0.10]))
        return logits, 0.5, 0.5, state


def test_recognizer_label_is_the_held_label():
    plain = StreamingRecognizer(ScriptedBackend(), 0.0, 0.0)
    held = StreamingRecognizer(ScriptedBackend(), 0.0, 0.1)
    a = [plain.step(None, np.zeros((64, 10), np.float32)).label for _ in range(10)]
    b = [held.step(None, np.zeros((64, 10), np.float32)).label for _ in range(10)]
    assert a == ["a", "b"] * 5  # the argmax flickers
    assert b == ["a"] * 10  # "b" never leads "a" by 0.1
    held.reset()
    assert held.filter.shown is None


def test_unknown_backend_and_bad_precision():
    with pytest.raises(AvemoError, match="unknown backend 'tflite'; choose one of"):
        create_backend("tflite", "x.pt")
    model = AVEmotionNet(ModelDims(face_size=32))
    with pytest.raises(AvemoError, match="fp16 in torch needs a CUDA device"):
        TorchBackend(Checkpoint(model.dims, model.state_dict()), precision="fp16")
