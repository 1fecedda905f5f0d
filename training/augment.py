"""Training-time augmentation (paper 3.1.2 and 3.1.3), applied before the runtime's features.

Faces: horizontal flip, rotation, brightness/contrast. Audio (16 kHz float waveform): time
shift, additive noise at a fixed SNR, pitch shift. There is no environmental-noise corpus here,
so the noise is Gaussian, spectrally shaped at random between white and brown (1/f^2). The
pitch shift resamples the waveform by 2^(s/12), so tempo changes with pitch (at most 6 % for
one semitone), as in speed perturbation.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from avemo_edge.audio import LOG_FLOOR, SAMPLE_RATE, resample


def augment_face(
    face: np.ndarray,
    rng: np.random.Generator,
    flip_p: float,
    rotate_deg: float,
    jitter: float,
    shift: float = 0.0,
    scale: float = 0.0,
    blur_p: float = 0.0,
    erase_p: float = 0.0,
) -> np.ndarray:
    """(C, S, S) uint8 -> (C, S, S) float32 in [0, 1].

    What a camera and a detector do to a face: mirror, roll (rotation), framing (shift and
    scale of the crop, as fractions of the side), exposure (brightness and contrast), focus
    (blur), and occlusion (random erasing).
    """
    img = face.transpose(1, 2, 0).astype(np.float32)  # (S, S, C)
    s = img.shape[0]
    if rng.random() < flip_p:
        img = img[:, ::-1]
    if rotate_deg or shift or scale:
        angle = float(rng.uniform(-rotate_deg, rotate_deg)) if rotate_deg else 0.0
        zoom = float(rng.uniform(1 - scale, 1 + scale)) if scale else 1.0
        m = cv2.getRotationMatrix2D((s / 2, s / 2), angle, zoom)
        if shift:
            m[:, 2] += rng.uniform(-shift, shift, 2) * s
        img = cv2.warpAffine(np.ascontiguousarray(img), m, (s, s), borderMode=cv2.BORDER_REFLECT)
        img = img.reshape(s, s, -1)
    if jitter:
        contrast = rng.uniform(1 - jitter, 1 + jitter)
        brightness = rng.uniform(-jitter, jitter) * 255
        img = (img - img.mean()) * contrast + img.mean() + brightness
    if blur_p and rng.random() < blur_p:
        img = cv2.GaussianBlur(np.ascontiguousarray(img), (0, 0), float(rng.uniform(0.3, 1.2))).reshape(s, s, -1)
    if erase_p and rng.random() < erase_p:
        area = rng.uniform(0.02, 0.2) * s * s
        aspect = np.exp(rng.uniform(np.log(0.3), np.log(3.3)))
        h, w = min(s, int(round(np.sqrt(area * aspect)))), min(s, int(round(np.sqrt(area / aspect))))
        y, x = int(rng.integers(0, s - h + 1)), int(rng.integers(0, s - w + 1))
        img = np.array(img)
        img[y : y + h, x : x + w] = rng.uniform(0, 255)
    return np.clip(img, 0, 255).transpose(2, 0, 1) / 255.0


def shift(x: np.ndarray, seconds: float, rng: np.random.Generator) -> np.ndarray:
    k = int(round(rng.uniform(-seconds, seconds) * SAMPLE_RATE))
    if k > 0:
        return np.concatenate([np.zeros(k, x.dtype), x[:-k]])
    if k < 0:
        return np.concatenate([x[-k:], np.zeros(-k, x.dtype)])
    return x


def add_noise(x: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Noise scaled so that signal power / noise power = snr_db (signal power over the whole clip)."""
    n = x.size
    white = rng.standard_normal(n)
    tilt = rng.uniform(0.0, 2.0)  # spectral slope: 0 white, 1 pink, 2 brown
    spec = np.fft.rfft(white)
    f = np.arange(spec.size) + 1.0
    noise = np.fft.irfft(spec / f ** (tilt / 2), n)
    p_signal = float(np.mean(x.astype(np.float64) ** 2)) + 1e-12
    noise *= math.sqrt(p_signal / (10 ** (snr_db / 10)) / (np.mean(noise**2) + 1e-12))
    return (x + noise).astype(np.float32)


def pitch_shift(x: np.ndarray, semitones: float, rng: np.random.Generator) -> np.ndarray:
    s = round(rng.uniform(-semitones, semitones), 1)  # a 0.1-semitone grid: the resampling kernels get reused
    factor = 2 ** (s / 12)  # > 1 raises pitch: play the samples faster
    new_rate = int(round(SAMPLE_RATE / factor / 10) * 10)
    if new_rate == SAMPLE_RATE:
        return x
    return resample(torch.from_numpy(x), SAMPLE_RATE, new_rate).numpy()


def spec_augment(slices: torch.Tensor, max_bands: int, max_steps: int, rng: np.random.Generator) -> torch.Tensor:
    """SpecAugment (Park et al. 2019) on a clip's (T, 64, N) slices: two band masks, two step masks, set to 0."""
    x = slices.clone()
    t, m = x.shape[:2]
    for _ in range(2):
        if max_bands:
            w = int(rng.integers(0, max_bands + 1))
            f0 = int(rng.integers(0, m - w + 1))
            x[:, f0 : f0 + w] = 0.0
        if max_steps and t > max_steps:
            w = int(rng.integers(0, max_steps + 1))
            s0 = int(rng.integers(0, t - w + 1))
            x[s0 : s0 + w] = 0.0
    return x


def log_gain(slices: torch.Tensor, gain_db: float) -> torch.Tensor:
    """A gain of `gain_db` applied to log10 mel slices: +gain/10 per band, floored as the front end floors."""
    floor = math.log10(LOG_FLOOR)
    return torch.where(slices <= floor, slices, (slices + gain_db / 10.0).clamp_min(floor))


def eq_tilt(slices: torch.Tensor, tilt_db: float) -> torch.Tensor:
    """A microphone's linear EQ tilt: -tilt_db at the lowest band to +tilt_db at the highest, on sound only."""
    floor = math.log10(LOG_FLOOR)
    ramp = torch.linspace(-tilt_db / 10.0, tilt_db / 10.0, slices.shape[1], dtype=slices.dtype)[None, :, None]
    return torch.where(slices <= floor, slices, (slices + ramp).clamp_min(floor))
