"""Data preparation end to end on generated clips, bad inputs included, and the split guard."""

import json
import shutil

import cv2
import numpy as np
import pytest
from media import make_clip, write_wav

from training.prepare import FaceSpec, PrepareError, prepare
from training.ravdess import RavdessNameError, parse_name, scan
from training.splits import CV_TEST_FOLDS, PAPER_SPLIT, SplitError, actor_split, check_actors, check_items


# --- names and splits ---------------------------------------------------------------------
def test_names_parse_and_calm_merges_into_neutral():
    f = parse_name("Actor_12/01-01-02-02-01-02-12.mp4")
    assert f.modality == 1 and f.performance.actor == 12 and f.performance.label == 0  # calm -> neutral
    assert parse_name("03-02-08-01-01-01-01.flac").performance.label == 6  # surprised, song channel
    assert (
        parse_name("02-01-01-01-01-01-01.mp4").performance.key == parse_name("03-01-01-01-01-01-01.wav").performance.key
    )


@pytest.mark.parametrize(
    "name, msg",
    [
        ("clip.mp4", "not a RAVDESS name"),
        ("03-01-09-01-01-01-01.wav", "emotion 09"),
        ("03-01-01-02-01-01-01.wav", "neutral has only 01"),
        ("03-01-03-01-01-01-25.wav", "actor 25"),
        ("01-01-03-01-01-01-02.wav", "extension '.wav' for modality 01"),
    ],
)
def test_bad_names_say_what_is_wrong(name, msg):
    with pytest.raises(RavdessNameError, match=msg):
        parse_name(name)


def test_paper_split_and_folds_are_speaker_independent():
    assert sum(len(v) for v in PAPER_SPLIT.values()) == 24
    check_actors(PAPER_SPLIT)
    assert sorted(a for fold in CV_TEST_FOLDS for a in fold) == list(range(1, 25))
    for k in range(5):
        parts = actor_split(f"cv{k}")
        assert sorted(parts["train"] + parts["val"] + parts["test"]) == list(range(1, 25))
        assert len(parts["val"]) == 4 and parts["test"] == CV_TEST_FOLDS[k]


def test_split_guard_fails_when_an_actor_is_in_two_parts():
    with pytest.raises(SplitError, match="actor 15 is in both the 'train' and the 'val' split"):
        check_actors({"train": range(1, 16), "val": range(15, 21), "test": range(21, 25)})
    with pytest.raises(SplitError, match="performance 01-05-01-01-01-03 is in both"):
        # the same take seen twice (audio-video and video-only copies) split across parts
        check_items({"train": [(3, "01-05-01-01-01-03")], "test": [(4, "01-05-01-01-01-03")]})
    with pytest.raises(SplitError, match="unknown split"):
        actor_split("random")


# --- preparation on generated RAVDESS-named media -----------------------------------------
@pytest.fixture(scope="module")
def ravdess_tree(tmp_path_factory, astronaut_bgr):
    root = tmp_path_factory.mktemp("ravdess") / "Actor_03"
    root.mkdir()
    face = astronaut_bgr[40:220, 150:330]  # the astronaut's head and shoulders
    make_clip(root / "01-01-05-01-01-01-03.mp4", face, seconds=1.5)  # audio-video, 48 kHz stereo AAC
    make_clip(root / "02-01-03-01-01-01-03.mp4", face, seconds=1.5, audio=False)  # video-only ...
    write_wav(root / "03-01-03-01-01-01-03.wav", rate=44100, channels=2)  # ... paired with 44.1 kHz stereo wav
    make_clip(root / "01-01-04-01-01-01-03.mp4", face, seconds=1.5, audio=False)  # audio-video file without audio
    make_clip(root / "01-01-06-01-01-01-03.mp4", face, seconds=1.5, face_visible=lambda t: False)  # no face ever
    make_clip(root / "01-01-07-01-01-01-03.mp4", face, seconds=2.0, face_visible=lambda t: 0.5 <= t < 1.2)
    good = (root / "01-01-05-01-01-01-03.mp4").read_bytes()
    (root / "01-01-08-01-01-01-03.mp4").write_bytes(good[: len(good) // 2])  # truncated
    (root / "01-01-03-02-01-01-03.mp4").write_bytes(b"\x00junk" * 500)  # corrupt
    (root / "clip.mp4").write_bytes(good)  # not a RAVDESS name
    return root.parent


def test_prepare_mp4_end_to_end(ravdess_tree, tmp_path):
    out = tmp_path / "cache"
    summary = prepare([ravdess_tree], out, FaceSpec(48, 1))
    index = json.loads((out / "ravdess" / "index.json").read_text())
    clips = {c["key"]: c for c in index["clips"]}
    skipped = dict(summary.skipped)

    av_clip = clips["01-05-01-01-01-03"]  # angry, real audio-video
    assert av_clip["label"] == 3 and av_clip["audio"] and av_clip["faces"]
    assert av_clip["audio"][1] == pytest.approx(1.5 * 16000, abs=1600)  # converted 48 kHz stereo -> 16 kHz mono
    assert av_clip["faces"][1] == 15  # 1.5 s at 10 Hz
    mask = np.load(out / "ravdess" / "face_mask.npy")
    faces = np.load(out / "ravdess" / "faces.npy")
    off, n = av_clip["faces"]
    assert mask[off : off + n].mean() > 0.8 and faces.shape[1:] == (1, 48, 48)

    paired = clips["01-03-01-01-01-03"]  # video-only mp4 + 44.1 kHz stereo wav
    assert paired["video_source"].endswith("02-01-03-01-01-01-03.mp4")
    assert paired["audio_source"].endswith("03-01-03-01-01-01-03.wav")
    assert paired["audio"][1] == pytest.approx(1.5 * 16000, abs=10)

    assert clips["01-04-01-01-01-03"]["audio"] is None  # no audio track: kept as video-only, noted
    assert any("no audio track; kept as a video-only clip" in n for n in summary.notes)

    no_face = clips["01-06-01-01-01-03"]  # no face: its audio stays, the video is skipped with the reason
    assert no_face["faces"] is None and no_face["audio"]
    assert "no face found" in skipped[str(ravdess_tree / "Actor_03" / "01-01-06-01-01-01-03.mp4")]

    blink = clips["01-07-01-01-01-03"]  # the face appears and disappears
    off, n = blink["faces"]
    m = mask[off : off + n]
    assert 0 < m.sum() < n and not m[0] and not m[-1]

    for name in ("01-01-08-01-01-01-03.mp4", "01-01-03-02-01-01-03.mp4"):  # truncated, corrupt
        assert "cannot be opened" in skipped[str(ravdess_tree / "Actor_03" / name)]
    assert "not a RAVDESS name" in skipped[str(ravdess_tree / "Actor_03" / "clip.mp4")]
    assert len(index["clips"]) == 5
    assert sum(summary.counts["ravdess"]["train"].values()) == 5  # actor 3 is a training actor

    # A re-run continues where the last stopped: reuses every clip and packs the same arrays.
    audio_before = np.load(out / "ravdess" / "audio.npy")
    assert not list((out / "ravdess" / "clips").glob("*.npz"))  # packed: no second copy on disk
    # As if a run had stopped half way: one performance packed earlier is gone from the pack,
    # one is waiting in clips/.
    index["clips"] = [c for c in index["clips"] if c["key"] not in ("01-06-01-01-01-03", "01-05-01-01-01-03")]
    (out / "ravdess" / "index.json").write_text(json.dumps(index))
    again = prepare([ravdess_tree], out, FaceSpec(48, 1))
    assert any("3 performances reused" in n for n in again.notes)
    assert np.array_equal(np.load(out / "ravdess" / "audio.npy"), audio_before)
    assert len(json.loads((out / "ravdess" / "index.json").read_text())["clips"]) == 5
    with pytest.raises(PrepareError, match="holds faces prepared as"):
        prepare([ravdess_tree], out, FaceSpec(64, 1))


def test_prepare_refuses_a_folder_without_data(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PrepareError, match="holds no RAVDESS files"):
        prepare([tmp_path / "empty"], tmp_path / "cache")
    with pytest.raises(PrepareError, match="is not a folder"):
        prepare([tmp_path / "nope"], tmp_path / "cache")


# --- face-expression images ---------------------------------------------------------------
def test_prepare_ferplus_layout(tmp_path, astronaut_bgr):
    grey = cv2.cvtColor(cv2.resize(astronaut_bgr[40:220, 150:330], (48, 48)), cv2.COLOR_BGR2GRAY)
    root = tmp_path / "ferplus"
    votes = {
        "a.png": "0,10,0,0,0,0,0,0,0,0",  # happiness -> happy
        "b.png": "2,0,0,0,0,0,0,8,0,0",  # contempt majority -> dropped
        "c.png": "5,0,5,0,0,0,0,0,0,0",  # tie neutral/surprise -> first (neutral)
        "d.png": "0,0,0,0,0,0,9,0,0,1",  # fear -> fearful
    }
    for folder in ("FER2013Train", "FER2013Valid", "FER2013Test"):
        (root / folder).mkdir(parents=True)
        rows = []
        for name, v in votes.items():
            cv2.imwrite(str(root / folder / name), grey)
            rows.append(f'{name},"(0, 0, 48, 48)",{v}')
        (root / folder / "label.csv").write_text("\n".join(rows) + "\n")
    (root / "FER2013Test" / "d.png").write_bytes(b"broken")
    summary = prepare([root], tmp_path / "cache", FaceSpec(48, 1))
    labels = np.load(tmp_path / "cache" / "faces" / "labels.npy")
    splits = np.load(tmp_path / "cache" / "faces" / "splits.npy")
    assert list(labels[splits == 0]) == [1, 0, 4]
    assert list(labels[splits == 2]) == [1, 0]  # the broken image is skipped and counted
    assert any("unreadable" in r for _, r in summary.skipped)
    assert any("contempt" in n for n in summary.notes)
    votes_arr = np.load(tmp_path / "cache" / "faces" / "votes.npy")
    assert np.allclose(votes_arr.sum(1), 1)


def test_prepare_plain_folders_rgb(tmp_path, astronaut_bgr):
    root = tmp_path / "imgs"
    for split, emo in (("train", "happy"), ("train", "Anger"), ("val", "sad"), ("test", "bored")):
        (root / split / emo).mkdir(parents=True)
        cv2.imwrite(str(root / split / emo / "x.png"), astronaut_bgr[40:220, 150:330])
    summary = prepare([root], tmp_path / "cache", FaceSpec(64, 3))
    images = np.load(tmp_path / "cache" / "faces" / "images.npy")
    assert images.shape == (3, 3, 64, 64)
    assert any("unknown emotion folder" in r for _, r in summary.skipped)
    shutil.rmtree(root)


def test_scan_reports_unparseable(tmp_path):
    (tmp_path / "03-01-01-01-01-01-01.wav").write_bytes(b"")
    (tmp_path / "notes.wav").write_bytes(b"")
    files, bad = scan(tmp_path)
    assert len(files) == 1 and len(bad) == 1 and "notes.wav" in str(bad[0][0])
