"""Test clips made on the spot with PyAV: H.264 video of a real face photo moving in the frame,
AAC 48 kHz stereo sound with voiced 'speech' (harmonics of 140 Hz, syllable-rate envelope)
in chosen intervals and near-silence elsewhere."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

W, H = 480, 320


def face_frame(face_bgr: np.ndarray, t: float, visible: bool) -> np.ndarray:
    frame = np.full((H, W, 3), (90, 110, 70), np.uint8)
    if visible:
        side = 220
        face = cv2.resize(face_bgr, (side, side), interpolation=cv2.INTER_AREA)
        x = int(20 + (W - side - 40) * (0.5 + 0.5 * np.sin(2 * np.pi * t / 3.0)))  # slides left and right
        y = 40
        frame[y : y + side, x : x + side] = face
    return frame


def astronaut_face(face_bgr: np.ndarray) -> np.ndarray:
    """The head and shoulders of the astronaut photo (her face lies around x 180-270, y 65-160)."""
    return face_bgr[25:215, 130:320]


def two_faces_frame(face_bgr: np.ndarray, t: float, second: bool = True, w: int = 640, h: int = 320) -> np.ndarray:
    """Two copies of the face: a larger one on the left (it sways) and, while `second`, a smaller one on the right."""
    frame = np.full((h, w, 3), (90, 110, 70), np.uint8)
    head = astronaut_face(face_bgr)
    big = cv2.resize(head, (190, 190), interpolation=cv2.INTER_AREA)
    x = int(40 + 20 * np.sin(2 * np.pi * t / 3.0))
    frame[60 : 60 + 190, x : x + 190] = big
    if second:
        small = cv2.resize(head, (150, 150), interpolation=cv2.INTER_AREA)
        x = int(420 + 15 * np.cos(2 * np.pi * t / 2.0))
        frame[80 : 80 + 150, x : x + 150] = small
    return frame


def tiled_faces_frame(face_bgr: np.ndarray, n: int) -> np.ndarray:
    """n copies of the face side by side (2 rows from 3 on): a frame with n faces of one size."""
    head = cv2.resize(astronaut_face(face_bgr), (160, 160), interpolation=cv2.INTER_AREA)
    cols = n if n < 3 else -(-n // 2)
    rows = -(-n // cols)
    frame = np.full((rows * 200, cols * 200, 3), (90, 110, 70), np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        frame[r * 200 + 20 : r * 200 + 180, c * 200 + 20 : c * 200 + 180] = head
    return frame


def voice(t: np.ndarray, rate: int, level_dbfs: float = -20.0) -> np.ndarray:
    f0 = 140 * (1 + 0.05 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    x *= 0.6 + 0.4 * np.abs(np.sin(2 * np.pi * 2.0 * t))  # syllables
    rms = np.sqrt(np.mean(x**2)) or 1.0
    return x / rms * 10 ** (level_dbfs / 20)


def make_clip(
    path: Path,
    face_bgr: np.ndarray,
    seconds: float = 3.0,
    fps: int = 15,
    face_visible: Callable[[float], bool] = lambda t: True,
    speech: list[tuple[float, float]] | None = None,
    audio: bool = True,
    rate: int = 48_000,
    frame_at: Callable[[float], np.ndarray] | None = None,
) -> Path:
    """Write an mp4 (H.264 + AAC stereo) and return its path; `frame_at(t)` replaces the sliding face."""
    speech = [(0.0, seconds)] if speech is None else speech
    frame_at = frame_at or (lambda t: face_frame(face_bgr, t, face_visible(t)))
    height, width = frame_at(0.0).shape[:2]
    out = av.open(str(path), "w")
    vs = out.add_stream("libx264", rate=fps)
    vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
    vs.options = {"preset": "ultrafast", "crf": "23"}
    if audio:
        a_st = out.add_stream("aac", rate=rate)
        a_st.layout = "stereo"
    for i in range(int(seconds * fps)):
        t = i / fps
        frame = av.VideoFrame.from_ndarray(frame_at(t), format="bgr24")
        frame.pts, frame.time_base = i, Fraction(1, fps)
        for p in vs.encode(frame):
            out.mux(p)
    for p in vs.encode():
        out.mux(p)
    if audio:
        n = int(seconds * rate)
        t = np.arange(n) / rate
        x = np.random.default_rng(0).standard_normal(n) * 10 ** (-80 / 20)  # a quiet room
        v = voice(t, rate)
        for a, b in speech:
            sel = (t >= a) & (t < b)
            x[sel] += v[sel]
        stereo = np.stack([x, 0.9 * x]).astype(np.float32)  # (2, n) planar
        block = 1024
        for start in range(0, n, block):
            chunk = np.ascontiguousarray(stereo[:, start : start + block])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            for p in a_st.encode(frame):
                out.mux(p)
        for p in a_st.encode():
            out.mux(p)
    out.close()
    return path


def write_wav(path: Path, seconds: float = 1.5, rate: int = 44_100, channels: int = 2) -> Path:
    """A 16-bit PCM wav of voiced 'speech' (the same voice as make_clip's)."""
    t = np.arange(int(seconds * rate)) / rate
    x = voice(t, rate)
    pcm = (np.stack([x * (1 - 0.1 * c) for c in range(channels)]) * 32767).astype(np.int16)  # (channels, n)
    layout = "stereo" if channels == 2 else "mono"
    with av.open(str(path), "w") as out:
        st = out.add_stream("pcm_s16le", rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm.T).reshape(1, -1), format="s16", layout=layout)
        frame.sample_rate, frame.pts = rate, 0
        for p in st.encode(frame):
            out.mux(p)
        for p in st.encode():
            out.mux(p)
    return path


def make_s64_wav(path: Path, seconds: float = 2.0, rate: int = 16000) -> Path:
    """A valid WAV in 64-bit integer PCM (FFmpeg decodes it as s64, which PyAV cannot turn into numpy)."""
    import struct

    data = (np.sin(np.arange(int(seconds * rate)) / 5) * 2**62).astype("<i8").tobytes()
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 8, 8, 64)
    riff = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + fmt
    path.write_bytes(riff + b"data" + struct.pack("<I", len(data)) + data)
    return path


def truncate_mid_stream(clip: Path, path: Path, keep: float = 0.5) -> Path:
    """`clip` remuxed with its index first (faststart) and cut to `keep` of its bytes: the index
    promises more packets than there are, so decoding fails part-way (FFmpeg's InvalidDataError)."""
    remuxed = path.with_suffix(".faststart.mp4")
    with av.open(str(clip)) as inp, av.open(str(remuxed), "w", options={"movflags": "+faststart"}) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.dts is None:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    data = remuxed.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    remuxed.unlink()
    return path


def mux_audio_late(clip: Path, path: Path, late: float = 2.0) -> Path:
    """`clip` remuxed (no re-encoding) with each audio packet stored `late` seconds of video after its time:
    the file holds the first `late` seconds of video before any sound (a poorly interleaved recording).
    An mkv keeps that order on reading; an mp4's demuxer reorders packets more than 1 s apart."""
    with av.open(str(clip)) as inp:
        packets = [p for p in inp.demux() if p.dts is not None]
        # max_interleave_delta = 1 us: FFmpeg writes packets in the order given instead of re-interleaving them
        with av.open(str(path), "w", options={"max_interleave_delta": "1"}) as out:
            streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}

            def stored_at(p: av.Packet) -> float:
                return float(p.dts * p.time_base) + (late if p.stream.type == "audio" else 0.0)

            for p in sorted(packets, key=stored_at):
                p.stream = streams[p.stream.index]
                out.mux(p)
    return path
