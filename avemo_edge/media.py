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


def _open(path: str | Path) -> av.container.InputContainer:
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise MediaError(f"{path} cannot be opened as media: {e.__class__.__name__}: {e}") from e


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
                chunks.append(audio_frame_array(frame))
        except av.error.FFmpegError as e:
            raise MediaError(f"{path} has corrupt audio: {e}") from e
    if not chunks:
        raise MediaError(f"{path} has an audio track with no samples")
    return np.concatenate(chunks, axis=0), int(rate)


def audio_frame_array(frame: av.AudioFrame) -> np.ndarray:
    """One decoded audio frame -> float32 (n_samples, channels), integer PCM scaled to [-1, 1)."""
    x = frame.to_ndarray()  # planar (channels, n) or packed (1, n * channels)
    if not frame.format.is_planar:
        x = x.reshape(-1, len(frame.layout.channels)).T
    if x.dtype.kind in "iu":
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max + 1)
    return np.ascontiguousarray(x.T, dtype=np.float32)


def iter_video(path: str | Path) -> Iterator[tuple[float, av.VideoFrame]]:
    """(seconds since the first frame, frame) for every decoded video frame, in order.

    Call `frame.to_ndarray(format="bgr24")` only for the frames you keep: conversion costs more
    than decoding.
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
            raise MediaError(f"{path} has corrupt video: {e}") from e
