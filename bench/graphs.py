"""Model mode: each graph alone (visual encoder, audio step, fusion head) and one whole step, batch 1 and batched.

Per row:
- the three graphs at batch 1, each on inputs already where the graph runs (for torch on CUDA:
  on the GPU, so no copies), the LSTM state carried for the audio step;
- the whole step through the backend's own `step()` at batch 1 (numpy in, numpy out, state
  carried): this is what the runtime calls every 100 ms, and the row's FPS and percentiles;
- for each batch size: the visual encoder and a whole step on B streams at once (torch:
  `AVEmotionNet.step`; exported graphs: the three graphs in turn), with the memory afterwards.

Exported-graph backends are timed graph by graph through their `_run(graph, feeds)` with the
tensor names of the export's contract (`avemo_edge/manifest.py`); a backend without it gets
its whole step timed and the graph cells say why they are empty.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from avemo_edge.backends import Backend

from .environment import memory_now
from .timing import Timed, time_calls
from .variants import Built, error_sentence

GRAPH_NAMES = ("visual_encoder", "audio_step", "fusion_head")


def _torch_graphs(b: Built, batch: int) -> dict[str, Callable[[], object]]:
    backend = b.backend
    model, dev, d = backend.model, backend.device, backend.dims
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(backend.precision)
    g = torch.Generator(device="cpu").manual_seed(0)
    face = torch.rand(batch, d.face_channels, d.face_size, d.face_size, generator=g).to(dev)  # (B, C, S, S)
    mel = torch.randn(batch, 1, d.n_mels, d.slice_frames, generator=g).to(dev)  # (B, T=1, 64, N)
    v = torch.nn.functional.normalize(torch.randn(batch, d.embed_dim, generator=g), dim=-1).to(dev)  # (B, 128)
    a = torch.randn(batch, d.embed_dim, generator=g).to(dev)
    on = torch.ones(batch, dtype=torch.bool, device=dev)
    state = [model.init_state(batch)]

    def run(fn: Callable[[], Any]) -> Callable[[], object]:
        def call() -> object:
            with torch.inference_mode(), torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
                return fn()

        return call

    def audio() -> object:
        out, state[0] = model.audio(mel, state[0])
        return out

    def step() -> object:
        logits, _, _, state[0] = model.step(face, mel[:, 0], state[0], on, on)
        return logits

    return {
        "visual_encoder": run(lambda: model.visual(face)),
        "audio_step": run(audio),
        "fusion_head": run(lambda: model.fusion(v, a, on, on)),
        "step": run(step),
    }


def _exported_graphs(b: Built, batch: int) -> dict[str, Callable[[], object]]:
    backend = b.backend
    d = backend.dims
    rng = np.random.default_rng(0)
    face = rng.random((batch, d.face_channels, d.face_size, d.face_size), dtype=np.float32)
    mel = rng.standard_normal((batch, d.n_mels, d.slice_frames)).astype(np.float32)
    v = rng.standard_normal((batch, d.embed_dim)).astype(np.float32)
    a = rng.standard_normal((batch, d.embed_dim)).astype(np.float32)
    on = np.ones(batch, np.float32)
    zeros = np.zeros(d.state_shape(batch), np.float32)
    state = [(zeros, zeros)]
    run = backend._run  # the graph backends' one entry point per graph

    def audio() -> dict[str, np.ndarray]:
        out = run("audio_step", {"mel": mel, "h_in": state[0][0], "c_in": state[0][1]})
        state[0] = (out["h_out"], out["c_out"])
        return out

    def step() -> object:
        vis = run("visual_encoder", {"face": face})["visual_emb"]
        aud = audio()["audio_emb"]
        return run("fusion_head", {"visual_emb": vis, "audio_emb": aud, "face_mask": on, "audio_mask": on})

    return {
        "visual_encoder": lambda: run("visual_encoder", {"face": face}),
        "audio_step": audio,
        "fusion_head": lambda: run("fusion_head", {"visual_emb": v, "audio_emb": a, "face_mask": on, "audio_mask": on}),
        "step": step,
    }


def graph_calls(b: Built, batch: int) -> dict[str, Callable[[], object]] | None:
    """Callables for each graph and a batched whole step, or None when the backend does not expose its graphs."""
    if b.variant.backend == "torch":
        return _torch_graphs(b, batch)
    if hasattr(b.backend, "_run"):
        return _exported_graphs(b, batch)
    return None


def backend_step_call(backend: Backend) -> Callable[[], object]:
    """One streaming step through the backend's own batch-1 interface (numpy in and out), the LSTM state carried."""
    d = backend.dims
    rng = np.random.default_rng(0)
    face = rng.random((d.face_channels, d.face_size, d.face_size), dtype=np.float32)
    audio = rng.standard_normal((d.n_mels, d.slice_frames)).astype(np.float32)
    state = [backend.init_state()]

    def call() -> object:
        logits, _, _, state[0] = backend.step(face, audio, state[0])
        return logits

    return call


def _timed_cell(timed: Timed) -> dict[str, Any]:
    return {"status": "ok", "latency_ms": timed.stats.as_dict(), "per_second": round(timed.per_second, 2)}


def measure_row(b: Built, batches: list[int], warmup: int, seconds: float) -> dict[str, Any]:
    """The row's batch-1 numbers and its batch sweep; a failing measurement fills its own cell."""
    row: dict[str, Any] = {"stages": {}, "batch_sweep": []}
    kw = {"warmup": warmup, "seconds": seconds, "sync": b.sync}
    try:
        step = time_calls(backend_step_call(b.backend), **kw)
    except Exception as e:  # the whole row failed at run time
        return {**row, "status": "error", "detail": f"the backend's step failed: {error_sentence(e)}"}
    st = step.stats
    row.update(status="ok", fps=round(step.per_second, 2), latency_ms=st.as_dict(), _samples_ms=step.samples_ms)
    try:
        calls = graph_calls(b, 1)
    except Exception as e:
        calls, why = None, f"the graphs could not be set up: {error_sentence(e)}"
    else:
        why = f"backend {b.variant.backend!r} does not expose its graphs one by one"
    for name in GRAPH_NAMES:
        if calls is None:
            row["stages"][name] = {"status": "n/a", "detail": why}
            continue
        try:
            row["stages"][name] = _timed_cell(time_calls(calls[name], **kw))
        except Exception as e:
            row["stages"][name] = {"status": "error", "detail": error_sentence(e)}
    for batch in batches:
        row["batch_sweep"].append(_measure_batch(b, batch, warmup, seconds))
    return row


def _measure_batch(b: Built, batch: int, warmup: int, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {"batch": batch}
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        calls = graph_calls(b, batch)
        if calls is None:
            return {**out, "status": "n/a", "detail": f"backend {b.variant.backend!r} runs batch 1 only"}
        for name in ("visual_encoder", "step"):
            t = time_calls(calls[name], warmup=warmup, seconds=seconds, sync=b.sync, items_per_call=batch)
            out[name] = _timed_cell(t)
    except Exception as e:  # e.g. a batch above a TensorRT profile's maximum
        return {**out, "status": "error", "detail": error_sentence(e)}
    return {**out, "status": "ok", "memory": memory_now()}
