"""The runtime stays deployable: importing it never drags in training, export or bench."""

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

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


ROOT = Path(__file__).resolve().parents[1]


def test_make_test_says_which_tests_skip_and_the_command_that_enables_them():
    """Without root or apt-get `make test` installs nothing and says so, before the run (#16)."""
    import shutil

    r = subprocess.run(["sh", str(ROOT / "tests" / "system-deps.sh")], capture_output=True, text=True,
                       env={**os.environ, "AVEMO_NO_APT": "1"}, timeout=30)  # fmt: skip
    assert r.returncode == 0, r.stderr  # never fails the run
    no_broker = shutil.which("mosquitto") is None and not os.path.exists("/usr/sbin/mosquitto")
    no_mic = not os.path.exists("/usr/include/portaudio.h") or shutil.which("pulseaudio") is None
    if not (no_broker or no_mic):
        assert r.stdout == ""
        return
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and "these tests will skip:" in lines[0]
    assert ("tests/test_mqtt.py" in lines[0]) == no_broker and ("tests/test_mic.py" in lines[0]) == no_mic
    assert lines[1].startswith("make test: to run them too: sudo apt-get install -y ")
    assert ("mosquitto" in lines[1]) == no_broker and ("portaudio19-dev" in lines[1]) == (
        not os.path.exists("/usr/include/portaudio.h")
    )
    strict_env = {**os.environ, "AVEMO_NO_APT": "1", "AVEMO_REQUIRE_TEST_DEPS": "1"}
    script = str(ROOT / "tests" / "system-deps.sh")
    strict = subprocess.run(["sh", script], capture_output=True, text=True, env=strict_env, timeout=30)
    assert strict.returncode == 1  # .ci/run: a package it cannot install fails CI instead of skipping tests


def test_make_test_checks_system_packages_before_the_venv_and_pytest():
    recipe = ROOT.joinpath("Makefile").read_text().split("\ntest:", 1)[1].split("\n\n", 1)[0]
    steps = [line.strip() for line in recipe.splitlines() if line.startswith("\t")]
    assert steps[0] == "@sh tests/system-deps.sh" and "pytest" in steps[-1]
    assert "make test" in ROOT.joinpath(".ci", "run").read_text()
