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


def main() -> None:
    try:
        app()
    except AvemoError as e:
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {e}", highlight=False, markup=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
