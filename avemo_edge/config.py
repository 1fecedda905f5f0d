"""The daemon's configuration: one typed section per concern, read from TOML.

Unknown keys are refused, and every error is one sentence naming the key path and the bad
value, e.g. ``config daemon.toml: mqtt.qos = 3 is invalid: QoS must be 0, 1 or 2``. Defaults
make an empty file valid: the embedded sample through the default model, JSON lines on stdout.
The MQTT password and TLS client key are not in this file: they are read at start-up from
``$CREDENTIALS_DIRECTORY`` (systemd's ``LoadCredential=``), see `publish.py`.
"""

from __future__ import annotations

import os
import sys
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, ClassVar

from .errors import AvemoError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (JetPack 6): the same parser, as a package
    import tomli as tomllib


class ConfigError(AvemoError):
    """A configuration file that cannot be read or holds an unknown key or a bad value."""


class _Invalid(Exception):
    """Raised by a section's `check` with the key and the reason; the loader adds path and value."""

    def __init__(self, key: str, why: str) -> None:
        super().__init__(why)
        self.key, self.why = key, why


def default_torch_threads() -> int:
    """torch's intra-op threads for `[model] threads = 0`: the usable cores but one, at least 1."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, usable - 1)


MAX_RETRY_S = 86400.0  # the longest wait between reopenings of a lost source


@dataclass
class SourceConfig:
    # What to watch, by URI: "sample" (the embedded clip), "file://clip.mp4", "camera://0",
    # "v4l2:///dev/video0", "csi://0", "rtsp://host/stream", a GStreamer pipeline with "!",
    # or "none" (audio only).
    video: str = "sample"
    # "auto": the file's own sound track for file:// and sample, none for cameras;
    # "mic://default", "mic://NAME" (part of a PortAudio device name), "mic://3" (index); "none".
    audio: str = "auto"
    realtime: bool = True  # pace files at their own speed; false = as fast as possible
    loop: bool = False  # start a file again at its end
    lost_after_s: float = 3.0  # a live source silent this long is lost and reopened
    retry_min_s: float = 1.0  # first wait before reopening a lost source, doubled each try
    retry_max_s: float = 60.0

    def check(self) -> None:
        from .capture import VIDEO_SCHEMES  # the one list of URI schemes (capture imports no heavy module)

        if not (self.video in ("sample", "none") or "!" in self.video or self.video.startswith(VIDEO_SCHEMES)):
            raise _Invalid(
                "video",
                "use sample, file://PATH, camera://N, v4l2:///dev/videoN, csi://N, rtsp://..., "
                "a GStreamer pipeline (with '!'), or none",
            )
        if not (self.audio in ("auto", "none") or self.audio.startswith("mic://")):
            raise _Invalid("audio", "use auto, none, mic://default, mic://NAME or mic://INDEX")
        if self.video == "none" and self.audio in ("none", "auto"):
            raise _Invalid("audio", "with video = 'none' an audio source (mic://...) is needed")
        if self.lost_after_s <= 0:
            raise _Invalid("lost_after_s", "must be positive")
        if not 0 < self.retry_min_s <= self.retry_max_s:
            raise _Invalid("retry_min_s", "must be positive and at most retry_max_s")
        if self.retry_max_s > MAX_RETRY_S:  # a person must fix it: refused (exit 2), not restarted for ever
            raise _Invalid("retry_max_s", f"must be at most {MAX_RETRY_S:g} seconds (one day)")


# The names of avemo_edge.backends.BACKENDS (that module imports torch; tests keep the two equal).
BACKEND_NAMES = ("torch", "onnxruntime", "tensorrt")


@dataclass
class ModelConfig:
    # "" = the shipped default model, avemo_edge/assets/default.pt. The torch backend takes a
    # checkpoint (.pt); onnxruntime and tensorrt take a folder that `avemo-edge export` wrote.
    path: str = ""
    backend: str = "torch"  # one of BACKEND_NAMES
    # CPU threads for inference: torch's intra-op threads (torch.set_num_threads) and onnxruntime's
    # intra-op threads; 0 = onnxruntime's own default (one per core) and, for torch, one core fewer
    # than the usable ones (`default_torch_threads`: the capture, decoding and face threads need
    # one, docs/DESIGN.md). On a box shared with other work, fewer threads keep a step's latency steady.
    threads: int = 0

    def check(self) -> None:
        if self.backend not in BACKEND_NAMES:
            raise _Invalid("backend", f"unknown backend; choose one of {', '.join(BACKEND_NAMES)}")
        if self.threads < 0:
            raise _Invalid("threads", "must be 0 (the library's default) or a positive number of threads")


@dataclass
class RecognitionConfig:
    # TCS filter coefficient per 100 ms step (paper eq. 5 uses 0.8) and the label hold margin
    # (the shown label changes only when another class leads it by this much; 0 = the paper's
    # argmax). 0 and 0.05 were chosen for the session-6 default model, and again for the session-9
    # one, on the validation actors by
    # `python -m training.tune_smoothing` (docs/RESULTS.md): no setting there reaches 5x fewer
    # flips without losing accuracy, so it takes the most fewer flips with a median switch latency
    # <= 0.5 s, and any filter (a > 0) delays the switch past 0.5 s on this model. The paper's
    # filter is one setting away: smoothing = 0.6, hold_margin = 0.1 gave 2.4x fewer flips than
    # the raw argmax there at 0.6 s (0.6 and 0.1 were the session-4 choice).
    smoothing: float = 0.0
    hold_margin: float = 0.05
    # A step counts as speech when its 100 ms of audio is at least this loud (RMS, dB full scale).
    speech_threshold_dbfs: float = -45.0
    max_frame_age_s: float = 0.5  # an older newest frame counts as no frame
    # Live sources: how long after a step's end the loop waits for late audio or frames.
    live_latency_s: float = 0.15

    def check(self) -> None:
        if not 0.0 <= self.smoothing < 1.0:
            raise _Invalid("smoothing", "must be in [0, 1)")
        if not 0.0 <= self.hold_margin < 1.0:
            raise _Invalid("hold_margin", "must be in [0, 1)")
        if self.speech_threshold_dbfs > 0:
            raise _Invalid("speech_threshold_dbfs", "is in dB full scale, so at most 0")
        if self.max_frame_age_s <= 0:
            raise _Invalid("max_frame_age_s", "must be positive")
        if not 0 <= self.live_latency_s <= 2:
            raise _Invalid("live_latency_s", "must be between 0 and 2 seconds")


MAX_FACES = 32  # a sanity bound: each face is one more row of the visual encoder's batch every step


@dataclass
class FaceConfig:
    # "yunet" (the default: shipped with the package, five landmarks to level the eyes) or
    # "haar" (OpenCV's cascade, from cv2.data or the system's haarcascades folder).
    detector: str = "yunet"
    # Full-frame detection every this many steps (and whenever the face is lost); in between the
    # detector looks only in a window around the last box. 1 = full frame every step.
    detect_every: int = 10
    # Faces tracked per camera, each with a track id and its own TCS filter (the `faces` list of
    # every state message); 1 follows the largest face only.
    max_faces: int = 1
    # Which face the voice is fused with (one microphone, one audio state): "largest" (the largest
    # box, kept until another is 1.25 x larger) or "oldest" (tracked the longest). docs/DESIGN.md.
    voice_policy: str = "largest"

    def check(self) -> None:
        from .faces.voice import VOICE_POLICIES  # imports OpenCV's face stage modules only, no model

        if self.detector not in ("yunet", "haar"):
            raise _Invalid("detector", "must be 'yunet' or 'haar'")
        if self.detect_every < 1:
            raise _Invalid("detect_every", "must be at least 1")
        if not 1 <= self.max_faces <= MAX_FACES:
            raise _Invalid("max_faces", f"must be between 1 and {MAX_FACES}")
        if self.voice_policy not in VOICE_POLICIES:
            raise _Invalid("voice_policy", f"must be one of {', '.join(repr(p) for p in VOICE_POLICIES)}")


@dataclass
class OutputConfig:
    stdout: str = "jsonl"  # "jsonl" (one JSON object per step), "text" (one line per step), "none"
    file: str = ""  # append JSON lines to this file as well ("" = no file)
    queue_size: int = 100  # messages held for a slow writer before the oldest are dropped

    def check(self) -> None:
        if self.stdout not in ("jsonl", "text", "none"):
            raise _Invalid("stdout", "must be 'jsonl', 'text' or 'none'")
        if self.queue_size < 1:
            raise _Invalid("queue_size", "must be at least 1")


@dataclass
class TLSConfig:
    enabled: bool = False
    ca_file: str = ""  # CA bundle that signed the broker's certificate ("" = the system's)
    cert_file: str = ""  # client certificate, for brokers that require one
    key_credential: str = ""  # client key: a file name in $CREDENTIALS_DIRECTORY
    insecure: bool = False  # skip the host name check (test brokers only)

    def check(self) -> None:
        if self.cert_file and not self.key_credential:
            raise _Invalid("key_credential", "a client certificate needs its key as a credential")


@dataclass
class MQTTConfig:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 1883
    prefix: str = "avemo"  # topics are {prefix}/{device_id}/state, /status, /availability
    device_id: str = ""  # "" = this machine's host name
    client_id: str = ""  # "" = avemo-edge-{device_id}-{6 random hex}, new per process
    qos: int = 0
    keepalive_s: int = 30
    username: str = ""
    password_credential: str = ""  # a file name in $CREDENTIALS_DIRECTORY holding the password
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 30.0
    queue_size: int = 100  # messages held while the broker is away; the oldest are dropped
    tls: TLSConfig = field(default_factory=TLSConfig)

    def check(self) -> None:
        if not 0 < self.port < 65536:
            raise _Invalid("port", "must be between 1 and 65535")
        if self.qos not in (0, 1, 2):
            raise _Invalid("qos", "QoS must be 0, 1 or 2")
        for key in ("prefix", "device_id"):
            value = getattr(self, key)
            if any(c in value for c in "+#") or value.startswith("/") or value.endswith("/"):
                raise _Invalid(key, "must not contain MQTT wildcards (+ #) or start or end with '/'")
        if self.enabled and not self.host:
            raise _Invalid("host", "name the broker")
        if self.keepalive_s < 5:
            raise _Invalid("keepalive_s", "must be at least 5 seconds")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise _Invalid("reconnect_min_s", "must be positive and at most reconnect_max_s")
        if self.queue_size < 1:
            raise _Invalid("queue_size", "must be at least 1")
        if self.password_credential and not self.username:
            raise _Invalid("username", "a password credential needs a user name")


@dataclass
class StatusConfig:
    interval_s: float = 5.0  # how often the status (FPS, stage timings, drops) is published

    def check(self) -> None:
        if self.interval_s <= 0:
            raise _Invalid("interval_s", "must be positive")


@dataclass
class LogConfig:
    level: str = "info"

    def check(self) -> None:
        if self.level not in ("debug", "info", "warning", "error"):
            raise _Invalid("level", "must be debug, info, warning or error")


@dataclass
class Config:
    source: SourceConfig = field(default_factory=SourceConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    recognition: RecognitionConfig = field(default_factory=RecognitionConfig)
    face: FaceConfig = field(default_factory=FaceConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    mqtt: MQTTConfig = field(default_factory=MQTTConfig)
    status: StatusConfig = field(default_factory=StatusConfig)
    log: LogConfig = field(default_factory=LogConfig)
    # Not a key: the folder of the file this config was read from (None without one). Outside
    # systemd, credentials are read from there (`publish.credential_path`).
    folder: ClassVar[Path | None] = None

    def check(self) -> None:
        if not self.source.realtime and any(
            self.source.video.startswith(p) for p in ("camera:", "v4l2:", "csi:", "rtsp:", "mic:")
        ):
            raise _Invalid("source.realtime", "only files can be read faster than real time")
        if not self.source.realtime and self.source.audio.startswith("mic:"):
            raise _Invalid("source.realtime", "only files can be read faster than real time")


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _fail(origin: str, key: str, value: object, why: str) -> ConfigError:
    return ConfigError(f"config {origin}: {key} = {_show(value)} is invalid: {why}")


def _show(value: object) -> str:
    if isinstance(value, dict):
        return "a table"
    text = repr(value) if not isinstance(value, bool) else str(value).lower()
    return text if len(text) <= 60 else text[:57] + "..."


def _build(cls: type, data: dict[str, Any], prefix: str, origin: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    for key in data:
        if key not in known:
            path = f"{prefix}{key}"
            raise ConfigError(
                f"config {origin}: unknown key {path} (value {_show(data[key])}); "
                f"{prefix.rstrip('.') or 'the top level'} takes {', '.join(sorted(known))}"
            )
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        path, value, kind = f"{prefix}{f.name}", data[f.name], hints[f.name]
        if isinstance(kind, types.UnionType):  # not used today; keep the loader honest if it is
            raise TypeError(f"config field {path} has a union type the loader does not handle")
        if is_dataclass(kind):
            if not isinstance(value, dict):
                raise _fail(origin, path, value, f"must be a table ([{path}])")
            values[f.name] = _build(kind, value, f"{path}.", origin)
            continue
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise _fail(origin, path, value, f"must be {_TYPE_NAMES[kind]}")
        values[f.name] = value
    obj = cls(**values)
    try:
        obj.check()
    except _Invalid as e:
        path = e.key if "." in e.key else f"{prefix}{e.key}"
        value: object = obj
        for part in e.key.split("."):  # relative to this section (the root for dotted keys)
            value = getattr(value, part)
        raise _fail(origin, path, value, e.why) from None
    return obj


def parse_config(data: dict[str, Any], origin: str = "<overrides>") -> Config:
    """A dict as TOML gives it -> a checked `Config`; raises ConfigError naming the key."""
    return _build(Config, data, "", origin)


def load_config(path: str | Path | None, overrides: dict[str, dict[str, Any]] | None = None) -> Config:
    """Read a TOML file (None = all defaults), apply `overrides` ({section: {key: value}}), check it."""
    data: dict[str, Any] = {}
    origin = "<defaults>"
    if path is not None:
        path, origin = Path(path), str(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except IsADirectoryError:
            raise ConfigError(f"config file {path} is a directory, not a file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {path} cannot be read: {e}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    for section, values in (overrides or {}).items():
        table = data.setdefault(section, {})
        if not isinstance(table, dict):
            raise _fail(origin, section, table, f"must be a table ([{section}])")
        table.update(values)
    cfg = parse_config(data, origin)
    if path is not None:
        cfg.folder = Path(path).absolute().parent
    return cfg
