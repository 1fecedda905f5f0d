"""The streaming step over the three exported graphs, shared by the onnxruntime and TensorRT backends.

    face  --visual_encoder-->  v ----------------\
    slice --audio_step (h, c)--> a, (h', c') ---> fusion_head(v, a, face_mask, audio_mask) -> logits, alpha, beta

A missing face skips the visual encoder and a missing slice skips the audio step, so the LSTM
state passes through unchanged, as in `AVEmotionNet.encode_audio`; the fusion head zeroes the
missing embedding and its gate from the mask, so the zeros fed in its place never matter.
Subclasses provide `_run(graph, feeds) -> outputs` and call `_warmup()` at the end of `__init__`.

`step_rows` runs B rows (several faces, or several streams) with one call per graph: every graph's
batch axis is dynamic (`export/onnx_export.py`), so the visual encoder takes all the faces at once
((n_faces, C, S, S)); a backend whose graphs have a largest batch (`max_batch`, TensorRT's
optimisation profile) runs a larger set in chunks of that size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import AvemoError
from .manifest import GRAPHS, ExportedModel

State = tuple[np.ndarray, np.ndarray]  # (h, c), each float32 ModelDims.state_shape(1)


class GraphBackend:
    name = "graph"

    def __init__(self, exported: ExportedModel) -> None:
        self.exported = exported
        self.dims, self.classes = exported.dims, exported.classes
        d = self.dims
        self._face_shape = (d.face_channels, d.face_size, d.face_size)
        self._audio_shape = (d.n_mels, d.slice_frames)
        self._state_shape = d.state_shape(1)
        self._zero_emb = np.zeros((1, d.embed_dim), np.float32)
        self._on, self._off = np.ones(1, np.float32), np.zeros(1, np.float32)

    max_batch: int | None = None  # the largest batch the graphs take (None: any)

    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _run_batched(self, graph: str, feeds: dict[str, np.ndarray], axes: dict[str, int]) -> dict[str, np.ndarray]:
        """`_run` on a batch, in chunks of `max_batch` rows when it is larger; `axes`: each tensor's batch axis."""
        n = next(x.shape[axes.get(k, 0)] for k, x in feeds.items())
        m = self.max_batch
        if m is None or n <= m:
            return self._run(graph, feeds)
        parts = [
            self._run(graph, {k: np.take(x, range(i, min(i + m, n)), axis=axes.get(k, 0)) for k, x in feeds.items()})
            for i in range(0, n, m)
        ]
        return {k: np.concatenate([p[k] for p in parts], axis=axes.get(k, 0)) for k in parts[0]}

    def _warmup(self, steps: int) -> None:
        state = self.init_state()
        face, audio = np.zeros(self._face_shape, np.float32), np.zeros(self._audio_shape, np.float32)
        for _ in range(steps):
            self.step(face, audio, state)

    def init_state(self) -> State:
        return np.zeros(self._state_shape, np.float32), np.zeros(self._state_shape, np.float32)

    def _check(self, what: str, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        x = np.asarray(x)
        if x.shape != shape:
            raise AvemoError(f"{what} has shape {x.shape} but this model takes {shape}")
        return np.ascontiguousarray(x, dtype=np.float32)[None]

    def step(
        self, face: np.ndarray | None, audio: np.ndarray | None, state: State
    ) -> tuple[np.ndarray, float, float, State]:
        if face is not None:
            f = self._check("face crop", face, self._face_shape)
            v = self._run("visual_encoder", {"face": f})["visual_emb"]
        else:
            v = self._zero_emb
        if audio is not None:
            m = self._check("log-mel slice", audio, self._audio_shape)
            out = self._run("audio_step", {"mel": m, "h_in": state[0], "c_in": state[1]})
            a, state = out["audio_emb"], (out["h_out"], out["c_out"])
        else:
            a = self._zero_emb
        out = self._run(
            "fusion_head",
            {
                "visual_emb": v,
                "audio_emb": a,
                "face_mask": self._on if face is not None else self._off,
                "audio_mask": self._on if audio is not None else self._off,
            },
        )
        return out["logits"][0], float(out["alpha"][0]), float(out["beta"][0]), state

    def step_rows(
        self, faces: Sequence[np.ndarray | None], audio: Sequence[np.ndarray | None], states: Sequence[State | None]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[State | None]]:
        """B rows with one call per graph (see the module's docstring); `step` is the one-row case."""
        n, e = len(faces), self.dims.embed_dim
        if len(audio) != n or len(states) != n:
            raise ValueError(f"step_rows needs one slice and one state per row: {n}, {len(audio)}, {len(states)}")
        fi = [i for i, f in enumerate(faces) if f is not None]
        ai = [i for i, a in enumerate(audio) if a is not None]
        v = np.zeros((n, e), np.float32)
        a = np.zeros((n, e), np.float32)
        new_states = list(states)
        if fi:
            batch = np.concatenate([self._check("face crop", faces[i], self._face_shape) for i in fi])
            v[fi] = self._run_batched("visual_encoder", {"face": batch}, {})["visual_emb"]
        if ai:
            mel = np.concatenate([self._check("log-mel slice", audio[i], self._audio_shape) for i in ai])
            h = np.concatenate([states[i][0] for i in ai], axis=1)
            c = np.concatenate([states[i][1] for i in ai], axis=1)
            axes = {"h_in": 1, "c_in": 1, "h_out": 1, "c_out": 1}
            out = self._run_batched("audio_step", {"mel": mel, "h_in": h, "c_in": c}, axes)
            a[ai] = out["audio_emb"]
            for j, i in enumerate(ai):
                new_states[i] = (out["h_out"][:, j : j + 1].copy(), out["c_out"][:, j : j + 1].copy())
        fm, am = np.zeros(n, np.float32), np.zeros(n, np.float32)
        fm[fi], am[ai] = 1.0, 1.0
        out = self._run_batched("fusion_head", {"visual_emb": v, "audio_emb": a, "face_mask": fm, "audio_mask": am}, {})
        return out["logits"], out["alpha"], out["beta"], new_states


__all__ = ["GRAPHS", "GraphBackend", "State"]
