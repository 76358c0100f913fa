"""The ssh runner against a real OpenSSH server on 127.0.0.1 ("the Pi").

The test starts its own sshd (openssh-server) on a free port with its own config, host key, user
key and known_hosts, and points the runner at them through an ssh config file (``ssh_config``
option; a user's ~/.ssh/config plays that part on a real setup). The agent runs for real with
ai-edge-litert: the remote python is this test's interpreter.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conformance.linkkit import model_cache_dir, tiny_model  # noqa: F401
from edgekit.boards import load_board
from edgekit.errors import DeviceError, OutputError, RuntimeMissing
from edgekit.runners import get_runner
from edgekit.runners.ssh import SshRunner

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (os.path.exists(SSHD) and shutil.which("ssh") and shutil.which("scp")),
                                 reason="openssh-server / openssh-client not installed (tools/apt-packages.txt)")]
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "unit"))      # the genuine benchmark_model samples


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30)
    return path.with_suffix(".pub").read_text().strip() if path.suffix else Path(str(path) + ".pub").read_text().strip()


class Pi:
    def __init__(self, root: Path):
        self.root = root
        self.port = _free_port()
        self.host_key = root / "host_key"
        self.user_key = root / "user_key"
        host_pub = _keygen(self.host_key)
        user_pub = _keygen(self.user_key)
        (root / "authorized_keys").write_text(user_pub + "\n")
        (root / "known_hosts").write_text(f"edgekit-test-pi {host_pub}\n")
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        (root / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key}\nPidFile {root}/sshd.pid\n"
            f"AuthorizedKeysFile {root}/authorized_keys\nStrictModes no\nUsePAM no\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "Subsystem sftp internal-sftp\nLogLevel ERROR\n"
            f"SetEnv XDG_CONFIG_HOME={root}/xdg\n")          # where systemd user units go
        self.config = self.ssh_config(root / "known_hosts")
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(root / "sshd_config")],
                                     stdout=subprocess.DEVNULL, stderr=open(root / "sshd.log", "wb"))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("sshd exited: " + (root / "sshd.log").read_text())
                time.sleep(0.1)
        else:
            raise RuntimeError("sshd did not listen within 15 s")

    def ssh_config(self, known_hosts: Path, port: int | None = None, name: str = "ssh_config") -> Path:
        path = self.root / name
        path.write_text(
            f"Host edgekit-test-pi\n  HostName 127.0.0.1\n  Port {port or self.port}\n  User root\n"
            f"  IdentityFile {self.user_key}\n  IdentitiesOnly yes\n  HostKeyAlias edgekit-test-pi\n"
            f"  UserKnownHostsFile {known_hosts}\n  GlobalKnownHostsFile /dev/null\n")
        return path

    def runner(self, board="rpi5", **options) -> SshRunner:
        opts = {"host": "edgekit-test-pi", "ssh_config": str(self.config), "remote_python": sys.executable,
                "remote_dir": str(self.root / "remote"), "connect_timeout": 5, "timeout": 120}
        opts.update(options)
        return get_runner("ssh")(load_board(board), options=opts)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def pi(tmp_path):
    p = Pi(tmp_path)
    yield p
    p.stop()


@pytest.fixture
def model_file(tmp_path, tiny_model):  # noqa: F811
    path = tmp_path / "models dir" / "it's; a model.tflite"
    path.parent.mkdir()
    path.write_bytes(tiny_model)
    return path


def test_registry_serves_the_real_ssh_runner():
    assert get_runner("ssh") is SshRunner


def test_profile_on_the_pi_over_ssh(pi, model_file, tmp_path):
    result = pi.runner().run("profile", model_path=model_file, runs=20, warmup=2, threads=2)
    d = result.to_dict()
    assert d["schema"] == "edgekit.profile/1" and d["runner"] == "ssh"
    assert d["device"]["runtime"] == "ai_edge_litert" and d["device"]["threads"] == 2
    assert d["latency_us"]["n"] == 20 and len(d["latency_samples_us"]) == 20
    assert 0 < d["latency_us"]["min"] <= d["latency_us"]["median"] <= d["latency_us"]["max"]
    assert d["memory"]["peak_rss_bytes"] > 1_000_000           # a python process with LiteRT loaded
    assert d["per_op"] is None and "op profiler" in d["per_op_note"]
    assert d["model"]["path"] == str(model_file)
    # the model really went to the remote folder under a name edgekit made
    staged = list((tmp_path / "remote").glob("model-*.tflite"))
    assert len(staged) == 1 and staged[0].read_bytes() == model_file.read_bytes()
    json.dumps(d)


STAND_IN_BENCHMARK = """#!{python}
# A stand-in for LiteRT's benchmark_model (no build of it for this machine can be had here): it checks
# the flags edgekit passes, then prints a genuine published output of the tool
# (tests/unit/test_benchmark_model_parser.py, NEW_OPS), or that output cut short.
import os, sys
sys.path.insert(0, {tests!r})
from test_benchmark_model_parser import NEW_OPS
args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
assert os.path.isfile(args["graph"]), args
assert args["enable_op_profiling"] == "true" and args["num_threads"] == "2", args
with open(os.path.join(os.path.dirname(args["graph"]), "bench-args.txt"), "w") as f:
    f.write(" ".join(sys.argv[1:]))
print(NEW_OPS[:{cut}] if {cut} else NEW_OPS)
"""


def _stand_in(tmp_path, cut=0) -> Path:
    path = tmp_path / f"benchmark_model_{cut}"
    path.write_text(STAND_IN_BENCHMARK.format(python=sys.executable, tests=str(REPO / "tests" / "unit"), cut=cut))
    path.chmod(0o755)
    return path


def test_per_op_profile_on_the_pi_with_benchmark_model(pi, model_file, tmp_path):
    from edgekit.runners.benchmark_model import parse
    from test_benchmark_model_parser import NEW_OPS

    result = pi.runner(benchmark_binary=str(_stand_in(tmp_path))).run(
        "profile", model_path=model_file, runs=64, warmup=3, threads=2)
    d = result.to_dict()
    want = parse(NEW_OPS, expect_ops=True)
    assert d["runner"] == "ssh" and d["device"]["firmware_version"] == "LiteRT benchmark_model"
    assert d["latency_us"]["mean"] == want.stats_us["avg"] and d["latency_us"]["n"] == want.runs
    assert [op["type"] for op in d["per_op"]] == [op["type"] for op in want.per_op]
    assert d["per_op"][2]["count"] == 13 and d["per_op"][2]["mean_us"] == pytest.approx(51.0)
    assert d["memory"]["tool_overall_mb"] == 34.8281 and d["latency_samples_us"] == []
    # the binary and the model went to the board's edgekit folder; the flags are the documented ones
    remote = tmp_path / "remote"
    assert len(list(remote.glob("benchmark_model-*"))) == 1
    args = (remote / "bench-args.txt").read_text()
    assert args == (f"--graph={d['device']['remote_model']} --num_runs=64 --warmup_runs=3 --num_threads=2 "
                    "--use_xnnpack=true --enable_op_profiling=true")


def test_benchmark_model_problems_on_the_pi_report_nothing_partial(pi, model_file, tmp_path):
    from edgekit.runners.benchmark_model import BenchmarkOutputError

    with pytest.raises(BenchmarkOutputError):           # output cut before the timings line
        pi.runner(benchmark_binary=str(_stand_in(tmp_path, cut=600))).run(
            "profile", model_path=model_file, runs=5, warmup=0, threads=2)
    arm = tmp_path / "linux_aarch64_benchmark_model"   # an aarch64 ELF header: this x86 host cannot exec it
    arm.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(9) + b"\x02\x00\xb7\x00" + bytes(44))
    with pytest.raises(RuntimeMissing, match="benchmark_model does not run on the board") as err:
        pi.runner(benchmark_binary=str(arm)).run("profile", model_path=model_file, runs=5, warmup=0, threads=2)
    assert "linux_aarch64_benchmark_model" in err.value.hint
    from edgekit.errors import ToolMissing

    with pytest.raises(ToolMissing, match="does not exist"):
        pi.runner(benchmark_binary=str(tmp_path / "nope")).run("profile", model_path=model_file, runs=5)


def test_profile_without_xnnpack(pi, model_file):
    d = pi.runner().run("profile", model_path=model_file, runs=5, warmup=0, xnnpack=False).to_dict()
    assert d["device"]["xnnpack"] is False and d["latency_us"]["n"] == 5


def test_install_with_awkward_names_runs_nothing(pi, model_file, tmp_path):
    dest = tmp_path / "dest; touch PWNED" / "a 'b'"
    out = pi.runner().install(model_file, dest=str(dest))
    installed = dest / model_file.name
    assert installed.read_bytes() == model_file.read_bytes()
    assert out["path"] == str(installed)
    assert not list(tmp_path.rglob("PWNED")) and not Path("PWNED").exists()
    assert not (Path.home() / "PWNED").exists()


def test_cli_profile_json(pi, model_file):
    env = dict(os.environ, EDGEKIT_SSH_CONFIG=str(pi.config), EDGEKIT_REMOTE_PYTHON=sys.executable,
               EDGEKIT_REMOTE_DIR=str(pi.root / "cli-remote"))
    cmd = [sys.executable, "-m", "edgekit", "profile", str(model_file), "--board", "rpi5",
           "--host", "edgekit-test-pi", "--runs", "10", "--warmup", "1", "--threads", "1", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert d["runner"] == "ssh" and d["latency_us"]["n"] == 10
    human = subprocess.run(cmd[:-1], capture_output=True, text=True, timeout=180, env=env, cwd=REPO)
    assert human.returncode == 0, human.stderr
    assert "latency per inference" in human.stdout and "ai_edge_litert" in human.stdout
    assert len(list((pi.root / "cli-remote").glob("model-*.tflite"))) == 1


def test_cli_host_key_mismatch_exit_code(pi, model_file, tmp_path):
    other_pub = _keygen(tmp_path / "cli_other_key")
    bad_known = tmp_path / "cli_bad_known_hosts"
    bad_known.write_text(f"edgekit-test-pi {other_pub}\n")
    env = dict(os.environ, EDGEKIT_SSH_CONFIG=str(pi.ssh_config(bad_known, name="cli_bad_config")),
               EDGEKIT_REMOTE_PYTHON=sys.executable, EDGEKIT_REMOTE_DIR=str(tmp_path / "never"))
    proc = subprocess.run([sys.executable, "-m", "edgekit", "profile", str(model_file), "--board", "rpi5",
                           "--host", "edgekit-test-pi", "--runs", "2"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert proc.returncode == 9
    assert "host key verification failed" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "never").exists()


def test_host_key_mismatch_is_refused(pi, model_file, tmp_path):
    other = tmp_path / "other_host_key"
    other_pub = _keygen(other)
    bad_known = tmp_path / "bad_known_hosts"
    bad_known.write_text(f"edgekit-test-pi {other_pub}\n")
    config = pi.ssh_config(bad_known, name="bad_config")
    t0 = time.monotonic()
    with pytest.raises(DeviceError, match="host key verification failed") as err:
        pi.runner(ssh_config=str(config)).run("profile", model_path=model_file, runs=2, warmup=0)
    assert err.value.exit_code == 9 and "never accepts host keys" in err.value.hint
    assert time.monotonic() - t0 < 30
    assert not (tmp_path / "remote").exists()      # nothing ran on the host


def test_refused_key(pi, model_file, tmp_path):
    (pi.root / "authorized_keys").write_text("")
    with pytest.raises(DeviceError, match="permission denied") as err:
        pi.runner().run("profile", model_path=model_file, runs=2, warmup=0)
    assert err.value.exit_code == 9


def test_closed_port_fails_fast(pi, model_file):
    config = pi.ssh_config(pi.root / "known_hosts", port=_free_port(), name="closed_config")
    t0 = time.monotonic()
    with pytest.raises(DeviceError, match="connection refused"):
        pi.runner(ssh_config=str(config)).run("profile", model_path=model_file, runs=2, warmup=0)
    assert time.monotonic() - t0 < 15


def test_silent_host_is_bounded_by_connect_timeout(tmp_path, model_file):
    # A listener that completes the TCP handshake but never sends the SSH banner: the way a
    # firewalled or hung board looks. ConnectTimeout bounds the wait.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        config = tmp_path / "silent_config"
        config.write_text(f"Host silent\n  HostName 127.0.0.1\n  Port {silent.getsockname()[1]}\n  User root\n"
                          "  UserKnownHostsFile /dev/null\n  GlobalKnownHostsFile /dev/null\n")
        runner = get_runner("ssh")(load_board("rpi5"), options={"host": "silent", "ssh_config": str(config),
                                                                 "connect_timeout": 2, "timeout": 30})
        t0 = time.monotonic()
        with pytest.raises(DeviceError, match="timed out") as err:
            runner.run("profile", model_path=model_file, runs=2, warmup=0)
        elapsed = time.monotonic() - t0
    assert 1.5 < elapsed < 20
    assert err.value.exit_code == 9


def _python_without_litert(folder: Path) -> Path:
    """This interpreter (with numpy), started so that neither ai_edge_litert nor tflite_runtime can be
    imported: a Pi whose Python has no TFLite runtime, on any test machine."""
    site = folder / "no-litert"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\n"
        "class _NoRuntime:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('ai_edge_litert', 'tflite_runtime'):\n"
        "            raise ImportError('No module named ' + repr(name))\n"
        "sys.meta_path.insert(0, _NoRuntime())\n")
    wrapper = folder / "python-without-litert"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={shlex.quote(str(site))} exec {shlex.quote(sys.executable)} \"$@\"\n")
    wrapper.chmod(0o755)
    probe = subprocess.run([str(wrapper), "-c", "import numpy\ntry:\n import ai_edge_litert\nexcept ImportError:\n"
                            " print('bare')"], capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "bare", probe.stderr
    return wrapper


def test_pi_without_a_tflite_runtime(pi, model_file, tmp_path):
    bare = _python_without_litert(tmp_path)
    with pytest.raises(RuntimeMissing, match="no TFLite runtime") as err:
        pi.runner(remote_python=str(bare)).run("profile", model_path=model_file, runs=2, warmup=0)
    assert err.value.exit_code == 12 and "pip install ai-edge-litert" in err.value.hint


def test_remote_python_missing(pi, model_file):
    with pytest.raises(RuntimeMissing, match="not found on the board"):
        pi.runner(remote_python="/nonexistent/python3").run("profile", model_path=model_file, runs=2, warmup=0)


def test_full_remote_disk(pi, model_file, tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)],
                             capture_output=True, timeout=30).returncode == 0
    if not mounted:
        pytest.skip("cannot mount a small tmpfs here (needs root) to fill a disk")
    try:
        try:
            with open(full / "filler", "wb") as f:
                while True:
                    f.write(b"\0" * 1024)
                    f.flush()
        except OSError:
            pass
        with pytest.raises(OutputError) as err:
            pi.runner().install(model_file, dest=str(full / "models"))
        assert err.value.exit_code == 11
        assert "No space left" in err.value.message
        with pytest.raises(OutputError):
            pi.runner(remote_dir=str(full / "cache")).run("profile", model_path=model_file, runs=2, warmup=0)
    finally:
        subprocess.run(["umount", str(full)], timeout=30)


def test_cli_flash_installs_on_the_pi(pi, model_file, tmp_path):
    dest = tmp_path / "dest dir; echo hi"
    env = dict(os.environ, EDGEKIT_SSH_CONFIG=str(pi.config), EDGEKIT_REMOTE_DIR=str(pi.root / "cli-remote"))
    proc = subprocess.run([sys.executable, "-m", "edgekit", "flash", str(model_file), "--board", "rpi5",
                           "--host", "edgekit-test-pi", "--dest", str(dest), "--json"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    path = d["artifacts"]["path"]
    assert Path(path).read_bytes() == model_file.read_bytes() and path == str(dest / model_file.name)
    # the agent hashed the installed file on the board
    assert d["confirmed"] is True and d["model_sha256"][:16] in d["confirmation"] and path in d["confirmation"]
    assert d["runner"] == "ssh" and d["fit"]["fits"] is True


def test_flash_service_without_a_systemd_user_manager(pi, model_file, tmp_path):
    """No systemd user manager runs on this machine (and maybe no systemctl): flash --service installs
    the model and the unit, then stops with one line that says so and how to get one."""
    dest = tmp_path / "svc models"
    env = dict(os.environ, EDGEKIT_SSH_CONFIG=str(pi.config), EDGEKIT_REMOTE_DIR=str(pi.root / "cli-remote"),
               EDGEKIT_REMOTE_PYTHON=sys.executable)
    proc = subprocess.run([sys.executable, "-m", "edgekit", "flash", str(model_file), "--board", "rpi5",
                           "--host", "edgekit-test-pi", "--dest", str(dest), "--service", "--service-port", "9123"],
                          capture_output=True, text=True, timeout=180, env=env, cwd=REPO)
    assert proc.returncode == 9, proc.stderr
    # stderr: the commands it ran ($ ...), then one error line and its hint
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("edgekit:")]
    assert "Traceback" not in proc.stderr and len(errors) == 1
    assert errors[0].startswith("edgekit: error: edgekit-test-pi: ") and "the unit is written to" in errors[0]
    units = list((tmp_path / "xdg" / "systemd" / "user").glob("edgekit-*.service"))
    assert len(units) == 1 and str(units[0]) in errors[0]
    from systemd_exec import unit_exec_start

    argv = unit_exec_start(units[0].read_text())
    assert argv[2:] == ["serve", str(dest / model_file.name), "--bind", "127.0.0.1", "--port", "9123",
                        "--threads", "1"]
    assert (dest / model_file.name).read_bytes() == model_file.read_bytes()


def _pi_options(pi) -> dict:
    return {"host": "edgekit-test-pi", "ssh_config": str(pi.config), "remote_python": sys.executable,
            "remote_dir": str(pi.root / "remote"), "connect_timeout": 5, "timeout": 120}


def test_sdk_profiles_and_validates_the_pi_through_its_runner(pi, model_file, tmp_path):
    """edgekit.profile / edgekit.validate on an ssh board from Python: the one dispatch, runner options."""
    import numpy as np

    import edgekit

    prof = edgekit.profile(model_file, board="rpi5", runs=5, warmup=1, options={**_pi_options(pi), "threads": 2})
    assert prof.runner == "ssh" and prof.device["threads"] == 2 and prof.latency_us["n"] == 5
    x = np.random.default_rng(3).uniform(-1, 1, size=(12, 8, 8, 1)).astype(np.float32)
    np.savez(tmp_path / "val.npz", x=x)
    res = edgekit.validate(model_file, tmp_path / "val.npz", board="rpi5", n=12, options=_pi_options(pi))
    assert res.passed and res.samples == 12 and res.host_reference == "litert"
    assert res.max_lsb == 0 and res.exact_fraction == 1.0          # the same LiteRT on both sides
    assert res.timing["source"] == "device" and "edgekit-test-pi" in res.timing["label"]
    assert res.agreement_tflm is not None                           # host TFLM shown for information
    assert len(list((pi.root / "remote").glob("inputs-*.npy"))) == 1
