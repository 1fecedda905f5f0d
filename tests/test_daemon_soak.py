"""bench.daemon_soak's pure parts: the daemon's summary line, the windows and the accounting (the soak itself is
not a CI test: it runs for --duration)."""

import os
from datetime import datetime, timezone

from bench.daemon_soak import analyse, cpu_seconds, daemon_config, parse_summary, to_markdown

START = 1_700_000_000.0


def _iso(t: float) -> str:
    return datetime.fromtimestamp(START + t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_parse_summary_reads_the_daemons_last_stop_line():
    log = (
        "12:00:00 INFO ready in 1.0 s: ...\n"
        "12:30:00 INFO SIGTERM received: stopping\n"
        "12:30:01 INFO stopped (stopped): 17980 steps in 1800.2 s, face in 17000, speech in 9000, 0 skipped, "
        "dropped {'/tmp/x/steps.jsonl': 0, 'mqtt': 41}; median ms per step: detect 3.1, infer 20.2, publish 0.01\n"
    )
    s = parse_summary(log)
    assert s == {
        "reason": "stopped",
        "steps": 17980,
        "seconds": 1800.2,
        "skipped": 0,
        "dropped": {"/tmp/x/steps.jsonl": 0, "mqtt": 41},
    }
    assert parse_summary("12:00:00 INFO ready\n") is None


def test_daemon_config_is_valid_for_the_daemon(tmp_path):
    from avemo_edge.config import load_config

    cfg = load_config(daemon_config(tmp_path, 1884, tmp_path / "steps.jsonl", "", 1, None), {})
    assert cfg.source.video == "sample" and cfg.source.loop and cfg.source.realtime
    assert cfg.mqtt.enabled and cfg.mqtt.port == 1884 and cfg.mqtt.qos == 0  # the default QoS
    assert cfg.model.threads == 1 and cfg.output.file == str(tmp_path / "steps.jsonl")


def test_windows_slopes_and_accounting_show_what_is_unaccounted():
    # 4 windows of 10 s, 10 steps a second; the broker is down at 15 s: steps 150-159 never arrive,
    # the daemon counted 6 of them as dropped, so 4 are unaccounted and must be said
    records = [
        {"step": k, "time": _iso(0.1 * k + 0.05), "detect_ms": 1.0, "latency_ms": 9.0 + k / 400} for k in range(400)
    ]
    received = {k: START + 0.1 * k + 0.06 for k in range(400) if not 150 <= k < 160}
    rss = [(float(t), 100.0 + t / 10) for t in range(0, 40, 5)]
    summary = {"reason": "stopped", "steps": 400, "seconds": 40.0, "skipped": 0, "dropped": {"f": 0, "mqtt": 6}}
    report = analyse(records, received, rss, summary, [(15.0, 18.0)], START, 10.0, 40.0, steps_file="f")
    w = report["windows"]
    assert [x["steps"] for x in w] == [100] * 4 and [x["missing"] for x in w] == [0, 10, 0, 0]
    assert w[1]["broker_restarts"] == 1 and w[0]["rss_mb"] == 100.5 and w[0]["delivery_p50_ms"] == 10.0
    assert not any(x["partial"] for x in w)
    d = report["drift"]  # the windows after the first: RSS 1 MB per 10 s = 360 MB/h, latency 0.25 ms per 10 s
    assert d["windows"] == 3 and abs(d["rss_slope_mb_per_hour"] - 360.0) < 1e-6
    assert abs(d["p50_slope_ms_per_hour"] - 90.0) < 0.5
    a = report["accounting"]
    assert (a["produced"], a["delivered"], a["mqtt_dropped"], a["unaccounted"]) == (400, 390, 6, 4)
    assert a["not_delivered_by_outage"] == [{"outage": 1, "down_s": 15.0, "steps": 10, "from_s": 0.05, "to_s": 0.95}]
    report.update(
        started_utc="x",
        command="python -m bench.daemon_soak",
        settings={"duration_s": 40.0, "restart_every_s": 15.0, "downtime_s": 3.0, "threads": 1, "qos": 0, "model": ""},
        machine="2 logical CPUs",
        load_average_start="1",
        load_average_end="1",
        restarts=[(15.0, 18.0)],
        duplicates=0,
    )
    text = to_markdown(report)
    assert "produced 400 = delivered 390 + counted as dropped (MQTT) 6 + unaccounted 4" in text
    assert "slope +360.0 MB/h" in text and "outage 1 (broker stopped at 15.0 s): 10 steps" in text


def test_accounting_without_the_daemons_counts_says_so():
    records = [{"step": 0, "time": _iso(0.1), "detect_ms": 1.0, "latency_ms": 9.0}]
    report = analyse(records, {}, [], None, [], START, 10.0, 20.0)
    assert report["accounting"]["unaccounted"] is None and "did not stop cleanly" in report["accounting"]["detail"]


def test_cpu_share_per_window_and_overall_leaves_the_loading_out():
    # 0.9 cores while loading (first 10 s), then 0.3 cores: per window and overall from window 2 on
    cpu = [(float(t), 0.9 * min(t, 10) + 0.3 * max(t - 10, 0)) for t in range(0, 41, 5)]
    records = [{"step": k, "time": _iso(0.1 * k + 0.05), "detect_ms": 1.0, "latency_ms": 9.0} for k in range(400)]
    rss = [(float(t), 100.0) for t in range(0, 40, 5)]
    report = analyse(records, {}, rss, None, [], START, 10.0, 40.0, cpu=cpu)
    assert [w["cpu_cores"] for w in report["windows"]] == [0.9, 0.3, 0.3, 0.3]
    assert report["cpu_cores"] == 0.3
    assert "0.30 core-seconds per second" in to_markdown({**report, **_settings()})
    assert cpu_seconds(os.getpid()) > 0 and cpu_seconds(2**22 + 12345) is None


def _settings():
    return {
        "settings": {"duration_s": 40, "restart_every_s": 20, "downtime_s": 3, "threads": 1, "qos": 0, "model": ""},
        "started_utc": "t", "command": "c", "restarts": [], "machine": "m", "load_average_start": "0",
        "load_average_end": "0", "duplicates": 0,
    }  # fmt: skip
