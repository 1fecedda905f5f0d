"""`avemo-edge analyze` and `evaluate-faces` on generated clips and images (real decoding and detection)."""

import csv
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import av
import cv2
import pytest

from avemo_edge.analyze import MAX_POINTS, StepWriter, analyze_file, label_from_name
from avemo_edge.config import parse_config
from avemo_edge.daemon import Daemon
from avemo_edge.publish import JsonLinesPublisher

CLI = [sys.executable, "-m", "avemo_edge.cli"]


def cli(*args, timeout=900):  # generous: the test machine may be shared with training
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def frames_and_streams(path):
    with av.open(str(path)) as c:
        kinds = [s.type for s in c.streams]
        return sum(1 for _ in c.decode(video=0)), kinds


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def folder(tmp_path_factory, clips, astronaut_bgr):
    d = tmp_path_factory.mktemp("inputs")
    (d / "happy_talk.mp4").write_bytes(clips["av"].read_bytes())  # the name gives the true emotion
    (d / "blink.mp4").write_bytes(clips["blink"].read_bytes())
    (d / "mute.mp4").write_bytes(clips["mute"].read_bytes())
    from media import make_clip

    make_clip(d / "noface.mp4", astronaut_bgr, 2.0, face_visible=lambda t: False)  # speech, never a face
    cv2.imwrite(str(d / "face.jpg"), astronaut_bgr)
    (d / "broken.mp4").write_bytes(clips["av"].read_bytes()[:300])  # a truncated file
    (d / "notes.txt").write_text("not a recording\n")
    return d


@pytest.fixture(scope="module")
def analyzed(folder, random_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("analysis")
    r = cli("analyze", folder, "--out", out, "--video", "--model", random_model, "--threads", 1)
    return r, out


def test_folder_gives_files_per_input_and_skips_bad_ones(analyzed, folder):
    r, out = analyzed
    assert r.returncode == 1, r.stderr  # some inputs were skipped
    assert "Traceback" not in r.stderr + r.stdout
    skipped = [line for line in r.stdout.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 2
    assert any("broken.mp4" in s and "cannot be decoded" in s for s in skipped)
    assert any("notes.txt" in s and "neither a media file nor an image" in s for s in skipped)
    assert "5 analysed, 2 skipped" in r.stdout
    assert not (out / "broken").exists() and not (out / "notes").exists()
    for name in ("happy_talk", "blink", "mute", "noface", "face"):
        d = out / name
        summary = json.loads((d / "summary.json").read_text())
        lines = (d / "steps.jsonl").read_text().splitlines()
        assert summary["steps"] == len(lines) == len(rows(d / "steps.csv")) > 0  # one row per step
        png = cv2.imread(str(d / "timeline.png"))
        assert png is not None and png.shape == (600, 1200, 3)
        assert abs(sum(summary["share"].values()) - 1) < 1e-3
        assert f"{folder / (name + ('.jpg' if name == 'face' else '.mp4'))}: " in r.stdout
    table = rows(out / "summary.csv")
    assert len(table) == 7 and {Path(t["input"]).name for t in table} >= {"broken.mp4", "notes.txt"}
    acc = json.loads((out / "accuracy.json").read_text())
    assert acc["inputs"] == 1 and "happy" in acc["labels"]  # only happy_talk has a true emotion


def test_step_rows_follow_the_clip(analyzed):
    _, out = analyzed
    blink = rows(out / "blink" / "steps.csv")
    assert [int(r["face"]) for r in blink[:30]] == [1] * 10 + [0] * 10 + [1] * 10  # face gone 1.0-2.0 s
    assert all(float(r["alpha"]) == 0 for r in blink[10:20])
    mute = rows(out / "mute" / "steps.csv")
    assert len(mute) == 20 and not any(int(r["audio"]) or int(r["speech"]) for r in mute)
    talk = rows(out / "happy_talk" / "steps.csv")
    assert any(int(r["speech"]) for r in talk) and all(int(r["face"]) for r in talk[:30])
    p = [float(v) for k, v in talk[5].items() if k.startswith("p_")]
    assert len(p) == 7 and abs(sum(p) - 1) < 1e-3
    summary = json.loads((out / "mute" / "summary.json").read_text())
    assert summary["face_coverage"] == 1.0 and summary["speech_coverage"] == 0.0
    assert json.loads((out / "face" / "summary.json").read_text())["steps"] == 1  # a still image: one result
    noface = rows(out / "noface" / "steps.csv")
    assert len(noface) == 20 and not any(int(r["face"]) for r in noface)
    assert json.loads((out / "noface" / "summary.json").read_text())["face_coverage"] == 0.0


def test_annotated_video_keeps_frames_and_audio(analyzed, clips):
    _, out = analyzed
    for name, clip in (("happy_talk", clips["av"]), ("mute", clips["mute"])):
        n_in, kinds_in = frames_and_streams(clip)
        n_out, kinds_out = frames_and_streams(out / name / "annotated.mp4")
        assert n_out == n_in and sorted(kinds_out) == sorted(kinds_in)
    assert not (out / "face" / "annotated.mp4").exists()  # a still image has no video to annotate


def test_nothing_to_analyze_is_one_sentence(tmp_path, random_model):
    r = cli("analyze", tmp_path / "missing.mp4", "--out", tmp_path / "o", "--model", random_model)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "missing.mp4: no such file or folder" in r.stderr


def test_still_image_and_text_file_as_run_sources(tmp_path, random_model, astronaut_bgr):
    image = tmp_path / "face.png"
    cv2.imwrite(str(image), astronaut_bgr)
    cfg = parse_config(
        {"source": {"video": f"file://{image}", "realtime": False}, "model": {"path": str(random_model)}}
    )
    out = tmp_path / "face.jsonl"
    pub = JsonLinesPublisher(out)
    summary = Daemon(cfg, publisher=pub).run()
    pub.stop()
    msgs = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary.steps == 1 and len(msgs) == 1 and msgs[0]["face"] and not msgs[0]["audio"]
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    r = cli("run", "--source", f"file://{text}", "--model", random_model, "--fast")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "notes.txt cannot be decoded: it is neither a media file nor an image" in r.stderr


def test_true_emotion_from_file_names():
    assert label_from_name(Path("03-01-05-01-02-01-12.mp4")) == "angry"
    assert label_from_name(Path("03-01-02-01-02-01-12.mp4")) == "neutral"  # calm -> neutral
    assert label_from_name(Path("sample_crema-d_1001_DFA_ANG.mp4")) == "angry"
    assert label_from_name(Path("me_happiness_2.mov")) == "happy"
    assert label_from_name(Path("clip.mp4")) is None
    assert label_from_name(Path("sad_then_happy.mp4")) is None  # two emotions: no single truth


def test_step_writer_keeps_a_bounded_series(tmp_path):
    writer = StepWriter(tmp_path)
    probs = {"neutral": 0.6, "happy": 0.4}
    payload = {"t": 0.0, "step": 0, "label": "neutral", "probs": probs, "raw": probs, "alpha": 1.0, "beta": 0.5,
               "face": True, "speech": False, "audio": True, "level_dbfs": -40.0}  # fmt: skip
    for i in range(10 * MAX_POINTS):
        writer.publish("state", {**payload, "t": i / 10, "step": i, "label": "happy" if i % 100 < 50 else "neutral"})
    writer.stop()
    assert len(writer.series) < MAX_POINTS and writer.stride >= 8
    assert writer.steps == 10 * MAX_POINTS and writer.changes == 2 * (10 * MAX_POINTS // 100) - 1
    assert len(rows(tmp_path / "steps.csv")) == 10 * MAX_POINTS


def test_memory_stays_flat_with_length(tmp_path, astronaut_bgr, random_model):
    from media import make_clip

    peaks = {}
    for seconds in (2.0, 8.0):
        clip = make_clip(tmp_path / f"long{seconds:g}.mp4", astronaut_bgr, seconds, fps=10, audio=True)
        if not peaks:
            analyze_file(clip, tmp_path / "warm", str(random_model), "torch", None)  # imports, caches
        tracemalloc.start()
        analyze_file(clip, tmp_path / f"m{seconds:g}", str(random_model), "torch", None)
        peaks[seconds] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert len(rows(tmp_path / "m8" / "steps.csv")) >= 80
    assert peaks[8.0] < 1.25 * peaks[2.0], peaks  # 4x the length, not 4x the memory


def test_evaluate_faces_on_a_tiny_folder(tmp_path, random_model, astronaut_bgr):
    face = cv2.resize(astronaut_bgr[:260, 120:360], (96, 104))
    for emotion, n in (("happiness", 2), ("sad", 1)):
        (tmp_path / emotion).mkdir()
        for i in range(n):
            cv2.imwrite(str(tmp_path / emotion / f"{i}.png"), cv2.flip(face, 1) if i else face)
    (tmp_path / "sad" / "broken.jpg").write_bytes(b"not a jpeg")
    blank = tmp_path / "sad" / "blank.png"
    cv2.imwrite(str(blank), face * 0)
    r = cli("evaluate-faces", tmp_path, "--no-detector", "--model", random_model)
    assert r.returncode == 0, r.stderr
    assert "skipped" in r.stdout and "broken.jpg" in r.stdout
    assert "5 images, the whole image as the face; no face found in 0 (0.0%)" in r.stdout
    assert "accuracy " in r.stdout and "macro-F1 " in r.stdout and "recall: happy" in r.stdout
    r = cli("evaluate-faces", tmp_path, "--model", random_model)
    assert r.returncode in (0, 2) and "Traceback" not in r.stderr
    assert "no face found in" in r.stdout and "blank" not in r.stdout
    (tmp_path / "contempt").mkdir()
    r = cli("evaluate-faces", tmp_path, "--model", random_model)
    assert r.returncode == 2 and "contempt is not one of the model's classes" in r.stderr
