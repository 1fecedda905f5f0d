"""Audio front end: any rate and channel count in, one log-mel slice per 100 ms step out.

The paper (section 3.1.3): mono 16 kHz, a 40 ms Hamming window with 50 % overlap, a power
spectrum mapped to 64 mel bands over 0-8 kHz, log amplitude, and one spectrogram slice per
100 ms so that audio and the 10 Hz face stream line up. Everything is computed in torch.

One implementation serves a file and a live microphone: `AudioChunker.push` takes samples as
they arrive (any block size) and returns the slices that became complete, and
`log_mel_slices` is that same chunker fed the whole file at once. Framing is causal: the slice
of step t depends only on samples up to the end of step t.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import torch

# --- signal constants (each derived value says where it comes from) ------------------------
SAMPLE_RATE = 16_000  # Hz, paper 3.1.3
WIN_LENGTH = 640  # 40 ms Hamming window at 16 kHz
HOP_LENGTH = 320  # 50 % overlap -> a frame every 20 ms
N_FFT = WIN_LENGTH  # no zero padding: 321 bins, 25 Hz apart
N_MELS = 64
F_MIN, F_MAX = 0.0, SAMPLE_RATE / 2  # 0-8 kHz
LOG_FLOOR = 1e-10  # log10 floor: digital silence maps to -10
STEP_SECONDS = 0.1  # one recognition step per 100 ms (the paper's 10 Hz)
STEP_SAMPLES = int(SAMPLE_RATE * STEP_SECONDS)  # 1600
FRAMES_PER_STEP = STEP_SAMPLES // HOP_LENGTH  # 5 new frames per step
# A slice holds the step's 5 new frames plus the 5 of the step before (200 ms of context).
# The paper's slices are "64 x N, N ~ 9-10"; with a 20 ms hop, 100 ms alone gives only 5
# frames, too few for three 2-D conv layers, so consecutive slices overlap by half.
SLICE_FRAMES = 2 * FRAMES_PER_STEP  # 10
# Samples one slice spans: the first frame's start to the last frame's end.
SLICE_SPAN = (SLICE_FRAMES - 1) * HOP_LENGTH + WIN_LENGTH  # 3520
# Zeros in front of a stream so that frame windows end exactly on hop boundaries
# (WIN - HOP) and so that step 0 has a full slice of history (SLICE - STEP frames).
LEFT_PAD = (WIN_LENGTH - HOP_LENGTH) + (SLICE_FRAMES - FRAMES_PER_STEP) * HOP_LENGTH  # 1920


def preprocessing_constants() -> dict[str, float | int | str]:
    """The constants a checkpoint or an exported model must agree with (saved inside both)."""
    return {
        "sample_rate": SAMPLE_RATE,
        "win_length": WIN_LENGTH,
        "hop_length": HOP_LENGTH,
        "n_fft": N_FFT,
        "n_mels": N_MELS,
        "f_min": F_MIN,
        "f_max": F_MAX,
        "mel_scale": "htk",
        "window": "hamming-periodic",
        "log": "log10",
        "log_floor": LOG_FLOOR,
        "step_samples": STEP_SAMPLES,
        "slice_frames": SLICE_FRAMES,
    }


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: 2595 * log10(1 + f / 700)."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


@cache
def mel_filters() -> torch.Tensor:
    """Triangular filters (N_MELS, N_FFT // 2 + 1), equally spaced on the HTK mel scale."""
    freqs = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(F_MIN), hz_to_mel(F_MAX), N_MELS + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None, :] - lower) / (centre - lower)
    falling = (upper - freqs[None, :]) / (upper - centre)
    fb = np.clip(np.minimum(rising, falling), 0.0, None)
    return torch.from_numpy(fb.astype(np.float32))


@cache
def _window() -> torch.Tensor:
    return torch.hamming_window(WIN_LENGTH, periodic=True, dtype=torch.float32)


def log_mel_frames(samples: torch.Tensor) -> torch.Tensor:
    """Frames of a 16 kHz mono signal -> (N_MELS, n_frames) log10 mel power.

    Frame j covers samples [j * HOP, j * HOP + WIN); a trailing partial frame is dropped.
    """
    frames = samples.unfold(-1, WIN_LENGTH, HOP_LENGTH)  # (F, WIN)
    spec = torch.fft.rfft(frames * _window(), n=N_FFT)  # (F, 321)
    power = spec.real.square() + spec.imag.square()
    mel = power @ mel_filters().T  # (F, 64)
    return torch.log10(mel.clamp_min(LOG_FLOOR)).T.contiguous()  # (64, F)


# --- input conversion ---------------------------------------------------------------------
def to_float_mono(samples: np.ndarray | torch.Tensor, channels: int = 1) -> torch.Tensor:
    """Integer or float PCM -> float32 mono in [-1, 1].

    `samples` is 1-D (mono, or interleaved when `channels` > 1) or 2-D (n_samples, channels).
    Channels are averaged, as the paper's downmix.
    """
    x = torch.as_tensor(np.asarray(samples)) if not isinstance(samples, torch.Tensor) else samples
    if x.dtype == torch.int16:
        x = x.float() / 32768.0
    elif x.dtype == torch.int32:
        x = x.float() / 2147483648.0
    elif x.dtype == torch.uint8:  # 8-bit PCM is unsigned
        x = (x.float() - 128.0) / 128.0
    elif x.is_floating_point():
        x = x.float()
    else:
        raise ValueError(f"audio samples of dtype {x.dtype} are not supported; use int16, int32, uint8 or float")
    if x.ndim == 1 and channels > 1:
        if x.numel() % channels:
            raise ValueError(f"{x.numel()} interleaved samples do not divide into {channels} channels")
        x = x.reshape(-1, channels)
    if x.ndim == 2:
        x = x.mean(dim=1)
    elif x.ndim != 1:
        raise ValueError(f"audio samples must be 1-D or (n_samples, channels), got shape {tuple(x.shape)}")
    return x


@cache
def _sinc_kernel(orig: int, new: int, zero_crossings: int = 6, rolloff: float = 0.99) -> tuple[torch.Tensor, int]:
    """Windowed-sinc polyphase kernels (new, 1, orig + 2 * width) for reduced rates orig -> new.

    The same construction as torchaudio's `sinc_interp_hann` (Hann-windowed sinc, cut-off at
    `rolloff` of the lower Nyquist), written here because torchaudio is not available.
    """
    base = min(orig, new) * rolloff
    width = math.ceil(zero_crossings * orig / base)
    idx = torch.arange(-width, width + orig, dtype=torch.float64)[None, :] / orig
    t = torch.arange(0, -new, -1, dtype=torch.float64)[:, None] / new + idx  # (new, K)
    t = (t * base).clamp(-zero_crossings, zero_crossings)
    window = torch.cos(t * math.pi / zero_crossings / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / torch.where(t == 0, torch.ones_like(t), t))
    kernels = (sinc * window * (base / orig)).to(torch.float32)
    return kernels[:, None, :], width


class StreamResampler:
    """Band-limited resampling of a stream in blocks of any size; output equals a one-shot pass.

    It holds back at most `orig + 2 * width` input samples (about 11 ms at 44.1 kHz) until the
    filter has its right-hand context; `flush()` releases the tail at the end of a file.
    """

    def __init__(self, orig_rate: int, new_rate: int = SAMPLE_RATE) -> None:
        if orig_rate <= 0 or new_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {orig_rate} -> {new_rate}")
        g = math.gcd(orig_rate, new_rate)
        self.orig, self.new = orig_rate // g, new_rate // g
        self.identity = self.orig == self.new
        if not self.identity:
            self.kernels, self.width = _sinc_kernel(self.orig, self.new)
            self._taps = self.kernels[:, 0, :].T.contiguous()  # (orig + 2 * width, new)
            self._buf = torch.zeros(self.width)  # left padding of the first block
        self._n_in = 0
        self._n_out = 0

    def _blocks(self, buf: torch.Tensor) -> tuple[torch.Tensor, int]:
        k = self.kernels.shape[-1]
        n = (buf.numel() - k) // self.orig + 1 if buf.numel() >= k else 0
        if n == 0:
            return torch.zeros(0), 0
        # Output block j is the window buf[j * orig : j * orig + k] through the `new` polyphase
        # kernels: a strided convolution, written as one (n, k) x (k, new) matrix product (a
        # conv1d with 160 output channels and stride 441 costs several times more at these sizes).
        windows = buf[: (n - 1) * self.orig + k].unfold(0, k, self.orig)  # (n, k), a view
        return (windows @ self._taps).reshape(-1), n

    def push(self, x: torch.Tensor) -> torch.Tensor:
        self._n_in += x.numel()
        if self.identity:
            return x
        self._buf = torch.cat([self._buf, x])
        out, n = self._blocks(self._buf)
        self._buf = self._buf[n * self.orig :]
        self._n_out += out.numel()
        return out

    def flush(self) -> torch.Tensor:
        """End of stream: emit the remaining output (a total of ceil(n_in * new / orig) samples)."""
        if self.identity:
            return torch.zeros(0)
        total = math.ceil(self._n_in * self.new / self.orig)
        out, _ = self._blocks(torch.cat([self._buf, torch.zeros(self.width + self.orig)]))
        out = out[: max(total - self._n_out, 0)]
        self._n_out += out.numel()
        self._buf = torch.zeros(self.width)
        return out


def resample(x: torch.Tensor, orig_rate: int, new_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """One-shot resampling of a mono float signal."""
    r = StreamResampler(orig_rate, new_rate)
    return torch.cat([r.push(x), r.flush()])


class AudioChunker:
    """A stream of PCM samples -> one (N_MELS, SLICE_FRAMES) log-mel slice per 100 ms step.

    Step t's slice is computed from the samples up to (t + 1) * 100 ms of the stream only.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE, channels: int = 1) -> None:
        if channels < 1:
            raise ValueError(f"channel count must be at least 1, got {channels}")
        self.sample_rate, self.channels = sample_rate, channels
        self._resampler = StreamResampler(sample_rate, SAMPLE_RATE)
        self._buf = torch.zeros(LEFT_PAD)  # 16 kHz samples from the first one the next slice needs
        self.steps = 0  # slices emitted so far

    def _slices(self) -> torch.Tensor:
        n = (self._buf.numel() - SLICE_SPAN) // STEP_SAMPLES + 1 if self._buf.numel() >= SLICE_SPAN else 0
        if n == 0:
            return torch.zeros(0, N_MELS, SLICE_FRAMES)
        mel = log_mel_frames(self._buf[: (n - 1) * STEP_SAMPLES + SLICE_SPAN])  # (64, 5(n-1)+10)
        slices = mel.unfold(1, SLICE_FRAMES, FRAMES_PER_STEP).permute(1, 0, 2)  # (n, 64, 10)
        self._buf = self._buf[n * STEP_SAMPLES :]
        self.steps += n
        return slices.contiguous()

    def push(self, samples: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Add samples (see `to_float_mono` for layouts); return the (n, 64, 10) completed slices."""
        x = self._resampler.push(to_float_mono(samples, self.channels))
        self._buf = torch.cat([self._buf, x])
        return self._slices()

    def flush(self) -> torch.Tensor:
        """End of a file: pad a trailing partial step of at least 50 ms with zeros and emit it."""
        self._buf = torch.cat([self._buf, self._resampler.flush()])
        out = [self._slices()]
        pending = self._buf.numel() - (SLICE_SPAN - STEP_SAMPLES)  # samples of the next step
        if pending >= STEP_SAMPLES // 2:
            self._buf = torch.cat([self._buf, torch.zeros(SLICE_SPAN - self._buf.numel())])
            out.append(self._slices())
        return torch.cat(out)


def step_count(n_samples: int, sample_rate: int = SAMPLE_RATE) -> int:
    """How many 100 ms steps `log_mel_slices` gives for a recording of `n_samples` samples."""
    n16 = math.ceil(n_samples * SAMPLE_RATE / sample_rate)
    full, rest = divmod(n16, STEP_SAMPLES)
    return full + (rest >= STEP_SAMPLES // 2)


def log_mel_slices(
    samples: np.ndarray | torch.Tensor, sample_rate: int = SAMPLE_RATE, channels: int = 1
) -> torch.Tensor:
    """A whole recording -> (n_steps, 64, 10): exactly what a live stream of it would give."""
    chunker = AudioChunker(sample_rate, channels)
    return torch.cat([chunker.push(samples), chunker.flush()])


# --- level and channel normalisation -------------------------------------------------------
SILENT_FRAME = math.log10(LOG_FLOOR) + 1e-3  # a frame at or below this in every band is digital zero
EMPTY_BAND = 3.0  # a band whose mean is 30 dB (3 log10 units) under the running level counts as empty
NORM_FLOOR = 3.0  # normalised values stop 30 dB under the band's mean (an empty band's: its floor)
NORM_SILENCE = -NORM_FLOOR  # what every frame becomes before the stream's first sound
GATE_DB = 30.0  # a frame more than this under the running level does not move the mean (pauses)
RESET_DB = 25.0  # a frame this far above the running level restarts the mean (speech after silence)
# mode "level": every band against the running level alone; the output stops 60 dB under it (the
# front end's log floor lies further down than that for speech at -20 dB; <2 % of speech bands
# of RAVDESS sit lower, docs/DESIGN.md)
LEVEL_FLOOR = 6.0
NORM_MODES = ("band", "level")


def _frame_levels_db(frames: np.ndarray) -> np.ndarray:
    """Summed mel power of each (64,) log10 frame of (64, n), in dB (any fixed reference: only differences matter)."""
    return 10.0 * np.log10((10.0 ** frames.astype(np.float64)).sum(0))


class LevelNormalizer:
    """Causal per-band mean normalisation of a stream of log-mel slices.

    A gain of g dB adds g / 10 to every log10 band; a fixed microphone or room EQ adds a constant
    per band. Subtracting a running per-band mean removes both (the sliding-window cepstral mean
    normalisation of speech recognisers): the network sees the voice relative to the last few
    seconds of the same stream, never its absolute level. Every rule is relative, so that gain
    cannot change what the network sees:
    - the mean is a cumulative average, then an exponential one with time constant `tau_s`, of
      the frames within GATE_DB of the running level (the mean frame level of the frames that
      made the mean): pauses do not drag it down;
    - a frame RESET_DB above the running level restarts it (speech after a silent lead-in: the
      lead-in's mean would otherwise weigh on the first seconds of speech);
    - the output stops NORM_FLOOR (30 dB) under the band's mean, and a band whose mean is
      EMPTY_BAND (30 dB) under the running level (the frames' summed power) is measured against
      that level instead: so bands near the front end's absolute floor (empty bands, very quiet
      pauses at low gain, where log10 meets LOG_FLOOR) look the same at any gain, while a static
      EQ of the bands that carry sound still cancels; digitally silent frames (a zero lead-in, a
      muted input) become the floor without moving the mean.
    From the first frame RESET_DB above a quiet lead-in (in speech: the onset) the output does not
    depend on the gain at all (tests/test_audio.py). Only a lead-in whose quietest bands sit at the
    front end's absolute floor can differ with the gain: there the floor is absolute.
    Each step's 5 new frames update the state; the whole 10-frame slice is then expressed against
    the mean after this step.

    mode "level" keeps the same running level (gate, reset, time constant) but subtracts it alone,
    one number for all bands, floored LEVEL_FLOOR under it: gain still cancels exactly, while the
    spectral envelope (a bright angry voice, a dark sad one) reaches the network from the first
    frame instead of being subtracted away. A static EQ no longer cancels: training draws a random
    EQ tilt instead (`audio_eq_tilt_db`).
    """

    def __init__(self, tau_s: float, mode: str = "band") -> None:
        if tau_s <= 0:
            raise ValueError(f"the normalisation time constant must be positive, not {tau_s}")
        if mode not in NORM_MODES:
            raise ValueError(f"the normalisation mode must be one of {', '.join(NORM_MODES)}, not {mode!r}")
        self.mode = mode
        self.min_weight = HOP_LENGTH / SAMPLE_RATE / tau_s  # 1 / (frames per time constant)
        self.reset()

    def reset(self) -> None:
        self.mean: np.ndarray | None = None  # float32 (64,)
        self.level = 0.0  # running level (dB) of the frames in the mean
        self.frames = 0

    def _update(self, frame: np.ndarray, level: float) -> None:
        if self.mean is None or level > self.level + RESET_DB:
            self.mean, self.level, self.frames = frame.copy(), level, 1
            return
        if level < self.level - GATE_DB:
            return
        self.frames += 1
        w = max(1.0 / self.frames, self.min_weight)
        self.level += w * (level - self.level)
        self.mean += w * (frame - self.mean)

    def __call__(self, mel_slice: np.ndarray | torch.Tensor) -> torch.Tensor:
        # numpy, not torch: a slice is 640 numbers, and per-op overhead is most of the cost here
        x = np.asarray(mel_slice, dtype=np.float32)  # (64, 10)
        new = x[:, -FRAMES_PER_STEP:]
        levels = _frame_levels_db(new)
        for j in np.flatnonzero(~(new <= SILENT_FRAME).all(0)):  # digitally silent frames leave the mean alone
            self._update(new[:, j], float(levels[j]))
        if self.mean is None:
            out = np.full_like(x, NORM_SILENCE if self.mode == "band" else -LEVEL_FLOOR)
        elif self.mode == "level":
            out = np.maximum(x - np.float32(self.level / 10.0), np.float32(-LEVEL_FLOOR))
        else:
            ref = np.maximum(self.mean, np.float32(self.level / 10.0 - EMPTY_BAND))[:, None]  # (64, 1)
            out = np.maximum(x - ref, np.float32(-NORM_FLOOR))  # digital zero: the floor
        return torch.from_numpy(out)


def normalize_slices(slices: torch.Tensor, tau_s: float, mode: str = "band") -> torch.Tensor:
    """A whole clip's (T, 64, 10) slices as a fresh stream's LevelNormalizer gives them (0: unchanged)."""
    if tau_s <= 0:
        return slices
    norm = LevelNormalizer(tau_s, mode)
    return torch.stack([norm(s) for s in slices]) if len(slices) else slices


# --- speech presence ------------------------------------------------------------------------
@cache
def _level_offset_db() -> float:
    """dB to subtract from the summed mel power of a frame to get the frame's mean square.

    Parseval on one side of the spectrum: sum_k |X_k|^2 ~ N_FFT / 2 * sum_n (x_n w_n)^2, and the
    mel triangles sum to 1 across 0-8 kHz, so sum_bands(mel) ~ N_FFT / 2 * rms^2 * sum_n w_n^2.
    """
    return float(10.0 * math.log10(N_FFT / 2 * float(_window().square().sum())))


def slice_level_dbfs(mel_slice: np.ndarray | torch.Tensor) -> float:
    """The loudness of a slice's own step (its FRAMES_PER_STEP newest frames): RMS in dB re full scale.

    0 dB is an RMS of 1.0 (a full-scale square wave; a full-scale sine is -3 dB). Digital
    silence gives about -131 dB. This is the daemon's speech-presence test: an energy gate,
    which says "something is audible", not "someone is speaking".
    """
    x = torch.as_tensor(np.asarray(mel_slice), dtype=torch.float64)[:, -FRAMES_PER_STEP:]  # (64, 5)
    power = (10.0**x).sum(0).mean()  # mean over frames of the summed band power
    return float(10.0 * torch.log10(power.clamp_min(1e-30))) - _level_offset_db()
