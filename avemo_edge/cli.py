"""The `avemo-edge` command. Thin: each subcommand parses, calls one library function, prints.

Only this module picks exit codes: 0 success, 1 a check failed, 2 a user error (printed as one
sentence, no traceback).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from .errors import AvemoError

app = typer.Typer(help="Real-time audio-visual emotion recognition for edge devices.", no_args_is_help=True)
console = Console()


@app.command()
def doctor() -> None:
    """Versions, usable backends and capture devices, and why the others are not usable."""
    from .doctor import report

    table = Table(title="avemo-edge doctor")
    for col in ("what", "status", "detail"):
        table.add_column(col)
    for row in report():
        table.add_row(*row)
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
    opset: int = typer.Option(17, "--opset", help="ONNX opset"),
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


def main() -> None:
    try:
        app()
    except AvemoError as e:
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {e}", highlight=False, markup=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
