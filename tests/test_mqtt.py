"""The daemon against a real Mosquitto broker on a free loopback port (Debian package `mosquitto`)."""

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench.daemon_soak import Broker, free_port

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="the mosquitto binary is absent (apt-get install mosquitto)")
mqtt = pytest.importorskip("paho.mqtt.client")


def make_broker(tmp: Path, port: int, extra: str = "") -> Broker:
    """The soak's mosquitto on 127.0.0.1:port, without persistence; `extra` replaces `allow_anonymous true`."""
    return Broker(tmp, port, f"persistence false\n{extra or 'allow_anonymous true'}")


@pytest.fixture
def broker(tmp_path):
    b = make_broker(tmp_path, free_port())
    b.start()
    yield b
    b.stop()


class Listener:
    """A paho client that records (receive time, topic, payload, retained) for everything under a prefix."""

    def __init__(self, port: int, topic: str = "avemo/#", name: str = "listener") -> None:
        self.messages: list[tuple[float, str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{name}-{port}")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.messages.append((time.monotonic(), msg.topic, msg.payload, bool(msg.retain)))

    def wait_for(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                got = predicate(list(self.messages))
            if got:
                return got
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; got {len(self.messages)} messages")

    def topic(self, name: str, since: float = 0.0) -> list[tuple[float, bytes, bool]]:
        with self.lock:
            return [(t, p, r) for t, top, p, r in self.messages if top == name and t >= since]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def daemon_config(tmp: Path, port: int, clip: Path, model: Path, extra: str = "") -> Path:
    path = tmp / "daemon.toml"
    path.write_text(
        f"""
[source]
video = "file://{clip}"
loop = true
[model]
path = "{model}"
[output]
stdout = "none"
[mqtt]
enabled = true
port = {port}
device_id = "kiosk"
qos = 0
reconnect_min_s = 0.2
reconnect_max_s = 0.5
keepalive_s = 5
{extra}
[status]
interval_s = 0.5
"""
    )
    return path


def test_daemon_publishes_survives_a_broker_restart_and_stops_cleanly(broker, tmp_path, clips, random_model):
    notify = tmp_path / "notify.sock"
    sd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sd.bind(str(notify))
    sd.settimeout(0.2)
    datagrams: list[str] = []

    def read_notify():
        while True:
            try:
                datagrams.append(sd.recv(4096).decode())
            except TimeoutError:
                continue
            except OSError:
                return

    threading.Thread(target=read_notify, daemon=True).start()
    listener = Listener(broker.port)
    cfg = daemon_config(tmp_path, broker.port, clips["av"], random_model)
    env = {**os.environ, "NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "1000000"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "avemo_edge.cli", "run", "--config", str(cfg)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        state = "avemo/kiosk/state"
        listener.wait_for(lambda m: len([x for x in m if x[1] == state]) >= 15, 90, "15 state messages")
        first = json.loads(listener.topic(state)[0][1])
        assert set(first) >= {"time", "t", "label", "probs", "raw", "alpha", "beta", "face", "speech", "latency_ms"}
        assert listener.topic("avemo/kiosk/availability")[-1][1] == b"online"

        broker.stop()  # the broker goes away for a while; the daemon must keep running
        t_down = time.monotonic()
        time.sleep(1.5)
        assert proc.poll() is None
        broker.start()
        t_up = time.monotonic()

        def fifteen_after_restart(m):
            fresh = [x for x in m if x[1] == state and x[0] >= t_up]
            return fresh if len(fresh) >= 15 else None

        after = listener.wait_for(fifteen_after_restart, 30, "state messages after the broker came back")
        resumed = after[0][0] - t_up
        online_again = [t for t, p, _ in listener.topic("avemo/kiosk/availability", t_up) if p == b"online"]
        assert online_again, "availability was not set online again after the reconnect"
        steps_before = max(json.loads(p)["step"] for t, p, _ in listener.topic(state) if t < t_down)
        assert json.loads(after[-1][2])["step"] > steps_before
        status = listener.wait_for(
            lambda m: [json.loads(x[2]) for x in m if x[1] == "avemo/kiosk/status" and x[0] >= t_up],
            10,
            "a status message after the restart",
        )[-1]
        assert status["state"] == "running" and status["fps"] > 0 and "stage_ms_p50" in status
        print(
            f"\nbroker down {t_up - t_down:.2f} s; first state message {resumed:.2f} s after it came back; "
            f"{len(listener.topic(state))} state messages; dropped {status['dropped']}"
        )

        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "Traceback" not in err and "SIGTERM received: stopping" in err
        listener.wait_for(
            lambda m: [x for x in m if x[1] == "avemo/kiosk/availability" and x[2] == b"offline"], 5, "offline"
        )
        stopped = [json.loads(p) for _, p, _ in listener.topic("avemo/kiosk/status")][-1]
        assert stopped["state"] == "stopped"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        listener.close()
        sd.close()

    # while the model loads the daemon asks systemd for more start time (EXTEND_TIMEOUT_USEC), then READY
    ready = next(i for i, d in enumerate(datagrams) if d.startswith("READY=1"))
    assert all(d.startswith("EXTEND_TIMEOUT_USEC=") for d in datagrams[:ready])
    assert datagrams.count("WATCHDOG=1") >= 3
    assert any(d.startswith("STATUS=") and "steps/s" in d for d in datagrams)
    assert any(d.startswith("STOPPING=1") for d in datagrams)
    assert datagrams.index("WATCHDOG=1") > ready  # pings come from the running loop, after READY


def test_last_will_marks_a_killed_daemon_offline(broker, tmp_path):
    listener = Listener(broker.port)
    code = (
        "import time, sys\n"
        "from avemo_edge.config import MQTTConfig\n"
        "from avemo_edge.publish import MqttPublisher\n"
        f"p = MqttPublisher(MQTTConfig(enabled=True, port={broker.port}, device_id='victim'))\n"
        "while not p.connected: time.sleep(0.02)\n"
        "print('up', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "up"
        listener.wait_for(lambda m: [x for x in m if x[2] == b"online"], 10, "online")
        proc.kill()  # no clean stop: only the broker's last will can say it
        proc.wait()
        listener.wait_for(
            lambda m: [x for x in m if x[1] == "avemo/victim/availability" and x[2] == b"offline"], 15, "the will"
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        listener.close()
    # a new subscriber sees the retained "offline"
    late = Listener(broker.port, "avemo/victim/availability")
    try:
        got = late.wait_for(lambda m: m, 5, "the retained availability")
        assert got[0][2] == b"offline" and got[0][3] is True
    finally:
        late.close()


def test_credentials_from_credentials_directory(tmp_path, monkeypatch):
    passwd = shutil.which("mosquitto_passwd")
    if passwd is None:
        pytest.skip("mosquitto_passwd is absent")
    pw_file = tmp_path / "passwd"
    subprocess.run([passwd, "-c", "-b", str(pw_file), "kiosk", "s3cret"], check=True, capture_output=True)
    pw_file.chmod(0o700)
    b = make_broker(tmp_path, free_port(), f"allow_anonymous false\npassword_file {pw_file}")
    b.start()
    from avemo_edge.config import MQTTConfig
    from avemo_edge.errors import AvemoError
    from avemo_edge.publish import MqttPublisher

    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt_password").write_text("s3cret\n")
    cfg = MQTTConfig(enabled=True, port=b.port, device_id="cred", username="kiosk", password_credential="mqtt_password")
    try:
        monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
        with pytest.raises(AvemoError, match=r"needs \$CREDENTIALS_DIRECTORY .* which is not set"):
            MqttPublisher(cfg)
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
        p = MqttPublisher(cfg)
        deadline = time.monotonic() + 10
        while not p.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert p.connected
        p.stop()
        (creds / "mqtt_password").write_text("wrong\n")
        p = MqttPublisher(cfg)
        time.sleep(1.0)
        assert not p.connected  # refused, logged, and retried in the background
        p.stop()
    finally:
        b.stop()


# --- issue #16 rows 3/4/11 and 10 ------------------------------------------------------------
@pytest.mark.parametrize("qos", [1, 0])  # row 3 at QoS 1, row 4 the same at QoS 0
def test_half_open_broker_comes_back_online_and_every_message_is_counted(broker, caplog, qos):
    from avemo_edge.config import MQTTConfig
    from avemo_edge.publish import MqttPublisher

    caplog.set_level(logging.INFO, "avemo_edge")
    cfg = MQTTConfig(
        enabled=True, port=broker.port, device_id="halfopen", qos=qos, queue_size=20, keepalive_s=5,
        reconnect_min_s=0.2, reconnect_max_s=0.5,
    )  # fmt: skip
    # a consumer connected throughout (its keepalive outlasts the outage, so its session survives)
    consumer = Listener(broker.port, "avemo/halfopen/state", name="consumer")
    pub = MqttPublisher(cfg)
    produced, stop = 0, threading.Event()

    def produce():  # 20 state messages a second, as the daemon would
        nonlocal produced
        while not stop.is_set():
            pub.publish("state", {"step": produced})
            produced += 1
            time.sleep(0.05)

    producer = threading.Thread(target=produce, daemon=True)
    try:
        deadline = time.monotonic() + 10
        while not pub.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pub.connected
        producer.start()
        time.sleep(1.0)
        broker.proc.send_signal(signal.SIGSTOP)  # half-open: TCP stays up, nothing is answered
        time.sleep(9.0)  # past paho's keepalive timeout (1.5 x 5 s)
        broker.proc.send_signal(signal.SIGCONT)
        t_up, produced_up = time.monotonic(), produced
        deadline = t_up + cfg.keepalive_s
        while pub.connects < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pub.connects >= 2, "the publisher did not reconnect within a keepalive period"
        time.sleep(0.5)
        late = Listener(broker.port, "avemo/halfopen/availability", name="late")
        try:
            got = late.wait_for(lambda m: m, cfg.keepalive_s, "the retained availability")
            assert got[-1][2] == b"online" and got[-1][3] is True
        finally:
            late.close()
    finally:
        stop.set()
        producer.join(2)
        pub.stop(timeout=3.0)
        broker.proc.send_signal(signal.SIGCONT)
        time.sleep(0.5)
        consumer.close()
    got = {json.loads(p)["step"] for _, p, _ in consumer.topic("avemo/halfopen/state")}
    print(f"\nqos {qos}: produced {produced}, sent {pub.sent}, received {len(got)}, dropped {pub.dropped}")
    assert pub.dropped > 0 and pub.sent > 0  # the outage cost messages, and they were counted
    assert pub.sent + pub.dropped == produced
    # every lost message is counted (row 4 at QoS 0: 205 lost, 78 counted; then 179 lost, 0 counted)
    assert len(got) + pub.dropped >= produced, f"{produced - len(got) - pub.dropped} lost without being counted"
    if qos == 1:  # the newest steps of the outage reach the consumer after it; the oldest were dropped
        newest = set(range(produced_up - 10, produced_up))
        assert newest <= got, f"steps {sorted(newest - got)} of the last 10 before the broker resumed were lost"
        assert pub.sent == len(got)
    said = [r.getMessage() for r in caplog.records]
    assert sum("MQTT connected" in m for m in said) >= 2 and any("MQTT lost the broker" in m for m in said)


def test_qos0_clean_broker_restart_counts_at_most_a_second_of_read_steps_as_dropped(tmp_path):
    """The soak's finding: QoS 0 counted everything since the last PINGRESP (up to a keepalive,
    ~240 steps per restart) as dropped although the broker had read and delivered it.

    The publisher's claim is about the broker: `sent` = the broker read it. So the broker's own log
    (every PUBLISH it read) is the reference, not the consumer: a broker stopped in the instant after
    reading a QoS 0 message may never forward it (at most once; CI saw 1 in 301 so), which no
    publisher can know. The consumer's count is printed beside it."""
    from avemo_edge.config import MQTTConfig
    from avemo_edge.publish import MqttPublisher

    broker = make_broker(tmp_path, free_port(), "allow_anonymous true\nlog_type all\nlog_dest stderr")
    broker.start()
    rate = 20  # messages a second
    cfg = MQTTConfig(
        enabled=True,
        port=broker.port,
        device_id="restart",
        qos=0,
        keepalive_s=30,
        reconnect_min_s=2.5,
        reconnect_max_s=5,
    )  # fmt: skip  (reconnects after the consumer (0.1-0.5 s), which must not miss what it then sends)
    consumer = Listener(broker.port, "avemo/restart/state", name="consumer")
    pub = MqttPublisher(cfg)
    produced, stop = 0, threading.Event()

    def produce():
        nonlocal produced
        while not stop.is_set():
            pub.publish("state", {"step": produced})
            produced += 1
            time.sleep(1 / rate)

    producer = threading.Thread(target=produce, daemon=True)
    try:
        deadline = time.monotonic() + 10
        while not (pub.connected and consumer.client.is_connected()) and time.monotonic() < deadline:
            time.sleep(0.05)
        producer.start()
        for pause in (4.0, 4.5):  # two clean restarts, each well inside one keepalive, at two probe phases
            time.sleep(pause)
            broker.stop()
            time.sleep(1.0)
            broker.start()
            deadline = time.monotonic() + 10
            while not (pub.connected and consumer.client.is_connected()) and time.monotonic() < deadline:
                time.sleep(0.05)
        time.sleep(2.0)
    finally:
        stop.set()
        producer.join(2)
        pub.stop(timeout=3.0)
        time.sleep(0.5)
        consumer.close()
        broker.stop()
    read = broker.log.read_text().count(f"Received PUBLISH from {pub.client_id} (d0, q0, r0, m0, 'avemo/restart/state'")
    got = {json.loads(p)["step"] for _, p, _ in consumer.topic("avemo/restart/state")}
    over = read - pub.sent  # read by the broker and yet counted as dropped
    print(
        f"\nproduced {produced}, sent {pub.sent}, dropped {pub.dropped}, read by the broker {read}, "
        f"received {len(got)}, over-counted {over}"
    )
    assert pub.sent + pub.dropped == produced
    assert pub.sent <= read, f"{pub.sent - read} counted as sent that the broker never read"
    # at most what was written in the last CONFIRM_S before each stop (plus scheduling slack)
    assert over <= 2 * (pub.CONFIRM_S + 0.5) * rate, f"{over} read by the broker but counted as dropped"
    assert len(got) >= pub.sent - 2, "the consumer missed more than the instant of each stop can explain"


def test_unreachable_broker_is_said_once(caplog):
    from avemo_edge.config import MQTTConfig
    from avemo_edge.publish import MqttPublisher

    pub = MqttPublisher(MQTTConfig(enabled=True, port=free_port(), device_id="nobroker", reconnect_min_s=0.2))
    time.sleep(2.0)
    pub.stop()
    said = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert said == [f"MQTT broker 127.0.0.1:{pub.cfg.port} is unreachable; retrying in the background"]


def test_two_publishers_sharing_a_client_id_are_named_as_the_cause(broker, caplog):
    from avemo_edge.config import MQTTConfig
    from avemo_edge.publish import MqttPublisher

    base = dict(enabled=True, port=broker.port, device_id="twin", reconnect_min_s=0.2, reconnect_max_s=0.5)
    unique = [MqttPublisher(MQTTConfig(**base)) for _ in range(2)]  # the default id is unique per process
    assert unique[0].client_id != unique[1].client_id
    twins = [MqttPublisher(MQTTConfig(**base, client_id="same")) for _ in range(2)]
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any("same client id" in r.getMessage() for r in caplog.records):
            time.sleep(0.1)
        assert all(p.connected for p in unique) and all(p.connects == 1 for p in unique)
    finally:
        for p in unique + twins:
            p.stop()
    named = [r.getMessage() for r in caplog.records if "same client id" in r.getMessage()]
    assert named and "'same'" in named[0] and "probably another client uses the same client id" in named[0]
