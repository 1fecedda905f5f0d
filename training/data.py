"""Datasets over the prepared cache. Features come from the runtime's own code (`avemo_edge.audio`).

- `RavdessCache`: the packed RAVDESS clips (16 kHz int16 audio, 10 Hz face crops).
- `FaceCache`: face-expression images (FER+ or folders) with labels and vote distributions.
- `ClipDataset`: one item per clip -> (faces (T, C, S, S) | None, audio (T, 64, N) | None, label).
  Faces come from the clip itself (RAVDESS audio-video) or, for emotion-matched pairs, from a
  face image of the same class in `FaceCache` (not a real video: reports say so).
- `ImageDataset`: one face image -> (face (C, S, S), label).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from avemo_edge.audio import FRAMES_PER_STEP, log_mel_slices, normalize_slices, slice_level_dbfs
from avemo_edge.errors import AvemoError

from . import augment as aug
from .config import TrainConfig
from .splits import actor_split, check_items


class DataError(AvemoError):
    """A cache that is missing or does not fit the model."""


class RavdessCache:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        index = self.folder / "index.json"
        if not index.exists():
            raise DataError(f"no prepared RAVDESS cache in {self.folder}; run `avemo-edge prepare` first")
        self.index = json.loads(index.read_text())
        self.clips = self.index["clips"]
        self.audio = np.load(self.folder / "audio.npy", mmap_mode="r")
        self.faces = np.load(self.folder / "faces.npy", mmap_mode="r")
        self.face_mask = np.load(self.folder / "face_mask.npy", mmap_mode="r")
        self.face = self.index["face"]

    def select(self, actors: tuple[int, ...], need: str) -> list[dict]:
        """Clips of these actors that have `need`: 'audio', 'faces' or 'any'."""
        return [c for c in self.clips if c["actor"] in actors and (need == "any" or c[need])]

    def split(self, scheme: str, need: str) -> dict[str, list[dict]]:
        parts = {name: self.select(actors, need) for name, actors in actor_split(scheme).items()}
        check_items({k: [(c["actor"], c["key"]) for c in v] for k, v in parts.items()})
        return parts

    def waveform(self, clip: dict) -> np.ndarray:
        off, n = clip["audio"]
        return self.audio[off : off + n].astype(np.float32) / 32768.0

    def clip_faces(self, clip: dict) -> tuple[np.ndarray, np.ndarray]:
        off, n = clip["faces"]
        return np.asarray(self.faces[off : off + n]), np.asarray(self.face_mask[off : off + n])


class FaceCache:
    SPLITS = {"train": 0, "val": 1, "test": 2}

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not (self.folder / "index.json").exists():
            raise DataError(f"no prepared face-image cache in {self.folder}; run `avemo-edge prepare` first")
        self.index = json.loads((self.folder / "index.json").read_text())
        self.images = np.load(self.folder / "images.npy")
        self.labels = np.load(self.folder / "labels.npy").astype(np.int64)
        self.splits = np.load(self.folder / "splits.npy")
        votes = self.folder / "votes.npy"
        self.votes = np.load(votes).astype(np.float32) if votes.exists() else None

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.splits == self.SPLITS[split])

    def by_class(self, split: str) -> dict[int, np.ndarray]:
        idx = self.indices(split)
        return {c: idx[self.labels[idx] == c] for c in np.unique(self.labels[idx])}


def check_face_fit(face: dict, cfg_size: int, cfg_channels: int, where: str) -> None:
    if face["size"] != cfg_size or face["channels"] != cfg_channels:
        raise DataError(
            f"{where} holds {face['size']} px faces with {face['channels']} channel(s) but the model takes "
            f"{cfg_size} px with {cfg_channels}; "
            f"prepare again with --face-size {cfg_size} --face-channels {cfg_channels}"
        )


@dataclass
class Item:
    faces: torch.Tensor | None  # (T, C, S, S) float in [0, 1]
    face_mask: torch.Tensor  # (T,) bool
    audio: torch.Tensor | None  # (T, 64, N)
    audio_mask: torch.Tensor  # (T,) bool
    label: int
    key: str
    onset: int = 0  # first step of the clip's speech (see speech_onset_step)


class ClipDataset(Dataset):
    """RAVDESS clips as streams of 100 ms steps.

    `faces_from`: 'clip' (the clip's own crops), 'pairs' (a face image of the same class from
    `face_cache`, the same image at every step, augmented per step) or 'none'.
    """

    def __init__(
        self,
        cache: RavdessCache,
        clips: list[dict],
        cfg: TrainConfig,
        train: bool,
        use_audio: bool = True,
        faces_from: str = "none",
        face_cache: FaceCache | None = None,
        face_split: str = "train",
        seed: int = 0,
    ) -> None:
        self.cache, self.clips, self.cfg, self.train = cache, clips, cfg, train
        self.use_audio, self.faces_from = use_audio, faces_from
        self.face_cache, self.face_pool = face_cache, None
        if faces_from == "pairs":
            if face_cache is None:
                raise DataError("emotion-matched pairs need a face-image cache")
            self.face_pool = face_cache.by_class(face_split)
        self.seed = seed
        self.epoch = 0
        self._slice_memo: dict[str, torch.Tensor] = {}
        # Fixed pairing for evaluation: clip i always meets the same face image.
        self._eval_rng = np.random.default_rng(seed + 1)
        self._eval_faces = (
            [self._draw_face(c["label"], self._eval_rng) for c in clips] if faces_from == "pairs" else None
        )

    def __len__(self) -> int:
        return len(self.clips)

    def _draw_face(self, label: int, rng: np.random.Generator) -> int:
        pool = self.face_pool.get(label)
        if pool is None or not len(pool):
            raise DataError(f"the face-image cache has no images of class {label} for emotion-matched pairs")
        return int(rng.choice(pool))

    def _rng(self, i: int) -> np.random.Generator:
        return (
            np.random.default_rng((self.seed, self.epoch, i)) if self.train else np.random.default_rng((self.seed, i))
        )

    def _clean_slices(self, clip: dict) -> torch.Tensor:
        """The clip's slices without waveform augmentation, computed once per dataset."""
        key = clip["key"]
        if key not in self._slice_memo:
            self._slice_memo[key] = log_mel_slices(self.cache.waveform(clip))
        return self._slice_memo[key]

    def _audio(self, clip: dict, rng: np.random.Generator) -> tuple[torch.Tensor, int]:
        """The clip's slices as the runtime's front end gives them (T, 64, 10), and its speech onset step.

        Waveform augmentation (shift, pitch, noise) runs the front end on the changed samples;
        a clip that draws none of them reuses its memoised slices. Gain is applied to the log-mel
        (a gain of g dB adds g / 10 to every log10 band, floored as the front end floors it).
        """
        c = self.cfg
        train = self.train and c.augment
        shift = train and c.audio_shift_s > 0
        pitch = train and rng.random() < c.audio_pitch_p
        noise = train and rng.random() < c.audio_noise_p
        if shift or pitch or noise:
            x = self.cache.waveform(clip)
            if shift:
                x = aug.shift(x, c.audio_shift_s, rng)
            if pitch:
                x = aug.pitch_shift(x, c.audio_pitch_semitones, rng)
            if noise:
                x = aug.add_noise(x, c.audio_noise_snr_db, rng)
            slices = log_mel_slices(x)
        else:
            slices = self._clean_slices(clip)
        if train and c.audio_gain_db:
            slices = aug.log_gain(slices, float(rng.uniform(-c.audio_gain_db, c.audio_gain_db)))
        if train and c.audio_eq_tilt_db:
            slices = aug.eq_tilt(slices, float(rng.uniform(-c.audio_eq_tilt_db, c.audio_eq_tilt_db)))
        onset = speech_onset_step(slices)
        slices = normalize_slices(slices, c.audio_norm_s, c.audio_norm)
        if train and (c.spec_freq_mask or c.spec_time_mask):
            slices = aug.spec_augment(slices, c.spec_freq_mask, c.spec_time_mask, rng)
        return slices, onset

    def _face(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        c = self.cfg
        if self.train and c.augment:
            return augment_face(img, rng, c)
        return img.astype(np.float32) / 255.0

    def __getitem__(self, i: int) -> Item:
        clip, rng = self.clips[i], self._rng(i)
        audio, onset = self._audio(clip, rng) if self.use_audio and clip["audio"] else (None, 0)
        t = audio.shape[0] if audio is not None else clip["faces"][1]
        faces, fmask = None, torch.zeros(t, dtype=torch.bool)
        if self.faces_from == "clip" and clip["faces"]:
            imgs, m = self.cache.clip_faces(clip)
            imgs, m = imgs[:t], m[:t]
            if len(imgs) < t:  # audio a little longer than the video: hold the last frame
                pad = t - len(imgs)
                imgs = np.concatenate([imgs, np.repeat(imgs[-1:], pad, 0)])
                m = np.concatenate([m, np.repeat(m[-1:], pad)])
            faces = torch.from_numpy(np.stack([self._face(f, rng) for f in imgs])).float()
            fmask = torch.from_numpy(m.copy())
        elif self.faces_from == "pairs":
            j = self._draw_face(clip["label"], rng) if self.train else self._eval_faces[i]
            img = self.face_cache.images[j]
            faces = torch.from_numpy(np.stack([self._face(img, rng) for _ in range(t)])).float()
            fmask = torch.ones(t, dtype=torch.bool)
        amask = torch.full((t,), audio is not None, dtype=torch.bool)
        if self.train and self.cfg.modality_dropout and faces is not None and audio is not None:
            r = rng.random()
            if r < self.cfg.modality_dropout:
                fmask[:] = False
            elif r < 2 * self.cfg.modality_dropout:
                amask[:] = False
        if self.train and t > self.cfg.max_steps_per_clip:
            s = int(rng.integers(0, t - self.cfg.max_steps_per_clip + 1))
            sl = slice(s, s + self.cfg.max_steps_per_clip)
            audio = audio[sl] if audio is not None else None
            faces = faces[sl] if faces is not None else None
            fmask, amask = fmask[sl], amask[sl]
            onset = max(onset - s, 0)
        return Item(faces, fmask, audio, amask, int(clip["label"]), clip["key"], onset)


def collate_clips(items: list[Item]) -> dict:
    """Pad to the longest clip; `valid` (B, T) marks real steps."""
    b, t = len(items), max(len(it.face_mask) for it in items)
    valid = torch.zeros(b, t, dtype=torch.bool)
    fmask = torch.zeros(b, t, dtype=torch.bool)
    amask = torch.zeros(b, t, dtype=torch.bool)
    ref_f = next((it.faces for it in items if it.faces is not None), None)
    ref_a = next((it.audio for it in items if it.audio is not None), None)
    faces = ref_f.new_zeros(b, t, *ref_f.shape[1:]) if ref_f is not None else None
    audio = ref_a.new_zeros(b, t, *ref_a.shape[1:]) if ref_a is not None else None
    for i, it in enumerate(items):
        n = len(it.face_mask)
        valid[i, :n] = True
        fmask[i, :n], amask[i, :n] = it.face_mask, it.audio_mask
        if it.faces is not None:
            faces[i, :n] = it.faces
        if it.audio is not None:
            audio[i, :n] = it.audio
    labels = torch.tensor([it.label for it in items])
    return {"faces": faces, "audio": audio, "face_mask": fmask, "audio_mask": amask, "valid": valid,
            "labels": labels, "keys": [it.key for it in items],
            "onset": torch.tensor([it.onset for it in items])}  # fmt: skip


class ImageDataset(Dataset):
    def __init__(self, cache: FaceCache, split: str, cfg: TrainConfig, train: bool, seed: int = 0) -> None:
        self.cache, self.idx, self.cfg, self.train, self.seed = cache, cache.indices(split), cfg, train, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int | torch.Tensor]:
        """A face and its label; with `soft_labels` in training, the normalised vote distribution."""
        j = self.idx[i]
        img = self.cache.images[j]
        c = self.cfg
        if self.train and c.augment:
            face = augment_face(img, np.random.default_rng((self.seed, self.epoch, i)), c)
        else:
            face = img.astype(np.float32) / 255.0
        face = torch.from_numpy(np.ascontiguousarray(face)).float()
        if self.train and c.soft_labels:
            if self.cache.votes is None:
                raise DataError(f"soft_labels needs crowd votes; {self.cache.folder} has no votes.npy")
            v = self.cache.votes[j]
            return face, torch.from_numpy(v / max(float(v.sum()), 1e-6)).float()
        return face, int(self.cache.labels[j])


def augment_face(img: np.ndarray, rng: np.random.Generator, c: TrainConfig) -> np.ndarray:
    """The recipe's face augmentation, for image and clip datasets alike."""
    return aug.augment_face(
        img, rng, c.face_flip_p, c.face_rotate_deg, c.face_jitter, c.face_shift, c.face_scale, c.face_blur_p,
        c.face_erase_p,
    )  # fmt: skip


def speech_onset_step(slices: torch.Tensor, below_peak_db: float = 20.0) -> int:
    """First step whose level is within `below_peak_db` of the clip's loudest step (gain-independent)."""
    if not len(slices):
        return 0
    levels = np.array([slice_level_dbfs(s) for s in slices])
    return int(np.argmax(levels >= levels.max() - below_peak_db))


def mel_statistics(
    cache: RavdessCache, clips: list[dict], norm_s: float = 0.0, mode: str = "band"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-band mean and std of the (normalised) log-mel frames of the training clips (paper 3.1.3)."""
    total, sq, n = torch.zeros(64, dtype=torch.float64), torch.zeros(64, dtype=torch.float64), 0
    for c in clips:
        s = normalize_slices(log_mel_slices(cache.waveform(c)), norm_s, mode)[:, :, -FRAMES_PER_STEP:].double()
        frames = s.permute(1, 0, 2).reshape(64, -1)
        total += frames.sum(1)
        sq += (frames**2).sum(1)
        n += frames.shape[1]
    mean = total / n
    std = (sq / n - mean**2).clamp_min(1e-8).sqrt()
    return mean.float(), std.float()
