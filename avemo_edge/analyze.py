"""`avemo-edge analyze`: recordings in; per input a step table, a timeline picture and a summary out.

Each input runs through the daemon itself (`Daemon` with a file source read as fast as possible
and a publisher that writes here), so capture, alignment, the face stage, the recognizer and the
smoothing are the runtime's own. Rows are written as they come and the plot is drawn from a
decimated series, so memory stays flat however long the recording.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import json
import logging
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .capture import IMAGE_SUFFIXES, SAMPLE_CLIP
from .errors import AvemoError

MAX_POINTS = 2000  # the timeline keeps at most this many steps (every k-th, k doubling as it fills)

# emotion words in file names and label files -> the model's class names
SYNONYMS = {
    "neutral": "neutral", "calm": "neutral", "neu": "neutral",
    "happy": "happy", "happiness": "happy", "hap": "happy", "joy": "happy",
    "sad": "sad", "sadness": "sad",
    "angry": "angry", "anger": "angry", "ang": "angry",
    "fearful": "fearful", "fear": "fearful", "fea": "fearful",
    "disgust": "disgust", "disgusted": "disgust", "dis": "disgust",
    "surprised": "surprised", "surprise": "surprised", "sur": "surprised",
}  # fmt: skip
RAVDESS = {"01": "neutral", "02": "neutral", "03": "happy", "04": "sad", "05": "angry", "06": "fearful",
           "07": "disgust", "08": "surprised"}  # fmt: skip
RAVDESS_NAME = re.compile(r"^\d\d-\d\d-(\d\d)-\d\d-\d\d-\d\d-\d\d$")


class AnalyzeError(AvemoError):
    """Inputs that cannot be analysed at all (nothing matched, a bad labels file, a missing library)."""


def require_extras(command: str) -> None:
    """matplotlib and scikit-learn come with `avemo-edge[analyze]`, not with the runtime's base install."""
    import importlib.util

    missing = [m for m in ("matplotlib", "sklearn") if importlib.util.find_spec(m) is None]
    if missing:
        raise AnalyzeError(f"{command} needs {' and '.join(missing)}: pip install 'avemo-edge[analyze]'")


def label_from_name(path: Path) -> str | None:
    """The true emotion a file name gives: RAVDESS codes (03-01-EE-...) or an emotion word in it."""
    m = RAVDESS_NAME.match(path.stem)
    if m:
        return RAVDESS.get(m.group(1))
    words = {SYNONYMS[w] for w in re.split(r"[^a-z]+", path.stem.lower()) if w in SYNONYMS}
    return words.pop() if len(words) == 1 else None


def read_labels(path: Path) -> dict[str, str]:
    """A CSV of `file,label` rows (a header row is allowed) -> {file name: class}."""
    if not path.is_file():
        raise AnalyzeError(f"labels file {path} does not exist")
    out: dict[str, str] = {}
    with path.open(newline="") as f:
        for n, row in enumerate(csv.reader(f), 1):
            if not row or (n == 1 and row[0].strip().lower() in ("file", "path", "name")):
                continue
            if len(row) < 2:
                raise AnalyzeError(f"labels file {path} line {n} needs two columns, file and label")
            word = row[1].strip().lower()
            if word not in SYNONYMS:
                raise AnalyzeError(f"labels file {path} line {n}: {row[1]!r} is not an emotion the model knows")
            out[Path(row[0].strip()).name] = SYNONYMS[word]
    return out


def expand_inputs(patterns: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files, folders (their files, sorted), globs and `sample` (the embedded clip) -> (files, [(pattern, why)])."""
    files: list[Path] = []
    bad: list[tuple[str, str]] = []
    for p in patterns:
        path = SAMPLE_CLIP if p == "sample" and not Path(p).exists() else Path(p)
        if path.is_dir():
            found = sorted(f for f in path.iterdir() if f.is_file() and not f.name.startswith("."))
            if not found:
                bad.append((p, "the folder holds no files"))
            files += found
        elif path.is_file():
            files.append(path)
        elif any(c in p for c in "*?["):
            found = sorted(Path(f) for f in glob.glob(p, recursive=True) if Path(f).is_file())
            if not found:
                bad.append((p, "the pattern matches no file"))
            files += found
        else:
            bad.append((p, "no such file or folder"))
    return files, bad


class StepWriter:
    """A publisher for the daemon: each state message becomes rows of steps.csv and a line of steps.jsonl."""

    dropped = 0

    def __init__(self, out: Path, on_step: Callable[[], None] | None = None) -> None:
        self.out = out
        self.on_step = on_step
        self._jsonl = (out / "steps.jsonl").open("w")
        self._csv_file = (out / "steps.csv").open("w", newline="")
        self._csv: Any = None
        self.classes: list[str] = []
        self.steps = self.faces = self.speech = self.changes = 0
        self.label_steps: Counter[str] = Counter()
        self._last_label: str | None = None
        self.stride = 1
        self.series: list[dict[str, Any]] = []  # every `stride`-th step, at most MAX_POINTS

    def subscribe(self, topic: str, callback: object) -> None:
        pass

    def publish(self, topic: str, payload: dict[str, Any], retain: bool = False) -> None:
        if topic != "state":
            return
        if self._csv is None:
            self.classes = list(payload["probs"])
            cols = ["t", "step", "face_id", "label", "face", "speech", "audio", "alpha", "beta", "level_dbfs"]
            cols += [f"p_{c}" for c in self.classes] + [f"raw_{c}" for c in self.classes]
            self._csv = csv.writer(self._csv_file)
            self._csv.writerow(cols)
        self._jsonl.write(json.dumps(payload) + "\n")
        faces = payload.get("faces") or [{"id": "", **payload}]  # multi-face steps: one row per face
        for f in faces:
            probs, raw = f.get("probs", payload["probs"]), f.get("raw", payload["raw"])
            self._csv.writerow(
                [payload["t"], payload["step"], f.get("id", ""), f.get("label", payload["label"]),
                 int(payload["face"]), int(payload["speech"]), int(payload["audio"]), f.get("alpha", payload["alpha"]),
                 payload["beta"], payload.get("level_dbfs")]
                + [probs[c] for c in self.classes] + [raw[c] for c in self.classes]
            )  # fmt: skip
        label = payload["label"]
        self.changes += self._last_label is not None and label != self._last_label
        self._last_label = label
        self.label_steps[label] += 1
        self.faces += bool(payload["face"])
        self.speech += bool(payload["speech"])
        if self.steps % self.stride == 0:
            self.series.append({k: payload[k] for k in ("t", "label", "probs", "face", "speech", "alpha", "beta")})
            if len(self.series) >= MAX_POINTS:
                self.series, self.stride = self.series[::2], self.stride * 2
        self.steps += 1
        if self.on_step is not None:
            self.on_step()

    def stop(self) -> None:
        self._jsonl.close()
        self._csv_file.close()


@dataclass
class InputResult:
    path: Path
    out: Path
    steps: int
    seconds: float
    dominant: str | None
    share: dict[str, float]
    changes: int
    face_coverage: float
    speech_coverage: float
    truth: str | None = None
    files: list[str] = field(default_factory=list)

    def line(self) -> str:
        if not self.steps:
            return f"{self.path}: no steps"
        shares = ", ".join(f"{k} {v:.0%}" for k, v in sorted(self.share.items(), key=lambda kv: -kv[1]))
        truth = f" (true: {self.truth})" if self.truth else ""
        return (
            f"{self.path}: {self.dominant}{truth} over {self.steps} steps ({self.seconds:.1f} s): {shares}; "
            f"{self.changes} label changes; face {self.face_coverage:.0%}, speech {self.speech_coverage:.0%}"
        )


@dataclass
class AnalyzeReport:
    results: list[InputResult]
    failed: list[tuple[str, str]]  # (input, the one-sentence reason)
    accuracy: float | None = None
    confusion: dict[str, Any] | None = None


@contextlib.contextmanager
def _quiet_runtime_log() -> Iterator[None]:
    """The daemon's log lines are for a service; here the failures come back as exceptions instead."""
    logger = logging.getLogger("avemo_edge")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def analyze_file(
    path: Path,
    out: Path,
    model: str,
    backend: str,
    truth: str | None,
    on_step: Callable[[], None] | None = None,
    video: bool = False,
) -> InputResult:
    """One input through the daemon's pipeline, as fast as possible; writes steps.*, timeline.png, summary.json."""
    from .config import parse_config
    from .daemon import Daemon
    from .sdnotify import Notifier

    cfg = parse_config(
        {
            "source": {"video": Path(path).absolute().as_uri(), "audio": "auto", "realtime": False},  # percent-encoded
            "model": {"path": model, "backend": backend},
            "output": {"stdout": "none"},
            "status": {"interval_s": 3600.0},
        }
    )
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    writer = StepWriter(out, on_step)
    try:
        with _quiet_runtime_log():
            Daemon(cfg, publisher=writer, notifier=Notifier(env={})).run()
        if writer.steps == 0:
            raise AnalyzeError(f"{path} gave no steps: it holds no frame or sound the runtime could use")
    except AvemoError:
        writer.stop()
        if created:  # a failed input leaves no half-written folder behind
            shutil.rmtree(out, ignore_errors=True)
        raise
    writer.stop()
    n = writer.steps
    result = InputResult(
        path=path,
        out=out,
        steps=n,
        seconds=writer.series[-1]["t"] if writer.series else 0.0,
        dominant=writer.label_steps.most_common(1)[0][0],
        share={k: round(v / n, 4) for k, v in writer.label_steps.items()},
        changes=writer.changes,
        face_coverage=round(writer.faces / n, 4),
        speech_coverage=round(writer.speech / n, 4),
        truth=truth,
        files=["steps.csv", "steps.jsonl", "timeline.png", "summary.json"],
    )
    if video and path.suffix.lower() not in IMAGE_SUFFIXES:
        annotate_video(path, out / "steps.jsonl", out / "annotated.mp4", writer.classes)
        result.files.append("annotated.mp4")
    plot_timeline(writer.series, writer.classes, out / "timeline.png", str(path.name), writer.stride)
    summary = {k: v for k, v in result.__dict__.items() if k not in ("path", "out")}
    summary["input"], summary["decimation"] = str(path), writer.stride
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return result


TIMELINE_SIZE = (12.0, 6.0)  # inches at 100 dpi -> 1200 x 600 pixels
TIMELINE_DPI = 100


def plot_timeline(series: list[dict[str, Any]], classes: list[str], path: Path, title: str, stride: int = 1) -> Path:
    """Stacked smoothed probabilities, the shown label as a band, face and speech presence, alpha and beta."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    t = np.array([s["t"] for s in series])
    probs = np.array([[s["probs"][c] for c in classes] for s in series]).T
    colors = plt.get_cmap("tab10").colors
    fig, axes = plt.subplots(
        4, 1, figsize=TIMELINE_SIZE, dpi=TIMELINE_DPI, sharex=True, gridspec_kw={"height_ratios": [4, 0.6, 0.8, 1.6]}
    )
    ax = axes[0]
    ax.stackplot(t, probs, labels=classes, colors=colors[: len(classes)], step="pre")
    ax.set_ylim(0, 1)
    ax.set_ylabel("smoothed p")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    every = f", every {stride}th step" if stride > 1 else ""
    ax.set_title(f"{title}: {len(series)} points{every}")
    dt = float(np.median(np.diff(t))) if len(t) > 1 else 0.1
    index = {c: i for i, c in enumerate(classes)}
    for s, x in zip(series, t, strict=True):
        axes[1].axvspan(x - dt, x, color=colors[index[s["label"]] % 10], lw=0)
    axes[1].set_yticks([])
    axes[1].set_ylabel("label", rotation=0, ha="right")
    face = np.array([s["face"] for s in series], float)
    speech = np.array([s["speech"] for s in series], float)
    axes[2].fill_between(t, 1, 1 + 0.8 * face, step="pre", color="tab:blue", label="face")
    axes[2].fill_between(t, 0, 0.8 * speech, step="pre", color="tab:orange", label="speech")
    axes[2].set_yticks([0.4, 1.4], ["speech", "face"])
    axes[2].set_ylim(0, 1.9)
    axes[3].plot(t, [s["alpha"] for s in series], label="alpha (visual gate)", color="tab:blue")
    axes[3].plot(t, [s["beta"] for s in series], label="beta (audio gate)", color="tab:orange")
    axes[3].set_ylabel("gates")
    axes[3].set_xlabel("time (s)")
    axes[3].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=TIMELINE_DPI)
    plt.close(fig)
    return path


def _out_dir(out: Path, path: Path, taken: set[str]) -> Path:
    name = path.stem or path.name
    k = 2
    while name in taken:
        name, k = f"{path.stem}-{k}", k + 1
    taken.add(name)
    return out / name


def analyze(
    inputs: list[str],
    out: Path,
    model: str = "",
    backend: str = "torch",
    labels: Path | None = None,
    progress: Callable[[str, int | None], Callable[..., None]] | None = None,
    video: bool = False,
) -> AnalyzeReport:
    """Every input in turn; a bad one is recorded with its reason and the rest go on."""
    from .daemon import resolve_model

    require_extras("avemo-edge analyze")
    resolve_model(model)  # no model at all: one sentence before anything else
    files, failed = expand_inputs(inputs)
    if not files and failed:
        raise AnalyzeError("; ".join(f"{p}: {why}" for p, why in failed))
    truths = read_labels(labels) if labels else {}
    out.mkdir(parents=True, exist_ok=True)
    results: list[InputResult] = []
    taken: set[str] = set()
    advance_inputs = progress("inputs", len(files)) if progress else None
    for path in files:
        truth = truths.get(path.name) if labels else label_from_name(path)
        advance_steps = progress(f"{path.name} steps", None) if progress else None
        try:
            results.append(analyze_file(path, _out_dir(out, path, taken), model, backend, truth, advance_steps, video))
        except AvemoError as e:
            failed.append((str(path), str(e)))
        if advance_inputs:
            advance_inputs(path.name)
    report = AnalyzeReport(results, failed)
    _write_folder_summary(report, out)
    return report


def _write_folder_summary(report: AnalyzeReport, out: Path) -> None:
    classes = sorted({c for r in report.results for c in r.share})
    with (out / "summary.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["input", "true", "dominant", "steps", "seconds", "changes", "face", "speech"]
                   + [f"share_{c}" for c in classes])  # fmt: skip
        for r in report.results:
            w.writerow([r.path, r.truth or "", r.dominant, r.steps, r.seconds, r.changes, r.face_coverage,
                        r.speech_coverage] + [r.share.get(c, 0.0) for c in classes])  # fmt: skip
        for p, why in report.failed:
            w.writerow([p, "", "", 0, 0, 0, 0, 0] + [0] * len(classes) + [f"failed: {why}"])
    known = [r for r in report.results if r.truth]
    if len(report.results) < 2 or not known:  # one input: its line already shows the true emotion
        return
    from sklearn.metrics import confusion_matrix

    names = sorted({r.truth for r in known} | {r.dominant for r in known})
    cm = confusion_matrix([r.truth for r in known], [r.dominant for r in known], labels=names)
    report.accuracy = sum(r.truth == r.dominant for r in known) / len(known)
    report.confusion = {"labels": names, "matrix": cm.tolist(), "inputs": len(known)}
    (out / "accuracy.json").write_text(json.dumps({"accuracy": report.accuracy, **report.confusion}, indent=2) + "\n")


def _steps_by_index(path: Path) -> Iterator[dict[str, Any]]:
    with path.open() as f:
        for line in f:
            yield json.loads(line)


def annotate_video(src: Path, steps_jsonl: Path, dst: Path, classes: list[str], face_size: int = 48) -> int:
    """The input with the face box, the shown label and a bar of smoothed probabilities on each frame.

    Streams: frames are decoded, drawn and encoded one at a time and the step table is read
    alongside; the sound track's packets are copied as they are. The box comes from the runtime's
    face stage (FaceCropper.find) on each frame, or from a step's `faces` list when it has one.
    Returns the number of frames written (the input's).
    """
    import av

    from .face import FaceCropper
    from .media import BGRConverter, av_reason

    finder = FaceCropper(face_size)
    to_bgr = BGRConverter()
    steps = _steps_by_index(steps_jsonl)
    step: dict[str, Any] | None = next(steps, None)
    pending = next(steps, None)
    frames = 0
    try:
        src_c = av.open(str(src))
    except av.error.FFmpegError as e:
        raise AnalyzeError(f"file {src} cannot be decoded for the annotated video ({av_reason(e)})") from None
    with src_c, av.open(str(dst), "w") as out_c:
        vin = src_c.streams.video[0]
        ain = src_c.streams.audio[0] if src_c.streams.audio else None
        vout = out_c.add_stream("libx264", rate=vin.average_rate or 25)
        vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
        vout.time_base = vin.time_base
        vout.options = {"preset": "veryfast", "crf": "23"}
        aout = out_c.add_stream_from_template(ain) if ain is not None else None
        start = float(vin.start_time * vin.time_base) if vin.start_time is not None else 0.0
        for packet in src_c.demux([s for s in (vin, ain) if s is not None]):
            if packet.stream is ain:
                if packet.dts is not None:
                    packet.stream = aout
                    out_c.mux(packet)
                continue
            for frame in packet.decode():
                t = (frame.time or 0.0) - start
                while pending is not None and pending["t"] - 0.1 <= t + 1e-6:  # the step this frame falls in
                    step, pending = pending, next(steps, None)
                image = to_bgr(frame)
                draw_step(image, step, classes, finder)
                new = av.VideoFrame.from_ndarray(image, format="bgr24")
                new.pts, new.time_base = frame.pts, frame.time_base
                for p in vout.encode(new):
                    out_c.mux(p)
                frames += 1
        for p in vout.encode():
            out_c.mux(p)
    return frames


def draw_step(image: Any, step: dict[str, Any] | None, classes: list[str], finder: Any) -> None:
    """Face box(es), label and a probability bar drawn on a BGR frame, in place."""
    import cv2

    if step is None:
        return
    h, w = image.shape[:2]
    if step.get("faces"):
        boxes = [(f.get("box"), f.get("label", step["label"])) for f in step["faces"] if f.get("box")]
    else:
        b = finder.find(image)
        boxes = [((b.x, b.y, b.w, b.h), step["label"])] if b is not None else []
    for box, label in boxes:
        x, y, bw, bh = (int(v) for v in box)
        cv2.rectangle(image, (x, y), (x + bw, y + bh), (0, 255, 0), 2)
        cv2.putText(image, label, (x, max(12, y - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 255, 0), 2)
    bar_w, row = min(160, w // 3), max(10, h // 40)
    for i, c in enumerate(classes):
        p = float(step["probs"].get(c, 0.0))
        y0 = 6 + i * (row + 2)
        cv2.rectangle(image, (6, y0), (6 + bar_w, y0 + row), (40, 40, 40), -1)
        cv2.rectangle(image, (6, y0), (6 + int(bar_w * p), y0 + row), (0, 200, 255), -1)
        cv2.putText(
            image, f"{c} {p:.2f}", (10 + bar_w, y0 + row - 1), cv2.FONT_HERSHEY_SIMPLEX, row / 28, (255, 255, 255), 1
        )
    cv2.putText(image, step["label"], (6, h - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 200, 255), 2)
