"""The `avemo-edge` command. Thin: each subcommand parses, calls one library function, prints.

Only this module picks exit codes: 0 success, 1 a check failed or a failure of the running
service that a restart may cure (`RestartableError`: a source thread that crashed, a GPU backend
that failed while running, `BackendError`), 2 a configuration error a person must fix, which
systemd does not restart (`RestartPreventExitStatus=2`); each printed as one sentence, no traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import AvemoError, RestartableError

app = typer.Typer(help="Real-time audio-visual emotion recognition for edge devices.", no_args_is_help=True)
console = Console(width=max(100, Console().width))


@app.command()
def doctor() -> None:
    """Versions, usable backends and capture devices, and why the others are not usable."""
    from .doctor import report

    table = Table(title="avemo-edge doctor")
    for col in ("what", "status", "detail"):
        table.add_column(col)
    for row in report():
        table.add_row(*(escape(cell) for cell in row))  # plain text: "avemo-edge[mic]" is not Rich markup
    console.print(table)


@app.command()
def info(checkpoint: Path = typer.Argument(..., help="an avemo-edge checkpoint (.pt)")) -> None:
    """Describe a checkpoint: dimensions, classes, parameters, sha256 and training metadata."""
    from .checkpoint import load_checkpoint
    from .model import count_parameters

    ckpt = load_checkpoint(checkpoint)
    out = {
        "path": str(checkpoint),
        "sha256": ckpt.sha256,
        "parameters": count_parameters(ckpt.build()),
        "dims": ckpt.dims.__dict__,
        "classes": list(ckpt.classes),
        "preprocessing": ckpt.preprocessing,
        "meta": ckpt.meta,
    }
    console.print_json(json.dumps(out))


@app.command()
def prepare(
    sources: list[Path] = typer.Argument(
        ..., help="RAVDESS folder(s), FER+ folder, or <split>/<emotion>/ image folders"
    ),
    out: Path = typer.Option(Path("cache"), help="cache folder"),
    face_size: int = typer.Option(48, help="face crop side in pixels (the model's face_size)"),
    face_channels: int = typer.Option(1, help="1 grey or 3 RGB (the model's face_channels)"),
) -> None:
    """Decode data sets once into a compact training cache (resumable; bad files are skipped and counted)."""
    from training.prepare import FaceSpec
    from training.prepare import prepare as run_prepare
    from training.report import print_prepare_summary

    if face_channels not in (1, 3):
        raise typer.BadParameter(f"--face-channels must be 1 or 3, not {face_channels}")
    with _progress_bar() as bar:
        summary = run_prepare(sources, out, FaceSpec(face_size, face_channels), _progress_factory(bar))
    print_prepare_summary(summary, console)


def _progress_factory(bar):  # noqa: ANN001, ANN202
    def progress(desc: str, total: int):  # noqa: ANN202
        task = bar.add_task(desc, total=total, status="")
        return lambda status="": bar.update(task, advance=1, status=status)

    return progress


def _progress_bar():  # noqa: ANN202
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*cols, TextColumn("{task.fields[status]}"), console=console, transient=True)


@app.command()
def train(
    stage: str = typer.Argument(..., help="visual | audio | joint"),
    config: Path = typer.Option(None, help="a TOML or JSON file of training settings"),
    set_: list[str] = typer.Option([], "--set", help="override one setting, key=value (repeatable)"),
    cache: Path = typer.Option(Path("cache"), help="the folder `avemo-edge prepare` wrote"),
    out: Path = typer.Option(None, help="run folder (default runs/<stage>)"),
    resume: bool = typer.Option(False, help="continue the run in --out from its last epoch"),
) -> None:
    """Train one stage with the paper's recipe; checkpoints every epoch, resumable."""
    from training.config import load_config
    from training.train import train as run_train

    base = {"stage": stage, "cache": str(cache), "out": str(out or Path("runs") / stage)}
    cfg = load_config(config, set_, **base)
    with _progress_bar() as bar:
        run_train(cfg, resume=resume, progress=_progress_factory(bar), echo=console.print)


@app.command()
def evaluate(
    checkpoint: Path = typer.Argument(..., help="a checkpoint from `avemo-edge train` (best.pt)"),
    cache: Path = typer.Option(Path("cache"), help="the folder `avemo-edge prepare` wrote"),
    out: Path = typer.Option(None, help="report folder (default: <checkpoint folder>/eval)"),
    split: str = typer.Option(None, help="RAVDESS split: paper or cv0-cv4 (default: the one it was trained on)"),
    no_tcs_checkpoint: Path = typer.Option(None, help="the same model trained with tcs_weight=0, for the ablation"),
    joins: int = typer.Option(200, help="streams joining two test clips, for switch latency"),
    smoothing: float = typer.Option(None, help="TCS filter coefficient as on the device (default: the runtime's)"),
    hold_margin: float = typer.Option(None, help="label hold margin as on the device (default: the runtime's)"),
    threads: int = typer.Option(2, help="CPU threads for torch"),
) -> None:
    """Accuracy, F1, Table 1, confusion, ROC, radar, gates, stability and ablations, to a folder."""
    import sys

    from avemo_edge.config import RecognitionConfig
    from training.evaluate import evaluate as run_evaluate

    device = RecognitionConfig()
    smoothing = device.smoothing if smoothing is None else smoothing
    hold_margin = device.hold_margin if hold_margin is None else hold_margin
    out = out or checkpoint.parent / "eval"
    command = "avemo-edge " + " ".join(sys.argv[1:])
    run_evaluate(checkpoint, cache, out, split, no_tcs_checkpoint, joins, command, smoothing, hold_margin, threads)
    console.print((out / "report.md").read_text(), markup=False, highlight=False)
    console.print(f"report: {out / 'report.md'}; metrics: {out / 'metrics.json'}")


@app.command()
def run(
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML config file (see systemd/avemo-edge.toml)"),
    validate_config: bool = typer.Option(False, "--validate-config", help="check the config, print it, and exit"),
    source: str | None = typer.Option(None, help="video source URI: sample, file://PATH, camera://0, v4l2://..."),
    audio: str | None = typer.Option(None, help="audio source: auto, none, mic://default, mic://NAME"),
    model: Path | None = typer.Option(None, help="checkpoint to run (default: avemo_edge/assets/default.pt)"),
    backend: str | None = typer.Option(None, help="inference backend by name (torch, onnxruntime, tensorrt)"),
    output: str | None = typer.Option(None, help="what goes to stdout: jsonl, text or none"),
    fast: bool = typer.Option(False, "--fast", help="read files as fast as possible instead of in real time"),
    loop: bool = typer.Option(False, "--loop", help="start a file again at its end"),
    threads: int | None = typer.Option(
        None, help="CPU threads for inference (torch intra-op, onnxruntime); 0 = the library's default"
    ),
) -> None:
    """Run the daemon: capture, recognise one step per 100 ms, publish; until the source ends or SIGTERM."""
    import logging

    from .config import load_config
    from .preflight import check_startable

    overrides: dict[str, dict[str, object]] = {}
    for section, key, value in (
        ("source", "video", source),
        ("source", "audio", audio),
        ("source", "realtime", False if fast else None),
        ("source", "loop", True if loop else None),
        ("model", "path", str(model) if model is not None else None),
        ("model", "backend", backend),
        ("model", "threads", threads),
        ("output", "stdout", output),
    ):
        if value is not None:
            overrides.setdefault(section, {})[key] = value
    cfg = load_config(config, overrides)
    # What the config names must exist here (model, files, folders, credentials): checked before
    # anything loads, by --validate-config and by run alike, one sentence per problem (exit 2).
    found = check_startable(cfg)
    err = Console(stderr=True, soft_wrap=True, highlight=False)
    for line in found.warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(line)}")
    for line in found.errors:
        err.print(f"[red]error:[/red] {escape(line)}")
    name = config or "<defaults>"
    if not found.ok:
        n = len(found.errors)
        err.print(f"config {escape(str(name))} cannot start the daemon here: {n} problem{'s' * (n > 1)}")
        raise typer.Exit(2)
    if validate_config:
        from dataclasses import asdict

        err.print(f"config {escape(str(name))} is valid")
        console.print_json(json.dumps(asdict(cfg)))
        return
    from .daemon import run_daemon

    logging.basicConfig(level=cfg.log.level.upper(), format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    run_daemon(cfg)


@app.command()
def analyze(
    inputs: list[str] = typer.Argument(..., help="media or image files, folders, or globs (quote them)"),
    out: Path = typer.Option(..., "--out", help="output folder; each input gets OUT/<name>/"),
    model: Path | None = typer.Option(None, help="checkpoint to run (default: avemo_edge/assets/default.pt)"),
    backend: str = typer.Option("torch", help="inference backend by name (torch, onnxruntime, tensorrt)"),
    labels: Path | None = typer.Option(None, help="CSV of file,label giving each input's true emotion"),
    video: bool = typer.Option(False, "--video", help="also write annotated.mp4 per input"),
    threads: int | None = typer.Option(None, help="CPU threads for torch (default: torch's own)"),
) -> None:
    """A recording in; its step table, timeline picture and summary out (the daemon's pipeline, not real time)."""
    from .analyze import analyze as run_analyze

    if threads is not None:
        if threads < 1:
            raise AvemoError(f"--threads must be at least 1, not {threads}")
        import torch

        torch.set_num_threads(threads)
    with _progress_bar() as bar:
        report = run_analyze(inputs, out, str(model or ""), backend, labels, _progress_factory(bar), video)
    for r in report.results:
        console.print(r.line(), highlight=False, markup=False, soft_wrap=True)
    if report.accuracy is not None:
        n = report.confusion["inputs"]
        console.print(f"accuracy {report.accuracy:.1%} over {n} inputs with a known emotion", highlight=False)
        table = Table(title="confusion (rows: true, columns: dominant label)")
        table.add_column("")
        for name in report.confusion["labels"]:
            table.add_column(name)
        for name, row in zip(report.confusion["labels"], report.confusion["matrix"], strict=True):
            table.add_row(name, *map(str, row))
        console.print(table)
    for p, why in report.failed:
        console.print(f"skipped {p}: {why}", highlight=False, markup=False, soft_wrap=True)
    console.print(f"{len(report.results)} analysed, {len(report.failed)} skipped; results in {out}", highlight=False)
    if not report.results:
        raise typer.Exit(2)
    if report.failed:
        raise typer.Exit(1)


@app.command("evaluate-faces")
def evaluate_faces_cmd(
    folder: Path = typer.Argument(..., help="a folder laid out <folder>/<emotion>/*.png|jpg"),
    model: Path | None = typer.Option(None, help="checkpoint to run (default: avemo_edge/assets/default.pt)"),
    backend: str = typer.Option("torch", help="inference backend by name (torch, onnxruntime, tensorrt)"),
    detector: bool = typer.Option(
        True, "--detector/--no-detector", help="find and crop the face as the runtime does, or use the whole image"
    ),
) -> None:
    """Visual accuracy on your own labelled face images: accuracy, macro-F1, recall per class, confusion."""
    from .evaluate_faces import evaluate_faces

    with _progress_bar() as bar:
        ev = evaluate_faces(folder, str(model or ""), backend, detector, _progress_factory(bar))
    say = lambda line: console.print(line, highlight=False, markup=False, soft_wrap=True)  # noqa: E731
    for p, why in ev.unreadable:
        say(f"skipped {p}: {why}")
    mode = "the runtime's detector and crop" if detector else "the whole image as the face"
    say(f"{ev.images} images, {mode}; no face found in {ev.no_face} ({ev.no_face_share:.1%})")
    if ev.accuracy is None:
        raise AvemoError(f"no image in {folder} gave a face to classify; try --no-detector for tight face crops")
    say(f"accuracy {ev.accuracy:.1%}, macro-F1 {ev.macro_f1:.3f}")
    say("recall: " + ", ".join(f"{c} {r:.1%}" for c, r in ev.recall.items()))
    table = Table(title="confusion (rows: true, columns: predicted)")
    table.add_column("")
    for name in ev.labels:
        table.add_column(name)
    for name, row in zip(ev.labels, ev.confusion, strict=True):
        table.add_row(name, *map(str, row))
    console.print(table)


@app.command("export")
def export_cmd(
    checkpoint: Path = typer.Argument(..., help="an avemo-edge checkpoint (.pt)"),
    out: Path = typer.Option(..., "--out", help="output folder; each format goes to OUT/<format>/"),
    formats: str = typer.Option(
        "onnx", "--formats", help="comma-separated formats from the table in docs/EXPORT.md (onnx, onnx-fp16, ...)"
    ),
    verify: bool = typer.Option(False, "--verify", help="run each format against torch on a real stream"),
    steps: int = typer.Option(60, "--steps", help="length of the --verify stream in 100 ms steps (at least 50)"),
    data: Path | None = typer.Option(
        None, "--data", help="folder with ravdess_speech_16k/ and ferplus/ (default: ../shared/data beside the clone)"
    ),
    max_batch: int = typer.Option(8, "--max-batch", help="largest batch of the TensorRT optimization profiles"),
    opset: int = typer.Option(
        17,
        "--opset",
        help="ONNX opset: 17 (default) uses the TorchScript exporter; 18+ torch's dynamo exporter (needs onnxscript)",
    ),
) -> None:
    """Export a checkpoint to ONNX / TensorRT formats, optionally checking each against torch."""
    from export.exporter import export_checkpoint
    from export.formats import parse_formats

    chosen = parse_formats(formats)
    if verify and steps < 50:
        raise AvemoError(f"--steps must be at least 50 for --verify, not {steps}")
    log = lambda line: console.print(line, highlight=False, markup=False, soft_wrap=True)  # noqa: E731
    report = export_checkpoint(checkpoint, out, chosen, log, opset=opset, max_batch=max_batch, data_dir=data)
    total = sum(r.bytes for r in report.records) / 1e6
    log(f"exported {len(report.records)} files ({total:.1f} MB) in {report.seconds:.1f} s to {out}")
    ok = True
    if verify:
        from export.verify import verify_exports

        from .checkpoint import load_checkpoint

        result = verify_exports(load_checkpoint(checkpoint), out, chosen, log, steps=steps, data_dir=data)
        for line in result.lines():
            log(line)
        ok = result.ok
    log("next:")
    if not verify:
        log(f"  avemo-edge export {checkpoint} --out {out} --formats {formats} --verify")
    for fmt in chosen:
        log(f"  python -m bench.step_latency --backend {fmt.backend} --model {out / fmt.name}")
    if not ok:
        raise typer.Exit(1)


BENCH_DEFAULTS = {"model": ("3s", 10), "pipeline": ("20s", 20), "soak": ("30m", 20)}  # duration, warm-up


@app.command()
def bench(
    mode: str = typer.Argument(..., help="model (each graph alone) | pipeline (end to end) | soak (pipeline, long)"),
    model: str = typer.Option(
        "default", help="checkpoint path, 'default' (the shipped model), or 'paper' / 'small' (random weights)"
    ),
    exported: Path = typer.Option(None, help="`avemo-edge export --out` folder: one sub-folder per format"),
    only: str = typer.Option(None, help="comma-separated rows to run, e.g. torch-fp32,onnxruntime-int8"),
    duration: str = typer.Option(
        None, help="model: per measurement (3s); pipeline: per row and stream count (20s); soak: the run (30m)"
    ),
    warmup: int = typer.Option(None, help="untimed calls (model: 10) or steps per stream (pipeline, soak: 20)"),
    batch: str = typer.Option("1,8,32", help="model: batch sizes of the sweep"),
    streams: str = typer.Option("1", help="pipeline: concurrent stream counts, e.g. 1,2,4 (soak: the first)"),
    faces: str = typer.Option("1", help="pipeline: faces per frame (tiled copies of the input), e.g. 1,2,4"),
    pool_streams: bool = typer.Option(
        False, help="pipeline: also run each stream count above 1 with the streams' steps batched in one call"
    ),
    input_: str = typer.Option("sample", "--input", help="pipeline, soak: 'sample' (embedded clip), a file or URI"),
    window: str = typer.Option("1m", help="soak: window length for the drift figures"),
    threads: int = typer.Option(None, help="torch intra-op and onnxruntime threads (default: the libraries' own)"),
    target_fps: float = typer.Option(22.0, help="a target FPS to judge each row by, beside the paper's 22"),
    matmul_size: int = typer.Option(None, help="model: side of the square matmul for the peak (2048 CPU, 8192 GPU)"),
    matmul_seconds: float = typer.Option(1.0, help="model: how long to repeat the matmul; its best repeat is the peak"),
    ort_provider: str = typer.Option("auto", help="onnxruntime provider: auto, cpu, cuda or tensorrt"),
    json_out: Path = typer.Option(None, "--json", help="write the JSON report to this file"),
    md_out: Path = typer.Option(None, "--markdown", help="write the Markdown report to this file"),
    png: Path = typer.Option(None, help="write a PNG of the step-latency distribution to this file"),
) -> None:
    """FPS, latency and per-stage time per backend x precision, against the 22 FPS target (docs/BENCHMARKS.md)."""
    import shlex
    import sys

    from bench.report import plot_latency, to_json, to_markdown
    from bench.run import BenchOptions, run_bench
    from bench.timing import parse_duration, parse_ints

    if mode not in BENCH_DEFAULTS:
        raise AvemoError(f"unknown bench mode {mode!r}; choose one of {', '.join(BENCH_DEFAULTS)}")
    default_duration, default_warmup = BENCH_DEFAULTS[mode]
    opts = BenchOptions(
        mode=mode, model=model, exported=exported, only=only, seconds=parse_duration(duration or default_duration),
        warmup=default_warmup if warmup is None else warmup, batches=parse_ints(batch, "--batch"),
        streams=parse_ints(streams, "--streams"), faces=parse_ints(faces, "--faces"), pool_streams=pool_streams,
        input=input_,
        window=parse_duration(window), threads=threads,
        target_fps=target_fps, matmul_size=matmul_size, matmul_seconds=matmul_seconds, ort_provider=ort_provider,
    )  # fmt: skip
    err = Console(stderr=True)
    report = run_bench(opts, log=lambda line: err.print(f"[dim]{line}[/dim]", highlight=False))
    report["command"] = shlex.join(["avemo-edge", *sys.argv[1:]])
    text = to_markdown(report)
    console.print(text, markup=False, highlight=False, soft_wrap=True)
    for path, content in ((json_out, to_json(report)), (md_out, text)):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
            err.print(f"wrote {path}")
    if png:
        err.print(f"wrote {plot_latency(report, png)}")
    if not any(r["status"] == "ok" for r in report["rows"]):
        raise typer.Exit(1)  # nothing could be measured


def main() -> None:
    try:
        app()
    except AvemoError as e:
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {escape(str(e))}", highlight=False, markup=True)
        raise SystemExit(1 if isinstance(e, RestartableError) else 2) from None


if __name__ == "__main__":
    main()
