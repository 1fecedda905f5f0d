"""Stage 2a: fp32 ONNX graphs -> fp16 graphs with fp32 inputs and outputs (format `onnx-fp16`).

Weights, constants and activations become fp16; a Cast after each float input and before each
float output keeps the graph's interface float32, so every backend feeds the same arrays and the
LSTM state crosses steps as float32 (it is rounded to fp16 inside each step, as on TensorRT FP16).
Done with `onnx` directly rather than onnxconverter-common (one dependency fewer, and a converter
that knows exactly which ops it meets): an op outside `FP16_OPS` is refused with a sentence
instead of being converted blindly.

Kept in fp32: `ReduceL2` (the visual embedding's L2 norm), because its sum of squares overflows
fp16 (max 65504) once an embedding's components reach ~23 on average; torch's autocast keeps
norms in fp32 for the same reason. A weight beyond fp16's range is refused, not clipped.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from avemo_edge.errors import ExportError
from avemo_edge.manifest import GRAPHS, write_manifest

from .common import FileRecord, Log, derived_manifest, save_onnx
from .formats import BY_NAME

FP16_MAX = 65504.0
KEEP_FP32 = frozenset({"ReduceL2"})
# Every op the three graphs contain (opset 17, TorchScript exporter), all of which have fp16 kernels
# in TensorRT and onnxruntime's CUDA provider.
FP16_OPS = frozenset({
    "Add", "Sub", "Mul", "Div", "Conv", "Relu", "LeakyRelu", "MaxPool", "GlobalAveragePool", "ReduceMean",
    "Clip", "Gemm", "MatMul", "LSTM", "Sigmoid", "Concat", "Reshape", "Flatten", "Transpose", "Squeeze",
    "Unsqueeze", "Slice", "Gather", "Shape", "Expand", "Identity", "Constant", "ConstantOfShape", "Cast",
    "Greater", "Where", "BatchNormalization", "Equal", "Not",
})  # fmt: skip


def _tensor_to_fp16(t: Any, what: str) -> Any:
    from onnx import TensorProto, numpy_helper

    if t.data_type != TensorProto.FLOAT:
        return t
    arr = numpy_helper.to_array(t)
    peak = float(np.abs(arr).max()) if arr.size else 0.0
    if peak > FP16_MAX:
        raise ExportError(f"{what} reaches {peak:g}, beyond fp16's range ({FP16_MAX:g}); use the fp32 `onnx` format")
    return numpy_helper.from_array(arr.astype(np.float16), t.name)


def convert_to_fp16(model: Any) -> Any:
    """A copy of `model` with fp16 internals and fp32 inputs/outputs."""
    import onnx
    from onnx import TensorProto, helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    unknown = sorted({n.op_type for n in g.node} - FP16_OPS - KEEP_FP32)
    if unknown:
        raise ExportError(f"graph {g.name!r} has ops {unknown} that the fp16 conversion does not know; use `onnx`")

    for i, init in enumerate(g.initializer):
        g.initializer[i].CopyFrom(_tensor_to_fp16(init, f"weight {init.name}"))
    nodes = []
    for k, original in enumerate(g.node):
        n = onnx.NodeProto()
        n.CopyFrom(original)  # copies: the graph's own node list is replaced below
        name = n.name or f"{n.op_type}_{k}"
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                a.t.CopyFrom(_tensor_to_fp16(a.t, f"constant {name}"))
            elif a.type in (onnx.AttributeProto.FLOAT, onnx.AttributeProto.FLOATS) and n.op_type == "Constant":
                raise ExportError(f"constant {name} uses a float attribute the fp16 conversion does not handle")
            if n.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.FLOAT16
        if n.op_type in KEEP_FP32:  # an fp32 island: cast the data input up and the output back down
            up, low = f"{name}/fp32_in", f"{name}/fp32_out"
            nodes.append(helper.make_node("Cast", [n.input[0]], [up], name=f"{name}/to_fp32", to=TensorProto.FLOAT))
            result = n.output[0]
            n.input[0], n.output[0] = up, low
            nodes.append(n)
            nodes.append(helper.make_node("Cast", [low], [result], name=f"{name}/to_fp16", to=TensorProto.FLOAT16))
        else:
            nodes.append(n)

    def rename(old: str, new: str) -> None:
        for n in nodes:
            for i, x in enumerate(n.input):
                if x == old:
                    n.input[i] = new

    head, tail = [], []
    for v in g.input:
        if v.type.tensor_type.elem_type == TensorProto.FLOAT:
            inner = f"{v.name}/fp16"
            rename(v.name, inner)
            head.append(helper.make_node("Cast", [v.name], [inner], name=f"{v.name}/to_fp16", to=TensorProto.FLOAT16))
    for v in g.output:
        if v.type.tensor_type.elem_type == TensorProto.FLOAT:
            inner = f"{v.name}/fp16"
            for n in nodes:
                for i, x in enumerate(n.output):
                    if x == v.name:
                        n.output[i] = inner
            rename(v.name, inner)
            tail.append(helper.make_node("Cast", [inner], [v.name], name=f"{v.name}/to_fp32", to=TensorProto.FLOAT))
    del g.node[:]
    g.node.extend(head + nodes + tail)
    del g.value_info[:]  # stale fp32 annotations; shape inference below fills them in again
    return onnx.shape_inference.infer_shapes(out, strict_mode=True)


def export_fp16(
    source_dir: Path, source: dict[str, Any], out_dir: Path, log: Log
) -> tuple[dict[str, Any], list[FileRecord]]:
    """fp32 export folder -> fp16 export folder."""
    import onnx

    fmt = BY_NAME["onnx-fp16"]
    manifest = derived_manifest(
        source, fmt, fp16={"io": "float32", "inside": "float16", "kept_fp32": sorted(KEEP_FP32)}
    )
    records = []
    for graph in GRAPHS:
        t0 = time.perf_counter()
        proto = convert_to_fp16(onnx.load(str(source_dir / source["graphs"][graph]["file"])))
        rec = save_onnx(proto, out_dir / f"{graph}.onnx", manifest, graph, fmt.name, t0)
        log(rec.line())
        records.append(rec)
    write_manifest(out_dir, manifest)
    return manifest, records
