"""Whether the daemon can start with a config on this machine: what `run --validate-config` adds
to the config's own checks, and what `run` checks before it loads anything.

`config.py` checks each value by itself (types, ranges, URI schemes). This checks what the values
name: the model is there and is the kind the backend takes, the backend's Python package is
installed, a `file://` source exists and is a file, the output file's folder exists and is
writable, the MQTT credentials and TLS files are there. Each problem is one sentence naming the
key, its value and what is wrong (and what to create, where that is known).

What may come later is not required: a camera that is not plugged in, a microphone, the broker.
The daemon starts without them and retries; what is absent now is a warning, not an error.
Nothing heavy is imported here (no torch, no onnxruntime), so a check takes well under a second.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .config import Config
from .errors import path_problem

# The Python modules each backend imports (avemo_edge/backends.py and the backend modules).
BACKEND_MODULES = {"torch": ("torch",), "onnxruntime": ("onnxruntime",), "tensorrt": ("tensorrt", "cuda.bindings")}


@dataclass
class Findings:
    errors: list[str] = field(default_factory=list)  # the daemon cannot start (exit 2)
    warnings: list[str] = field(default_factory=list)  # it starts, but something is missing now

    @property
    def ok(self) -> bool:
        return not self.errors


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package ("cuda" of "cuda.bindings")
        return False


def check_startable(cfg: Config) -> Findings:
    """Every problem that would stop `avemo-edge run` with `cfg`, and warnings for what it would retry."""
    found = Findings()
    _check_model(cfg, found)
    _check_sources(cfg, found)
    _check_output(cfg, found)
    if cfg.mqtt.enabled:
        _check_mqtt(cfg, found)
    return found


def _check_model(cfg: Config, found: Findings) -> None:
    from .doctor import default_model_path

    backend, value = cfg.model.backend, cfg.model.path
    key = f"model.path = {value!r}"
    missing = [m for m in BACKEND_MODULES.get(backend, ()) if not _installed(m)]
    if missing:
        found.errors.append(
            f"model.backend = {backend!r} cannot start here: the Python module {missing[0]!r} is not installed "
            "(install it, see docs/EXPORT.md, or choose another backend)"
        )
    path = Path(value) if value else default_model_path()
    if not value:
        key = f"model.path = '' (the shipped default model {path})"
    problem = path_problem(path)
    if problem == "does not exist":
        why = "is missing from this install (reinstall avemo-edge)" if not value else "does not exist"
        found.errors.append(f"{key} {why}")
        return
    if backend == "torch":
        if path.is_dir():
            what = "an export folder" if _manifest(path) or any(path.glob("*/manifest.json")) else "a folder"
            found.errors.append(
                f"{key} is {what}, not a file: backend 'torch' needs a .pt checkpoint "
                "(an export folder is for model.backend = 'onnxruntime' or 'tensorrt')"
            )
        return
    # onnxruntime, tensorrt: the folder `avemo-edge export` wrote (or its manifest or a graph in it)
    if path.is_file():
        if path.name == "manifest.json" or path.suffix.lower() in (".onnx", ".engine", ".plan", ".trt"):
            path = path.parent
        else:
            what = "a torch checkpoint" if path.suffix.lower() in (".pt", ".pth") else "a file"
            found.errors.append(
                f"{key} is {what}, but backend {backend!r} needs the folder that `avemo-edge export` writes: "
                f"run avemo-edge export {path} --out DIR and set model.path = 'DIR/<format>' "
                "(or set model.backend = 'torch')"
            )
            return
    manifest = _manifest(path)
    if manifest is None:
        inner = sorted(p.parent.name for p in path.glob("*/manifest.json"))
        hint = (
            f"name one of its exports: {', '.join(str(path / n) for n in inner)}"
            if inner
            else ("name a folder that `avemo-edge export` wrote")
        )
        found.errors.append(f"{key} has no manifest.json; {hint}")
    elif isinstance(manifest, dict) and manifest.get("runtime") not in (None, backend):
        found.errors.append(
            f"{key} is a {manifest.get('export_format')!r} export for backend {manifest.get('runtime')!r}, "
            f"not for {backend!r}; set model.backend to match the folder"
        )


def _manifest(folder: Path) -> dict | str | None:
    """The folder's manifest.json as a dict ('unreadable' when it is not JSON), or None without one."""
    path = folder / "manifest.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return "unreadable"  # the backend says why when it loads it
    return data if isinstance(data, dict) else "unreadable"


def _check_sources(cfg: Config, found: Findings) -> None:
    from .capture import SAMPLE_CLIP, file_uri_path

    video, audio = cfg.source.video, cfg.source.audio
    if video == "sample" and not SAMPLE_CLIP.is_file():
        found.errors.append(f"source.video = 'sample': the embedded clip {SAMPLE_CLIP} is missing (reinstall)")
    elif video.startswith("file://"):
        path = file_uri_path(video)
        problem = path_problem(path)
        if problem:
            found.errors.append(f"source.video = {video!r}: {path} {problem}")
        elif not os.access(path, os.R_OK):
            found.errors.append(f"source.video = {video!r}: {path} cannot be read by this user")
    elif video.startswith("v4l2://"):
        device = video.removeprefix("v4l2://")
        if not os.path.exists(device):
            found.warnings.append(
                f"source.video = {video!r}: {device} is not present now; the daemon starts anyway and "
                "opens it when it appears"
            )
    if audio.startswith("mic://") and not _installed("pyaudio"):
        why = f"source.audio = {audio!r} needs PyAudio, which is not installed: pip install 'avemo-edge[mic]'"
        if video == "none":
            found.errors.append(f"{why} (and the PortAudio library); with video = 'none' there is nothing else")
        else:
            found.warnings.append(f"{why}; the daemon would run visual only")


def _check_output(cfg: Config, found: Findings) -> None:
    value = cfg.output.file
    if not value:
        return
    path = Path(value)
    key = f"output.file = {value!r}"
    if path.is_dir():
        found.errors.append(f"{key} is a directory, not a file")
        return
    folder = path.absolute().parent
    if path.exists():
        if not os.access(path, os.W_OK):
            found.errors.append(f"{key} is not writable by this user")
        return
    problem = path_problem(folder, "folder")
    if problem:
        found.errors.append(
            f"{key}: its folder {folder} {problem}; create it (under systemd: LogsDirectory=avemo-edge "
            "makes /var/log/avemo-edge)"
        )
    elif not os.access(folder, os.W_OK):
        found.errors.append(f"{key}: its folder {folder} is not writable by this user")


def _check_mqtt(cfg: Config, found: Findings) -> None:
    from .errors import AvemoError
    from .publish import credential_path

    m = cfg.mqtt
    if not _installed("paho"):
        found.errors.append("mqtt.enabled = true needs paho-mqtt, which is not installed: pip install 'paho-mqtt>=2'")
    credentials = [("mqtt.password_credential", m.password_credential)]
    if m.tls.enabled:
        credentials.append(("mqtt.tls.key_credential", m.tls.key_credential))
        for key in ("ca_file", "cert_file"):
            value = getattr(m.tls, key)
            problem = path_problem(value) if value else None
            if problem == "does not exist" and key == "ca_file":
                found.errors.append(
                    f"mqtt.tls.ca_file = {value!r} does not exist: copy there the CA certificate that signed the "
                    "broker's certificate, or set ca_file = \"\" to use the system's CA bundle"
                )
            elif problem:
                found.errors.append(f"mqtt.tls.{key} = {value!r} {problem}")
    for what, name in credentials:
        if name:
            try:
                credential_path(name, what, cfg.folder)
            except AvemoError as e:
                found.errors.append(str(e))
