"""Real inputs for parity checks and int8 calibration, with a synthetic fallback that says so.

Parity stream (`parity_stream`): speech from RAVDESS Actor_01 (decoded with PyAV, turned into
slices by the runtime's own `log_mel_slices`) and face crops of scikit-image's astronaut photo,
moved, zoomed and re-lit a little at every step and passed through the runtime's `FaceCropper`.
Some steps miss the face, some the audio, one misses both, as a real stream does. Without the
data folder the audio is a synthetic speech-like signal; without scikit-image the faces are a
drawn face; `Stream.source` always says which was used.

Calibration set (`calibration_set`): FER+ training faces and RAVDESS Actors 02-06, so that
int8 is never calibrated on the clip it is then checked on. There is no prepared feature cache
in this project yet; this reads the images and audio files directly.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from avemo_edge.audio import SAMPLE_RATE, log_mel_slices
from avemo_edge.face import FaceCropper
from avemo_edge.model import AVEmotionNet, ModelDims

# ../shared/data beside the clone (as on the CI machine); `--data` overrides it.
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass
class Stream:
    faces: list[np.ndarray | None]  # (C, S, S) float32 in [0, 1], or None
    audio: list[np.ndarray | None]  # (64, N) log-mel, or None
    source: str

    def __len__(self) -> int:
        return len(self.faces)

    def summary(self) -> str:
        f = sum(x is not None for x in self.faces)
        a = sum(x is not None for x in self.audio)
        both = sum(x is None and y is None for x, y in zip(self.faces, self.audio, strict=True))
        return f"{len(self)} steps ({f} with a face, {a} with audio, {both} with neither); {self.source}"


def decode_audio(path: Path) -> tuple[np.ndarray, int]:
    """Any file PyAV reads -> float32 mono samples and their rate (the chunker resamples)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate = stream.rate
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        chunks = []
        for frame in container.decode(stream):
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(chunks).astype(np.float32), rate


def ravdess_files(data_dir: Path, actors: range) -> list[Path]:
    """Statement 1, repetition 1 of every emotion and intensity, per actor, in order."""
    root = data_dir / "ravdess_speech_16k"
    return [p for a in actors for p in sorted((root / f"Actor_{a:02d}").glob("03-01-*-*-01-01-*.flac"))]


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """A voiced signal with a moving pitch (100-200 Hz), two moving formants, ~4 syllables/s and pauses."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    f0 = 150 + 50 * np.sin(2 * np.pi * 0.7 * t) + 10 * rng.standard_normal() * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    f1 = 500 + 250 * np.sin(2 * np.pi * 1.3 * t)  # formant tracks
    f2 = 1500 + 600 * np.sin(2 * np.pi * 0.9 * t + 1)
    x = np.zeros(n)
    for k in range(1, 40):
        fk = k * f0
        gain = np.exp(-(((fk - f1) / 150) ** 2)) + 0.6 * np.exp(-(((fk - f2) / 250) ** 2)) + 0.02
        x += gain * np.sin(k * phase) / k**0.5
    syllables = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 0.5
    pauses = (np.sin(2 * np.pi * 0.35 * t) > -0.6).astype(float)
    x = x * syllables * pauses + 0.003 * rng.standard_normal(n)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def _stream_audio(data_dir: Path, steps: int) -> tuple[list[np.ndarray], str]:
    files = ravdess_files(data_dir, range(1, 2))
    if files:
        slices, used = [], []
        for f in files:
            samples, rate = decode_audio(f)
            slices += list(log_mel_slices(samples, rate).numpy())
            used.append(f.name)
            if len(slices) >= steps:
                break
        if len(slices) >= steps:
            return slices[:steps], f"audio: RAVDESS Actor_01 {', '.join(used)}"
    x = speech_like(steps * 0.1 + 0.2)
    return list(log_mel_slices(x).numpy())[:steps], f"audio: synthetic speech-like signal (no RAVDESS in {data_dir})"


def _drawn_face(size: int = 160) -> np.ndarray:
    """A grey drawing of a face (BGR), for machines without scikit-image's photo."""
    img = np.full((size * 2, size * 2, 3), 90, np.uint8)
    c = (size, size)
    cv2.ellipse(img, c, (size // 2, int(size * 0.65)), 0, 0, 360, (170, 180, 200), -1)
    for dx in (-size // 5, size // 5):
        cv2.circle(img, (c[0] + dx, c[1] - size // 6), size // 14, (40, 40, 40), -1)
    cv2.ellipse(img, (c[0], c[1] + size // 4), (size // 5, size // 12), 0, 0, 180, (60, 50, 120), 6)
    return img


def _jitter(frame: np.ndarray, i: int) -> np.ndarray:
    """Step i's frame: a few pixels of motion, +-5 % zoom and +-10 % light, as a handheld camera."""
    h, w = frame.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 3 * math.sin(i / 6), 1 + 0.05 * math.sin(i / 9))
    m[:, 2] += (6 * math.sin(i / 5), 4 * math.cos(i / 7))
    out = cv2.warpAffine(frame, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
    return cv2.convertScaleAbs(out, alpha=1 + 0.1 * math.sin(i / 4))


def _stream_faces(dims: ModelDims, steps: int) -> tuple[list[np.ndarray | None], str]:
    cropper = FaceCropper(dims.face_size, dims.face_channels)
    try:
        from skimage import data

        # head and shoulders (256 x 256 of the 512 x 512 photo): the detector runs faster on the smaller frame
        frame = np.ascontiguousarray(data.astronaut()[:256, 96:352, ::-1])
        faces = [cropper(_jitter(frame, i)) for i in range(steps)]
        detector = type(cropper.detector).__name__
        return faces, f"faces: scikit-image astronaut photo, jittered per step, through FaceCropper ({detector})"
    except ImportError:
        frame = _drawn_face()
        box_side = frame.shape[0] // 2
        from avemo_edge.face import Box, crop_face

        box = Box(box_side // 2, box_side // 3, box_side, int(box_side * 1.3))
        faces = [crop_face(_jitter(frame, i), box, dims.face_size, dims.face_channels) for i in range(steps)]
        return faces, "faces: a drawn face, jittered per step (scikit-image is not installed)"


def _present(i: int, steps: int) -> tuple[bool, bool]:
    """Which modalities step i has: faces drop out briefly and for a run, audio has one gap, one step has neither."""
    face = not (i % 9 == 4 or 20 <= i < 25 or i == steps - 5)
    audio = not (35 <= i < 40 or i % 13 == 7 or i == steps - 5)
    return face, audio


def parity_stream(dims: ModelDims, steps: int = 60, data_dir: Path | None = None) -> Stream:
    data_dir = DEFAULT_DATA if data_dir is None else data_dir
    audio, asrc = _stream_audio(data_dir, steps)
    faces, fsrc = _stream_faces(dims, steps)
    out_f: list[np.ndarray | None] = []
    out_a: list[np.ndarray | None] = []
    for i in range(steps):
        has_face, has_audio = _present(i, steps)
        out_f.append(faces[i] if has_face else None)
        out_a.append(audio[i] if has_audio else None)
    return Stream(out_f, out_a, f"{asrc}; {fsrc}")


@dataclass
class Calibration:
    faces: np.ndarray  # (n, C, S, S)
    mel: np.ndarray  # (m, 64, N)
    h: np.ndarray  # (m, L, H): the LSTM state each slice meets in its clip (batch axis last-but-one on use)
    c: np.ndarray
    source: str


def _fer_faces(data_dir: Path, dims: ModelDims, n: int) -> list[np.ndarray]:
    files = sorted((data_dir / "ferplus" / "FER2013Train").glob("*.png"))[:n]
    out = []
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        if img is None:
            continue
        img = cv2.resize(img, (dims.face_size, dims.face_size), interpolation=cv2.INTER_AREA)
        x = np.repeat(img[None], dims.face_channels, axis=0).astype(np.float32) / 255.0
        out.append(x)
    return out


@torch.no_grad()
def calibration_set(
    model: AVEmotionNet, n_faces: int = 128, n_slices: int = 256, data_dir: Path | None = None
) -> Calibration:
    """Face crops and (slice, LSTM state) pairs for int8 calibration; the states come from the fp32 model."""
    data_dir = DEFAULT_DATA if data_dir is None else data_dir
    dims = model.dims
    faces = _fer_faces(data_dir, dims, n_faces)
    fsrc = f"{len(faces)} FER+ training faces"
    if len(faces) < n_faces:
        extra = [f for f in _stream_faces(dims, n_faces - len(faces))[0] if f is not None]
        faces += extra
        fsrc = f"{fsrc} + {len(extra)} jittered astronaut crops (FER+ not found in {data_dir})" if extra else fsrc
    by_actor = [ravdess_files(data_dir, range(a, a + 1)) for a in range(2, 7)]
    # one clip per actor in turn, so that a small set still has several voices
    files = [f for group in itertools.zip_longest(*by_actor) for f in group if f is not None]
    clips = (log_mel_slices(*decode_audio(f)) for f in files)
    asrc = "RAVDESS clips of Actors 02-06"
    if not files:
        clips = (log_mel_slices(speech_like(12.0, seed=s)) for s in range(1, 100))
        asrc = f"synthetic speech-like signal (no RAVDESS in {data_dir})"
    mel, hs, cs = [], [], []
    used = 0
    for clip in clips:
        used += 1
        state = model.init_state(1)
        for x in clip:
            mel.append(x.numpy())
            hs.append(state[0][:, 0].numpy())
            cs.append(state[1][:, 0].numpy())
            _, state = model.audio(x[None, None], state)
        if len(mel) >= n_slices:
            break
    mel, hs, cs = mel[:n_slices], hs[:n_slices], cs[:n_slices]
    asrc = f"{len(mel)} slices of {used} {asrc}"
    return Calibration(np.stack(faces), np.stack(mel), np.stack(hs), np.stack(cs), f"faces: {fsrc}; audio: {asrc}")
