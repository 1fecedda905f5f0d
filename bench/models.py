"""The model a benchmark runs: the shipped default, a checkpoint, or random weights of an architecture.

    python -m bench.models paper runs/bench/paper.pt     (a random-weight checkpoint, e.g. to export it)

Latency does not depend on the weights' values, so the paper's configuration (ResNet-18 on
224 px RGB faces) and the default one (48 px grey, small stem) can be timed without training.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from avemo_edge.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from avemo_edge.doctor import default_model_path
from avemo_edge.errors import AvemoError
from avemo_edge.model import PAPER_DIMS, AVEmotionNet, ModelDims, count_parameters

RANDOM_MODELS = {"paper": PAPER_DIMS, "small": ModelDims()}  # name -> architecture


@dataclass
class ModelSource:
    """The checkpoint every row runs (exported rows: the export of it that the user names)."""

    spec: str  # what the user asked for: a path, 'default', 'paper' or 'small'
    path: Path
    checkpoint: Checkpoint
    weights: str  # 'trained' or 'random (...)'

    def describe(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "path": str(self.path),
            "sha256": self.checkpoint.sha256,
            "weights": self.weights,
            "file_mb": round(self.path.stat().st_size / 1e6, 2),
            "parameters": count_parameters(self.checkpoint.build()),
            "dims": dict(self.checkpoint.dims.__dict__),
        }


def write_random_checkpoint(arch: str, path: str | Path, seed: int = 0) -> Path:
    """A random-weight checkpoint of architecture 'paper' or 'small' (the same file for the same seed)."""
    if arch not in RANDOM_MODELS:
        raise AvemoError(f"unknown architecture {arch!r}; choose one of {', '.join(RANDOM_MODELS)}")
    with torch.random.fork_rng():  # leave the caller's random state alone
        torch.manual_seed(seed)
        model = AVEmotionNet(RANDOM_MODELS[arch]).eval()
    save_checkpoint(path, model, meta={"weights": "random", "architecture": arch, "seed": seed})
    return Path(path)


def resolve_model(spec: str, workdir: Path) -> ModelSource:
    """'default' (the shipped model), 'paper' / 'small' (random weights, written into `workdir`) or a checkpoint."""
    if spec in RANDOM_MODELS:
        path = write_random_checkpoint(spec, workdir / f"random-{spec}.pt")
        return ModelSource(spec, path, load_checkpoint(path), f"random ({spec} architecture)")
    if spec == "default":
        path = default_model_path()
        if not path.is_file():
            raise AvemoError(
                f"the default model {path} is not installed; pass --model PATH for a checkpoint, or --model small / "
                "--model paper for random weights of the default or the paper's architecture"
            )
    else:
        path = Path(spec)
    ckpt = load_checkpoint(path)
    weights = "random" if ckpt.meta.get("weights") == "random" else "trained"
    return ModelSource(spec, path, ckpt, weights)


def main() -> None:
    ap = argparse.ArgumentParser(description="Write a random-weight checkpoint of one architecture.")
    ap.add_argument("arch", choices=sorted(RANDOM_MODELS))
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    path = write_random_checkpoint(args.arch, args.out, args.seed)
    print(f"{path}: random {args.arch} architecture, seed {args.seed}, {path.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
