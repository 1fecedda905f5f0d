"""The daemon: one Capture -> Align -> Infer -> Publish loop, built to run unattended for months.

    sources (threads) --frames, audio--> Aligner --one Step per 100 ms--> face detection on the
    step's newest frame -> StreamingRecognizer (backend step, LSTM state carried, TCS filter)
    -> publishers (queued; never block) ; systemd notify from this same loop

What it does when the world misbehaves:
- a camera or stream lost: its worker reopens it with exponential backoff; meanwhile steps go on
  (audio only, or flagged empty) and the status says which source is lost and why;
- a microphone missing or failing: visual only, retried the same way;
- a broker away: the MQTT client reconnects on its own; messages queue (bounded, the oldest
  dropped and counted) and flow again once it is back;
- SIGTERM / SIGINT: the loop ends, sources close, availability goes "offline", STOPPING=1.

Every state message is one step's result; nothing else about the input ever leaves the process.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import statistics
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .align import END, Aligner, Step
from .audio import slice_level_dbfs
from .capture import FileSource, Source, SourceCrashed, SourceError, SourceWorker, open_sources
from .config import Config, default_torch_threads
from .doctor import default_model_path
from .errors import AvemoError
from .publish import FanOut, JsonLinesPublisher, MqttPublisher, Publisher
from .sdnotify import Notifier

log = logging.getLogger("avemo_edge")


# The state message's version (docs/DESIGN.md, "The state message"): 2 added `schema`, `faces` and
# `voice_face`; every field of version 1 is still there with its meaning (the stream's result).
STATE_SCHEMA = 2


class ModelMissingError(AvemoError):
    """No model to run: the default is not installed and none was named."""


class BackendUnavailableError(AvemoError):
    """The configured backend cannot start on this machine (its Python package or library is missing)."""


def resolve_model(path: str) -> Path:
    if path:
        return Path(path)
    default = default_model_path()
    if not default.is_file():
        raise ModelMissingError(
            f"no model to run: the default model {default} is missing from this install (reinstall avemo-edge), "
            "or pass a checkpoint with --model PATH or set [model] path in the config"
        )
    return default


def build_publishers(cfg: Config) -> FanOut:
    pubs: list[Publisher] = []
    if cfg.output.stdout != "none":
        pubs.append(JsonLinesPublisher("-", cfg.output.stdout, cfg.output.queue_size))
    if cfg.output.file:
        pubs.append(JsonLinesPublisher(cfg.output.file, "jsonl", cfg.output.queue_size))
    if cfg.mqtt.enabled:
        pubs.append(MqttPublisher(cfg.mqtt, credentials=cfg.folder))
    return FanOut(pubs)


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Stats:
    """Counts and per-stage timings (ms) over the last status interval, and totals."""

    steps: int = 0
    faces: int = 0
    speech: int = 0
    audio: int = 0
    detect_ms: deque = field(default_factory=lambda: deque(maxlen=600))
    infer_ms: deque = field(default_factory=lambda: deque(maxlen=600))
    publish_ms: deque = field(default_factory=lambda: deque(maxlen=600))
    window_start: float = field(default_factory=time.monotonic)
    window_steps: int = 0
    fps: float = 0.0

    def roll(self, now: float) -> None:
        span = now - self.window_start
        if span > 0:
            self.fps = self.window_steps / span
        self.window_start, self.window_steps = now, 0

    @staticmethod
    def p50(values: deque) -> float | None:
        return round(statistics.median(values), 2) if values else None


@dataclass
class Summary:
    steps: int
    seconds: float
    faces: int
    speech: int
    skipped: int
    dropped: dict[str, int]
    reason: str  # "end of stream" or "stopped"


class Daemon:
    def __init__(self, cfg: Config, publisher: Publisher | None = None, notifier: Notifier | None = None) -> None:
        self.cfg = cfg
        self._publisher = publisher
        self.notifier = notifier if notifier is not None else Notifier()
        self.stop_event = threading.Event()
        self._reset = threading.Event()
        self.source_states: dict[str, dict[str, str]] = {}
        self._status_dirty = threading.Event()
        self._health = "ok"
        self._drain = threading.Event()  # a file failed mid-way: take the steps already decoded, then stop

    # --- lifecycle ------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to end (safe from a signal handler or another thread)."""
        self.stop_event.set()

    def run(self) -> Summary:
        from .backends import create_backend
        from .faces import FaceCropper, VoicePolicy, create_detector
        from .recognizer import StreamingRecognizer

        cfg = self.cfg
        started = time.monotonic()
        model_path = resolve_model(cfg.model.path)
        sources = open_sources(cfg.source.video, cfg.source.audio, cfg.source.realtime, cfg.source.loop)
        for s in sources:  # a missing or corrupt file is refused now, in one sentence, before READY
            if isinstance(s, FileSource):
                s.open()
                s.close()
        options: dict[str, Any] = {}
        threads = cfg.model.threads or (default_torch_threads() if cfg.model.backend == "torch" else 0)
        if threads:  # policy (docs/DESIGN.md): a fixed number of inference threads
            import torch

            torch.set_num_threads(threads)
            if cfg.model.backend == "onnxruntime":
                options["threads"] = threads
        try:
            # warm-up happens in the constructor; onnxruntime's TensorRT provider builds engines on a first start
            with self.notifier.slow_start(f"loading {model_path.name} on the {cfg.model.backend} backend"):
                backend = create_backend(cfg.model.backend, str(model_path), **options)
        except ImportError as e:  # a configuration error: restarting cannot install a package
            raise BackendUnavailableError(
                f"backend {cfg.model.backend!r} cannot start here: the Python module {e.name or str(e)!r} is missing "
                "(install it, or choose another backend with --backend or [model] backend)"
            ) from None
        self.classes = backend.classes
        cropper = FaceCropper(
            backend.dims.face_size,
            backend.dims.face_channels,
            detector=create_detector(cfg.face.detector),
            detect_every=cfg.face.detect_every,
            max_faces=cfg.face.max_faces,
        )
        self.voice = VoicePolicy(cfg.face.voice_policy)
        recognizer = StreamingRecognizer(backend, cfg.recognition.smoothing, cfg.recognition.hold_margin)
        publisher = self._publisher if self._publisher is not None else build_publishers(cfg)
        publisher.subscribe("command", self._on_command)
        aligner = Aligner(cfg.recognition.max_frame_age_s, cfg.recognition.live_latency_s)
        workers = [self._worker(s, aligner) for s in sources]
        log.info(
            "ready in %.1f s: %s via %s backend (%s); sources %s",
            time.monotonic() - started,
            model_path,
            cfg.model.backend,
            f"{threads} threads" if threads else "default threads",
            ", ".join(s.uri for s in sources),
        )
        for w in workers:
            w.start()
        stats = Stats()
        self.notifier.ready(f"ready: {', '.join(s.uri for s in sources)}")
        self._publish_status(publisher, stats, aligner, "running", started)
        reason = "stopped"
        try:
            reason = self._loop(aligner, workers, cropper, recognizer, publisher, stats, started)
        finally:
            self.notifier.stopping(f"stopping ({reason})")
            for w in workers:
                w.stop_event.set()
            aligner.close()
            for w in workers:
                w.stop()
            self._publish_status(publisher, stats, aligner, "stopped", started)
            if self._publisher is None:
                publisher.stop()
            drops = publisher.drops() if isinstance(publisher, FanOut) else {"publisher": publisher.dropped}
            self.notifier.close()
        summary = Summary(
            stats.steps, time.monotonic() - started, stats.faces, stats.speech, aligner.skipped, drops, reason
        )
        log.info(
            "stopped (%s): %d steps in %.1f s, face in %d, speech in %d, %d skipped, dropped %s; "
            "median ms per step: detect %s, infer %s, publish %s",
            reason,
            summary.steps,
            summary.seconds,
            summary.faces,
            summary.speech,
            summary.skipped,
            drops,
            stats.p50(stats.detect_ms),
            stats.p50(stats.infer_ms),
            stats.p50(stats.publish_ms),
        )
        failed = [w.error for w in workers if isinstance(w.error, SourceCrashed)]
        needed = [w for w in workers if w.source.has_video or cfg.source.video == "none"]
        failed += [w.error for w in needed if w.error is not None]
        if failed:
            raise failed[0]
        if summary.steps == 0 and reason == "end of stream":  # policy (docs/DESIGN.md): never a silent 0
            uris = ", ".join(s.uri for s in sources)
            raise SourceError(
                f"{uris} ended before one 100 ms step: it holds less than 100 ms of video or audio this runtime "
                "can decode"
            )
        return summary

    def _worker(self, source: Source, aligner: Aligner) -> SourceWorker:
        cfg = self.cfg.source
        paced = isinstance(source, FileSource) and not source.realtime

        def on_item(item: Any) -> None:
            if paced:
                aligner.wait_for_room(item.t, worker.stop_event)
            aligner.add(item)

        def on_state(uri: str, state: str, detail: str) -> None:
            if state == "open":
                aligner.source_started(uri, source.has_video, source.has_audio, source.live)
                what = " and ".join(k for k, v in (("video", source.has_video), ("audio", source.has_audio)) if v)
                log.info("source %s open (%s)", uri, what)
                if isinstance(source, FileSource) and not source.has_audio and source.want_audio:
                    log.info("source %s has no audio track: visual only", uri)
            elif state in ("ended", "failed", "crashed"):
                aligner.source_stopped(uri)
            if state == "lost":
                log.warning("source %s lost: %s", uri, detail)
                if aligner.t0 is None:  # never opened: the steps start anyway, flagged (docs/DESIGN.md)
                    aligner.start_clock(uri, source.has_video, source.has_audio)
            elif state == "failed":
                kind = "video" if source.has_video else "audio"
                visual = self.cfg.source.video != "none"
                tail = "; going on visual only" if kind == "audio" and visual else ""
                log.error("source %s failed: %s%s", uri, detail, tail)
                if kind == "video" or not visual:  # an audio-only service without its audio cannot work
                    if isinstance(source, FileSource):
                        self._drain.set()  # the steps it already gave are taken first, then the daemon stops
                    else:
                        self.stop()
            elif state == "crashed":  # policy (docs/DESIGN.md): the daemon exits non-zero; systemd restarts it
                log.error("%s; stopping", detail)
                self.stop()
            elif state == "ended":
                log.info("source %s ended", uri)
            self.source_states[uri] = {"state": state, "detail": detail}
            self._status_dirty.set()

        worker = SourceWorker(source, on_item, on_state, cfg.lost_after_s, cfg.retry_min_s, cfg.retry_max_s)
        return worker

    def _on_command(self, topic: str, payload: bytes) -> None:
        command = payload.decode(errors="replace").strip()
        if command == "reset":
            self._reset.set()
            log.info("command 'reset' received: the stream's memory and smoothing start afresh")
        else:
            log.warning("unknown command %r on %s (known: reset)", command[:40], topic)

    # --- the loop -------------------------------------------------------------------------
    def _loop(
        self,
        aligner: Aligner,
        workers: list[SourceWorker],
        cropper: Any,
        recognizer: Any,
        publisher: Publisher,
        stats: Stats,
        started: float,
    ) -> str:
        cfg = self.cfg
        last_status = last_step = time.monotonic()
        while not self.stop_event.is_set():
            health = self._check_health(workers, time.monotonic() - last_step)
            if health != self._health:
                self._health = health
                self._status_dirty.set()
            if self._health != "stalled":
                self.notifier.watchdog()  # from the loop itself, and only while steps come or all sources wait
            if self._drain.is_set():
                for w in workers:  # no more input: what the aligner holds becomes the last steps
                    if not w.done:
                        w.stop_event.set()
                        aligner.source_stopped(w.source.uri)
                aligner.close()
            elif all(w.done for w in workers):
                aligner.close()
            step = aligner.next_step(timeout=0.1)
            now = time.monotonic()
            if now - last_status >= cfg.status.interval_s or self._status_dirty.is_set():
                if now - last_status >= cfg.status.interval_s:
                    stats.roll(now)
                    last_status = now
                self._status_dirty.clear()
                self._publish_status(publisher, stats, aligner, "running", started)
            if step == END:
                return "source failed" if self._drain.is_set() else "end of stream"
            if step is None:
                continue
            if self._reset.is_set():
                self._reset.clear()
                recognizer.reset()
                self.voice.reset()
            self._process(step, aligner.t0, cropper, recognizer, publisher, stats)
            last_step = time.monotonic()
        return "stopped"

    STALL_S = 30.0  # no step for this long while a source is not retrying: stop feeding the watchdog

    def _check_health(self, workers: list[SourceWorker], since_step: float) -> str:
        """'waiting' while every live source is retrying (flagged steps may go on meanwhile), 'ok' while
        steps come, else 'stalled' (docs/DESIGN.md)."""
        pending = [w for w in workers if not w.done]
        if pending and all(w.state == "lost" for w in pending):
            return "waiting"
        if since_step < self.STALL_S:
            return "ok"
        return "stalled"

    def _process(
        self, step: Step, t0: float, cropper: Any, recognizer: Any, publisher: Publisher, stats: Stats
    ) -> None:
        t_detect = time.perf_counter()
        faces = cropper.faces(step.frame)  # [] without a frame (the tracks end)
        detect_ms = (time.perf_counter() - t_detect) * 1000.0
        level = slice_level_dbfs(step.audio) if step.audio is not None else None
        speech = level is not None and level >= self.cfg.recognition.speech_threshold_dbfs
        voice = self.voice.choose(faces)
        out = recognizer.step_faces(
            [(f.id, f.crop) for f in faces], step.audio, t=step.t, voice=voice.id if voice else None
        )
        result = out.primary
        boxes = {f.id: [f.box.x, f.box.y, f.box.w, f.box.h] for f in faces}
        payload = {"schema": STATE_SCHEMA, **result.as_dict(self.classes)}
        payload.update(
            time=_now_iso(),
            t=round(step.t - t0, 3),  # the step's end, seconds since the stream's first capture
            step=step.index,
            video=step.frame is not None,  # false: no frame at all (camera lost or never opened), not only no face
            speech=speech,
            level_dbfs=round(level, 1) if level is not None else None,
            detect_ms=round(detect_ms, 2),
            voice_face=out.voice,  # the track id the top-level fields and the voice belong to
            faces=[{"id": r.id, "box": boxes[r.id], **r.as_dict(self.classes)} for r in out.faces],
        )
        t_pub = time.perf_counter()
        publisher.publish("state", payload)
        stats.publish_ms.append((time.perf_counter() - t_pub) * 1000.0)
        stats.detect_ms.append(detect_ms)
        stats.infer_ms.append(result.latency_ms)
        stats.steps += 1
        stats.window_steps += 1
        stats.faces += result.face
        stats.audio += result.audio
        stats.speech += speech

    def _publish_status(self, publisher: Publisher, stats: Stats, aligner: Aligner, state: str, started: float) -> None:
        drops = publisher.drops() if isinstance(publisher, FanOut) else {"publisher": publisher.dropped}
        mqtt = next((p for p in getattr(publisher, "publishers", []) if isinstance(p, MqttPublisher)), None)
        status = {
            "state": state,
            "time": _now_iso(),
            "uptime_s": round(time.monotonic() - started, 1),
            "fps": round(stats.fps, 2),
            "steps": stats.steps,
            "skipped": aligner.skipped,
            "audio_resyncs": aligner.resyncs,
            "face_steps": stats.faces,
            "speech_steps": stats.speech,
            "stage_ms_p50": {
                "detect": stats.p50(stats.detect_ms),
                "infer": stats.p50(stats.infer_ms),
                "publish": stats.p50(stats.publish_ms),
            },
            "sources": dict(self.source_states),
            "dropped": drops,
        }
        publisher.publish("status", status, retain=True)
        lost = [u for u, s in self.source_states.items() if s["state"] in ("lost", "failed")]
        text = f"{stats.fps:.1f} steps/s, {stats.steps} steps, dropped {sum(drops.values())}"
        if lost:
            text += f", lost: {', '.join(lost)}"
        if mqtt is not None:
            text += ", mqtt " + ("connected" if mqtt.connected else "reconnecting")
        health = self._health
        if health == "waiting":
            text += ", waiting: every source is retrying"
        elif health == "stalled":
            text += f", stalled: no step for over {self.STALL_S:g} s, watchdog not fed"
        self.notifier.status(text)


@contextlib.contextmanager
def stop_on_signals(daemon: Daemon) -> Iterator[None]:
    """SIGTERM and SIGINT end the loop cleanly (main thread only); the previous handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        daemon.stop()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def run_daemon(cfg: Config) -> Summary:
    """Run until the sources end or a signal arrives; raises AvemoError for what the user must fix."""
    daemon = Daemon(cfg)
    with stop_on_signals(daemon):
        return daemon.run()


__all__ = ["Daemon", "ModelMissingError", "SourceError", "Summary", "resolve_model", "run_daemon"]
