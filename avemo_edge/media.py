"""Decoding media files with PyAV (mp4/H.264 video, AAC/FLAC/WAV audio) without a system ffmpeg.

OpenCV cannot read audio, so every file path in the project (training preparation and the
daemon's `file://` source) decodes through these two functions.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from .errors import AvemoError


class MediaError(AvemoError):
    """A media file that cannot be opened or decoded."""


def av_reason(e: Exception) -> str:
    """FFmpeg's own short reason for a decoding error."""
    return getattr(e, "strerror", None) or str(e).splitlines()[0]


class BGRConverter:
    """Decoded video frames -> BGR uint8 (h, w, 3) arrays, with one swscale context for all of them.

    `frame.to_ndarray(format="bgr24")` builds a new swscale context for every frame (each PyAV
    frame has its own reformatter), which costs more than the conversion itself on small frames;
    one `VideoReformatter` keeps its context while the frames' size and format stay the same. The
    pixels are the same (tests/test_capture.py).
    """

    def __init__(self) -> None:
        from av.video.reformatter import VideoReformatter

        self._reformatter = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        return self._reformatter.reformat(frame, format="bgr24").to_ndarray()


def audio_array(frame: av.AudioFrame) -> np.ndarray:
    """A decoded audio frame -> (n_samples, channels) in the frame's own dtype (see audio.to_float_mono)."""
    arr = frame.to_ndarray()  # planar: (channels, n); packed: (1, n * channels)
    channels = len(frame.layout.channels)
    arr = arr.T if frame.format.is_planar else arr.reshape(-1, channels)
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    return np.ascontiguousarray(arr)


def _open(path: str | Path) -> av.container.InputContainer:
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise MediaError(f"{path} cannot be opened as media: {av_reason(e)}") from e


def has_audio(path: str | Path) -> bool:
    with _open(path) as c:
        return bool(c.streams.audio)


def decode_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """All audio of the first audio track -> (float32 (n_samples, channels), sample rate)."""
    with _open(path) as c:
        if not c.streams.audio:
            raise MediaError(f"{path} has no audio track")
        stream = c.streams.audio[0]
        rate = stream.rate
        chunks = []
        try:
            for frame in c.decode(stream):
                chunks.append(audio_array(frame))
        except av.error.FFmpegError as e:
            raise MediaError(f"{path} has corrupt audio: {av_reason(e)}") from e
    if not chunks:
        raise MediaError(f"{path} has an audio track with no samples")
    x = np.concatenate(chunks)
    if x.dtype.kind in "iu":  # integer PCM -> [-1, 1]
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max + 1)
    return x.astype(np.float32, copy=False), int(rate)


def iter_video(path: str | Path) -> Iterator[tuple[float, av.VideoFrame]]:
    """(seconds since the first frame, frame) for every decoded video frame, in order.

    Convert only the frames you keep (`BGRConverter`): conversion costs more than decoding.
    """
    with _open(path) as c:
        if not c.streams.video:
            raise MediaError(f"{path} has no video track")
        stream = c.streams.video[0]
        t0 = None
        try:
            for frame in c.decode(stream):
                if frame.time is None:
                    continue
                t0 = frame.time if t0 is None else t0
                yield frame.time - t0, frame
        except av.error.FFmpegError as e:
            raise MediaError(f"{path} has corrupt video: {av_reason(e)}") from e
