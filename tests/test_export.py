"""Export: three ONNX graphs per checkpoint, their manifest, the onnxruntime backend and parity.

The model has random weights (no trained checkpoint exists yet). Random weights give nearly
uniform probabilities, against which any parity bound is easy to meet, so `spread_model` scales
the classifier up until probabilities are spread (median top class ~0.26 on the parity stream)
and sets normalisation buffers and batch-norm statistics away from their identity defaults, so
that a graph that dropped them would fail.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="export needs onnx (pip install avemo-edge[onnx])")
ort = pytest.importorskip("onnxruntime", reason="the onnxruntime backend needs onnxruntime")

from avemo_edge.backends import TorchBackend, create_backend  # noqa: E402
from avemo_edge.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from avemo_edge.errors import AvemoError, ExportedModelError, ExportError  # noqa: E402
from avemo_edge.manifest import GRAPHS, METADATA_KEY, sha256_file  # noqa: E402
from avemo_edge.model import AVEmotionNet, ModelDims  # noqa: E402
from avemo_edge.recognizer import StreamingRecognizer  # noqa: E402
from export.exporter import export_checkpoint  # noqa: E402
from export.formats import BY_NAME, formats_markdown, parse_formats  # noqa: E402
from export.stream import parity_stream  # noqa: E402
from export.verify import compare, run_stream, verify_exports  # noqa: E402

DIMS = ModelDims(face_size=32, face_mirror=True)  # the mirror gather and batch halves in every graph
REPO = Path(__file__).resolve().parents[1]


def spread_model(dims: ModelDims = DIMS) -> AVEmotionNet:
    torch.manual_seed(0)
    model = AVEmotionNet(dims).eval()
    with torch.no_grad():
        model.fusion.classifier[0].weight.mul_(8.0)  # logits spread: probabilities far from uniform
        model.fusion.classifier[3].weight.mul_(8.0)
        model.audio.mel_mean.copy_(torch.linspace(-6.0, -2.0, dims.n_mels))  # per-band statistics in the graph
        model.audio.mel_std.copy_(torch.linspace(1.5, 3.0, dims.n_mels))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch / onnxruntime thread: the CI machine has 2 cores, shared, and oversubscribing them is 5x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    ckpt = root / "model.pt"
    save_checkpoint(ckpt, spread_model())
    lines = []
    report = export_checkpoint(ckpt, root / "out", parse_formats("onnx,onnx-fp16"), lines.append)
    return ckpt, root / "out", report, lines


@pytest.fixture(scope="module")
def stream():
    return parity_stream(DIMS, steps=60)


def test_three_graphs_pass_the_checker_and_describe_themselves(exported):
    ckpt, out, report, lines = exported
    sha = load_checkpoint(ckpt).sha256
    for fmt in ("onnx", "onnx-fp16"):
        manifest = json.loads((out / fmt / "manifest.json").read_text())
        assert manifest["source_checkpoint"]["sha256"] == sha and manifest["opset"] == 17
        assert manifest["versions"]["exporter"] == "torchscript"
        assert manifest["classes"][0] == "neutral" and manifest["preprocessing"]["audio"]["hop_length"] == 320
        assert manifest["precision"] == ("fp32" if fmt == "onnx" else "fp16")
        for graph, io in GRAPHS.items():
            entry = manifest["graphs"][graph]
            path = out / fmt / entry["file"]
            assert entry["sha256"] == sha256_file(path)
            model = onnx.load(str(path))
            onnx.checker.check_model(model, full_check=True)
            assert [t["name"] for t in entry["inputs"]] == list(io.inputs)
            assert [t["name"] for t in entry["outputs"]] == list(io.outputs)
            assert all(t["dtype"] == "float32" for t in entry["inputs"] + entry["outputs"])  # fp32 I/O for fp16 too
            dims = [d for t in entry["inputs"] + entry["outputs"] for d in t["shape"]]
            assert all(isinstance(d, int) or d == "batch" for d in dims)  # only the batch is dynamic
            meta = json.loads({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
            assert meta["graph"] == graph and meta["source_checkpoint"]["sha256"] == sha
            assert meta["inputs"] == entry["inputs"]
    # the LSTM is native ONNX LSTM nodes, one per layer (onnxruntime and TensorRT run them as such)
    ops = [n.op_type for n in onnx.load(str(out / "onnx" / "audio_step.onnx")).graph.node]
    assert ops.count("LSTM") == DIMS.lstm_layers and "Loop" not in ops and "Scan" not in ops
    audio = json.loads((out / "onnx" / "manifest.json").read_text())["graphs"]["audio_step"]
    assert audio["inputs"][1]["shape"] == [2, "batch", 128] and audio["inputs"][0]["shape"] == ["batch", 64, 10]
    fp16 = onnx.load(str(out / "onnx-fp16" / "visual_encoder.onnx"))
    assert {i.data_type for i in fp16.graph.initializer if i.dims} == {onnx.TensorProto.FLOAT16}
    # one line per file with its size and time
    assert sum(1 for line in lines if " MB " in line and line.rstrip().endswith(".onnx")) == 6


def test_each_graph_matches_torch_at_a_dynamic_batch(exported):
    ckpt, out, *_ = exported
    model = load_checkpoint(ckpt).build()
    rng = np.random.default_rng(0)
    b = 3
    face = rng.random((b, 1, 32, 32), dtype=np.float32)
    mel = (rng.standard_normal((b, 64, 10)) * 2 - 4).astype(np.float32)
    h, c = rng.standard_normal((2, 2, b, 128)).astype(np.float32) * 0.3
    sess = {
        g: ort.InferenceSession(str(out / "onnx" / f"{g}.onnx"), providers=["CPUExecutionProvider"]) for g in GRAPHS
    }
    with torch.no_grad():
        v = model.visual(torch.from_numpy(face))
        a, (h2, c2) = model.audio(torch.from_numpy(mel)[:, None], (torch.from_numpy(h), torch.from_numpy(c)))
        fm, am = torch.tensor([True, False, True]), torch.tensor([True, True, False])
        logits, alpha, beta = model.fusion(v, a[:, 0], fm, am)
    (gv,) = sess["visual_encoder"].run(None, {"face": face})
    ga, gh, gc = sess["audio_step"].run(None, {"mel": mel, "h_in": h, "c_in": c})
    gl, gal, gbe = sess["fusion_head"].run(
        None, {"visual_emb": gv, "audio_emb": ga, "face_mask": fm.float().numpy(), "audio_mask": am.float().numpy()}
    )
    for got, want in [(gv, v), (ga, a[:, 0]), (gh, h2), (gc, c2), (gl, logits), (gal, alpha), (gbe, beta)]:
        assert np.abs(got - want.numpy()).max() < 1e-4
    assert gal[1] == 0 and gbe[2] == 0  # masks force the missing modality's gate to 0


def test_parity_on_onnxruntime_cpu_with_carried_state(exported, stream):
    ckpt, out, report, _ = exported
    assert len(stream) >= 50
    assert any(f is None for f in stream.faces) and any(a is None for a in stream.audio)
    result = verify_exports(load_checkpoint(ckpt), out, report.formats, print, stream=stream, threads=1)
    rows = {r.export_format: r for r in result.rows}
    assert result.ok, result.lines()
    assert rows["onnx"].max_abs <= 1e-4 and rows["onnx"].status == "pass"
    assert rows["onnx-fp16"].max_abs <= 1e-2 and rows["onnx-fp16"].argmax >= 0.99
    assert all(r.argmax == 1.0 for r in result.rows)
    assert "CPUExecutionProvider" in rows["onnx"].backend

    # the comparison is meaningful: probabilities are far from uniform, and the state matters
    ref = run_stream(TorchBackend(load_checkpoint(ckpt)), stream)
    assert np.median(ref.probs.max(1)) > 0.2 and len(set(ref.probs.argmax(1))) > 1
    backend = create_backend("onnxruntime", out / "onnx", provider="cpu", threads=1)
    fresh = [backend.step(f, a, backend.init_state())[0] for f, a in zip(stream.faces, stream.audio, strict=True)]
    fresh_p = np.exp(fresh) / np.exp(fresh).sum(1, keepdims=True)
    assert np.abs(fresh_p - ref.probs).max() > 1e-2  # forgetting (h, c) between steps would be caught


def test_pooled_audio_branch_exports_with_its_statistics_in_the_state(tmp_path):
    """The pooled statistics ride in extra rows of h and c: the graphs keep their inputs, and a
    stream with gaps and carried state matches torch."""
    dims = ModelDims(face_size=32, face_width=8, audio_pool_s=2.0)
    ckpt = tmp_path / "pooled.pt"
    save_checkpoint(ckpt, spread_model(dims))
    report = export_checkpoint(ckpt, tmp_path / "out", parse_formats("onnx"), print)
    stream = parity_stream(dims, steps=40)
    quiet = lambda line: None  # noqa: E731
    result = verify_exports(load_checkpoint(ckpt), tmp_path / "out", report.formats, quiet, stream=stream, threads=1)
    assert result.ok and result.rows[0].max_abs <= 1e-4, result.lines()
    backend = create_backend("onnxruntime", tmp_path / "out" / "onnx", provider="cpu", threads=1)
    h, c = backend.init_state()
    assert h.shape == c.shape == dims.state_shape(1)


def test_streaming_recognizer_runs_unchanged_on_onnxruntime(exported, stream):
    _, out, *_ = exported
    backend = create_backend("onnxruntime", out / "onnx-fp16", provider="auto", threads=1)
    assert backend.classes[0] == "neutral" and backend.dims == DIMS
    rec = StreamingRecognizer(backend)
    results = [
        rec.step(f, a, t=0.1 * i) for i, (f, a) in enumerate(zip(stream.faces[:12], stream.audio[:12], strict=True))
    ]
    assert all(abs(r.probs.sum() - 1) < 1e-6 and r.label in backend.classes for r in results)
    missing_face = next(r for r in results if not r.face)
    assert missing_face.alpha == 0
    with pytest.raises(ExportedModelError, match="holds several exports; pass one of them"):
        create_backend("onnxruntime", out)
    with pytest.raises(ExportedModelError, match="for the onnxruntime backend, not for tensorrt"):
        from avemo_edge.manifest import load_export

        load_export(out / "onnx", "tensorrt")
    with pytest.raises(Exception, match="provider must be one of auto, tensorrt, cuda, cpu; not 'gpu'"):
        create_backend("onnxruntime", out / "onnx", provider="gpu")


def test_batched_rows_on_onnxruntime_equal_per_face_steps_and_torch(exported, stream):
    """The visual graph's batch axis is dynamic: n faces are one visual_encoder run, as n batch-1 steps give."""
    ckpt, out, *_ = exported
    backend = create_backend("onnxruntime", out / "onnx", provider="cpu", threads=1)
    runs, inner = [], backend._run

    def counted(graph, feeds):
        runs.append((graph, next(iter(feeds.values())).shape[0]))  # (graph, batch of its first input)
        return inner(graph, feeds)

    backend._run = counted
    faces = [f for f in stream.faces if f is not None][:4]
    slice_ = next(a for a in stream.audio if a is not None)
    state = backend.init_state()
    rows = (faces, [slice_, None, None, None], [state, None, None, None])
    logits, alpha, beta, states = backend.step_rows(*rows)
    assert runs == [("visual_encoder", 4), ("audio_step", 1), ("fusion_head", 4)]
    backend.max_batch, runs[:] = 3, []  # a TensorRT profile's largest batch: the rows go in chunks
    chunked = backend.step_rows(*rows)
    assert runs == [("visual_encoder", 3), ("visual_encoder", 1), ("audio_step", 1)] + [
        ("fusion_head", 3),
        ("fusion_head", 1),
    ]
    assert np.abs(chunked[0] - logits).max() < 1e-6
    backend._run, backend.max_batch = inner, None
    ref = [backend.step(faces[0], slice_, state)] + [backend.step(f, None, state) for f in faces[1:]]
    assert np.abs(logits - np.stack([r[0] for r in ref])).max() < 1e-5
    assert np.allclose(beta, [r[2] for r in ref]) and beta[1:].max() == 0
    assert np.abs(states[0][0] - ref[0][3][0]).max() < 1e-6 and states[1] is None
    torch_rows = TorchBackend(load_checkpoint(ckpt)).step_rows(
        *rows[:2], [(torch.from_numpy(state[0]), torch.from_numpy(state[1]))] + [None] * 3
    )
    assert np.abs(logits - torch_rows[0]).max() < 1e-4


def test_provider_failure_at_run_time_is_one_sentence_not_a_cpu_fallback(exported, stream, capfd):
    """onnxruntime's own fallback would print to stdout, move the session to the CPU and retry."""
    from onnxruntime.capi.onnxruntime_pybind11_state import EPFail

    from avemo_edge.errors import BackendError

    _, out, *_ = exported
    backend = create_backend("onnxruntime", out / "onnx", provider="cpu", threads=1)
    session = backend.sessions["fusion_head"]  # runs on every step
    calls = []

    real = session._sess

    class BrokenProvider:  # wraps the C++ session: its provider fails mid-stream
        def __getattr__(self, name):
            return getattr(real, name)

        def run(self, *args):
            calls.append("run")
            raise EPFail("CUDA failure 700: an illegal memory access was encountered")

    session._sess = BrokenProvider()
    session.set_providers = lambda *a, **k: calls.append("set_providers")  # what the fallback would call
    capfd.readouterr()
    with pytest.raises(BackendError) as caught:
        backend.step(stream.faces[0], stream.audio[0], backend.init_state())
    message = str(caught.value)
    assert message == (
        "onnxruntime's CPUExecutionProvider failed running graph fusion_head (CUDA failure 700: an illegal memory "
        "access was encountered); it does not fall back to the CPU, so restart the backend or choose provider='cpu'"
    )
    assert "\n" not in message and calls == ["run"]  # no retry, no switch of providers
    assert capfd.readouterr().out == ""
    session._sess = real


def test_construction_fallback_prints_nothing_to_stdout(exported, monkeypatch, capfd, caplog):
    """A provider that raises while a session is made: onnxruntime print()s and retries on the CPU."""
    _, out, *_ = exported
    create = ort.InferenceSession._create_inference_session
    failed = []

    def first_fails(self, providers, *args, **kwargs):
        if not failed:
            failed.append(providers)
            self._fallback_providers = ["CPUExecutionProvider"]  # set by onnxruntime before a provider starts
            raise RuntimeError("provider library libcublasLt.so.12 not found")
        return create(self, providers, *args, **kwargs)

    monkeypatch.setattr(ort.InferenceSession, "_create_inference_session", first_fails)
    capfd.readouterr()
    with caplog.at_level("WARNING", logger="avemo_edge"):
        backend = create_backend("onnxruntime", out / "onnx", provider="cpu", threads=1)
    assert failed and capfd.readouterr().out == ""
    assert any("libcublasLt.so.12" in r.getMessage() for r in caplog.records)
    assert backend.provider == "CPUExecutionProvider"


def test_dynamo_exporter_keeps_a_native_lstm_and_matches_torch():
    pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript")
    from export.onnx_export import exporter_for, graph_modules, to_onnx

    assert exporter_for(18) == "dynamo" and exporter_for(17) == "torchscript"
    module, args, axes = graph_modules(spread_model())["audio_step"]
    proto = to_onnx(module, args, "audio_step", axes, 18)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("LSTM") == args[1].shape[0] and "Loop" not in ops and "Scan" not in ops  # one per layer
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [18]
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    mel, h, c = (a.numpy() for a in args)
    feeds = {"mel": mel[:1], "h_in": h[:, :1], "c_in": c[:, :1]}  # batch 1, not the traced 2: batch stays dynamic
    with torch.no_grad():
        ref = module(*(torch.from_numpy(feeds[k]) for k in ("mel", "h_in", "c_in")))
    for got, want in zip(session.run(None, feeds), ref, strict=True):
        assert np.abs(got - want.numpy()).max() <= 1e-4


def test_dynamo_export_streams_like_torch(exported, stream, tmp_path):
    """Opset 18 (dynamo exporter) through the same streaming parity as the default, fp16 and int8 included.

    Failed before: the fusion head was traced with one tensor for both embeddings and one for both
    masks, which torch.export binds to one graph input (pytorch/pytorch#139646); the graph read
    audio_emb and audio_mask for both branches (max abs 0.27, top class on 22 % of steps). int8
    stopped in onnxruntime's symbolic shape inference on the opset-18 ReduceL2.
    """
    pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript")
    from export.onnx_export import unused_inputs

    ckpt, *_ = exported
    formats = parse_formats("onnx,onnx-fp16,onnx-int8")
    export_checkpoint(ckpt, tmp_path, formats, print, opset=18, calibration=(16, 32))
    manifest = json.loads((tmp_path / "onnx" / "manifest.json").read_text())
    assert manifest["versions"]["exporter"] == "dynamo" and manifest["opset"] == 18
    for graph in GRAPHS:
        assert unused_inputs(onnx.load(str(tmp_path / "onnx" / f"{graph}.onnx"))) == [], graph
    int8 = onnx.load(str(tmp_path / "onnx-int8" / "visual_encoder.onnx"))
    assert any(n.op_type == "QuantizeLinear" for n in int8.graph.node)
    result = verify_exports(load_checkpoint(ckpt), tmp_path, formats, print, stream=stream, threads=1)
    rows = {r.export_format: r for r in result.rows}
    assert result.ok, result.lines()
    assert rows["onnx"].status == "pass" and rows["onnx"].max_abs <= 1e-4 and rows["onnx"].argmax == 1.0
    assert rows["onnx-fp16"].status == "pass" and rows["onnx-int8"].argmax >= 0.9


def test_aliased_example_inputs_are_untied_and_an_unused_input_is_refused(monkeypatch):
    import export.onnx_export as ox
    from export.onnx_export import exporter_for, graph_modules, to_onnx, unused_inputs

    module, (v, a, fm, am), axes = graph_modules(spread_model())["fusion_head"]
    assert v is not a and fm is not am and not torch.equal(fm, am)  # distinct example inputs
    opsets = [17] + ([18] if exporter_for(18) == "dynamo" else [])
    rng = np.random.default_rng(1)
    feeds = {
        "visual_emb": rng.standard_normal((4, 128), dtype=np.float32),
        "audio_emb": rng.standard_normal((4, 128), dtype=np.float32),
        "face_mask": np.array([1, 0, 1, 0], np.float32),
        "audio_mask": np.array([1, 1, 0, 0], np.float32),
    }
    with torch.no_grad():
        want = module(*(torch.from_numpy(x) for x in feeds.values()))
    for opset in opsets:  # the same tensor twice, as the old example inputs: to_onnx unties them
        proto = to_onnx(module, (v, v, am, am), "fusion_head", axes, opset)
        assert unused_inputs(proto) == [], opset
        session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        for got, ref in zip(session.run(None, feeds), want, strict=True):
            assert np.abs(got - ref.numpy()).max() <= 1e-4, opset
    if 18 in opsets:  # left tied, torch.export reads one input for both: refused with a sentence, not written
        monkeypatch.setattr(ox, "untie", lambda args: args)
        with pytest.raises(ExportError, match=r"dynamo exporter's fusion_head graph never reads its input\(s\) "
                           r"visual_emb, face_mask, .* export at opset 17"):  # fmt: skip
            to_onnx(module, (v, v, am, am), "fusion_head", axes, 18)
    h = onnx.helper
    x, y = (h.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1]) for n in ("x", "y"))
    out = h.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [1])
    graph = h.make_graph([h.make_node("Relu", ["x"], ["z"])], "g", [x, y], [out])
    assert unused_inputs(h.make_model(graph)) == ["y"]


def test_tampered_or_missing_graph_is_refused(exported, tmp_path):
    _, out, *_ = exported
    bad = tmp_path / "onnx"
    shutil.copytree(out / "onnx", bad)
    model = onnx.load(str(bad / "fusion_head.onnx"))
    w = next(i for i in model.graph.initializer if i.dims)
    arr = onnx.numpy_helper.to_array(w).copy()
    arr.flat[0] += 0.5
    w.CopyFrom(onnx.numpy_helper.from_array(arr, w.name))
    onnx.save(model, str(bad / "fusion_head.onnx"))
    with pytest.raises(ExportedModelError) as e:
        create_backend("onnxruntime", bad)
    msg = str(e.value)
    assert "fusion_head.onnx has sha256" in msg and "manifest.json records" in msg and "refused" in msg
    assert "\n" not in msg
    (bad / "fusion_head.onnx").unlink()
    with pytest.raises(ExportedModelError, match="fusion_head.onnx is missing"):
        create_backend("onnxruntime", bad)


def test_int8_export_reports_its_accuracy_cost(exported, stream, tmp_path):
    from export.onnx_int8 import export_int8

    ckpt, out, *_ = exported
    source = json.loads((out / "onnx" / "manifest.json").read_text())
    lines = []
    manifest, _ = export_int8(load_checkpoint(ckpt), out / "onnx", source, tmp_path / "onnx-int8", lines.append,
                              n_faces=16, n_slices=32)  # fmt: skip
    assert "calibration" in manifest["int8"] and any("calibration:" in line for line in lines)
    quantized = onnx.load(str(tmp_path / "onnx-int8" / "visual_encoder.onnx"))
    assert any(n.op_type == "QuantizeLinear" for n in quantized.graph.node)
    result = verify_exports(load_checkpoint(ckpt), tmp_path, [BY_NAME["onnx-int8"]], print, stream=stream, threads=1)
    (row,) = result.rows
    assert row.status == "reported" and np.isfinite(row.max_abs) and row.argmax >= 0.9


def test_int8_face_export_quantizes_the_visual_encoder_alone(exported, stream, tmp_path):
    from export.onnx_int8 import export_int8

    ckpt, out, *_ = exported
    source = json.loads((out / "onnx" / "manifest.json").read_text())
    manifest, _ = export_int8(load_checkpoint(ckpt), out / "onnx", source, tmp_path / "onnx-int8-face", print,
                              n_faces=16, n_slices=32, format_name="onnx-int8-face")  # fmt: skip
    assert manifest["export_format"] == "onnx-int8-face" and manifest["int8"]["quantized_graphs"] == ["visual_encoder"]
    ops = {g: {n.op_type for n in onnx.load(str(tmp_path / "onnx-int8-face" / f"{g}.onnx")).graph.node}
           for g in ("visual_encoder", "audio_step", "fusion_head")}  # fmt: skip
    assert "QuantizeLinear" in ops["visual_encoder"]
    assert "QuantizeLinear" not in ops["audio_step"] and "QuantizeLinear" not in ops["fusion_head"]
    fmt = BY_NAME["onnx-int8-face"]
    (row,) = verify_exports(load_checkpoint(ckpt), tmp_path, [fmt], print, stream=stream, threads=1).rows
    assert row.status == "reported" and row.argmax >= 0.9
    from avemo_edge.backends import create_backend  # the bench and the daemon load it as any ONNX folder

    assert create_backend("onnxruntime", str(tmp_path / "onnx-int8-face")).dims == load_checkpoint(ckpt).dims


def test_compare_fails_a_broken_bound():
    from export.verify import Trace

    probs = np.full((50, 7), 1 / 7)
    ref = Trace(probs, np.zeros((50, 2)))
    worse = probs.copy()
    worse[:, 0] += 0.02
    assert compare(BY_NAME["onnx-fp16"], "x", ref, Trace(worse, np.zeros((50, 2)))).status == "FAIL"
    assert compare(BY_NAME["onnx"], "x", ref, Trace(probs + 1e-6, np.zeros((50, 2)))).status == "pass"


def test_bad_format_is_one_sentence_and_exit_2(exported, tmp_path):
    ckpt, *_ = exported
    with pytest.raises(ExportError, match="unknown export format 'onnx-fp8'; choose from onnx, onnx-fp16, onnx-int8"):
        parse_formats("onnx,onnx-fp8")
    r = subprocess.run(
        [sys.executable, "-m", "avemo_edge.cli", "export", str(ckpt), "--out", str(tmp_path), "--formats", "onnx-fp8"],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    choices = "onnx, onnx-fp16, onnx-int8, onnx-int8-face, tensorrt, tensorrt-fp16"
    assert f"unknown export format 'onnx-fp8'; choose from {choices}" in r.stderr


def test_tensorrt_format_without_tensorrt_is_refused_with_a_sentence():
    import importlib.util

    if importlib.util.find_spec("tensorrt"):
        pytest.skip("tensorrt is installed here")
    with pytest.raises(ExportError, match="needs the Python package"):
        parse_formats("tensorrt-fp16")


def test_tensorrt_backend_imports_without_tensorrt_and_refuses_with_a_sentence(exported, monkeypatch):
    import avemo_edge.trt_backend as trt_backend  # imports: tensorrt and cuda-python load in the constructor

    _, out, *_ = exported
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as where TensorRT is not installed
    with pytest.raises(AvemoError) as caught:
        trt_backend.TensorRTBackend(out / "onnx")
    message = str(caught.value)
    assert message.startswith("the tensorrt backend needs TensorRT's Python bindings, which do not import here")
    assert "\n" not in message and caught.value.__cause__ is None and caught.value.__suppress_context__


def test_cuda_python_missing_is_one_sentence(monkeypatch):
    from avemo_edge import cudart

    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", None)
    with pytest.raises(
        ExportError, match=r"needs cuda-python's CUDA runtime bindings .*pip install 'cuda-python>=12.6'"
    ):
        cudart.load(ExportError)


def test_cuda_errors_become_a_sentence_naming_the_call():
    from types import SimpleNamespace

    from avemo_edge import cudart

    class Err(int):
        pass

    success, no_device = Err(0), Err(100)
    fake = SimpleNamespace(
        cudaError_t=SimpleNamespace(cudaSuccess=success),
        cudaGetErrorName=lambda e: (success, b"cudaErrorNoDevice"),
    )
    assert cudart.call(fake, (success, 1234), "cudaMalloc") == 1234
    assert cudart.call(fake, (success,), "cudaFree") is None
    with pytest.raises(AvemoError, match="^CUDA call cudaMalloc failed with cudaErrorNoDevice$"):
        cudart.call(fake, (no_device, None), "cudaMalloc")


def test_tensorrt_networks_are_strongly_typed_from_10_on():
    from enum import IntEnum
    from types import SimpleNamespace

    from export.trt_build import network_flags

    class Flags8(IntEnum):
        EXPLICIT_BATCH = 0

    class Flags10(IntEnum):
        EXPLICIT_BATCH = 0
        STRONGLY_TYPED = 3

    class Flags11(IntEnum):
        STRONGLY_TYPED = 1

    def trt(version, flags):
        return SimpleNamespace(__version__=version, NetworkDefinitionCreationFlag=flags)

    assert network_flags(trt("8.5.2.2", Flags8)) == (1, False)  # JetPack 5: weak typing, BuilderFlag.FP16
    assert network_flags(trt("10.3.0", Flags10)) == (1 << 3, True)
    assert network_flags(trt("11.4.1", Flags11)) == (1 << 1, True)
    assert network_flags(trt("11.4.1", IntEnum("Empty", {"OTHER": 7}))) == (0, True)  # only mode on 11
    with pytest.raises(ExportError, match="TensorRT 10.0.0 has no strongly typed networks"):
        network_flags(trt("10.0.0", Flags8))


def test_fp16_engines_are_made_from_the_fp16_onnx():
    assert BY_NAME["tensorrt-fp16"].source == "onnx-fp16" and BY_NAME["tensorrt"].source == "onnx"
    assert "cuda.bindings" in BY_NAME["tensorrt-fp16"].needs and "pycuda" not in BY_NAME["tensorrt-fp16"].needs


def test_fp16_conversion_refuses_what_it_cannot_convert():
    from onnx import TensorProto, helper

    from export.onnx_fp16 import convert_to_fp16

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    unknown = helper.make_model(helper.make_graph([helper.make_node("Erf", ["x"], ["y"])], "g", [x], [y]))
    with pytest.raises(ExportError, match=r"ops \['Erf'\] that the fp16 conversion does not know"):
        convert_to_fp16(unknown)
    big = helper.make_tensor("w", TensorProto.FLOAT, [1, 4], [1e5, 0, 0, 0])
    huge = helper.make_model(helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", [x], [y], [big]))
    with pytest.raises(ExportError, match="weight w reaches 100000, beyond fp16's range"):
        convert_to_fp16(huge)


def test_fp16_tensorrt_build_refuses_a_gpu_without_fast_fp16():
    from types import SimpleNamespace

    from export.trt_build import has_fast_fp16, require_fast_fp16

    with pytest.raises(ExportError, match="no fast FP16 and TensorRT would build fp32 engines instead"):
        require_fast_fp16(SimpleNamespace(platform_has_fast_fp16=False), "GeForce GTX 1080", (6, 1))
    assert has_fast_fp16(SimpleNamespace(), (8, 7)) and not has_fast_fp16(SimpleNamespace(), (6, 1))


def test_docs_table_is_the_formats_table():
    assert formats_markdown() in (REPO / "docs" / "EXPORT.md").read_text()


def test_synthetic_stream_when_the_data_folder_is_absent(tmp_path):
    s = parity_stream(DIMS, steps=50, data_dir=tmp_path)
    assert "synthetic speech-like signal" in s.source and len(s) == 50
    a = np.stack([x for x in s.audio if x is not None])
    assert a.shape[1:] == (64, 10) and a.std() > 0.5  # speech-like, not silence


def test_tensorrt_engines_match_torch(exported, stream, tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed here (JetPack or the tensorrt wheel has it)")
    pytest.importorskip("cuda.bindings.runtime", reason="cuda-python is not installed here (see docs/EXPORT.md)")
    from export.trt_build import export_engines

    ckpt, out, *_ = exported
    formats = [BY_NAME["tensorrt"], BY_NAME["tensorrt-fp16"]]
    for fmt in formats:  # tensorrt from onnx, tensorrt-fp16 (strongly typed) from onnx-fp16
        source = json.loads((out / fmt.source / "manifest.json").read_text())
        export_engines(out / fmt.source, source, tmp_path / fmt.name, fmt, print, max_batch=4)
    result = verify_exports(load_checkpoint(ckpt), tmp_path, formats, print, stream=stream)
    assert result.ok, result.lines()
    engine = tmp_path / "tensorrt" / "audio_step.engine"
    data = bytearray(engine.read_bytes())
    data[-1] ^= 1
    engine.write_bytes(bytes(data))
    with pytest.raises(ExportedModelError, match="sha256"):
        create_backend("tensorrt", tmp_path / "tensorrt")


def test_cli_exports_verifies_and_says_what_to_run_next(exported, tmp_path):
    ckpt, *_ = exported
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "avemo_edge.cli", "export", str(ckpt), "--out", str(tmp_path), "--formats", "onnx",
         "--verify", "--steps", "50"],
        capture_output=True, text=True, cwd=REPO, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert out.count(" MB ") >= 3 and "visual_encoder.onnx" in out and "audio_step.onnx" in out
    row = next(line for line in out.splitlines() if line.startswith("onnx ") and "max abs" in line)
    assert row.rstrip().endswith("pass") and "max abs <= 0.0001" in row
    assert f"python -m bench.step_latency --backend onnxruntime --model {tmp_path / 'onnx'}" in out
