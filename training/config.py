"""The training recipe (paper section 3.4) as one dataclass; every value can be overridden.

Precedence: defaults < a TOML/JSON config file (`--config`) < `--set key=value` flags.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from avemo_edge.errors import AvemoError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (JetPack 6)
    import tomli as tomllib


class ConfigError(AvemoError):
    """A training configuration key or value that is not valid."""


@dataclass
class TrainConfig:
    stage: str = "audio"  # "visual" (face images), "audio" (speech), "joint" (pairs or AV clips)
    cache: str = "cache"  # the folder `avemo-edge prepare` wrote
    split: str = "paper"  # 'paper' or 'cv0'..'cv4' (RAVDESS actors)
    out: str = "runs/audio"
    # model dimensions (avemo_edge.model.ModelDims) for a fresh model; ignored with init checkpoints
    face_size: int = 48
    face_channels: int = 1
    face_stem: str = "small"
    face_width: int = 64  # ResNet-18 channels of its first stage (64 = He et al.)
    face_mirror: bool = False  # average the face's and its mirror image's features (avemo_edge.model.ModelDims)
    # causal per-band mean normalisation of the log-mel stream, time constant in seconds (0: off);
    # see avemo_edge.audio.LevelNormalizer: it makes the audio branch blind to gain and static EQ
    audio_norm_s: float = 0.0
    audio_norm: str = "band"  # 'band' (per-band running mean) or 'level' (running level alone)
    audio_pool_s: float = 0.0  # time constant of the audio branch's causal statistics pooling; 0: none
    bidirectional: bool = False
    # optimisation (paper 3.4.1-3.4.6)
    lr: float = 1e-4  # audio branch and fusion
    lr_visual: float = 5e-5  # visual branch
    lr_audio: float = 0.0  # audio branch (0: the same as lr); e.g. a pretrained branch fine-tuned gently
    weight_decay: float = 1e-5
    batch_size: int = 8  # clips (audio and joint); the visual stage uses visual_batch_size images
    visual_batch_size: int = 64
    max_epochs: int = 60
    patience: int = 5  # early stopping on validation loss
    plateau_factor: float = 0.5
    plateau_patience: int = 3
    min_lr: float = 1e-6
    optimizer: str = "adam"  # 'adam' (paper), 'adamw' or 'sgd' (momentum 0.9, nesterov)
    schedule: str = "plateau"  # 'plateau' (paper: ReduceLROnPlateau) or 'cosine' (per batch, with warm-up)
    warmup_epochs: float = 0.0  # cosine only: linear warm-up
    label_smoothing: float = 0.0
    soft_labels: bool = False  # visual stage: cross-entropy on the normalised crowd votes (FER+ paper)
    class_weight: str = "none"  # 'none', 'sqrt' or 'balanced': loss weights (1 / frequency) ** 0.5 or ** 1, mean 1
    # audio: per-step CE only from the step where the clip's speech starts (its silent lead-in
    # carries no emotion; learning it teaches the room, not the voice)
    ce_from_onset: bool = False
    device: str = "cpu"  # 'cpu' or 'cuda' (the same recipe on either)
    grad_clip: float = 5.0
    dropout: float = 0.3
    tcs_weight: float = 0.1  # lambda; 0 trains without the TCS loss (ablation)
    # Cross-entropy: the paper's is on the clip's prediction (after its last step); a stream is
    # also shown at every step, so the mean per-step CE can be added (and is the default).
    clip_ce_weight: float = 0.0
    step_ce_weight: float = 1.0
    # Cross-entropy on the clip's mean logits over its taught steps (clip-level pooling of the
    # stream's outputs, training only: the device's smoothing averages the per-step outputs too)
    pooled_ce_weight: float = 0.0
    # augmentation
    augment: bool = True
    face_flip_p: float = 0.5
    face_rotate_deg: float = 5.0
    face_jitter: float = 0.1  # brightness and contrast, +-10 %
    face_shift: float = 0.0  # crop shift, fraction of the side (camera framing)
    face_scale: float = 0.0  # crop scale, +- fraction
    face_blur_p: float = 0.0  # probability of a Gaussian blur (sigma 0.3-1.2 px)
    face_erase_p: float = 0.0  # probability of random erasing (2-20 % of the area)
    audio_shift_s: float = 0.05
    audio_noise_snr_db: float = 5.0
    audio_noise_p: float = 0.5
    audio_pitch_semitones: float = 1.0
    audio_pitch_p: float = 0.5
    audio_gain_db: float = 0.0  # random gain +- this many dB (level invariance)
    audio_eq_tilt_db: float = 0.0  # random linear EQ tilt, up to +- this many dB at the band edges
    spec_freq_mask: int = 0  # SpecAugment: up to this many mel bands masked per clip (two masks)
    spec_time_mask: int = 0  # SpecAugment: up to this many steps masked per clip (two masks)
    modality_dropout: float = 0.15  # joint stage: probability that a clip loses its faces, and its audio
    # joint stage: weight of a face-only cross-entropy on a batch of FER+ training images per batch
    # of clips (the face path through the shared head keeps FER+'s own labels and class mix, which
    # the emotion-matched pairs, drawn with RAVDESS's mix, do not teach); 0: off
    face_aux_weight: float = 0.0
    # starting weights
    init: str = ""  # a whole checkpoint to start from (fine-tuning, or a warm restart in a later session)
    init_visual: str = ""  # checkpoint whose visual branch starts the joint model
    init_audio: str = ""  # checkpoint whose audio branch (with its normalisation) starts it
    # Multiplies the audio branch's output projection once, at the start (joint stage): the fresh
    # fusion head sees the voice embedding at this scale against the face's unit-length one.
    # The embedding's direction, and so what it carries, is unchanged (docs/DESIGN.md, "Fusion").
    audio_emb_scale: float = 1.0
    # branches to keep fixed, comma-separated: "visual", "audio" or both. Joint training through
    # the ResNet at every 100 ms step costs about as much as a FER+ epoch per epoch on 2 cores;
    # freezing the pre-trained branches trains the gates and head in minutes instead.
    freeze: str = ""
    # machinery
    seed: int = 0
    threads: int = 2
    # DataLoader worker processes that make the training batches (augmentation); 0: in the training
    # process. Worth it on a GPU machine with spare cores; on the 2-core CPU box 0 is fastest.
    workers: int = 0
    bf16: bool = True  # bf16 autocast on CPU (about 2x on this CPU's matrix units)
    max_steps_per_clip: int = 60  # 6 s: longer clips are cropped at random in training
    limit_batches: int = 0  # >0: stop each epoch after this many batches (smoke tests)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.stage not in ("visual", "audio", "joint"):
            raise ConfigError(f"stage must be 'visual', 'audio' or 'joint', not {self.stage!r}")
        for key, choices in (("optimizer", ("adam", "adamw", "sgd")), ("schedule", ("plateau", "cosine")),
                             ("class_weight", ("none", "sqrt", "balanced")),
                             ("audio_norm", ("band", "level"))):  # fmt: skip
            if getattr(self, key) not in choices:
                raise ConfigError(f"{key} must be one of {', '.join(choices)}, not {getattr(self, key)!r}")


def _coerce(name: str, raw: Any, kind: type) -> Any:
    if isinstance(raw, str) and kind is not str:
        try:
            raw = json.loads(raw.lower() if kind is bool else raw)
        except json.JSONDecodeError as e:
            raise ConfigError(f"config key {name!r}: {raw!r} is not a {kind.__name__}") from e
    if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
        raw = float(raw)
    if kind is list and isinstance(raw, list):
        return raw
    if not isinstance(raw, kind) or (kind is int and isinstance(raw, bool)):
        raise ConfigError(f"config key {name!r}: {raw!r} is not a {kind.__name__}")
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, **base: Any) -> TrainConfig:
    """Defaults, then `base` (the stage's own defaults), then a config file, then `key=value` overrides."""
    values: dict[str, Any] = dict(base)
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            values.update(tomllib.loads(p.read_text()) if p.suffix == ".toml" else json.loads(p.read_text()))
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"config file {p} is not valid {p.suffix[1:] or 'JSON'}: {e}") from e
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        k, v = item.split("=", 1)
        values[k.strip()] = v.strip()
    types = {
        f.name: {"int": int, "float": float, "str": str, "bool": bool}.get(str(f.type), list)
        for f in fields(TrainConfig)
    }
    for k in values:
        if k not in types:
            raise ConfigError(f"unknown config key {k!r}; valid keys: {', '.join(sorted(types))}")
    return TrainConfig(**{k: _coerce(k, v, types[k]) for k, v in values.items()})


def config_dict(cfg: TrainConfig) -> dict[str, Any]:
    return asdict(cfg)
