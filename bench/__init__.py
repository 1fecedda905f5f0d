"""Benchmarks for avemo-edge: `avemo-edge bench model | pipeline | soak` (see docs/BENCHMARKS.md)."""

PAPER_FPS = 22.0  # the paper's figure, on an RTX 3060: every report says whether each row reaches it
