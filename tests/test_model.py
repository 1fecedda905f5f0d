import pytest
import torch

from avemo_edge.model import EMOTIONS, PAPER_DIMS, AVEmotionNet, ModelDims, count_parameters


def clip(dims, b=2, t=7):
    faces = torch.rand(b, t, dims.face_channels, dims.face_size, dims.face_size)
    audio = torch.randn(b, t, dims.n_mels, dims.slice_frames)
    return faces, audio


@pytest.mark.parametrize(
    "dims",
    [ModelDims(), ModelDims(face_size=64), PAPER_DIMS, ModelDims(face_width=8, audio_pool_s=3.0)],
    ids=["48grey", "64grey", "paper224", "pooled"],
)
def test_step_by_step_equals_whole_clip(dims):
    model = AVEmotionNet(dims).eval()
    faces, audio = clip(dims, t=5)
    with torch.no_grad():
        logits, alpha, beta, state = model(faces, audio)
        s, steps = None, []
        for i in range(faces.shape[1]):
            out, a, b, s = model.step(faces[:, i], audio[:, i], s)
            steps.append(out)
    assert logits.shape == (2, 5, 7)
    assert torch.allclose(torch.stack(steps, 1), logits, atol=1e-5)
    assert torch.allclose(s[0], state[0], atol=1e-6) and torch.allclose(s[1], state[1], atol=1e-6)


@pytest.mark.parametrize("pool_s", [0.0, 3.0], ids=["plain", "pooled"])
def test_masked_steps_equal_whole_clip_and_keep_state(pool_s):
    model = AVEmotionNet(ModelDims(audio_pool_s=pool_s)).eval()
    faces, audio = clip(model.dims)
    fm = torch.tensor([[1, 0, 1, 1, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    am = torch.tensor([[1, 1, 0, 0, 1, 1, 1], [1, 1, 1, 0, 1, 1, 1]], dtype=torch.bool)
    with torch.no_grad():
        logits, alpha, beta, state = model(faces, audio, fm, am)
        s, steps = None, []
        for i in range(7):
            out, _, _, s_new = model.step(faces[:, i], audio[:, i], s, fm[:, i], am[:, i])
            if s is not None:  # a step without audio leaves the LSTM state untouched
                for row in range(2):
                    if not am[row, i]:
                        assert torch.equal(s_new[0][:, row], s[0][:, row])
                        assert torch.equal(s_new[1][:, row], s[1][:, row])
            s = s_new
            steps.append(out)
    assert torch.allclose(torch.stack(steps, 1), logits, atol=1e-5)
    assert torch.all(alpha[~fm] == 0) and torch.all(beta[~am] == 0)


def test_gates_in_unit_interval_and_missing_modalities():
    model = AVEmotionNet().eval()
    faces, audio = clip(model.dims)
    with torch.no_grad():
        _, alpha, beta, _ = model(faces * 10, audio * 50)
        assert alpha.min() >= 0 and alpha.max() <= 1 and beta.min() >= 0 and beta.max() <= 1
        logits, alpha, beta, _ = model(None, audio)  # no camera
        assert torch.all(alpha == 0) and torch.all(beta > 0) and torch.isfinite(logits).all()
        logits, alpha, beta, _ = model(faces, None)  # no microphone
        assert torch.all(beta == 0) and torch.all(alpha > 0)
    with pytest.raises(ValueError, match="both were None"):
        model(None, None)


def test_whole_stream_missing_in_a_batch_uses_fast_path_and_keeps_state():
    model = AVEmotionNet().eval()
    faces, audio = clip(model.dims)
    am = torch.tensor([[True] * 7, [False] * 7])
    with torch.no_grad():
        s0 = model.init_state(2)
        s0 = (torch.randn_like(s0[0]), torch.randn_like(s0[1]))
        _, _, beta, s = model(faces, audio, None, am, s0)
    assert torch.equal(s[0][:, 1], s0[0][:, 1]) and not torch.equal(s[0][:, 0], s0[0][:, 0])
    assert torch.all(beta[1] == 0)


def test_bidirectional_trains_offline_but_refuses_to_stream():
    model = AVEmotionNet(ModelDims(bidirectional=True)).eval()
    faces, audio = clip(model.dims)
    logits, *_ = model(faces, audio)
    assert logits.shape == (2, 7, 7)
    with pytest.raises(ValueError, match="cannot stream"):
        model.step(faces[:, 0], audio[:, 0])


def test_visual_embedding_is_unit_length_and_resnet18_sized():
    model = AVEmotionNet(PAPER_DIMS).eval()
    v = model.visual(torch.rand(3, 3, 224, 224))
    assert v.shape == (3, 128) and torch.allclose(v.norm(dim=-1), torch.ones(3), atol=1e-5)
    resnet = count_parameters(model.visual) - count_parameters(model.visual.proj)
    assert resnet == 11_176_512  # torchvision resnet18 minus its 1000-way fc (11,689,512 - 513,000)


def test_mirror_branch_cannot_tell_a_face_from_its_mirror_and_keeps_the_weights():
    torch.manual_seed(0)
    plain = AVEmotionNet(ModelDims(face_width=8)).eval()
    mirror = AVEmotionNet(ModelDims(face_width=8, face_mirror=True)).eval()
    mirror.load_state_dict(plain.state_dict())  # the same tensors: a checkpoint switches either way
    faces = torch.rand(3, 1, 48, 48)
    with torch.no_grad():
        v, v_flip = mirror.visual(faces), mirror.visual(faces.flip(-1))
        avg = plain.visual.proj(0.5 * (_pooled(plain.visual, faces) + _pooled(plain.visual, faces.flip(-1))))
    assert torch.allclose(v, v_flip, atol=1e-5)  # exactly mirror-blind
    assert torch.allclose(v, torch.nn.functional.normalize(avg, dim=-1), atol=1e-5)  # the mean of the two
    assert not torch.allclose(plain.visual(faces), plain.visual(faces.flip(-1)), atol=1e-3)  # a plain one is not


def _pooled(enc, x):
    x = enc.layer4(enc.layer3(enc.layer2(enc.layer1(enc.stem(x)))))
    return torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1)


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        ({"face_stem": "vgg"}, "face_stem"),
        ({"face_channels": 2}, "face_channels"),
        ({"n_mels": 60}, "multiple of 8"),
        ({"audio_norm": "cepstral"}, "audio_norm"),
    ],
)
def test_unsupported_dims_rejected_with_a_sentence(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        ModelDims(**kwargs)


def test_seven_classes():
    assert EMOTIONS == ("neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised")


@pytest.mark.parametrize("pool_s", [0.0, 3.0], ids=["plain", "pooled"])
def test_padded_streams_equal_each_stream_alone_and_padding_never_reaches_batch_norm(pool_s):
    """Clips of different lengths in one training batch: the padding after a short clip must not
    change a real step (in train mode batch norm takes its statistics from the batch, so padded
    slices would shift every step's features), and eval mode gives each stream's own numbers."""
    torch.manual_seed(0)
    model = AVEmotionNet(ModelDims(face_width=8, audio_pool_s=pool_s))
    x = torch.randn(3, 7, 64, 10)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5]).bool()
    other = x.clone()
    other[~mask] = 50.0  # different padding content
    model.train()
    torch.manual_seed(1)
    a, *_ = model(None, x, audio_mask=mask)
    torch.manual_seed(1)
    b, *_ = model(None, other, audio_mask=mask)
    assert torch.allclose(a[mask], b[mask], atol=1e-5)
    model.eval()
    logits, _, _, (h, c) = model(None, x, audio_mask=mask)
    assert h.shape == model.dims.state_shape(3)
    for i, n in enumerate((7, 4, 2)):
        alone, _, _, (hi, ci) = model(None, x[i : i + 1, :n])
        assert torch.allclose(alone[0], logits[i, :n], atol=1e-5)
        assert torch.allclose(hi[:, 0], h[:, i], atol=1e-5)  # the state after the stream's own last step
        assert torch.allclose(ci[:, 0], c[:, i], atol=1e-5)


def test_pooled_statistics_are_causal_weighted_and_forget():
    """The pool's running mean is the w-weighted mean of the projected features, it forgets with its
    time constant (a device listening for months stays on the present), and the state carries it."""
    torch.manual_seed(0)
    dims = ModelDims(face_width=8, audio_pool_s=1.0)
    model = AVEmotionNet(dims).eval()
    assert dims.state_shape(2) == (dims.lstm_layers + 2, 2, dims.lstm_hidden)
    pool = model.audio.pool
    feats = torch.randn(1, 80, model.audio.n_features)
    zero = (torch.zeros(2, 1, dims.lstm_hidden), torch.zeros(2, 1, dims.lstm_hidden))
    with torch.no_grad():
        stats, (h, c) = pool(feats, zero, None)
        p, w = pool.value(feats)[0], torch.sigmoid(pool.weight(feats))[0]
        age = torch.arange(79, -1, -1, dtype=torch.float32)[:, None]
        k = w * pool.decay**age  # each step's weight in the mean after the last step
        want = (k * p).sum(0) / k.sum()
        assert torch.allclose(stats[0, -1, : dims.lstm_hidden], want, atol=1e-5)
        assert torch.allclose(h[0, 0], want, atol=1e-5) and torch.allclose(h[1, 0], k.sum().expand(dims.lstm_hidden))
        std = ((k * p * p).sum(0) / k.sum() - want**2).clamp_min(0).add(1e-5).sqrt()
        assert torch.allclose(stats[0, -1, dims.lstm_hidden :], std, atol=1e-4)
        assert float(k[0] / k.sum()) < 1e-3  # 8 s old with a 1 s time constant: forgotten
        # the future never reaches the past
        later = feats.clone()
        later[:, 20:] += 5.0
        assert torch.equal(pool(later, zero, None)[0][:, :20], stats[:, :20])


@pytest.mark.parametrize("stem, side", [("small", 3), ("full", 6)])
def test_face_stems_reach_layer4_at_their_resolution(stem, side):
    enc = AVEmotionNet(ModelDims(face_width=8, face_stem=stem)).visual.eval()
    with torch.no_grad():
        x = enc.layer4(enc.layer3(enc.layer2(enc.layer1(enc.stem(torch.rand(2, 1, 48, 48))))))
        emb = enc(torch.rand(2, 1, 48, 48))
    assert x.shape == (2, 64, side, side)  # 8W channels; a 48 px face at 3x3 (small) or 6x6 (full)
    assert emb.shape == (2, 128) and torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-4)
