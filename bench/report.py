"""The report in three forms: JSON for machines, a Markdown table for people, a PNG of the latency distribution."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import PAPER_FPS

STAGE_LABELS = {
    "model": (("visual_encoder", "visual"), ("audio_step", "audio step"), ("fusion_head", "fusion")),
    "pipeline": (
        ("decode", "decode"),
        ("face", "face"),
        ("log_mel", "log-mel"),
        ("inference", "infer"),
        ("tcs", "TCS"),
        ("publish", "publish"),
    ),
}


def public(obj: Any) -> Any:
    """The report without its '_'-prefixed keys (raw samples kept in memory for the plot)."""
    if isinstance(obj, dict):
        return {k: public(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, list):
        return [public(v) for v in obj]
    return obj


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(public(report), indent=2)


def _num(x: float | None, digits: int = 2) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def _status(row: dict[str, Any]) -> str:
    s = row.get("status", "")
    detail = (row.get("detail") or "").replace("|", "/")
    return f"{s}: {detail}" if detail else s


def _table(header: list[str], rows: list[list[str]], right: set[int] | None = None) -> list[str]:
    right = right or set()
    align = ["---:" if i in right else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _yes(flag: bool | None) -> str:
    return "" if flag is None else ("yes" if flag else "no")


def _stage_ms(row: dict[str, Any], mode: str, key: str) -> str:
    cell = row.get("stages", {}).get(key)
    if not cell:
        return ""
    if mode == "model":
        return _num(cell["latency_ms"]["p50"]) if cell.get("status") == "ok" else cell.get("status", "")
    return _num(cell.get("mean"))


def main_table(report: dict[str, Any]) -> list[str]:
    mode = report["mode"]
    stage_mode = "model" if mode == "model" else "pipeline"
    stages = STAGE_LABELS[stage_mode]
    target = report["settings"]["target_fps"]
    header = ["row", "status", "runs on", "model MB", "FPS", "p50 ms", "p95 ms", "p99 ms"]
    header += [f"{label} ms" for _, label in stages]
    if mode != "model":
        header.append("faces found")
    header.append(f">= {PAPER_FPS:g} FPS (paper)")
    if target != PAPER_FPS:
        header.append(f">= {target:g} FPS (target)")
    rows = []
    for r in report["rows"]:
        lat = r.get("latency_ms") or {}
        fps = r.get("fps_per_stream", r.get("fps"))
        cells = [
            f"`{r['key']}`",
            _status(r),
            r.get("describe") or r["device"],
            _num(r.get("model_mb"), 1),
            _num(fps, 1),
            _num(lat.get("p50")),
            _num(lat.get("p95")),
            _num(lat.get("p99")),
        ]
        cells += [_stage_ms(r, stage_mode, key) for key, _ in stages]
        if mode != "model":
            cells.append("" if r.get("faces_found") is None else f"{100 * r['faces_found']:.0f} %")
        cells.append(_yes(r.get("meets_paper_fps")))
        if target != PAPER_FPS:
            cells.append(_yes(r.get("meets_target_fps")))
        rows.append(cells)
    right = set(range(3, len(header) - 1))
    return _table(header, rows, right)


def batch_table(report: dict[str, Any]) -> list[str]:
    rows = []
    for r in report["rows"]:
        for s in r.get("batch_sweep", []):
            if s.get("status") != "ok":
                rows.append([f"`{r['key']}`", str(s["batch"]), _status(s), "", "", "", "", ""])
                continue
            vis, step = s["visual_encoder"], s["step"]
            rows.append(
                [
                    f"`{r['key']}`",
                    str(s["batch"]),
                    "ok",
                    _num(vis["per_second"], 1),
                    _num(step["per_second"], 1),
                    _num(step["latency_ms"]["p50"]),
                    _num(step["latency_ms"]["p95"]),
                    _memory(s),
                ]
            )
    if not rows:
        return []
    header = [
        "row",
        "batch",
        "status",
        "faces/s (visual)",
        "steps/s (whole step, B streams)",
        "step p50 ms",
        "step p95 ms",
        "RSS MB",
    ]
    return _table(header, rows, {1, 3, 4, 5, 6, 7})


def _memory(sweep: dict[str, Any]) -> str:
    """The RSS MB cell of a sweep point, with the GPU's used memory where it was measured."""
    mem = sweep.get("memory") or {}
    gpu = (mem.get("gpu") or {}).get("device_used_mb")
    return _num(mem.get("rss_mb"), 0) + (f" / GPU {gpu:.0f}" if gpu is not None else "")


def stream_table(report: dict[str, Any]) -> list[str]:
    rows = []
    for r in report["rows"]:
        for s in r.get("stream_sweep", []):
            pooled = f"yes ({s['pool_rows_per_call']} rows/call)" if s.get("pool_rows_per_call") else ""
            if s.get("status") != "ok":
                rows.append([f"`{r['key']}`", str(s["streams"]), pooled, _status(s)] + [""] * 7)
                continue
            lat = s["latency_ms"]
            rows.append(
                [
                    f"`{r['key']}`",
                    str(s["streams"]),
                    pooled,
                    "ok",
                    _num(s["fps"], 1),
                    _num(s["fps_per_stream"], 1),
                    _num(lat["p50"]),
                    _num(lat["p95"]),
                    _num(lat["p99"]),
                    _memory(s),
                    _yes(s.get("realtime")),
                ]
            )
    if not rows:
        return []
    header = [
        "row",
        "streams",
        "batched together",
        "status",
        "FPS total",
        "FPS per stream",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "RSS MB",
        "each >= 10 steps/s",
    ]
    return _table(header, rows, {1, 4, 5, 6, 7, 8, 9})


def face_table(report: dict[str, Any]) -> list[str]:
    rows = []
    for r in report["rows"]:
        for s in r.get("face_sweep", []):
            if s.get("status") != "ok":
                rows.append([f"`{r['key']}`", str(s["faces"]), _status(s)] + [""] * 7)
                continue
            lat = s["latency_ms"]
            rows.append(
                [
                    f"`{r['key']}`",
                    str(s["faces"]),
                    "ok",
                    _num(s["faces_tracked"], 2),
                    _num(s["fps"], 1),
                    _num(lat["mean"]),
                    _num(lat["p95"]),
                    _num(s["face_ms"]),
                    _num(s["inference_ms"]),
                    _num(s["inference_ms_per_face"]),
                ]
            )
    if not rows:
        return []
    header = [
        "row",
        "faces",
        "status",
        "tracked per step",
        "steps/s",
        "step mean ms",
        "step p95 ms",
        "face stage ms",
        "inference ms",
        "inference ms per face",
    ]
    return _table(header, rows, {1, 3, 4, 5, 6, 7, 8, 9})


def limit_table(report: dict[str, Any]) -> list[str]:
    lim = report.get("limit")
    if not lim:
        return []
    lines = [f"Visual encoder: {lim['gflops_per_face']} GFLOP per face ({lim['flop_method']}).", ""]
    rows = []
    for r in lim["rows"]:
        if r["status"] != "ok":
            rows.append([f"`{r['key']}`", r["precision"], _status(r), "", "", "", "", ""])
            continue
        b1, bb = r["batch1"], r.get("batched")
        rows.append(
            [
                f"`{r['key']}`",
                r["precision"],
                "ok",
                _num(r["peak_gflops"], 1),
                _num(b1["bound_ms"], 3),
                _num(b1["measured_ms"], 3),
                _num(b1["ratio"]),
                f"{_num(bb['ratio'])} (batch {bb['batch']})" if bb else "",
            ]
        )
    header = [
        "row",
        "precision",
        "status",
        "matmul peak GFLOP/s",
        "bound ms",
        "measured ms (batch 1)",
        "measured / bound",
        "measured / bound, batched",
    ]
    return lines + _table(header, rows, {3, 4, 5, 6})


def soak_table(report: dict[str, Any]) -> list[str]:
    out = []
    for r in report["rows"]:
        if not r.get("windows"):
            continue
        out += [f"Soak windows, `{r['key']}`:", ""]
        rows = [
            [
                _num(w["start_s"], 1),
                str(w["steps"]),
                _num(w["fps"], 1),
                _num(w["p50_ms"]),
                _num(w["p95_ms"]),
                _num(w["p99_ms"]),
                _num(w.get("rss_mb"), 1),
                "yes" if w.get("partial") else "",
            ]
            for w in r["windows"]
        ]
        out += _table(
            ["start s", "steps", "FPS", "p50 ms", "p95 ms", "p99 ms", "RSS MB", "partial"], rows, {0, 1, 2, 3, 4, 5, 6}
        )
        out += ["", drift_sentence(r.get("drift") or {}), ""]
    return out


def drift_sentence(d: dict[str, Any]) -> str:
    if "windows" not in d:
        return f"Drift: {d.get('detail', 'not measured')}."
    p50 = d["p50_first_last_ms"]
    text = (
        f"Drift over {d['windows']} full windows: p50 {p50[0]:.2f} -> {p50[1]:.2f}"
        f" ms ({d['p50_change_pct']:+.1f} %, slope {d['p50_slope_ms_per_hour']:+.2f} ms/h), p95 "
        f"{d['p95_first_last_ms'][0]:.2f} -> {d['p95_first_last_ms'][1]:.2f} ms, FPS {d['fps_first_last'][0]:.1f} -> "
        f"{d['fps_first_last'][1]:.1f}"
    )
    if "rss_first_last_mb" in d:
        rss = d["rss_first_last_mb"]
        text += f", RSS {rss[0]:.1f} -> {rss[1]:.1f} MB (slope {d['rss_slope_mb_per_hour']:+.1f} MB/h)"
    return text + "."


def _environment_lines(report: dict[str, Any]) -> list[str]:
    e = report["environment"]
    gpu = e.get("gpu")
    libs = ", ".join(f"{k} {v}" for k, v in e["libraries"].items())
    t = e["threads"]
    threads = (
        f"torch {t['torch_intra_op_threads']} intra-op / {t['torch_inter_op_threads']} inter-op, "
        f"OpenCV {t.get('opencv_threads')}"
        + "".join(f", {k}={v}" for k, v in t.items() if k.isupper() and v is not None)
    )
    m = report["model"]
    lines = [
        f"- machine: {e['cpu']}, {e['cpu_cores_logical']} logical CPUs ({e['cpu_usable']} usable), ISA "
        f"{e['cpu_isa']}; GPU: {gpu['name'] + ', CUDA ' + str(gpu['cuda']) if gpu else 'none'}; "
        f"load average at start {e['load_average_1_5_15']}",
        f"- libraries: Python {e['python']}, {libs}",
        f"- threads: {threads}",
        f"- model: `{m['path']}` ({m['weights']} weights, {m['parameters']:,} parameters, face "
        f"{m['dims']['face_size']} px x {m['dims']['face_channels']} ch, {m['dims']['face_stem']} stem)",
        f"- timing: {report['settings']['clock']}, warm-up {report['settings']['warmup']} "
        f"{'calls' if report['mode'] == 'model' else 'steps'} discarded; {report['settings']['outliers']}; "
        f"{report['settings']['gpu_sync']}",
    ]
    if report.get("input"):
        lines.append(f"- input: `{report['input']}` (looped)")
    copies = {r["key"]: r["copies"] for r in report["rows"] if r.get("copies") and r["device"] != "cpu"}
    lines += [f"- host-device copies, `{k}`: {v}" for k, v in copies.items()]
    return lines


def to_markdown(report: dict[str, Any]) -> str:
    mode = report["mode"]
    fps_what = {
        "model": "whole steps per second through the backend's batch-1 `step()`",
        "pipeline": "steps per second per stream, end to end",
        "soak": "steps per second, end to end",
    }[mode]
    stage_what = (
        "p50 ms of each graph alone at batch 1"
        if mode == "model"
        else "mean ms per step of each stage (the means add up to the mean step)"
    )
    out = [f"## avemo-edge bench {mode} ({report['started_utc']})", "", *_environment_lines(report), ""]
    out += [f"**Warning:** {w}." for w in report.get("warnings", [])]
    out += ["", f"FPS: {fps_what}; stage columns: {stage_what}.", ""]
    out += main_table(report)
    for title, lines in (
        ("Batch sweep", batch_table(report)),
        ("Concurrent streams", stream_table(report)),
        ("Faces in one stream (tiled copies of the input's frame)", face_table(report)),
        ("Compute bound of the visual encoder", limit_table(report)),
        ("Soak", soak_table(report)),
    ):
        if lines:
            out += ["", f"### {title}", "", *lines]
    return "\n".join(out).rstrip() + "\n"


def _mpl_at_least(major: int, minor: int) -> bool:
    import matplotlib

    return tuple(int(p) for p in matplotlib.__version__.split(".")[:2]) >= (major, minor)


def plot_latency(report: dict[str, Any], path: str | Path) -> Path:
    """A box plot (log scale) of every timed step's latency, one box per measured row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if r.get("_samples_ms")]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.6 * max(len(rows), 1)))
    if rows:
        horizontal = {"orientation": "horizontal"} if _mpl_at_least(3, 10) else {"vert": False}
        ax.boxplot(
            [r["_samples_ms"] for r in rows], whis=(1, 99), showfliers=True, flierprops={"markersize": 2}, **horizontal
        )
        ax.set_yticks(range(1, len(rows) + 1), [r["key"] for r in rows])
        ax.set_xscale("log")
    ax.set_xlabel("step latency, ms (box: p25-p75, line: p50, whiskers: p1-p99, dots: beyond)")
    ax.set_title(f"avemo-edge bench {report['mode']}: {report['environment']['cpu']}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
