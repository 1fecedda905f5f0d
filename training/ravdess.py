"""RAVDESS file names -> labelled items (Livingstone & Russo 2018).

A name is seven two-digit fields: modality-channel-emotion-intensity-statement-repetition-actor,
e.g. `03-01-06-01-02-01-12.wav`. Modality 01 audio-video mp4, 02 video-only mp4, 03 audio-only
(wav, or flac in the shared 16 kHz copy). Channel 01 speech, 02 song. Emotions 01 neutral and
02 calm merge into one class, as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from avemo_edge.errors import AvemoError
from avemo_edge.model import EMOTIONS

MODALITIES = {1: "audio-video", 2: "video-only", 3: "audio-only"}
CHANNELS = {1: "speech", 2: "song"}
EMOTION_CODES = {
    1: "neutral",
    2: "neutral",
    3: "happy",
    4: "sad",
    5: "angry",
    6: "fearful",
    7: "disgust",
    8: "surprised",
}
EXTENSIONS = {1: (".mp4",), 2: (".mp4",), 3: (".wav", ".flac")}


class RavdessNameError(AvemoError):
    """A file whose name is not a RAVDESS name."""


@dataclass(frozen=True)
class Performance:
    """What one actor performed once; its audio-video, video-only and audio-only files share it."""

    channel: int
    emotion: int  # the original 1-8 code (1 neutral and 2 calm are both label 0)
    intensity: int
    statement: int
    repetition: int
    actor: int

    @property
    def label(self) -> int:
        return EMOTIONS.index(EMOTION_CODES[self.emotion])

    @property
    def key(self) -> str:
        fields = (self.channel, self.emotion, self.intensity, self.statement, self.repetition, self.actor)
        return "-".join(f"{f:02d}" for f in fields)


@dataclass(frozen=True)
class RavdessFile:
    path: Path
    modality: int
    performance: Performance


def parse_name(path: str | Path) -> RavdessFile:
    """Parse a RAVDESS file name, or raise RavdessNameError saying what is wrong with it."""
    path = Path(path)
    fields = path.stem.split("-")
    if len(fields) != 7 or not all(len(f) == 2 and f.isdigit() for f in fields):
        raise RavdessNameError(f"{path}: not a RAVDESS name (expected seven 2-digit fields like 03-01-06-01-02-01-12)")
    mod, ch, emo, inten, stmt, rep, actor = (int(f) for f in fields)
    problems = []
    if mod not in MODALITIES:
        problems.append(f"modality {mod:02d} (01-03)")
    if ch not in CHANNELS:
        problems.append(f"vocal channel {ch:02d} (01-02)")
    if emo not in EMOTION_CODES:
        problems.append(f"emotion {emo:02d} (01-08)")
    if inten not in (1, 2) or (emo == 1 and inten == 2):
        problems.append(f"intensity {inten:02d} (01-02; neutral has only 01)")
    if stmt not in (1, 2):
        problems.append(f"statement {stmt:02d} (01-02)")
    if rep not in (1, 2):
        problems.append(f"repetition {rep:02d} (01-02)")
    if not 1 <= actor <= 24:
        problems.append(f"actor {actor:02d} (01-24)")
    if not problems and path.suffix.lower() not in EXTENSIONS[mod]:
        problems.append(f"extension {path.suffix!r} for modality {mod:02d} (expected {' or '.join(EXTENSIONS[mod])})")
    if problems:
        raise RavdessNameError(f"{path}: invalid RAVDESS field(s): {', '.join(problems)}")
    return RavdessFile(path, mod, Performance(ch, emo, inten, stmt, rep, actor))


def scan(root: str | Path) -> tuple[list[RavdessFile], list[tuple[Path, str]]]:
    """All RAVDESS media files under `root`, and (path, reason) for media files whose names do not parse."""
    files, bad = [], []
    for p in sorted(Path(root).rglob("*")):
        if p.suffix.lower() not in (".mp4", ".wav", ".flac") or not p.is_file():
            continue
        try:
            files.append(parse_name(p))
        except RavdessNameError as e:
            bad.append((p, str(e)))
    return files, bad
