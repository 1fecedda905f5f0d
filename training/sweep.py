"""Several training recipes side by side on one GPU, inside a time budget; and the face cache packed
small enough to travel to that GPU's machine.

A lent GPU machine here has minutes, not hours, and takes at most 64 MiB of files per call, so:

    python -m training.sweep pack cache/faces gpu/faces.npz          # FER+ train + val as JPEG q90, ~40 MB
    python -m training.sweep unpack gpu/faces.npz cache/faces        # on the GPU machine
    python -m training.sweep run --budget-s 420 --out runs/sweep \\
        --common stage=visual --common device=cuda ... \\
        --run w32s:face_width=32,face_stem=small --run w48f:face_width=48,face_stem=full

`run` times a few training steps of each recipe on the device, gives every recipe the same
number of epochs so that all of them, run at once, end inside the budget (the cosine schedule
needs its length up front), trains them as parallel `avemo-edge train` processes, stops any that
outrun the budget (its best.pt stays), and writes each run's best checkpoint in fp16 under
`--export`, with every run's log in one `sweep.json` (a GPU machine returns at most 8 files).
JPEG at quality 90 loses a little detail of the training faces; validation on the GPU machine
sees the same JPEG faces, and the test scores are made here on the lossless cache.
A recipe's probe may overstate its time when recipes share the device: epochs are planned from
the sum of the recipes' times alone (session 11: 4 recipes planned 19 epochs for 450 s and ended
in 245 s), so pass --min-epochs to set the count once one sweep has shown the real pace.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from avemo_edge.checkpoint import load_checkpoint, save_checkpoint
from avemo_edge.errors import AvemoError

from .config import TrainConfig, load_config
from .data import FaceCache, ImageDataset
from .train import build_model, image_forward


class SweepError(AvemoError):
    """A pack, unpack or sweep that cannot go on."""


def pack_faces(
    folder: str | Path, out: str | Path, quality: int = 90, splits: tuple[str, ...] = ("train", "val")
) -> int:
    """Write the images of `splits` of a prepared face cache as JPEG bytes; returns the file's size."""
    cache = FaceCache(folder)
    if cache.images.shape[1] != 1:
        raise SweepError(f"{folder} holds {cache.images.shape[1]}-channel faces; pack takes grey faces")
    keep = np.flatnonzero(np.isin(cache.splits, [cache.SPLITS[s] for s in splits]))
    blobs = [cv2.imencode(".jpg", cache.images[j, 0], [cv2.IMWRITE_JPEG_QUALITY, quality])[1] for j in keep]
    lengths = np.array([len(b) for b in blobs], dtype=np.int32)
    arrays = {
        "jpeg": np.concatenate(blobs), "lengths": lengths, "labels": cache.labels[keep], "splits": cache.splits[keep],
        "index": np.frombuffer(json.dumps(cache.index).encode(), dtype=np.uint8),
    }  # fmt: skip
    if cache.votes is not None:
        arrays["votes"] = cache.votes[keep]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **arrays)
    return out.stat().st_size


def unpack_faces(packed: str | Path, folder: str | Path) -> int:
    """Write a packed face cache back as the folder `FaceCache` reads; returns the number of faces."""
    index_file = Path(folder) / "index.json"
    if index_file.exists() and "packed" not in json.loads(index_file.read_text()):
        # session 11 lost its lossless cache so: a dry run of the GPU script unpacked over it
        raise SweepError(f"{folder} holds a prepared (lossless) face cache; unpack into another folder")
    z = dict(np.load(packed))  # read each array once (an NpzFile reads it again at every lookup)
    jpeg, lengths = z["jpeg"], z["lengths"]
    ends = np.cumsum(lengths)
    images = np.stack([cv2.imdecode(jpeg[e - n : e], cv2.IMREAD_GRAYSCALE) for e, n in zip(ends, lengths, strict=True)])
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "images.npy", images[:, None])
    np.save(folder / "labels.npy", z["labels"])
    np.save(folder / "splits.npy", z["splits"])
    if "votes" in z:
        np.save(folder / "votes.npy", z["votes"])
    index = json.loads(z["index"].tobytes())
    index["packed"] = f"{Path(packed).name}: JPEG faces of splits {sorted(set(z['splits'].tolist()))}"
    (folder / "index.json").write_text(json.dumps(index))
    return len(images)


def epoch_seconds(cfg: TrainConfig, faces: FaceCache, steps: int = 12) -> float:
    """Seconds one epoch of `cfg` takes: the slower of its device (`steps` timed training steps on
    random faces) and its loader (augmenting 256 training faces, shared by `cfg.workers` processes)."""
    data = ImageDataset(faces, "train", cfg, train=True)
    t0 = time.perf_counter()
    for i in range(min(256, len(data))):
        data[i]
    n_train = len(data)
    loader_s = (time.perf_counter() - t0) / min(256, n_train) * n_train / max(cfg.workers, 1)
    device = torch.device(cfg.device)
    model = build_model(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    b = cfg.visual_batch_size
    faces = torch.rand(b, cfg.face_channels, cfg.face_size, cfg.face_size, device=device)
    labels = torch.randint(0, model.dims.n_classes, (b,), device=device)

    def step() -> None:
        out = image_forward(model, (faces, labels), cfg)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()

    for _ in range(3):
        step()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    per_step = (time.perf_counter() - t0) / steps
    device_s = per_step * math.ceil(n_train / b) * 1.1  # + validation, about a tenth as many faces, forward only
    return max(device_s, loader_s)


def plan_epochs(seconds: list[float], budget_s: float, lo: int, hi: int, share: float = 0.8) -> int:
    """Epochs for every run so that all of them, sharing the device, end inside `share` of the budget."""
    return int(max(min(lo, hi), min(hi, math.floor(budget_s * share / max(sum(seconds), 1e-9)))))


def _parse_run(spec: str) -> tuple[str, list[str]]:
    name, _, keys = spec.partition(":")
    if not name.replace("-", "").replace("_", "").isalnum():
        raise SweepError(f"run {spec!r}: a run is NAME:key=value,key=value with a name of letters and digits")
    return name, [k for k in keys.split(",") if k]


def sweep(
    runs: list[str], common: list[str], out: str | Path, budget_s: float, export: str | Path | None = None,
    min_epochs: int = 5, max_epochs: int = 100, echo: Callable[[str], Any] = print,
) -> dict[str, dict]:  # fmt: skip
    """Train `runs` (NAME:key=value,...) at once on top of `common` keys; see the module docstring."""
    out = Path(out)
    t_start = time.monotonic()
    parsed = [_parse_run(r) for r in runs]
    cfgs = {name: load_config(None, common + keys) for name, keys in parsed}
    stage = {c.stage for c in cfgs.values()}
    if stage != {"visual"}:
        raise SweepError(f"sweep trains visual-stage recipes (the probe times face batches), not {sorted(stage)}")
    faces = FaceCache(Path(next(iter(cfgs.values())).cache) / "faces")
    secs = {name: epoch_seconds(c, faces) for name, c in cfgs.items()}
    left = budget_s - (time.monotonic() - t_start)
    epochs = plan_epochs(list(secs.values()), left, min_epochs, max_epochs)
    echo(f"probe: {', '.join(f'{k} {v:.1f} s/epoch alone' for k, v in secs.items())}; {epochs} epochs each")
    procs = {}
    for name, keys in parsed:
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        sets = [a for kv in [*common, *keys, f"max_epochs={epochs}"] for a in ("--set", kv)]
        cmd = [sys.executable, "-m", "avemo_edge.cli", "train", cfgs[name].stage, "--out", str(folder), *sets]
        log = open(folder / "train.log", "w")  # noqa: SIM115 - closed below, when the process ends
        procs[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log)
    deadline = t_start + budget_s
    while any(p.poll() is None for p, _ in procs.values()) and time.monotonic() < deadline:
        time.sleep(2)
    results = {}
    for name, (p, log) in procs.items():
        stopped = p.poll() is None
        if stopped:
            p.terminate()
            p.wait(30)
        log.close()
        best = out / name / "best.pt"
        row = {"epochs_planned": epochs, "stopped_at_budget": stopped, "returncode": p.returncode,
               "probe_s_per_epoch": round(secs[name], 2)}  # fmt: skip
        logf = out / name / "log.json"
        if logf.exists():
            log_rows = json.loads(logf.read_text())
            row["epochs_done"] = len(log_rows)
            row["best_val"] = min(log_rows, key=lambda r: r["val_loss"]) if log_rows else None
            row["log"] = log_rows
        if export and best.exists():
            dest = Path(export)
            dest.mkdir(parents=True, exist_ok=True)
            ckpt = load_checkpoint(best)
            save_checkpoint(dest / f"{name}-fp16.pt", ckpt.build(), ckpt.meta, half=True)
        results[name] = row
        echo(f"{name}: {json.dumps({k: v for k, v in row.items() if k != 'log'})}")
    if export:
        (Path(export) / "sweep.json").write_text(json.dumps(results, indent=1))
    return results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m training.sweep", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="a prepared face cache -> one .npz of JPEG faces")
    p.add_argument("folder")
    p.add_argument("out")
    p.add_argument("--quality", type=int, default=90)
    p.add_argument("--splits", default="train,val")
    u = sub.add_parser("unpack", help="a packed .npz -> a face cache folder")
    u.add_argument("packed")
    u.add_argument("folder")
    r = sub.add_parser("run", help="train recipes at once inside a time budget")
    r.add_argument("--run", action="append", required=True, help="NAME:key=value,key=value (repeatable)")
    r.add_argument("--common", action="append", default=[], help="key=value for every run (repeatable)")
    r.add_argument("--out", required=True)
    r.add_argument("--budget-s", type=float, required=True)
    r.add_argument("--export", help="folder for each run's best checkpoint in fp16, and sweep.json with the logs")
    r.add_argument("--min-epochs", type=int, default=5)
    r.add_argument("--max-epochs", type=int, default=100)
    a = ap.parse_args(argv)
    try:
        if a.cmd == "pack":
            size = pack_faces(a.folder, a.out, a.quality, tuple(a.splits.split(",")))
            print(f"{a.out}: {size / 2**20:.1f} MiB")
        elif a.cmd == "unpack":
            print(f"{a.folder}: {unpack_faces(a.packed, a.folder)} faces")
        else:
            sweep(a.run, a.common, a.out, a.budget_s, a.export, a.min_epochs, a.max_epochs)
    except AvemoError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
