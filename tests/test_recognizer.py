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


class LoopOnly:
    """The backend interface without `step_rows`: `backends.step_rows` falls back to one `step` per row."""

    def __init__(self, inner) -> None:  # noqa: ANN001
        self.inner, self.name, self.dims, self.classes = inner, "loop", inner.dims, inner.classes

    def init_state(self):  # noqa: ANN201
        return self.inner.init_state()

    def step(self, face, audio, state):  # noqa: ANN001, ANN201
        return self.inner.step(face, audio, state)


def test_batched_visual_encoding_equals_per_face_encoding(backend):
    import torch

    from avemo_edge.backends import step_rows

    rng = np.random.default_rng(2)
    faces = list(rng.random((4, 1, 32, 32), dtype=np.float32))
    audio = [rng.standard_normal((64, 10)).astype(np.float32) for _ in range(2)]
    states = [backend.init_state(), backend.init_state()]
    for _ in range(3):  # two streams whose LSTM states are not zero
        states = [backend.step(faces[0], a, s)[3] for a, s in zip(audio, states, strict=True)]
    calls = []
    hook = backend.model.visual.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        # rows 0 and 3 carry a voice (two streams), rows 1 and 2 are visual-only faces, row 4 audio only
        slices = [audio[0], None, None, audio[1], audio[0]]
        rows = (faces + [None], slices, [states[0], None, None, states[1], states[0]])
        logits, alpha, beta, new = backend.step_rows(*rows)
    finally:
        hook.remove()
    assert calls == [4]  # one visual encoder call on the (4, C, S, S) batch
    ref = [
        backend.step(faces[0], audio[0], states[0]),
        backend.step(faces[1], None, backend.init_state()),
        backend.step(faces[2], None, backend.init_state()),
        backend.step(faces[3], audio[1], states[1]),
        backend.step(None, audio[0], states[0]),
    ]
    assert np.allclose(logits, np.stack([r[0] for r in ref]), atol=1e-5)
    assert np.allclose(alpha, [r[1] for r in ref], atol=1e-6) and np.allclose(beta, [r[2] for r in ref], atol=1e-6)
    assert beta[1] == beta[2] == 0 and alpha[4] == 0
    for j in (0, 3, 4):  # each stream's own new state
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(new[j], ref[j][3], strict=True))
    assert new[1] is None and new[2] is None  # rows without audio leave their state alone
    with torch.no_grad():  # the encoder itself: a batch gives each face's own embedding
        batch = backend.model.visual(torch.from_numpy(np.stack(faces)))
        one = torch.cat([backend.model.visual(torch.from_numpy(f)[None]) for f in faces])
    assert torch.allclose(batch, one, atol=1e-6)
    looped = step_rows(LoopOnly(backend), *rows)  # a backend without step_rows: one step per row
    assert np.allclose(looped[0], logits, atol=1e-5) and looped[3][1] is None


def test_several_faces_one_voice_and_a_filter_per_track(backend):
    rng = np.random.default_rng(3)
    f1, f2, f3 = rng.random((3, 1, 32, 32), dtype=np.float32)
    audio = [rng.standard_normal((64, 10)).astype(np.float32) for _ in range(6)]
    multi, single = StreamingRecognizer(backend), StreamingRecognizer(backend)
    # one face: exactly step()
    for i in range(2):
        got = multi.step_faces([(7, f1)], audio[i], t=0.1 * i)
        want = single.step(f1, audio[i], t=0.1 * i)
        assert np.array_equal(got.primary.probs, want.probs) and got.voice == 7
        assert got.faces[0].fused and np.array_equal(got.faces[0].raw, want.raw)
    # a second face joins; the voice goes with track 8, track 7 becomes a visual-only row
    got = multi.step_faces([(7, f1), (8, f2)], audio[2], t=0.2, voice=8)
    want = single.step(f2, audio[2], t=0.2)  # the stream's result: the voice with the face it was fused with
    assert np.allclose(got.primary.probs, want.probs, atol=1e-6) and got.voice == 8
    by_id = {r.id: r for r in got.faces}
    assert by_id[8].fused and not by_id[7].fused and by_id[7].beta == 0 and by_id[8].beta > 0
    visual_only = backend.step(f1, None, backend.init_state())[0]
    assert np.allclose(by_id[7].raw, np.exp(visual_only) / np.exp(visual_only).sum(), atol=1e-5)
    assert set(multi.track_filters) == {7, 8}
    # track 8 leaves and a new one (9) comes: 8's filter goes, 9's starts from its first row
    got = multi.step_faces([(7, f1), (9, f3)], audio[3], t=0.3, voice=7)
    assert set(multi.track_filters) == {7, 9}
    new = {r.id: r for r in got.faces}[9]
    assert np.array_equal(new.probs, new.raw)
    # no face: the voice alone, as step(None, audio)
    got = multi.step_faces([], audio[4], t=0.4)
    want = single.step(None, audio[4], t=0.4)
    assert got.faces == [] and got.voice is None and not got.primary.face and multi.track_filters == {}
    assert got.primary.beta > 0 and got.primary.alpha == 0
    with pytest.raises(ValueError, match="distinct"):
        multi.step_faces([(1, f1), (1, f2)], None)


def test_streams_pooled_on_one_backend_get_their_own_results(backend):
    import threading

    from avemo_edge.batching import RowPool

    rng = np.random.default_rng(4)
    n_streams, steps = 3, 6
    faces = rng.random((n_streams, steps, 2, 1, 32, 32), dtype=np.float32)  # two faces per stream and step
    audio = rng.standard_normal((n_streams, steps, 64, 10)).astype(np.float32)
    want = []
    for s in range(n_streams):  # each stream alone on the bare backend
        rec = StreamingRecognizer(backend)
        want.append([rec.step_faces([(1, faces[s, k, 0]), (2, faces[s, k, 1])], audio[s, k], t=0.1 * k)
                     for k in range(steps)])  # fmt: skip
    pool = RowPool(backend, wait_s=5.0)  # long enough that every call holds all three streams
    got: list[list] = [[] for _ in range(n_streams)]

    def run(s: int, member) -> None:  # noqa: ANN001
        rec = StreamingRecognizer(member)
        for k in range(steps):
            got[s].append(rec.step_faces([(1, faces[s, k, 0]), (2, faces[s, k, 1])], audio[s, k], t=0.1 * k))
        member.close()

    members = [pool.join() for _ in range(n_streams)]
    threads = [threading.Thread(target=run, args=(s, m)) for s, m in enumerate(members)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert pool.calls == steps and pool.rows == steps * n_streams * 2  # one call per step for all streams
    for s in range(n_streams):
        for a, b in zip(got[s], want[s], strict=True):
            assert np.allclose(a.primary.probs, b.primary.probs, atol=1e-5)
            assert all(np.allclose(x.probs, y.probs, atol=1e-5) for x, y in zip(a.faces, b.faces, strict=True))
