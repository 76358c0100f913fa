"""Board farms on labgrid: a place on a lab's coordinator is a board edgekit can flash, profile and
validate.

    with edgekit.farm.acquire("nano33-3") as lease:       # acquired here, released on every exit path
        edgekit.profile("model.tflite", board=lease.board_id, port=lease.port)

The verbs take ``place=`` themselves (``edgekit.profile(model, place="nano33-3")``): a place is one more
way of finding a board's port (and its power / reset), not a second dispatch. A place names its board
by the tag ``board=<id of a file in targets/>`` (``labgrid-client -p PLACE set-tags board=nano33ble``).

edgekit drives labgrid through its own client program, ``labgrid-client`` (through the seam, every call
bounded), not its Python API: labgrid depends on ``pyserial-labgrid``, a fork that installs the same
``serial`` module as pyserial, so it cannot live in edgekit's environment beside pyserial. Install
labgrid in an environment of its own (``pipx install labgrid``, or the ``.venv-labgrid`` that ``make
setup`` makes) and put its ``labgrid-client`` on PATH or in ``EDGEKIT_LABGRID_CLIENT``. The coordinator
address comes from ``--coordinator`` / ``coordinator=``, else ``LG_COORDINATOR``, else labgrid's default
127.0.0.1:20408, as labgrid's own client does.

What edgekit uses of a place (its acquired resources):

- serial: a ``NetworkSerialPort`` (ser2net; ``rfc2217://host:port``, or ``socket://host:port`` for
  protocol raw). When the exporter publishes the device path (``extra.path``, USB and raw serial ports
  it serves itself), runs on this machine, and the path exists here, the local port is used instead.
- power: a ``NetworkPowerPort``, ``PDUDaemonPort``, USB / SiS-PM / YKUSH / Tasmota power port:
  ``labgrid-client power cycle``.
- reset: a digital output named ``reset`` (``labgrid-client io high reset``, then ``io low reset``).

A board that does not answer its first HELLO is reset through the place (reset output, else a power
cycle) once and asked again; ``flash`` resets it through the place after the upload. A place the
caller already holds (acquired by this user on this host, e.g. with ``labgrid-client acquire``) is used
as it is and left acquired.
"""
from __future__ import annotations

import ast
import fnmatch
import getpass
import os
import re
import signal
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from edgekit.errors import (BoardError, CoordinatorUnreachable, PlaceBusy, PlaceNotFound, PlaceUnusable,
                            ToolFailed, UsageError)
from edgekit.runners import seam

CLIENT = "labgrid-client"
CLIENT_ENV = "EDGEKIT_LABGRID_CLIENT"       # the labgrid-client program to run (else labgrid-client on PATH)
COORDINATOR_ENV = "LG_COORDINATOR"
DEFAULT_COORDINATOR = "127.0.0.1:20408"     # labgrid's own default
BOARD_TAG = "board"
CLIENT_TIMEOUT_S = 30.0                     # one labgrid-client call (show, acquire, power, ...)
RELEASE_TIMEOUT_S = 20.0
POWER_TIMEOUT_S = 60.0

SERIAL_CLASSES = ("NetworkSerialPort",)
POWER_CLASSES = ("NetworkPowerPort", "PDUDaemonPort", "NetworkUSBPowerPort", "NetworkSiSPMPowerPort",
                 "TasmotaPowerPort", "NetworkYKUSHPowerPort")
RESET_OUTPUT = "reset"
DIGITAL_OUTPUT_CLASSES = ("HttpDigitalOutput", "ModbusTCPCoil", "WaveshareModbusTCPCoil", "OneWirePIO",
                          "Eth008DigitalOutput", "NetworkDeditecRelais8", "NetworkSysfsGPIO", "NetworkLXAIOBusPIO",
                          "NetworkHIDRelay")

LogFn = Callable[[str], None]


# -- what the coordinator says ------------------------------------------------------------------------
@dataclass
class Resource:
    name: str                    # the name in the place (a match's rename, else the resource's own)
    path: str                    # exporter/group/class/name
    cls: str
    params: dict[str, Any] = field(default_factory=dict)
    avail: bool = True
    acquired: str | None = None  # the place that holds it

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "cls": self.cls, "avail": self.avail,
                "params": {k: v for k, v in self.params.items() if k != "extra"}}


@dataclass
class Place:
    name: str
    tags: dict[str, str] = field(default_factory=dict)
    acquired: str | None = None              # labgrid's "host/user" of the holder, None when free
    aliases: list[str] = field(default_factory=list)
    comment: str = ""
    matches: list[str] = field(default_factory=list)
    resources: list[Resource] = field(default_factory=list)   # acquired ones when acquired, else matching
    orphaned: list[str] = field(default_factory=list)         # acquired resources whose exporter is gone

    @property
    def board_id(self) -> str | None:
        return self.tags.get(BOARD_TAG)

    def first(self, classes, name: str | None = None) -> Resource | None:
        for r in self.resources:
            if r.cls in classes and (name is None or r.name == name):
                return r
        return None

    @property
    def serial(self) -> Resource | None:
        return self.first(SERIAL_CLASSES)

    @property
    def power(self) -> Resource | None:
        return self.first(POWER_CLASSES)

    @property
    def reset_output(self) -> Resource | None:
        return self.first(DIGITAL_OUTPUT_CLASSES, RESET_OUTPUT)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "board": self.board_id, "tags": dict(self.tags), "acquired": self.acquired,
                "aliases": list(self.aliases), "comment": self.comment, "matches": list(self.matches),
                "serial": self.serial is not None, "power": self.power is not None,
                "reset": self.reset_output is not None,
                "resources": [r.to_dict() for r in self.resources]}


_PLACE = re.compile(r"^Place '(.+)':$")
_RESOURCE = re.compile(r"^(Acquired|Matching) resource '(.+)' \((.+)\):$")
_ORPHAN = re.compile(r"^Orphaned resource '(.+)' \((.+)\)$")


def _place_fields(place: Place, line: str) -> None:
    key, sep, value = line.strip().partition(": ")
    if not sep:
        return
    if key == "tags":
        for item in value.split(", "):
            k, eq, v = item.partition("=")
            if eq:
                place.tags[k] = v
    elif key == "acquired":
        place.acquired = None if value == "None" else value
    elif key == "aliases":
        place.aliases = value.split(", ")
    elif key == "comment":
        place.comment = value


def parse_places(text: str) -> list[Place]:
    """Places from ``labgrid-client -v places`` or ``show`` output (labgrid's human format; resources
    as Python literals, which is how the client prints them)."""
    places: list[Place] = []
    lines = text.splitlines()
    i = 0
    current: Place | None = None
    in_matches = False
    while i < len(lines):
        line = lines[i]
        m = _PLACE.match(line)
        if m:
            current = Place(name=m.group(1))
            places.append(current)
            in_matches = False
            i += 1
            continue
        m = _RESOURCE.match(line)
        if m and current is not None:
            body = []
            i += 1
            while i < len(lines) and lines[i].startswith(" "):
                body.append(lines[i].strip())
                i += 1
            try:
                data = ast.literal_eval(" ".join(body))
            except (ValueError, SyntaxError):
                data = {}
            path = m.group(3)
            current.resources.append(Resource(name=m.group(2), path=path, cls=data.get("cls", path.split("/")[2]),
                                              params=dict(data.get("params") or {}), avail=bool(data.get("avail", True)),
                                              acquired=data.get("acquired")))
            continue
        m = _ORPHAN.match(line)
        if m and current is not None:
            current.orphaned.append(m.group(2))
        elif current is not None and line.startswith("  "):
            stripped = line.strip()
            if stripped == "matches:":
                in_matches = True
            elif line.startswith("    ") and in_matches:
                current.matches.append(stripped)
            else:
                in_matches = False
                _place_fields(current, line)
        i += 1
    return places


# -- the client ----------------------------------------------------------------------------------------
def coordinator_address(coordinator: str | None = None) -> str:
    return coordinator or os.environ.get(COORDINATOR_ENV) or DEFAULT_COORDINATOR


def me() -> str:
    """This host/user as labgrid names a place's holder (LG_HOSTNAME / LG_USERNAME override, as there)."""
    return f"{os.environ.get('LG_HOSTNAME') or socket.gethostname()}/{os.environ.get('LG_USERNAME') or getpass.getuser()}"


class Labgrid:
    """``labgrid-client`` against one coordinator; every call through the seam, bounded."""

    def __init__(self, coordinator: str | None = None, *, client: str | None = None, log: LogFn | None = None,
                 tool=None, timeout_s: float = CLIENT_TIMEOUT_S):
        self.coordinator = coordinator_address(coordinator)
        self.client = client or os.environ.get(CLIENT_ENV) or CLIENT
        self.log = log
        self.tool = tool or seam.run_tool
        self.timeout_s = timeout_s

    def run(self, *args: str, place: str | None = None, timeout: float | None = None) -> str:
        argv = [self.client, "-x", self.coordinator, *(["-p", place] if place else []), *args]
        try:
            return self.tool(argv, timeout=timeout or self.timeout_s, log=self.log).output
        except ToolFailed as e:
            raise self._explain(e, place) from e

    def _explain(self, e: ToolFailed, place: str | None):
        text = str(e.context.get("output") or e.context.get("output_tail") or e.message)
        low = text.lower()
        if "could not connect to coordinator" in low or "coordinator is unavailable" in low:
            return CoordinatorUnreachable(
                f"no labgrid coordinator answers at {self.coordinator}",
                hint=f"start labgrid-coordinator there, or pass --coordinator HOST:PORT (or set {COORDINATOR_ENV})",
                coordinator=self.coordinator)
        if "did not finish within" in e.message:
            return CoordinatorUnreachable(
                f"labgrid-client got no answer from {self.coordinator} within {self.timeout_s:g} s",
                hint="check that the coordinator is running and reachable", coordinator=self.coordinator)
        m = re.search(r"place pattern (\S+) matches nothing", text)
        if m:
            return PlaceNotFound(f"no place '{m.group(1)}' on the coordinator at {self.coordinator}",
                                 hint="`edgekit farm places` lists them", place=place)
        m = re.search(r"pattern (\S+) matches multiple places \((.+)\)", text)
        if m:
            return PlaceNotFound(f"'{m.group(1)}' names several places: {m.group(2)}",
                                 hint="pass the full place name", place=place)
        m = re.search(r"[Pp]lace (\S+) is already acquired by (\S+?)\.", text)
        if m:
            return PlaceBusy(f"place {m.group(1)} is acquired by {m.group(2)}", owner=m.group(2),
                             hint=f"wait for {m.group(2)} to release it, or pick another place", place=place)
        if "has no matching remote resource" in text:
            return PlaceUnusable(f"place {place} matches a resource its exporter no longer offers: "
                                 f"{_last_line(text)}", hint="is the place's exporter running?", place=place)
        return e

    # -- queries and actions ---------------------------------------------------------------------
    def places(self) -> list[Place]:
        return parse_places(self.run("-v", "places"))

    def show(self, place: str) -> Place:
        found = parse_places(self.run("show", place=place))
        if not found:
            raise PlaceNotFound(f"no place '{place}' on the coordinator at {self.coordinator}",
                                hint="`edgekit farm places` lists them", place=place)
        return found[0]

    def acquire(self, place: str) -> None:
        self.run("acquire", place=place)

    def release(self, place: str) -> None:
        self.run("release", place=place, timeout=RELEASE_TIMEOUT_S)

    def power_cycle(self, place: str) -> None:
        self.run("power", "cycle", place=place, timeout=POWER_TIMEOUT_S)

    def io(self, place: str, action: str, name: str) -> None:
        self.run("io", action, name, place=place)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


# -- a lease: an acquired place --------------------------------------------------------------------------
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


def _is_this_host(host: str) -> bool:
    if host in _LOCAL_HOSTS or host.startswith("127."):
        return True
    try:
        return host in (socket.gethostname(), socket.getfqdn())
    except OSError:
        return False


def serial_port_of(resource: Resource) -> tuple[str, str | None]:
    """(URL, local device path or None) for a NetworkSerialPort's params."""
    p = resource.params
    host, port = p.get("host"), p.get("port")
    if not host or not port:
        raise PlaceUnusable(f"serial resource {resource.path} has no host/port (is its ser2net running?)")
    scheme = "socket" if str(p.get("protocol", "rfc2217")) == "raw" else "rfc2217"
    url = f"{scheme}://{host}:{port}"
    path = (p.get("extra") or {}).get("path")
    local = path if path and _is_this_host(str(host)) and os.path.exists(path) else None
    return url, local


@dataclass
class Lease:
    """An acquired place: its board, its serial port and what it can do to the board."""

    place: Place
    labgrid: Labgrid
    board_id: str
    url: str                          # the serial resource through ser2net
    local_port: str | None = None     # the same port as a device on this machine, when it is one
    baud: int | None = None
    acquired_here: bool = True        # False: the caller already held it (it stays acquired)
    resets: list[str] = field(default_factory=list)    # what was done to the board, in order

    @property
    def name(self) -> str:
        return self.place.name

    @property
    def port(self) -> str:
        return self.local_port or self.url

    @property
    def can_reset(self) -> bool:
        return self.place.reset_output is not None or self.place.power is not None

    def reset(self) -> str | None:
        """Reset the board through the place: its reset output if it has one, else a power cycle.
        Returns what was done (None: the place has neither)."""
        if self.place.reset_output is not None:
            self.labgrid.io(self.name, "high", RESET_OUTPUT)
            self.labgrid.io(self.name, "low", RESET_OUTPUT)
            done = f"reset output '{RESET_OUTPUT}' pulsed"
        elif self.place.power is not None:
            self.labgrid.power_cycle(self.name)
            done = "power cycled"
        else:
            return None
        self.resets.append(done)
        return done

    def to_dict(self) -> dict[str, Any]:
        return {"place": self.name, "coordinator": self.labgrid.coordinator, "board": self.board_id,
                "port": self.port, "url": self.url, "acquired_here": self.acquired_here,
                "power": self.place.power is not None, "reset": self.place.reset_output is not None,
                "resets": list(self.resets)}


def board_of(place: Place, board: str | None = None) -> str:
    """The board id of ``place`` (its ``board=`` tag), checked against targets/ and ``board``."""
    from edgekit.boards import load_board

    tagged = place.board_id
    if not tagged:
        if board:
            tagged = board
        else:
            raise PlaceUnusable(f"place {place.name} has no '{BOARD_TAG}' tag naming its board",
                                hint=f"labgrid-client -p {place.name} set-tags {BOARD_TAG}=<id> "
                                     "(ids: `edgekit boards`), or pass --board", place=place.name)
    try:
        tagged_board = load_board(tagged)
    except BoardError as e:
        raise BoardError(f"place {place.name} is tagged {BOARD_TAG}={tagged}, which is not a board in targets/: "
                         f"{e.message}", hint=e.hint or "fix the tag, or add the board file") from e
    if board:
        given = load_board(board)
        if given.id != tagged_board.id:
            raise UsageError(f"place {place.name} holds a {tagged_board.id} ({BOARD_TAG}={tagged}), not {given.id}",
                             hint="drop --board (the place names its board) or pick another place")
    return tagged_board.id


@contextmanager
def _interrupts_deferred() -> Iterator[list]:
    """Hold SIGINT back while the block runs (a release must finish); re-deliver it afterwards."""
    got: list = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    try:
        yield got
    finally:
        signal.signal(signal.SIGINT, previous)
    if got:
        raise KeyboardInterrupt


@contextmanager
def acquire(place: str, *, coordinator: str | None = None, board: str | None = None, log: LogFn | None = None,
            tool=None, client: str | None = None) -> Iterator[Lease]:
    """Acquire ``place``, yield a :class:`Lease`, release it on every exit path (errors, Ctrl-C).

    Before anything is acquired the place is checked: it exists, names a board in targets/ (tag
    ``board=``, or ``board`` when it has none), has a serial resource, and is free (else PlaceBusy
    naming the holder) or held by this user on this host (then it is used and left acquired).
    """
    lg = Labgrid(coordinator, client=client, log=log, tool=tool)
    info = lg.show(place)
    name = info.name
    board_id = board_of(info, board)
    if info.serial is None:
        found = ", ".join(sorted({r.cls for r in info.resources})) or "none"
        raise PlaceUnusable(f"place {name} has no serial resource (NetworkSerialPort); its resources: {found}",
                            hint="export the board's serial port (USBSerialPort, RawSerialPort or a ser2net "
                                 "NetworkSerialPort) and add it to the place's matches", place=name)
    mine = info.acquired == me()
    if info.acquired and not mine:
        raise PlaceBusy(f"place {name} is acquired by {info.acquired}", owner=info.acquired,
                        hint=f"wait for {info.acquired} to release it, or pick another place", place=name)
    started = False
    try:
        if not mine:
            started = True                         # from here on a release is owed, whatever happens
            if log:
                log(f"# acquire place {name} ({board_id}) on {lg.coordinator}")
            lg.acquire(name)
        held = lg.show(name)
        if held.serial is None:
            raise PlaceUnusable(f"place {name} lost its serial resource on acquiring"
                                + (f" (orphaned: {', '.join(held.orphaned)})" if held.orphaned else ""),
                                hint="is the place's exporter running?", place=name)
        url, local = serial_port_of(held.serial)
        speed = held.serial.params.get("speed")
        yield Lease(place=held, labgrid=lg, board_id=board_id, url=url, local_port=local,
                    baud=int(speed) if speed else None, acquired_here=not mine)
    finally:
        if started:
            with _interrupts_deferred():
                _release(lg, name, log)


def _release(lg: Labgrid, name: str, log: LogFn | None) -> None:
    if log:
        log(f"# release place {name}")
    try:
        lg.release(name)
    except Exception as e:  # noqa: BLE001 - a failed release must not hide the command's own outcome
        text = str(getattr(e, "context", {}).get("output") or e)
        if "is not acquired" in text:
            return                                  # the acquire never went through (Ctrl-C during it)
        import sys

        sys.stderr.write(f"edgekit: warning: could not release place {name}: {getattr(e, 'message', e)}; "
                         f"release it with: labgrid-client -x {lg.coordinator} -p {name} release\n")


# -- choosing places ---------------------------------------------------------------------------------------
def select_places(places: list[Place], names: list[str] | None = None, match: str | None = None) -> list[Place]:
    """The places named (in that order) or matching a glob (name or alias), each once."""
    by_name = {p.name: p for p in places}
    if names:
        missing = [n for n in names if n not in by_name]
        if missing:
            raise PlaceNotFound(f"no place {', '.join(repr(n) for n in missing)} on the coordinator",
                                hint="known places: " + (", ".join(sorted(by_name)) or "none"))
        chosen = [by_name[n] for n in dict.fromkeys(names)]
    elif match:
        chosen = [p for p in sorted(places, key=lambda p: p.name)
                  if fnmatch.fnmatchcase(p.name, match) or any(fnmatch.fnmatchcase(a, match) for a in p.aliases)]
        if not chosen:
            raise PlaceNotFound(f"no place matches {match!r}",
                                hint="known places: " + (", ".join(sorted(by_name)) or "none"))
    else:
        raise UsageError("name the places: --places a,b,c or --match 'GLOB'")
    return chosen


# -- the verbs' way in ---------------------------------------------------------------------------------------
@contextmanager
def resolve(board: str | None, port: str | None, place: str | None, *, coordinator: str | None = None,
            emulate: bool = False, log: LogFn | None = None, tool=None,
            default_board: str = "virtual") -> Iterator[tuple[str, str | None, Lease | None]]:
    """``(board, port, lease)`` for a device verb: without ``place`` the board and port as given; with
    one, the place is acquired for the block and gives both (``lease`` None without a place)."""
    if place is None:
        if coordinator is not None:
            raise UsageError("--coordinator goes with --place")
        yield board or default_board, port, None
        return
    if port is not None:
        raise UsageError("--place gives the serial port; drop --port")
    if emulate:
        raise UsageError("--emulate runs on this computer's emulator, not on a place; drop one of them")
    with acquire(place, coordinator=coordinator, board=board, log=log, tool=tool) as lease:
        yield lease.board_id, lease.port, lease


# -- profiling on several places at once ---------------------------------------------------------------------
FARM_PLACE_TIMEOUT_S = 1800.0     # one place's profile, build included


def check_places(lg: Labgrid, chosen: list[Place], *, skip_busy: bool) -> tuple[list[Place], list[dict]]:
    """Refuse, before anything runs, places without a usable board tag or serial resource; busy places
    are refused too, or (``skip_busy``) left out and listed."""
    ready, skipped = [], []
    for p in chosen:
        info = lg.show(p.name)          # -v places lists no resources
        board_of(info)
        if info.serial is None:
            raise PlaceUnusable(f"place {info.name} has no serial resource (NetworkSerialPort)",
                                hint="export the board's serial port and add it to the place's matches",
                                place=info.name)
        if info.acquired and info.acquired != me():
            if not skip_busy:
                raise PlaceBusy(f"place {info.name} is acquired by {info.acquired}", owner=info.acquired,
                                hint="wait for it, or leave it out", place=info.name)
            skipped.append({"place": info.name, "board": info.board_id, "acquired_by": info.acquired})
            continue
        ready.append(info)
    if not ready:
        raise PlaceBusy("every place that matches is acquired by someone else: "
                        + ", ".join(f"{s['place']} ({s['acquired_by']})" for s in skipped),
                        owner=skipped[0]["acquired_by"] if skipped else None, hint="try again later")
    return ready, skipped


def _row(place: Place, result, doc: dict | None, path) -> dict[str, Any]:
    row: dict[str, Any] = {"place": place.name, "board": place.board_id, "exit_code": result.returncode,
                           "profile": None, "error": None}
    if result.returncode == 0 and doc and doc.get("schema") == "edgekit.profile/1":
        lat, ins, timing = doc.get("latency_us") or {}, doc.get("instructions") or {}, doc.get("timing") or {}
        row.update({"profile": str(path), "device_board": (doc.get("device") or {}).get("board_id"),
                    "timing_source": timing.get("source"), "timing_unit": timing.get("unit"),
                    "timing_label": timing.get("label"),
                    "latency_us_median": lat.get("median"), "latency_us_mean": lat.get("mean"),
                    "latency_us_median_ci95": [lat.get("median_ci95_low"), lat.get("median_ci95_high")]
                    if lat else None,
                    "instructions_median": ins.get("median"),
                    "arena_used_bytes": (doc.get("memory") or {}).get("arena_used_bytes"),
                    "energy_uj": (doc.get("energy") or {}).get("per_inference_uj"),
                    "resets": (doc.get("place") or {}).get("resets") or []})
    else:
        from edgekit.errors import EXIT_CODE_NAMES

        said = [ln.split("error:", 1)[1].strip() for ln in result.output.splitlines()
                if ln.startswith("edgekit: error:")]
        row["error"] = said[-1] if said else (_last_line(result.output) or "no output")
        row["error_kind"] = EXIT_CODE_NAMES.get(result.returncode, "killed" if result.returncode < 0 else "other")
        if result.returncode == -1:
            row["error"] = f"did not finish within its time ({row['error']})"
    return row


def _options_for(board_id: str, options: dict | None) -> dict:
    """The runner options a place's board takes (a farm's places may have different runners)."""
    if not options:
        return {}
    from edgekit.boards import load_board
    from edgekit.runners import get_runner

    known = {o.name for o in get_runner(load_board(board_id).runner).options_spec()}
    return {k: v for k, v in options.items() if k in known}


def farm_profile(model_path, *, places: list[str] | None = None, match: str | None = None, out_dir,
                 coordinator: str | None = None, runs: int = 200, warmup: int = 10, jobs: int | None = None,
                 options: dict | None = None, float_baseline: bool = True, timeout_s: float = FARM_PLACE_TIMEOUT_S,
                 log: LogFn | None = None, on_done: Callable[[dict], None] | None = None,
                 tool=None) -> dict[str, Any]:
    """Profile ``model_path`` on several places at once; one profile document per place in ``out_dir``
    (``<place>.json``, schema edgekit.profile/1) and one comparison (``comparison.json``, the returned
    document, schema edgekit.farm-profile/1).

    Each place runs in its own ``edgekit profile --place`` process (``jobs`` at a time; default all),
    which acquires and releases its place; Ctrl-C reaches every one of them, so each releases its place.
    Places are named (``places``; every one must be usable and free) or matched by a glob on names and
    aliases (``match``; places acquired by someone else are skipped and listed).
    """
    import sys
    import time
    from pathlib import Path

    import json

    from edgekit import schemas
    from edgekit.errors import FarmIncomplete
    from edgekit.fileio import check_output_dir, ensure_dir, read_input, sha256, write_text

    model_path = Path(model_path)
    digest = sha256(read_input(model_path, "model"))
    out = check_output_dir(out_dir)
    lg = Labgrid(coordinator, log=log, tool=tool)
    chosen = select_places(lg.places(), places, match)
    ready, skipped = check_places(lg, chosen, skip_busy=places is None)
    if options:
        taken = set().union(*(_options_for(p.board_id, options) for p in ready))
        unknown = sorted(set(options) - taken)
        if unknown:
            raise UsageError(f"no place's runner takes the option {', '.join(unknown)}",
                             hint="`edgekit boards B` lists a board's runner options")
    ensure_dir(out)
    argvs = []
    for p in ready:
        argv = [sys.executable, "-m", "edgekit", "-q", "profile", str(model_path.resolve()), "--place", p.name,
                "--coordinator", lg.coordinator, "--runs", str(runs), "--warmup", str(warmup),
                "--out", str((out / f"{p.name}.json").resolve())]
        if not float_baseline:
            argv.append("--no-float-baseline")
        for key, value in _options_for(p.board_id, options).items():
            argv += ["--opt", f"{key}={value}"]
        argvs.append(argv)
    rows: list[dict | None] = [None] * len(ready)
    started = time.monotonic()

    def done(i: int, result) -> None:
        doc = None
        path = out / f"{ready[i].name}.json"
        if result.returncode == 0:
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError):
                doc = None
        rows[i] = _row(ready[i], result, doc, out / f"{ready[i].name}.json")
        rows[i]["wall_s"] = round(time.monotonic() - started, 3)
        if on_done is not None:
            on_done(rows[i])

    env = {CLIENT_ENV: lg.client}
    seam.run_parallel(argvs, jobs=jobs, timeout=timeout_s, log=log, env=env, on_done=done)
    wall = time.monotonic() - started
    doc = {"schema": schemas.FARM_PROFILE, "model": {"path": str(model_path), "sha256": digest},
           "coordinator": lg.coordinator, "jobs": jobs or len(ready), "runs": runs, "warmup": warmup,
           "wall_s": round(wall, 3), "wall_note": "host time of the whole farm run (acquire, upload, profile, "
                                                  "release), not a board's time",
           "places": rows, "skipped": skipped, "out_dir": str(out),
           "failed": [r["place"] for r in rows if r and r["exit_code"] != 0]}
    write_text(out / "comparison.json", json.dumps(doc, indent=2, default=str) + "\n", skip_if_same=False)
    if doc["failed"]:
        err = FarmIncomplete(f"{len(doc['failed'])} of {len(rows)} places failed: "
                             + "; ".join(f"{r['place']}: {r['error']}" for r in rows if r and r["exit_code"] != 0),
                             hint=f"each place's error is in {out / 'comparison.json'}")
        err.document = doc
        raise err
    return doc
