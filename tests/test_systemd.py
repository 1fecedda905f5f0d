"""The systemd unit: `systemd-analyze verify` where it exists, and the settings a Jetson needs.

JetPack 6 puts the integrated GPU behind /dev/nvgpu/igpu0/*, /dev/nvmap and /dev/host1x-fence
(group video) and /dev/dri/renderD128 (group render); CSI cameras reach nvargus-daemon through
/tmp/argus_socket; TensorRT engines built on the first start must land in a writable cache.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "avemo-edge.service"
SYSUSERS = UNIT.with_name("avemo-edge.sysusers")
JETPACK6_NODES = [
    "/dev/nvgpu/igpu0/ctrl",
    "/dev/nvgpu/igpu0/as",
    "/dev/nvgpu/igpu0/channel",
    "/dev/nvgpu/igpu0/tsg",
    "/dev/nvmap",
    "/dev/host1x-fence",
    "/dev/dri/renderD128",
]


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value set (comments and blank lines dropped, repeats kept in order)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{raw!r} stands before any [section]"
        key, sep, value = line.partition("=")
        assert sep, f"{raw!r} is not KEY=VALUE"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def environment(service: dict[str, list[str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for value in service.get("Environment", []):
        for item in value.split():
            k, _, v = item.partition("=")
            env[k] = v
    return env


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return parse_unit(UNIT.read_text())["Service"]


def test_parse_unit_keeps_repeats_and_drops_comments() -> None:
    parsed = parse_unit("[Service]\n# DeviceAllow=/dev/x rw\nDeviceAllow=/dev/a rw\nDeviceAllow=/dev/b r\n")
    assert parsed == {"Service": {"DeviceAllow": ["/dev/a rw", "/dev/b r"]}}


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    # verify checks that ExecStart= names an executable file; /opt/avemo-edge is not installed here,
    # so the copy runs this Python instead, with the rest of the unit unchanged.
    text = UNIT.read_text().replace("/opt/avemo-edge/bin/avemo-edge", sys.executable)
    assert text != UNIT.read_text(), "ExecStart= no longer names /opt/avemo-edge/bin/avemo-edge"
    unit = tmp_path / UNIT.name
    unit.write_text(text)
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    # Unknown keys and bad values are warnings with status 0: none may come from this unit.
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if UNIT.name in line]
    assert not complaints, "\n".join(complaints)


def test_jetpack6_gpu_devices_are_allowed(service: dict[str, list[str]]) -> None:
    assert service["DevicePolicy"] == ["closed"]
    allowed = {v.split()[0]: v.split()[1] for v in service["DeviceAllow"]}
    for node in JETPACK6_NODES:
        assert node in allowed, f"DeviceAllow= lacks {node}"
        assert set(allowed[node]) >= {"r", "w"}, f"{node} is allowed {allowed[node]!r}, not rw"
    groups = " ".join(service["SupplementaryGroups"]).split()
    assert {"video", "render", "audio"} <= set(groups)
    members = {line.split()[2] for line in SYSUSERS.read_text().splitlines() if line.startswith("m ")}
    assert {"video", "render", "audio"} <= members, "the sysusers file must add the user to every group"


def test_argus_socket_is_reachable(service: dict[str, list[str]]) -> None:
    private = service.get("PrivateTmp", ["no"])[-1]
    binds = " ".join(service.get("BindPaths", []) + service.get("BindReadOnlyPaths", [])).split()
    assert private in ("no", "false", "0") or any(b.lstrip("-").split(":")[0] == "/tmp/argus_socket" for b in binds)
    for key in ("InaccessiblePaths", "TemporaryFileSystem"):
        hidden = " ".join(service.get(key, [])).split()
        assert not any(p.lstrip("-").split(":")[0] in ("/tmp", "/tmp/argus_socket") for p in hidden), key
    assert "AF_UNIX" in " ".join(service["RestrictAddressFamilies"]).split()


def test_engine_cache_is_writable(service: dict[str, list[str]]) -> None:
    assert service["CacheDirectory"] == ["avemo-edge"]
    env = environment(service)
    cache = "/var/cache/avemo-edge"
    # onnxruntime's TensorRT engine cache lives under $XDG_CACHE_HOME (avemo_edge/ort_backend.py).
    for key in ("XDG_CACHE_HOME", "HOME", "CUDA_CACHE_PATH"):
        assert env.get(key, "").startswith(cache), f"{key}={env.get(key)!r} is outside {cache}"
    # /tmp is shared and read-only under ProtectSystem=strict: the scratch space is the runtime directory.
    assert service["RuntimeDirectory"] == ["avemo-edge"] and env["TMPDIR"] == "/run/avemo-edge"


def test_engine_cache_follows_xdg_cache_home(monkeypatch: pytest.MonkeyPatch) -> None:
    from avemo_edge.ort_backend import _cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", "/var/cache/avemo-edge")
    assert str(_cache_dir("ab" * 32)).startswith("/var/cache/avemo-edge/")


def test_notify_settings(service: dict[str, list[str]]) -> None:
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["main"]
    assert int(service["WatchdogSec"][0]) > 0
    assert int(service["TimeoutStartSec"][0]) >= 300  # an engine build on the first start
