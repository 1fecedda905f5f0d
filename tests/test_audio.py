"""Log-mel features against an independent numpy reference, and the stream == file property."""

import math

import numpy as np
import pytest
import torch

from avemo_edge import audio as A


def reference_log_mel(x: np.ndarray) -> np.ndarray:
    """The paper's recipe written from scratch in numpy, frame by frame (float64).

    16 kHz, 40 ms periodic Hamming window, 20 ms hop, |rfft|^2, 64 HTK-mel triangles 0-8 kHz,
    log10 with a 1e-10 floor. Causal framing: the signal is preceded by 1920 zeros.
    """
    sr, win, hop, n_mels = 16000, 640, 320, 64
    x = np.concatenate([np.zeros(1920), x.astype(np.float64)])
    n = np.arange(win)
    window = 0.54 - 0.46 * np.cos(2 * np.pi * n / win)
    n_bins = win // 2 + 1
    bin_hz = np.arange(n_bins) * sr / win
    mel = lambda f: 2595 * math.log10(1 + f / 700)  # noqa: E731
    inv = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
    pts = [inv(mel(0) + i * (mel(8000) - mel(0)) / (n_mels + 1)) for i in range(n_mels + 2)]
    fb = np.zeros((n_mels, n_bins))
    for m in range(n_mels):
        lo, c, hi = pts[m], pts[m + 1], pts[m + 2]
        for k, f in enumerate(bin_hz):
            if lo < f <= c:
                fb[m, k] = (f - lo) / (c - lo)
            elif c < f < hi:
                fb[m, k] = (hi - f) / (hi - c)
    frames = []
    for start in range(0, len(x) - win + 1, hop):
        spec = np.fft.rfft(x[start : start + win] * window)
        frames.append(np.log10(np.maximum(fb @ (np.abs(spec) ** 2), 1e-10)))
    return np.array(frames).T  # (64, F)


def speechlike(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 140 + 30 * np.sin(2 * np.pi * 1.5 * t)
    x = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / sr) / k for k in range(1, 12))
    x *= 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    return (0.2 * x / np.abs(x).max() + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def test_log_mel_matches_numpy_reference():
    x = speechlike(1.3)
    slices = A.log_mel_slices(x).numpy()  # (T, 64, 10)
    ref = reference_log_mel(x)
    assert slices.shape == (13, 64, 10)
    for t in range(slices.shape[0]):
        expect = ref[:, 5 * t : 5 * t + 10]
        err = np.abs(slices[t] - expect).max()
        assert err < 2e-3, f"step {t}: max abs error {err:.2e} (log10 units)"
    # Where the signal has energy (not the zero-padded history) float32 error is far smaller.
    err = np.abs(slices[5:] - np.stack([ref[:, 5 * t : 5 * t + 10] for t in range(5, 13)])).max()
    print(f"max abs error vs numpy reference on speech-like frames: {err:.2e}")
    assert err < 1e-4


def test_filterbank_triangles():
    fb = A.mel_filters().numpy()
    assert fb.shape == (64, 321)
    assert fb.min() >= 0 and fb.max() <= 1.0 + 1e-6
    peaks = fb.argmax(axis=1)
    assert np.all(np.diff(peaks) >= 0), "filter centres must rise with the band index"
    assert fb[:, -1].sum() == pytest.approx(0.0, abs=1e-6)  # 8 kHz is the last edge, not inside a band


def test_stream_equals_file_for_any_block_sizes():
    x = speechlike(2.05, seed=1)
    whole = A.log_mel_slices(x)
    rng = np.random.default_rng(3)
    chunker, parts, i = A.AudioChunker(), [], 0
    while i < x.size:
        n = int(rng.integers(1, 2500))
        parts.append(chunker.push(x[i : i + n]))
        i += n
    parts.append(chunker.flush())
    streamed = torch.cat(parts)
    assert streamed.shape == whole.shape == (21, 64, 10)  # 20 full steps + a 50 ms tail padded
    assert torch.equal(streamed, whole) or (streamed - whole).abs().max() < 1e-5


def test_causal_slice_ignores_the_future():
    x = speechlike(1.0)
    y = x.copy()
    y[8 * 1600 :] = 0.9  # change everything after step 7
    a, b = A.log_mel_slices(x), A.log_mel_slices(y)
    assert torch.equal(a[:8], b[:8])
    assert not torch.equal(a[8], b[8])


def test_int16_stereo_44k_is_converted():
    sr = 44100
    t = np.arange(int(1.0 * sr)) / sr
    tone = lambda tt: 0.3 * np.sin(2 * np.pi * 440 * tt) + 0.2 * np.sin(2 * np.pi * 2500 * tt)  # noqa: E731
    left, right = tone(t), tone(t)
    stereo = (np.stack([left, right], axis=1) * 32767).astype(np.int16)
    got = A.log_mel_slices(stereo, sample_rate=sr, channels=2)
    t16 = np.arange(16000) / 16000
    ref = A.log_mel_slices(tone(t16).astype(np.float32))
    assert got.shape == ref.shape
    # Interior steps (no filter edge effects): bands with energy agree to within 0.05 log10.
    strong = ref[3:-2] > -3
    assert (got[3:-2][strong] - ref[3:-2][strong]).abs().max() < 0.05
    # Interleaved int16 gives the same as (n, 2).
    inter = A.log_mel_slices(stereo.reshape(-1), sample_rate=sr, channels=2)
    assert torch.allclose(inter, got, atol=1e-6)


@pytest.mark.parametrize("orig", [8000, 22050, 44100, 48000])
def test_resampler_stream_equals_one_shot_and_is_accurate(orig):
    rng = np.random.default_rng(0)
    n = orig * 2
    t = torch.arange(n, dtype=torch.float64) / orig
    sig = (0.5 * torch.sin(2 * math.pi * 300 * t) + 0.3 * torch.sin(2 * math.pi * 1900 * t)).float()
    one = A.resample(sig, orig)
    r, parts, i = A.StreamResampler(orig), [], 0
    while i < n:
        k = int(rng.integers(1, 4000))
        parts.append(r.push(sig[i : i + k]))
        i += k
    parts.append(r.flush())
    streamed = torch.cat(parts)
    assert streamed.numel() == one.numel() == math.ceil(n * 16000 / orig)
    assert (streamed - one).abs().max() < 1e-5
    tt = torch.arange(one.numel(), dtype=torch.float64) / 16000
    ref = (0.5 * torch.sin(2 * math.pi * 300 * tt) + 0.3 * torch.sin(2 * math.pi * 1900 * tt)).float()
    assert (one - ref)[400:-400].abs().max() < 5e-3


@pytest.mark.parametrize("orig", [8000, 22050, 44100, 48000])
def test_resampler_is_the_strided_polyphase_convolution(orig):
    """The resampler's matrix product is the strided conv1d over the sinc kernels, to float32 rounding."""
    kernels, width = A._sinc_kernel(*(r // math.gcd(orig, 16000) for r in (orig, 16000)))
    stride = orig // math.gcd(orig, 16000)
    x = torch.from_numpy(np.random.default_rng(1).standard_normal(orig // 2).astype(np.float32)) * 0.3
    padded = torch.cat([torch.zeros(width), x])
    conv = torch.nn.functional.conv1d(padded[None, None], kernels, stride=stride)[0].T.reshape(-1)
    r = A.StreamResampler(orig)
    got = r.push(x)
    assert got.numel() == conv.numel() > 0
    assert float((got - conv).abs().max()) < 1e-6


def test_bad_samples_are_refused_with_a_sentence():
    with pytest.raises(ValueError, match="do not divide into 2 channels"):
        A.to_float_mono(np.zeros(5, np.int16), channels=2)
    with pytest.raises(ValueError, match="dtype"):
        A.to_float_mono(np.zeros(5, np.complex64))


@pytest.mark.parametrize(
    "n, sr", [(16000, 16000), (16799, 16000), (16800, 16000), (44100 * 2 + 7, 44100), (799, 16000)]
)
def test_step_count_matches_slices(n, sr):
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32) * 0.1
    assert A.step_count(n, sr) == A.log_mel_slices(x, sample_rate=sr).shape[0]


@pytest.mark.parametrize("kind", ["noise", "sine"])
def test_slice_level_matches_rms_within_0_3_db(kind):
    # docs/DESIGN.md: the speech flag's level is checked against white noise and a sine to 0.3 dB
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    x = 0.05 * rng.standard_normal(t.size) if kind == "noise" else 0.25 * np.sin(2 * np.pi * 440 * t)
    rms_db = 10 * np.log10(np.mean(x**2))
    levels = [A.slice_level_dbfs(s) for s in A.log_mel_slices(x.astype(np.float32))[2:]]
    assert max(abs(v - rms_db) for v in levels) < 0.3


def _speechy(seconds: float = 3.0, seed: int = 0, broadband: bool = False) -> np.ndarray:
    """A second of near-silence (room noise), then a pitched, amplitude-modulated tone complex
    (broadband: amplitude-modulated white noise, sound in every band)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * A.SAMPLE_RATE)) / A.SAMPLE_RATE
    voice = 0.5 * rng.standard_normal(t.size) if broadband else 0.0
    tones = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 12))
    voice = (voice + tones) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    voice[t < 1.0] = 0.0
    return (0.1 * voice + 1e-4 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize("mode", A.NORM_MODES)
@pytest.mark.parametrize("gain_db", [-20.0, -10.0, 6.0])
def test_level_normalizer_removes_gain(gain_db, mode):
    x = _speechy()
    ref = A.normalize_slices(A.log_mel_slices(x), 3.0, mode)
    got = A.normalize_slices(A.log_mel_slices(x * np.float32(10 ** (gain_db / 20))), 3.0, mode)
    onset = 11  # the first step whose new frames are all voice (the lead-in may meet the log floor)
    assert float((got[onset:] - ref[onset:]).abs().max()) < 1e-3  # log10 units: 0.01 dB


def test_level_normalizer_removes_static_eq_and_is_causal():
    # sound in every band: an EQ cancels in the bands that carry sound (an empty band is
    # measured against the stream's level instead, which an EQ of that band does not move)
    x = _speechy(broadband=True)
    slices = A.log_mel_slices(x)
    tilt = torch.linspace(-0.3, 0.3, A.N_MELS)[None, :, None]  # +-3 dB across the bands
    eq = torch.where(slices > A.SILENT_FRAME, slices + tilt, slices)  # a microphone EQs sound, not digital zero
    ref, got = A.normalize_slices(slices, 3.0), A.normalize_slices(eq, 3.0)
    # from the voice's onset, in the bands above 60 Hz (the three lowest sit at the empty-band
    # threshold, where a tilt of -3 dB moves them across it)
    assert float((got[11:, 3:] - ref[11:, 3:]).abs().max()) < 1e-4
    # a step's output depends on the past only: changing the future leaves it alone
    changed = slices.clone()
    changed[20:] += 1.0
    assert torch.equal(A.normalize_slices(changed, 3.0)[:20], ref[:20])


def test_level_mode_keeps_the_spectral_envelope():
    """mode "level" subtracts one number for all bands: a tilt of the spectrum reaches the network
    (as it does not in mode "band"), and the stream's first voiced step already shows it."""
    x = _speechy(broadband=True)
    slices = A.log_mel_slices(x)
    tilt = torch.linspace(-0.3, 0.3, A.N_MELS)[None, :, None]
    eq = torch.where(slices > A.SILENT_FRAME, slices + tilt, slices)
    ref, got = A.normalize_slices(slices, 3.0, "level"), A.normalize_slices(eq, 3.0, "level")
    diff = (got[11:] - ref[11:]).mean((0, 2))  # per band
    assert float(diff[-1] - diff[0]) == pytest.approx(0.6, abs=0.05)  # the full tilt, low to high
    norm = A.LevelNormalizer(3.0, "level")
    assert torch.all(norm(A.log_mel_slices(np.zeros(3200, np.float32))[0]) == -A.LEVEL_FLOOR)
    with pytest.raises(ValueError, match="mode"):
        A.LevelNormalizer(3.0, "cepstral")


def test_level_normalizer_silence_and_reset():
    norm = A.LevelNormalizer(3.0)
    zero = A.log_mel_slices(np.zeros(3200, np.float32))
    assert torch.all(norm(zero[0]) == A.NORM_SILENCE)  # digital silence before any sound
    loud = A.log_mel_slices(_speechy())
    for s in loud:
        norm(s)
    assert norm.mean is not None and norm.frames > 0
    norm.reset()
    assert norm.mean is None and norm.frames == 0
    with pytest.raises(ValueError, match="time constant"):
        A.LevelNormalizer(0.0)


@pytest.mark.parametrize("mode", A.NORM_MODES)
@pytest.mark.parametrize("gain_db", [-20.0, -10.0, 6.0])
def test_level_normalizer_removes_gain_near_the_log_floor(gain_db, mode):
    """RAVDESS-like recordings: speech at -40 dBFS, pauses of dithered near-silence (about -125 dBFS)
    whose quietest bands meet the front end's log floor once the gain drops. From the speech onset
    on, the normalised stream must not depend on the gain."""
    rng = np.random.default_rng(3)
    t = np.arange(4 * A.SAMPLE_RATE) / A.SAMPLE_RATE
    voice = sum(np.sin(2 * np.pi * 180 * k * t) / k for k in range(1, 12)) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    voice[(t < 1.0) | ((t > 2.0) & (t < 2.5))] = 0.0  # a lead-in and a pause
    x = (0.01 * voice + 3e-7 * rng.standard_normal(t.size)).astype(np.float32)
    ref = A.normalize_slices(A.log_mel_slices(x), 3.0, mode)
    got = A.normalize_slices(A.log_mel_slices(x * np.float32(10 ** (gain_db / 20))), 3.0, mode)
    onset = 11  # step 10 ends at 1.1 s: the first whose new frames are all speech
    assert float((got[onset:] - ref[onset:]).abs().max()) < 1e-3


class _TorchLevelNormalizer(A.LevelNormalizer):
    """The normaliser as it was written in torch, frame by frame (the numpy one must agree with it)."""

    def _torch_update(self, frame: torch.Tensor) -> None:
        level = float(10.0 * torch.log10((10.0 ** frame.double()).sum()))
        if self.mean is None or level > self.level + A.RESET_DB:
            self.mean, self.level, self.frames = frame.clone(), level, 1
            return
        if level < self.level - A.GATE_DB:
            return
        self.frames += 1
        w = max(1.0 / self.frames, self.min_weight)
        self.level += w * (level - self.level)
        self.mean += w * (frame - self.mean)

    def __call__(self, mel_slice):
        x = torch.as_tensor(np.asarray(mel_slice), dtype=torch.float32)
        silent = (x <= A.SILENT_FRAME).all(0)
        for j in range(x.shape[1] - A.FRAMES_PER_STEP, x.shape[1]):
            if not silent[j]:
                self._torch_update(x[:, j])
        if self.mean is None:
            return torch.full_like(x, A.NORM_SILENCE if self.mode == "band" else -A.LEVEL_FLOOR)
        if self.mode == "level":
            return torch.maximum(x - self.level / 10.0, torch.full_like(x, -A.LEVEL_FLOOR))
        ref = self.mean.clamp_min(self.level / 10.0 - A.EMPTY_BAND)[:, None]
        return torch.maximum(x - ref, torch.full_like(x, -A.NORM_FLOOR))


@pytest.mark.parametrize("mode", A.NORM_MODES)
def test_level_normalizer_equals_the_frame_by_frame_torch_version(mode):
    """The numpy normaliser gives the torch one's output and state, to float32 rounding, on streams
    that exercise every rule: a zero lead-in, a reset at the onset, gated pauses, the log floor."""
    rng = np.random.default_rng(5)
    t = np.arange(6 * A.SAMPLE_RATE) / A.SAMPLE_RATE
    x = _speechy(broadband=True)
    quiet = (0.01 * x[: t.size] + 3e-7 * rng.standard_normal(min(t.size, x.size))).astype(np.float32)
    quiet[(t[: quiet.size] > 2.0) & (t[: quiet.size] < 2.6)] = 0.0  # a digitally silent gap
    for signal in (x, quiet, np.concatenate([np.zeros(8000, np.float32), 3.0 * quiet])):
        slices = A.log_mel_slices(signal)
        new, old = A.LevelNormalizer(3.0, mode), _TorchLevelNormalizer(3.0, mode)
        for s in slices:
            got, want = new(s), old(s)
            assert float((got - want).abs().max()) < 1e-5
        assert new.frames == old.frames > 0
        assert new.level == pytest.approx(old.level, abs=1e-9)
        assert np.abs(new.mean - old.mean.numpy()).max() < 1e-5
