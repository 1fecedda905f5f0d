"""Stage 3: ONNX graphs -> TensorRT engines (formats `tensorrt` from `onnx`, `tensorrt-fp16` from `onnx-fp16`).

TensorRT 10 / 11 Python API, as NVIDIA's `build_engine.py` sample: a network filled by the ONNX
parser (every parser error is logged, then the build stops), a builder config with a workspace
limit, one optimization profile per engine giving min / opt / max for the batch dimension of
every input (1 / 1 / `max_batch`: a device steps one stream, several faces or streams fit up to
`max_batch`), and `build_serialized_network`.

Precision is what was asked, never less. On TensorRT >= 10 every network is *strongly typed*
(`NetworkDefinitionCreationFlag.STRONGLY_TYPED`; TensorRT 11 removed weak typing: no
`BuilderFlag.FP16`, `layer.precision`, `set_output_type` or `OBEY_PRECISION_CONSTRAINTS`): each
tensor keeps the type the ONNX graph gives it, so
- `tensorrt` is built from the fp32 `onnx` graphs: fp32, with TF32 turned off where the flag
  exists (on Ampere and later TensorRT would otherwise use TF32 for fp32 layers, and the 1e-4
  parity bound would not hold);
- `tensorrt-fp16` is built from the project's own `onnx-fp16` graphs (`export/onnx_fp16.py`):
  fp16 where that graph is fp16, fp32 where it keeps fp32 (the visual embedding's L2 norm, whose
  sum of squares overflows fp16), float32 inputs and outputs.
Only TensorRT 8.x (JetPack 5), which has no strongly typed networks, takes the old path: the
same fp16 graphs, `BuilderFlag.FP16`, and the L2-norm layers pinned to fp32 with
`OBEY_PRECISION_CONSTRAINTS`. On a GPU without fast FP16 (e.g. a GTX 10xx) an fp16 build stops
with a sentence rather than quietly producing something slower than asked for.

Engines are specific to the TensorRT version and GPU architecture that built them: build them on
the device (docs/EXPORT.md). tensorrt and cuda-python are imported inside the functions that use
them. None of this has run in this project's CI (no GPU, no TensorRT there).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from avemo_edge.errors import ExportError
from avemo_edge.manifest import GRAPHS, write_manifest

from .common import FileRecord, Log, add_file, derived_manifest
from .formats import ExportFormat

WORKSPACE_GIB = 1.0  # enough for these graphs; a Jetson Orin Nano has 8 GB shared with the CPU
FAST_FP16 = {(5, 3), (6, 0), (6, 2)}  # plus every compute capability >= 7.0 (CUDA's fp16 throughput table)


def has_fast_fp16(builder: Any, compute_capability: tuple[int, int]) -> bool:
    """builder.platform_has_fast_fp16 (deprecated in TensorRT 10.5), else the CUDA compute capability."""
    flag = getattr(builder, "platform_has_fast_fp16", None)
    if flag is not None:
        return bool(flag)
    return compute_capability in FAST_FP16 or compute_capability[0] >= 7


def require_fast_fp16(builder: Any, device: str, compute_capability: tuple[int, int]) -> None:
    if not has_fast_fp16(builder, compute_capability):
        cc = ".".join(map(str, compute_capability))
        raise ExportError(
            f"FP16 engines were asked for, but {device} (compute capability {cc}) has no fast FP16 and TensorRT "
            "would build fp32 engines instead; build the `tensorrt` format (fp32) on this GPU, or tensorrt-fp16 on one "
            "with fast FP16"
        )


def _dims(shape: Any) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def build_engine(
    onnx_path: Path, engine_path: Path, fmt: ExportFormat, device: str, cc: tuple[int, int], max_batch: int, log: Log
) -> dict[str, Any]:
    """Parse one ONNX graph, build and write its engine; return its optimization profile, typing and fp32 layers."""
    import onnx
    import tensorrt as trt

    fp16 = fmt.precision == "fp16"
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    if fp16:
        require_fast_fp16(builder, device, cc)
    flags, strongly_typed = network_flags(trt)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        for i in range(parser.num_errors):
            err = parser.get_error(i)
            node = getattr(err, "node_name", lambda: "")() or f"#{err.node()}"
            op = getattr(err, "node_operator", lambda: "")()
            log(f"    parser error {i + 1}/{parser.num_errors}: {err.code()} at node {node} {op}: {err.desc()}")
        raise ExportError(
            f"TensorRT {trt.__version__}'s ONNX parser refused {onnx_path} with {parser.num_errors} error(s), "
            "each logged above"
        )

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(WORKSPACE_GIB * (1 << 30)))
    if hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # fp32 means fp32
    fp32_layers: list[str] = []
    if fp16 and not strongly_typed:  # TensorRT 8.x only: weak typing, precision by builder flag and pins
        config.set_flag(trt.BuilderFlag.FP16)
        l2_nodes = [n.name for n in onnx.load(str(onnx_path), load_external_data=False).graph.node
                    if n.op_type == "ReduceL2"]  # fmt: skip
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if any(name and name in layer.name for name in l2_nodes):
                layer.precision = trt.float32
                for k in range(layer.num_outputs):
                    layer.set_output_type(k, trt.float32)
                fp32_layers.append(layer.name)
        if fp32_layers:
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)

    profile = builder.create_optimization_profile()
    shapes: dict[str, dict[str, list[int]]] = {}
    for i in range(network.num_inputs):
        t = network.get_input(i)
        shape = list(t.shape)
        lo, opt, hi = ([1 if d < 0 else d for d in shape], [1 if d < 0 else d for d in shape],
                       [max_batch if d < 0 else d for d in shape])  # fmt: skip
        profile.set_shape(t.name, lo, opt, hi)
        shapes[t.name] = {"min": lo, "opt": opt, "max": hi}
        log(f"    {engine_path.stem:15s} input  {t.name:11s} {t.dtype!s:18s} {_dims(shape)}  "
            f"profile min {_dims(lo)} opt {_dims(opt)} max {_dims(hi)}")  # fmt: skip
    for i in range(network.num_outputs):
        t = network.get_output(i)
        log(f"    {engine_path.stem:15s} output {t.name:11s} {t.dtype!s:18s} {_dims(t.shape)}")
    config.add_optimization_profile(profile)
    if fp32_layers:
        log(f"    {engine_path.stem:15s} kept fp32: {', '.join(fp32_layers)}")

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT could not build an engine from {onnx_path}; its log above says why")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    engine_path.write_bytes(bytes(serialized))
    return {"profile": shapes, "strongly_typed": strongly_typed, "fp32_layers": fp32_layers}


def network_flags(trt: Any) -> tuple[int, bool]:
    """(create_network flags, strongly typed?) for this TensorRT.

    TensorRT >= 10: STRONGLY_TYPED (explicit batch is implied; on 11, where strong typing is the
    only mode, the flag is still set where the enum has it). TensorRT 8.x: EXPLICIT_BATCH, weakly typed.
    """
    major = int(trt.__version__.split(".")[0])
    kinds = trt.NetworkDefinitionCreationFlag
    if major >= 10:
        if hasattr(kinds, "STRONGLY_TYPED"):
            return 1 << int(kinds.STRONGLY_TYPED), True
        if major >= 11:
            return 0, True  # strongly typed is the only kind of network
        raise ExportError(f"TensorRT {trt.__version__} has no strongly typed networks; install TensorRT 10.3 or later")
    return 1 << int(kinds.EXPLICIT_BATCH), False


def export_engines(
    source_dir: Path, source: dict[str, Any], out_dir: Path, fmt: ExportFormat, log: Log, max_batch: int = 8
) -> tuple[dict[str, Any], list[FileRecord]]:
    """ONNX export folder (`onnx` or `onnx-fp16`) -> one engine per graph and a manifest, for `fmt`."""
    import tensorrt as trt

    from avemo_edge import cudart as rt

    if fmt.name not in ("tensorrt", "tensorrt-fp16"):
        raise ExportError(f"{fmt.name!r} is not a TensorRT format; choose tensorrt or tensorrt-fp16")
    if max_batch < 1:
        raise ExportError(f"max batch must be at least 1, not {max_batch}")
    cudart = rt.load(ExportError)
    try:
        name, cc = rt.device_info(cudart, 0, ExportError)
    except ExportError as e:
        raise ExportError(
            f"TensorRT engines are built on the GPU that runs them, and CUDA finds none here ({e})"
        ) from e
    info: dict[str, Any] = {
        "version": trt.__version__,
        "device": name,
        "compute_capability": ".".join(map(str, cc)),
        "fp16": fmt.precision == "fp16",
        "tf32": False,
        "max_batch": max_batch,
        "workspace_gib": WORKSPACE_GIB,
        "built_from": f"{source.get('precision', 'fp32')} ONNX (format {fmt.source})",
        "graphs": {},
    }
    manifest = derived_manifest(source, fmt, tensorrt=info)
    log(f"{fmt.name:14s} TensorRT {trt.__version__} on {name} (compute capability {info['compute_capability']})")
    records = []
    for graph in GRAPHS:
        t0 = time.perf_counter()
        entry = source["graphs"][graph]
        path = out_dir / f"{graph}.engine"
        info["graphs"][graph] = build_engine(source_dir / entry["file"], path, fmt, name, cc, max_batch, log)
        io = {"inputs": entry["inputs"], "outputs": entry["outputs"]}
        rec = add_file(manifest, graph, path, io, fmt.name, t0)
        log(rec.line())
        records.append(rec)
    write_manifest(out_dir, manifest)
    return manifest, records
