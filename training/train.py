"""`avemo-edge train`: the paper's recipe (section 3.4) on 2 CPU cores, resumable.

Stages, each usable alone:
- visual: the ResNet-18 branch (with the gate and head, audio masked) on face-expression images;
- audio: the CNN + LSTM branch (faces masked) on RAVDESS speech, streaming, unidirectional;
- joint: both, started from the two stages' checkpoints, on RAVDESS audio-video clips when the
  cache has them, otherwise on emotion-matched pairs (audio of class c + a face image of class c).

Loss per clip: step_ce_weight * cross-entropy at every 100 ms step (the stream must be right at
every step, not only at the end) + clip_ce_weight * cross-entropy after the last step (the
paper's clip loss) + tcs_weight * L_TCS over consecutive steps. Adam (1e-4; 5e-5 for the visual
branch), weight decay on conv/linear/LSTM weight matrices, ReduceLROnPlateau on the validation
loss, early stopping keeping the best, gradient clipping. Every epoch writes `last_state.pt`
(resume), `best.pt` when validation improves (a self-describing checkpoint), and a CSV/JSON log.
"""

from __future__ import annotations

import csv
import json
import math
import random
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from avemo_edge.checkpoint import load_checkpoint, save_checkpoint
from avemo_edge.errors import AvemoError
from avemo_edge.model import AVEmotionNet, ModelDims
from avemo_edge.smoothing import tcs_loss

from .config import TrainConfig
from .data import ClipDataset, FaceCache, ImageDataset, RavdessCache, check_face_fit, collate_clips, mel_statistics

PAIRS_NOTE = (
    "joint data are emotion-matched pairs (RAVDESS audio + a FER+ face image of the same class), not real videos"
)


class TrainError(AvemoError):
    """A training run that cannot start or resume."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(cfg: TrainConfig) -> AVEmotionNet:
    dims = ModelDims(
        face_size=cfg.face_size, face_channels=cfg.face_channels, face_stem=cfg.face_stem,
        face_width=cfg.face_width, face_mirror=cfg.face_mirror, audio_norm_s=cfg.audio_norm_s,
        audio_norm=cfg.audio_norm, audio_pool_s=cfg.audio_pool_s, bidirectional=cfg.bidirectional, dropout=cfg.dropout,
    )  # fmt: skip
    model = AVEmotionNet(dims)
    if cfg.init:
        ckpt = load_checkpoint(cfg.init)
        if ckpt.dims != dims:
            raise TrainError(f"{cfg.init} has dimensions {ckpt.dims}, this run builds {dims}")
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt.state_dict.items()})
    for path, prefix in ((cfg.init_visual, "visual."), (cfg.init_audio, "audio.")):
        if path:
            ckpt = load_checkpoint(path)
            if ckpt.dims.face_size != dims.face_size or ckpt.dims.face_channels != dims.face_channels:
                raise TrainError(f"{path} has {ckpt.dims.face_size} px faces; this run trains {dims.face_size} px")
            theirs, ours = (ckpt.dims.face_stem, ckpt.dims.face_width), (dims.face_stem, dims.face_width)
            if prefix == "visual." and theirs != ours:
                raise TrainError(
                    f"{path} has a {theirs[0]} stem at width {theirs[1]}; this run builds {ours[0]} at width {ours[1]} "
                    "(set face_stem and face_width to match)"
                )
            if prefix == "audio." and ckpt.dims.audio_pool_s != dims.audio_pool_s:
                have, want = ckpt.dims.audio_pool_s, dims.audio_pool_s
                raise TrainError(f"{path} has audio_pool_s={have}; this run builds audio_pool_s={want}")
            part = {k[len(prefix) :]: v.float() for k, v in ckpt.state_dict.items() if k.startswith(prefix)}
            getattr(model, prefix[:-1]).load_state_dict(part)
    if cfg.audio_emb_scale != 1.0:
        if cfg.audio_emb_scale <= 0:
            raise TrainError(f"audio_emb_scale must be positive, not {cfg.audio_emb_scale}")
        with torch.no_grad():
            model.audio.proj.weight.mul_(cfg.audio_emb_scale)
            model.audio.proj.bias.mul_(cfg.audio_emb_scale)
    parts = [p.strip() for p in cfg.freeze.split(",") if p.strip()]
    for part in parts:
        if part not in ("visual", "audio"):
            raise TrainError(f"freeze takes 'visual', 'audio' or both, not {part!r}")
        branch = getattr(model, part)
        branch.requires_grad_(False)
        # A frozen branch also keeps its batch-norm statistics: see Run.train_epoch.
    return model


def param_groups(model: AVEmotionNet, cfg: TrainConfig) -> list[dict[str, Any]]:
    """A learning rate per branch (visual, audio, the rest); weight decay only on weight matrices and kernels."""
    lrs = {"visual": cfg.lr_visual, "audio": cfg.lr_audio or cfg.lr, "rest": cfg.lr}
    groups: dict[tuple[str, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        branch = name.split(".", 1)[0] if name.startswith(("visual.", "audio.")) else "rest"
        groups.setdefault((branch, p.ndim >= 2), []).append(p)
    return [
        {
            "params": ps,
            "lr": lrs[branch],
            "weight_decay": cfg.weight_decay if decay else 0.0,
            "branch": branch,
        }  # fmt: skip
        for (branch, decay), ps in groups.items()
    ]


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, dict):
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    return tuple(v.to(device) for v in batch)


def _ce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, smoothing: float) -> torch.Tensor:
    """Cross-entropy on class indices or on distributions (soft labels), weighted per class."""
    if target.is_floating_point():  # (N, K) distributions: weight each sample by its target's class weight
        logp = logits.log_softmax(-1)
        if smoothing:
            target = target * (1 - smoothing) + smoothing / target.shape[-1]
        loss = -(target * logp).sum(-1)
        w = target @ weight if weight is not None else torch.ones_like(loss)
        return (loss * w).sum() / w.sum()
    return F.cross_entropy(logits, target, weight=weight, label_smoothing=smoothing)


def clip_forward(
    model: AVEmotionNet, batch: dict, cfg: TrainConfig, weight: torch.Tensor | None = None, train: bool = True
) -> dict[str, torch.Tensor]:
    valid = batch["valid"]
    fmask, amask = batch["face_mask"] & valid, batch["audio_mask"] & valid
    with torch.autocast(valid.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
        logits, alpha, beta, _ = model(batch["faces"], batch["audio"], fmask, amask)
    logits = logits.float()
    active = valid & (fmask | amask)  # a step with neither modality teaches nothing
    labels = batch["labels"][:, None].expand_as(active)
    tcs = tcs_loss(logits.softmax(-1), active)
    last = active.cumsum(1).argmax(1)  # index of the last active step
    last_logits = logits[torch.arange(len(last)), last]
    taught = active
    if cfg.ce_from_onset:
        steps = torch.arange(active.shape[1], device=active.device)[None]
        taught = active & ((steps >= batch["onset"][:, None]) | ~amask)
    smoothing = cfg.label_smoothing if train else 0.0
    ce = cfg.step_ce_weight * _ce(logits[taught], labels[taught], weight, smoothing)
    if cfg.clip_ce_weight:
        ce = ce + cfg.clip_ce_weight * _ce(last_logits, batch["labels"], weight, smoothing)
    if cfg.pooled_ce_weight:
        w = taught.to(logits.dtype)[..., None]
        pooled = (logits * w).sum(1) / w.sum(1).clamp_min(1.0)  # (B, 7): mean logits of the taught steps
        ce = ce + cfg.pooled_ce_weight * _ce(pooled, batch["labels"], weight, smoothing)
    return {"loss": ce + cfg.tcs_weight * tcs, "ce": ce, "tcs": tcs, "logits": logits, "active": active,
            "last_logits": last_logits, "alpha": alpha, "beta": beta}  # fmt: skip


def image_forward(
    model: AVEmotionNet, batch: tuple, cfg: TrainConfig, weight: torch.Tensor | None = None, train: bool = True
) -> dict[str, torch.Tensor]:
    faces, labels = batch
    with torch.autocast(faces.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
        logits, *_ = model(faces[:, None], None)
    logits = logits[:, 0].float()
    ce = _ce(logits, labels, weight, cfg.label_smoothing if train else 0.0)
    return {"loss": ce, "ce": ce, "tcs": torch.zeros(()), "last_logits": logits}


class Run:
    """Data, model and optimiser of one stage, with its state on disk."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.notes: list[str] = list(cfg.notes)
        cache = Path(cfg.cache)
        if cfg.device.startswith("cuda") and not torch.cuda.is_available():
            raise TrainError(f"device {cfg.device!r} was asked for but torch sees no CUDA device")
        self.device = torch.device(cfg.device)
        self.model = build_model(cfg)
        gen = torch.Generator().manual_seed(cfg.seed)
        if cfg.stage == "visual":
            faces = FaceCache(cache / "faces")
            check_face_fit(faces.index["face"], cfg.face_size, cfg.face_channels, str(cache / "faces"))
            self.train_set = ImageDataset(faces, "train", cfg, train=True, seed=cfg.seed)
            self.val_set = ImageDataset(faces, "val", cfg, train=False)
            bs, collate = cfg.visual_batch_size, None
            self.forward = image_forward
            self.data_desc = f"{faces.index.get('source', cache / 'faces')} ({faces.index['format']})"
            train_labels = faces.labels[self.train_set.idx]
        else:
            rav = RavdessCache(cache / "ravdess")
            need = "audio" if cfg.stage == "audio" else "any"
            parts = rav.split(cfg.split, need)
            faces_from, face_cache = "none", None
            if cfg.stage == "joint":
                check_face_fit(rav.face, cfg.face_size, cfg.face_channels, str(cache / "ravdess"))
                if any(c["faces"] for c in parts["train"]):
                    faces_from = "clip"
                else:
                    faces_from, face_cache = "pairs", FaceCache(cache / "faces")
                    check_face_fit(face_cache.index["face"], cfg.face_size, cfg.face_channels, str(cache / "faces"))
                    parts = {k: [c for c in v if c["audio"]] for k, v in parts.items()}
                    self.notes.append(PAIRS_NOTE)
            if not (cfg.init_audio or cfg.init):
                audio_clips = [c for c in parts["train"] if c["audio"]]
                mean, std = mel_statistics(rav, audio_clips, cfg.audio_norm_s, cfg.audio_norm)
                self.model.audio.mel_mean.copy_(mean)
                self.model.audio.mel_std.copy_(std)
            kw = {"faces_from": faces_from, "face_cache": face_cache, "use_audio": True}
            self.train_set = ClipDataset(rav, parts["train"], cfg, train=True, seed=cfg.seed, face_split="train", **kw)
            self.val_set = ClipDataset(rav, parts["val"], cfg, train=False, seed=cfg.seed, face_split="val", **kw)
            bs, collate = cfg.batch_size, collate_clips
            self.forward = clip_forward
            self.data_desc = f"RAVDESS {cfg.split} split, {len(parts['train'])}/{len(parts['val'])} train/val clips"
            train_labels = np.array([c["label"] for c in parts["train"]])
        self.weight = None
        if cfg.class_weight != "none":
            freq = np.bincount(train_labels, minlength=self.model.dims.n_classes).astype(np.float64)
            w = np.maximum(freq, 1.0) ** (-0.5 if cfg.class_weight == "sqrt" else -1.0)
            self.weight = torch.tensor(w / (w * freq).sum() * freq.sum(), dtype=torch.float32, device=self.device)
        self.aux_loader: DataLoader | None = None
        if cfg.stage == "joint" and cfg.face_aux_weight > 0:
            aux_faces = FaceCache(cache / "faces")
            check_face_fit(aux_faces.index["face"], cfg.face_size, cfg.face_channels, str(cache / "faces"))
            self.aux_set = ImageDataset(aux_faces, "train", cfg, train=True, seed=cfg.seed)
            aux_gen = torch.Generator().manual_seed(cfg.seed + 1)
            self.aux_loader = DataLoader(self.aux_set, cfg.visual_batch_size, shuffle=True, generator=aux_gen)
        self.model.to(self.device)
        # each epoch's augmentation is seeded by (seed, epoch, item), so workers change no number
        loader_kw = {"num_workers": cfg.workers, "pin_memory": self.device.type == "cuda"}
        self.train_loader = DataLoader(self.train_set, bs, shuffle=True, collate_fn=collate, generator=gen, **loader_kw)
        self.val_loader = DataLoader(self.val_set, bs, shuffle=False, collate_fn=collate)
        groups = param_groups(self.model, cfg)
        if cfg.optimizer == "sgd":
            self.opt = torch.optim.SGD(groups, momentum=0.9, nesterov=True)
        else:
            self.opt = (torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam)(groups)
        if cfg.schedule == "cosine":  # stepped every batch
            per_epoch = min(cfg.limit_batches or len(self.train_loader), len(self.train_loader))
            total, warm = max(cfg.max_epochs * per_epoch, 1), cfg.warmup_epochs * per_epoch
            floor = cfg.min_lr / cfg.lr

            def factor(i: int) -> float:
                if i < warm:
                    return (i + 1) / warm
                return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min((i - warm) / max(total - warm, 1), 1.0)))

            self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, factor)
        else:
            self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.opt, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_lr=cfg.min_lr
            )
        self.epoch, self.best, self.bad_epochs, self.log = 0, float("inf"), 0, []

    # --- state on disk ----------------------------------------------------------------------
    def save_state(self) -> None:
        state = {
            "config": asdict(self.cfg), "epoch": self.epoch, "best": self.best, "bad_epochs": self.bad_epochs,
            "model": self.model.state_dict(), "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
            "log": json.dumps(self.log), "torch_rng": torch.get_rng_state(),
        }  # fmt: skip
        tmp = self.out / "last_state.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(self.out / "last_state.pt")

    def load_state(self) -> None:
        path = self.out / "last_state.pt"
        if not path.exists():
            raise TrainError(f"nothing to resume in {self.out} (no last_state.pt)")
        state = torch.load(path, weights_only=True)
        # machinery, not the recipe: may change on resume
        free = ("max_epochs", "limit_batches", "threads", "workers", "device")
        saved = {k: v for k, v in state["config"].items() if k not in free}
        now = {k: v for k, v in asdict(self.cfg).items() if k not in free}
        defaults = asdict(TrainConfig())  # a key added since the run was saved had its default then
        diff = sorted(k for k in now if saved.get(k, defaults[k]) != now[k])
        if diff:
            raise TrainError(f"cannot resume {self.out}: the configuration differs in {diff}")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.epoch, self.best, self.bad_epochs = state["epoch"], state["best"], state["bad_epochs"]
        self.log = json.loads(state["log"])
        torch.set_rng_state(state["torch_rng"])

    def write_log(self) -> None:
        (self.out / "log.json").write_text(json.dumps(self.log, indent=1))
        with open(self.out / "log.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(self.log[0]))
            w.writeheader()
            w.writerows(self.log)

    # --- epochs -----------------------------------------------------------------------------
    def _set_epoch(self) -> None:
        self.train_set.epoch = self.epoch
        if self.aux_loader is not None:
            self.aux_set.epoch = self.epoch

    def _aux_batches(self) -> Iterator[Any]:
        """FER+ batches for the joint stage's face-only loss, as many as needed (the loader restarts)."""
        while self.aux_loader is not None:
            yield from self.aux_loader

    def train_epoch(self, progress: Any) -> dict[str, float]:
        self.model.train()
        for part in ("visual", "audio"):
            branch = getattr(self.model, part)
            if not any(p.requires_grad for p in branch.parameters()):
                branch.eval()  # frozen: batch norm uses its running statistics and leaves them alone
        self._set_epoch()
        sums, n = {"loss": 0.0, "ce": 0.0, "tcs": 0.0}, 0
        total = (
            len(self.train_loader)
            if not self.cfg.limit_batches
            else min(self.cfg.limit_batches, len(self.train_loader))
        )
        task = progress(f"epoch {self.epoch + 1}", total)
        aux = self._aux_batches()
        for i, batch in enumerate(self.train_loader):
            if self.cfg.limit_batches and i >= self.cfg.limit_batches:
                break
            out = self.forward(self.model, to_device(batch, self.device), self.cfg, self.weight)
            if self.aux_loader is not None:
                face_only = image_forward(self.model, to_device(next(aux), self.device), self.cfg)
                out["loss"] = out["loss"] + self.cfg.face_aux_weight * face_only["loss"]
            self.opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            self.opt.step()
            if self.cfg.schedule == "cosine":
                self.sched.step()
            for k in sums:
                sums[k] += out[k].item()
            n += 1
            task(f"loss {sums['loss'] / n:.3f}")
        return {k: v / max(n, 1) for k, v in sums.items()}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        self.model.eval()
        sums, n, correct, count = {"loss": 0.0, "ce": 0.0, "tcs": 0.0}, 0, 0, 0
        for i, batch in enumerate(self.val_loader):
            if self.cfg.limit_batches and i >= self.cfg.limit_batches:
                break
            batch = to_device(batch, self.device)
            out = self.forward(self.model, batch, self.cfg, None, train=False)
            labels = batch["labels"] if isinstance(batch, dict) else batch[1]
            correct += int((out["last_logits"].argmax(-1) == labels).sum())
            count += len(labels)
            for k in sums:
                sums[k] += float(out[k])
            n += 1
        res = {k: v / max(n, 1) for k, v in sums.items()}
        res["acc"] = correct / max(count, 1)
        return res

    def _lr(self, branch: str) -> float | None:
        """The current learning rate of a branch (visual, audio) or of the rest (None: nothing of it trains)."""
        return next((g["lr"] for g in self.opt.param_groups if g.get("branch") == branch), None)

    def meta(self, val: dict[str, float]) -> dict[str, Any]:
        return {
            "stage": self.cfg.stage, "epoch": self.epoch, "val": val, "config": asdict(self.cfg),
            "data": self.data_desc, "notes": self.notes, "torch": str(torch.__version__),
        }  # fmt: skip

    def fit(self, progress: Any, echo: Any = print) -> Path:
        cfg = self.cfg
        while self.epoch < cfg.max_epochs and self.bad_epochs < cfg.patience:
            t0 = time.monotonic()
            tr = self.train_epoch(progress)
            va = self.validate()
            self.epoch += 1
            if self.cfg.schedule == "plateau":
                self.sched.step(va["loss"])
            improved = va["loss"] < self.best - 1e-6
            if improved:
                self.best, self.bad_epochs = va["loss"], 0
                save_checkpoint(self.out / "best.pt", self.model, self.meta(va))
            else:
                self.bad_epochs += 1
            row = {"epoch": self.epoch, "seconds": round(time.monotonic() - t0, 1),
                   "lr": self._lr("rest"), "lr_visual": self._lr("visual"), "lr_audio": self._lr("audio"),
                   **{f"train_{k}": round(v, 5) for k, v in tr.items()},
                   **{f"val_{k}": round(v, 5) for k, v in va.items()}, "best": improved}  # fmt: skip
            self.log.append(row)
            self.write_log()
            self.save_state()
            echo(
                f"epoch {self.epoch}: train loss {tr['loss']:.4f} | val loss {va['loss']:.4f} acc {va['acc']:.3f}"
                f"{' *' if improved else ''} | {row['seconds']:.0f} s"
            )
        why = "early stop" if self.bad_epochs >= cfg.patience else "max epochs"
        echo(f"done ({why}) after {self.epoch} epochs; best val loss {self.best:.4f} -> {self.out / 'best.pt'}")
        return self.out / "best.pt"


def train(cfg: TrainConfig, resume: bool = False, progress: Any = None, echo: Any = print) -> Path:
    torch.set_num_threads(cfg.threads)
    torch.backends.cudnn.benchmark = cfg.device.startswith("cuda")  # fixed face size: pick the fastest kernels
    seed_everything(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if not resume and (out / "last_state.pt").exists():
        raise TrainError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    run = Run(cfg)
    if resume:
        run.load_state()
        echo(f"resuming {out} after epoch {run.epoch} (best val loss {run.best:.4f})")
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    for note in run.notes:
        echo(f"note: {note}")
    return run.fit(progress or (lambda desc, total: lambda msg="": None), echo)
