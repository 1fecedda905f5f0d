"""Short real audio-video files for tests, written with PyAV (H.264 + AAC in mp4, PCM in wav)."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np


def speech_like(seconds: float, sr: int, channels: int = 2, seed: int = 0) -> np.ndarray:
    """(channels, n) float32: a voiced, amplitude-modulated harmonic tone with a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 150 + 40 * np.sin(2 * np.pi * 1.3 * t)
    x = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / sr) / k for k in range(1, 10))
    x = 0.25 * x / np.abs(x).max() * (0.4 + 0.6 * np.sin(2 * np.pi * 2.5 * t) ** 2)
    out = np.stack([x * (1 - 0.2 * c) for c in range(channels)]) + 0.005 * rng.standard_normal((channels, t.size))
    return out.astype(np.float32)


def write_av(
    path: Path,
    face_bgr: np.ndarray | None,
    seconds: float = 1.5,
    fps: int = 25,
    size: tuple[int, int] = (320, 240),
    audio: bool = True,
    sr: int = 48000,
    channels: int = 2,
    face_visible=lambda t: True,
) -> Path:
    """An mp4 with a face moving across a grey background (when `face_visible(t)`) and speech-like audio."""
    w, h = size
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        if audio:
            ast = c.add_stream("aac", rate=sr, layout="stereo" if channels == 2 else "mono")
        rng = np.random.default_rng(1)
        n_frames = int(seconds * fps)
        for i in range(n_frames):
            t = i / fps
            frame = np.full((h, w, 3), 90, np.uint8) + rng.integers(0, 8, (h, w, 3), dtype=np.uint8)
            if face_bgr is not None and face_visible(t):
                side = int(h * 0.75)
                face = cv2.resize(face_bgr, (side, side))
                x = int((w - side) * i / max(n_frames - 1, 1))
                frame[(h - side) // 2 : (h - side) // 2 + side, x : x + side] = face
            for p in vs.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        if audio:
            s = speech_like(seconds, sr, channels)
            for k in range(0, s.shape[1], 1024):
                fr = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(s[:, k : k + 1024]),
                    format="fltp",
                    layout="stereo" if channels == 2 else "mono",
                )
                fr.sample_rate, fr.pts = sr, k
                for p in ast.encode(fr):
                    c.mux(p)
            for p in ast.encode():
                c.mux(p)
    return path


def write_wav(path: Path, seconds: float = 1.5, sr: int = 44100, channels: int = 2) -> Path:
    s = (speech_like(seconds, sr, channels) * 32767).astype(np.int16)
    with av.open(str(path), "w") as c:
        st = c.add_stream("pcm_s16le", rate=sr, layout="stereo" if channels == 2 else "mono")
        fr = av.AudioFrame.from_ndarray(s.T.reshape(1, -1), format="s16", layout="stereo" if channels == 2 else "mono")
        fr.sample_rate, fr.pts = sr, 0
        for p in st.encode(fr):
            c.mux(p)
        for p in st.encode():
            c.mux(p)
    return path
