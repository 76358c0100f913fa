"""A remote board: the virtual board's pty served by ser2net (RFC 2217) on 127.0.0.1, profiled
through ``rfc2217://127.0.0.1:PORT`` like a board on another machine."""
from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from conformance.linkkit import model_cache_dir, tiny_model  # noqa: F401
from edgekit.link.virtual_board import VirtualBoard
from labkit import free_port, wait_listening

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(shutil.which("ser2net") is None,
                                 reason="ser2net not installed (tools/apt-packages.txt)")]


@pytest.fixture
def remote_board(tmp_path, tiny_model):
    board = VirtualBoard(tiny_model, board_id="virtual")
    pty_path = board.start()
    port = free_port()
    config = tmp_path / "ser2net.yaml"
    config.write_text(
        "%YAML 1.1\n---\n"
        "connection: &virtual\n"
        f"    accepter: telnet(rfc2217),tcp,127.0.0.1,{port}\n"
        "    enable: on\n"
        "    options:\n"
        "      kickolduser: true\n"
        f"    connector: serialdev,{pty_path},115200n81,local\n")
    log = open(tmp_path / "ser2net.log", "wb")
    proc = subprocess.Popen(["ser2net", "-n", "-d", "-u", "-c", str(config),
                             "-P", str(tmp_path / "ser2net.pid")],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_listening(port, proc, "ser2net")
        # the probe connection above may still be closing; give ser2net a moment to free the device
        time.sleep(0.2)
        yield f"rfc2217://127.0.0.1:{port}", board
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()
        board.stop()


def test_profile_through_rfc2217(remote_board, tiny_model, tmp_path):
    import hashlib

    from edgekit.profiling import profile

    url, board = remote_board
    model_path = tmp_path / "model.tflite"
    model_path.write_bytes(tiny_model)
    result = profile(model_path, board="virtual", port=url, runs=30, warmup=2)
    d = result.to_dict()
    assert d["schema"] == "edgekit.profile/1"
    assert d["device"]["port"] == url
    assert d["latency_us"]["n"] == 30 and d["latency_us"]["min"] > 0
    assert d["upload"] is None                           # the board already held this model
    assert d["device"]["model_sha256"] == hashlib.sha256(tiny_model).hexdigest()
    assert board.requests_handled >= 4                   # the requests really crossed ser2net


def test_upload_through_rfc2217(remote_board, tiny_model):
    from edgekit.link.session import DeviceSession

    url, board = remote_board
    with DeviceSession.open(url) as s:
        info = s.hello()
        assert info.board_id == "virtual"
        up = s.upload(tiny_model)       # same model: uploaded again, hash checked
        assert up.sha256 == info.model_sha256.hex()
        out = s.invoke(bytes(64))
        assert len(out.output) == 10
    assert board.model == tiny_model
    assert board.requests_handled >= 5
