"""`avemo-edge doctor`: what this box has, which backends and capture devices work, and why not."""

from __future__ import annotations

import glob
import importlib
import importlib.metadata as md
import os
import platform
from pathlib import Path


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _try_import(module: str) -> tuple[object | None, str]:
    try:
        return importlib.import_module(module), ""
    except Exception as e:  # an import can fail in many ways (missing .so, no driver)
        return None, f"{type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''}"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def default_model_path() -> Path:
    return Path(__file__).parent / "assets" / "default.pt"


def report() -> list[tuple[str, str, str]]:
    """Rows of (what, status, detail)."""
    rows: list[tuple[str, str, str]] = []
    rows.append(("python", platform.python_version(), platform.platform()))
    rows.append(("cpu", f"{os.cpu_count()} cores", cpu_name()))
    for dist in ("avemo-edge", "torch", "numpy", "opencv-python", "av", "typer", "onnx", "onnxruntime",
                 "onnxruntime-gpu", "tensorrt", "cuda-python", "pyaudio", "paho-mqtt"):  # fmt: skip
        v = _version(dist)
        rows.append((dist, v or "not installed", ""))

    import torch

    rows.append(
        ("backend torch cpu", "ok", f"{torch.get_num_threads()} threads, ISA {torch.backends.cpu.get_cpu_capability()}")
    )
    if torch.cuda.is_available():
        rows.append(("backend torch cuda", "ok", torch.cuda.get_device_name(0)))
    else:
        rows.append(("backend torch cuda", "unavailable", "torch sees no CUDA device (CPU build or no driver)"))
    ort, why = _try_import("onnxruntime")
    if ort is not None:
        rows.append(("backend onnxruntime", "ok", "providers: " + ", ".join(ort.get_available_providers())))
    else:
        rows.append(("backend onnxruntime", "unavailable", why))
    trt, why = _try_import("tensorrt")
    cuda, why_cuda = _try_import("cuda.bindings.runtime")
    if trt is not None and cuda is not None:
        rows.append(("backend tensorrt", "ok", f"TensorRT {trt.__version__}"))
    else:
        rows.append(("backend tensorrt", "unavailable", why or why_cuda))

    cv2, why = _try_import("cv2")
    if cv2 is not None:
        from .faces.detect import YUNET_MODEL, haar_cascade_path

        yunet_ok = YUNET_MODEL.is_file() and hasattr(cv2, "FaceDetectorYN")
        rows.append(("face detector (YuNet)", "ok" if yunet_ok else "missing", str(YUNET_MODEL)))
        try:
            rows.append(("face detector (Haar)", "ok", str(haar_cascade_path())))
        except FileNotFoundError as e:
            rows.append(("face detector (Haar)", "missing", str(e)))
    else:
        rows.append(("face detector (Haar)", "unavailable", why))
    cams = sorted(glob.glob("/dev/video*"))
    rows.append(("cameras", f"{len(cams)} found" if cams else "none", " ".join(cams) or "no /dev/video* devices"))
    pa, why = _try_import("pyaudio")
    if pa is not None:
        p = pa.PyAudio()
        try:
            inputs = [p.get_device_info_by_index(i)["name"] for i in range(p.get_device_count())
                      if p.get_device_info_by_index(i)["maxInputChannels"] > 0]  # fmt: skip
        finally:
            p.terminate()
        rows.append(("microphones", f"{len(inputs)} found" if inputs else "none", ", ".join(inputs)[:100]))
    else:
        rows.append(("microphones", "unavailable", f"pyaudio not importable ({why}); pip install 'avemo-edge[mic]'"))
    model = default_model_path()
    rows.append(("default model", "ok" if model.is_file() else "missing", str(model)))
    return rows
