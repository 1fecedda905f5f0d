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

from avemo_edge.checkpoint import load_checkpoint
from avemo_edge.model import EMOTIONS, AVEmotionNet
from avemo_edge.smoothing import flips_per_minute, probability_jitter, smooth_sequence, switch_latency

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


def clip_scores(streams: Streams, smooth: bool) -> np.ndarray:
    """(N, 7): the probabilities shown at each clip's last step."""
    return np.stack([(smooth_sequence(p) if smooth else p)[-1] for p in streams.probs])


def classification(y: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score, roc_auc_score

    pred = scores.argmax(1)
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


def stability(streams: Streams, smooth: bool) -> dict[str, float]:
    flips, jitter = [], []
    for p in streams.probs:
        q = smooth_sequence(p) if smooth else p
        flips.append(flips_per_minute(q.argmax(1)))
        jitter.append(probability_jitter(q))
    return {"flips_per_min": float(np.mean(flips)), "jitter": float(np.mean(jitter))}


@torch.no_grad()
def switch_latencies(model: AVEmotionNet, ds: ClipDataset, n_joins: int, smooth: bool, seed: int = 0) -> dict[str, Any]:
    """Join two test clips of different emotions into one stream (state carried across the join)."""
    rng = np.random.default_rng(seed)
    labels = np.array([c["label"] for c in ds.clips])
    lat = []
    for _ in range(n_joins):
        i = int(rng.integers(len(ds)))
        others = np.flatnonzero(labels != labels[i])
        j = int(rng.choice(others))
        a, b = ds[i], ds[j]
        batch = collate_clips([a])
        la, _, _, state = model(batch["faces"], batch["audio"], batch["face_mask"], batch["audio_mask"])
        batch = collate_clips([b])
        lb, _, _, _ = model(batch["faces"], batch["audio"], batch["face_mask"], batch["audio_mask"], state)
        p = torch.cat([la[0], lb[0]]).softmax(-1).numpy()
        q = smooth_sequence(p) if smooth else p
        lat.append(switch_latency(q.argmax(1), len(a.face_mask), b.label))
    arr = np.array(lat)
    finite = arr[np.isfinite(arr)]
    return {
        "joins": n_joins,
        "median_s": float(np.median(finite)) if finite.size else float("inf"),
        "mean_s": float(finite.mean()) if finite.size else float("inf"),
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


def evaluate(
    checkpoint: Path,
    cache: Path,
    out: Path,
    split: str | None = None,
    no_tcs_checkpoint: Path | None = None,
    n_joins: int = 200,
    command: str = "",
) -> dict[str, Any]:
    """Write the report for `checkpoint` to `out`; returns the metrics."""
    torch.set_num_threads(2)
    ckpt = load_checkpoint(checkpoint)
    model = ckpt.build()
    cfg_dict = ckpt.meta.get("config", {})
    stage = ckpt.meta.get("stage", "audio")
    known = {f.name for f in fields(TrainConfig)}  # a checkpoint's config may name keys since retired
    kept = {k: v for k, v in cfg_dict.items() if k in known}
    cfg = TrainConfig(**{**kept, "augment": False, "modality_dropout": 0.0, "notes": []})
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
        rav = RavdessCache(cache / "ravdess")
        need = "audio" if stage == "audio" else "any"
        parts = rav.split(split, need)
        faces_from, face_cache = "none", None
        if stage == "joint":
            if any(c["faces"] for c in parts["test"]):
                faces_from = "clip"
            else:
                faces_from, face_cache = "pairs", FaceCache(cache / "faces")
                parts = {k: [c for c in v if c["audio"]] for k, v in parts.items()}
                if PAIRS_NOTE not in notes:
                    notes.append(PAIRS_NOTE)
                notes.append("test pairs: RAVDESS test-actor audio with FER+ *test* faces of the same class")
        ds = ClipDataset(
            rav, parts["test"], cfg, train=False, faces_from=faces_from, face_cache=face_cache, face_split="test"
        )
        streams = run_clips(model, ds)
        y = streams.labels
        variants = {"tcs filter": True, "no filter": False}
        results = {}
        for name, smooth in variants.items():
            m = classification(y, clip_scores(streams, smooth))
            m["stability"] = stability(streams, smooth)
            m["switch"] = switch_latencies(model, ds, n_joins, smooth)
            results[name] = m
        main = results["tcs filter"]
        ablations = {f"{'TCS loss' if cfg.tcs_weight else 'no TCS loss'} + {k}": v for k, v in results.items()}
        if no_tcs_checkpoint:
            other = load_checkpoint(no_tcs_checkpoint).build()
            s2 = run_clips(other, ds)
            for name, smooth in variants.items():
                m = classification(y, clip_scores(s2, smooth))
                m["stability"] = stability(s2, smooth)
                m["switch"] = switch_latencies(other, ds, n_joins, smooth)
                ablations[f"no TCS loss + {name}"] = m
        if stage == "joint":
            for name, kw in (("audio only", {"mask_faces": True}), ("visual only", {"mask_audio": True})):
                s3 = run_clips(model, ds, **kw)
                m = classification(y, clip_scores(s3, True))
                m["stability"] = stability(s3, True)
                ablations[f"{name} (TCS filter)"] = m
        per_step_acc = float(
            np.mean(np.concatenate([p.argmax(1) == yy for p, yy in zip(streams.probs, y, strict=True)]))
        )
        metrics.update({"data": f"RAVDESS {split} split, test actors {sorted({c['actor'] for c in ds.clips})}, "
                                f"{len(ds)} clips", "test": main, "ablations": ablations,
                        "per_step_accuracy_raw": per_step_acc})  # fmt: skip
        plot_confusion(np.array(main["confusion"]), out / "confusion.png", "test (TCS filter)")
        plot_roc(y, clip_scores(streams, True), out / "roc.png")
        plot_gates(streams, out / "gates.png")
        scores = clip_scores(streams, True)
        wrong = np.flatnonzero(scores.argmax(1) != y)
        worst = wrong[np.argsort(-scores[wrong].max(1))][:10]
        metrics["worst_failures"] = [
            {"clip": streams.keys[i], "true": EMOTIONS[y[i]], "predicted": EMOTIONS[int(scores[i].argmax())],
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
                  "| variant | accuracy | macro F1 | flips/min | jitter | switch latency median s | never switched |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
        for name, a in metrics["ablations"].items():
            st, sw = a["stability"], a.get("switch", {})
            median = f"{sw['median_s']:.2f}" if sw else "not measured"
            never = f"{100 * sw['never_switched']:.0f} %" if sw else "not measured"
            lines.append(
                f"| {name} | {100 * a['accuracy']:.2f} | {100 * a['macro_f1']:.2f} | {st['flips_per_min']:.1f} | "
                f"{st['jitter']:.4f} | {median} | {never} |"
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
