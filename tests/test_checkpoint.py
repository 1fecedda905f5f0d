import subprocess
import sys

import numpy as np
import pytest
import torch

from avemo_edge.checkpoint import Checkpoint, load_checkpoint, load_model, save_checkpoint
from avemo_edge.errors import CheckpointError
from avemo_edge.model import AVEmotionNet, ModelDims


@pytest.fixture()
def saved(tmp_path):
    model = AVEmotionNet(ModelDims(face_size=32)).eval()
    path = tmp_path / "m.pt"
    # torch.__version__ is a str subclass and numpy floats are float subclasses: both must load back
    digest = save_checkpoint(
        path, model, meta={"epoch": 3, "note": "test", "torch": torch.__version__, "acc": np.float64(0.5)}
    )
    return model, path, digest


def test_round_trip_rebuilds_from_file_alone(saved):
    model, path, digest = saved
    ckpt = load_checkpoint(path)
    assert ckpt.sha256 == digest and ckpt.meta["epoch"] == 3 and ckpt.dims.face_size == 32
    assert ckpt.meta["torch"] == str(torch.__version__) and ckpt.meta["acc"] == 0.5
    assert ckpt.preprocessing["audio"]["hop_length"] == 320 and ckpt.preprocessing["face"]["size"] == 32
    loaded = load_model(path)
    x = (torch.rand(1, 4, 1, 32, 32), torch.randn(1, 4, 64, 10))
    with torch.no_grad():
        assert torch.equal(model(*x)[0], loaded(*x)[0])


def test_half_precision_weights(tmp_path):
    model = AVEmotionNet(ModelDims(face_size=32)).eval()
    save_checkpoint(tmp_path / "h.pt", model, half=True)
    loaded = load_model(tmp_path / "h.pt")
    assert next(loaded.parameters()).dtype == torch.float32
    x = (torch.rand(1, 4, 1, 32, 32), torch.randn(1, 4, 64, 10))
    with torch.no_grad():
        p0, p1 = model(*x)[0].softmax(-1), loaded(*x)[0].softmax(-1)
    assert (p0 - p1).abs().max() < 1e-2
    assert (tmp_path / "h.pt").stat().st_size < 0.55 * sum(p.numel() * 4 for p in model.parameters())


def test_tampered_weights_are_refused(saved, tmp_path):
    _, path, _ = saved
    obj = torch.load(path, weights_only=True)
    obj["state_dict"]["fusion.gate_v.bias"] += 0.5
    bad = tmp_path / "tampered.pt"
    torch.save(obj, bad)
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(bad)


def test_truncated_and_foreign_files_are_refused(saved, tmp_path):
    _, path, _ = saved
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="not a readable torch file"):
        load_checkpoint(cut)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="not an avemo-edge checkpoint"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_mismatched_preprocessing_is_refused(saved, tmp_path, monkeypatch):
    _, path, _ = saved
    import avemo_edge.checkpoint as C

    real = C.preprocessing_constants
    monkeypatch.setattr(C, "preprocessing_constants", lambda: {**real(), "hop_length": 160})
    with pytest.raises(CheckpointError, match="hop_length=320 but this runtime computes hop_length=160"):
        load_checkpoint(path)


def test_mismatched_weights_are_refused(saved):
    _, path, _ = saved
    ckpt = load_checkpoint(path)
    wrong = Checkpoint(ModelDims(face_size=32, lstm_layers=3), ckpt.state_dict, path=path)
    with pytest.raises(CheckpointError, match="does not fit"):
        wrong.build()


def test_cli_prints_one_sentence_for_a_bad_checkpoint(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    r = subprocess.run([sys.executable, "-m", "avemo_edge.cli", "info", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "is not a readable torch file" in r.stderr


# --- issue #16 row 13: wording ------------------------------------------------------------------
class _Shell:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_pickled_code_is_refused_as_such(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"format": "avemo-edge-checkpoint", "payload": _Shell()}, evil)
    with pytest.raises(CheckpointError, match=r"holds pickled code \((posix|nt)\.system\) that weights-only loading"):
        load_checkpoint(evil)


def test_export_folder_given_to_torch_says_it_needs_a_checkpoint(tmp_path):
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "manifest.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"is an export folder, not a file: the torch backend needs a \.pt"):
        load_checkpoint(tmp_path / "onnx")
    with pytest.raises(CheckpointError, match=r"is an export folder, not a file"):
        load_checkpoint(tmp_path)  # `avemo-edge export --out` folder: one export per format inside
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"empty is a folder, not a file: the torch backend needs a \.pt"):
        load_checkpoint(tmp_path / "empty")


def test_checkpoint_given_to_an_exported_graph_backend_says_it_needs_an_export(saved):
    from avemo_edge.errors import ExportedModelError
    from avemo_edge.manifest import load_export

    _, path, _ = saved
    with pytest.raises(ExportedModelError, match=r"m\.pt is a torch checkpoint, but the onnxruntime backend runs the "
                       r"folder that `avemo-edge export` writes: export it first \(avemo-edge export"):  # fmt: skip
        load_export(path, "onnxruntime")
