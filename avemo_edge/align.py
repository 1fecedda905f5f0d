"""Alignment: timestamped frames and audio blocks -> one step per 100 ms on a common grid.

Step k covers capture times [t0 + k * 0.1, t0 + (k + 1) * 0.1), where t0 is the stamp of the
first item any source delivered. A step gets

- the newest frame captured before the step's end (none if it is older than `max_frame_age`):
  faces are detected on that frame only, so the visual branch always sees the newest face;
- the log-mel slice of the same 100 ms (`audio.AudioChunker`), placed on the grid by the
  capture time of the audio's first sample (to within half a step).

A step is ready when every source still running has delivered data past its end. A live
source (camera, microphone, RTSP) cannot be waited for forever, so with one of those a step is
also ready `live_latency` seconds after its end, whatever has arrived: late audio and frames
are dropped, not queued. When the loop falls more than `max_lag` behind a live source, it
skips steps to catch up and counts them. Files read faster than real time are paced by the
loop instead: their reader waits in `wait_for_room` while it is `ahead` seconds in front.

Audio is placed by its sample count from the first block's stamp, not by each block's stamp:
callbacks starved of the CPU arrive in bursts, late. A microphone's sample clock still drifts
from the monotonic clock (100 ppm is 8.6 s a day), so the timeline is corrected (`resyncs`)
when blocks arrive earlier than their sample count allows by more than `resync` seconds, when
the lowest lag over 5 s of audio exceeds `resync` (the card's clock is slow), and when a block
comes more than 1 s late (samples were lost).

Thread-safe: sources add from their threads, the loop takes steps from its own.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from .audio import STEP_SECONDS, AudioChunker
from .capture import AudioBlock, Frame

END = "end"  # returned by `next_step` when every source is finished and every step was taken


@dataclass
class Step:
    index: int
    t: float  # the step's end, monotonic seconds: nothing captured after it went in
    frame: np.ndarray | None  # newest frame (BGR) within max_frame_age of the end, or None
    audio: np.ndarray | None  # (64, 10) log-mel slice, or None when no audio covers the step


class Aligner:
    def __init__(
        self,
        max_frame_age: float = 0.5,
        live_latency: float = 0.15,
        max_lag: float = 1.0,
        ahead: float = 0.5,
        resync: float = 0.25,
        step: float = STEP_SECONDS,
    ) -> None:
        self.step, self.max_frame_age, self.live_latency = step, max_frame_age, live_latency
        self.max_lag, self.ahead, self.resync_after = max_lag, ahead, resync
        self._cv = threading.Condition()
        self.t0: float | None = None
        self.next_index = 0
        self._frames: deque[Frame] = deque(maxlen=64)
        self._slices: dict[int, np.ndarray] = {}
        self._watermark = {"video": -math.inf, "audio": -math.inf}
        self._running: dict[str, set[str]] = {"video": set(), "audio": set()}  # kind -> uris still delivering
        self._live: set[str] = set()
        self._chunker: AudioChunker | None = None
        self._a0 = 0.0  # stamp of the first sample of the current audio timeline
        self._a_rate = 0
        self._a_n = 0  # samples pushed since then
        self._a_base = 0  # grid index of that timeline's first slice
        self._lag_min, self._lag_window = math.inf, 0  # lowest stamp lag in the current window, its start
        self.max_gap = 1.0  # a block this much later than its sample count says: samples were lost
        self.lag_window_s = 5.0
        self._closed = False
        self._producer_waiting = False
        self.skipped = 0  # steps skipped to catch up with a live source
        self.resyncs = 0  # audio timeline restarts (gaps, drift)

    # --- from the sources ---------------------------------------------------------------
    def source_started(self, uri: str, video: bool, audio: bool, live: bool) -> None:
        with self._cv:
            if video:
                self._running["video"].add(uri)
            if audio:
                self._running["audio"].add(uri)
            if live:
                self._live.add(uri)
            self._cv.notify_all()

    def start_clock(self, uri: str, video: bool, audio: bool) -> None:
        """A live source that could not open: start the grid now, so that steps go on, flagged empty.

        Its steps are taken at their live deadline with no frame and no audio, as for a source lost
        after it opened; once it opens, its data lands on the same grid.
        """
        with self._cv:
            if self.t0 is None:
                self.t0 = time.monotonic()
        self.source_started(uri, video, audio, live=True)

    def source_stopped(self, uri: str) -> None:
        """A source ended or failed for good: do not wait for it, and flush its audio."""
        with self._cv:
            if uri in self._running["audio"] and self._chunker is not None:
                self._add_slices(self._chunker.flush())
                self._chunker = None
            for kind in self._running.values():
                kind.discard(uri)
            self._cv.notify_all()

    def close(self) -> None:
        """No source will deliver again (all ended or the daemon stops)."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def add(self, item: Frame | AudioBlock) -> None:
        with self._cv:
            if self.t0 is None:
                self.t0 = item.t
            if isinstance(item, Frame):
                self._frames.append(item)
                self._watermark["video"] = max(self._watermark["video"], item.t)
            else:
                self._add_audio(item)
            self._cv.notify_all()

    def _add_audio(self, block: AudioBlock) -> None:
        # lag: how much later the block was stamped than its sample count says. A stamp is never
        # early (it is taken when the data reaches us), but it can be late when callbacks come in
        # bursts, so the timeline follows the *lowest* lag seen over a window, not each block.
        lag = block.t - (self._a0 + self._a_n / self._a_rate) if self._chunker is not None else math.nan
        if self._chunker is None or block.rate != self._a_rate or not -self.resync_after <= lag <= self.max_gap:
            if self._chunker is not None:  # clock ran ahead, samples were lost, or the format changed
                self.resyncs += 1
            channels = block.samples.shape[1] if block.samples.ndim == 2 else 1
            self._chunker = AudioChunker(block.rate, channels)
            self._a0, self._a_rate, self._a_n = block.t, block.rate, 0
            self._a_base = round((block.t - self.t0) / self.step)
            self._lag_min, self._lag_window = math.inf, 0
        else:
            self._lag_min = min(self._lag_min, lag)
            if self._a_n - self._lag_window >= self.lag_window_s * self._a_rate:
                if self._lag_min > self.resync_after:  # consistently late: the sound card's clock is slow
                    self._a0 += self._lag_min
                    self._a_base = round((self._a0 - self.t0) / self.step)
                    self.resyncs += 1
                self._lag_min, self._lag_window = math.inf, self._a_n
        self._add_slices(self._chunker.push(block.samples))
        self._a_n += len(block.samples)
        # Audio has arrived up to the end of the last slice the chunker gave, not up to the last
        # sample: the resampler holds back ~11 ms, and a step must not be taken before its slice.
        covered = self.t0 + (self._a_base + self._chunker.steps) * self.step
        self._watermark["audio"] = max(self._watermark["audio"], covered)

    def _add_slices(self, slices: object) -> None:
        first = self._a_base + self._chunker.steps - len(slices)
        for j, s in enumerate(slices):
            if first + j >= self.next_index:  # a slice for a step already taken is too late
                self._slices[first + j] = s.numpy()

    def wait_for_room(self, t: float, stop: threading.Event) -> None:
        """Files read faster than real time: block the reader while it is `ahead` s in front of the loop."""
        with self._cv:
            while not stop.is_set() and not self._closed and self.t0 is not None:
                if t <= self.t0 + self.next_index * self.step + self.ahead:
                    break
                self._producer_waiting = True
                self._cv.notify_all()
                self._cv.wait(0.1)
            self._producer_waiting = False

    # --- for the loop -------------------------------------------------------------------
    def _ready(self, end: float, now: float) -> bool:
        waiting = [k for k, uris in self._running.items() if uris and self._watermark[k] < end]
        if not waiting or self._producer_waiting:
            return True
        return bool(self._live) and now >= end + self.live_latency

    def _finished(self, start: float) -> bool:
        if any(self._running.values()) and not self._closed:
            return False
        data_end = max(self._watermark.values())
        last_slice = max(self._slices, default=-1)
        return start >= data_end - 1e-9 and self.next_index > last_slice

    def next_step(self, timeout: float) -> Step | str | None:
        """The next step when it is ready, None after `timeout` without one, or END."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                now = time.monotonic()
                if self.t0 is not None:
                    if self._live and now - self._end(self.next_index) > self.max_lag:
                        target = max(self.next_index, math.floor((now - self.live_latency - self.t0) / self.step) - 1)
                        self.skipped += target - self.next_index
                        self.next_index = target
                    end = self._end(self.next_index)
                    if self._finished(end - self.step):
                        return END
                    if self._ready(end, now):
                        return self._take(end)
                elif self._closed:
                    return END
                left = deadline - now
                if left <= 0:
                    return None
                wake = left
                if self._live and self.t0 is not None:  # wake at the live deadline even if nothing arrives
                    wake = min(left, max(0.001, self._end(self.next_index) + self.live_latency - now))
                self._cv.wait(wake)

    def _end(self, index: int) -> float:
        return self.t0 + (index + 1) * self.step

    def _take(self, end: float) -> Step:
        k = self.next_index
        frame = None
        while self._frames and self._frames[0].t < end - 1e-9:  # captured before the step's end
            newest = self._frames.popleft()
            if end - newest.t <= self.max_frame_age:
                frame = newest
        if frame is not None:  # a later step with no newer frame may still use it
            self._frames.appendleft(frame)
        audio = self._slices.pop(k, None)
        for old in [i for i in self._slices if i < k]:
            del self._slices[old]
        self.next_index = k + 1
        self._cv.notify_all()  # a reader waiting for room may go on
        return Step(k, end, frame.image if frame is not None else None, audio)
