"""Pipeline mode: end to end, from a media file to a published result, one 100 ms step at a time.

    decode -> face (detect + crop) -> log_mel (resample + mel slice) -> inference -> tcs -> publish

Each step decodes the file up to the step's end (PyAV, both tracks), converts the newest video
frame of the step to BGR (`media.BGRConverter`), finds and crops the largest face (the runtime's `FaceCropper`), pushes
the step's audio through the runtime's `AudioChunker`, runs the `StreamingRecognizer` (backend
step + TCS filter) and hands the result to a publisher that serialises it to JSON and drops it
(`NullPublisher`, the daemon's three-method interface). The file loops at its end, so a run lasts
as long as asked; the steps run as fast as they can (no pacing to 10 Hz), so FPS is capacity.

N streams are N threads, each with its own decoder, face detector, chunker and recognizer state,
sharing one backend (one copy of the model), as N sources on one box would.

With `pool`, the N streams step through one `avemo_edge.batching.RowPool`: each step waits
(2 ms at most) for the other streams' and one batched backend call runs them all, as one backend
serving N cameras would; a stream's inference time then includes that wait.

With `faces` = n > 1 each step's frame is n tiled copies of itself (`tile_frame`: a grid of the
file's frames, so n copies of its face), the cropper tracks up to n faces, the voice goes with
the largest (`faces.VoicePolicy`) and the recognizer runs every face in one batched backend call
(`StreamingRecognizer.step_faces`): the faces sweep shows what a step costs per face.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avemo_edge.audio import STEP_SECONDS, AudioChunker
from avemo_edge.backends import Backend, step_rows
from avemo_edge.batching import PooledBackend, RowPool
from avemo_edge.errors import AvemoError
from avemo_edge.faces import FaceCropper, VoicePolicy
from avemo_edge.media import BGRConverter, audio_array
from avemo_edge.recognizer import StreamingRecognizer

from .environment import memory_now
from .timing import StageClock, Stats
from .variants import Built, error_sentence

STAGES = ("decode", "face", "log_mel", "inference", "tcs", "publish")


def sample_clip() -> Path | None:
    """The clip embedded in the package for demos and benchmarks, when this install has one."""
    try:
        from avemo_edge.capture import SAMPLE_CLIP  # the daemon's sources name it
    except ImportError:
        found = sorted((Path(__file__).resolve().parent.parent / "avemo_edge" / "assets").glob("sample*.mp4"))
        return found[0] if found else None
    return Path(SAMPLE_CLIP) if Path(SAMPLE_CLIP).is_file() else None


def resolve_input(spec: str) -> str:
    """'sample' (the embedded clip), a file path, file://PATH, or any URL PyAV opens (rtsp://, http://)."""
    if spec == "sample":
        clip = sample_clip()
        if clip is None:
            raise AvemoError(
                "this install has no embedded sample clip; pass --input with a media file that has a face and speech"
            )
        return str(clip)
    path = spec.removeprefix("file://")
    if "://" in path:
        return spec  # a network stream: decoding time then includes waiting for it
    if not Path(path).is_file():
        raise AvemoError(f"input {spec!r} is not a file; pass a media file, a file:// or rtsp:// URI, or 'sample'")
    return path


class NullPublisher:
    """The publisher interface (publish, subscribe, stop); a message is serialised as JSON, counted and dropped."""

    def __init__(self) -> None:
        self.sent = 0
        self.bytes = 0
        self.dropped = 0

    def publish(self, topic: str, payload: dict[str, Any], retain: bool = False) -> None:
        self.bytes += len(json.dumps(payload).encode())
        self.sent += 1

    def subscribe(self, topic: str, callback: object) -> None:
        """Nothing ever arrives on a null sink."""

    def stop(self) -> None:
        """Nothing is queued, so there is nothing to flush."""


class TimedBackend:
    """The backend with the time of its last `step` kept, so that TCS = recognizer step - backend step."""

    def __init__(self, backend: Backend) -> None:
        self.inner = backend
        self.name, self.dims, self.classes = backend.name, backend.dims, backend.classes
        self.last_ms = 0.0

    def init_state(self) -> Any:
        return self.inner.init_state()

    def step(
        self, face: np.ndarray | None, audio: np.ndarray | None, state: Any
    ) -> tuple[np.ndarray, float, float, Any]:
        t0 = time.perf_counter()
        out = self.inner.step(face, audio, state)
        self.last_ms = (time.perf_counter() - t0) * 1000.0
        return out

    def step_rows(
        self, faces: list[np.ndarray | None], audio: list[np.ndarray | None], states: list[Any]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Any]]:
        t0 = time.perf_counter()
        out = step_rows(self.inner, faces, audio, states)  # the inner backend's batched call, or its loop
        self.last_ms = (time.perf_counter() - t0) * 1000.0
        return out


def tile_frame(frame: np.ndarray, n: int) -> np.ndarray:
    """n copies of a frame in a grid of ceil(sqrt(n)) columns (unused cells black): a frame with n faces."""
    if n <= 1:
        return frame
    cols = int(np.ceil(np.sqrt(n)))
    rows = -(-n // cols)
    h, w = frame.shape[:2]
    out = np.zeros((rows * h, cols * w, *frame.shape[2:]), frame.dtype)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * h : (r + 1) * h, c * w : (c + 1) * w] = frame
    return out


@dataclass
class _Item:
    t: float  # seconds on the stream's clock (grows across loops)
    frame: Any  # av.VideoFrame, or float32 (n, channels) audio


class StepDecoder:
    """A media file in 100 ms steps: the newest video frame of each step (BGR) and the step's audio blocks."""

    def __init__(self, uri: str, loop: bool = True) -> None:
        import av

        self.uri, self.loop = uri, loop
        try:
            with av.open(uri) as c:
                self.has_video, self.has_audio = bool(c.streams.video), bool(c.streams.audio)
        except (av.error.FFmpegError, OSError) as e:
            raise AvemoError(f"input {uri} cannot be opened as media: {e}") from e
        if not (self.has_video or self.has_audio):
            raise AvemoError(f"input {uri} has neither a video nor an audio track")
        self.loops = 0
        self._items = self._decode()
        self._video: deque[_Item] = deque()
        self._audio: deque[_Item] = deque()
        self._eof = False
        self.rate = 0
        self.channels = 0
        self._to_bgr = BGRConverter()

    def _decode(self) -> Iterator[tuple[str, _Item]]:
        import av

        offset = 0.0
        while True:
            end = offset
            with av.open(self.uri) as c:
                streams = list(c.streams.video[:1]) + list(c.streams.audio[:1])
                start = min((float(s.start_time * s.time_base) for s in streams if s.start_time is not None), default=0)
                for packet in c.demux(streams):
                    for frame in packet.decode():
                        if frame.time is None:
                            continue
                        t = offset + frame.time - start
                        if isinstance(frame, av.VideoFrame):
                            rate = packet.stream.average_rate
                            end = max(end, t + (float(1 / rate) if rate else 0.0))
                            yield "v", _Item(t, frame)
                        else:
                            self.rate, self.channels = frame.sample_rate, len(frame.layout.channels)
                            x = audio_array(frame)
                            end = max(end, t + len(x) / frame.sample_rate)
                            yield "a", _Item(t, x)
            if not self.loop or end <= offset:
                return
            self.loops += 1
            offset = end

    def _fill(self, end: float) -> None:
        def behind(q: deque[_Item], present: bool) -> bool:
            return present and not (q and q[-1].t >= end)

        while not self._eof and (behind(self._video, self.has_video) or behind(self._audio, self.has_audio)):
            item = next(self._items, None)
            if item is None:
                self._eof = True
            else:
                (self._video if item[0] == "v" else self._audio).append(item[1])

    def step(self, k: int) -> tuple[np.ndarray | None, list[np.ndarray]] | None:
        """Step k (covering [k, k + 1) x 100 ms): (BGR frame or None, audio blocks), or None at the end."""
        end = (k + 1) * STEP_SECONDS
        self._fill(end)
        if self._eof and not self._video and not self._audio:
            return None
        frame = None
        while self._video and self._video[0].t < end:
            frame = self._video.popleft().frame
        blocks = []
        while self._audio and self._audio[0].t < end:
            blocks.append(self._audio.popleft().frame)
        return (self._to_bgr(frame) if frame is not None else None), blocks


@dataclass
class StreamResult:
    clock: StageClock
    ends: list[float] = field(default_factory=list)  # seconds since the timed start, per timed step
    faces: int = 0  # timed steps with at least one face
    tracked: int = 0  # faces tracked, summed over the timed steps
    audio_steps: int = 0
    extra_slices: int = 0
    published: int = 0
    loops: int = 0
    ended: bool = False  # the input ran out (a stream that cannot loop)
    error: str | None = None


def _run_stream(
    backend: Backend,
    uri: str,
    warmup: int,
    start: threading.Barrier,
    deadline: list[float],
    out: StreamResult,
    faces: int = 1,
) -> None:
    try:
        d = backend.dims
        timed = TimedBackend(backend)
        recognizer = StreamingRecognizer(timed)
        cropper = FaceCropper(size=d.face_size, channels=d.face_channels, max_faces=faces)
        voice = VoicePolicy()
        decoder = StepDecoder(uri)
        chunker: AudioChunker | None = None
        publisher = NullPublisher()
        clock = out.clock
        k = 0
    except Exception as e:
        out.error = error_sentence(e)
        start.abort()
        return
    passed = False
    try:
        while True:
            if k == warmup:
                start.wait()  # every stream starts its timed part together
                passed, t0 = True, time.perf_counter()
            elif k > warmup and time.perf_counter() >= deadline[0]:
                break
            clock.start()
            got = decoder.step(k)
            if got is None:
                out.ended = True
                if not passed:
                    out.error = f"the input ended after {k} steps, within the {warmup}-step warm-up"
                break
            frame, blocks = got
            if frame is not None and faces > 1:
                frame = tile_frame(frame, faces)  # part of "decode": making the input
            clock.lap("decode")
            crops = cropper.faces(frame)
            chosen = voice.choose(crops)
            clock.lap("face")
            mel = None
            if blocks:
                chunker = chunker or AudioChunker(decoder.rate, decoder.channels)
                slices = [chunker.push(b) for b in blocks]
                n = sum(len(s) for s in slices)
                mel = next((s[-1].numpy() for s in reversed(slices) if len(s)), None)
                if k >= warmup:
                    out.extra_slices += max(0, n - 1)
            clock.lap("log_mel")
            step = recognizer.step_faces(
                [(c.id, c.crop) for c in crops], mel, t=k * STEP_SECONDS, voice=chosen.id if chosen else None
            )
            clock.lap("tcs")
            clock.charge("inference", timed.last_ms, taken_from="tcs")
            payload = step.primary.as_dict(recognizer.classes)
            boxes = {c.id: [c.box.x, c.box.y, c.box.w, c.box.h] for c in crops}
            payload["voice_face"] = step.voice
            payload["faces"] = [{"id": r.id, "box": boxes[r.id], **r.as_dict(recognizer.classes)} for r in step.faces]
            publisher.publish("state", payload)
            clock.lap("publish")
            keep = k >= warmup
            clock.stop(keep)
            if keep:
                out.ends.append(time.perf_counter() - t0)
                out.faces += bool(crops)
                out.tracked += len(crops)
                out.audio_steps += mel is not None
            k += 1
        out.published, out.loops = publisher.sent, decoder.loops
    except threading.BrokenBarrierError:
        out.error = out.error or "another stream failed before the timed part began"
    except Exception as e:
        out.error = error_sentence(e)
    finally:
        if not passed:  # never leave the other streams waiting for this one
            start.abort()
        if isinstance(backend, PooledBackend):
            backend.close()  # nor the pool


def run_pipeline(
    b: Built,
    uri: str,
    seconds: float,
    warmup: int,
    streams: int = 1,
    window: float | None = None,
    faces: int = 1,
    pool: bool = False,
) -> dict[str, Any]:
    """N streams of the pipeline for `seconds` after `warmup` steps each; with `window`, per-window figures too.

    `faces` > 1: each frame is that many tiled copies of itself, and that many faces are tracked.
    `pool`: the streams' steps are batched together through one `RowPool` on the backend.
    """
    results = [StreamResult(StageClock(STAGES)) for _ in range(streams)]
    deadline = [0.0]
    began = [0.0]

    def on_start() -> None:
        began[0] = time.perf_counter()
        deadline[0] = began[0] + seconds

    barrier = threading.Barrier(streams, action=on_start)
    rows = RowPool(b.backend) if pool else None
    backends = [rows.join() if rows else b.backend for _ in results]
    threads = [
        threading.Thread(target=_run_stream, args=(be, uri, warmup, barrier, deadline, r, faces), daemon=True)
        for be, r in zip(backends, results, strict=True)
    ]
    for t in threads:
        t.start()
    memory: list[dict[str, Any]] = []  # sampled at each window's end while the streams run
    next_sample = 0.0
    while alive := [t for t in threads if t.is_alive()]:
        wait = 0.2
        if window and began[0]:
            next_sample = next_sample or began[0] + window
            wait = next_sample - time.perf_counter()
            if wait <= 0:
                memory.append({"t": round(time.perf_counter() - began[0], 2), **memory_now()})
                next_sample += window
                continue
        alive[0].join(timeout=min(wait, 0.2))
    errors = [r.error for r in results if r.error]
    if errors:
        return {"streams": streams, "faces": faces, "pooled": pool, "status": "error", "detail": errors[0]}
    out = _summarise(results, streams, window, memory, faces)
    out["pooled"] = pool
    if rows is not None and rows.calls:
        out["pool_rows_per_call"] = round(rows.rows / rows.calls, 2)  # all steps, the warm-up included
    return out


def _summarise(
    results: list[StreamResult], streams: int, window: float | None, memory: list[dict[str, Any]], faces: int = 1
) -> dict[str, Any]:
    totals = np.concatenate([np.asarray(r.clock.total) for r in results])
    if totals.size == 0:
        return {
            "streams": streams,
            "faces": faces,
            "status": "error",
            "detail": "the input ended before any step was timed",
        }
    wall = max(r.ends[-1] for r in results if r.ends)
    steps = int(totals.size)
    merged = StageClock(STAGES)
    for r in results:
        for s in STAGES:
            merged.samples[s] += r.clock.samples[s]
    fps_stream = steps / wall / streams
    out: dict[str, Any] = {
        "streams": streams,
        "status": "ok",
        "steps": steps,
        "seconds": round(wall, 3),
        "fps": round(steps / wall, 2),  # all streams together
        "fps_per_stream": round(fps_stream, 2),
        "realtime": fps_stream >= 1.0 / STEP_SECONDS,  # each stream keeps up with 10 steps/s
        "latency_ms": Stats.of(totals).as_dict(),
        "stages": merged.breakdown(),
        "faces": faces,  # faces in each frame (tiled copies); 1 = the input as it is
        "faces_found": round(sum(r.faces for r in results) / steps, 3),
        "faces_tracked": round(sum(r.tracked for r in results) / steps, 3),  # mean per step
        "audio_steps": round(sum(r.audio_steps for r in results) / steps, 3),
        "extra_audio_slices": sum(r.extra_slices for r in results),
        "published": sum(r.published for r in results),
        "input_loops": sum(r.loops for r in results),
        "input_ended": any(r.ended for r in results),
        "memory": memory_now(),
        "_samples_ms": totals.tolist(),
    }
    if window:
        out["windows"] = _windows(results, window, memory)
        out["drift"] = drift(out["windows"])
    return out


def _windows(results: list[StreamResult], window: float, memory: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ends = np.concatenate([np.asarray(r.ends) for r in results])
    totals = np.concatenate([np.asarray(r.clock.total) for r in results])
    wall = float(ends.max())
    out = []
    for i in range(int(np.ceil(wall / window))):
        sel = (ends >= i * window) & (ends < (i + 1) * window)
        if not sel.any():
            continue
        span = min((i + 1) * window, wall) - i * window
        st = Stats.of(totals[sel])
        mem = next((m for m in memory if m["t"] >= (i + 1) * window - 1e-6), memory[-1] if memory else {})
        out.append(
            {
                "start_s": round(i * window, 1),
                "steps": int(sel.sum()),
                "fps": round(sel.sum() / max(span, 1e-9), 2),
                "p50_ms": round(st.p50, 3),
                "p95_ms": round(st.p95, 3),
                "p99_ms": round(st.p99, 3),
                "rss_mb": mem.get("rss_mb"),
                "gpu": mem.get("gpu"),
                "partial": span < window - 1e-6,
            }
        )
    return out


def drift(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """Change from the first to the last window, and least-squares slopes per hour (latency, RSS)."""
    windows = [w for w in windows if not w["partial"]]  # a short last window is shown but not compared
    if len(windows) < 2:
        return {"detail": "fewer than two full windows: run for at least two --window lengths to see drift"}
    first, last = windows[0], windows[-1]
    hours = np.asarray([w["start_s"] for w in windows]) / 3600.0

    def slope(key: str) -> float | None:
        y = [w[key] for w in windows]
        if any(v is None for v in y):
            return None
        return round(float(np.polyfit(hours, np.asarray(y, dtype=float), 1)[0]), 3)

    out: dict[str, Any] = {
        "windows": len(windows),
        "p50_first_last_ms": [first["p50_ms"], last["p50_ms"]],
        "p50_change_pct": round(100 * (last["p50_ms"] - first["p50_ms"]) / first["p50_ms"], 2),
        "p95_first_last_ms": [first["p95_ms"], last["p95_ms"]],
        "p50_slope_ms_per_hour": slope("p50_ms"),
        "fps_first_last": [first["fps"], last["fps"]],
    }
    if first.get("rss_mb") is not None and last.get("rss_mb") is not None:
        out["rss_first_last_mb"] = [first["rss_mb"], last["rss_mb"]]
        out["rss_slope_mb_per_hour"] = slope("rss_mb")
    return out
