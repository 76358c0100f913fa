"""A real labgrid lab on loopback, for tests/integration/test_farm.py.

- a labgrid coordinator on a free 127.0.0.1 port;
- boards: two virtual boards (edgekit's Python device on a pty) and, when QEMU and the cross compiler
  are here, the emulated Cortex-M4 running the real TFLM firmware built from a tflite-micro tree
  (EDGEKIT_TFLM_SRC; the protocol test firmware when no tree is given, and the test says so);
- ser2net serving each board's pty over RFC 2217 on 127.0.0.1 (one connection per board);
- a power switch: a tiny HTTP relay on 127.0.0.1 speaking labgrid's ``simplerest`` NetworkPowerPort
  protocol; switching a virtual board's outlet off mutes it, on reboots it (a new boot nonce);
- a labgrid exporter publishing those as NetworkSerialPort / NetworkPowerPort resources;
- places made with labgrid-client (create, add-match, set-tags board=...).

Every wait is bounded; everything started is stopped by ``Lab.close``.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LABGRID_VERSION = "26.0.1"


def labgrid_bin() -> Path | None:
    """The folder holding labgrid-client / -coordinator / -exporter (EDGEKIT_LABGRID_CLIENT's, else
    the .venv-labgrid that `make setup` makes, else PATH)."""
    env = os.environ.get("EDGEKIT_LABGRID_CLIENT")
    if env and Path(env).is_file():
        return Path(env).parent
    local = REPO / ".venv-labgrid" / "bin"
    if (local / "labgrid-client").is_file():
        return local
    found = shutil.which("labgrid-client")
    return Path(found).parent if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{what} did not listen on {port} within {timeout_s} s")


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


class Relay:
    """An HTTP power switch (labgrid's simplerest model: GET /relay/<index>/<0|1> sets, GET
    /relay/<index> reads). ``outlets[index]`` is called with True / False when switched."""

    def __init__(self):
        self.state: dict[int, bool] = {}
        self.outlets: dict[int, callable] = {}
        self.log: list[tuple[int, bool]] = []
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                parts = [p for p in self.path.split("/") if p]
                if len(parts) < 2 or parts[0] != "relay":
                    self.send_error(404)
                    return
                index = int(parts[1])
                if len(parts) == 3:
                    on = parts[2] == "1"
                    relay.state[index] = on
                    relay.log.append((index, on))
                    if index in relay.outlets:
                        relay.outlets[index](on)
                body = b"1" if relay.state.get(index, True) else b"0"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/relay/{{index}}/{{value}}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def power_outlet(board):
    """What switching a virtual board's outlet does: off mutes it, on boots it again."""
    def switch(on: bool) -> None:
        if on:
            board.faults.mute = False
            board.reboot()
        else:
            board.faults.mute = True
    return switch


@dataclass
class Ser2net:
    """ser2net serving pty paths over RFC 2217 on 127.0.0.1, one TCP port each."""

    folder: Path
    ptys: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    def start(self) -> "Ser2net":
        lines = ["%YAML 1.1", "---"]
        for name, pty in self.ptys.items():
            self.ports[name] = free_port()
            lines += [f"connection: &{name}",
                      f"    accepter: telnet(rfc2217),tcp,127.0.0.1,{self.ports[name]}",
                      "    enable: on",
                      "    options:",
                      "      kickolduser: true",
                      f"    connector: serialdev,{pty},115200n81,local", ""]
        config = self.folder / f"ser2net-{'-'.join(self.ptys)}.yaml"
        config.write_text("\n".join(lines))
        self.log = open(self.folder / f"{config.stem}.log", "wb")
        self.proc = subprocess.Popen(["ser2net", "-n", "-d", "-u", "-c", str(config),
                                      "-P", str(self.folder / f"{config.stem}.pid")],
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        for port in self.ports.values():
            wait_listening(port, self.proc, "ser2net")
        time.sleep(0.2)          # the probe connections above may still be closing
        return self

    def close(self) -> None:
        stop(self.proc)
        self.log.close()


class Lab:
    """A coordinator that starts with ``places`` ({name: {"match": "exporter/group/*", tag: value, ...}})
    in its state file (places.yaml, which labgrid-coordinator loads from its folder at start): the
    same places `labgrid-client create / add-match / set-tags` would make, without 3 client runs each."""

    def __init__(self, folder: Path, bin_dir: Path, places: dict[str, dict] | None = None):
        self.folder = folder
        self.bin = bin_dir
        self.client = str(bin_dir / "labgrid-client")
        self.port = free_port()
        self.coordinator = f"127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self.closers: list = []
        self.coord_dir = folder / "coordinator"
        self.coord_dir.mkdir()
        if places:
            import yaml

            state = {}
            for name, spec in places.items():
                spec = dict(spec)
                exporter, group, cls = spec.pop("match").split("/")
                state[name] = {"aliases": [], "comment": "", "tags": spec,
                               "matches": [{"exporter": exporter, "group": group, "cls": cls}]}
            (self.coord_dir / "places.yaml").write_text(yaml.safe_dump(state))
        log = open(folder / "coordinator.log", "wb")
        self.closers.append(log.close)
        proc = subprocess.Popen([str(bin_dir / "labgrid-coordinator"), "-l", self.coordinator], cwd=self.coord_dir,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        wait_listening(self.port, proc, "labgrid-coordinator", timeout_s=30)

    def lg(self, *args: str, env: dict | None = None, check: bool = True, timeout: float = 30) -> str:
        full = dict(os.environ)
        full.update(env or {})
        out = subprocess.run([self.client, "-x", self.coordinator, *args], capture_output=True, text=True,
                             timeout=timeout, env=full)
        if check and out.returncode != 0:
            raise RuntimeError(f"labgrid-client {' '.join(args)}: {out.stdout}{out.stderr}")
        return out.stdout + out.stderr

    def exporter(self, name: str, groups: dict[str, dict]) -> subprocess.Popen:
        """Start an exporter publishing ``groups`` (group -> {resource name: {cls:..., params}}) and wait
        until the coordinator lists every group."""
        import yaml

        config = self.folder / f"exporter-{name}.yaml"
        config.write_text(yaml.safe_dump(groups, sort_keys=False))
        log = open(self.folder / f"exporter-{name}.log", "wb")
        self.closers.append(log.close)
        proc = subprocess.Popen([str(self.bin / "labgrid-exporter"), "-c", self.coordinator, "-n", name,
                                 "--hostname", "127.0.0.1", str(config)],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        deadline = time.monotonic() + 30
        log_path = self.folder / f"exporter-{name}.log"
        while True:
            said = log_path.read_text(errors="replace")       # cheap: wait for the exporter's own word first
            if all(f"queued update for resource {g}/" in said for g in groups):
                listed = self.lg("resources", check=False)
                if all(f"{name}/{g}/" in listed for g in groups):
                    return proc
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"exporter {name} did not publish {list(groups)}: "
                                   + (self.folder / f"exporter-{name}.log").read_text()[-2000:])
            time.sleep(0.2)

    def place(self, name: str, match: str, **tags: str) -> None:
        self.lg("-p", name, "create")
        self.lg("-p", name, "add-match", match)
        if tags:
            self.lg("-p", name, "set-tags", *(f"{k}={v}" for k, v in tags.items()))

    def holder(self, place: str) -> str | None:
        for line in self.lg("-p", place, "show").splitlines():
            if line.strip().startswith("acquired:"):
                value = line.split(":", 1)[1].strip()
                return None if value == "None" else value
        raise AssertionError(f"no 'acquired:' line for {place}")

    def close(self) -> None:
        for proc in reversed(self.procs):
            stop(proc)
        for close in self.closers:
            close()
