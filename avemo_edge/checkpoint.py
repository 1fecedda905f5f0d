"""Self-describing checkpoints: the network, its dimensions, preprocessing and classes in one file.

Like whisper's checkpoints, `load_model(path)` rebuilds the network from the file alone. The
file is a plain dict that `torch.load(weights_only=True)` can read (no pickled code), with a
sha256 over the metadata and every tensor, so that a truncated or edited file is refused with
one sentence instead of loading wrong weights.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .audio import preprocessing_constants
from .errors import AvemoError, CheckpointError
from .faces.align import FACE_CENTER_DY, FACE_MARGIN
from .model import EMOTIONS, AVEmotionNet, ModelDims

FORMAT = "avemo-edge-checkpoint"
FORMAT_VERSION = 1


def face_constants(dims: ModelDims) -> dict[str, Any]:
    return {
        "size": dims.face_size,
        "channels": dims.face_channels,
        "margin": FACE_MARGIN,
        "center_dy": FACE_CENTER_DY,
        "range": "0-1",
    }


def _digest(header: dict[str, Any], state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass
class Checkpoint:
    dims: ModelDims
    state_dict: dict[str, torch.Tensor]
    classes: tuple[str, ...] = EMOTIONS
    preprocessing: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""
    path: Path | None = None

    def build(self, device: str | torch.device = "cpu") -> AVEmotionNet:
        """The network with these weights, in float32 and eval mode."""
        model = AVEmotionNet(self.dims)
        state = {k: v.float() if v.is_floating_point() else v for k, v in self.state_dict.items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(
                f"checkpoint {self.path} does not fit the network its dimensions describe "
                f"(missing {len(missing)} tensors such as {missing[:2]}, unexpected {unexpected[:2]})"
            )
        return model.to(device).eval()


def save_checkpoint(
    path: str | Path, model: AVEmotionNet, meta: dict[str, Any] | None = None, half: bool = False
) -> str:
    """Write `model` with its description to `path`; `half` stores float weights as fp16. Returns the sha256."""
    state = {
        k: (v.half() if half and v.is_floating_point() else v).detach().cpu() for k, v in model.state_dict().items()
    }
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "avemo_edge_version": __version__,
        "dims": asdict(model.dims),
        "classes": list(EMOTIONS[: model.dims.n_classes]),
        "preprocessing": {"audio": preprocessing_constants(), "face": face_constants(model.dims)},
        # A JSON round trip turns str/float subclasses (torch.__version__, numpy scalars) into the
        # plain types that weights-only loading accepts, and refuses anything that is not data.
        "meta": json.loads(json.dumps(meta or {})),
    }
    digest = _digest(header, state)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({**header, "state_dict": state, "sha256": digest}, tmp)
    tmp.replace(path)  # a crash mid-write never leaves a half-written checkpoint under the real name
    return digest


def check_header(obj: object, fmt: str, version: int, name: str, kind: str, error: type[AvemoError]) -> None:
    """Refuse a file (`name`, one of `kind`) without the `fmt` header or of another format version."""
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        raise error(f"{name} is not {kind} (no '{fmt}' header)")
    if obj.get("format_version") != version:
        raise error(f"{name} has format version {obj.get('format_version')}, this runtime reads {version}")


def dims_from_description(what: str, audio: dict, dims: dict, error: type[AvemoError]) -> ModelDims:
    """Check a saved model's audio preprocessing against this runtime and rebuild its ModelDims.

    Shared by checkpoints and exported models; `what` names the file in the error sentence.
    """
    for key, value in preprocessing_constants().items():
        if audio.get(key) != value:
            raise error(
                f"{what} was made with audio {key}={audio.get(key)!r} but this runtime computes {key}={value!r}"
            )
    unknown = sorted(set(dims) - {f.name for f in fields(ModelDims)})
    if unknown:
        raise error(f"{what} describes model dimensions this runtime does not know: {unknown}")
    try:
        return ModelDims(**dims)
    except (TypeError, ValueError) as e:
        raise error(f"{what} has missing or invalid model dimensions: {e}") from e


def _is_export_folder(path: Path) -> bool:
    return (path / "manifest.json").is_file() or any(path.glob("*/manifest.json"))


def _load_failure(e: Exception) -> str:
    """Why torch.load(weights_only=True) refused a file, as the end of a sentence.

    torch names a pickled callable it refuses "unsupported GLOBAL posix.system" (2.6+; older
    releases wrote "Unsupported global"), so the match ignores case and keeps the name.
    """
    found = re.search(r"unsupported global:?\s*(?:GLOBAL\s+)?([\w.]+)", str(e), re.IGNORECASE)
    if found:
        return (
            f"it holds pickled code ({found.group(1)}) that weights-only loading refuses to run; "
            "a checkpoint is data only, so this file is not one (or was tampered with)"
        )
    return "it is truncated, corrupt or not written by torch.save"


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and verify a checkpoint; every failure is a CheckpointError with one sentence."""
    path = Path(path)
    if path.is_dir():
        what = "an export folder" if _is_export_folder(path) else "a folder"
        raise CheckpointError(
            f"checkpoint {path} is {what}, not a file: the torch backend needs a .pt checkpoint "
            "(a folder that `avemo-edge export` wrote is for backend onnxruntime or tensorrt)"
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file; all mean the same to a user
        raise CheckpointError(f"checkpoint {path} is not a readable torch file: {_load_failure(e)}") from e
    check_header(obj, FORMAT, FORMAT_VERSION, f"checkpoint {path}", "an avemo-edge checkpoint", CheckpointError)
    state = obj.get("state_dict")
    header = {k: v for k, v in obj.items() if k not in ("state_dict", "sha256")}
    if not isinstance(state, dict) or _digest(header, state) != obj.get("sha256"):
        raise CheckpointError(f"checkpoint {path} fails its sha256 check: the file was altered or is corrupt")
    dims = dims_from_description(
        f"checkpoint {path}", header["preprocessing"]["audio"], header["dims"], CheckpointError
    )
    classes = tuple(header["classes"])
    if len(classes) != dims.n_classes:
        raise CheckpointError(f"checkpoint {path} names {len(classes)} classes for a {dims.n_classes}-way output")
    return Checkpoint(dims, state, classes, header["preprocessing"], header["meta"], obj["sha256"], path)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> AVEmotionNet:
    """Rebuild the network from a checkpoint file alone (eval mode)."""
    return load_checkpoint(path).build(device)
