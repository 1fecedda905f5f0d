"""Publishing: where each step's result goes, behind frigate's three methods.

    publish(topic, payload, retain=False)   topic is relative: "state" or "status"
    subscribe(topic, callback)              callback(topic, payload_bytes) on incoming messages
    stop()                                  flush what can be flushed in a second, then close

Every publisher puts messages on a bounded queue that a thread of its own drains, so a slow
disk, a blocked pipe or a dead broker never holds up capture or recognition. When the queue is
full the *oldest* message is dropped (what reaches a consumer after an outage is the most
recent past) and `dropped` counts it.

Only results leave the device: no publisher is ever given a frame or audio.

- `JsonLinesPublisher`: one JSON object per step (the "state" messages) on stdout or appended
  to a file; "text" prints one readable line per step instead.
- `MqttPublisher` (paho-mqtt 2.x): `{prefix}/{device_id}/state` per step and a retained
  `{prefix}/{device_id}/status`; a retained `{prefix}/{device_id}/availability` that reads
  "online" while connected and "offline" after a clean stop or, through the broker's last will,
  after a crash. paho reconnects on its own with backoff; messages wait on the queue meanwhile.
  The password and the TLS client key are read from `$CREDENTIALS_DIRECTORY` (systemd's
  `LoadCredential=`), never from the config file.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Protocol

from .config import MQTTConfig
from .errors import AvemoError, path_problem

log = logging.getLogger("avemo_edge")

Callback = Callable[[str, bytes], None]


class Publisher(Protocol):
    dropped: int

    def publish(self, topic: str, payload: dict[str, Any], retain: bool = False) -> None: ...

    def subscribe(self, topic: str, callback: Callback) -> None: ...

    def stop(self) -> None: ...


class QueuedPublisher:
    """The bounded queue and sender thread that every publisher shares; subclasses implement `_send`."""

    name = "queue"

    def __init__(self, queue_size: int = 100) -> None:
        self._queue: deque[tuple[str, dict[str, Any], bool]] = deque()
        self._size = queue_size
        self._cv = threading.Condition()
        self._stopping = False
        self.dropped = 0  # messages dropped because the queue was full or sending failed
        self.sent = 0
        self._warned = False
        self._thread = threading.Thread(target=self._drain, name=f"publish {self.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def publish(self, topic: str, payload: dict[str, Any], retain: bool = False) -> None:
        """Queue a message; never blocks (beyond a lock held for microseconds)."""
        with self._cv:
            if len(self._queue) >= self._size:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append((topic, payload, retain))
            self._cv.notify()

    def subscribe(self, topic: str, callback: Callback) -> None:
        """Nothing comes in through this publisher; the call is accepted and does nothing."""

    def _ready(self) -> bool:
        """Whether `_send` can be called now (MQTT: connected)."""
        return True

    def _send(self, topic: str, payload: dict[str, Any], retain: bool) -> bool | None:
        raise NotImplementedError

    def _tick(self) -> None:
        """Called by the sender thread after every message and every 0.2 s while it waits."""

    def _drain(self) -> None:
        while True:
            self._tick()
            with self._cv:
                if not (self._queue and self._ready()) and not self._stopping:
                    self._cv.wait(0.2)
                    continue
                if not self._queue or (self._stopping and not self._ready()):
                    return
                topic, payload, retain = self._queue.popleft()
            try:
                ok = self._send(topic, payload, retain)
            except Exception as e:  # a writer must not die on one bad message or a broken pipe
                if not self._warned:  # said once; later failures only count (see `dropped`)
                    log.warning("%s publisher: cannot send a %s message (%s); dropping", self.name, topic, e)
                    self._warned = True
                ok = False
            with self._cv:
                if ok is None:
                    pass  # handed on; the subclass counts it once it is known to be sent or lost
                elif ok:
                    self.sent += 1
                else:
                    self.dropped += 1

    def _wake(self) -> None:
        with self._cv:
            self._cv.notify_all()

    def stop(self, timeout: float = 1.0) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        with self._cv:
            self.dropped += len(self._queue)  # what could not be flushed in time
            self._queue.clear()


def format_text(payload: dict[str, Any]) -> str:
    """One readable line per step: time, label and its probability, what was present, the gates."""
    p = payload["probs"][payload["label"]]
    flags = " ".join(name for name in ("face", "speech") if payload.get(name)) or "-"
    line = (
        f"{payload['t']:8.1f} s  {payload['label']:<9} {p:.2f}  {flags:<11} "
        f"alpha {payload['alpha']:.2f}  beta {payload['beta']:.2f}  {payload['latency_ms']:.0f} ms"
    )
    faces = payload.get("faces") or []
    if len(faces) > 1:  # several tracked faces: each one's id and shown label, the voice's marked with *
        voice = payload.get("voice_face")
        line += "  faces " + " ".join(f"{f['id']}{'*' if f['id'] == voice else ''}:{f['label']}" for f in faces)
    return line


class JsonLinesPublisher(QueuedPublisher):
    """Step results as JSON lines (or text lines) on a stream or appended to a file; status is not written."""

    def __init__(self, target: str | Path | IO[str] = "-", fmt: str = "jsonl", queue_size: int = 100) -> None:
        if fmt not in ("jsonl", "text"):
            raise AvemoError(f"output format {fmt!r} is not known; use jsonl or text")
        self.name = "stdout" if target == "-" else str(target)
        super().__init__(queue_size)
        self.fmt = fmt
        if target == "-":
            self._stream, self._own = sys.stdout, False
        elif isinstance(target, str | Path):
            try:
                self._stream, self._own = open(target, "a", encoding="utf-8", buffering=1), True  # noqa: SIM115
            except OSError as e:
                raise AvemoError(f"output file {target} cannot be opened for appending ({e.strerror})") from None
        else:
            self._stream, self._own = target, False
        self.start()

    def publish(self, topic: str, payload: dict[str, Any], retain: bool = False) -> None:
        if topic == "state":
            super().publish(topic, payload, retain)

    def _send(self, topic: str, payload: dict[str, Any], retain: bool) -> bool:
        line = format_text(payload) if self.fmt == "text" else json.dumps(payload, separators=(",", ":"))
        self._stream.write(line + "\n")
        self._stream.flush()
        return True

    def stop(self, timeout: float = 1.0) -> None:
        super().stop(timeout)
        if self._own:
            try:
                self._stream.close()
            except OSError as e:  # a full disk: what was still buffered is lost, said once here
                log.warning("output file %s could not be closed cleanly (%s)", self.name, e.strerror or e)


def credential_path(name: str, what: str, folder: Path | None = None) -> Path:
    """Where credential `name` is read: $CREDENTIALS_DIRECTORY/name under systemd (`LoadCredential=`),
    else `folder`/name (the config file's folder, where the shipped unit's `LoadCredential=` lines
    take it from). An AvemoError naming the key, the value and what to create when it is not there.
    """
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if directory:
        path = Path(directory) / name
        if not path.is_file():
            raise AvemoError(
                f"{what} = {name!r}: there is no credential {path}; the unit needs a line "
                f"LoadCredential={name}:/etc/avemo-edge/{name} (systemd/avemo-edge.service)"
            )
        return path
    if folder is None:
        raise AvemoError(
            f"{what} = {name!r} needs $CREDENTIALS_DIRECTORY (set by systemd's LoadCredential=), which is not set"
        )
    path = Path(folder) / name
    if path.is_dir():
        raise AvemoError(f"{what} = {name!r}: {path} is a directory, not a file holding the secret")
    if not path.is_file():
        raise AvemoError(
            f"{what} = {name!r}: {path} does not exist; create it, readable by root only "
            f"(sudo install -m 600 /dev/null {path}, then write the secret in it), "
            f"and give it to the service with LoadCredential={name}:{path}"
        )
    return path


def read_credential(name: str, what: str, folder: Path | None = None) -> Path:
    """The path of credential `name` (see `credential_path`), checked to be readable by this process."""
    path = credential_path(name, what, folder)
    if not os.access(path, os.R_OK):
        raise AvemoError(
            f"{what} = {name!r}: {path} cannot be read by this user; under systemd the service reads "
            "its own copy (LoadCredential=), so run it there or as a user who may read the file"
        )
    return path


class MqttPublisher(QueuedPublisher):
    name = "mqtt"

    def __init__(self, cfg: MQTTConfig, credentials: Path | None = None) -> None:
        """`credentials`: where to read the password and key outside systemd (the config file's folder)."""
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise AvemoError("mqtt.enabled = true needs paho-mqtt: pip install 'paho-mqtt>=2'") from None
        super().__init__(cfg.queue_size)
        self.cfg = cfg
        self.device_id = cfg.device_id or socket.gethostname()
        self.base = f"{cfg.prefix}/{self.device_id}"
        self.availability = f"{self.base}/availability"
        self._subscriptions: dict[str, Callback] = {}
        self._connected = threading.Event()
        self.connects = 0  # successful connections, the first included
        # Unique per process unless set: two daemons sharing an id would take the session from each other.
        client_id = cfg.client_id or f"avemo-edge-{self.device_id}-{secrets.token_hex(3)}"
        self.client_id = client_id
        self._inflight: set[int] = set()  # mids handed to paho, not yet acknowledged (QoS 1/2) or written (QoS 0)
        self._early: set[int] = set()  # mids paho reported before publish() returned them
        # QoS 0 has no acknowledgement, and a half-open connection swallows what is written to it
        # unseen. So a QoS 0 message counts as sent only once the broker has answered a probe sent
        # after it (an UNSUBSCRIBE of a topic nobody uses: the broker reads packets in order, so its
        # UNSUBACK says it read every message before the probe; consumers see nothing), and as
        # dropped if the connection dies first. One probe at a time, at most every CONFIRM_S.
        self._handed = 0  # QoS 0 messages handed to paho, ever
        self._resolved = 0  # of those, how many are counted (sent or dropped), in order
        self._probe_upto: int | None = None  # `_handed` when the outstanding probe was sent
        self._probe_at = 0.0
        self._probe_topic = f"{self.base}/_confirm"
        self._lock = threading.Lock()
        self._unreachable_said = False
        self._connected_at = 0.0
        self._short_sessions = 0  # connections in a row the broker closed right after accepting them
        self._duplicate_said = False
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.will_set(self.availability, "offline", qos=max(cfg.qos, 1), retain=True)
        if cfg.username:
            password = None
            if cfg.password_credential:
                path = read_credential(cfg.password_credential, "mqtt.password_credential", credentials)
                try:
                    password = path.read_text(encoding="utf-8").rstrip("\r\n")
                except (OSError, UnicodeDecodeError) as e:
                    raise AvemoError(f"mqtt.password_credential: {path} cannot be read ({e})") from None
            self.client.username_pw_set(cfg.username, password)
        if cfg.tls.enabled:
            key = None
            if cfg.tls.key_credential:
                key = read_credential(cfg.tls.key_credential, "mqtt.tls.key_credential", credentials)
            for key_name in ("ca_file", "cert_file"):
                value = getattr(cfg.tls, key_name)
                problem = path_problem(value) if value else None
                if problem:
                    raise AvemoError(f"mqtt.tls.{key_name} = {value!r} {problem}")
            self.client.tls_set(ca_certs=cfg.tls.ca_file or None, certfile=cfg.tls.cert_file or None, keyfile=key)
            self.client.tls_insecure_set(cfg.tls.insecure)
        self.client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)
        # paho's own queue is not capped (a cap refused the availability "online" after an outage);
        # `_ready` bounds it instead: no more than queue_size state messages wait there for an ack.
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_publish = self._on_publish
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_unsubscribe = self._on_unsubscribe
        self.client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        self.client.loop_start()  # connects, and reconnects for ever, in paho's own thread
        self.start()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def topic(self, relative: str) -> str:
        return f"{self.base}/{relative}"

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.warning("MQTT broker %s:%d refused the connection: %s", self.cfg.host, self.cfg.port, reason)
            return
        from paho.mqtt.client import MQTT_ERR_SUCCESS, error_string

        self.connects += 1
        self._unreachable_said = False
        self._connected_at = time.monotonic()
        info = client.publish(self.availability, "online", qos=max(self.cfg.qos, 1), retain=True)
        if info.rc != MQTT_ERR_SUCCESS:
            log.error("MQTT availability 'online' was refused by the client (%s)", error_string(info.rc))
        for topic in self._subscriptions:
            client.subscribe(topic, qos=self.cfg.qos)
        self._connected.set()
        cfg = self.cfg
        log.info("MQTT connected to %s:%d as %s (connection %d)", cfg.host, cfg.port, self.base, self.connects)
        self._wake()

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        if not self._unreachable_said:  # one line per outage, not one per retry
            self._unreachable_said = True
            log.warning("MQTT broker %s:%d is unreachable; retrying in the background", self.cfg.host, self.cfg.port)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        with self._lock:
            if mid in self._inflight:
                self._inflight.discard(mid)
                with self._cv:
                    if self.cfg.qos > 0:
                        self.sent += 1  # acknowledged; QoS 0 (only written) waits for a probe's answer
                    self._cv.notify_all()
            else:
                self._early.add(mid)

    CONFIRM_S = 1.0  # QoS 0: how often a probe asks the broker to confirm what it has read

    def _tick(self) -> None:
        if self.cfg.qos == 0:
            self._probe()

    def _probe(self, now: bool = False) -> None:
        """QoS 0: ask the broker to confirm the messages handed to paho so far (see `_handed`)."""
        from paho.mqtt.client import MQTT_ERR_SUCCESS

        with self._lock:
            if self._probe_upto is not None or self._handed == self._resolved or not self._connected.is_set():
                return
            if not now and time.monotonic() - self._probe_at < self.CONFIRM_S:
                return
            self._probe_upto, self._probe_at = self._handed, time.monotonic()
        rc, _ = self.client.unsubscribe(self._probe_topic)
        if rc != MQTT_ERR_SUCCESS:
            with self._lock:
                self._probe_upto = None

    def _on_unsubscribe(self, client: Any, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        with self._lock, self._cv:
            if self._probe_upto is not None:
                if self._probe_upto > self._resolved:  # the broker has read all of these
                    self.sent += self._probe_upto - self._resolved
                    self._resolved = self._probe_upto
                self._probe_upto = None
                self._cv.notify_all()

    def _count_unconfirmed_as_dropped(self) -> None:
        """QoS 0: what the broker has not confirmed is lost as far as we know (call with the locks held)."""
        self.dropped += self._handed - self._resolved
        self._resolved = self._handed
        self._probe_upto = None

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if self.cfg.qos == 0:  # paho forgets unsent QoS 0 messages on a disconnect: they are lost,
            with self._lock, self._cv:  # and so are the written ones the broker did not confirm
                self._count_unconfirmed_as_dropped()
                self._inflight.clear()
        if was and not self._stopping:
            lasted = time.monotonic() - self._connected_at
            self._short_sessions = self._short_sessions + 1 if lasted < self.SHORT_SESSION_S else 0
            log.warning("MQTT lost the broker %s:%d (%s); reconnecting", self.cfg.host, self.cfg.port, reason)
            if self._short_sessions >= 3 and not self._duplicate_said:
                self._duplicate_said = True
                log.error(
                    "MQTT broker %s:%d closed the connection right after accepting it %d times in a row: probably "
                    "another client uses the same client id %r (leave mqtt.client_id empty for a unique one)",
                    self.cfg.host,
                    self.cfg.port,
                    self._short_sessions,
                    self.client_id,
                )

    SHORT_SESSION_S = 2.0  # a broker taking a session over closes the old connection within milliseconds

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        callback = self._subscriptions.get(message.topic)
        if callback is not None:
            try:
                callback(message.topic, message.payload)
            except Exception as e:  # a bad command must not kill paho's network thread
                log.warning("MQTT message on %s could not be handled (%s)", message.topic, e)

    def subscribe(self, topic: str, callback: Callback) -> None:
        """Subscribe to `{prefix}/{device_id}/{topic}`, now and after every reconnect."""
        full = self.topic(topic)
        self._subscriptions[full] = callback
        if self.connected:
            self.client.subscribe(full, qos=self.cfg.qos)

    def _ready(self) -> bool:
        return self._connected.is_set() and len(self._inflight) < self._size

    def _send(self, topic: str, payload: dict[str, Any], retain: bool) -> bool | None:
        from paho.mqtt.client import MQTT_ERR_SUCCESS

        info = self.client.publish(self.topic(topic), json.dumps(payload, separators=(",", ":")), self.cfg.qos, retain)
        if info.rc != MQTT_ERR_SUCCESS:
            return False  # counted as dropped
        with self._lock:
            if self.cfg.qos == 0:
                self._handed += 1  # counted by _on_unsubscribe, or as dropped
            if info.mid in self._early:
                self._early.discard(info.mid)
                return None if self.cfg.qos == 0 else True
            self._inflight.add(info.mid)
        return None  # counted by _on_publish, or as dropped if it is never acknowledged

    def stop(self, timeout: float = 1.0) -> None:
        """Flush the queue, have the broker confirm it (QoS 0), mark the device offline (retained), disconnect."""
        super().stop(timeout)
        deadline = time.monotonic() + timeout
        if self.cfg.qos == 0:
            self._probe(now=True)
            while self._probe_upto is not None and self.connected and time.monotonic() < deadline:
                time.sleep(0.02)
        if self.connected:
            info = self.client.publish(self.availability, "offline", qos=max(self.cfg.qos, 1), retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                pass  # the connection went away meanwhile; the last will says the same
        deadline = time.monotonic() + timeout
        while self._inflight and self.connected and time.monotonic() < deadline:
            time.sleep(0.02)  # the last acknowledgements
        self.client.disconnect()
        self.client.loop_stop()
        with self._lock, self._cv:  # never acknowledged: lost as far as we know
            if self.cfg.qos == 0:
                self._count_unconfirmed_as_dropped()
            else:
                self.dropped += len(self._inflight)
            self._inflight.clear()


class FanOut:
    """Several publishers behind the same three methods."""

    def __init__(self, publishers: list[Publisher]) -> None:
        self.publishers = publishers

    @property
    def dropped(self) -> int:
        return sum(p.dropped for p in self.publishers)

    def drops(self) -> dict[str, int]:
        return {getattr(p, "name", type(p).__name__): p.dropped for p in self.publishers}

    def publish(self, topic: str, payload: dict[str, Any], retain: bool = False) -> None:
        for p in self.publishers:
            p.publish(topic, payload, retain)

    def subscribe(self, topic: str, callback: Callback) -> None:
        for p in self.publishers:
            p.subscribe(topic, callback)

    def stop(self) -> None:
        """Stop every publisher, even when one of them fails to stop (each failure one log line)."""
        for p in self.publishers:
            try:
                p.stop()
            except Exception as e:  # noqa: BLE001 - the others (MQTT's "offline") must still stop
                log.warning("%s publisher did not stop cleanly (%s)", getattr(p, "name", type(p).__name__), e)
