"""edgekit.farm without a lab: labgrid-client's output parsed, the exact client commands of an
acquire/release (through the seam), the release on every exit path, the place's port and board.

The canned outputs below are what labgrid-client 26.0.1 printed against a real coordinator
(tests/integration/test_farm.py runs the real thing)."""
from __future__ import annotations

import pytest

from edgekit import farm
from edgekit.errors import (BoardError, CoordinatorUnreachable, PlaceBusy, PlaceNotFound, PlaceUnusable,
                            ToolFailed, UsageError)
from edgekit.runners.seam import ToolResult


@pytest.fixture(autouse=True)
def _client_on_path(monkeypatch):
    """These tests assert the exact commands with the program as found on PATH (`make test` points
    EDGEKIT_LABGRID_CLIENT at its own labgrid virtualenv)."""
    monkeypatch.delenv(farm.CLIENT_ENV, raising=False)

SHOW_FREE = """Place 'nano-1':
  tags: board=nano33ble, rack=3
  matches:
    exp1/board-a/*
  acquired: None
  acquired resources:
  created: 2026-12-05 22:56:52.024533
  changed: 2026-12-05 22:56:53.057045
Matching resource 'NetworkPowerPort' (exp1/board-a/NetworkPowerPort/NetworkPowerPort):
  {'acquired': None,
   'avail': True,
   'cls': 'NetworkPowerPort',
   'params': {'extra': {'proxy': 'localhost', 'proxy_required': False},
              'host': 'http://127.0.0.1:30002/relay/{index}/{value}',
              'index': 0,
              'model': 'simplerest'}}
Matching resource 'NetworkSerialPort' (exp1/board-a/NetworkSerialPort/NetworkSerialPort):
  {'acquired': None,
   'avail': True,
   'cls': 'NetworkSerialPort',
   'params': {'extra': {'proxy': 'localhost', 'proxy_required': False},
              'host': 'lab-pi-3',
              'port': 30001,
              'protocol': 'rfc2217',
              'speed': 115200}}
"""


def _acquired(text: str, who: str) -> str:
    return (text.replace("acquired: None", f"acquired: {who}").replace("Matching resource", "Acquired resource")
            .replace("'acquired': None", "'acquired': 'nano-1'"))


class FakeClient:
    """labgrid-client at the seam: records argv, answers like the real one."""

    def __init__(self, show=SHOW_FREE, fail_on=None):
        self.calls: list[list[str]] = []
        self.show = show
        self.held = False
        self.fail_on = fail_on or {}

    def __call__(self, argv, *, timeout, log=None, **_):
        assert timeout <= 60                        # every call bounded
        self.calls.append(list(argv))
        verb = argv[5] if argv[3] == "-p" else argv[3]
        if verb in self.fail_on:
            out = self.fail_on[verb]
            raise ToolFailed("labgrid-client exited with code 1", output=out, output_tail=out)
        if verb == "show":
            return ToolResult(argv, 0, _acquired(self.show, farm.me()) if self.held else self.show)
        if verb == "acquire":
            self.held = True
        if verb == "release":
            self.held = False
        return ToolResult(argv, 0, "")

    def verbs(self):
        return [c[5] if c[3] == "-p" else c[3] for c in self.calls]


def test_show_output_is_parsed():
    [place] = farm.parse_places(SHOW_FREE)
    assert place.name == "nano-1" and place.tags == {"board": "nano33ble", "rack": "3"}
    assert place.acquired is None and place.matches == ["exp1/board-a/*"]
    assert place.serial.params["port"] == 30001 and place.power.cls == "NetworkPowerPort"
    assert place.reset_output is None
    [held] = farm.parse_places(_acquired(SHOW_FREE, "bench/alice"))
    assert held.acquired == "bench/alice" and len(held.resources) == 2


def test_serial_port_urls():
    [place] = farm.parse_places(SHOW_FREE)
    assert farm.serial_port_of(place.serial) == ("rfc2217://lab-pi-3:30001", None)
    place.serial.params["protocol"] = "raw"
    assert farm.serial_port_of(place.serial)[0] == "socket://lab-pi-3:30001"


def test_a_usb_port_served_by_an_exporter_on_this_machine_is_used_directly(tmp_path):
    dev = tmp_path / "ttyACM0"
    dev.write_text("")
    res = farm.Resource(name="NetworkSerialPort", path="e/g/NetworkSerialPort/NetworkSerialPort",
                        cls="NetworkSerialPort", params={"host": "127.0.0.1", "port": 4000,
                                                         "extra": {"path": str(dev)}})
    assert farm.serial_port_of(res) == ("rfc2217://127.0.0.1:4000", str(dev))
    res.params["host"] = "lab-pi-3"                      # another machine's /dev path means nothing here
    assert farm.serial_port_of(res)[1] is None


def test_acquire_runs_show_acquire_show_release_and_yields_the_port():
    client = FakeClient()
    with farm.acquire("nano-1", coordinator="127.0.0.1:1", tool=client) as lease:
        assert lease.board_id == "nano33ble" and lease.port == "rfc2217://lab-pi-3:30001"
        assert lease.can_reset and client.held
    assert client.verbs() == ["show", "acquire", "show", "release"]
    assert client.calls[1] == ["labgrid-client", "-x", "127.0.0.1:1", "-p", "nano-1", "acquire"]


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_the_place_is_released_when_the_work_fails_or_is_interrupted(exc):
    client = FakeClient()
    with pytest.raises(type(exc)):
        with farm.acquire("nano-1", coordinator="127.0.0.1:1", tool=client):
            raise exc
    assert client.verbs()[-1] == "release" and not client.held


def test_reset_prefers_the_reset_output_then_power():
    client = FakeClient()
    with farm.acquire("nano-1", coordinator="127.0.0.1:1", tool=client) as lease:
        assert lease.reset() == "power cycled"
        lease.place.resources.append(farm.Resource(name="reset", path="e/g/HttpDigitalOutput/reset",
                                                   cls="HttpDigitalOutput"))
        assert lease.reset() == "reset output 'reset' pulsed"
    assert client.calls[3][5:] == ["power", "cycle"]
    assert [c[5:] for c in client.calls[4:6]] == [["io", "high", "reset"], ["io", "low", "reset"]]


def test_a_busy_place_is_refused_before_acquiring():
    client = FakeClient(show=_acquired(SHOW_FREE, "bench7/alice"))
    with pytest.raises(PlaceBusy, match="acquired by bench7/alice") as info:
        with farm.acquire("nano-1", tool=client):
            pass
    assert info.value.owner == "bench7/alice" and client.verbs() == ["show"]


def test_a_place_already_held_by_this_user_is_used_and_kept():
    client = FakeClient()
    client.held = True
    with farm.acquire("nano-1", tool=client) as lease:
        assert not lease.acquired_here
    assert client.verbs() == ["show", "show"]


def test_client_errors_become_farm_errors():
    unreachable = ("ERROR root: coordinator is unavailable: failed to connect to all addresses\n"
                   "Server error: Error: Could not connect to coordinator")
    with pytest.raises(CoordinatorUnreachable, match="no labgrid coordinator answers at 127.0.0.1:9"):
        farm.Labgrid("127.0.0.1:9", tool=FakeClient(fail_on={"show": unreachable})).show("x")
    with pytest.raises(PlaceNotFound, match="no place 'x'"):
        farm.Labgrid("c:1", tool=FakeClient(fail_on={"show": "labgrid-client: Error: place pattern x matches nothing"})).show("x")
    busy = ("labgrid-client: Error: Place nano-1 is already acquired by vm/bob. To work simultaneously, bob can "
            "execute 'labgrid-client -p nano-1 allow vm/root' on vm.")
    client = FakeClient(fail_on={"acquire": busy})
    with pytest.raises(PlaceBusy) as info:
        with farm.acquire("nano-1", tool=client):
            pass
    assert info.value.owner == "vm/bob" and client.verbs()[-1] == "release"   # a lost race: release is harmless


def test_the_board_tag():
    [place] = farm.parse_places(SHOW_FREE)
    assert farm.board_of(place) == "nano33ble"
    with pytest.raises(UsageError, match="holds a nano33ble"):
        farm.board_of(place, "esp32s3")
    place.tags["board"] = "nano99"
    with pytest.raises(BoardError, match="tagged board=nano99, which is not a board in targets/"):
        farm.board_of(place)
    del place.tags["board"]
    with pytest.raises(PlaceUnusable, match="has no 'board' tag"):
        farm.board_of(place)
    assert farm.board_of(place, "virtual") == "virtual"


def test_places_by_name_or_glob():
    places = [farm.Place("nano33-1"), farm.Place("nano33-2", aliases=["rack3"]), farm.Place("esp-1")]
    assert [p.name for p in farm.select_places(places, ["esp-1", "nano33-1"])] == ["esp-1", "nano33-1"]
    assert [p.name for p in farm.select_places(places, match="nano33*")] == ["nano33-1", "nano33-2"]
    assert [p.name for p in farm.select_places(places, match="rack*")] == ["nano33-2"]
    with pytest.raises(PlaceNotFound, match="'pico-1'"):
        farm.select_places(places, ["pico-1"])


def test_flash_refuses_an_uploader_that_cannot_reach_a_remote_port(monkeypatch, tmp_path):
    """arduino-cli uploads to a port on this machine only; a place on another host is refused before
    anything is built, and the place is released."""
    from edgekit.flashing import flash
    from edgekit.runners import seam

    client = FakeClient()
    monkeypatch.setattr(seam, "run_tool", client)
    with pytest.raises(UsageError, match="arduino-cli uploads only to a port on this machine"):
        flash(tmp_path / "model.tflite", place="nano-1", coordinator="127.0.0.1:1")
    assert client.verbs() == ["show", "acquire", "show", "release"]
