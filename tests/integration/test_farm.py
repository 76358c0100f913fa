"""Board farms on the real engines: a labgrid coordinator and exporter on loopback (tests/integration/
labkit.py), two virtual boards and the emulated Cortex-M4 served by ser2net, a simplerest power switch.

edgekit drives labgrid-client (the real one, in its own virtualenv); nothing of labgrid is faked.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from conformance.linkkit import model_cache_dir, tiny_model  # noqa: F401
from labkit import Lab, Relay, Ser2net, labgrid_bin, power_outlet, stop

LG_BIN = labgrid_bin()
pytestmark = [pytest.mark.timeout(300), pytest.mark.slow,
              pytest.mark.skipif(shutil.which("ser2net") is None,
                                 reason="ser2net not installed (tools/apt-packages.txt)"),
              pytest.mark.skipif(LG_BIN is None, reason="labgrid not installed: `make setup` makes .venv-labgrid "
                                                        "(or set EDGEKIT_LABGRID_CLIENT)")]


def _have_qemu() -> bool:
    return shutil.which("qemu-system-arm") is not None and shutil.which("arm-none-eabi-gcc") is not None


def _m4_firmware(model: bytes):
    """The emulated M4's firmware: real TFLM + CMSIS-NN built from a tflite-micro tree (EDGEKIT_TFLM_SRC)
    when one is given, else the protocol test firmware (said so in the test's output)."""
    from edgekit.boards import load_board
    from edgekit.runners.qemu import QemuRunner, build_test_firmware
    from edgekit.tflm.tree import find_trees

    tree = next((t for t in find_trees().trees if t.layout == "tflite-micro" and not t.problems), None)
    if tree is None:
        print("farm: no tflite-micro tree in EDGEKIT_TFLM_SRC; the emulated M4 runs the protocol test firmware")
        return build_test_firmware(), "test"
    runner = QemuRunner(load_board("qemu-m4"), options={"tflm_src": str(tree.root)})
    return runner.build_for([model]).elf, "tflm"


@pytest.fixture(scope="module")
def lab(tmp_path_factory, tiny_model):
    from edgekit.link.virtual_board import VirtualBoard

    folder = tmp_path_factory.mktemp("lab")
    old_client = os.environ.get("EDGEKIT_LABGRID_CLIENT")
    os.environ["EDGEKIT_LABGRID_CLIENT"] = str(LG_BIN / "labgrid-client")
    boards = {"vb1": VirtualBoard(tiny_model, board_id="virtual"), "vb2": VirtualBoard(tiny_model, board_id="virtual")}
    ptys = {name: b.start() for name, b in boards.items()}
    machine = None
    m4_firmware = None
    if _have_qemu():
        from edgekit.runners.qemu import QemuMachine

        elf, m4_firmware = _m4_firmware(tiny_model)
        machine = QemuMachine(elf)
        ptys["m4"] = machine.start()
        machine.boot()
    relay = Relay()
    relay.outlets[0] = power_outlet(boards["vb1"])
    ser2net = Ser2net(folder, ptys).start()
    places = {"vb-1": {"match": "lab1/vb1/*", "board": "virtual"},
              "vb-2": {"match": "lab1/vb2/*", "board": "virtual"},
              "power-only": {"match": "lab1/switch/*", "board": "virtual"},      # no serial resource
              "no-such-board": {"match": "lab1/odd/*", "board": "nano99"},       # a board not in targets/
              "going": {"match": "lab2/gone/*", "board": "virtual"}}             # its exporter comes and goes
    if machine is not None:
        places["m4"] = {"match": "lab1/m4/*", "board": "qemu-m4"}
    lab = Lab(folder, LG_BIN, places)
    try:
        def serial(name):
            return {"NetworkSerialPort": {"host": "127.0.0.1", "port": ser2net.ports[name], "speed": 115200,
                                          "protocol": "rfc2217"}}

        groups = {"vb1": {**serial("vb1"), "NetworkPowerPort": {"model": "simplerest", "host": relay.url(),
                                                                  "index": 0}},
                  "vb2": serial("vb2"),
                  "switch": {"NetworkPowerPort": {"model": "simplerest", "host": relay.url(), "index": 7}},
                  "odd": serial("vb2")}
        if machine is not None:
            groups["m4"] = serial("m4")
        lab.exporter("lab1", groups)
        lab.boards, lab.relay, lab.ser2net, lab.machine = boards, relay, ser2net, machine
        lab.m4_options = {"firmware": m4_firmware} if m4_firmware else {}
        yield lab
    finally:
        lab.close()
        ser2net.close()
        relay.close()
        if machine is not None:
            machine.stop()
        for b in boards.values():
            b.stop()
        if old_client is None:
            os.environ.pop("EDGEKIT_LABGRID_CLIENT", None)
        else:
            os.environ["EDGEKIT_LABGRID_CLIENT"] = old_client


@pytest.fixture
def model_file(tmp_path, tiny_model):
    path = tmp_path / "model.tflite"
    path.write_bytes(tiny_model)
    return path


def _cli(*args, timeout=120, env=None):
    full = dict(os.environ)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "edgekit", *args], capture_output=True, text=True,
                          timeout=timeout, env=full)


# -- acquire / release --------------------------------------------------------------------------------------
def test_profile_on_a_place_holds_it_while_running_and_releases_it(lab, model_file):
    from edgekit.farm import me
    from edgekit.profiling import profile

    board = lab.boards["vb2"]
    before = board.requests_handled
    seen = []

    def progress(task, done, total=None):        # the place is ours while the board works
        if not seen:
            seen.append(lab.holder("vb-2"))

    result = profile(model_file, place="vb-2", coordinator=lab.coordinator, runs=20, warmup=1, progress=progress)
    d = result.to_dict()
    assert d["board"]["id"] == "virtual"
    assert d["place"]["place"] == "vb-2" and d["place"]["coordinator"] == lab.coordinator
    assert d["device"]["port"] == f"rfc2217://127.0.0.1:{lab.ser2net.ports['vb2']}"
    assert d["latency_us"]["n"] == 20
    assert board.requests_handled > before                # the requests crossed ser2net to this board
    assert seen == [me()]
    assert lab.holder("vb-2") is None


def test_a_place_held_by_someone_else_is_refused_naming_the_holder(lab, model_file):
    lab.lg("-p", "vb-2", "acquire", env={"LG_USERNAME": "alice", "LG_HOSTNAME": "bench7"})
    try:
        out = _cli("profile", str(model_file), "--place", "vb-2", "--coordinator", lab.coordinator)
        assert out.returncode == 14, out.stderr
        assert "vb-2 is acquired by bench7/alice" in out.stderr
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 2   # message + hint
        assert lab.holder("vb-2") == "bench7/alice"       # edgekit left it alone
    finally:
        lab.lg("-p", "vb-2", "release", env={"LG_USERNAME": "alice", "LG_HOSTNAME": "bench7"})


def test_a_place_the_user_already_holds_is_used_and_left_acquired(lab, model_file):
    from edgekit.farm import me
    from edgekit.validation import validate
    import numpy as np

    data = model_file.parent / "x.npz"
    np.savez(data, x=np.random.default_rng(0).uniform(0, 1, (5, 8, 8, 1)).astype("float32"))
    lab.lg("-p", "vb-2", "acquire")
    try:
        result = validate(model_file, data, place="vb-2", coordinator=lab.coordinator, n=5)
        assert result.passed and result.place["acquired_here"] is False
        assert lab.holder("vb-2") == me()
    finally:
        lab.lg("-p", "vb-2", "release")


def test_a_hung_board_is_power_cycled_through_its_place(lab, model_file):
    """vb-1 answers nothing (muted); its place has a power switch: edgekit cycles it once and goes on."""
    from edgekit.profiling import profile

    board = lab.boards["vb1"]
    board.faults.mute = True
    boots = board.boots
    lab.relay.log.clear()
    result = profile(model_file, place="vb-1", coordinator=lab.coordinator, runs=10, warmup=0)
    assert result.place["resets"] == ["power cycled"]
    assert lab.relay.log == [(0, False), (0, True)]       # labgrid's driver switched the outlet off, then on
    assert board.boots == boots + 1 and result.latency_us["n"] == 10
    assert lab.holder("vb-1") is None


def test_ctrl_c_releases_the_place(lab, model_file):
    proc = subprocess.Popen([sys.executable, "-m", "edgekit", "profile", str(model_file), "--place", "vb-2",
                             "--coordinator", lab.coordinator, "--runs", "65535", "--warmup", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while lab.holder("vb-2") is None:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the place was never acquired"
            time.sleep(0.1)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "Traceback" not in err
        assert lab.holder("vb-2") is None
    finally:
        stop(proc)


# -- the emulated M4 and the farm -----------------------------------------------------------------------------
@pytest.mark.skipif(not _have_qemu(), reason="qemu-system-arm / arm-none-eabi-gcc not installed")
def test_the_emulated_m4_on_a_place(lab, model_file):
    from edgekit.profiling import profile

    result = profile(model_file, place="m4", coordinator=lab.coordinator, runs=10, warmup=1,
                     options=lab.m4_options)
    d = result.to_dict()
    assert d["board"]["id"] == "qemu-m4" and d["device"]["board_id"] == "qemu-m4"
    if lab.m4_options["firmware"] == "tflm":       # real TFLM on the target ISA: counted instructions
        assert d["timing"]["source"] == "emulated" and d["latency_us"] is None
        assert d["instructions"]["median"] > 1000   # the tiny CNN runs thousands of instructions
    assert d["runner"] == "qemu" and d["place"]["port"].startswith("rfc2217://127.0.0.1:")
    assert lab.holder("m4") is None


def test_farm_profile_on_three_places_in_parallel(lab, model_file, tmp_path):
    places = ["vb-1", "vb-2"] + (["m4"] if lab.machine is not None else [])
    out_dir = tmp_path / "farm"
    out = _cli("farm", "profile", str(model_file), "--places", ",".join(places), "--coordinator", lab.coordinator,
               "--runs", "20", "--warmup", "1", *(["--opt", "firmware=test"] if lab.m4_options.get("firmware") == "test" else []),
               "-o", str(out_dir), "--json", timeout=240)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["schema"] == "edgekit.farm-profile/1" and doc["jobs"] == len(places)
    assert [r["place"] for r in doc["places"]] == places and doc["failed"] == []
    assert json.loads((out_dir / "comparison.json").read_text()) == doc
    for row in doc["places"]:
        prof = json.loads((out_dir / f"{row['place']}.json").read_text())
        assert prof["schema"] == "edgekit.profile/1" and prof["place"]["place"] == row["place"]
        assert prof["board"]["id"] == row["board"]
        assert row["timing_source"] == prof["timing"]["source"]
        assert lab.holder(row["place"]) is None
    by_place = {r["place"]: r for r in doc["places"]}
    assert by_place["vb-1"]["board"] == "virtual" and by_place["vb-1"]["latency_us_median"] > 0


def test_farm_match_skips_places_held_by_others(lab, model_file, tmp_path):
    from edgekit.farm import farm_profile

    lab.lg("-p", "vb-1", "acquire", env={"LG_USERNAME": "bob"})
    try:
        doc = farm_profile(model_file, match="vb-*", out_dir=tmp_path / "f", coordinator=lab.coordinator, runs=5,
                           warmup=0)
        assert [r["place"] for r in doc["places"]] == ["vb-2"]
        assert doc["skipped"][0]["place"] == "vb-1" and doc["skipped"][0]["acquired_by"].endswith("/bob")
    finally:
        lab.lg("-p", "vb-1", "release", env={"LG_USERNAME": "bob"})


# -- an exporter that goes away ------------------------------------------------------------------------------
def test_an_exporter_that_goes_away_mid_profile(lab, model_file, tmp_path, tiny_model):
    """The exporter's host dies (exporter and its ser2net) while the board profiles: a bounded device
    error, and the place is released all the same."""
    from edgekit.errors import DeviceError
    from edgekit.link.virtual_board import VirtualBoard
    from edgekit.profiling import profile

    board = VirtualBoard(tiny_model, board_id="virtual")
    ser2net = Ser2net(tmp_path, {"gone": board.start()}).start()
    try:
        exporter = lab.exporter("lab2", {"gone": {"NetworkSerialPort": {
            "host": "127.0.0.1", "port": ser2net.ports["gone"], "speed": 115200, "protocol": "rfc2217"}}})

        def pull_the_plug():
            deadline = time.monotonic() + 60
            while board.requests_handled < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.2)
            stop(exporter)
            ser2net.close()

        threading.Thread(target=pull_the_plug, daemon=True).start()
        started = time.monotonic()
        with pytest.raises(DeviceError) as info:
            profile(model_file, place="going", coordinator=lab.coordinator, runs=65535, warmup=0)
        took = time.monotonic() - started
        assert took < 60, took
        assert lab.holder("going") is None
        assert info.value.exit_code == 9 and info.value.message
    finally:
        ser2net.close()
        board.stop()


# -- bad input -----------------------------------------------------------------------------------------------
def _one_line_error(out, code):
    assert out.returncode == code, (out.returncode, out.stderr)
    assert out.stderr.startswith("edgekit: error: ") and "Traceback" not in out.stderr
    return out.stderr


def test_coordinator_unreachable(model_file):
    from labkit import free_port

    out = _cli("profile", str(model_file), "--place", "vb-1", "--coordinator", f"127.0.0.1:{free_port()}",
               env={"EDGEKIT_LABGRID_CLIENT": str(LG_BIN / "labgrid-client")})
    assert "no labgrid coordinator answers at 127.0.0.1:" in _one_line_error(out, 14)


def test_unknown_place(lab, model_file):
    from edgekit.errors import PlaceNotFound
    from edgekit.profiling import profile

    with pytest.raises(PlaceNotFound, match="no place 'nowhere'") as info:
        profile(model_file, place="nowhere", coordinator=lab.coordinator)
    assert info.value.exit_code == 14


def test_place_without_a_serial_resource(lab, model_file):
    from edgekit.errors import PlaceUnusable
    from edgekit.validation import validate

    with pytest.raises(PlaceUnusable) as info:
        validate(model_file, model_file, place="power-only", coordinator=lab.coordinator)
    assert "power-only has no serial resource" in info.value.message and "NetworkPowerPort" in info.value.message
    assert info.value.exit_code == 14
    assert lab.holder("power-only") is None               # refused before acquiring


def test_place_whose_board_is_not_in_targets(lab, model_file):
    out = _cli("profile", str(model_file), "--place", "no-such-board", "--coordinator", lab.coordinator, "--json")
    err = _one_line_error(out, 7)
    assert "no-such-board is tagged board=nano99, which is not a board in targets/" in err
    assert json.loads(out.stdout)["error"] == "BoardError"
    assert lab.holder("no-such-board") is None


def test_farm_places_lists_boards_and_holders(lab):
    out = _cli("farm", "places", "--coordinator", lab.coordinator, "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["schema"] == "edgekit.farm-places/1"
    places = {p["name"]: p for p in doc["places"]}
    assert places["vb-1"]["board"] == "virtual" and places["no-such-board"]["board"] == "nano99"
