"""`avemo-edge evaluate`: the paper's report for a checkpoint, written to a folder.

Clips are streamed at 10 Hz through the network (the whole-clip forward, which equals stepping
with the state carried: a tested property of the model), the TCS filter is applied as on the
device, and the clip's prediction is what the device shows at the clip's last step.

Written: metrics.json, report.md (Table 1 form, ablations, stability, failure cases) and
figures: confusion matrices (counts, row-normalised), one-vs-all ROC with AUC, radar of
per-class F1, training curves, gate distributions per class.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avemo_edge.audio import slice_level_dbfs
from avemo_edge.checkpoint import load_checkpoint
from avemo_edge.config import RecognitionConfig
from avemo_edge.model import EMOTIONS, AVEmotionNet
from avemo_edge.smoothing import (
    TCS_ALPHA,
    TCS_HOLD_MARGIN,
    TCS_STEP_SECONDS,
    flips_per_minute,
    probability_jitter,
    shown_sequence,
    switch_latency,
)

from .config import TrainConfig
from .data import ClipDataset, FaceCache, ImageDataset, RavdessCache, collate_clips
from .train import PAIRS_NOTE


@dataclass
class Streams:
    """Per-clip streams: raw probabilities (T, 7), gates (T,), label, key."""

    probs: list[np.ndarray]
    alpha: list[np.ndarray]
    beta: list[np.ndarray]
    labels: np.ndarray
    keys: list[str]


@torch.no_grad()
def run_clips(model: AVEmotionNet, ds: ClipDataset, mask_faces: bool = False, mask_audio: bool = False) -> Streams:
    probs, alphas, betas, labels, keys = [], [], [], [], []
    for i in range(0, len(ds), 16):
        batch = collate_clips([ds[j] for j in range(i, min(i + 16, len(ds)))])
        fm = batch["face_mask"] & batch["valid"] & (not mask_faces)
        am = batch["audio_mask"] & batch["valid"] & (not mask_audio)
        faces = None if mask_faces else batch["faces"]
        audio = None if mask_audio else batch["audio"]
        if faces is None and audio is None:
            raise ValueError("masking both modalities leaves nothing to evaluate")
        logits, alpha, beta, _ = model(faces, audio, fm, am)
        p = logits.softmax(-1).numpy()
        for b in range(len(batch["keys"])):
            n = int(batch["valid"][b].sum())
            probs.append(p[b, :n])
            alphas.append(alpha[b, :n].numpy())
            betas.append(beta[b, :n].numpy())
        labels += batch["labels"].tolist()
        keys += batch["keys"]
    return Streams(probs, alphas, betas, np.array(labels), keys)


@dataclass(frozen=True)
class Smoothing:
    """How a stream is shown: the TCS filter coefficient and the label hold margin."""

    alpha: float
    margin: float = 0.0

    def view(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return shown_sequence(p, self.alpha, self.margin)


RAW = Smoothing(0.0, 0.0)
PAPER = Smoothing(TCS_ALPHA, 0.0)


View = tuple[np.ndarray, np.ndarray]  # a stream as shown: filtered probabilities (T, 7), labels (T,)


def show(streams: Streams, sm: Smoothing) -> list[View]:
    """Every clip's stream as the device with smoothing `sm` shows it (computed once, used by all metrics)."""
    return [sm.view(p) for p in streams.probs]


def clip_scores(views: list[View]) -> tuple[np.ndarray, np.ndarray]:
    """(N, 7) probabilities and (N,) labels that each clip's stream shows at its last step."""
    return np.stack([q[-1] for q, _ in views]), np.array([lab[-1] for _, lab in views])


def classification(y: np.ndarray, scores: np.ndarray, pred: np.ndarray | None = None) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score, roc_auc_score

    pred = scores.argmax(1) if pred is None else pred
    labels = list(range(len(EMOTIONS)))
    present = sorted(set(y.tolist()))
    out = {
        "n": int(len(y)),
        "accuracy": float(accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, labels=present, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y, pred, labels=present, average="weighted", zero_division=0)),
        "per_class": classification_report(
            y, pred, labels=labels, target_names=list(EMOTIONS), output_dict=True, zero_division=0
        ),
        "confusion": confusion_matrix(y, pred, labels=labels).tolist(),
    }
    if len(present) == len(labels):
        out["auc_per_class"] = [float(roc_auc_score(y == c, scores[:, c])) for c in labels]
        out["macro_auc"] = float(np.mean(out["auc_per_class"]))
    return out


def stability(views: list[View]) -> dict[str, float]:
    flips, jitter = [], []
    for q, shown in views:
        flips.append(flips_per_minute(shown))
        jitter.append(probability_jitter(q))
    return {"flips_per_min": float(np.mean(flips)), "jitter": float(np.mean(jitter))}


def speech_onset(item: Any, threshold_dbfs: float = RecognitionConfig.speech_threshold_dbfs) -> int:
    """The first step of a clip whose audio is at least as loud as the daemon's speech threshold.

    A clip without audio (or silent throughout) has its onset at step 0: its face shows the
    emotion from the first step.
    """
    if item.audio is None:
        return 0
    for t in range(len(item.audio_mask)):
        if bool(item.audio_mask[t]) and slice_level_dbfs(item.audio[t]) >= threshold_dbfs:
            return t
    return 0


@torch.no_grad()
def joined_streams(model: AVEmotionNet, ds: ClipDataset, n_joins: int, seed: int = 0) -> list[tuple]:
    """Streams that join two test clips of different emotions (state carried across the join).

    Returns (probabilities (T, 7), join step, speech-onset step, new label) per stream.
    """
    rng = np.random.default_rng(seed)
    labels = np.array([c["label"] for c in ds.clips])
    joins = []
    for _ in range(n_joins):
        i = int(rng.integers(len(ds)))
        j = int(rng.choice(np.flatnonzero(labels != labels[i])))
        a, b = ds[i], ds[j]
        batch = collate_clips([a])
        la, _, _, state = model(batch["faces"], batch["audio"], batch["face_mask"], batch["audio_mask"])
        batch = collate_clips([b])
        lb, _, _, _ = model(batch["faces"], batch["audio"], batch["face_mask"], batch["audio_mask"], state)
        p = torch.cat([la[0], lb[0]]).softmax(-1).numpy()
        n = len(a.face_mask)
        joins.append((p, n, n + speech_onset(b), b.label))
    return joins


def switch_latencies(joins: list[tuple], sm: Smoothing) -> dict[str, Any]:
    """Switch latency from the join and from the new clip's speech onset (RAVDESS clips open
    with up to a second of silence, during which the audio carries no sign of the new emotion)."""
    from_join, from_onset = [], []
    for p, join, onset, new in joins:
        _, shown = sm.view(p)
        lat = switch_latency(shown, join, new)
        from_join.append(lat)
        from_onset.append(max(0.0, lat - (onset - join) * TCS_STEP_SECONDS))
    arr, arr2 = np.array(from_join), np.array(from_onset)
    finite, finite2 = arr[np.isfinite(arr)], arr2[np.isfinite(arr2)]
    return {
        "joins": len(joins),
        "median_s": float(np.median(finite)) if finite.size else float("inf"),
        "mean_s": float(finite.mean()) if finite.size else float("inf"),
        "median_from_onset_s": float(np.median(finite2)) if finite2.size else float("inf"),
        "never_switched": float(np.mean(~np.isfinite(arr))),
    }


# --- figures ------------------------------------------------------------------------------
def _plt():  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(cm: np.ndarray, path: Path, title: str) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    for ax, m, fmt, name in ((axes[0], cm, "d", "counts"), (axes[1], norm * 100, ".1f", "row-normalised %")):
        ax.imshow(m, cmap="Blues")
        for (r, c), v in np.ndenumerate(m):
            ax.text(
                c,
                r,
                format(v, fmt),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if v > m.max() / 2 else "black",
            )
        ax.set_xticks(range(len(EMOTIONS)), EMOTIONS, rotation=45, ha="right")
        ax.set_yticks(range(len(EMOTIONS)), EMOTIONS)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{title}: {name}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_roc(y: np.ndarray, scores: np.ndarray, path: Path) -> None:
    from sklearn.metrics import auc, roc_curve

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 6))
    for c, name in enumerate(EMOTIONS):
        if (y == c).any() and (y != c).any():
            fpr, tpr, _ = roc_curve(y == c, scores[:, c])
            ax.plot(fpr, tpr, label=f"{name} (AUC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("one-vs-all ROC")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_radar(f1: list[float], path: Path) -> None:
    plt = _plt()
    angles = np.linspace(0, 2 * np.pi, len(f1), endpoint=False).tolist()
    fig = plt.figure(figsize=(5.5, 5.5))
    ax = fig.add_subplot(polar=True)
    ax.plot(angles + angles[:1], f1 + f1[:1], "o-")
    ax.fill(angles + angles[:1], f1 + f1[:1], alpha=0.2)
    ax.set_xticks(angles, EMOTIONS)
    ax.set_ylim(0, 1)
    ax.set_title("per-class F1")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(log: list[dict], path: Path) -> None:
    plt = _plt()
    ep = [r["epoch"] for r in log]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].plot(ep, [r["train_loss"] for r in log], label="train")
    axes[0].plot(ep, [r["val_loss"] for r in log], label="validation")
    axes[0].set_title("loss")
    axes[1].plot(ep, [r["val_acc"] for r in log], label="validation clip accuracy")
    axes[1].set_title("accuracy")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_gates(streams: Streams, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 4))
    pos = np.arange(len(EMOTIONS))
    for offset, gate, name in ((-0.18, streams.alpha, "alpha (visual)"), (0.18, streams.beta, "beta (audio)")):
        data = [
            np.concatenate([g for g, y in zip(gate, streams.labels, strict=True) if y == c] or [np.zeros(1)])
            for c in pos
        ]
        ax.boxplot(data, positions=pos + offset, widths=0.3, showfliers=False, label=name,
                   patch_artist=True, boxprops={"facecolor": "C0" if offset < 0 else "C1", "alpha": 0.5})  # fmt: skip
    ax.set_xticks(pos, EMOTIONS)
    ax.set_ylim(0, 1)
    ax.set_title("gate values per step, by true class")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- the report ---------------------------------------------------------------------------
def table1(m: dict[str, Any]) -> str:
    rows = ["| Emotion | Precision | Recall | F1-score | Support |", "| --- | ---: | ---: | ---: | ---: |"]
    for name in (*EMOTIONS, "macro avg", "weighted avg"):
        r = m["per_class"][name]
        p, rc, f1 = (100 * r[k] for k in ("precision", "recall", "f1-score"))
        rows.append(f"| {name} | {p:.2f} | {rc:.2f} | {f1:.2f} | {int(r['support'])} |")
    rows.append(f"| accuracy | {100 * m['accuracy']:.2f} | | | {m['n']} |")
    return "\n".join(rows)


def clip_dataset(cfg: TrainConfig, stage: str, cache: Path, split: str, part: str) -> tuple[ClipDataset, list[str]]:
    """The RAVDESS clips of one part ('val' or 'test') of a split, as the checkpoint's stage sees them."""
    rav = RavdessCache(cache / "ravdess")
    parts = rav.split(split, "audio" if stage == "audio" else "any")
    faces_from, face_cache, notes = "none", None, []
    if stage == "joint":
        if any(c["faces"] for c in parts[part]):
            faces_from = "clip"
        else:
            faces_from, face_cache = "pairs", FaceCache(cache / "faces")
            parts = {k: [c for c in v if c["audio"]] for k, v in parts.items()}
            notes += [
                PAIRS_NOTE,
                f"{part} pairs: RAVDESS {part}-actor audio with FER+ *{part}* faces of the same class",
            ]
    ds = ClipDataset(rav, parts[part], cfg, train=False, faces_from=faces_from, face_cache=face_cache, face_split=part)
    return ds, notes


def eval_config(meta: dict[str, Any]) -> TrainConfig:
    """The checkpoint's training configuration without augmentation (keys since retired are ignored)."""
    known = {f.name for f in fields(TrainConfig)}
    kept = {k: v for k, v in meta.get("config", {}).items() if k in known}
    return TrainConfig(**{**kept, "augment": False, "modality_dropout": 0.0, "notes": []})


def evaluate(
    checkpoint: Path,
    cache: Path,
    out: Path,
    split: str | None = None,
    no_tcs_checkpoint: Path | None = None,
    n_joins: int = 200,
    command: str = "",
    smoothing: float | None = None,
    hold_margin: float = TCS_HOLD_MARGIN,
    threads: int = 2,
) -> dict[str, Any]:
    """Write the report for `checkpoint` to `out`; returns the metrics."""
    torch.set_num_threads(threads)
    ckpt = load_checkpoint(checkpoint)
    model = ckpt.build()
    stage = ckpt.meta.get("stage", "audio")
    cfg = eval_config(ckpt.meta)
    out.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {"checkpoint": str(checkpoint), "sha256": ckpt.sha256, "stage": stage, "command": command}
    notes = list(ckpt.meta.get("notes", []))
    if stage == "visual":
        faces = FaceCache(cache / "faces")
        ds = ImageDataset(faces, "test", cfg, train=False)
        with torch.no_grad():
            scores = np.concatenate(
                [model(torch.stack([ds[j][0] for j in range(i, min(i + 256, len(ds)))])[:, None], None)[0][:, 0]
                 .softmax(-1).numpy() for i in range(0, len(ds), 256)]
            )  # fmt: skip
        y = faces.labels[ds.idx]
        m = classification(y, scores)
        metrics.update({"data": f"face images, test split ({faces.index['format']})", "test": m})
        plot_confusion(np.array(m["confusion"]), out / "confusion.png", "test")
        plot_roc(y, scores, out / "roc.png")
    else:
        split = split or cfg.split
        ds, more = clip_dataset(cfg, stage, cache, split, "test")
        notes += [n for n in more if n not in notes]
        streams = run_clips(model, ds)
        y = streams.labels
        variants = {"TCS filter": PAPER, "no filter": RAW}
        device = Smoothing(TCS_ALPHA if smoothing is None else smoothing, hold_margin)
        if device != PAPER:
            variants = {f"TCS filter a={device.alpha:g} + label hold {device.margin:g}": device, **variants}
        loss_name = "TCS loss" if cfg.tcs_weight else "no TCS loss"
        device_name = next(iter(variants))  # the first variant is what the device shows

        def score(views: list[View], sm: Smoothing, joins_: list | None) -> dict[str, Any]:
            m = classification(y, *clip_scores(views))
            m["stability"] = stability(views)
            if joins_ is not None:
                m["switch"] = switch_latencies(joins_, sm)
            return m

        joins = joined_streams(model, ds, n_joins)
        shown = {name: show(streams, sm) for name, sm in variants.items()}
        ablations = {f"{loss_name} + {name}": score(shown[name], sm, joins) for name, sm in variants.items()}
        main = ablations[f"{loss_name} + {device_name}"]
        if no_tcs_checkpoint:
            other = load_checkpoint(no_tcs_checkpoint).build()
            s2, joins2 = run_clips(other, ds), joined_streams(other, ds, n_joins)
            for name, sm in variants.items():
                ablations[f"no TCS loss + {name}"] = score(show(s2, sm), sm, joins2)
        if stage == "joint":
            for name, kw in (("audio only", {"mask_faces": True}), ("visual only", {"mask_audio": True})):
                masked = show(run_clips(model, ds, **kw), device)
                ablations[f"{name} ({device_name})"] = score(masked, device, None)
        per_step_acc = float(
            np.mean(np.concatenate([p.argmax(1) == yy for p, yy in zip(streams.probs, y, strict=True)]))
        )
        metrics.update({"data": f"RAVDESS {split} split, test actors {sorted({c['actor'] for c in ds.clips})}, "
                                f"{len(ds)} clips", "test": main, "ablations": ablations,
                        "smoothing": {"alpha": device.alpha, "hold_margin": device.margin},
                        "per_step_accuracy_raw": per_step_acc})  # fmt: skip
        scores, pred = clip_scores(shown[device_name])
        plot_confusion(np.array(main["confusion"]), out / "confusion.png", "test (as shown on the device)")
        plot_roc(y, scores, out / "roc.png")
        plot_gates(streams, out / "gates.png")
        wrong = np.flatnonzero(pred != y)
        worst = wrong[np.argsort(-scores[wrong].max(1))][:10]
        metrics["worst_failures"] = [
            {"clip": streams.keys[i], "true": EMOTIONS[y[i]], "predicted": EMOTIONS[int(pred[i])],
             "confidence": round(float(scores[i].max()), 3), "mean_alpha": round(float(streams.alpha[i].mean()), 3),
             "mean_beta": round(float(streams.beta[i].mean()), 3)} for i in worst
        ]  # fmt: skip
    m = metrics["test"]
    plot_radar([m["per_class"][c]["f1-score"] for c in EMOTIONS], out / "radar.png")
    log_path = Path(checkpoint).parent / "log.json"
    if log_path.exists():
        plot_curves(json.loads(log_path.read_text()), out / "curves.png")
        metrics["epochs"] = json.loads(log_path.read_text())
    metrics["notes"] = notes
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float))
    (out / "report.md").write_text(render(metrics))
    return metrics


def render(metrics: dict[str, Any]) -> str:
    m = metrics["test"]
    lines = [
        f"# Evaluation: {metrics['stage']} model",
        "",
        f"- checkpoint: `{metrics['checkpoint']}` (sha256 {metrics['sha256'][:16]}...)",
    ]
    if metrics.get("command"):
        lines.append(f"- command: `{metrics['command']}`")
    lines += [f"- data: {metrics['data']}"] + [f"- **note: {n}**" for n in metrics.get("notes", [])]
    head = f"Accuracy {100 * m['accuracy']:.2f} %, macro F1 {100 * m['macro_f1']:.2f} %, "
    head += f"weighted F1 {100 * m['weighted_f1']:.2f} %" + (
        f", macro AUC {m['macro_auc']:.3f}" if "macro_auc" in m else ""
    )
    lines += ["", head, "", table1(m), ""]
    if "ablations" in metrics:
        lines += ["## Ablations and stability (clip = what the stream shows at its last step)", "",
                  "| variant | accuracy | macro F1 | flips/min | jitter | switch latency median s (from the join) "
                  "| from speech onset | never switched |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
        for name, a in metrics["ablations"].items():
            st, sw = a["stability"], a.get("switch", {})
            median = f"{sw['median_s']:.2f}" if sw else "not measured"
            onset = f"{sw['median_from_onset_s']:.2f}" if sw and "median_from_onset_s" in sw else "not measured"
            never = f"{100 * sw['never_switched']:.0f} %" if sw else "not measured"
            lines.append(
                f"| {name} | {100 * a['accuracy']:.2f} | {100 * a['macro_f1']:.2f} | {st['flips_per_min']:.1f} | "
                f"{st['jitter']:.4f} | {median} | {onset} | {never} |"
            )
        lines += ["", f"Per-step accuracy of the raw stream (every 100 ms step vs the clip label): "
                      f"{100 * metrics['per_step_accuracy_raw']:.2f} %", ""]  # fmt: skip
    if metrics.get("worst_failures"):
        lines += ["## Worst failures (most confident wrong clips)", "",
                  "| clip | true | predicted | confidence | mean alpha | mean beta |",
                  "| --- | --- | --- | ---: | ---: | ---: |"]  # fmt: skip
        cols = ("clip", "true", "predicted", "confidence", "mean_alpha", "mean_beta")
        lines += ["| " + " | ".join(str(w[c]) for c in cols) + " |" for w in metrics["worst_failures"]]
    lines += ["", "Figures: confusion.png, roc.png, radar.png" + (", gates.png" if "ablations" in metrics else "")
              + (", curves.png" if metrics.get("epochs") else ""), ""]  # fmt: skip
    return "\n".join(lines)
