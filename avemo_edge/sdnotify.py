"""systemd's notify protocol, written out (no dependency): datagrams to `$NOTIFY_SOCKET`.

Each message is newline-separated `KEY=VALUE` fields sent as one datagram to the unix socket
systemd names in `$NOTIFY_SOCKET` (a leading '@' is the abstract namespace); see sd_notify(3).
The daemon sends READY=1 after warm-up, WATCHDOG=1 from its recognition loop (at half of
`$WATCHDOG_USEC`, so a stuck loop is killed and restarted), STATUS=... with the current rate,
and STOPPING=1. Without `$NOTIFY_SOCKET` (not under systemd) every call does nothing.

While the model loads (`slow_start`: onnxruntime's TensorRT provider builds its engines on the
first start, minutes on an Orin Nano), a thread sends `EXTEND_TIMEOUT_USEC=` every half
`EXTEND_S`, each granting `EXTEND_S` more, so a build longer than the unit's `TimeoutStartSec=`
is not killed (systemd >= 236; it only counts once `TimeoutStartSec=` has passed). It gives up
after `EXTEND_LIMIT_S`, so a load that hangs is still timed out and restarted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping

log = logging.getLogger("avemo_edge")

EXTEND_S = 120.0  # each EXTEND_TIMEOUT_USEC= grants this long until the next one (sent at half of it)
EXTEND_LIMIT_S = 1800.0  # no more extensions after 30 min: a load that hangs still times out


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        path = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if path.startswith("@"):
            self.address = "\0" + path[1:]
        elif path.startswith("/"):
            self.address = path
        elif path:
            log.warning("NOTIFY_SOCKET=%r is neither a path nor an abstract socket; not notifying systemd", path)
        # The watchdog applies to this process only when WATCHDOG_PID is unset or is our pid.
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        self.watchdog_interval: float | None = None
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1e6 / 2  # ping at twice the rate systemd asks for
        self._last_ping = -float("inf")
        self._sock: socket.socket | None = None
        self._warned = False
        self._lock = threading.Lock()  # slow_start's thread and the main thread share the socket

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Send one datagram of fields; False (logged once) when it could not be sent."""
        if self.address is None:
            return False
        try:
            with self._lock:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto("\n".join(fields).encode(), self.address)
            return True
        except OSError as e:
            if not self._warned:
                log.warning("cannot notify systemd at %s (%s); carrying on", os.environ.get("NOTIFY_SOCKET"), e)
                self._warned = True
            return False

    def ready(self, status: str = "") -> None:
        self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> None:
        self.notify(f"STATUS={text}")

    def extend_timeout(self, seconds: float, status: str = "") -> None:
        """Ask for `seconds` more before the start (or stop) times out: EXTEND_TIMEOUT_USEC=, in microseconds."""
        self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}", *([f"STATUS={status}"] if status else []))

    @contextlib.contextmanager
    def slow_start(self, status: str, extend_s: float = EXTEND_S, limit_s: float = EXTEND_LIMIT_S) -> Iterator[None]:
        """While the block runs, extend the start timeout every `extend_s / 2`, for at most `limit_s`."""
        if not self.enabled:
            yield
            return
        done = threading.Event()
        t0 = time.monotonic()

        def extend() -> None:
            while not done.is_set():
                elapsed = time.monotonic() - t0
                if elapsed >= limit_s:
                    log.warning("still starting after %.0f s; no longer extending systemd's start timeout", elapsed)
                    return
                self.extend_timeout(extend_s, f"{status} ({elapsed:.0f} s)")
                done.wait(extend_s / 2)

        thread = threading.Thread(target=extend, name="sd-notify-extend", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join(1.0)

    def watchdog(self) -> None:
        """Called from the recognition loop on every pass; sends at most one ping per half interval."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_interval:
            self._last_ping = now
            self.notify("WATCHDOG=1")

    def stopping(self, status: str = "") -> None:
        self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
