"""Printing what preparation and training did, as tables a person reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from avemo_edge.model import EMOTIONS

from .prepare import Summary


def print_prepare_summary(summary: Summary, console: Console) -> None:
    for dataset, parts in summary.counts.items():
        table = Table(title=f"{dataset}: clips/images per split and class")
        table.add_column("split")
        for c in EMOTIONS:
            table.add_column(c, justify="right")
        table.add_column("total", justify="right")
        for part in ("train", "val", "test"):
            row = parts.get(part, {})
            table.add_row(part, *(str(row.get(c, 0)) for c in EMOTIONS), str(sum(row.values())))
        console.print(table)
        kinds = {p.split(":", 1)[1]: sum(v.values()) for p, v in parts.items() if p.startswith("kind:")}
        if kinds:
            console.print(f"{dataset} clips by content: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
        mb = summary.sizes.get(dataset, 0) / 2**20
        console.print(f"{dataset}: cache {mb:.1f} MiB, {summary.seconds.get(dataset, 0):.1f} s")
    for note in summary.notes:
        console.print(f"note: {note}", highlight=False)
    if summary.skipped:
        console.print(f"skipped {len(summary.skipped)}:", highlight=False)
        for path, reason in summary.skipped:
            console.print(f"  {path}: {reason}", highlight=False, soft_wrap=True)
    else:
        console.print("skipped 0")


def write_report(out: Path | None, stem: str, data: dict[str, Any], text: str) -> None:
    """Print a report's markdown and, with `out`, save it as `<stem>.md` and its numbers as `<stem>.json`."""
    if out:  # the files first: a closed stdout (a pipe into `head`) must not lose them
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{stem}.json").write_text(json.dumps(data, indent=1))
        (out / f"{stem}.md").write_text(text + "\n")
    print(text)
