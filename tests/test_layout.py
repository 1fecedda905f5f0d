"""The runtime stays deployable: importing it never drags in training, export or bench."""

import pkgutil
import subprocess
import sys

import avemo_edge


def test_runtime_does_not_import_training_export_or_bench():
    modules = [f"avemo_edge.{m.name}" for m in pkgutil.iter_modules(avemo_edge.__path__)]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('training', 'export', 'bench'))\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_cli_help_and_doctor():
    r = subprocess.run([sys.executable, "-m", "avemo_edge.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "doctor" in r.stdout
    r = subprocess.run([sys.executable, "-m", "avemo_edge.cli", "doctor"], capture_output=True, text=True)
    assert r.returncode == 0 and "backend torch cpu" in r.stdout and "face detector" in r.stdout


def test_doctor_prints_extras_in_brackets(monkeypatch):
    """Rich took "[mic]" in "pip install 'avemo-edge[mic]'" for markup and printed "install avemo-edge" (#16 row 13)."""
    from typer.testing import CliRunner

    import avemo_edge.doctor as doctor
    from avemo_edge.cli import app

    hint = "pyaudio not importable (ModuleNotFoundError); pip install 'avemo-edge[mic]'"
    monkeypatch.setattr(doctor, "report", lambda: [("microphones", "unavailable", hint), ("[bold]x", "ok", "")])
    r = CliRunner().invoke(app, ["doctor"])
    text = " ".join(r.stdout.replace("│", " ").split())  # the table may wrap a cell over two lines
    assert r.exit_code == 0 and "pip install 'avemo-edge[mic]'" in text and "[bold]x" in text, r.stdout
