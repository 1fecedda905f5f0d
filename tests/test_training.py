"""Training and evaluation smoke runs on a tiny prepared cache: shapes, resume, reports (no timing)."""

import csv
import json
import re

import cv2
import numpy as np
import pytest
import torch
from media import write_wav

from avemo_edge.checkpoint import load_checkpoint
from training.config import ConfigError, load_config
from training.evaluate import evaluate
from training.prepare import FaceSpec, prepare
from training.train import TrainError, train

EMOTION_CODES = (1, 3, 4, 5, 6, 7, 8)  # one per class (02 calm would duplicate neutral)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for actor in (1, 2, 16, 21, 22):  # train, train, val, test, test (paper split)
        d = root / "ravdess" / f"Actor_{actor:02d}"
        d.mkdir(parents=True)
        for code in EMOTION_CODES:
            write_wav(d / f"03-01-{code:02d}-01-01-01-{actor:02d}.wav", seconds=0.8, rate=16000, channels=1)
    rng = np.random.default_rng(0)
    for folder in ("FER2013Train", "FER2013Valid", "FER2013Test"):
        (root / "ferplus" / folder).mkdir(parents=True)
        rows = []
        for i in range(14):
            name = f"{i}.png"
            cv2.imwrite(str(root / "ferplus" / folder / name), rng.integers(0, 255, (48, 48), dtype=np.uint8))
            votes = [0] * 10
            votes[[0, 1, 3, 4, 6, 5, 2][i % 7]] = 10  # FER+ columns of our 7 classes, in our order
            rows.append(f'{name},"(0, 0, 48, 48)",' + ",".join(map(str, votes)))
        (root / "ferplus" / folder / "label.csv").write_text("\n".join(rows) + "\n")
    out = root / "cache"
    prepare([root / "ravdess", root / "ferplus"], out, FaceSpec(32, 1))
    return out


def cfg(cache, out, stage, **kw):
    base = {"stage": stage, "cache": str(cache), "out": str(out), "face_size": 32, "batch_size": 4,
            "visual_batch_size": 8, "max_epochs": 2, "threads": 1}  # fmt: skip
    base.update(kw)
    return load_config(None, [], **base)


def test_audio_stage_resume_and_refusal(cache, tmp_path):
    out = tmp_path / "audio"
    best = train(cfg(cache, out, "audio"), echo=lambda *a: None)
    ckpt = load_checkpoint(best)
    assert ckpt.meta["stage"] == "audio" and ckpt.meta["config"]["split"] == "paper"
    assert not torch.equal(ckpt.state_dict["audio.mel_std"].float(), torch.ones(64))  # normalisation was fitted
    log = json.loads((out / "log.json").read_text())
    assert [r["epoch"] for r in log] == [1, 2] and (out / "log.csv").exists()
    with pytest.raises(TrainError, match="already holds a run"):
        train(cfg(cache, out, "audio"), echo=lambda *a: None)
    train(cfg(cache, out, "audio", max_epochs=3), resume=True, echo=lambda *a: None)
    assert len(json.loads((out / "log.json").read_text())) == 3
    warm = train(cfg(cache, tmp_path / "warm", "audio", max_epochs=1, init=str(best)), echo=lambda *a: None)
    assert torch.equal(load_checkpoint(warm).state_dict["audio.mel_mean"], ckpt.state_dict["audio.mel_mean"])
    with pytest.raises(TrainError, match="differs in"):
        train(cfg(cache, out, "audio", max_epochs=4, lr=0.1), resume=True, echo=lambda *a: None)
    state = torch.load(out / "last_state.pt", weights_only=True)  # a run saved before a key existed
    del state["config"]["clip_ce_weight"]
    torch.save(state, out / "last_state.pt")
    train(cfg(cache, out, "audio", max_epochs=4), resume=True, echo=lambda *a: None)
    assert len(json.loads((out / "log.json").read_text())) == 4
    with pytest.raises(TrainError, match=r"differs in \['clip_ce_weight'\]"):
        train(cfg(cache, out, "audio", max_epochs=5, clip_ce_weight=1.0), resume=True, echo=lambda *a: None)


def test_visual_then_joint_pairs_and_report(cache, tmp_path, capsys):
    visual = train(cfg(cache, tmp_path / "visual", "visual", max_epochs=1), echo=lambda *a: None)
    audio = train(cfg(cache, tmp_path / "audio", "audio", max_epochs=1), echo=lambda *a: None)
    joint = train(
        cfg(cache, tmp_path / "joint", "joint", max_epochs=1, init_visual=str(visual), init_audio=str(audio)),
        echo=lambda *a: None,
    )
    meta = load_checkpoint(joint).meta
    assert any("not real videos" in n for n in meta["notes"])
    frozen = train(
        cfg(cache, tmp_path / "frozen", "joint", max_epochs=1, init_visual=str(visual), init_audio=str(audio),
            freeze="visual,audio"),
        echo=lambda *a: None,
    )  # fmt: skip
    a, b = load_checkpoint(visual).state_dict, load_checkpoint(frozen).state_dict
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("visual."))  # weights and BN statistics
    assert not torch.equal(a["fusion.gate_v.weight"], b["fusion.gate_v.weight"])
    # the face-only FER+ loss is added to every batch's: the same run with it trains on more loss
    aux = train(
        cfg(cache, tmp_path / "aux", "joint", max_epochs=1, init_visual=str(visual), init_audio=str(audio),
            freeze="visual,audio", face_aux_weight=1.0, face_mirror=True),
        echo=lambda *a: None,
    )  # fmt: skip
    loss = {r: float(next(csv.DictReader(open(tmp_path / r / "log.csv")))["train_loss"]) for r in ("frozen", "aux")}
    assert loss["aux"] > loss["frozen"] + 1.0, loss  # + a 7-way CE of about ln 7 = 1.95
    assert load_checkpoint(aux).dims.face_mirror
    no_tcs = train(
        cfg(
            cache,
            tmp_path / "joint0",
            "joint",
            max_epochs=1,
            tcs_weight=0.0,
            init_visual=str(visual),
            init_audio=str(audio),
        ),
        echo=lambda *a: None,
    )
    m = evaluate(joint, cache, tmp_path / "eval", no_tcs_checkpoint=no_tcs, n_joins=5, hold_margin=0.1)
    assert m["test"]["n"] == 14  # actors 21 and 22, 7 clips each
    hold = "TCS filter a=0.8 + label hold 0.1"
    assert list(m["ablations"]) == [
        f"TCS loss + {hold}", "TCS loss + TCS filter", "TCS loss + no filter",
        f"no TCS loss + {hold}", "no TCS loss + TCS filter", "no TCS loss + no filter",
        f"audio only ({hold})", f"visual only ({hold})",
    ]  # fmt: skip
    assert m["test"] is m["ablations"][f"TCS loss + {hold}"] and m["smoothing"] == {"alpha": 0.8, "hold_margin": 0.1}
    sw = m["test"]["switch"]
    assert sw["joins"] == 5 and sw["median_from_onset_s"] <= sw["median_s"]
    for fig in ("confusion.png", "roc.png", "radar.png", "gates.png", "curves.png"):
        assert (tmp_path / "eval" / fig).stat().st_size > 1000
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "not real videos" in report and "| macro avg |" in report
    v = evaluate(visual, cache, tmp_path / "eval_v")
    assert v["test"]["n"] == 14 and "ablations" not in v
    from training.face_choice import main as face_choice

    capsys.readouterr()
    face_choice([str(visual), "--cache", str(cache), "--split", "test", "--robust", "7"])
    line = capsys.readouterr().out
    acc = float(re.search(r"accuracy ([0-9.]+) %", line).group(1))
    assert line.startswith(f"{visual}: accuracy") and "on 7 faces" in line and "mirror" in line
    assert acc == pytest.approx(100 * v["test"]["accuracy"], abs=0.01)  # the batch path scores as evaluate does
    from training.mirror import mirrored

    mirrored(visual, tmp_path / "visual_m.pt")
    m = load_checkpoint(tmp_path / "visual_m.pt").build()
    assert m.dims.face_mirror and not load_checkpoint(visual).dims.face_mirror
    x = torch.rand(3, 1, 1, 32, 32)
    with torch.no_grad():  # a mirror image gets the same logits, and the weights are the visual stage's
        assert torch.allclose(m(x, None)[0], m(x.flip(-1), None)[0], atol=1e-5)
    assert torch.equal(
        m.visual.state_dict()["stem.0.weight"], load_checkpoint(visual).build().visual.state_dict()["stem.0.weight"]
    )
    from training.tune_smoothing import ALPHAS, MARGINS, grid

    rows, best, met = grid(joint, cache, n_joins=3, flip_ratio=5.0, max_latency=0.5)
    assert len(rows) == len(ALPHAS) * len(MARGINS) and all(0 <= r["accuracy"] <= 1 for r in rows)
    assert best is None or (best in rows and (not met or best["flip_ratio"] >= 5.0))
    from training.ship import ship

    shipped = ship(joint, tmp_path / "eval", None, tmp_path / "eval_v", tmp_path / "ship" / "m.pt",
                   cv_evals=[tmp_path / "eval", tmp_path / "eval"])  # fmt: skip
    card = (tmp_path / "ship" / "MODEL_CARD.md").read_text()
    assert load_checkpoint(shipped).meta["source_sha256"] == load_checkpoint(joint).sha256
    assert "label hold margin 0.1" in card and "5-fold actor cross-validation" in card and "+- 0.00 %" in card
    assert "this model with faces masked (audio only): accuracy" in card
    from avemo_edge.manifest import sha256_file

    assert f"`sha256sum` prints `{sha256_file(shipped)}`" in card  # what a user's sha256sum shows


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'learning_rate'"):
        load_config(None, ["learning_rate=0.1"])
    with pytest.raises(ConfigError, match="'batch_size': 'eight' is not a int"):
        load_config(None, ["batch_size=eight"])
    bad = tmp_path / "c.toml"
    bad.write_text("lr = [")
    with pytest.raises(ConfigError, match="is not valid toml"):
        load_config(bad)
    good = tmp_path / "g.toml"
    good.write_text("lr = 0.001\ntcs_weight = 0\n")
    c = load_config(good, ["max_epochs=3"])
    assert c.lr == 0.001 and c.tcs_weight == 0.0 and c.max_epochs == 3


def test_clip_and_step_cross_entropy_weights():
    from avemo_edge.model import AVEmotionNet
    from training.config import TrainConfig
    from training.data import Item, collate_clips
    from training.train import clip_forward

    torch.manual_seed(0)
    model = AVEmotionNet().eval()
    items = [Item(None, torch.zeros(n, dtype=torch.bool), torch.randn(n, 64, 10), torch.ones(n, dtype=torch.bool),
                  c, str(c)) for n, c in ((5, 2), (3, 4))]  # fmt: skip
    batch = collate_clips(items)
    with torch.no_grad():
        logits = model(None, batch["audio"], batch["face_mask"], batch["audio_mask"] & batch["valid"])[0]
        clip = clip_forward(
            model, batch, TrainConfig(bf16=False, tcs_weight=0.0, clip_ce_weight=1.0, step_ce_weight=0.0)
        )
        step = clip_forward(model, batch, TrainConfig(bf16=False, tcs_weight=0.0))
    last = torch.stack([logits[0, 4], logits[1, 2]])  # the last real step of each clip, not the padding
    assert clip["loss"].item() == pytest.approx(
        torch.nn.functional.cross_entropy(last, torch.tensor([2, 4])).item(), rel=1e-5
    )
    per_step = torch.cat([logits[0, :5], logits[1, :3]])
    want = torch.nn.functional.cross_entropy(per_step, torch.tensor([2] * 5 + [4] * 3)).item()
    assert step["loss"].item() == pytest.approx(want, rel=1e-5)


def test_crossval_summary_mean_and_sd(tmp_path):
    from avemo_edge.errors import AvemoError
    from avemo_edge.model import EMOTIONS
    from training.crossval import render, summarise

    dirs = []
    for k, acc in enumerate((0.4, 0.5, 0.6)):
        d = tmp_path / f"audio-cv{k}" / "eval"
        d.mkdir(parents=True)
        per_class = {c: {"f1-score": acc} for c in EMOTIONS}
        test = {"accuracy": acc, "macro_f1": acc - 0.1, "weighted_f1": acc, "macro_auc": 0.7, "per_class": per_class}
        other = {**test, "accuracy": acc / 2}
        (d / "metrics.json").write_text(json.dumps({"data": f"fold {k}", "test": test, "ablations": {"raw": other}}))
        dirs.append(d)
    s = summarise(dirs)
    assert s["stats"]["accuracy"]["mean"] == pytest.approx(0.5)
    assert s["stats"]["accuracy"]["sd"] == pytest.approx(0.1)  # sample sd of 0.4, 0.5, 0.6
    assert s["stats"]["macro_f1"]["mean"] == pytest.approx(0.4)
    assert "**50.00 +- 10.00**" in render(s)
    assert summarise(dirs, "raw")["stats"]["accuracy"]["mean"] == pytest.approx(0.25)
    with pytest.raises(AvemoError, match="has no variant 'filter'; it has raw"):
        summarise(dirs, "filter")
    with pytest.raises(AvemoError, match="has no metrics.json"):
        summarise([tmp_path / "missing"])


def test_crossval_of_audio_reports_mean_sd_and_worst_class(tmp_path):
    from training.crossval import render_audio_reports, summarise_audio_reports

    dirs = []
    for k, (acc, f1) in enumerate(((0.4, 0.3), (0.6, 0.5))):
        d = tmp_path / f"cv{k}"
        d.mkdir()
        zero = {"mean_probs": {"accuracy": acc, "macro_f1": f1, "per_class_f1": {"sad": 0.1 * k, "angry": 0.9}},
                "shown_at_end": {"accuracy": acc + 0.02}, "shown_1s_after_onset_accuracy": acc - 0.1}  # fmt: skip
        gains = {g: {"labels_changed": 0.02 * (k + 1)} for g in ("-20 dB", "-10 dB", "+6 dB")}
        (d / "audio_report.json").write_text(json.dumps({"split": f"cv{k}", "clips": 300, "+0 dB": zero, **gains}))
        dirs.append(d)
    s = summarise_audio_reports(dirs)
    assert s["stats"]["macro_f1"]["mean"] == pytest.approx(0.4)
    assert s["stats"]["macro_f1"]["sd"] == pytest.approx(0.1414, abs=1e-4)
    assert s["labels_changed_mean"]["-20 dB"] == pytest.approx(0.03)
    assert s["per_class_f1_mean"]["sad"] == pytest.approx(0.05)
    text = render_audio_reports(s)
    assert (
        "**40.0 +- 14.1**" in text and "| cv0 | cv0 | 300 | 40.0 | 30.0 | 30.0 / 42.0 | 2.0 / 2.0 / 2.0 | 0.0 |" in text
    )


def test_recipe_choices_are_checked():
    with pytest.raises(ConfigError, match="optimizer must be one of adam, adamw, sgd, not 'lion'"):
        load_config(None, ["optimizer=lion"])
    with pytest.raises(ConfigError, match="schedule must be one of"):
        load_config(None, ["schedule=steps"])
    with pytest.raises(ConfigError, match="audio_norm must be one of band, level"):
        load_config(None, ["audio_norm=cepstral"])
    assert load_config(None, ["class_weight=balanced"]).class_weight == "balanced"


def test_soft_label_ce_and_onset_mask():
    from training.train import _ce

    logits = torch.randn(4, 7)
    hard = torch.tensor([0, 3, 6, 2])
    # a one-hot distribution is the ordinary cross-entropy, with or without class weights
    assert _ce(logits, torch.nn.functional.one_hot(hard, 7).float(), None, 0.0).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, hard).item(), rel=1e-5
    )
    w = torch.linspace(0.5, 2.0, 7)
    assert _ce(logits, torch.nn.functional.one_hot(hard, 7).float(), w, 0.0).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, hard, weight=w).item(), rel=1e-5
    )
    soft = torch.softmax(torch.randn(4, 7), -1)
    want = -(soft * logits.log_softmax(-1)).sum(-1).mean()
    assert _ce(logits, soft, None, 0.0).item() == pytest.approx(want.item(), rel=1e-5)


def test_ce_from_onset_ignores_the_lead_in():
    from avemo_edge.model import AVEmotionNet
    from training.config import TrainConfig
    from training.data import Item, collate_clips
    from training.train import clip_forward

    torch.manual_seed(0)
    model = AVEmotionNet().eval()
    items = [Item(None, torch.zeros(6, dtype=torch.bool), torch.randn(6, 64, 10), torch.ones(6, dtype=torch.bool),
                  1, "a", onset=4)]  # fmt: skip
    batch = collate_clips(items)
    with torch.no_grad():
        logits = model(None, batch["audio"], batch["face_mask"], batch["audio_mask"])[0]
        out = clip_forward(model, batch, TrainConfig(bf16=False, tcs_weight=0.0, ce_from_onset=True))
    want = torch.nn.functional.cross_entropy(logits[0, 4:], torch.tensor([1, 1])).item()
    assert out["loss"].item() == pytest.approx(want, rel=1e-5)


def test_face_augmentation_and_spec_augment_shapes():
    from training.augment import augment_face, spec_augment

    rng = np.random.default_rng(0)
    face = np.random.default_rng(1).integers(0, 255, (1, 48, 48), dtype=np.uint8)
    out = augment_face(face, rng, 0.5, 15.0, 0.3, shift=0.1, scale=0.1, blur_p=1.0, erase_p=1.0)
    assert out.shape == (1, 48, 48) and out.dtype == np.float32 and 0.0 <= out.min() and out.max() <= 1.0
    assert not np.allclose(out, face / 255.0)
    slices = torch.randn(30, 64, 10)
    masked = spec_augment(slices, 8, 3, np.random.default_rng(2))
    assert masked.shape == slices.shape and (masked == 0).any() and torch.equal(slices, slices.clone())


def test_pooled_ce_is_the_ce_of_the_mean_logits_of_taught_steps():
    from avemo_edge.model import AVEmotionNet
    from training.config import TrainConfig
    from training.data import Item, collate_clips
    from training.train import clip_forward

    torch.manual_seed(0)
    model = AVEmotionNet().eval()
    items = [Item(None, torch.zeros(n, dtype=torch.bool), torch.randn(n, 64, 10), torch.ones(n, dtype=torch.bool),
                  c, str(c), onset=o) for n, c, o in ((6, 2, 2), (3, 4, 0))]  # fmt: skip
    batch = collate_clips(items)
    cfg = TrainConfig(bf16=False, tcs_weight=0.0, step_ce_weight=0.0, pooled_ce_weight=1.0, ce_from_onset=True)
    with torch.no_grad():
        logits = model(None, batch["audio"], batch["face_mask"], batch["audio_mask"] & batch["valid"])[0]
        out = clip_forward(model, batch, cfg)
    pooled = torch.stack([logits[0, 2:6].mean(0), logits[1, :3].mean(0)])  # no lead-in, no padding
    want = torch.nn.functional.cross_entropy(pooled, torch.tensor([2, 4])).item()
    assert out["loss"].item() == pytest.approx(want, rel=1e-5)


def test_log_gain_matches_the_front_end_on_the_waveform():
    from avemo_edge.audio import log_mel_slices
    from training.augment import log_gain

    rng = np.random.default_rng(0)
    x = np.concatenate([np.zeros(3200), 0.05 * rng.standard_normal(16000)]).astype(np.float32)  # zero lead-in
    for g in (-20.0, 6.0):
        want = log_mel_slices(x * np.float32(10 ** (g / 20)))
        assert float((log_gain(log_mel_slices(x), g) - want).abs().max()) < 1e-3


def test_each_branch_gets_its_own_learning_rate():
    from avemo_edge.model import AVEmotionNet, ModelDims
    from training.config import TrainConfig
    from training.train import param_groups

    model = AVEmotionNet(ModelDims(face_width=8))
    groups = param_groups(model, TrainConfig(lr=1e-3, lr_visual=5e-5, lr_audio=1e-4))
    lrs = {g["branch"]: g["lr"] for g in groups}
    assert lrs == {"visual": 5e-5, "audio": 1e-4, "rest": 1e-3}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    # lr_audio = 0: the audio branch trains at lr, as before the setting existed
    assert {g["branch"]: g["lr"] for g in param_groups(model, TrainConfig(lr=1e-3))}["audio"] == 1e-3


def test_joint_start_scales_the_voice_embedding_and_refuses_a_differently_pooled_branch(tmp_path):
    from avemo_edge.checkpoint import save_checkpoint
    from avemo_edge.model import AVEmotionNet, ModelDims
    from training.train import build_model

    torch.manual_seed(0)
    pooled = AVEmotionNet(ModelDims(face_size=32, audio_pool_s=3.0))
    save_checkpoint(tmp_path / "a.pt", pooled)
    kw = {"face_size": 32, "init_audio": str(tmp_path / "a.pt")}
    model = build_model(cfg(tmp_path, tmp_path / "j", "joint", audio_pool_s=3.0, audio_emb_scale=0.25, **kw))
    assert torch.allclose(model.audio.proj.weight, 0.25 * pooled.audio.proj.weight)
    assert torch.allclose(model.audio.pool.value.weight, pooled.audio.pool.value.weight)  # the rest as it was
    with pytest.raises(TrainError, match="has audio_pool_s=3.0; this run builds audio_pool_s=0.0"):
        build_model(cfg(tmp_path, tmp_path / "j", "joint", **kw))
    with pytest.raises(TrainError, match="audio_emb_scale must be positive"):
        build_model(cfg(tmp_path, tmp_path / "j", "joint", audio_pool_s=3.0, audio_emb_scale=0.0, **kw))


def test_sweep_packs_faces_and_trains_recipes_side_by_side(cache, tmp_path):
    from training.data import FaceCache
    from training.sweep import SweepError, pack_faces, plan_epochs, sweep, unpack_faces

    size = pack_faces(cache / "faces", tmp_path / "faces.npz")
    assert size > 0
    n = unpack_faces(tmp_path / "faces.npz", tmp_path / "cache" / "faces")
    src, back = FaceCache(cache / "faces"), FaceCache(tmp_path / "cache" / "faces")
    keep = np.isin(src.splits, [0, 1])
    assert n == keep.sum() and len(back.indices("test")) == 0  # train and val travel; test is scored at home
    assert np.array_equal(back.labels, src.labels[keep]) and np.allclose(back.votes, src.votes[keep])
    assert np.abs(back.images.astype(int) - src.images[keep].astype(int)).mean() < 8  # JPEG q90, not raw
    with pytest.raises(SweepError, match="prepared"):
        unpack_faces(tmp_path / "faces.npz", cache / "faces")  # never over the lossless cache
    assert plan_epochs([2.0, 3.0], 100, 1, 50) == 16 and plan_epochs([2.0], 1, 5, 50) == 5
    (tmp_path / "cache" / "ravdess").mkdir()
    common = [f"cache={tmp_path / 'cache'}", "stage=visual", "face_size=32", "visual_batch_size=8", "threads=1",
              "schedule=cosine", "workers=1"]  # fmt: skip
    res = sweep(["a:face_width=8", "b:face_width=8,face_stem=full"], common, tmp_path / "runs", 120,
                tmp_path / "export", min_epochs=1, max_epochs=2, echo=lambda *a: None)  # fmt: skip
    for name in ("a", "b"):
        assert res[name]["returncode"] == 0 and res[name]["epochs_done"] == res[name]["epochs_planned"]
        ckpt = load_checkpoint(tmp_path / "export" / f"{name}-fp16.pt")
        assert ckpt.dims.face_stem == ("full" if name == "b" else "small")
        assert all(v.dtype == torch.float16 for v in ckpt.state_dict.values() if v.is_floating_point())
    assert json.loads((tmp_path / "export" / "sweep.json").read_text())["a"]["log"]
