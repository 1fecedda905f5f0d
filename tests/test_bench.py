"""The benchmark harness: short smoke runs of each mode that check the report's shape, never its timings."""

import json

import numpy as np
import pytest
import torch
from media import make_clip
from typer.testing import CliRunner

from avemo_edge.backends import BACKENDS
from avemo_edge.checkpoint import save_checkpoint
from avemo_edge.errors import AvemoError
from avemo_edge.model import PAPER_DIMS, AVEmotionNet, ModelDims, VisualEncoder
from bench import pipeline
from bench.flops import count_flops, matmul_peak
from bench.report import public, to_json, to_markdown
from bench.run import BenchOptions, run_bench
from bench.timing import Stats, parse_duration, parse_ints
from bench.variants import all_variants

# tiny runs: each measurement stops after its minimum number of calls
FAST = {"seconds": 0.01, "warmup": 1, "threads": 1}
PEAK = {"matmul_size": 64, "matmul_seconds": 0.01}  # the compute bound's matmul, tiny


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "random32.pt"
    save_checkpoint(path, AVEmotionNet(ModelDims(face_size=32)))
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory, astronaut_bgr):
    face = astronaut_bgr[40:220, 150:330]  # the astronaut's head and shoulders
    return make_clip(tmp_path_factory.mktemp("bench") / "clip.mp4", face, seconds=1.0)


def _check_rows(report, mode):
    assert report["schema"] == "avemo-edge-bench/1" and report["mode"] == mode
    assert [r["key"] for r in report["rows"]] == [v.key for v in all_variants()]  # one row per backend x precision
    for r in report["rows"]:
        assert r["status"] in ("ok", "skipped", "error")
        assert r["status"] == "ok" or r["detail"]  # a row that did not run says why
    env = report["environment"]
    for key in ("cpu", "cpu_cores_logical", "gpu", "libraries", "threads", "load_average_1_5_15"):
        assert key in env
    assert env["threads"]["torch_intra_op_threads"] == 1
    text = to_markdown(report)
    assert all(f"`{r['key']}`" in text for r in report["rows"])
    data = json.loads(to_json(report))  # JSON without the raw samples
    assert "_samples_ms" not in json.dumps(data)
    return data


def test_model_mode_report(checkpoint, tmp_path):
    threads = torch.get_num_threads()
    opts = BenchOptions("model", model=str(checkpoint), batches=[1, 2], **PEAK, **FAST)
    report = run_bench(opts)
    assert torch.get_num_threads() == threads  # --threads applies to the run only
    _check_rows(report, "model")
    rows = {r["key"]: r for r in report["rows"]}
    for key in ("torch-fp32", "torch-bf16"):
        r = rows[key]
        assert r["status"] == "ok" and r["model_mb"] > 0 and r["fps"] > 0
        assert set(r["latency_ms"]) >= {"p50", "p95", "p99", "n", "over_2x_median"}
        assert isinstance(r["meets_paper_fps"], bool) and isinstance(r["meets_target_fps"], bool)
        assert set(r["stages"]) == {"visual_encoder", "audio_step", "fusion_head"}
        assert all(c["status"] == "ok" for c in r["stages"].values())
        assert [s["batch"] for s in r["batch_sweep"]] == [1, 2]
        assert all(s["status"] == "ok" and s["memory"]["rss_mb"] > 0 for s in r["batch_sweep"])
    lim = report["limit"]
    assert lim["visual_flops"] > 0 and "hooks" in lim["flop_method"]
    assert {r["key"] for r in lim["rows"]} == {"torch-fp32", "torch-bf16"}
    assert all(r["batch1"]["ratio"] > 0 and r["batched"]["batch"] == 2 for r in lim["rows"])

    from bench.report import plot_latency

    png = plot_latency(report, tmp_path / "latency.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_pipeline_mode_with_concurrent_streams(checkpoint, clip):
    opts = BenchOptions("pipeline", model=str(checkpoint), input=str(clip), streams=[1, 2], only="torch-fp32",
                        target_fps=100, seconds=0.3, warmup=2, threads=1, pool_streams=True)  # fmt: skip
    report = run_bench(opts)
    assert [r["key"] for r in report["rows"]] == ["torch-fp32"]
    r = report["rows"][0]
    assert r["status"] == "ok", r["detail"]
    assert list(r["stages"]) == list(pipeline.STAGES)
    assert r["steps"] > 0 and r["fps_per_stream"] > 0 and isinstance(r["meets_paper_fps"], bool)
    assert r["faces_found"] > 0 and r["audio_steps"] > 0.9 and r["published"] >= r["steps"]
    assert [(s["streams"], s["pooled"]) for s in r["stream_sweep"]] == [(1, False), (2, False), (2, True)]
    assert all(s["status"] == "ok" and s["memory"]["rss_mb"] > 0 for s in r["stream_sweep"])
    assert 1 <= r["stream_sweep"][2]["pool_rows_per_call"] <= 2  # the two streams' rows, batched together
    assert isinstance(r["meets_target_fps"], bool)
    md = to_markdown(report)
    assert (
        "Concurrent streams" in md and "rows/call" in md and ">= 22 FPS (paper)" in md and ">= 100 FPS (target)" in md
    )


def test_pipeline_faces_sweep_tracks_every_tiled_face_in_one_batched_call(checkpoint, clip, monkeypatch):
    from avemo_edge.backends import TorchBackend

    batches = []
    inner = TorchBackend.step_rows

    def counted(self, faces, audio, states):
        batches.append(sum(f is not None for f in faces))
        return inner(self, faces, audio, states)

    monkeypatch.setattr(TorchBackend, "step_rows", counted)
    opts = BenchOptions("pipeline", model=str(checkpoint), input=str(clip), faces=[1, 3], only="torch-fp32",
                        seconds=0.3, warmup=2, threads=1)  # fmt: skip
    report = run_bench(opts)
    r = report["rows"][0]
    assert r["status"] == "ok", r["detail"]
    one, three = r["face_sweep"]
    assert one["faces"] == 1 and three["faces"] == 3 and one["status"] == three["status"] == "ok"
    assert one["faces_tracked"] > 0.9 and three["faces_tracked"] > 2.7  # every tiled copy is tracked
    assert three["inference_ms"] > 0 and three["inference_ms_per_face"] > 0
    assert batches and max(batches) == 3  # three faces: one visual batch of 3
    md = to_markdown(report)
    assert "Faces in one stream" in md and "inference ms per face" in md
    with pytest.raises(AvemoError, match="--faces is a pipeline sweep"):
        run_bench(BenchOptions("model", model=str(checkpoint), faces=[2]))
    assert pipeline.tile_frame(np.zeros((2, 3, 3), np.uint8), 3).shape == (4, 6, 3)  # 2 x 2 grid, one cell empty


def test_soak_reports_windows_and_drift(checkpoint, clip):
    opts = BenchOptions("soak", model=str(checkpoint), input=str(clip), only="torch-fp32", seconds=0.8, window=0.2,
                        warmup=1, threads=1)  # fmt: skip
    r = run_bench(opts)["rows"][0]
    assert r["status"] == "ok", r["detail"]
    full = [w for w in r["windows"] if not w["partial"]]
    assert len(full) >= 2 and all({"p50_ms", "p95_ms", "rss_mb", "fps"} <= set(w) for w in full)
    assert {"p50_change_pct", "rss_first_last_mb", "rss_slope_mb_per_hour"} <= set(r["drift"])


def test_a_failing_backend_fills_its_own_cell(checkpoint, monkeypatch):
    def broken(*args, **kwargs):
        raise ImportError("No module named 'imaginary_runtime'")

    # rows with nothing to load are skipped (no --exported folder; a backend the export table does not know)
    monkeypatch.setitem(BACKENDS, "onnxruntime", broken)
    monkeypatch.setitem(BACKENDS, "imaginary", broken)
    report = run_bench(BenchOptions("model", model=str(checkpoint), batches=[1], **PEAK, **FAST))
    rows = {r["key"]: r for r in report["rows"]}
    assert rows["torch-fp32"]["status"] == "ok"
    ort = [r for k, r in rows.items() if k.startswith("onnxruntime-")]
    assert {r["precision"] for r in ort} >= {"fp32", "fp16", "int8"}
    assert all(r["status"] == "skipped" and "--exported" in r["detail"] for r in ort)
    assert rows["imaginary"]["status"] == "skipped" and "export table" in rows["imaginary"]["detail"]
    md = to_markdown(report)
    assert "skipped: no exported model given" in md

    # a backend that cannot be built is an error in its own row, and the run goes on
    monkeypatch.setitem(BACKENDS, "torch", broken)
    report = run_bench(BenchOptions("model", model=str(checkpoint), batches=[1], **PEAK, **FAST))
    rows = {r["key"]: r for r in report["rows"]}
    assert rows["torch-fp32"]["status"] == rows["torch-bf16"]["status"] == "error"
    assert "imaginary_runtime" in rows["torch-bf16"]["detail"] and len(rows) == len(all_variants())
    assert report["limit"]["rows"] == []


def test_flop_counter_matches_resnet18_by_hand():
    # ResNet-18 convolutions at 224 px: 118,013,952 (7x7 stem) + 4 x 115,605,504 (layer1)
    # + 3 x 411,041,792 (layers 2-4, each the same count) = 1,813,561,344 MACs (torchvision: 1.814 GMAC with its
    # fc); plus the 512 -> 128 projection (65,536 MACs and 128 bias adds).
    flops = count_flops(VisualEncoder(PAPER_DIMS).eval(), torch.zeros(1, 3, 224, 224))
    assert flops == 2 * (1_813_561_344 + 65_536) + 128
    conv = torch.nn.Conv2d(4, 6, 3, padding=1, groups=2)
    assert count_flops(conv, torch.zeros(2, 4, 5, 5)) == 2 * (2 * 6 * 5 * 5) * (2 * 9) + 2 * 6 * 5 * 5
    peak = matmul_peak("fp32", size=32, seconds=0.0)
    assert peak["gflops"] > 0 and peak["size"] == 32 and peak["repeats"] >= 3


def test_stats_and_argument_parsing():
    s = Stats.of(list(range(1, 101)))
    assert s.n == 100 and s.min == 1 and s.max == 100 and abs(s.p50 - 50.5) < 1e-9
    assert s.over_2x_median == 0 and Stats.of([1, 1, 1, 5]).over_2x_median == 1
    assert parse_duration("30m") == 1800 and parse_duration("90s") == 90 and parse_duration("1.5") == 1.5
    assert parse_duration("2h") == 7200 and parse_ints("1, 8,32", "--batch") == [1, 8, 32]
    for bad in ("soon", "-1m", "0"):
        with pytest.raises(AvemoError, match="duration"):
            parse_duration(bad)
    with pytest.raises(AvemoError, match="--batch"):
        parse_ints("1,x", "--batch")
    assert public({"a": 1, "_raw": [1], "rows": [{"_s": 2, "b": 3}]}) == {"a": 1, "rows": [{"b": 3}]}


def test_input_and_option_errors_are_sentences(checkpoint, monkeypatch, tmp_path):
    with pytest.raises(AvemoError, match="is not a file"):
        pipeline.resolve_input(str(tmp_path / "missing.mp4"))
    monkeypatch.setattr(pipeline, "sample_clip", lambda: None)
    with pytest.raises(AvemoError, match="no embedded sample clip"):
        pipeline.resolve_input("sample")
    with pytest.raises(AvemoError, match="unknown row"):
        run_bench(BenchOptions("model", model=str(checkpoint), only="torch-fp64", **FAST))
    with pytest.raises(AvemoError, match="two windows"):
        run_bench(BenchOptions("soak", model=str(checkpoint), seconds=60, window=60))
    with pytest.raises(AvemoError, match="default model"):
        monkeypatch.setattr("bench.models.default_model_path", lambda: tmp_path / "none.pt")
        run_bench(BenchOptions("model", **FAST))


def test_cli_bench_writes_json_and_markdown(checkpoint, tmp_path):
    from avemo_edge.cli import app

    args = ["bench", "model", "--model", str(checkpoint), "--only", "torch-fp32", "--duration", "0.01s",
            "--warmup", "1", "--batch", "1", "--threads", "1", "--matmul-size", "64",
            "--matmul-seconds", "0.01",
            "--json", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["command"].startswith("avemo-edge") and [r["key"] for r in data["rows"]] == ["torch-fp32"]
    assert "| `torch-fp32` | ok |" in (tmp_path / "r.md").read_text()
    result = CliRunner().invoke(app, ["bench", "fastest", "--model", str(checkpoint)])
    assert isinstance(result.exception, AvemoError) and "unknown bench mode" in str(result.exception)


def test_decoder_gives_one_audio_slice_per_step(clip):
    dec = pipeline.StepDecoder(str(clip), loop=True)
    frames = slices = 0
    from avemo_edge.audio import AudioChunker

    chunker = None
    for k in range(15):  # 1.5 s of a 1 s clip: it loops
        frame, blocks = dec.step(k)
        frames += frame is not None
        if blocks:
            chunker = chunker or AudioChunker(dec.rate, dec.channels)
            slices += sum(len(chunker.push(b)) for b in blocks)
        assert frame is None or (frame.dtype == np.uint8 and frame.shape == (320, 480, 3))  # tests/media.py W x H
    assert dec.loops == 1 and frames == 15 and 13 <= slices <= 15
