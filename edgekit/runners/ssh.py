"""The ssh runner: profile a model with LiteRT on a Linux board (Raspberry Pi) over SSH.

It calls the system OpenSSH client (``ssh``/``scp``) through the seam, not a Python SSH library, so
host keys are checked exactly as the user's own ``ssh`` checks them (``~/.ssh/known_hosts``) and
``~/.ssh/config`` is honoured for user, port and identity. It passes ``BatchMode=yes`` (never a
password or host-key prompt: an unknown or changed host key fails) and ``ConnectTimeout`` (an
unreachable host fails in bounded time); it never turns host-key checking off.

The model is copied to ``~/.cache/edgekit/model-<sha256>.tflite`` on the board (a name edgekit
makes, so no user-chosen character reaches the remote side unquoted) together with the
self-contained agent (firmware_templates/rpi/edgekit_agent.py), which times the model with
ai_edge_litert or tflite_runtime and answers in JSON. Every remote argument is ``shlex.quote``-d.
The LiteRT Python interpreter has no op profiler: for per-op times, the ``benchmark_binary`` option
copies LiteRT's ``benchmark_model`` (built for the board) next to the model and profiles with it
instead, read by the same parser as on Android (:mod:`edgekit.runners.benchmark_model`).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from pathlib import Path
from typing import Any

from edgekit.errors import (DeviceError, EdgekitError, InputFileError, NativeCrash, OutputError,
                            RuntimeMissing, ToolFailed, ToolMissing, UsageError)
from edgekit.runners.base import Capabilities, Runner, RunnerOption

REMOTE_DIR = ".cache/edgekit"          # relative to the remote home directory
AGENT_NAME = "edgekit_agent.py"
SSH_CONFIG_ENV = "EDGEKIT_SSH_CONFIG"  # an ssh config file used instead of ~/.ssh/config (ssh -F)
REMOTE_PYTHON_ENV = "EDGEKIT_REMOTE_PYTHON"
REMOTE_DIR_ENV = "EDGEKIT_REMOTE_DIR"        # folder on the board instead of ~/.cache/edgekit
_SAFE_REMOTE = re.compile(r"[A-Za-z0-9._/-]+")
SSH_FAILED = 255                       # ssh's own exit code for connection / auth failures
DEFAULT_SERVICE_PORT = 8577            # the agent's `serve` port (firmware_templates/rpi/edgekit_agent.py)


def agent_path() -> Path:
    from edgekit.exporters.firmware import templates_dir

    return templates_dir() / "rpi" / AGENT_NAME


def _link_error(e: ToolFailed, host: str) -> EdgekitError:
    """Turn ssh's exit 255 into one clear DeviceError line."""
    tail = e.context.get("output_tail") or ""
    low = tail.lower()
    if "host key verification failed" in low or "remote host identification has changed" in low:
        return DeviceError(f"{host}: host key verification failed (the key is unknown or does not match "
                           "known_hosts)", hint=f"check the board's key, then connect once with `ssh {host}` "
                           "to accept it; edgekit never accepts host keys by itself")
    if "permission denied" in low:
        return DeviceError(f"{host}: SSH login refused (permission denied)",
                           hint=f"set up key login (ssh-copy-id {host}); edgekit cannot type passwords")
    if "connection refused" in low:
        return DeviceError(f"{host}: connection refused (no SSH server on that port)",
                           hint="enable SSH on the board (raspi-config > Interface Options) or check the port")
    if "timed out" in low or "timeout" in low:
        return DeviceError(f"{host}: no answer (connection timed out)",
                           hint="check the host name / address and that the board is on the network")
    if "could not resolve" in low or "name or service not known" in low:
        return DeviceError(f"{host}: unknown host name", hint="check the spelling, or use the board's IP address")
    last = tail.splitlines()[-1] if tail else "no output"
    return DeviceError(f"{host}: SSH failed: {last}", hint=f"try `ssh {host} true` by hand")


class SshRunner(Runner):
    name = "ssh"
    description = "run models with LiteRT on a Linux board (Raspberry Pi) over SSH"
    capabilities = Capabilities(flash=True, run=True, profile=True, validate=True, model_upload=True,
                                tools=("ssh", "scp"))

    @classmethod
    def options_spec(cls):
        return [
            RunnerOption("host", "[user@]host of the board (a Host alias from ssh config works too)"),
            RunnerOption("ssh_port", "SSH port (default: from ssh config, else 22)", None, int),
            RunnerOption("identity", "private key file (default: from ssh config / ssh-agent)"),
            RunnerOption("ssh_config", f"ssh config file instead of ~/.ssh/config (or ${SSH_CONFIG_ENV})"),
            RunnerOption("remote_python", f"python on the board (or ${REMOTE_PYTHON_ENV}; default python3)"),
            RunnerOption("connect_timeout", "seconds to wait for the SSH connection", 10, int),
            RunnerOption("timeout", "seconds one remote command may take", 300, int),
            RunnerOption("remote_dir", f"folder on the board for the agent and models (or ${REMOTE_DIR_ENV}; "
                         f"default ~/{REMOTE_DIR})"),
            RunnerOption("benchmark_binary", "LiteRT benchmark_model built for the board (linux aarch64): "
                         "profile with it instead of the agent, for per-op times"),
            RunnerOption("threads", "LiteRT CPU threads", 1, int),
            RunnerOption("xnnpack", "use the XNNPACK delegate", True, bool),
        ]

    # -- ssh / scp command lines -------------------------------------------------------------------
    @property
    def host(self) -> str:
        host = self.options.get("host")
        if not host:
            raise UsageError("the ssh runner needs a host", hint="pass --host user@raspberrypi.local")
        if host.startswith("-"):
            raise UsageError(f"bad host {host!r}")
        return host

    def _common(self, port_flag: str) -> list[str]:
        argv = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.options['connect_timeout']}"]
        config = self.options.get("ssh_config") or os.environ.get(SSH_CONFIG_ENV)
        if config:
            argv += ["-F", str(config)]
        if self.options.get("ssh_port"):
            argv += [port_flag, str(self.options["ssh_port"])]
        if self.options.get("identity"):
            argv += ["-i", str(self.options["identity"])]
        return argv

    def ssh_argv(self, remote_command: str) -> list[str]:
        return ["ssh", *self._common("-p"), "--", self.host, remote_command]

    def scp_argv(self, local: Path, remote_rel: str) -> list[str]:
        # local is absolute (so a ':' in it is not read as host:path); remote_rel is a name edgekit made.
        return ["scp", "-q", *self._common("-P"), "--", str(Path(local).resolve()), f"{self.host}:{remote_rel}"]

    @property
    def remote_dir(self) -> str:
        folder = str(self.options.get("remote_dir") or os.environ.get(REMOTE_DIR_ENV) or REMOTE_DIR)
        if not _SAFE_REMOTE.fullmatch(folder):
            raise UsageError(f"remote_dir {folder!r} may only hold letters, digits and . _ / -",
                             hint="pick a plain folder name; model file names may be anything")
        return folder.rstrip("/")

    def remote_python(self) -> str:
        return self.options.get("remote_python") or os.environ.get(REMOTE_PYTHON_ENV) or "python3"

    def _ssh(self, remote_command: str, *, timeout: float | None = None):
        try:
            return self.tool(self.ssh_argv(remote_command), timeout=timeout or self.options["timeout"])
        except ToolFailed as e:
            if e.context.get("returncode") == SSH_FAILED:
                raise _link_error(e, self.host) from e
            raise

    def _scp(self, local: Path, remote_rel: str):
        try:
            return self.tool(self.scp_argv(local, remote_rel), timeout=self.options["timeout"])
        except ToolFailed as e:
            if e.context.get("returncode") == SSH_FAILED:
                raise _link_error(e, self.host) from e
            if e.context.get("returncode") is None:      # the seam's timeout
                raise
            tail = e.context.get("output_tail") or ""
            why = "no space left on the board" if "no space left" in tail.lower() else \
                (tail.splitlines()[-1] if tail else "scp failed")
            raise OutputError(f"{self.host}: cannot write {remote_rel} on the board: {why}",
                              hint="check that the folder is writable and the disk has space (df -h)") from e

    # -- staging ------------------------------------------------------------------------------------
    def stage(self, model_path: Path, sha: str) -> str:
        """Copy the agent and the model to ~/.cache/edgekit; return the remote model path (relative)."""
        folder = self.remote_dir
        remote_model = f"{folder}/model-{sha[:16]}.tflite"
        try:
            self._ssh(f"mkdir -p -- {shlex.quote(folder)}", timeout=self.options["connect_timeout"] + 30)
        except ToolFailed as e:
            tail = e.context.get("output_tail") or ""
            raise OutputError(f"{self.host}: cannot create {folder} on the board: "
                              f"{tail.splitlines()[-1] if tail else 'failed'}",
                              hint="check that the folder is writable and the disk has space (df -h)") from e
        self._scp(agent_path(), f"{folder}/{AGENT_NAME}")
        self._scp(model_path, remote_model)
        return remote_model

    def agent_command(self, remote_model: str, *, runs: int, warmup: int, threads: int, xnnpack: bool) -> str:
        argv = [self.remote_python(), f"{self.remote_dir}/{AGENT_NAME}", "profile", remote_model,
                "--runs", str(runs), "--warmup", str(warmup), "--threads", str(threads)]
        if not xnnpack:
            argv.append("--no-xnnpack")
        return shlex.join(argv)

    def run_agent(self, command: str) -> dict:
        try:
            result = self._ssh(command)
            out, code = result.output, 0
        except ToolFailed as e:
            out, code = e.context.get("output_tail") or "", e.context.get("returncode")
        if self.dry_run:
            return {}
        answer = None
        for line in reversed(out.strip().splitlines()):
            start = line.find('{"ok"')     # the runtime's own stderr chatter may share the document's line
            if start >= 0:
                try:
                    answer, _ = json.JSONDecoder().raw_decode(line[start:])
                except ValueError:
                    pass
                break
        if answer is None:
            last = out.strip().splitlines()[-1] if out.strip() else "no output"
            if code == 127 or "not found" in last:
                raise RuntimeMissing(f"{self.host}: {self.remote_python()} not found on the board",
                                     hint="install Python 3 on the board, or pass --remote-python")
            raise DeviceError(f"{self.host}: the edgekit agent gave no answer (exit {code}): {last}",
                              hint="run it by hand: " + command)
        if not answer.get("ok"):
            kind = answer.get("error")
            cls = {"runtime_missing": RuntimeMissing, "model_unreadable": InputFileError,
                   "runtime_failed": NativeCrash, "usage": UsageError,
                   "unit_unwritable": OutputError}.get(kind, DeviceError)
            raise cls(f"{self.host}: {answer.get('message')}", hint=answer.get("hint"))
        return answer

    # -- commands -----------------------------------------------------------------------------------
    def do_profile(self, model_path=None, runs: int = 50, warmup: int = 5, threads: int | None = None,
                   xnnpack: bool | None = None, **_) -> Any:
        threads = self.options["threads"] if threads is None else threads
        xnnpack = self.options["xnnpack"] if xnnpack is None else xnnpack
        if model_path is None:
            raise UsageError(f"runner {self.name}: profile needs a model", hint="pass the .tflite file to profile")
        from edgekit.fileio import read_input
        from edgekit.profiling import latency_stats, litert_profile, model_facts

        if not 1 <= runs <= 1_000_000 or not 0 <= warmup <= 1_000_000:
            raise UsageError(f"runs must be >= 1 and warmup >= 0, got {runs} / {warmup}")
        if threads < 1:
            raise UsageError(f"--threads must be >= 1, got {threads}")
        path = Path(model_path)
        facts = model_facts(read_input(path, "model"), str(path))
        binary = self._benchmark_binary()                 # checked before anything is copied
        remote_model = self.stage(path, facts.sha256)
        if binary is not None:
            return self._profile_with_benchmark(binary, remote_model, path, facts, runs=runs, warmup=warmup,
                                                threads=threads, xnnpack=xnnpack)
        answer = self.run_agent(self.agent_command(remote_model, runs=runs, warmup=warmup,
                                                   threads=threads, xnnpack=xnnpack))
        if self.dry_run:
            return None
        samples = [float(s) for s in answer["samples_us"]]
        return litert_profile(
            path=path, facts=facts, board=self.board,
            device={"firmware_version": f"edgekit agent {answer.get('agent_version')}, "
                                        f"{answer.get('runtime')} {answer.get('runtime_version') or ''}".strip(),
                    "host": self.host, "hostname": answer.get("node"), "machine": answer.get("machine"),
                    "python": answer.get("python"), "runtime": answer.get("runtime"),
                    "runtime_version": answer.get("runtime_version"), "threads": answer.get("threads"),
                    "xnnpack": answer.get("xnnpack"), "agent_version": answer.get("agent_version"),
                    "first_inference_us": answer.get("first_inference_us"), "remote_model": remote_model},
            runs=runs, warmup=warmup, latency_us=latency_stats(samples), latency_samples_us=samples,
            per_op=answer.get("per_op"), per_op_note=answer.get("per_op_note"),
            memory={"peak_rss_bytes": answer.get("peak_rss_bytes")}, runner="ssh")

    def do_run(self, model_path=None, **kw):
        return self.do_profile(model_path, **kw)

    def do_validate(self, *, model_path, data, n: int = 100, max_lsb: int = 1, min_agreement: float = 0.99,
                    progress=None, raise_on_fail: bool = True, host_tflm: bool = True, **_):
        """The samples through LiteRT on the board (the agent's ``run``) and on the host; compared."""
        import base64
        import tempfile

        import numpy as np

        from edgekit.validation import compare, prepare

        prep = prepare(model_path, data, n, runtime=self.board.runtime, host_tflm=host_tflm, max_lsb=max_lsb,
                       min_agreement=min_agreement)
        remote_model = self.stage(Path(model_path), hashlib.sha256(prep.model).hexdigest())
        with tempfile.TemporaryDirectory(prefix="edgekit-validate-") as tmp:
            local = Path(tmp) / "inputs.npy"
            np.save(local, prep.xq, allow_pickle=False)
            remote_inputs = f"{self.remote_dir}/inputs-{hashlib.sha256(prep.xq.tobytes()).hexdigest()[:16]}.npy"
            self._scp(local, remote_inputs)
        argv = [self.remote_python(), f"{self.remote_dir}/{AGENT_NAME}", "run", remote_model, "--inputs",
                remote_inputs, "--threads", str(self.options["threads"])]
        if not self.options["xnnpack"]:
            argv.append("--no-xnnpack")
        answer = self.run_agent(shlex.join(argv))
        if self.dry_run:
            return None
        outputs = [base64.b64decode(o) for o in answer["outputs_b64"]]
        result = compare(prep, outputs, [float(t) for t in answer.get("times_us") or []], board=self.board.id,
                         max_lsb=max_lsb, min_agreement=min_agreement)
        result.timing = {"unit": "ns", "source": "device",
                         "label": f"LiteRT ({answer.get('runtime')}) on {self.host}"}
        if raise_on_fail:
            result.raise_if_failed()
        return result

    # -- per-op profiles with LiteRT's benchmark_model on the board ----------------------------------
    def _benchmark_binary(self) -> Path | None:
        given = self.options.get("benchmark_binary")
        if not given:
            return None
        path = Path(given)
        if not path.is_file():
            raise ToolMissing(f"benchmark_model binary {path} does not exist", tool="benchmark_model",
                              hint="download LiteRT's benchmark_model for the board (linux_aarch64_benchmark_model, "
                                   "https://ai.google.dev/edge/litert/models/measurement)")
        return path

    def _profile_with_benchmark(self, binary: Path, remote_model: str, path: Path, facts, *,
                                runs: int, warmup: int, threads: int, xnnpack: bool):
        from edgekit.fileio import read_input, sha256
        from edgekit.runners.benchmark_model import command_args, parse, to_profile

        remote_bin = f"{self.remote_dir}/benchmark_model-{sha256(read_input(binary, 'benchmark_model'))[:16]}"
        self._scp(binary, remote_bin)
        argv = [remote_bin, *command_args(remote_model, runs=runs, warmup=warmup, threads=threads, xnnpack=xnnpack)]
        cmd = f"chmod 755 -- {shlex.quote(remote_bin)} && {shlex.join(argv)}"
        try:
            output = self._ssh(cmd).output
        except ToolFailed as e:
            output = e.context.get("output_tail") or ""
            if e.context.get("returncode") in (126, 127) or "exec format error" in output.lower():
                raise RuntimeMissing(f"{self.host}: benchmark_model does not run on the board: "
                                     f"{(output.strip().splitlines() or ['exit ' + str(e.context.get('returncode'))])[-1]}",
                                     hint="use the build for the board's CPU (linux_aarch64_benchmark_model on a "
                                          "64-bit Raspberry Pi OS)") from e
            parse(output, expect_ops=True)     # a failed run explains itself (BenchmarkOutputError)
            raise
        if self.dry_run:
            return None
        return to_profile(parse(output, expect_ops=True), path=path, facts=facts, board=self.board,
                          device={"host": self.host, "threads": threads, "xnnpack": xnnpack,
                                  "remote_model": remote_model}, runs=runs, warmup=warmup, runner="ssh")

    def do_flash(self, model_path=None, dest: str = "models", service: bool = False,
                 service_port: int = DEFAULT_SERVICE_PORT, service_bind: str = "127.0.0.1", threads: int = 1,
                 xnnpack: bool = True, **_ignored) -> dict:
        """Install the model into ``dest`` on the board and check its SHA-256 there; with ``service``,
        also install and start a systemd user unit that serves it over HTTP (the agent's ``serve``)
        and wait until the service answers with that SHA-256."""
        result = self.install(model_path, dest=dest)
        agent = f"{self.remote_dir}/{AGENT_NAME}"
        check = self.run_agent(shlex.join([self.remote_python(), agent, "hash", result["path"]]))
        if not self.dry_run and check.get("sha256") != result["sha256"]:
            raise DeviceError(f"{self.host}: the installed {result['path']} has sha256 "
                              f"{str(check.get('sha256'))[:16]}..., not {result['sha256'][:16]}...",
                              hint="the copy was damaged; flash again and check the board's disk")
        result["verified"] = not self.dry_run
        result["remote_path"] = check.get("path", result["path"])
        if service:
            if not 1 <= int(service_port) <= 65535:
                raise UsageError(f"--service-port {service_port} is not a TCP port (1..65535)")
            argv = [self.remote_python(), agent, "install-service", result["path"], "--port", str(int(service_port)),
                    "--bind", service_bind, "--threads", str(int(threads))]
            if not xnnpack:
                argv.append("--no-xnnpack")
            answer = self.run_agent(shlex.join(argv))
            result["service"] = {k: answer.get(k) for k in ("name", "unit", "url", "started")} if answer else None
        return result

    def install(self, model_path, dest: str = "models") -> dict:
        """Install the model into ``dest`` on the board (relative paths are under the remote home).

        ``flash`` (do_flash) is this plus a hash check on the board and, optionally, the service.
        """
        from edgekit.fileio import read_input, sha256

        path = Path(model_path)
        sha = sha256(read_input(path, "model"))
        staged = self.stage(path, sha)
        target_dir = dest[2:] if dest.startswith("~/") else ("." if dest == "~" else dest)
        target = f"{target_dir.rstrip('/') or '/'}/{path.name}"
        # copy to a temporary name then rename, so a half-written model never replaces a good one
        tmp = f"{target}.edgekit-tmp"
        q = shlex.quote
        cmd = (f"mkdir -p -- {q(target_dir)} && cp -- {q(staged)} {q(tmp)} && mv -f -- {q(tmp)} {q(target)}"
               f" || {{ rm -f -- {q(tmp)}; exit 1; }}")
        try:
            self._ssh(cmd)
        except ToolFailed as e:
            tail = e.context.get("output_tail") or ""
            raise OutputError(f"{self.host}: cannot install the model into {dest}: "
                              f"{tail.splitlines()[-1] if tail else 'failed'}",
                              hint="check that the folder is writable and the disk has space (df -h)") from e
        return {"host": self.host, "path": target, "sha256": sha, "dry_run": self.dry_run}
