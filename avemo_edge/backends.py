"""Inference backends behind one small interface, chosen by name.

A backend runs one streaming step for one stream (batch 1) on numpy arrays:

    logits, alpha, beta, state = backend.step(face, audio, state)

`face` is (C, S, S) float32 in [0, 1] or None; `audio` is a (64, N) log-mel slice or None; the
state is opaque to callers (start from `backend.init_state()`). A missing modality is a mask:
the torch backend passes a zero input with its mask off, so it runs one fixed graph; the
exported-graph backends (`onnxruntime`, `tensorrt`, see `graph_backend.py`) skip that branch's
graph and give the fusion head a zero embedding with the mask off, which gives the same numbers.
Warm-up happens in the constructor, so the first real step is not slower than the rest.

Several faces, or several streams, in one step: `step_rows(backend, faces, audio, states)` takes
B rows (each a face or None, a slice or None, and that row's state) and returns (B, 7) logits,
(B,) gates and the B new states. A backend with its own `step_rows` runs each branch once for all
the rows that have it: the visual encoder on a (n_faces, C, S, S) batch, the audio step on the
rows with audio (their LSTM states stacked on the batch axis), the fusion head on all B rows; any
other backend gets one `step` per row. A row without audio leaves its state as it was (None is
accepted there), as a masked step does in `AVEmotionNet.encode_audio`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from .checkpoint import Checkpoint, load_checkpoint
from .errors import AvemoError
from .model import ModelDims


class Backend(Protocol):
    name: str
    dims: ModelDims
    classes: tuple[str, ...]

    def init_state(self) -> Any: ...

    def step(
        self, face: np.ndarray | None, audio: np.ndarray | None, state: Any
    ) -> tuple[np.ndarray, float, float, Any]: ...


class TorchBackend:
    """The checkpoint's network in torch; `precision` 'fp32' or 'bf16' (CPU autocast) or 'fp16' (CUDA)."""

    name = "torch"

    def __init__(self, checkpoint: Checkpoint, device: str = "cpu", precision: str = "fp32", warmup: int = 3) -> None:
        if precision not in ("fp32", "bf16", "fp16"):
            raise AvemoError(f"torch precision must be fp32, bf16 or fp16, not {precision!r}")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise AvemoError(f"device {device!r} was asked for but torch sees no CUDA device")
        if precision == "fp16" and not device.startswith("cuda"):
            raise AvemoError("fp16 in torch needs a CUDA device; use bf16 on a CPU")
        self.device, self.precision = torch.device(device), precision
        self.model = checkpoint.build(self.device)
        self.dims, self.classes = checkpoint.dims, checkpoint.classes
        d = self.dims
        self._zero_face = torch.zeros(1, d.face_channels, d.face_size, d.face_size, device=self.device)
        self._zero_audio = torch.zeros(1, d.n_mels, d.slice_frames, device=self.device)
        state = self.init_state()
        for _ in range(warmup):
            self.step(np.zeros((d.face_channels, d.face_size, d.face_size), np.float32),
                      np.zeros((d.n_mels, d.slice_frames), np.float32), state)  # fmt: skip

    def init_state(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.init_state(1)

    @torch.inference_mode()
    def step(
        self, face: np.ndarray | None, audio: np.ndarray | None, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[np.ndarray, float, float, tuple[torch.Tensor, torch.Tensor]]:
        dev = self.device
        f = self._zero_face if face is None else torch.as_tensor(face, device=dev)[None]
        a = self._zero_audio if audio is None else torch.as_tensor(audio, device=dev)[None]
        fm = torch.tensor([face is not None], device=dev)
        am = torch.tensor([audio is not None], device=dev)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            logits, alpha, beta, state = self.model.step(f, a, state, fm, am)
        state = (state[0].float(), state[1].float())
        return logits[0].float().cpu().numpy(), float(alpha[0]), float(beta[0]), state

    @torch.inference_mode()
    def step_rows(
        self, faces: Sequence[np.ndarray | None], audio: Sequence[np.ndarray | None], states: Sequence[Any]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Any]]:
        """B rows in one call per branch (see the module's docstring); `step` is the one-row case."""
        dev, n, e = self.device, len(faces), self.dims.embed_dim
        if len(audio) != n or len(states) != n:
            raise ValueError(f"step_rows needs one slice and one state per row: {n}, {len(audio)}, {len(states)}")
        fi = [i for i, f in enumerate(faces) if f is not None]
        ai = [i for i, a in enumerate(audio) if a is not None]
        fm = torch.zeros(n, dtype=torch.bool, device=dev)
        am = torch.zeros(n, dtype=torch.bool, device=dev)
        fm[fi], am[ai] = True, True
        v = torch.zeros(n, e, device=dev)
        a = torch.zeros(n, e, device=dev)
        new_states = list(states)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            if fi:  # one visual encoder call on the (n_faces, C, S, S) batch
                batch = torch.as_tensor(np.stack([faces[i] for i in fi]), device=dev)
                v[fi] = self.model.visual(batch).to(v.dtype)
            if ai:  # one audio step on the rows with audio, their (L, 1, H) states side by side
                mel = torch.as_tensor(np.stack([audio[i] for i in ai]), device=dev)[:, None]  # (k, 1, 64, N)
                h = torch.cat([states[i][0] for i in ai], dim=1)
                c = torch.cat([states[i][1] for i in ai], dim=1)
                emb, (h, c) = self.model.audio(mel, (h, c))
                a[ai] = emb[:, 0].to(a.dtype)
                h, c = h.float(), c.float()
                for j, i in enumerate(ai):
                    new_states[i] = (h[:, j : j + 1].contiguous(), c[:, j : j + 1].contiguous())
            logits, alpha, beta = self.model.fusion(v, a, fm, am)
        return logits.float().cpu().numpy(), alpha.float().cpu().numpy(), beta.float().cpu().numpy(), new_states


def step_rows(
    backend: Backend, faces: Sequence[np.ndarray | None], audio: Sequence[np.ndarray | None], states: Sequence[Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Any]]:
    """B rows of one step: batched by the backend's own `step_rows` where it has one, else one `step` per row.

    Returns logits (B, classes), alpha (B,), beta (B,) and the B states after the step (a row
    without audio gets its state back unchanged).
    """
    batched = getattr(backend, "step_rows", None)
    if batched is not None:
        return batched(faces, audio, states)
    rows = [
        backend.step(f, a, s if s is not None else backend.init_state())
        for f, a, s in zip(faces, audio, states, strict=True)
    ]
    logits = np.stack([r[0] for r in rows]) if rows else np.zeros((0, len(backend.classes)), np.float32)
    alpha = np.asarray([r[1] for r in rows], np.float32)
    beta = np.asarray([r[2] for r in rows], np.float32)
    return logits, alpha, beta, [r[3] if a is not None else s for r, a, s in zip(rows, audio, states, strict=True)]


def _torch(model_path: str | Path, **options: Any) -> Backend:
    return TorchBackend(load_checkpoint(model_path), **options)


def _onnxruntime(model_path: str | Path, **options: Any) -> Backend:
    from .ort_backend import OnnxRuntimeBackend  # imports onnxruntime in its constructor

    return OnnxRuntimeBackend(model_path, **options)


def _tensorrt(model_path: str | Path, **options: Any) -> Backend:
    from .trt_backend import TensorRTBackend  # imports tensorrt and cuda-python in its constructor

    return TensorRTBackend(model_path, **options)


# name -> factory(model_path, **options). `torch` takes a checkpoint (.pt); `onnxruntime` and
# `tensorrt` take a folder written by `avemo-edge export` (its manifest.json names the files).
BACKENDS: dict[str, Callable[..., Backend]] = {"torch": _torch, "onnxruntime": _onnxruntime, "tensorrt": _tensorrt}


def create_backend(name: str, model_path: str | Path, **options: Any) -> Backend:
    """Build the backend called `name` for the model at `model_path` (checkpoint or export folder)."""
    if name not in BACKENDS:
        raise AvemoError(f"unknown backend {name!r}; choose one of {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name](model_path, **options)
