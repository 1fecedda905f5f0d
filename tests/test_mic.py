"""The microphone path through a real PortAudio device: PulseAudio's null sink, whose monitor source
PortAudio reaches through ALSA's pulse plugin, while the test plays a voiced signal into the sink.

Needs the Debian packages pulseaudio, pulseaudio-utils, libasound2-plugins and portaudio19-dev
(for building PyAudio); `.ci/run` installs them. Skipped, with the reason, where they are absent."""

import json
import shutil
import subprocess
import threading
import time
import wave

import numpy as np
import pytest

pyaudio = pytest.importorskip("pyaudio", reason="PyAudio is not installed (pip install 'avemo-edge[mic]')")
if shutil.which("pulseaudio") is None or shutil.which("paplay") is None:
    pytest.skip("pulseaudio / paplay are absent (apt-get install pulseaudio pulseaudio-utils)", allow_module_level=True)


@pytest.fixture(scope="module")
def pulse():
    """A PulseAudio server with a null sink; started here (and stopped after) unless one runs already."""
    started = subprocess.run(["pulseaudio", "--check"], capture_output=True).returncode != 0
    if started:
        r = subprocess.run(
            ["pulseaudio", "--daemonize=yes", "--exit-idle-time=-1", "--log-target=stderr", "--log-level=error"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if r.returncode != 0:
            pytest.skip(f"pulseaudio could not be started here: {r.stderr.strip()[:200]}")
    try:
        sinks = subprocess.run(["pactl", "list", "short", "sinks"], capture_output=True, text=True, timeout=10).stdout
        if "null" not in sinks:
            subprocess.run(["pactl", "load-module", "module-null-sink", "sink_name=avemo_null"], check=True, timeout=10)
        yield
    finally:
        if started:
            subprocess.run(["pulseaudio", "--kill"], timeout=30)


def test_portaudio_lists_an_input_device(pulse):
    from avemo_edge.capture import _quiet_stderr

    with _quiet_stderr():
        pa = pyaudio.PyAudio()
    try:
        inputs = [
            pa.get_device_info_by_index(i)["name"]
            for i in range(pa.get_device_count())
            if pa.get_device_info_by_index(i)["maxInputChannels"] > 0
        ]
    finally:
        pa.terminate()
    assert inputs, "PortAudio sees no input device even with PulseAudio running"


def test_daemon_hears_the_microphone(pulse, tmp_path, clips, random_model):
    from media import voice

    from avemo_edge.config import parse_config
    from avemo_edge.daemon import Daemon
    from avemo_edge.publish import JsonLinesPublisher

    rate = 44_100
    t = np.arange(int(rate * 12.0)) / rate
    x = np.where((t % 2.0) < 1.0, voice(t, rate, -20.0), 0.0)  # 1 s of voice, 1 s of silence, ...
    wav = tmp_path / "voice.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((x * 32767).astype(np.int16).tobytes())
    player = subprocess.Popen(["paplay", str(wav)])
    out = tmp_path / "mic.jsonl"
    cfg = parse_config(
        {
            "source": {"video": f"file://{clips['mute']}", "loop": True, "audio": "mic://default"},
            "model": {"path": str(random_model)},
            "recognition": {"live_latency_s": 0.4},  # CI's 2 cores are shared: give late callbacks time
        }
    )
    pub = JsonLinesPublisher(out)
    daemon = Daemon(cfg, publisher=pub)

    def stop_when_heard():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            lines = out.read_text().splitlines() if out.exists() else []
            msgs = [json.loads(line) for line in lines]
            if sum(m["speech"] for m in msgs) >= 10 and sum(not m["speech"] and m["audio"] for m in msgs) >= 5:
                break
            time.sleep(0.2)
        daemon.stop()

    threading.Thread(target=stop_when_heard, daemon=True).start()
    try:
        summary = daemon.run()
    finally:
        pub.stop()
        player.terminate()
        player.wait(10)
    msgs = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary.speech >= 10, f"{summary}"
    pattern = "".join("s" if m["speech"] else "a" if m["audio"] else "." for m in msgs)
    first = pattern.find("a") if "a" in pattern else pattern.find("s")
    heard = pattern[first:]  # the microphone opens a moment after the file starts
    assert heard.count(".") <= 0.3 * len(heard), pattern
    assert all(m["face"] for m in msgs[:10])  # and the video from the file alongside
    loud = [m["level_dbfs"] for m in msgs if m["speech"]]
    assert np.median(loud) > -30
    print(f"\nmic steps (s speech, a audio, . none): {pattern}")
