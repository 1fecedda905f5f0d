"""`avemo-edge prepare`: decode the data sets once into a compact cache that trains fast on 2 cores.

Sources are recognised by their layout:
- RAVDESS (any folder of official RAVDESS names): audio-video mp4 (01), video-only mp4 (02)
  paired with the audio-only wav/flac (03) of the same performance, or audio-only alone. Each
  performance becomes one clip: 16 kHz mono int16 audio and one face crop per 100 ms step
  (the newest frame at each step's end, detected and cropped with the runtime's face code).
  Log-mel slices are computed from the cached audio by the runtime's audio code at training
  time, after augmentation, so training sees exactly what the device sees.
- FER+ (`FER2013Train/label.csv` ...): 48x48 faces, majority label mapped to our 7 classes.
- A plain image folder `<split>/<emotion>/*.png|jpg`.

The cache (under `--out`):
    ravdess/clips/<performance>.npz   one file per performance done since the last pack (resume)
    ravdess/{audio.npy, faces.npy, face_mask.npy, index.json}   packed for training
    faces/{images.npy, labels.npy, votes.npy, splits.npy, index.json}
A re-run skips the performances already packed or in `clips/` and re-packs; a bad file is
skipped and counted with its reason, never stopping the run.
"""

from __future__ import annotations

import csv
import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from avemo_edge.audio import SAMPLE_RATE, STEP_SECONDS, resample, step_count, to_float_mono
from avemo_edge.errors import AvemoError
from avemo_edge.face import FACE_MARGIN, FaceCropper
from avemo_edge.media import BGRConverter, MediaError, decode_audio, iter_video
from avemo_edge.model import EMOTIONS

from .ravdess import RavdessFile, scan
from .splits import PAPER_SPLIT

CACHE_VERSION = 1
FERPLUS_SPLITS = {"FER2013Train": "train", "FER2013Valid": "val", "FER2013Test": "test"}
# FER+ vote columns after the file name and box; the last three are not emotions we keep.
FERPLUS_COLUMNS = (
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
    "unknown",
    "NF",
)
FERPLUS_TO_OURS = {"neutral": 0, "happiness": 1, "sadness": 2, "anger": 3, "fear": 4, "disgust": 5, "surprise": 6}
FOLDER_NAMES = {
    "neutral": 0, "calm": 0, "happy": 1, "happiness": 1, "sad": 2, "sadness": 2, "angry": 3, "anger": 3,
    "fear": 4, "fearful": 4, "disgust": 5, "disgusted": 5, "surprise": 6, "surprised": 6,
}  # fmt: skip
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


class PrepareError(AvemoError):
    """A source folder that prepare cannot use."""


@dataclass
class FaceSpec:
    size: int = 48
    channels: int = 1
    margin: float = FACE_MARGIN


@dataclass
class Summary:
    """What a run did; printed by the CLI and saved in each index.json."""

    counts: dict[str, dict[str, Counter]] = field(default_factory=dict)  # dataset -> split -> class counts
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    notes: list[str] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)  # dataset -> bytes on disk
    seconds: dict[str, float] = field(default_factory=dict)

    def skip(self, path: Path | str, reason: str) -> None:
        self.skipped.append((str(path), reason))


Progress = Callable[[str, int], Callable[[], None]]  # (description, total) -> advance()


def _no_progress(desc: str, total: int) -> Callable[[], None]:
    return lambda: None


# --- RAVDESS --------------------------------------------------------------------------------
def _audio_16k(path: Path) -> np.ndarray:
    """Any audio file -> int16 mono 16 kHz, through the runtime's conversion."""
    samples, rate = decode_audio(path)
    x = resample(to_float_mono(samples), rate)
    return (x.clamp(-1, 1) * 32767).round().to(torch.int16).numpy()


def _faces_10hz(path: Path, n_steps: int | None, cropper: FaceCropper) -> tuple[np.ndarray, np.ndarray, int]:
    """Face crops at 10 Hz: for step t, the newest frame at or before (t + 1) x 100 ms.

    Returns faces (T, C, S, S) uint8, mask (T,) bool and the number of frames decoded. When
    `n_steps` is None (no audio), T follows the video's duration.
    """
    picked: list[tuple[int, Any]] = []  # (step, frame)
    last, step, n_frames, last_t = None, 0, 0, 0.0
    for t, frame in iter_video(path):
        n_frames, last_t = n_frames + 1, t
        while t > (step + 1) * STEP_SECONDS + 1e-6:  # this frame is after step's end: the last one closes it
            if last is not None:
                picked.append((step, last))
            step += 1
        last = frame
    if n_frames == 0:
        raise MediaError(f"{path} has a video track with no frames")
    picked.append((step, last))
    total = n_steps if n_steps is not None else max(1, round(last_t / STEP_SECONDS) + 1)
    s, c = cropper.size, cropper.channels
    faces = np.zeros((total, c, s, s), np.uint8)
    mask = np.zeros(total, bool)
    to_bgr = BGRConverter()
    for i, frame in picked:
        if i >= total:
            break
        crop = cropper(to_bgr(frame))
        if crop is not None:
            faces[i], mask[i] = np.round(crop * 255).astype(np.uint8), True
    # Steps after the video's last frame keep that frame (a file whose audio runs a little longer).
    for i in range(step + 1, total):
        faces[i], mask[i] = faces[step], mask[step]
    return faces, mask, n_frames


def _prepare_performance(files: dict[int, RavdessFile], cropper: FaceCropper, summary: Summary) -> dict | None:
    """One performance -> arrays for its clip, or None when nothing usable remains."""
    audio, audio_src = None, None
    video_src = files.get(1) or files.get(2)
    for f in [files.get(1), files.get(3)]:  # the mp4's own track first: it is in sync with its video
        if f is None or audio is not None:
            continue
        try:
            audio, audio_src = _audio_16k(f.path), f.path
        except MediaError as e:
            if "no audio track" not in str(e):
                summary.skip(f.path, str(e))
            elif files.get(3) is not None:
                summary.notes.append(f"{f.path}: no audio track; used {files[3].path.name} instead")
            else:
                summary.notes.append(f"{f.path}: no audio track; kept as a video-only clip")
    n_steps = step_count(len(audio)) if audio is not None else None
    faces = mask = None
    if video_src is not None:
        try:
            faces, mask, n_frames = _faces_10hz(video_src.path, n_steps, cropper)
            if not mask.any():
                summary.skip(video_src.path, f"no face found in any of {len(mask)} sampled frames")
                faces = mask = None
        except MediaError as e:
            summary.skip(video_src.path, str(e))
            faces = mask = None
    if audio is None and faces is None:
        return None
    perf = next(iter(files.values())).performance
    return {
        "audio": audio if audio is not None else np.zeros(0, np.int16),
        "faces": faces if faces is not None else np.zeros((0, cropper.channels, cropper.size, cropper.size), np.uint8),
        "face_mask": mask if mask is not None else np.zeros(0, bool),
        "meta": json.dumps(
            {
                "key": perf.key,
                "actor": perf.actor,
                "label": perf.label,
                "emotion": perf.emotion,
                "intensity": perf.intensity,
                "statement": perf.statement,
                "repetition": perf.repetition,
                "channel": perf.channel,
                "audio_source": str(audio_src) if audio_src else None,
                "video_source": str(video_src.path) if faces is not None else None,
            }
        ),
    }


def prepare_ravdess(root: Path, out: Path, spec: FaceSpec, summary: Summary, progress: Progress) -> None:
    start = time.monotonic()
    files, bad = scan(root)
    for path, reason in bad:
        summary.skip(path, reason)
    if not files:
        raise PrepareError(f"{root} holds no RAVDESS files (names like 03-01-06-01-02-01-12.wav)")
    by_perf: dict[str, dict[int, RavdessFile]] = defaultdict(dict)
    for f in files:
        if f.modality in by_perf[f.performance.key]:
            summary.skip(f.path, f"duplicate of {by_perf[f.performance.key][f.modality].path}")
            continue
        by_perf[f.performance.key][f.modality] = f
    folder = out / "ravdess"
    clips_dir = folder / "clips"
    clips_dir.mkdir(parents=True, exist_ok=True)
    _check_face_spec(folder, spec)
    packed = _load_packed(folder)  # clips of an earlier, completed run
    cropper = FaceCropper(spec.size, spec.channels, spec.margin)
    advance = progress("RAVDESS", len(by_perf))
    reused = 0
    for key in sorted(by_perf):
        target = clips_dir / f"{key}.npz"
        if key in packed or target.exists():
            reused += 1
        else:
            arrays = _prepare_performance(by_perf[key], cropper, summary)
            if arrays is not None:
                tmp = target.with_suffix(".tmp.npz")
                np.savez(tmp, **arrays)
                tmp.replace(target)
        advance()
    if reused:
        summary.notes.append(f"RAVDESS: {reused} performances reused from an earlier run")
    _pack_ravdess(folder, spec, summary, sorted(by_perf), packed)
    summary.seconds["ravdess"] = time.monotonic() - start


def _check_face_spec(folder: Path, spec: FaceSpec) -> None:
    spec_file = folder / "face_spec.json"
    want = {"size": spec.size, "channels": spec.channels, "margin": spec.margin}
    if spec_file.exists():
        have = json.loads(spec_file.read_text())
        if have != want:
            raise PrepareError(
                f"the cache in {folder} holds faces prepared as {have}, not {want}; use another --out folder"
            )
    else:
        folder.mkdir(parents=True, exist_ok=True)
        spec_file.write_text(json.dumps(want))


def _load_packed(folder: Path) -> dict[str, dict]:
    """key -> (meta, audio, faces, mask) readers for the clips in an existing pack."""
    index = folder / "index.json"
    if not index.exists():
        return {}
    audio = np.load(folder / "audio.npy", mmap_mode="r")
    faces = np.load(folder / "faces.npy", mmap_mode="r")
    mask = np.load(folder / "face_mask.npy", mmap_mode="r")
    out = {}
    for c in json.loads(index.read_text())["clips"]:
        a = audio[c["audio"][0] : sum(c["audio"])] if c["audio"] else audio[:0]
        f = faces[c["faces"][0] : sum(c["faces"])] if c["faces"] else faces[:0]
        m = mask[c["faces"][0] : sum(c["faces"])] if c["faces"] else mask[:0]
        meta = {k: v for k, v in c.items() if k not in ("audio", "faces")}
        out[c["key"]] = {"meta": meta, "audio": a, "faces": f, "face_mask": m}
    return out


def _pack_ravdess(folder: Path, spec: FaceSpec, summary: Summary, keys: list[str], packed: dict[str, dict]) -> None:
    """Pack the clips (new per-clip files and the earlier pack) into contiguous arrays, then drop the per-clip files.

    The per-clip files are the resume store of a run in progress; once packed, the pack is.
    """
    clips, audio, faces, masks = [], [], [], []
    a_off = f_off = 0
    for key in keys:
        path = folder / "clips" / f"{key}.npz"
        if path.exists():
            with np.load(path) as z:
                meta = json.loads(str(z["meta"]))
                a, fc, m = z["audio"], z["faces"], z["face_mask"]
        elif key in packed:
            p = packed[key]
            meta, a, fc, m = dict(p["meta"]), np.asarray(p["audio"]), np.asarray(p["faces"]), np.asarray(p["face_mask"])
        else:
            continue
        meta["audio"] = [a_off, len(a)] if len(a) else None
        meta["faces"] = [f_off, len(fc)] if len(fc) else None
        audio.append(a)
        faces.append(fc)
        masks.append(m)
        a_off, f_off = a_off + len(a), f_off + len(fc)
        clips.append(meta)
    shape = (0, spec.channels, spec.size, spec.size)
    arrays = {
        "audio.npy": np.concatenate(audio) if audio else np.zeros(0, np.int16),
        "faces.npy": np.concatenate(faces) if faces else np.zeros(shape, np.uint8),
        "face_mask.npy": np.concatenate(masks) if masks else np.zeros(0, bool),
    }
    packed.clear()  # release the memory maps of the old pack before it is replaced
    for name, arr in arrays.items():
        with open(folder / f"{name}.tmp", "wb") as fh:
            np.save(fh, arr)
    counts: dict[str, Counter] = {}
    actor_part = {a: part for part, actors in PAPER_SPLIT.items() for a in actors}
    for c in clips:
        kind = "av" if c["audio"] and c["faces"] else "audio" if c["audio"] else "video"
        counts.setdefault(actor_part[c["actor"]], Counter())[EMOTIONS[c["label"]]] += 1
        counts.setdefault(f"kind:{kind}", Counter())[EMOTIONS[c["label"]]] += 1
    summary.counts["ravdess"] = counts
    index = {
        "version": CACHE_VERSION,
        "classes": list(EMOTIONS),
        "sample_rate": SAMPLE_RATE,
        "face": {"size": spec.size, "channels": spec.channels, "margin": spec.margin},
        "clips": clips,
        "skipped": summary.skipped,
    }
    for name in arrays:
        (folder / f"{name}.tmp").replace(folder / name)
    (folder / "index.json").write_text(json.dumps(index))
    for f in (folder / "clips").glob("*.npz"):
        f.unlink()
    summary.sizes["ravdess"] = sum(
        (folder / n).stat().st_size for n in ("audio.npy", "faces.npy", "face_mask.npy", "index.json")
    )


# --- face-expression images -----------------------------------------------------------------
def _to_spec(img: np.ndarray, spec: FaceSpec) -> np.ndarray:
    """A grey or BGR face image that is already a crop -> (C, S, S) uint8."""
    if img.shape[:2] != (spec.size, spec.size):
        interp = cv2.INTER_AREA if img.shape[0] > spec.size else cv2.INTER_LINEAR
        img = cv2.resize(img, (spec.size, spec.size), interpolation=interp)
    if spec.channels == 1:
        img = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        return img[None]
    img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB) if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img.transpose(2, 0, 1)


def _read_image(path: Path) -> np.ndarray | None:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        return None
    return img[:, :, :3] if img.ndim == 3 and img.shape[2] == 4 else img


def _ferplus_rows(root: Path, summary: Summary) -> list[tuple[str, Path, int, np.ndarray]]:
    """(split, image path, label, votes over our 7 classes) for rows whose majority is one of them.

    The majority is the top vote over all ten columns, the first on a tie (the same rule as the
    data's `ferplus_majority` column); rows whose majority is contempt, unknown or not-a-face drop.
    """
    rows, dropped = [], Counter()
    for folder, split in FERPLUS_SPLITS.items():
        label_csv = root / folder / "label.csv"
        if not label_csv.exists():
            raise PrepareError(f"{root} looks like FER+ but {label_csv} is missing")
        with open(label_csv, newline="") as fh:
            for line_no, row in enumerate(csv.reader(fh), 1):
                try:
                    votes = np.array([float(v) for v in row[2:12]])
                    if votes.shape != (10,):
                        raise ValueError
                except ValueError:
                    summary.skip(f"{label_csv}:{line_no}", "not a FER+ row (file, box, 10 vote counts)")
                    continue
                top = FERPLUS_COLUMNS[int(votes.argmax())]
                if top not in FERPLUS_TO_OURS:
                    dropped[f"{split}:{top}"] += 1
                    continue
                ours = np.zeros(len(EMOTIONS), np.float32)
                for name, idx in FERPLUS_TO_OURS.items():
                    ours[idx] = votes[FERPLUS_COLUMNS.index(name)]
                rows.append((split, root / folder / row[0], FERPLUS_TO_OURS[top], ours / ours.sum()))
    if dropped:
        summary.notes.append(
            "FER+: dropped by majority label (contempt/unknown/NF): "
            + ", ".join(f"{k} {v}" for k, v in sorted(dropped.items()))
        )
    return rows


def _folder_rows(root: Path, summary: Summary) -> list[tuple[str, Path, int, np.ndarray]]:
    rows = []
    for split_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        split = SPLIT_NAMES.get(split_dir.name.lower())
        if split is None:
            summary.skip(split_dir, f"not a split folder (expected one of {sorted(set(SPLIT_NAMES))})")
            continue
        for emo_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            label = FOLDER_NAMES.get(emo_dir.name.lower())
            if label is None:
                summary.skip(emo_dir, f"unknown emotion folder (expected one of {sorted(FOLDER_NAMES)})")
                continue
            onehot = np.eye(len(EMOTIONS), dtype=np.float32)[label]
            for img in sorted(emo_dir.iterdir()):
                if img.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"):
                    rows.append((split, img, label, onehot))
    return rows


def prepare_images(root: Path, out: Path, spec: FaceSpec, summary: Summary, progress: Progress) -> None:
    start = time.monotonic()
    is_ferplus = (root / "FER2013Train").is_dir()
    rows = _ferplus_rows(root, summary) if is_ferplus else _folder_rows(root, summary)
    if not rows:
        raise PrepareError(f"{root} holds no face images in FER+ or <split>/<emotion>/ layout")
    folder = out / "faces"
    folder.mkdir(parents=True, exist_ok=True)
    images = np.zeros((len(rows), spec.channels, spec.size, spec.size), np.uint8)
    keep = np.zeros(len(rows), bool)
    advance = progress("face images", len(rows))
    for i, (_, path, _, _) in enumerate(rows):
        img = _read_image(path)
        if img is None:
            summary.skip(path, "unreadable or empty image")
        else:
            images[i], keep[i] = _to_spec(img, spec), True
        advance()
    split_ids = {"train": 0, "val": 1, "test": 2}
    np.save(folder / "images.npy", images[keep])
    np.save(folder / "labels.npy", np.array([r[2] for r in rows], np.int8)[keep])
    np.save(folder / "votes.npy", np.stack([r[3] for r in rows])[keep])
    np.save(folder / "splits.npy", np.array([split_ids[r[0]] for r in rows], np.int8)[keep])
    counts: dict[str, Counter] = {}
    for (split, _, label, _), k in zip(rows, keep, strict=True):
        if k:
            counts.setdefault(split, Counter())[EMOTIONS[label]] += 1
    summary.counts["faces"] = counts
    index = {
        "version": CACHE_VERSION,
        "source": str(root),
        "format": "ferplus" if is_ferplus else "folders",
        "classes": list(EMOTIONS),
        "splits": list(split_ids),
        "face": {"size": spec.size, "channels": spec.channels},
        "count": int(keep.sum()),
    }
    (folder / "index.json").write_text(json.dumps(index))
    summary.sizes["faces"] = sum(
        (folder / n).stat().st_size for n in ("images.npy", "labels.npy", "votes.npy", "splits.npy")
    )
    summary.seconds["faces"] = time.monotonic() - start


def detect_kind(root: Path) -> str:
    if not root.is_dir():
        raise PrepareError(f"{root} is not a folder")
    if (root / "FER2013Train").is_dir():
        return "images"
    if any(SPLIT_NAMES.get(p.name.lower()) for p in root.iterdir() if p.is_dir()):
        return "images"
    return "ravdess"


def prepare(sources: list[Path], out: Path, spec: FaceSpec | None = None, progress: Progress = _no_progress) -> Summary:
    """Prepare every source into `out`; returns what was done (the CLI prints it)."""
    spec = spec or FaceSpec()
    summary = Summary()
    for src in sources:
        kind = detect_kind(src)
        if kind == "ravdess":
            prepare_ravdess(src, out, spec, summary, progress)
        else:
            prepare_images(src, out, spec, summary, progress)
    return summary
