"""Capture: sources named by URI, each giving video frames and audio blocks stamped on the monotonic clock.

    sample                      the embedded CREMA-D clip (assets/), read like file://
    file://clip.mp4             video and its sound track through PyAV, in real time or as fast
                                as possible, optionally looped
    camera://0                  OpenCV camera index
    v4l2:///dev/video0          a V4L2 device through OpenCV
    csi://0                     a Jetson CSI camera (nvarguscamerasrc) through OpenCV's GStreamer
    "... ! appsink"             any GStreamer pipeline through OpenCV
    rtsp://host/stream          an RTSP stream through OpenCV's FFmpeg
    mic://default, mic://NAME   a microphone through PyAudio (PortAudio), NAME a part of the device name

As jetson-inference's `Capture(timeout)`: `read(timeout)` returns an item, or None when nothing
came within the timeout; the end of a file raises `EndOfStream`, which is not an error. A live
device that stops delivering raises `SourceLost` (the worker reopens it with backoff); a source
that can never work raises `SourceError`. `SourceWorker` runs one source in a thread.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import AvemoError, RestartableError, path_problem
from .media import BGRConverter, audio_array, av_reason

log = logging.getLogger("avemo_edge")

SAMPLE_CLIP = Path(__file__).parent / "assets" / "sample_crema-d_1001_DFA_ANG.mp4"


@dataclass
class Frame:
    image: np.ndarray  # uint8 BGR (H, W, 3)
    t: float  # capture time, monotonic seconds


@dataclass
class AudioBlock:
    samples: np.ndarray  # (n, channels), int16 or float32
    rate: int
    t: float  # capture time of the first sample, monotonic seconds

    @property
    def end(self) -> float:
        return self.t + len(self.samples) / self.rate


class EndOfStream(Exception):
    """A file has no more data (not an error)."""


class SourceError(AvemoError):
    """A source that cannot work: a bad URI, a corrupt file, a missing library."""


class SourceCrashed(SourceError, RestartableError):
    """A source thread ended on an unexpected exception (input the code cannot handle, or a bug)."""


class SourceLost(AvemoError):
    """A live source that stopped delivering or cannot be opened now; worth reopening later."""


class Source(Protocol):
    uri: str
    live: bool  # a device or stream that runs on its own clock (not a file)
    has_video: bool  # known after open()
    has_audio: bool

    def open(self) -> None: ...

    def read(self, timeout: float) -> Frame | AudioBlock | None: ...

    def close(self) -> None: ...


# --- files through PyAV -------------------------------------------------------------------
# FFmpeg demuxers that render a text file as video ("ANSI art"): a .txt read this way is not a recording.
TEXT_FORMATS = frozenset({"tty", "bin", "xbin", "adf", "idf"})


class FileSource:
    """Video frames and audio blocks of a media file, stamped t0 + pts on the monotonic clock.

    In real time the reader sleeps until each item's stamp; otherwise the stamps run ahead of the
    clock and the consumer paces the reader (see `Aligner.wait_for_room`). With `loop` the file
    starts again at its end and the stamps go on without a jump. A file with a single video frame
    and no sound (a still image PyAV reads, whatever its name) is held for one step, as
    `ImageSource` does.
    """

    live = False
    HOLD = 0.099  # seconds: a still picture's second stamp, inside the first step (STEP_SECONDS = 0.1)

    def __init__(self, path: str | Path, realtime: bool = True, loop: bool = False, audio: bool = True) -> None:
        self.path, self.realtime, self.loop, self.want_audio = Path(path), realtime, loop, audio
        self.uri = f"file://{self.path}"
        self.has_video = self.has_audio = False
        self._items: Iterator[Frame | AudioBlock] | None = None
        self._pending: Frame | AudioBlock | None = None

    def open(self) -> None:
        import av

        _check_file(self.path)
        try:
            container = av.open(str(self.path))
        except av.error.FFmpegError as e:
            why = f"it is neither a media file nor an image ({av_reason(e)})"
            raise SourceError(f"file {self.path} cannot be decoded: {why}") from None
        except OSError as e:  # unreadable (permissions): FFmpeg says so as an OSError
            raise SourceError(f"file {self.path} cannot be read ({e.strerror or e})") from None
        fmt = container.format.name
        self.has_video = bool(container.streams.video)
        self.has_audio = bool(container.streams.audio) and self.want_audio
        container.close()
        if fmt in TEXT_FORMATS:
            why = f"it is neither a media file nor an image (FFmpeg reads it as text art, format {fmt!r})"
            raise SourceError(f"file {self.path} cannot be decoded: {why}")
        if not self.has_video and not self.has_audio:
            raise SourceError(f"file {self.path} has neither a video nor an audio stream")
        self._items = self._decode()

    def _decode(self) -> Iterator[Frame | AudioBlock]:
        """Every item of the file (of each pass, with `loop`), stamped on the monotonic clock.

        In real time the items come in the file's packet order: the reader sleeps until each stamp
        and the aligner waits for every stream of a file, so a file that stores its sound late
        loses nothing. Read as fast as possible, the reader runs ahead and the loop takes a step
        as soon as the reader waits for room: audio stored seconds after its video (a poorly
        interleaved file) came too late for its steps and was dropped (issue #16 row 7). So then
        video and audio are demuxed by two readers of the file and merged by stamp: memory stays
        two demuxers' whatever the offset (no lookahead buffer), at the cost of reading the file
        twice (each reader skips the other stream's packets without decoding them).
        """
        import av

        offset, t0 = 0.0, time.monotonic()
        while True:
            progress = _Progress()
            kinds = ["video"] * self.has_video + ["audio"] * self.has_audio
            if self.realtime or len(kinds) == 1:
                readers = [self._demux(kinds, t0 + offset, progress)]
                items: Iterator[Frame | AudioBlock] = readers[0]
            else:
                readers = [self._demux([kind], t0 + offset, progress) for kind in kinds]
                items = heapq.merge(*readers, key=lambda item: item.t)
            try:
                for item in items:
                    if isinstance(item, Frame):
                        progress.frames, progress.last = progress.frames + 1, item
                    yield item
            except av.error.FFmpegError as e:
                where = f" after {progress.end - t0 - offset:.1f} s" if progress.end else ""
                why = f"it is corrupt{where} ({av_reason(e)})"
                raise SourceError(f"file {self.path} cannot be decoded: {why}") from None
            finally:
                for reader in readers:  # each closes its container
                    reader.close()
            end, frames, last = progress.end, progress.frames, progress.last
            if frames == 1 and not self.has_audio and not self.loop and offset == 0:
                yield Frame(last.image, last.t + self.HOLD)  # a still image: held for one step
            if not self.loop or end <= t0 + offset:
                return
            offset = end - t0

    def _demux(self, kinds: list[str], base: float, progress: _Progress) -> Iterator[Frame | AudioBlock]:
        """The frames and blocks of the streams of `kinds` ("video", "audio") in the file's packet order,
        stamped base + time since the file's start (the earliest start of the streams it reads)."""
        import av

        to_bgr = BGRConverter()
        with av.open(str(self.path)) as container:
            streams = list(container.streams.video[:1])
            if self.has_audio:
                streams += container.streams.audio[:1]
            start = min((float(s.start_time * s.time_base) for s in streams if s.start_time is not None), default=0)
            for packet in container.demux([s for s in streams if s.type in kinds]):
                for frame in packet.decode():
                    if frame.pts is None or frame.time is None:
                        continue
                    t = base + frame.time - start
                    if isinstance(frame, av.VideoFrame):
                        item: Frame | AudioBlock = Frame(to_bgr(frame), t)
                        rate = packet.stream.average_rate
                        progress.end = max(progress.end, t + (float(1 / rate) if rate else 0.0))
                    else:
                        item = AudioBlock(audio_array(frame), frame.sample_rate, t)
                        progress.end = max(progress.end, item.end)
                    yield item

    def read(self, timeout: float) -> Frame | AudioBlock | None:
        if self._items is None:
            raise SourceError(f"{self.uri} was read before it was opened")
        if self._pending is None:
            try:
                self._pending = next(self._items)
            except StopIteration:
                raise EndOfStream from None
        if self.realtime:
            wait = self._pending.t - time.monotonic()
            if wait > timeout:
                time.sleep(timeout)
                return None
            if wait > 0:
                time.sleep(wait)
        item, self._pending = self._pending, None
        return item

    def close(self) -> None:
        if self._items is not None:
            self._items.close()
        self._items, self._pending = None, None


@dataclass
class _Progress:
    """What one pass over a file has decoded so far: the end of its data (monotonic s) and its video frames."""

    end: float = 0.0
    frames: int = 0
    last: Frame | None = None


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class ImageSource(FileSource):
    """A still image as a file source: one frame, held for one 100 ms step, so that it gives one result.

    The picture is stamped twice, at t0 and just before the first step's end, because the aligner
    takes a step only for data that covers it; a single stamp would end the stream at its start.
    """

    def open(self) -> None:
        import cv2

        _check_file(self.path)
        image = cv2.imread(str(self.path), cv2.IMREAD_COLOR)
        if image is None:
            raise SourceError(f"file {self.path} cannot be read: it is not an image OpenCV can decode")
        self.has_video, self.has_audio = True, False
        self._items = self._still(image)

    def _still(self, image: np.ndarray) -> Iterator[Frame]:
        t0 = time.monotonic()
        yield Frame(image, t0)
        yield Frame(image, t0 + self.HOLD)


def _check_file(path: Path) -> None:
    problem = path_problem(path)
    if problem:
        raise SourceError(f"file {path} {problem}")


def file_uri_path(uri: str) -> Path:
    """The path a file:// URI names: percent-decoded, with ``file://localhost/...`` as ``file:///...``.

    ``file://clip.mp4`` (no third slash) stays a path relative to the working folder. A name that
    really holds a '%' (``50%25.mp4`` on disk as written) is kept when only the raw one exists.
    """
    from urllib.parse import unquote

    raw = uri.removeprefix("file://")
    if raw.startswith("localhost/"):
        raw = raw.removeprefix("localhost")
    decoded = unquote(raw)
    if decoded != raw and not os.path.lexists(decoded) and os.path.lexists(raw):
        return Path(raw)
    return Path(decoded)


def file_source(path: str | Path, realtime: bool = True, loop: bool = False, audio: bool = True) -> FileSource:
    """An image file (by its suffix) or a media file."""
    cls = ImageSource if Path(path).suffix.lower() in IMAGE_SUFFIXES else FileSource
    return cls(path, realtime=realtime, loop=loop, audio=audio)


# --- cameras and streams through OpenCV ---------------------------------------------------
def csi_pipeline(sensor: int, width: int = 1280, height: int = 720, fps: int = 30) -> str:
    """The usual Jetson CSI camera pipeline (nvarguscamerasrc -> BGR appsink)."""
    return (
        f"nvarguscamerasrc sensor-id={sensor} ! video/x-raw(memory:NVMM), width={width}, height={height}, "
        f"framerate={fps}/1 ! nvvidconv ! video/x-raw, format=BGRx ! videoconvert ! video/x-raw, format=BGR "
        "! appsink drop=true max-buffers=1"
    )


class OpenCVSource:
    """A camera, V4L2 device, GStreamer pipeline or RTSP stream; always live.

    `cv2.VideoCapture.read` blocks, so a reader thread keeps only the newest frame and `read`
    waits for it with a timeout. A failed read means the device is lost (a camera never ends).
    """

    live = True
    has_audio = False

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.has_video = True
        self._frames: queue.Queue[Frame | None] = queue.Queue(maxsize=1)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.abandoned = 0  # reader threads left blocked in a read that never returned

    def _target(self) -> tuple[object, int]:
        import cv2

        u = self.uri
        if u.startswith("camera://"):
            index = u.removeprefix("camera://")
            if not index.isdigit():
                raise SourceError(f"camera URI {u!r} needs a camera index, such as camera://0")
            return int(index), cv2.CAP_ANY
        if u.startswith("v4l2://"):
            return u.removeprefix("v4l2://"), cv2.CAP_V4L2
        if u.startswith("csi://"):
            sensor = u.removeprefix("csi://") or "0"
            if not sensor.isdigit():
                raise SourceError(f"CSI URI {u!r} needs a sensor number, such as csi://0")
            return csi_pipeline(int(sensor)), cv2.CAP_GSTREAMER
        if "!" in u:
            return u, cv2.CAP_GSTREAMER
        return u, cv2.CAP_FFMPEG  # rtsp://, http:// streams

    def open(self) -> None:
        import cv2

        target, api = self._target()
        if api == cv2.CAP_GSTREAMER and not re.search(r"GStreamer:\s+YES", cv2.getBuildInformation()):
            raise SourceError(
                f"{self.uri} needs OpenCV built with GStreamer, and this one is not "
                "(use the system OpenCV on a Jetson, not the opencv-python wheel)"
            )
        if isinstance(target, str) and api == cv2.CAP_V4L2 and not os.path.exists(target):
            raise SourceLost(f"camera {target} does not exist")
        with _quiet_opencv(cv2):  # OpenCV and FFmpeg print ~11 lines per failed open; the worker logs one
            cap = cv2.VideoCapture(target, api)
            opened = cap.isOpened()
        if not opened:
            cap.release()
            raise SourceLost(f"{self.uri} cannot be opened")
        # Each open has its own capture, queue and stop flag, owned by its reader thread: a reader
        # stuck in a read that never returns (a stalled stream) keeps them and is abandoned, and
        # only that thread releases its capture, when its read returns. Releasing or rebinding a
        # capture another thread is reading crashes FFmpeg (a segmentation fault).
        self._stop, self._frames = threading.Event(), queue.Queue(maxsize=1)
        self._thread = threading.Thread(
            target=self._reader, args=(cap, self._frames, self._stop), name=f"capture {self.uri}", daemon=True
        )
        self._thread.start()

    @staticmethod
    def _reader(cap: object, frames: queue.Queue[Frame | None], stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                ok, image = cap.read()
                item = Frame(image, time.monotonic()) if ok and image is not None else None
                with contextlib.suppress(queue.Empty):
                    frames.get_nowait()  # keep only the newest frame
                frames.put(item)
                if item is None:
                    return
        finally:
            cap.release()

    def read(self, timeout: float) -> Frame | None:
        try:
            item = self._frames.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is None:
            raise SourceLost(f"{self.uri} stopped delivering frames")
        return item

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            if self._thread.is_alive():
                self.abandoned += 1
                log.warning("%s: a read is still blocked after 2 s; its reader thread is left behind", self.uri)
        self._thread = None


@contextlib.contextmanager
def _quiet_opencv(cv2: object) -> Iterator[None]:
    """OpenCV's own log off while a capture opens (its level comes back after), FFmpeg's from then on.

    Under `[log] level = "debug"` nothing is silenced. FFmpeg's level is read by OpenCV once, at its
    first capture: `OPENCV_FFMPEG_LOGLEVEL` set in the environment beforehand wins (24 shows warnings).
    """
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    cvlog = getattr(getattr(cv2, "utils", None), "logging", None)
    if cvlog is None:  # an OpenCV without the logging bindings
        yield
        return
    previous = cvlog.getLogLevel()
    cvlog.setLogLevel(cvlog.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cvlog.setLogLevel(previous)


# --- microphones through PyAudio ----------------------------------------------------------
class MicSource:
    """A PortAudio input device: 16-bit mono at the device's default rate, 1024-frame blocks.

    The callback stamps each block with the monotonic time of its first sample (now minus the
    block's duration). PyAudio is imported here so that it stays optional (`avemo-edge[mic]`).
    """

    live = True
    has_video = False
    has_audio = True
    FRAMES_PER_BUFFER = 1024

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.device = uri.removeprefix("mic://") or "default"
        self._pa = self._stream = None
        self._blocks: queue.Queue[AudioBlock] = queue.Queue(maxsize=200)  # about 4 s at 48 kHz
        self.overflows = 0
        self.rate = 0

    def _find(self, pa: object) -> dict:
        devices = [pa.get_device_info_by_index(i) for i in range(pa.get_device_count())]
        inputs = [d for d in devices if d["maxInputChannels"] > 0]
        if self.device == "default":
            try:
                return pa.get_default_input_device_info()
            except OSError:
                raise SourceLost("no default microphone is present") from None
        if self.device.isdigit():
            match = [d for d in inputs if d["index"] == int(self.device)]
        else:
            match = [d for d in inputs if self.device.lower() in d["name"].lower()]
        if not match:
            names = ", ".join(repr(d["name"]) for d in inputs) or "none"
            raise SourceLost(f"no microphone matches {self.device!r} (inputs present: {names})")
        return match[0]

    def open(self) -> None:
        try:
            import pyaudio
        except ImportError:
            raise SourceError(
                f"{self.uri} needs PyAudio: pip install 'avemo-edge[mic]' (and the PortAudio library)"
            ) from None
        with _quiet_stderr():  # PortAudio probes ALSA and JACK and prints pages of noise doing it
            pa = pyaudio.PyAudio()
        try:
            info = self._find(pa)
            self.rate = int(info["defaultSampleRate"])
            self._blocks = queue.Queue(maxsize=self._blocks.maxsize)
            self._stream = pa.open(
                format=pyaudio.paInt16,
                channels=1,
                rate=self.rate,
                input=True,
                input_device_index=int(info["index"]),
                frames_per_buffer=self.FRAMES_PER_BUFFER,
                stream_callback=self._callback,
            )
        except SourceLost:
            pa.terminate()
            raise
        except OSError as e:
            pa.terminate()
            raise SourceLost(f"{self.uri} cannot be opened ({e})") from None
        self._pa = pa
        log.info("microphone %s: %r at %d Hz", self.uri, info["name"], self.rate)

    def _callback(self, data: bytes, frame_count: int, time_info: dict, status: int) -> tuple[None, int]:
        import pyaudio

        samples = np.frombuffer(data, dtype=np.int16).reshape(-1, 1)
        block = AudioBlock(samples.copy(), self.rate, time.monotonic() - frame_count / self.rate)
        try:
            self._blocks.put_nowait(block)
        except queue.Full:
            self.overflows += 1
        return None, pyaudio.paContinue

    def read(self, timeout: float) -> AudioBlock | None:
        if self._stream is not None and not self._stream.is_active() and self._blocks.empty():
            raise SourceLost(f"{self.uri} stopped")
        try:
            return self._blocks.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(OSError):
                self._stream.stop_stream()
                self._stream.close()
        if self._pa is not None:
            self._pa.terminate()
        self._pa = self._stream = None


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (C libraries' chatter) for the duration of the block."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


# --- URIs ---------------------------------------------------------------------------------
VIDEO_SCHEMES = ("sample", "file://", "camera://", "v4l2://", "csi://", "rtsp://", "rtsps://", "http://", "https://")


def open_sources(video: str, audio: str, realtime: bool = True, loop: bool = False) -> list[Source]:
    """The sources the config names: a video source (maybe with its own sound) and maybe a microphone."""
    sources: list[Source] = []
    file_audio = audio == "auto"
    if video != "none":
        if video == "sample" or video.startswith("file://"):
            path = SAMPLE_CLIP if video == "sample" else file_uri_path(video)
            sources.append(file_source(path, realtime=realtime, loop=loop, audio=file_audio))
        elif "!" in video or any(video.startswith(s) for s in VIDEO_SCHEMES):
            sources.append(OpenCVSource(video))
        else:
            raise SourceError(
                f"video source {video!r} is not a URI this runtime reads; use sample, file://PATH, camera://N, "
                "v4l2:///dev/videoN, csi://N, rtsp://..., a GStreamer pipeline, or none"
            )
    if audio.startswith("mic://"):
        sources.append(MicSource(audio))
    elif audio not in ("auto", "none"):
        raise SourceError(f"audio source {audio!r} is not known; use auto, none, mic://default or mic://NAME")
    return sources


# --- one thread per source ----------------------------------------------------------------
class SourceWorker:
    """Runs one source: open, read, hand items on; reopen a lost live source with backoff.

    `on_item(item)` receives frames and audio blocks; `on_state(uri, state, detail)` hears of
    'open', 'lost', 'ended', 'failed' and 'crashed' (an unexpected exception ended the thread:
    `error` is a `SourceCrashed`), so that the daemon can log and publish them.
    """

    READ_TIMEOUT = 0.2

    def __init__(
        self,
        source: Source,
        on_item: Callable[[Frame | AudioBlock], None],
        on_state: Callable[[str, str, str], None],
        lost_after: float = 3.0,
        retry_min: float = 1.0,
        retry_max: float = 60.0,
    ) -> None:
        self.source, self.on_item, self.on_state = source, on_item, on_state
        self.lost_after, self.retry_min, self.retry_max = lost_after, retry_min, retry_max
        self.state = "starting"
        self.error: SourceError | None = None
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"source {source.uri}", daemon=True)

    @property
    def done(self) -> bool:
        """No more data will come: the file ended or the source failed for good."""
        return self.state in ("ended", "failed", "crashed")

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        self.stop_event.set()
        self.thread.join(timeout)

    def _set(self, state: str, detail: str = "") -> None:
        self.state = state
        self.on_state(self.source.uri, state, detail)

    def _run(self) -> None:
        try:
            self._run_source()
        except Exception as e:  # noqa: BLE001 - a thread must report its death, never die silently
            log.debug("source %s crashed", self.source.uri, exc_info=True)
            self.error = SourceCrashed(f"source {self.source.uri} crashed: {type(e).__name__}: {e}")
            with contextlib.suppress(Exception):
                self.source.close()
            self._set("crashed", str(self.error))

    def _run_source(self) -> None:
        backoff = self.retry_min
        while not self.stop_event.is_set():
            try:
                self.source.open()
            except SourceLost as e:
                self._set("lost", f"{e}; retrying in {backoff:g} s")
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, self.retry_max)
                continue
            except SourceError as e:
                self.error = e
                self._set("failed", str(e))
                return
            self._set("open")
            try:
                reason = self._read_until_lost()
            except SourceError as e:
                self.error = e
                self._set("failed", str(e))
                return
            except EndOfStream:
                self._set("ended")
                return
            finally:
                self.source.close()
            if reason is None:
                return  # asked to stop
            backoff = self.retry_min
            self._set("lost", f"{reason}; reopening in {backoff:g} s")
            self.stop_event.wait(backoff)
            backoff = min(backoff * 2, self.retry_max)

    def _read_until_lost(self) -> str | None:
        last = time.monotonic()
        while not self.stop_event.is_set():
            try:
                item = self.source.read(self.READ_TIMEOUT)
            except SourceLost as e:
                return str(e)
            now = time.monotonic()
            if item is None:
                if self.source.live and now - last > self.lost_after:
                    return f"no data for {now - last:.1f} s"
                continue
            last = now
            self.on_item(item)
        return None
