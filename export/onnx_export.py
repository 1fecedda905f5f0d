"""Stage 1: checkpoint -> three fp32 ONNX graphs and their manifest (format `onnx`).

    avemo-edge export CHECKPOINT --out DIR --formats onnx      (writes DIR/onnx/)

The branches run at different rates on a device (faces when the detector finds one, audio every
100 ms), so the network is cut into three graphs (names and shapes in `avemo_edge.manifest`):

    visual_encoder.onnx  face (B, C, S, S) -> visual_emb (B, 128)
    audio_step.onnx      mel (B, 64, N), h_in, c_in (R, B, H) -> audio_emb (B, 128), h_out, c_out
    fusion_head.onnx     visual_emb, audio_emb (B, 128), face_mask, audio_mask (B,) -> logits (B, 7), alpha, beta

Each wrapper calls the model's own modules, so the graphs compute what `AVEmotionNet.step` does:
`audio_step` is `AudioEncoder.forward` on a one-step sequence, per-band normalisation buffers
(`mel_mean`, `mel_std`) included. The batch dimension is dynamic everywhere.

Two exporters. At opset 18 and later (`--opset 18`), where onnxscript is installed, torch's
torch.export-based one (`torch.onnx.export(..., dynamo=True, dynamic_shapes=...)`): it keeps
`nn.LSTM` with explicit (h, c) inputs as one native ONNX `LSTM` node (tests/test_export.py
checks it). At opset 17 and below, the default (TensorRT 8.5, JetPack 5, reads up to 17), or
without onnxscript, the TorchScript-based one (`dynamo=False`), which also emits a native `LSTM`.
The manifest records which exporter made the graphs.

Example inputs must be distinct tensors. torch.export binds parameters that receive the same
tensor object to one graph input (pytorch/pytorch#139646, #144683): with `(emb, emb, on, on)` the
dynamo-exported fusion head read `audio_emb` and `audio_mask` for both branches and left
`visual_emb` and `face_mask` unused, which no single forward at those inputs can show (both
branches were equal there) and the streaming parity did (max abs 0.27). `graph_modules` makes a
tensor per input, `to_onnx` clones any argument that shares storage with an earlier one, and a
graph that leaves one of its inputs unused is refused.
"""

from __future__ import annotations

import inspect
import io
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from avemo_edge.checkpoint import Checkpoint
from avemo_edge.errors import ExportError
from avemo_edge.manifest import GRAPHS, write_manifest
from avemo_edge.model import AudioEncoder, AVEmotionNet, FusionHead

from .common import FileRecord, Log, base_manifest, describe_io, log_io, save_onnx
from .formats import BY_NAME

# The default stays 17 with the TorchScript exporter (JetPack 5's TensorRT 8.5 reads it, and its
# streaming parity is the one verified in CI); `--opset 18` or later takes the dynamo exporter.
OPSET = 17
TORCHSCRIPT_MAX_OPSET = 17  # TensorRT 8.5 (JetPack 5) reads up to 17: `--opset 17` takes the TorchScript exporter
TRACE_BATCH = 2  # trace with a batch > 1 so that nothing gets specialised to batch 1


class AudioStep(nn.Module):
    """One 100 ms step of the audio branch: a log-mel slice and the LSTM state in, embedding and new state out."""

    def __init__(self, audio: AudioEncoder) -> None:
        super().__init__()
        self.audio = audio

    def forward(
        self, mel: torch.Tensor, h_in: torch.Tensor, c_in: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a, (h, c) = self.audio(mel.unsqueeze(1), (h_in, c_in))  # (B, 1, 128), (L, B, H) x 2
        return a[:, 0], h, c


class FusionStep(nn.Module):
    """The fusion head with float masks (1.0 present, 0.0 missing), thresholded at 0.5 as the model's bools."""

    def __init__(self, fusion: FusionHead) -> None:
        super().__init__()
        self.fusion = fusion

    def forward(
        self, visual_emb: torch.Tensor, audio_emb: torch.Tensor, face_mask: torch.Tensor, audio_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.fusion(visual_emb, audio_emb, face_mask > 0.5, audio_mask > 0.5)


def graph_modules(model: AVEmotionNet) -> dict[str, tuple[nn.Module, tuple[torch.Tensor, ...], dict[str, Any]]]:
    """graph name -> (module, example inputs, dynamic axes)."""
    d, b = model.dims, TRACE_BATCH
    state = model.init_state(b)
    face = torch.rand(b, d.face_channels, d.face_size, d.face_size)
    mel = torch.randn(b, d.n_mels, d.slice_frames) - 4.0
    # One tensor per input, with different values: torch.export ties inputs given the same tensor
    # (module docstring), and the masks differ so that neither branch is the other's copy.
    v_emb, a_emb = torch.randn(b, d.embed_dim), torch.randn(b, d.embed_dim)
    face_mask, audio_mask = (torch.arange(b) % 2 == 0).float(), torch.ones(b)
    first = {"face": 0, "visual_emb": 0, "mel": 0, "audio_emb": 0, "face_mask": 0, "audio_mask": 0}
    first.update(logits=0, alpha=0, beta=0)
    second = {"h_in": 1, "c_in": 1, "h_out": 1, "c_out": 1}  # (layers, batch, hidden)

    def axes(graph: str) -> dict[str, dict[int, str]]:
        io = GRAPHS[graph]
        return {n: {{**first, **second}[n]: "batch"} for n in io.inputs + io.outputs}

    return {
        "visual_encoder": (model.visual, (face,), axes("visual_encoder")),
        "audio_step": (AudioStep(model.audio), (mel, *state), axes("audio_step")),
        "fusion_head": (FusionStep(model.fusion), (v_emb, a_emb, face_mask, audio_mask), axes("fusion_head")),
    }


def exporter_for(opset: int) -> str:
    """'dynamo' (torch.export-based, opset >= 18, needs onnxscript) or 'torchscript'."""
    import importlib.util

    if opset > TORCHSCRIPT_MAX_OPSET and importlib.util.find_spec("onnxscript") is not None:
        return "dynamo"
    return "torchscript"


def _dynamo_export(
    module: nn.Module, args: tuple[torch.Tensor, ...], graph: str, axes: dict[str, Any], opset: int
) -> Any:
    io_names = GRAPHS[graph]
    batch = torch.export.Dim("batch", min=1, max=4096)
    shapes = tuple({axis: batch for axis in axes.get(name, {})} or None for name in io_names.inputs)
    with warnings.catch_warnings():
        # nn.LSTM's flattened weights are re-assigned while torch.export traces; they are parameters
        # of the exported module all the same (parity in tests/test_export.py).
        warnings.filterwarnings("ignore", message=".*were assigned during export.*")
        warnings.filterwarnings("ignore", message=".*will not be used, since it shares the same shape constraints.*")
        warnings.filterwarnings("ignore", category=FutureWarning)
        program = torch.onnx.export(
            module.eval(), args, dynamo=True, dynamic_shapes=shapes, input_names=list(io_names.inputs),
            output_names=list(io_names.outputs), opset_version=opset, optimize=True, verbose=False,
        )  # fmt: skip
    if program is None:
        raise ExportError(f"torch's dynamo ONNX exporter returned nothing for the {graph} graph")
    return program.model_proto


def _torchscript_export(
    module: nn.Module, args: tuple[torch.Tensor, ...], graph: str, axes: dict[str, Any], opset: int
) -> Any:
    import onnx

    io_names = GRAPHS[graph]
    kwargs: dict[str, Any] = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter's deprecation notice, and its LSTM batch warning, which is about
        # models without explicit (h, c) inputs: this graph has them.
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*with a batch_size other than 1.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        # nn.LSTM's input-size checks read tensor sizes in Python while tracing; the sizes are fixed
        # by the model's dimensions, so the traced constants are right.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"torch\.nn\.modules\.rnn")
        torch.onnx.export(
            module.eval(), args, buf, input_names=list(io_names.inputs), output_names=list(io_names.outputs),
            dynamic_axes=axes, opset_version=opset, do_constant_folding=True, **kwargs,
        )  # fmt: skip
    return onnx.load_from_string(buf.getvalue())


def untie(args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The arguments with a copy in place of each one that shares memory with an earlier one.

    torch.export gives arguments that alias each other one graph input (pytorch/pytorch#139646):
    the exported graph would read one of them for all.
    """
    seen: set[int] = set()
    out = []
    for a in args:
        ptr = a.untyped_storage().data_ptr()
        out.append(a.clone() if ptr in seen else a)
        seen.add(ptr)
    return tuple(out)


def unused_inputs(model: Any) -> list[str]:
    """Graph inputs that no node (subgraphs included) reads and no output is (initializers excepted)."""

    def nodes(graph: Any) -> Any:
        for node in graph.node:
            yield node
            for attr in node.attribute:
                for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                    yield from nodes(sub)

    read = {name for node in nodes(model.graph) for name in node.input}
    read |= {o.name for o in model.graph.output}
    inits = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in read and i.name not in inits]


def to_onnx(module: nn.Module, args: tuple[torch.Tensor, ...], graph: str, axes: dict[str, Any], opset: int) -> Any:
    """Export one module to an in-memory ONNX ModelProto with the contract's tensor names."""
    io_names = GRAPHS[graph]
    args = untie(args)
    if exporter_for(opset) == "dynamo":
        model = _dynamo_export(module, args, graph, axes, opset)
    else:
        model = _torchscript_export(module, args, graph, axes, opset)
    # Either exporter can leave static dims symbolic (the TorchScript tracer names the L2 norm's
    # Expand 'Divvisual_emb_dim_1'); write the traced sizes in, and name every dynamic dim 'batch'.
    with torch.no_grad():
        outputs = module(*args)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    for values, tensors in ((model.graph.input, args), (model.graph.output, outputs)):
        for value, tensor in zip(values, tensors, strict=True):
            for i, (dim, size) in enumerate(zip(value.type.tensor_type.shape.dim, tensor.shape, strict=True)):
                dim.Clear()
                if axes.get(value.name, {}).get(i) == "batch":
                    dim.dim_param = "batch"
                else:
                    dim.dim_value = int(size)
    got_in = [i.name for i in model.graph.input]
    got_out = [o.name for o in model.graph.output]
    if got_in != list(io_names.inputs) or got_out != list(io_names.outputs):
        raise ExportError(f"the {graph} graph came out with inputs {got_in} and outputs {got_out}, not {io_names}")
    unused = unused_inputs(model)
    if unused:
        exporter = exporter_for(opset)
        hint = "export at opset 17 (the TorchScript exporter)" if exporter == "dynamo" else "please report it"
        raise ExportError(
            f"the {exporter} exporter's {graph} graph never reads its input(s) {', '.join(unused)}, "
            f"so it cannot compute what torch does; {hint}"
        )
    return model


def export_onnx(
    ckpt: Checkpoint, out_dir: Path, log: Log, opset: int = OPSET
) -> tuple[dict[str, Any], list[FileRecord]]:
    """Write the three fp32 graphs and manifest.json into `out_dir`; return the manifest and one record per file."""
    import onnx

    fmt = BY_NAME["onnx"]
    out_dir.mkdir(parents=True, exist_ok=True)
    model = ckpt.build("cpu")
    exporter = exporter_for(opset)
    versions = {"torch": torch.__version__, "onnx": onnx.__version__, "exporter": exporter}
    if exporter == "dynamo":
        import onnxscript

        versions["onnxscript"] = onnxscript.__version__
    manifest = base_manifest(ckpt, fmt, opset, versions)
    log(f"onnx           torch {torch.__version__}, {exporter} exporter, opset {opset}")
    records = []
    for graph, (module, args, axes) in graph_modules(model).items():
        t0 = time.perf_counter()
        proto = to_onnx(module, args, graph, axes, opset)
        log_io(log, graph, describe_io(proto))
        rec = save_onnx(proto, out_dir / f"{graph}.onnx", manifest, graph, fmt.name, t0)
        log(rec.line())
        records.append(rec)
    write_manifest(out_dir, manifest)
    return manifest, records
