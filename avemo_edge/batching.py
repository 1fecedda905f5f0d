"""Several streams sharing one backend, stepped together: `RowPool`.

Each stream (a thread with its own recognizer) gets a `PooledBackend` from `pool.join()` and uses
it as its backend. A step submitted through it waits until every stream in the pool has
submitted one, or `wait_s` has passed, and then one `backends.step_rows` call runs all the
waiting streams' rows: one visual encoder call for every face of every stream, one audio step for
every stream's slice (each with its own LSTM state, side by side on the batch axis), one fusion
head call. Every stream gets exactly its own rows back, so the numbers are those of stepping it
alone (`tests/test_recognizer.py` checks). One pooled call runs at a time; steps submitted while
it runs are the next call's rows.

The daemon reads one camera, so it has nothing to pool; `avemo-edge bench pipeline --streams N
--pool-streams` runs N streams through one pool, as one backend serving N cameras would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .backends import Backend, step_rows

POOL_WAIT_S = 0.002  # how long a step waits for the other streams' before it runs with what has come


@dataclass(eq=False)  # compared by identity: `in` must not compare the arrays
class _Request:
    faces: Sequence[np.ndarray | None]
    audio: Sequence[np.ndarray | None]
    states: Sequence[Any]
    result: tuple[np.ndarray, np.ndarray, np.ndarray, list[Any]] | None = None
    error: BaseException | None = None
    done: bool = False


class RowPool:
    """One backend shared by several streams; their concurrent steps run as one batched call."""

    def __init__(self, backend: Backend, wait_s: float = POOL_WAIT_S) -> None:
        self.backend, self.wait_s = backend, wait_s
        self._cv = threading.Condition()
        self._pending: list[_Request] = []
        self._members = 0
        self._running = False
        self.calls = 0  # batched backend calls made
        self.rows = 0  # rows they carried

    def join(self) -> PooledBackend:
        """A backend for one more stream; call its `close()` when the stream ends."""
        with self._cv:
            self._members += 1
        return PooledBackend(self)

    def _leave(self) -> None:
        with self._cv:
            self._members -= 1
            self._cv.notify_all()  # the others no longer wait for this stream

    def submit(
        self, faces: Sequence[np.ndarray | None], audio: Sequence[np.ndarray | None], states: Sequence[Any]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Any]]:
        req = _Request(faces, audio, states)
        deadline = time.monotonic() + self.wait_s
        with self._cv:
            self._pending.append(req)
            self._cv.notify_all()
            while True:
                if req.done:
                    return self._result(req)
                ready = len(self._pending) >= self._members or time.monotonic() >= deadline
                if not self._running and ready and req in self._pending:
                    batch, self._pending, self._running = self._pending, [], True
                    break  # this thread runs the call, outside the lock
                self._cv.wait(max(1e-4, deadline - time.monotonic()) if not self._running else None)
        try:
            self._run(batch)
        finally:
            with self._cv:
                self._running = False
                self._cv.notify_all()
        return self._result(req)

    @staticmethod
    def _result(req: _Request) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Any]]:
        if req.error is not None:
            raise req.error
        assert req.result is not None
        return req.result

    def _run(self, batch: list[_Request]) -> None:
        faces = [f for r in batch for f in r.faces]
        audio = [a for r in batch for a in r.audio]
        states = [s for r in batch for s in r.states]
        try:
            logits, alpha, beta, new = step_rows(self.backend, faces, audio, states)
        except BaseException as e:  # every stream in the call hears of it
            for r in batch:
                r.error = e
        else:
            at = 0
            for r in batch:
                n = len(r.faces)
                r.result = (logits[at : at + n], alpha[at : at + n], beta[at : at + n], new[at : at + n])
                at += n
        with self._cv:
            self.calls += 1
            self.rows += len(faces)
            for r in batch:
                r.done = True
            self._cv.notify_all()


class PooledBackend:
    """One stream's view of a `RowPool`: the `Backend` interface, stepping through the pool."""

    def __init__(self, pool: RowPool) -> None:
        self.pool = pool
        inner = pool.backend
        self.name, self.dims, self.classes = f"pooled {inner.name}", inner.dims, inner.classes
        self._closed = False

    def init_state(self) -> Any:
        return self.pool.backend.init_state()

    def step(
        self, face: np.ndarray | None, audio: np.ndarray | None, state: Any
    ) -> tuple[np.ndarray, float, float, Any]:
        logits, alpha, beta, states = self.pool.submit([face], [audio], [state])
        return logits[0], float(alpha[0]), float(beta[0]), states[0]

    def step_rows(
        self, faces: Sequence[np.ndarray | None], audio: Sequence[np.ndarray | None], states: Sequence[Any]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Any]]:
        return self.pool.submit(faces, audio, states)

    def close(self) -> None:
        """This stream has ended: the pool stops waiting for it."""
        if not self._closed:
            self._closed = True
            self.pool._leave()
