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
) -> None:
    """Run the daemon: capture, recognise one step per 100 ms, publish; until the source ends or SIGTERM."""
    import logging

    from .config import load_config

    overrides: dict[str, dict[str, object]] = {}
    for section, key, value in (
        ("source", "video", source),
        ("source", "audio", audio),
        ("source", "realtime", False if fast else None),
        ("source", "loop", True if loop else None),
        ("model", "path", str(model) if model is not None else None),
        ("model", "backend", backend),
        ("output", "stdout", output),
    ):
        if value is not None:
            overrides.setdefault(section, {})[key] = value
    cfg = load_config(config, overrides)
    if validate_config:
        from dataclasses import asdict

        Console(stderr=True, soft_wrap=True).print(f"config {config or '<defaults>'} is valid", highlight=False)
        console.print_json(json.dumps(asdict(cfg)))
        return
    from .daemon import run_daemon

    logging.basicConfig(level=cfg.log.level.upper(), format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    run_daemon(cfg)


def main() -> None:
    try:
        app()
    except AvemoError as e:
        from rich.markup import escape

        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {escape(str(e))}", highlight=False, markup=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
