"""The Pi agent as a service (firmware_templates/rpi/edgekit_agent.py `serve` and `install-service`),
run here with this interpreter and ai-edge-litert, as it runs on a Raspberry Pi.

`serve` is tested over real HTTP against an in-process LiteRT interpreter. `install-service` writes a
real unit file, checked with a reader of systemd's ExecStart syntax (tests/systemd_exec.py) and with
`systemd-analyze verify` where that exists. A systemd user manager cannot run in this test machine
(no systemd as PID 1), so the start path uses a stand-in `systemctl` on PATH that implements the three
calls the agent makes (daemon-reload, enable, restart: it starts the unit's ExecStart); the stand-in
says so in its own text. Over SSH, `edgekit flash --service` meets the real systemctl (or its absence)
in tests/integration/test_ssh_pi.py.
"""
from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conformance.linkkit import model_cache_dir, tiny_model  # noqa: F401
from systemd_exec import exec_argv, unit_exec_start

ROOT = Path(__file__).resolve().parents[2]
AGENT = ROOT / "firmware_templates" / "rpi" / "edgekit_agent.py"
TESTS = ROOT / "tests"
AWKWARD = "it's; a \"model\" $HOME %n \\ x.tflite"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def model_path(tmp_path, tiny_model):  # noqa: F811
    path = tmp_path / "models dir" / AWKWARD
    path.parent.mkdir()
    path.write_bytes(tiny_model)
    return path


def _agent(*args, env=None, timeout=60):
    return subprocess.run([sys.executable, str(AGENT), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _http(url, body=None, *, raw: bytes | None = None, headers=None):
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class Served:
    def __init__(self, model: Path, *extra):
        self.proc = subprocess.Popen([sys.executable, str(AGENT), "serve", str(model), "--port", "0", *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        assert ready, "the agent did not start serving within 60 s"
        first = json.loads(self.proc.stdout.readline())
        assert first["ok"], first
        self.url = "http://" + first["listening"]
        self.sha = first["model_sha256"]

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def test_serve_answers_health_and_invoke_as_litert_does(model_path, tiny_model):  # noqa: F811
    import hashlib

    from ai_edge_litert.interpreter import Interpreter

    ref = Interpreter(model_content=tiny_model)
    ref.allocate_tensors()
    din, dout = ref.get_input_details()[0], ref.get_output_details()[0]
    served = Served(model_path)
    try:
        status, health = _http(served.url + "/health")
        assert status == 200 and health["ok"]
        assert health["model_sha256"] == hashlib.sha256(tiny_model).hexdigest() == served.sha
        assert health["model"] == str(model_path) and health["runtime"] == "ai_edge_litert"
        assert health["inputs"][0]["shape"] == [int(x) for x in din["shape"]]
        assert health["inputs"][0]["dtype"] == "int8" and health["inputs"][0]["scale"] > 0
        rng = np.random.default_rng(0)
        for _ in range(3):
            x = rng.integers(-128, 128, size=din["shape"], dtype=np.int64).astype(np.int8)
            ref.set_tensor(din["index"], x)
            ref.invoke()
            want = ref.get_tensor(dout["index"])
            status, got = _http(served.url + "/invoke", {"inputs": [x.tolist()]})
            assert status == 200 and got["ok"] and got["latency_us"] > 0
            assert np.array_equal(np.array(got["outputs"][0], dtype=np.int8), want)
            scale, zero = dout["quantization"]
            assert np.allclose(got["real_outputs"][0], (want.astype(np.float64) - zero) * scale)
        # real values, quantized by the service with the input's scale and zero point; batch left out
        real = rng.uniform(0, 1, size=din["shape"][1:])
        s_in, z_in = din["quantization"]
        q = np.clip(np.round(real / s_in + z_in), -128, 127).astype(np.int8)
        ref.set_tensor(din["index"], q[None])
        ref.invoke()
        status, got = _http(served.url + "/invoke", {"input": real.tolist(), "real": True})
        assert status == 200 and np.array_equal(np.array(got["outputs"][0], dtype=np.int8),
                                                ref.get_tensor(dout["index"]))

        # bad requests: a clear JSON error each, and the service keeps serving
        bad_shape = _http(served.url + "/invoke", {"input": [[1, 2, 3]]})
        assert bad_shape[0] == 400 and "does not match the model's" in bad_shape[1]["message"]
        assert _http(served.url + "/invoke", raw=b"{not json")[0] == 400
        nan = _http(served.url + "/invoke", raw=b'{"input": ' + json.dumps(np.full(din["shape"][1:], np.nan).tolist()).encode() + b"}")
        assert nan[0] == 400 and "NaN" in nan[1]["message"]
        out_of_range = _http(served.url + "/invoke", {"input": np.full(din["shape"][1:], 300).tolist()})
        assert out_of_range[0] == 400 and "whole numbers in -128..127" in out_of_range[1]["message"]
        assert _http(served.url + "/nothing")[0] == 404
        too_big = _http(served.url + "/invoke", raw=b"{}", headers={"Content-Length": str(64 * 1024 * 1024)})
        assert too_big[0] == 413
        status, health = _http(served.url + "/health")
        assert status == 200 and health["invocations"] == 4
    finally:
        served.stop()


def test_serve_refuses_a_port_in_use_in_one_line(model_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        r = _agent("serve", model_path, "--port", s.getsockname()[1])
    assert r.returncode == 2
    answer = json.loads(r.stdout)
    assert answer["error"] == "usage" and "cannot listen on 127.0.0.1" in answer["message"]


def test_unit_file_carries_awkward_model_names_intact(model_path, tmp_path):
    units = tmp_path / "units"
    r = _agent("install-service", model_path, "--unit-dir", units, "--no-start", "--port", "9001", "--threads", "2",
               "--no-xnnpack")
    assert r.returncode == 0, r.stdout + r.stderr
    answer = json.loads(r.stdout)
    unit = Path(answer["unit"])
    assert unit.parent == units and unit.name == answer["name"] and answer["started"] is False
    assert unit.name.startswith("edgekit-it-s--a--model") and unit.name.endswith(".service")
    text = unit.read_text()
    assert unit_exec_start(text) == [sys.executable, str(AGENT), "serve", str(model_path), "--bind", "127.0.0.1",
                                     "--port", "9001", "--threads", "2", "--no-xnnpack"]
    assert "[Install]\nWantedBy=default.target" in text and "Restart=on-failure" in text
    assert not list(units.glob("*.edgekit-tmp"))
    # the reader is strict: an unescaped % or $ (which systemd would expand) is an error
    with pytest.raises(ValueError):
        exec_argv('"/usr/bin/python3" "a %n b"')
    analyze = shutil.which("systemd-analyze")
    if analyze:      # systemd's own parser, where this machine has it
        v = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
        assert v.returncode == 0, v.stderr
    bad = _agent("install-service", model_path, "--unit-dir", units, "--no-start", "--bind", "127.0.0.1\nx")
    assert bad.returncode == 2 and "control character" in json.loads(bad.stdout)["message"]


FAKE_SYSTEMCTL = textwrap.dedent('''\
    #!{python}
    """A stand-in for systemctl: no systemd user manager can run on the test machine. It implements the
    calls edgekit's agent makes: --user daemon-reload | enable NAME | restart NAME (starts ExecStart)."""
    import json, os, subprocess, sys
    sys.path.insert(0, {tests!r})
    from systemd_exec import unit_exec_start
    log = os.environ["FAKE_SYSTEMCTL_LOG"]
    with open(log, "a") as f:
        f.write(json.dumps(sys.argv[1:]) + "\\n")
    mode = os.environ.get("FAKE_SYSTEMCTL_MODE", "work")
    if mode == "no-bus":
        print("Failed to connect to bus: No medium found")
        sys.exit(1)
    if sys.argv[1:3] == ["--user", "restart"] and mode == "work":
        unit = os.path.join(os.environ["XDG_CONFIG_HOME"], "systemd", "user", sys.argv[3])
        argv = unit_exec_start(open(unit).read())
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        with open(log + ".pid", "w") as f:
            f.write(str(proc.pid))
    ''')


@pytest.fixture
def systemctl_env(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "systemctl"
    fake.write_text(FAKE_SYSTEMCTL.format(python=sys.executable, tests=str(TESTS)))
    fake.chmod(0o755)
    log = tmp_path / "systemctl.log"
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", XDG_CONFIG_HOME=str(tmp_path / "xdg"),
               FAKE_SYSTEMCTL_LOG=str(log))
    yield env, log
    pid_file = Path(str(log) + ".pid")
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
        except ProcessLookupError:
            pass


def test_install_service_starts_it_and_confirms_the_model_by_hash(model_path, systemctl_env, tiny_model):  # noqa: F811
    import hashlib

    env, log = systemctl_env
    port = _free_port()
    r = _agent("install-service", model_path, "--port", port, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    answer = json.loads(r.stdout)
    name = answer["name"]
    assert answer["started"] is True and answer["url"] == f"http://127.0.0.1:{port}"
    assert answer["health"]["model_sha256"] == hashlib.sha256(tiny_model).hexdigest()
    assert Path(answer["unit"]) == Path(env["XDG_CONFIG_HOME"]) / "systemd" / "user" / name
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls == [["--user", "daemon-reload"], ["--user", "enable", name], ["--user", "restart", name]]
    status, got = _http(f"http://127.0.0.1:{port}/health")
    assert status == 200 and got["model"] == str(model_path)


def test_install_service_without_a_user_manager_says_so_and_keeps_the_unit(model_path, systemctl_env, tmp_path):
    env, log = systemctl_env
    r = _agent("install-service", model_path, env=dict(env, FAKE_SYSTEMCTL_MODE="no-bus"))
    assert r.returncode == 14
    answer = json.loads(r.stdout)
    assert answer["error"] == "service_unavailable"
    assert "daemon-reload failed (Failed to connect to bus: No medium found)" in answer["message"]
    assert "enable-linger" in answer["hint"]
    units = list((Path(env["XDG_CONFIG_HOME"]) / "systemd" / "user").glob("*.service"))
    assert len(units) == 1 and str(units[0]) in answer["message"]
    # no systemctl at all
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _agent("install-service", model_path, env=dict(env, PATH=str(empty)))
    assert r.returncode == 14 and "no systemctl on this board" in json.loads(r.stdout)["message"]


def test_install_service_that_never_answers_fails_in_bounded_time(model_path, systemctl_env):
    env, _ = systemctl_env
    t0 = time.monotonic()
    r = _agent("install-service", model_path, "--port", _free_port(), "--wait", "2",
               env=dict(env, FAKE_SYSTEMCTL_MODE="silent"))
    assert r.returncode == 15 and time.monotonic() - t0 < 30
    answer = json.loads(r.stdout)
    assert answer["error"] == "service_failed" and "journalctl --user -u edgekit-" in answer["hint"]
