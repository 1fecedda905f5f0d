"""`run --validate-config` refuses configs that cannot start (issue #16 row 8), in one sentence each, exit 2.

Before the fix it approved a missing model, credential, TLS CA, video file, output folder and an
unknown backend, and the shipped systemd/avemo-edge.toml, which `run` then refused.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from avemo_edge.config import BACKEND_NAMES, ConfigError, load_config, parse_config
from avemo_edge.preflight import check_startable

SHIPPED = Path(__file__).resolve().parents[1] / "systemd" / "avemo-edge.toml"
CLI = [sys.executable, "-m", "avemo_edge.cli", "run", "--validate-config"]


def validate(path: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"} | (env or {})
    return subprocess.run([*CLI, "--config", str(path)], capture_output=True, text=True, timeout=60, env=e)


def errors(cfg_dict: dict, folder: Path | None = None) -> list[str]:
    cfg = parse_config(cfg_dict)
    cfg.folder = folder
    return check_startable(cfg).errors


@pytest.fixture()
def no_credentials_env(monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)


def test_each_missing_thing_is_one_sentence_naming_key_and_value(tmp_path, random_model, clips, no_credentials_env):
    (tmp_path / "export").mkdir()
    cases = [
        ({"model": {"path": str(tmp_path / "gone.pt")}}, f"model.path = '{tmp_path / 'gone.pt'}' does not exist"),
        ({"model": {"path": str(tmp_path)}}, "is a folder, not a file: backend 'torch' needs a .pt checkpoint"),
        (
            {"model": {"path": str(random_model), "backend": "onnxruntime"}},
            "is a torch checkpoint, but backend 'onnxruntime' needs the folder that `avemo-edge export` writes",
        ),
        (
            {"model": {"path": str(tmp_path / "export"), "backend": "onnxruntime"}},
            "has no manifest.json; name a folder that `avemo-edge export` wrote",
        ),
        (
            {"source": {"video": f"file://{tmp_path}/missing.mp4"}},
            f"source.video = 'file://{tmp_path}/missing.mp4': {tmp_path}/missing.mp4 does not exist",
        ),
        ({"source": {"video": f"file://{tmp_path}"}}, f"{tmp_path} is a directory, not a file"),
        (
            {"output": {"file": str(tmp_path / "nowhere" / "steps.jsonl")}},
            f"output.file = '{tmp_path}/nowhere/steps.jsonl': its folder {tmp_path}/nowhere does not exist",
        ),
        ({"output": {"file": str(tmp_path)}}, f"output.file = '{tmp_path}' is a directory, not a file"),
        (
            {"mqtt": {"enabled": True, "username": "u", "password_credential": "mqtt_password"}},
            f"mqtt.password_credential = 'mqtt_password': {tmp_path}/mqtt_password does not exist; create it",
        ),
        (
            {"mqtt": {"enabled": True, "tls": {"enabled": True, "ca_file": str(tmp_path / "ca.crt")}}},
            f"mqtt.tls.ca_file = '{tmp_path / 'ca.crt'}' does not exist: copy there the CA certificate",
        ),
        (
            {"mqtt": {"enabled": True, "tls": {"enabled": True, "cert_file": "c.pem", "key_credential": "key"}}},
            f"mqtt.tls.key_credential = 'key': {tmp_path}/key does not exist",
        ),
    ]
    for data, message in cases:
        data.setdefault("model", {"path": str(random_model)})
        got = errors(data, folder=tmp_path)
        assert len(got) >= 1 and any(message in e for e in got), (data, got)
        assert all("\n" not in e for e in got)
    # the same config with every file in place has nothing to say
    (tmp_path / "mqtt_password").write_text("pw\n")
    (tmp_path / "ca.crt").write_text("cert\n")
    ok = {
        "source": {"video": f"file://{clips['av']}"},
        "model": {"path": str(random_model)},
        "output": {"file": str(tmp_path / "steps.jsonl")},
        "mqtt": {"enabled": True, "username": "u", "password_credential": "mqtt_password",
                 "tls": {"enabled": True, "ca_file": str(tmp_path / "ca.crt")}},
    }  # fmt: skip
    assert errors(ok, folder=tmp_path) == []


def test_unknown_backend_is_a_config_error():
    with pytest.raises(ConfigError, match=r"model.backend = 'tflite' is invalid: unknown backend; choose one of torch"):
        parse_config({"model": {"backend": "tflite"}})


def test_backend_names_match_the_registry():
    from avemo_edge.backends import BACKENDS

    assert set(BACKENDS) == set(BACKEND_NAMES)


def test_credentials_under_systemd_come_from_the_credentials_directory(tmp_path, random_model, monkeypatch):
    creds = tmp_path / "creds"
    creds.mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    data = {"model": {"path": str(random_model)},
            "mqtt": {"enabled": True, "username": "u", "password_credential": "mqtt_password"}}  # fmt: skip
    (tmp_path / "mqtt_password").write_text("beside the config, but systemd hands its own copy\n")
    got = errors(data, folder=tmp_path)
    assert len(got) == 1 and f"there is no credential {creds}/mqtt_password" in got[0]
    assert "LoadCredential=mqtt_password:" in got[0]
    (creds / "mqtt_password").write_text("pw\n")
    assert errors(data, folder=tmp_path) == []


def test_validate_config_cli_exits_2_with_one_line_per_problem(tmp_path, random_model):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(
        f'[source]\nvideo = "file://{tmp_path}/missing.mp4"\n[model]\npath = "{random_model}"\n'
        f'[output]\nfile = "{tmp_path}/no/such/folder/steps.jsonl"\n'
    )
    r = validate(cfg)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stdout == ""
    lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 2 and "missing.mp4 does not exist" in lines[0] and "does not exist" in lines[1]
    assert f"config {cfg} cannot start the daemon here: 2 problems" in r.stderr
    # run refuses it the same way, before it loads anything
    r = subprocess.run([sys.executable, "-m", "avemo_edge.cli", "run", "-c", str(cfg)], capture_output=True,
                       text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2 and "missing.mp4 does not exist" in r.stderr and "Traceback" not in r.stderr


def test_shipped_config_validates_where_its_files_exist(tmp_path):
    """As systemd/README.md installs it: the config in /etc/avemo-edge, the password file beside it."""
    etc = tmp_path / "etc-avemo-edge"
    etc.mkdir()
    config = etc / "avemo-edge.toml"
    shutil.copy(SHIPPED, config)
    r = validate(config)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    err = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    # the one thing the guide's step 3 creates, named with the command that creates it
    assert len(err) == 1, r.stderr
    assert f"{etc}/mqtt_password does not exist; create it" in err[0]
    assert f"sudo install -m 600 /dev/null {etc}/mqtt_password" in err[0]
    (etc / "mqtt_password").write_text("secret\n")
    r = validate(config)
    assert r.returncode == 0, r.stderr
    assert f"config {config} is valid" in r.stderr and json.loads(r.stdout)["mqtt"]["password_credential"]
    # a camera or microphone that is absent now is a warning: the daemon starts and retries them
    assert all(line.startswith(("warning:", "config ")) for line in r.stderr.splitlines() if line.strip())


def test_shipped_unit_reads_credentials_from_beside_the_config():
    unit = SHIPPED.with_name("avemo-edge.service").read_text()
    loads = [line.split("=", 1)[1] for line in unit.splitlines() if line.lstrip("#").startswith("LoadCredential=")]
    assert loads
    for spec in loads:
        name, source = spec.split(":", 1)
        assert source == f"/etc/avemo-edge/{name}", spec  # where the validation looks outside systemd


def test_config_folder_is_where_the_file_is(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("")
    assert load_config(path).folder == tmp_path and load_config(None).folder is None
