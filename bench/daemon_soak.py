"""The daemon unattended: a long run against a broker that goes away and comes back (issue #16).

    python -m bench.daemon_soak --duration 30m --restart-every 5m --out docs/results/bench/daemon-soak

It starts its own mosquitto on a free loopback port and the daemon (`python -m avemo_edge.cli run`)
on the embedded sample, looped, in real time, with MQTT to that broker (QoS and queue as the
defaults), one torch thread, and `[output] file` writing every step to a JSON-lines file. A paho
client subscribes to the daemon's topics and records every state message it receives. Every
`--restart-every` the broker is stopped (SIGTERM) and started again on the same port after
`--downtime` seconds. The daemon's RSS (/proc/PID/status VmRSS) is sampled every few seconds
from its first step on. At the end the daemon is stopped with SIGTERM and its last log line gives
its own counts: the steps it produced and what each publisher counted as dropped.

The report (report.json, report.md and the daemon's log under --out), per `--window`: steps
produced (lines of the output file), delivered (received by the subscriber), RSS, the step
latency (the daemon's own per-step `detect_ms` + `latency_ms`: face detection, then the backend
step and the filter; decoding runs in the reader thread and is not in it) p50 / p95, and the
delivery latency (the message's `time` to its arrival at the subscriber, same machine and clock);
least-squares slopes of RSS (MB/h) and step latency (ms/h) over the full windows but the first
(loading, warm-up), by `bench.pipeline.drift`; and the accounting: produced = delivered +
counted as dropped + unaccounted, the last shown with the steps it concerns, never folded in.

The subscriber keeps a persistent session (clean_session false, the broker's persistence on,
QoS 0 messages queued for it), so what the broker accepted while the subscriber was reconnecting
still reaches it: a message missing at the subscriber was lost between the daemon and the broker.
Not a CI test: it takes as long as --duration.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from avemo_edge.errors import AvemoError

from .timing import parse_duration

DEVICE_ID = "soak"
REPORT_SCHEMA = "avemo-edge-daemon-soak/1"


# --- the broker and the subscriber -------------------------------------------------------------
def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
    if found is None:
        raise AvemoError(
            "the soak needs the mosquitto broker binary, which is not installed (apt-get install mosquitto)"
        )
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# What the soak's broker keeps across its restarts: sessions and queued QoS 0 messages, on disk.
SOAK_SETTINGS = "allow_anonymous true\npersistence true\nqueue_qos0_messages true\nmax_queued_messages 100000"


class Broker:
    """mosquitto on 127.0.0.1:port, configured in `folder`; stopped with SIGTERM and started again on the same port.

    `settings` are mosquitto.conf lines after the listener (the soak's by default; `tests/test_mqtt.py`
    passes its own: no persistence, a password file, the full log).
    """

    def __init__(self, folder: Path, port: int, settings: str = SOAK_SETTINGS) -> None:
        self.binary, self.port, self.proc = mosquitto_binary(), port, None
        self.conf, self.log = folder / f"mosquitto-{port}.conf", folder / f"mosquitto-{port}.log"
        user = "user root\n" if os.geteuid() == 0 else ""  # as root it would drop to 'mosquitto', who cannot write here
        # persistence_location only matters where `settings` turn persistence on
        self.conf.write_text(f"listener {port} 127.0.0.1\n{user}persistence_location {folder}/\n{settings}\n")

    def start(self, timeout: float = 10.0) -> None:
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AvemoError(f"mosquitto did not listen on port {self.port}; its log is {self.log}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Listener:
    """A paho client with a persistent session on the daemon's topics: state steps and status messages."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.received: dict[int, float] = {}  # step index -> arrival, epoch seconds (the first arrival)
        self.duplicates = 0
        self.statuses: list[tuple[float, dict[str, Any]]] = []
        self.connects = 0
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"avemo-soak-listener-{port}", clean_session=False
        )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if not reason.is_failure:
            self.connects += 1
            client.subscribe(f"avemo/{DEVICE_ID}/#", qos=1)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        now = time.time()
        try:
            payload = json.loads(msg.payload)
        except ValueError:
            return  # availability: "online" / "offline"
        with self._lock:
            if msg.topic.endswith("/state"):
                step = int(payload["step"])
                if step in self.received:
                    self.duplicates += 1
                else:
                    self.received[step] = now
            elif msg.topic.endswith("/status"):
                self.statuses.append((now, payload))

    def wait_connected(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.connects and time.monotonic() < deadline:
            time.sleep(0.05)
        if not self.connects:
            raise AvemoError("the soak's subscriber could not connect to its own broker")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --- the daemon ---------------------------------------------------------------------------------
def daemon_config(folder: Path, port: int, steps_file: Path, model: str, threads: int, qos: int | None) -> Path:
    """The daemon's TOML: the looped sample in real time, every step to `steps_file`, MQTT to the soak's broker."""
    lines = [
        "[source]",
        'video = "sample"',
        "loop = true",
        "[model]",
        f"path = {json.dumps(model)}",
        f"threads = {threads}",
        "[output]",
        'stdout = "none"',
        f"file = {json.dumps(str(steps_file))}",
        "[mqtt]",
        "enabled = true",
        f"port = {port}",
        f'device_id = "{DEVICE_ID}"',
    ]
    if qos is not None:
        lines.append(f"qos = {qos}")
    path = folder / "daemon.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def rss_mb(pid: int) -> float | None:
    """The resident set size of process `pid` in MB (VmRSS), or None once it has gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE)
    return int(m.group(1)) / 1024 if m else None


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system, all threads) process `pid` has used, in seconds, or None once it has gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


def cpu_cores(samples: list[tuple[float, float]]) -> float | None:
    """Cores the process kept busy on average between the first and last (seconds, CPU seconds) samples."""
    if len(samples) < 2 or samples[-1][0] <= samples[0][0]:
        return None
    return round((samples[-1][1] - samples[0][1]) / (samples[-1][0] - samples[0][0]), 3)


SUMMARY = re.compile(
    r"stopped \((?P<reason>[^)]*)\): (?P<steps>\d+) steps in (?P<seconds>[\d.]+) s, .*?"
    r"(?P<skipped>\d+) skipped, dropped (?P<dropped>\{.*?\});"
)


def parse_summary(log_text: str) -> dict[str, Any] | None:
    """The daemon's last 'stopped (...)' log line as numbers: reason, steps, seconds, skipped, dropped."""
    found = list(SUMMARY.finditer(log_text))
    if not found:
        return None
    m = found[-1]
    return {
        "reason": m["reason"],
        "steps": int(m["steps"]),
        "seconds": float(m["seconds"]),
        "skipped": int(m["skipped"]),
        "dropped": {str(k): int(v) for k, v in ast.literal_eval(m["dropped"]).items()},
    }


def epoch(iso: str) -> float:
    """'2025-01-02T03:04:05.678Z' -> seconds since the epoch."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# --- the report ---------------------------------------------------------------------------------
def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def analyse(
    records: list[dict[str, Any]],
    received: dict[int, float],
    rss: list[tuple[float, float]],
    summary: dict[str, Any] | None,
    restarts: list[tuple[float, float]],
    start: float,
    window: float,
    duration: float,
    steps_file: str = "",
    cpu: list[tuple[float, float]] | None = None,
) -> dict[str, Any]:
    """Windows, drift, CPU share and accounting from what the soak recorded.

    `records`: the output file's steps (step, time, detect_ms, latency_ms); `received`: step ->
    arrival (epoch s) at the subscriber; `rss`: (seconds since start, MB); `summary`: the daemon's
    own counts (`parse_summary`), None if it never said them; `restarts`: (down, up) seconds since
    start; `start`: the daemon's start, epoch s; `steps_file`: the output file publisher's name;
    `cpu`: (seconds since start, the daemon's CPU seconds so far).
    """
    cpu = cpu or []
    from .pipeline import drift

    rel = np.asarray([epoch(r["time"]) - start for r in records], dtype=float)
    step_ms = [float(r.get("detect_ms") or 0.0) + float(r.get("latency_ms") or 0.0) for r in records]
    end = max(duration, float(rel.max()) if rel.size else 0.0, max((t for t, _ in rss), default=0.0))
    windows = []
    for i in range(int(np.ceil(end / window - 1e-9))):
        lo, hi = i * window, (i + 1) * window
        idx = np.flatnonzero((rel >= lo) & (rel < hi))
        produced = [records[j] for j in idx]
        delivered = [r for r in produced if int(r["step"]) in received]
        lat = [step_ms[j] for j in idx]
        delay = [1000.0 * (received[int(r["step"])] - epoch(r["time"])) for r in delivered]
        mem = [mb for t, mb in rss if lo <= t < hi]
        # from the last sample at or before the window's start to the last one by its end
        busy = [c for c in cpu if c[0] <= lo][-1:] + [c for c in cpu if lo < c[0] <= hi]
        span = min(hi, end) - lo
        windows.append(
            {
                "start_s": round(lo, 1),
                "steps": len(produced),
                "delivered": len(delivered),
                "missing": len(produced) - len(delivered),
                "fps": round(len(produced) / span, 2) if span > 0 else 0.0,
                "p50_ms": _pct(lat, 50),
                "p95_ms": _pct(lat, 95),
                "delivery_p50_ms": _pct(delay, 50),
                "delivery_p95_ms": _pct(delay, 95),
                "rss_mb": round(mem[-1], 1) if mem else None,  # at the window's end, as `bench soak`
                "cpu_cores": cpu_cores(busy),
                "broker_restarts": sum(lo <= down < hi for down, _ in restarts),
                "partial": span < window - 1e-6,
            }
        )
    full = [w for w in windows if not w["partial"] and w["p50_ms"] is not None]
    # the first window holds the model's loading and warm-up: shown, and left out of the slopes
    measured = full[1:] if len(full) > 2 else full
    since = measured[0]["start_s"] if measured else 0.0
    return {
        "windows": windows,
        # core-seconds per second, the loading and warm-up window left out as in the slopes
        "cpu_cores": cpu_cores([c for c in cpu if c[0] >= since] or cpu),
        "drift": drift(measured),
        "drift_windows_from_s": measured[0]["start_s"] if measured else None,
        "rss_mb_first_last": [round(rss[0][1], 1), round(rss[-1][1], 1)] if rss else None,
        "step_ms": {"p50": _pct(step_ms, 50), "p95": _pct(step_ms, 95), "p99": _pct(step_ms, 99)},
        "accounting": accounting(records, received, summary, restarts, start, steps_file),
    }


def accounting(
    records: list[dict[str, Any]],
    received: dict[int, float],
    summary: dict[str, Any] | None,
    restarts: list[tuple[float, float]],
    start: float,
    steps_file: str = "",
) -> dict[str, Any]:
    """produced = delivered + counted as dropped (MQTT) + unaccounted; the unaccounted steps listed."""
    in_file = {int(r["step"]): r for r in records}
    produced = summary["steps"] if summary else None
    dropped = dict(summary["dropped"]) if summary else {}
    mqtt_dropped = dropped.get("mqtt")
    delivered = sum(1 for s in received if s in in_file)
    out: dict[str, Any] = {
        "produced": produced,  # the daemon's own count
        "in_output_file": len(in_file),
        "output_file_dropped": dropped.get(steps_file) if steps_file else None,
        "delivered": delivered,
        "delivered_not_in_file": sum(1 for s in received if s not in in_file),
        "mqtt_dropped": mqtt_dropped,
        "skipped": summary["skipped"] if summary else None,
        "daemon_reason": summary["reason"] if summary else None,
    }
    if produced is None or mqtt_dropped is None:
        out["unaccounted"] = None
        out["detail"] = "the daemon did not log its final counts (it did not stop cleanly): nothing can be balanced"
        return out
    out["unaccounted"] = produced - delivered - mqtt_dropped  # negative: counted dropped, yet delivered
    missing = sorted(s for s in in_file if s not in received)
    out["not_delivered"] = len(missing)
    out["not_delivered_by_outage"] = _by_outage(missing, in_file, restarts, start)
    return out


def _by_outage(
    missing: list[int], in_file: dict[int, dict[str, Any]], restarts: list[tuple[float, float]], start: float
) -> list[dict[str, Any]]:
    """The undelivered steps grouped by the broker outage they are nearest to (by the step's time)."""
    groups: dict[int, list[float]] = {}
    for s in missing:
        t = epoch(in_file[s]["time"]) - start
        nearest = min(range(len(restarts)), key=lambda i: abs(t - restarts[i][0]), default=-1)
        groups.setdefault(nearest, []).append(t)
    out = []
    for i, ts in sorted(groups.items()):
        down = restarts[i][0] if i >= 0 else None
        out.append(
            {
                "outage": i + 1 if i >= 0 else None,
                "down_s": round(down, 1) if down is not None else None,
                "steps": len(ts),
                "from_s": round(min(ts) - (down or 0.0), 2),  # relative to the broker's stop
                "to_s": round(max(ts) - (down or 0.0), 2),
            }
        )
    return out


def to_markdown(report: dict[str, Any]) -> str:
    from .report import _num, _table, drift_sentence

    s, a = report["settings"], report["accounting"]
    out = [
        f"## avemo-edge daemon soak ({report['started_utc']})",
        "",
        f"- command: `{report['command']}`",
        f"- {s['duration_s'] / 60:g} min, broker stopped and restarted every {s['restart_every_s'] / 60:g} min "
        f"({len(report['restarts'])} restarts, {s['downtime_s']:g} s down each); daemon: sample looped in real "
        f"time, {s['threads']} torch thread(s), MQTT QoS {s['qos']}, model `{s['model'] or 'default'}`",
        f"- machine: {report['machine']}; load average at start {report['load_average_start']}, "
        f"at end {report['load_average_end']}",
        "- step latency: the daemon's own per-step `detect_ms` + `latency_ms` (face detection, backend step, "
        "filter); delivery: the message's `time` to its arrival at the subscriber",
        "",
    ]
    rows = [
        [
            _num(w["start_s"] / 60, 0),
            str(w["steps"]),
            str(w["delivered"]),
            str(w["missing"]),
            _num(w["rss_mb"], 1),
            _num(w.get("cpu_cores"), 2),
            _num(w["p50_ms"]),
            _num(w["p95_ms"]),
            _num(w["delivery_p50_ms"], 1),
            _num(w["delivery_p95_ms"], 1),
            str(w["broker_restarts"] or ""),
            "yes" if w["partial"] else "",
        ]
        for w in report["windows"]
    ]
    header = ["min", "steps", "delivered", "missing", "RSS MB", "CPU cores", "step p50 ms", "step p95 ms"]
    header += ["delivery p50 ms", "delivery p95 ms", "broker restarts", "partial"]
    out += _table(header, rows, set(range(11)))
    frm = report.get("drift_windows_from_s")
    out += ["", drift_sentence(report["drift"]) + (f" (windows from minute {frm / 60:g} on)" if frm else "")]
    st, rss = report["step_ms"], report.get("rss_mb_first_last")
    whole = (
        f"Over the whole run: step latency p50 {_num(st['p50'])} ms, p95 {_num(st['p95'])} ms, p99 {_num(st['p99'])} ms"
    )
    out += ["", whole + (f"; RSS first sample {rss[0]} MB, last {rss[1]} MB." if rss else ".")]
    if report.get("cpu_cores") is not None:
        out += ["", f"CPU: the daemon used {report['cpu_cores']:.2f} core-seconds per second (all its threads, "
                "/proc/PID/stat user + system, the first window left out)."]  # fmt: skip
    out += ["", "Accounting (steps):", ""]
    if a.get("unaccounted") is None:
        out.append(f"- {a.get('detail')}; produced {a['produced']}, delivered {a['delivered']}")
    else:
        out.append(
            f"- produced {a['produced']} = delivered {a['delivered']} + counted as dropped (MQTT) "
            f"{a['mqtt_dropped']} + unaccounted {a['unaccounted']}"
        )
        out.append(
            f"- output file: {a['in_output_file']} steps, {a['output_file_dropped']} dropped; aligner skipped "
            f"{a['skipped']}; delivered twice: {report['duplicates']}; the daemon stopped: {a['daemon_reason']}"
        )
        for g in a["not_delivered_by_outage"]:
            where = f"outage {g['outage']} (broker stopped at {g['down_s']} s)" if g["outage"] else "no outage"
            out.append(f"- not delivered near {where}: {g['steps']} steps, {g['from_s']} to {g['to_s']} s from it")
    return "\n".join(out).rstrip() + "\n"


# --- the run ------------------------------------------------------------------------------------
def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def soak(args: argparse.Namespace) -> dict[str, Any]:
    duration, every = parse_duration(args.duration), parse_duration(args.restart_every)
    window, downtime, sample_every = parse_duration(args.window), parse_duration(args.downtime), args.sample_every
    if every >= duration or downtime >= every:
        raise AvemoError("--restart-every must be shorter than --duration, and --downtime shorter than --restart-every")
    if 2 * window > duration:
        raise AvemoError("--duration must hold at least two --window lengths")
    if args.threads < 1:
        raise AvemoError(f"--threads must be at least 1, not {args.threads}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="avemo-daemon-soak-"))
    port = free_port()
    broker = Broker(work, port)
    broker.start()
    listener = Listener(port)
    listener.wait_connected()
    steps_file = work / "steps.jsonl"
    model = str(Path(args.model).resolve()) if args.model else ""
    cfg = daemon_config(work, port, steps_file, model, args.threads, args.qos)
    log_path = out / "daemon.log"
    root = Path(__file__).resolve().parents[1]
    started_utc = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load_start = _load()
    start = time.time()
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "avemo_edge.cli", "run", "--config", str(cfg)],
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    rss: list[tuple[float, float]] = []
    cpu: list[tuple[float, float]] = []
    restarts: list[tuple[float, float]] = []
    next_restart, next_sample = every, 0.0
    died = None
    try:
        while (now := time.monotonic() - t0) < duration:
            if proc.poll() is not None:
                died = f"the daemon exited with status {proc.returncode} after {now:.0f} s"
                break
            if now >= next_sample and steps_file.exists() and steps_file.stat().st_size:  # from its first step on
                mb = rss_mb(proc.pid)
                used = cpu_seconds(proc.pid)
                if mb is not None:
                    rss.append((round(now, 2), mb))
                if used is not None:
                    cpu.append((round(now, 2), used))
                next_sample += sample_every
            if now >= next_restart and next_restart + downtime < duration:
                down = time.monotonic() - t0
                broker.stop()
                time.sleep(downtime)
                broker.start()
                restarts.append((round(down, 2), round(time.monotonic() - t0, 2)))
                print(f"{down / 60:6.1f} min: broker restarted ({restarts[-1][1] - down:.1f} s down)", flush=True)
                next_restart += every
            time.sleep(min(0.5, max(0.01, min(next_sample, next_restart) - (time.monotonic() - t0))))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                died = died or "the daemon did not stop within 60 s of SIGTERM and was killed"
        time.sleep(2.0)  # the last messages reach the subscriber
        listener.close()
        broker.stop()
    records = [json.loads(line) for line in steps_file.read_text().splitlines() if line.strip()]
    summary = parse_summary(log_path.read_text())
    report = {
        "schema": REPORT_SCHEMA,
        "started_utc": started_utc,
        "command": " ".join(["python -m bench.daemon_soak", *sys.argv[1:]]),
        "settings": {
            "duration_s": duration,
            "restart_every_s": every,
            "downtime_s": downtime,
            "window_s": window,
            "threads": args.threads,
            "qos": args.qos if args.qos is not None else 0,
            "model": args.model,
            "sample_every_s": sample_every,
        },
        "machine": f"{os.cpu_count()} logical CPUs, nice {os.nice(0)}",
        "load_average_start": load_start,
        "load_average_end": _load(),
        "restarts": restarts,
        "rss_samples": rss,
        "cpu_samples": cpu,
        "duplicates": listener.duplicates,
        "subscriber_connects": listener.connects,
        "daemon_summary": summary,
        "daemon_exit": proc.returncode,
        "died": died,
        **analyse(records, listener.received, rss, summary, restarts, start, window, duration, str(steps_file), cpu),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(to_markdown(report))
    shutil.rmtree(work, ignore_errors=True)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.daemon_soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", default="30m", help="how long the daemon runs (30m, 90s, 1h)")
    p.add_argument("--restart-every", default="5m", help="the broker is stopped and restarted this often")
    p.add_argument("--downtime", default="3s", help="how long the broker stays down each time")
    p.add_argument("--window", default="1m", help="window length of the report")
    p.add_argument("--sample-every", type=float, default=5.0, help="seconds between RSS samples")
    p.add_argument("--threads", type=int, default=1, help="the daemon's [model] threads")
    p.add_argument("--qos", type=int, choices=(0, 1, 2), default=None, help="MQTT QoS (default: the daemon's, 0)")
    p.add_argument("--model", default="", help="checkpoint for the daemon (default: the shipped model)")
    p.add_argument("--out", default="docs/results/bench/daemon-soak", help="folder for report.json, report.md, log")
    args = p.parse_args(argv)
    try:
        report = soak(args)
    except AvemoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(to_markdown(report))
    return 0 if report["accounting"].get("unaccounted") is not None and not report["died"] else 1


if __name__ == "__main__":
    sys.exit(main())
