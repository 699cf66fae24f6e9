"""`convscope serve` as a real process: loopback by default, a warning for any other address,
bad options refused in one sentence, and a clean stop on Ctrl-C that removes its folder."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from convscope.cli.testing import assert_one_sentence, run_cli
from convscope.testing import require_package

require_package("fastapi")

import httpx  # noqa: E402

SRC = Path(__file__).resolve().parents[2] / "src"
URL = re.compile(r"convscope serves (http://\S+?)/ ")


def _start(tmp: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.update(OMP_NUM_THREADS="1", TMPDIR=str(tmp))
    cmd = [sys.executable, "-m", "convscope", "serve", "--port", "0", "--model", "tiny", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _url(proc: subprocess.Popen[str]) -> tuple[str, list[str]]:
    """The served URL from the start-up line, and the stderr lines before it."""
    assert proc.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            if proc.poll() is not None:
                pytest.fail(f"serve ended ({proc.returncode}): {''.join(seen)}")
            continue
        m = URL.search(line)
        if m:
            return m.group(1), seen
        seen.append(line)
    proc.kill()
    pytest.fail("serve did not start")


def _stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("serve did not stop on Ctrl-C")
    return proc.returncode, err


def test_serve_binds_to_loopback_by_default_and_stops_cleanly(tmp_path: Path) -> None:
    proc = _start(tmp_path)
    url, before = _url(proc)
    try:
        assert url.startswith("http://127.0.0.1:")
        assert not any("Warning" in line for line in before)
        info = httpx.get(f"{url}/api/info", timeout=30).json()
        assert info["models"] == ["tiny"]
        rebound = httpx.get(f"{url}/api/info", headers={"host": "evil.example"}, timeout=30)
        assert rebound.status_code == 400  # another name for this address is not answered
        port = int(url.rsplit(":", 1)[1])
        listening = [
            c for c in _listeners() if c[1] == port
        ]  # (address, port) of the listening socket
        assert listening and all(addr == "127.0.0.1" for addr, _ in listening)
        assert list(tmp_path.glob("convscope-serve-*"))  # its folder, while it runs
    finally:
        code, err = _stop(proc)
    assert code in (0, 130), err
    assert "Traceback" not in err
    assert not list(tmp_path.glob("convscope-serve-*"))  # removed on exit


def _listeners() -> list[tuple[str, int]]:
    """Listening IPv4 TCP sockets of this machine, from /proc/net/tcp."""
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] != "0A":  # LISTEN
            continue
        hex_addr, hex_port = fields[1].split(":")
        addr = socket.inet_ntoa(bytes.fromhex(hex_addr)[::-1])
        found.append((addr, int(hex_port, 16)))
    return found


def test_another_address_is_warned_about(tmp_path: Path) -> None:
    proc = _start(tmp_path, "--host", "0.0.0.0")
    try:
        url, before = _url(proc)
        assert url.startswith("http://0.0.0.0:")
        assert any(line.startswith("Warning: serving on 0.0.0.0") for line in before)
    finally:
        _stop(proc)


def test_the_default_host_is_loopback() -> None:
    import inspect

    from convscope.cli.serve import is_loopback, serve_cmd

    assert inspect.signature(serve_cmd).parameters["host"].default == "127.0.0.1"
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--model", "nope"], "Unknown model"),
        (["--model", "tiny", "--upload-limit", "0"], "upload limit"),
        (["--model", "tiny", "--dataset", "no-such-data"], "no-such-data"),
        (["--model", "tiny", "--device", "quantum"], "quantum"),
    ],
)
def test_bad_options_get_one_sentence(
    args: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, "serve", "--port", "0", *args)
    assert code == 2, err
    assert words in assert_one_sentence(err)


def test_a_port_in_use_gets_one_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run_cli(capsys, "serve", "--port", str(port), "--model", "tiny")
    assert code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in assert_one_sentence(err)
