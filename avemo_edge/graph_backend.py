"""The streaming step over the three exported graphs, shared by the onnxruntime and TensorRT backends.

    face  --visual_encoder-->  v ----------------\
    slice --audio_step (h, c)--> a, (h', c') ---> fusion_head(v, a, face_mask, audio_mask) -> logits, alpha, beta

A missing face skips the visual encoder and a missing slice skips the audio step, so the LSTM
state passes through unchanged, as in `AVEmotionNet.encode_audio`; the fusion head zeroes the
missing embedding and its gate from the mask, so the zeros fed in its place never matter.
Subclasses provide `_run(graph, feeds) -> outputs` and call `_warmup()` at the end of `__init__`.
"""

from __future__ import annotations

import numpy as np

from .errors import AvemoError
from .manifest import GRAPHS, ExportedModel

State = tuple[np.ndarray, np.ndarray]  # LSTM (h, c), each float32 (layers, 1, hidden)


class GraphBackend:
    name = "graph"

    def __init__(self, exported: ExportedModel) -> None:
        self.exported = exported
        self.dims, self.classes = exported.dims, exported.classes
        d = self.dims
        self._face_shape = (d.face_channels, d.face_size, d.face_size)
        self._audio_shape = (d.n_mels, d.slice_frames)
        self._state_shape = (d.lstm_layers, 1, d.lstm_hidden)
        self._zero_emb = np.zeros((1, d.embed_dim), np.float32)
        self._on, self._off = np.ones(1, np.float32), np.zeros(1, np.float32)

    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

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


__all__ = ["GRAPHS", "GraphBackend", "State"]
