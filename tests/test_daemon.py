"""The daemon on generated clips (real H.264 + AAC decoding, real face detection, a random-weight model)."""

import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from avemo_edge.align import END, Aligner
from avemo_edge.capture import AudioBlock, Frame
from avemo_edge.config import ConfigError, default_torch_threads, load_config, parse_config
from avemo_edge.daemon import Daemon, ModelMissingError
from avemo_edge.publish import JsonLinesPublisher, QueuedPublisher
from avemo_edge.sdnotify import Notifier


def run_file(clip, model, tmp_path, face=None, **source):
    cfg = parse_config(
        {
            "source": {"video": f"file://{clip}", "realtime": False, **source},
            "model": {"path": str(model)},
            "output": {"stdout": "none"},
            "face": face or {},
        }
    )
    out = tmp_path / f"{clip.stem}.jsonl"
    pub = JsonLinesPublisher(out)
    summary = Daemon(cfg, publisher=pub).run()
    pub.stop()
    return summary, [json.loads(line) for line in out.read_text().splitlines()]


def test_file_with_face_and_speech(clips, random_model, tmp_path):
    summary, msgs = run_file(clips["av"], random_model, tmp_path)
    assert summary.reason == "end of stream" and summary.steps == len(msgs)
    assert 30 <= len(msgs) <= 31  # 3 s at one step per 100 ms (+ the padded tail)
    assert [m["step"] for m in msgs] == list(range(len(msgs)))
    assert np.allclose(np.diff([m["t"] for m in msgs]), 0.1, atol=1e-3)
    m = msgs[10]
    assert set(m) >= {"time", "t", "label", "probs", "raw", "alpha", "beta", "face", "speech", "latency_ms"}
    assert abs(sum(m["probs"].values()) - 1) < 1e-3 and m["label"] in m["probs"]
    assert all(m["face"] for m in msgs[:30])
    # speech from 0.5 s to 2.5 s: steps 5..24 are loud, the steps before and after are near-silent
    speech = [m["speech"] for m in msgs[:30]]
    assert speech[:5] == [False] * 5 and speech[5:25] == [True] * 20 and not any(speech[26:30])
    assert all(m["beta"] > 0 for m in msgs[:30]) and all(m["alpha"] > 0 for m in msgs[:30])
    # schema 2 (max_faces = 1, the default): the version 1 fields as they were, plus one entry per face
    assert set(m) == V1_FIELDS | {"schema", "voice_face", "faces", "video"} and m["schema"] == 2
    (entry,) = m["faces"]
    assert set(entry) == FACE_FIELDS and entry["id"] == m["voice_face"] and entry["raw"] == m["raw"]
    assert len({m["voice_face"] for m in msgs[:30]}) == 1  # one track all along


V1_FIELDS = {"t", "label", "probs", "raw", "alpha", "beta", "face", "audio", "latency_ms", "time", "step", "speech"}
V1_FIELDS |= {"level_dbfs", "detect_ms"}
FACE_FIELDS = {"id", "box", "label", "probs", "raw", "alpha"}


@pytest.fixture(scope="module")
def two_faces_clip(tmp_path_factory, astronaut_bgr):
    """3 s, speech all along, two faces (the larger on the left) until the smaller one leaves at 1.5 s."""
    from media import make_clip, two_faces_frame

    path = tmp_path_factory.mktemp("two") / "two.mp4"
    return make_clip(path, astronaut_bgr, 3.0, frame_at=lambda t: two_faces_frame(astronaut_bgr, t, second=t < 1.5))


def test_two_faces_each_with_a_track_id_and_the_voice_with_the_largest(two_faces_clip, random_model, tmp_path):
    _, msgs = run_file(two_faces_clip, random_model, tmp_path, face={"max_faces": 2})
    assert all(m["schema"] == 2 and set(m) == V1_FIELDS | {"schema", "voice_face", "faces", "video"} for m in msgs)
    both = msgs[:15]  # the newest frame of steps 0-14 is before 1.5 s
    ids = {tuple(sorted(f["id"] for f in m["faces"])) for m in both}
    assert len(ids) == 1 and len(next(iter(ids))) == 2  # two track ids, the same on every step
    left = min(both[0]["faces"], key=lambda f: f["box"][0])["id"]
    assert all(m["voice_face"] == left and m["face"] for m in msgs[:30])  # the larger face has the voice
    for m in both:
        assert all(set(f) == FACE_FIELDS and f["alpha"] > 0 for f in m["faces"])
        voice = next(f for f in m["faces"] if f["id"] == m["voice_face"])
        assert voice["raw"] == m["raw"]  # the top level is the voice with its face
        assert all(f["box"][0] > 320 for f in m["faces"] if f["id"] != left)
    # the smaller face leaves at 1.5 s: gone within 0.3 s (3 steps), the larger one keeps its id
    gone = next(k for k, m in enumerate(msgs) if len(m["faces"]) == 1)
    assert 15 <= gone <= 17 and all([f["id"] for f in m["faces"]] == [left] for m in msgs[gone:30])
    # max_faces = 1 (the default) on the same clip: the largest face only, the old fields unchanged
    (tmp_path / "one").mkdir()
    _, one = run_file(two_faces_clip, random_model, tmp_path / "one")
    assert all(len(m["faces"]) == 1 and m["faces"][0]["box"][0] < 320 for m in one[:30])
    assert all(set(m) == V1_FIELDS | {"schema", "voice_face", "faces", "video"} for m in one)


def test_face_appears_and_disappears(clips, random_model, tmp_path):
    _, msgs = run_file(clips["blink"], random_model, tmp_path)
    face = [m["face"] for m in msgs[:30]]
    # the face is gone for frames in [1.0, 2.0): steps whose newest frame falls there have none
    assert face[:10] == [True] * 10 and face[10:20] == [False] * 10 and face[20:] == [True] * 10
    assert all(m["alpha"] == 0 for m in msgs[10:20])
    assert all(m["faces"] == [] and m["voice_face"] is None for m in msgs[10:20])  # no face: no entry
    assert msgs[20]["voice_face"] != msgs[9]["voice_face"]  # it comes back as a new track
    assert all(m["audio"] for m in msgs[:30])  # a step without a face still gives a result


def test_file_without_audio_is_visual_only(clips, random_model, tmp_path, caplog):
    caplog.set_level("INFO", logger="avemo_edge")
    summary, msgs = run_file(clips["mute"], random_model, tmp_path)
    assert len(msgs) == 20 and summary.speech == 0
    assert all(m["face"] and not m["audio"] and not m["speech"] and m["beta"] == 0 for m in msgs)
    assert "has no audio track: visual only" in caplog.text


def test_looped_file_runs_until_stopped(clips, random_model, tmp_path):
    cfg = parse_config(
        {
            "source": {"video": f"file://{clips['mute']}", "realtime": False, "loop": True},
            "model": {"path": str(random_model)},
        }
    )
    out = tmp_path / "loop.jsonl"
    pub = JsonLinesPublisher(out)
    daemon = Daemon(cfg, publisher=pub)

    def stop_after_22_steps():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 22):
            time.sleep(0.1)
        daemon.stop()

    threading.Thread(target=stop_after_22_steps, daemon=True).start()
    summary = daemon.run()
    pub.stop()
    assert summary.reason == "stopped" and summary.steps >= 22  # past the 2 s clip's end
    t = [json.loads(line)["t"] for line in out.read_text().splitlines()]
    assert np.allclose(np.diff(t), 0.1, atol=1e-3)  # no jump where the file starts again


class Collect(QueuedPublisher):
    name = "collect"

    def __init__(self):
        super().__init__(1000)
        self.messages = []
        self.start()

    def _send(self, topic, payload, retain):
        self.messages.append((topic, payload))
        return True


def test_lost_camera_is_retried_and_reported(random_model):
    cfg = parse_config(
        {
            "source": {"video": "v4l2:///dev/video-avemo-test", "retry_min_s": 0.2, "retry_max_s": 0.4},
            "model": {"path": str(random_model)},
            "status": {"interval_s": 0.2},
        }
    )
    pub = Collect()
    daemon = Daemon(cfg, publisher=pub)

    def stop_after_second_retry():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("retrying in 0.4 s" in str(m) for m in list(pub.messages)):
            time.sleep(0.05)
        daemon.stop()

    threading.Thread(target=stop_after_second_retry, daemon=True).start()
    summary = daemon.run()
    assert summary.reason == "stopped"
    pub.stop()
    statuses = [p for topic, p in pub.messages if topic == "status"]
    lost = [s["sources"]["v4l2:///dev/video-avemo-test"] for s in statuses if s["sources"]]
    assert lost and lost[0]["state"] == "lost" and "does not exist; retrying in 0.2 s" in lost[0]["detail"]
    assert any("retrying in 0.4 s" in s["detail"] for s in lost)  # backoff doubles up to retry_max_s
    assert statuses[-1]["state"] == "stopped"


def test_missing_default_model_is_one_sentence(monkeypatch, tmp_path):
    import avemo_edge.daemon as d

    monkeypatch.setattr(d, "default_model_path", lambda: tmp_path / "default.pt")
    with pytest.raises(
        ModelMissingError, match=r"default model .*default\.pt is missing from this install.*--model PATH"
    ):
        Daemon(parse_config({"output": {"stdout": "none"}})).run()


def test_corrupt_file_is_refused_in_one_sentence(tmp_path, clips, random_model):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + np.random.default_rng(0).bytes(20000))
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(clips["av"].read_bytes()[:3000])
    for path in (bad, truncated):
        cmd = [sys.executable, "-m", "avemo_edge.cli", "run", "--source", f"file://{path}"]
        cmd += ["--model", str(random_model)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr
        err = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        assert len(err) == 1 and str(path) in err[0] and "cannot be decoded" in err[0], r.stderr


# --- configuration ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, message",
    [
        ("[mqtt]\nqos = 3\n", "mqtt.qos = 3 is invalid: QoS must be 0, 1 or 2"),
        ("[mqtt]\nport = 'abc'\n", "mqtt.port = 'abc' is invalid: must be an integer"),
        ("[source]\nvidoe = 'camera://0'\n", "unknown key source.vidoe (value 'camera://0'); source takes audio,"),
        ("[mqtt.tls]\nenabeld = true\n", "unknown key mqtt.tls.enabeld (value true)"),
        (
            "[source]\nretry_min_s = 1e11\nretry_max_s = 1e11\n",
            "source.retry_max_s = 100000000000.0 is invalid: must be at most 86400 seconds (one day)",
        ),
        ("[recognition]\nsmoothing = 1.5\n", "recognition.smoothing = 1.5 is invalid: must be in [0, 1)"),
        ("[recognition]\nhold_margin = -0.1\n", "recognition.hold_margin = -0.1 is invalid: must be in [0, 1)"),
        ("[camera]\nx = 1\n", "unknown key camera (value a table); the top level takes face, log, model, mqtt"),
        ("[face]\ndetector = 'mtcnn'\n", "face.detector = 'mtcnn' is invalid: must be 'yunet' or 'haar'"),
        ("[face]\ndetect_every = 0\n", "face.detect_every = 0 is invalid: must be at least 1"),
        ("[face]\nmax_faces = 0\n", "face.max_faces = 0 is invalid: must be between 1 and 32"),
        (
            "[face]\nvoice_policy = 'loudest'\n",
            "face.voice_policy = 'loudest' is invalid: must be one of 'largest', 'oldest'",
        ),
        ("[source]\nvideo = 'camera://0'\nrealtime = false\n", "source.realtime = false is invalid"),
        ("[source]\nvideo = 'webcam'\n", "source.video = 'webcam' is invalid: use sample, file://PATH"),
        ("[mqtt\n", "is not valid TOML"),
    ],
)
def test_bad_config_is_refused_with_the_key_named(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert message in str(e.value) and str(path) in str(e.value)


def test_validate_config_cli(tmp_path):
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text("[mqtt]\nenabled = true\nport = 1884\nqos = 1\n[source]\nvideo = 'camera://0'\n")
    bad.write_text("[output]\nstdout = 'xml'\n")
    cli = [sys.executable, "-m", "avemo_edge.cli", "run", "--validate-config", "--config"]
    r = subprocess.run([*cli, str(good)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "is valid" in r.stderr and json.loads(r.stdout)["mqtt"]["qos"] == 1
    r = subprocess.run([*cli, str(bad)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "output.stdout = 'xml' is invalid: must be 'jsonl', 'text' or 'none'" in r.stderr


def test_example_config_is_valid():

    cfg = load_config(Path(__file__).parents[1] / "systemd" / "avemo-edge.toml")
    assert cfg.mqtt.enabled and cfg.mqtt.password_credential
    assert cfg.face.max_faces == 1 and cfg.face.voice_policy == "largest"  # the defaults, as the file says


# --- alignment ------------------------------------------------------------------------------
def test_aligner_places_audio_and_frames_on_the_grid():
    a = Aligner(max_frame_age=0.25)
    a.source_started("file://x", video=True, audio=True, live=False)
    rng = np.random.default_rng(0)
    t0 = 100.0
    for i in range(9):  # 30 fps frames for 0.3 s
        a.add(Frame(np.full((4, 4, 3), i, np.uint8), t0 + i / 30))
    audio = (rng.standard_normal((4800, 2)) * 0.1).astype(np.float32)  # 0.3 s at 16 kHz, stereo
    a.add(AudioBlock(audio[:1000], 16000, t0))
    assert a.next_step(0.01) is None  # audio covers only 62 ms: step 0 waits
    a.add(AudioBlock(audio[1000:], 16000, t0 + 1000 / 16000))
    s0 = a.next_step(0.01)
    assert s0.index == 0 and s0.t == pytest.approx(t0 + 0.1) and s0.audio.shape == (64, 10)
    assert s0.frame[0, 0, 0] == 2  # frames at 0, 33, 67 ms are before the end; 100 ms is not
    s1 = a.next_step(0.01)
    assert s1.frame[0, 0, 0] == 5
    a.source_stopped("file://x")
    s2 = a.next_step(0.01)
    assert s2.index == 2 and s2.frame[0, 0, 0] == 8 and s2.audio is not None
    assert a.next_step(0.01) == END


def test_aligner_live_deadline_and_catch_up():
    a = Aligner(live_latency=0.05, max_lag=0.5)
    a.source_started("camera://0", video=True, audio=False, live=True)
    now = time.monotonic()
    a.add(Frame(np.zeros((4, 4, 3), np.uint8), now))
    # no newer frame comes: the step is still taken once its deadline passes
    t = time.monotonic()
    s = a.next_step(1.0)
    assert s.index == 0 and 0.1 <= time.monotonic() - t < 0.5 and s.frame is not None
    time.sleep(1.0)  # the loop stalls; the next step skips ahead instead of queueing
    s = a.next_step(1.0)
    assert s.index >= 8 and a.skipped >= 7 and s.frame is None  # that frame is older than max_frame_age


def test_audio_timeline_follows_sample_count_through_bursts_and_resyncs_on_gaps():
    a = Aligner()
    a.source_started("mic://default", video=False, audio=True, live=True)
    block = np.zeros((1600, 1), np.int16)  # 100 ms at 16 kHz
    a.add(AudioBlock(block, 16000, 10.0))
    for _ in range(4):  # four blocks that arrive together, 0.3 s late: placed by sample count
        a.add(AudioBlock(block, 16000, 10.7))
    assert a.resyncs == 0 and sorted(a._slices) == [0, 1, 2, 3, 4]
    a.add(AudioBlock(block, 16000, 12.0))  # 1.5 s after where its sample count puts it: samples lost
    assert a.resyncs == 1 and 20 in a._slices


# --- sd_notify ------------------------------------------------------------------------------
def test_notifier_sends_datagrams(tmp_path):
    path = str(tmp_path / "notify.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(1.0)
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
    n.ready("up")
    n.watchdog()
    n.watchdog()  # within the half interval: not sent
    n.status("10.0 steps/s")
    assert server.recv(100) == b"READY=1\nSTATUS=up"
    assert server.recv(100) == b"WATCHDOG=1"
    assert server.recv(100) == b"STATUS=10.0 steps/s"
    assert Notifier({}).enabled is False and Notifier({"NOTIFY_SOCKET": "@abstract"}).address == "\0abstract"
    assert Notifier({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}).watchdog_interval is None  # not our pid
    server.close()


def test_notifier_extends_the_start_timeout_while_the_model_loads(tmp_path, caplog):
    """EXTEND_TIMEOUT_USEC= (sd_notify(3)) while onnxruntime's TensorRT provider may build engines, capped."""
    path = str(tmp_path / "notify.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(0.3)
    n = Notifier({"NOTIFY_SOCKET": path})
    n.extend_timeout(120, "building engines")
    assert server.recv(200) == b"EXTEND_TIMEOUT_USEC=120000000\nSTATUS=building engines"
    with n.slow_start("loading m.pt on the onnxruntime backend", extend_s=0.2):
        time.sleep(0.35)  # sent at 0, 0.1, 0.2, 0.3 s
    got = []
    with contextlib.suppress(TimeoutError):
        while True:
            got.append(server.recv(200).decode())
    assert 2 <= len(got) <= 5  # repeated while the block runs, and not after it (a loaded machine wakes late)
    prefix = "EXTEND_TIMEOUT_USEC=200000\nSTATUS=loading m.pt on the onnxruntime backend ("
    assert all(m.startswith(prefix) for m in got)
    with n.slow_start("hung", extend_s=0.1, limit_s=0.12):  # a load that hangs is not extended for ever
        time.sleep(0.6)
    got = []
    with contextlib.suppress(TimeoutError):
        while True:
            got.append(server.recv(200).decode())
    assert 1 <= len(got) <= 3 and any("no longer extending" in r.getMessage() for r in caplog.records)
    with Notifier({}).slow_start("not under systemd"):  # nothing sent, no thread
        pass
    server.close()


def test_publisher_queue_drops_the_oldest_and_counts():
    class Stuck(QueuedPublisher):
        def _ready(self):
            return False  # a broker that never comes

    p = Stuck(queue_size=5)
    p.start()
    t = time.perf_counter()
    for i in range(20):
        p.publish("state", {"i": i})
    assert time.perf_counter() - t < 0.05  # never blocks
    assert p.dropped == 15 and [m[1]["i"] for m in p._queue] == [15, 16, 17, 18, 19]
    p.stop(timeout=0.5)
    assert p.dropped == 20


def test_main_job_runs_on_the_embedded_sample(random_model):
    """What `make run` becomes once the default model ships: the CREMA-D sample, in real time, as text."""
    from avemo_edge.capture import SAMPLE_CLIP

    assert SAMPLE_CLIP.is_file() and SAMPLE_CLIP.stat().st_size < 200_000
    assert (SAMPLE_CLIP.parent / "SAMPLE_LICENSE.md").is_file()
    cmd = [sys.executable, "-m", "avemo_edge.cli", "run", "--source", "sample", "--output", "text"]
    r = subprocess.run([*cmd, "--model", str(random_model)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 23  # 2.3 s of clip, one line per 100 ms
    assert all(" face " in line for line in lines)  # the actor's face is found in every step
    assert "beta 0.00" not in r.stdout  # and every step has its audio slice, even paced in real time
    assert sum("speech" in line for line in lines) >= 8  # he speaks for about a second
    assert "stopped (end of stream): 23 steps" in r.stderr


# --- a source thread that dies, a loop that makes no steps (issue #16 row 2) -------------------
def test_source_thread_crash_stops_the_daemon_with_the_error(random_model, tmp_path, caplog):
    from media import make_s64_wav

    from avemo_edge.capture import SourceCrashed

    wav = make_s64_wav(tmp_path / "s64.wav")
    cfg = parse_config({"source": {"video": f"file://{wav}"}, "model": {"path": str(random_model)}})
    daemon = Daemon(cfg, publisher=Collect())
    timer = threading.Timer(15, daemon.stop)  # before the fix the daemon stayed up with 0 steps
    timer.start()
    try:
        with pytest.raises(SourceCrashed, match=r"s64\.wav crashed: ValueError: Conversion from 's64'"):
            daemon.run()
    finally:
        timer.cancel()
    crashed = [r for r in caplog.records if "crashed" in r.getMessage()]
    assert len(crashed) == 1 and crashed[0].levelname == "ERROR"


def _watchdog_pings(tmp_path, cfg, seconds, monkeypatch):
    """The sd_notify datagrams of a daemon stopped `seconds` after READY (read as they come)."""
    import avemo_edge.daemon as d

    monkeypatch.setattr(d.Daemon, "STALL_S", 1.0)
    path = str(tmp_path / "notify.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(0.05)
    daemon = Daemon(cfg, publisher=Collect(), notifier=Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"}))
    got = []

    def listen():
        deadline = time.monotonic() + 60
        stop_at = None
        while time.monotonic() < deadline and not (got and got[-1].startswith("STOPPING")):
            with contextlib.suppress(TimeoutError):
                got.append(server.recv(500).decode())
                if got[-1].startswith("READY"):
                    stop_at = time.monotonic() + seconds
            if stop_at is not None and time.monotonic() >= stop_at:
                daemon.stop()
        daemon.stop()

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    daemon.run()
    listener.join(5)
    return got


def test_health_is_stalled_when_no_step_comes_and_a_source_is_not_retrying(clips, random_model):
    from avemo_edge.capture import FileSource, OpenCVSource, SourceWorker

    cfg = parse_config({"source": {"video": "none", "audio": "mic://default"}, "model": {"path": str(random_model)}})
    daemon = Daemon(cfg, publisher=Collect())
    camera = SourceWorker(OpenCVSource("camera://0"), print, print)
    mic = SourceWorker(FileSource(clips["av"]), print, print)
    camera.state, mic.state = "lost", "open"
    quiet = Daemon.STALL_S + 1
    assert daemon._check_health([camera, mic], since_step=0.5) == "ok"
    assert daemon._check_health([camera, mic], since_step=quiet) == "stalled"  # open, yet no step: a zombie
    mic.state = "lost"
    assert daemon._check_health([camera, mic], since_step=quiet) == "waiting"
    mic.state = "ended"
    assert daemon._check_health([camera, mic], since_step=quiet) == "waiting"
    camera.state = "starting"  # an open that never returns
    assert daemon._check_health([camera, mic], since_step=quiet) == "stalled"


def test_watchdog_is_fed_while_every_source_is_retrying(random_model, tmp_path, monkeypatch):
    cfg = parse_config(
        {
            "source": {"video": "v4l2:///dev/video-avemo-test", "retry_min_s": 0.2, "retry_max_s": 0.2},
            "model": {"path": str(random_model)},
            "status": {"interval_s": 0.2},
        }
    )
    texts = _watchdog_pings(tmp_path, cfg, 2.5, monkeypatch)
    assert texts[0].startswith("EXTEND_TIMEOUT_USEC=120000000\nSTATUS=loading ")  # while the backend starts
    assert "EXTEND_TIMEOUT_USEC" not in "".join(texts[next(i for i, t in enumerate(texts) if t.startswith("READY")) :])
    waiting = next(i for i, t in enumerate(texts) if "waiting: every source is retrying" in t)
    assert "WATCHDOG=1" in texts[waiting:] and not any("stalled" in t for t in texts)


def test_watchdog_is_not_fed_while_a_source_hangs_in_open(random_model, tmp_path, monkeypatch):
    import avemo_edge.daemon as d
    from avemo_edge.capture import SourceLost

    release = threading.Event()

    class Hanging:  # an open that never returns (a driver stuck in its first read): no step, not retrying
        uri, live, has_video, has_audio = "v4l2:///dev/video-avemo-hang", True, True, False

        def open(self):
            release.wait(20)
            raise SourceLost("released")

        def read(self, timeout):
            return None

        def close(self):
            pass

    monkeypatch.setattr(d, "open_sources", lambda *a, **k: [Hanging()])
    cfg = parse_config({"model": {"path": str(random_model)}, "status": {"interval_s": 0.2}})
    try:
        texts = _watchdog_pings(tmp_path, cfg, 3.0, monkeypatch)
    finally:
        release.set()
    ready = next(i for i, t in enumerate(texts) if t.startswith("READY"))
    stalled = next(i for i, t in enumerate(texts) if "stalled: no step for over 1 s, watchdog not fed" in t)
    assert "WATCHDOG=1" in texts[ready:stalled]  # fed while the loop was young
    assert "WATCHDOG=1" not in texts[stalled:]  # then never again: systemd's WatchdogSec= restarts it


# --- configuration errors that must not be restarted (issue #16 rows 5/6) -----------------------
def test_missing_backend_package_is_one_sentence(random_model):
    import importlib.util

    from avemo_edge.errors import AvemoError, RestartableError

    if importlib.util.find_spec("tensorrt"):
        pytest.skip("TensorRT is installed here")
    cfg = parse_config({"source": {"video": "sample"}, "model": {"path": str(random_model), "backend": "tensorrt"}})
    with pytest.raises(AvemoError, match=r"tensorrt.*(cannot start here|needs TensorRT's Python bindings)") as err:
        Daemon(cfg, publisher=Collect()).run()
    assert not isinstance(err.value, RestartableError)  # a configuration error: exit 2, not restarted


def test_audio_only_without_pyaudio_fails_instead_of_idling(random_model, tmp_path, monkeypatch):
    from avemo_edge.capture import SourceError

    # PyAudio hidden (None in sys.modules: find_spec says absent, import raises), so that the test
    # runs where it is installed too
    monkeypatch.setitem(sys.modules, "pyaudio", None)
    cfg = parse_config({"source": {"video": "none", "audio": "mic://default"}, "model": {"path": str(random_model)}})
    with pytest.raises(SourceError, match=r"mic://default needs PyAudio"):
        Daemon(cfg, publisher=Collect()).run()
    m = tmp_path / "cfg.toml"
    m.write_text(f'[source]\nvideo = "none"\naudio = "mic://default"\n[model]\npath = "{random_model}"\n')
    hide = "import sys; sys.modules['pyaudio'] = None; from avemo_edge.cli import main; main()"
    cmd = [sys.executable, "-c", hide, "run", "-c", str(m)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "needs PyAudio" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]


# --- issue #16 row 12: a still image, a text file, a source that gives no step ----------------
def test_still_image_without_an_image_suffix_gives_one_step(tmp_path, random_model, astronaut_bgr):
    import cv2

    still = tmp_path / "snapshot.bin"  # PyAV reads it (png_pipe), not ImageSource: one frame, no sound
    still.write_bytes(cv2.imencode(".png", astronaut_bgr)[1].tobytes())
    summary, msgs = run_file(still, random_model, tmp_path)
    assert summary.steps == 1 and len(msgs) == 1 and msgs[0]["face"] and not msgs[0]["audio"]


def test_text_file_that_ffmpeg_reads_as_video_is_refused(tmp_path, random_model):
    from avemo_edge.capture import SourceError

    text = tmp_path / "notes.txt"  # long enough for FFmpeg's tty demuxer to take it as ANSI art video
    text.write_text((Path(__file__).parents[1] / "README.md").read_text())
    cfg = parse_config({"source": {"video": f"file://{text}", "realtime": False}, "model": {"path": str(random_model)}})
    pub = Collect()
    refused = r"notes\.txt cannot be decoded: it is neither a media file nor an image .*'tty'"
    with pytest.raises(SourceError, match=refused):
        Daemon(cfg, publisher=pub).run()  # before the fix: 18 steps of rendered text, exit 0
    assert pub.messages == []


def test_source_that_gives_no_step_is_an_error_not_a_silent_zero(tmp_path, random_model):
    from media import write_wav

    from avemo_edge.capture import SourceError

    wav = write_wav(tmp_path / "blip.wav", seconds=0.03)  # 30 ms of sound: less than one step
    cfg = parse_config({"source": {"video": f"file://{wav}", "realtime": False}, "model": {"path": str(random_model)}})
    with pytest.raises(SourceError, match=r"blip\.wav ended before one 100 ms step"):
        Daemon(cfg, publisher=Collect()).run()


# --- issue #16 row 14 ---------------------------------------------------------------------------
def test_fast_read_keeps_the_steps_decoded_before_a_mid_file_error(clips, random_model, tmp_path):
    import re

    from media import truncate_mid_stream

    from avemo_edge.capture import SourceError

    broken = truncate_mid_stream(clips["av"], tmp_path / "cut.mp4")
    source = {"video": f"file://{broken}", "realtime": False}
    cfg = parse_config({"source": source, "model": {"path": str(random_model)}})
    pub = Collect()
    with pytest.raises(SourceError, match=r"cut\.mp4 cannot be decoded: it is corrupt after") as err:
        Daemon(cfg, publisher=pub).run()
    pub.stop()
    after = float(re.search(r"after ([\d.]+) s", str(err.value)).group(1))
    steps = [p for topic, p in pub.messages if topic == "state"]
    # before the fix the steps still in the aligner (~0.5 s ahead of the loop) were dropped
    assert after > 0.5 and abs(len(steps) - round(after * 10)) <= 1, (after, len(steps))
    assert [m["step"] for m in steps] == list(range(len(steps)))


# --- issue #16 row 7 ----------------------------------------------------------------------------
@pytest.mark.parametrize("container", ["mkv", "mp4"])
def test_fast_read_of_a_poorly_interleaved_file_keeps_its_audio(clips, random_model, tmp_path, container):
    from media import mux_audio_late

    late = mux_audio_late(clips["av"], tmp_path / f"late.{container}", late=2.0)  # sound stored 2 s after its video
    summary, msgs = run_file(late, random_model, tmp_path)
    assert summary.reason == "end of stream" and 30 <= len(msgs) <= 31
    # before the fix (items in file order) audio was on 6 of 30 steps, for both containers; in real time on all
    with_audio = sum(m["audio"] for m in msgs[:30])
    assert with_audio == 30, f"audio on {with_audio} of 30 steps"
    speech = [m["speech"] for m in msgs[:30]]  # on the right steps: speech from 0.5 s to 2.5 s
    assert speech[:5] == [False] * 5 and speech[5:25] == [True] * 20 and not any(speech[26:30])


def test_camera_that_never_opened_publishes_flagged_steps(random_model):
    cfg = parse_config(
        {
            "source": {"video": "v4l2:///dev/video-avemo-never", "retry_min_s": 0.2, "retry_max_s": 0.2},
            "model": {"path": str(random_model)},
            "status": {"interval_s": 0.2},
        }
    )
    pub = Collect()
    daemon = Daemon(cfg, publisher=pub)

    def stop_after_steps():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sum(t == "state" for t, _ in list(pub.messages)) < 5:
            time.sleep(0.05)
        daemon.stop()

    threading.Thread(target=stop_after_steps, daemon=True).start()
    daemon.run()
    pub.stop()
    steps = [p for topic, p in pub.messages if topic == "state"]
    assert len(steps) >= 5  # before the fix: none while the camera had never opened
    assert all(not m["video"] and not m["face"] and not m["audio"] and not m["speech"] for m in steps)
    statuses = [p for topic, p in pub.messages if topic == "status" and p["sources"]]
    assert statuses and statuses[-1]["sources"]["v4l2:///dev/video-avemo-never"]["state"] == "lost"


def test_frames_are_flagged_video_true(clips, random_model, tmp_path):
    _, msgs = run_file(clips["mute"], random_model, tmp_path)
    assert msgs and all(m["video"] for m in msgs)


def test_inference_threads_setting(clips, random_model, tmp_path):
    import torch
    from typer.testing import CliRunner

    from avemo_edge.cli import app

    with pytest.raises(ConfigError, match=r"model.threads = -1 is invalid"):
        parse_config({"model": {"threads": -1}})
    r = CliRunner().invoke(app, ["run", "--threads", "1", "--validate-config"])
    assert r.exit_code == 0 and json.loads(r.stdout)["model"]["threads"] == 1, r.output
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        cfg = parse_config(
            {"source": {"video": f"file://{clips['mute']}", "realtime": False}, "model": {"path": str(random_model),
             "threads": 1}, "output": {"stdout": "none"}}
        )  # fmt: skip
        Daemon(cfg, publisher=Collect()).run()
        assert torch.get_num_threads() == 1
        # 0: torch gets the usable cores but one (its OpenMP threads stall on the pipeline's own)
        torch.set_num_threads(len(os.sched_getaffinity(0)) + 1)
        Daemon(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, threads=0)), publisher=Collect()).run()
        assert torch.get_num_threads() == default_torch_threads() == max(1, len(os.sched_getaffinity(0)) - 1)
    finally:
        torch.set_num_threads(before)
