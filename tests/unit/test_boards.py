"""Boards as data: the shipped set, aliases, validation errors, and `edgekit boards`."""
from __future__ import annotations

import json
import textwrap

import pytest
import yaml
from typer.testing import CliRunner

from edgekit.boards import list_boards, load_board, targets_dir
from edgekit.errors import BoardError

EXPECTED_BOARDS = {"nano33ble", "esp32s3", "pico", "rpi4", "rpi5", "android", "qemu-m4", "virtual"}
# Numbers every board file of a real board documents a source for.
SOURCED = ("clock_hz", "flash_bytes", "ram_bytes", "firmware_flash_bytes", "firmware_ram_bytes",
           "peak_int8_macs_per_cycle", "active_power_mw")
REAL_BOARDS = ("nano33ble", "esp32s3", "pico", "rpi4", "rpi5", "android")

MINIMAL = {
    "name": "Test board", "cpu": "Cortex-M4F", "clock_hz": 64_000_000, "flash_bytes": 1_048_576,
    "ram_bytes": 262_144, "firmware_flash_bytes": 100_000, "firmware_ram_bytes": 20_000,
    "peak_int8_macs_per_cycle": 2, "active_power_mw": 20, "runtime": "tflm", "runner": "arduino-cli",
}


def write_board(folder, board_id, **changes):
    raw = dict(MINIMAL)
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    (folder / f"{board_id}.yaml").write_text(yaml.safe_dump(raw))
    return folder


def test_exact_set_of_boards():
    assert {b.id for b in list_boards()} == EXPECTED_BOARDS


def test_file_name_is_the_id_and_every_board_is_usable():
    from edgekit.runners import RUNNER_NAMES

    for board in list_boards():
        assert (targets_dir() / f"{board.id}.yaml").is_file()
        assert board.usable_flash_bytes > 0, board.id
        assert board.usable_ram_bytes > 0, board.id
        assert board.runner in RUNNER_NAMES


@pytest.mark.parametrize("board_id", REAL_BOARDS)
def test_real_boards_name_a_source_for_each_number(board_id):
    board = load_board(board_id)
    missing = [k for k in SOURCED if not board.sources.get(k)]
    assert not missing, f"{board_id} has no source for {missing}"
    if board.usb_hwids:
        assert board.sources.get("usb_hwids")


def test_serial_boards_have_build_ids_for_their_runner():
    for board in list_boards():
        if board.runner == "arduino-cli":
            assert board.build["fqbn"].count(":") == 2
        if board.runner == "esptool":
            assert board.build["esptool_chip"] and board.upload["flash_offsets"]["firmware.bin"] > 0
        if board.runner in ("esptool", "picotool"):
            assert board.build["platformio_board"]


@pytest.mark.parametrize("alias,board_id", [("nano33", "nano33ble"), ("esp32-s3", "esp32s3"),
                                            ("rp2040", "pico"), ("pi5", "rpi5")])
def test_aliases(alias, board_id):
    assert load_board(alias).id == board_id


@pytest.mark.parametrize("typo,expected", [("nano33bl", "nano33ble"), ("esp32", "esp32s3"), ("rpi3", "rpi4")])
def test_unknown_board_suggests_the_closest_ids(typo, expected):
    with pytest.raises(BoardError) as err:
        load_board(typo)
    assert f"unknown board '{typo}'" in err.value.message
    assert expected in err.value.hint
    assert err.value.exit_code == 7


def test_a_minimal_board_file_loads(tmp_path):
    board = load_board("mine", write_board(tmp_path, "mine"))
    assert board.id == "mine" and board.usable_ram_bytes == 262_144 - 20_000


def test_missing_key_names_file_and_key(tmp_path):
    write_board(tmp_path, "nokey", ram_bytes=None)
    with pytest.raises(BoardError, match=r"nokey\.yaml is missing the required key 'ram_bytes'"):
        load_board("nokey", tmp_path)


def test_mistyped_key_is_refused_with_a_suggestion(tmp_path):
    raw = dict(MINIMAL)
    raw["clock_hzz"] = raw.pop("clock_hz")
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(BoardError) as err:
        load_board("typo", tmp_path)
    assert "typo.yaml" in err.value.message
    # the missing required key is reported first; fix it and the typo itself is named
    raw["clock_hz"] = 1
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(raw))
    from edgekit.boards import _all_boards

    _all_boards.cache_clear()
    with pytest.raises(BoardError, match=r"unknown key 'clock_hzz' \(did you mean 'clock_hz'\?\)"):
        load_board("typo", tmp_path)


def test_mistyped_upload_key_is_refused(tmp_path):
    write_board(tmp_path, "touchy", upload={"use_1200bps_tuch": True})
    with pytest.raises(BoardError, match=r"'upload\.use_1200bps_tuch' \(did you mean 'upload\.use_1200bps_touch'"):
        load_board("touchy", tmp_path)


def test_wrong_type_is_refused(tmp_path):
    write_board(tmp_path, "texty", clock_hz="64 MHz")
    with pytest.raises(BoardError, match=r"key 'clock_hz' must be int, got '64 MHz'"):
        load_board("texty", tmp_path)


def test_unknown_runner_is_refused_with_a_suggestion(tmp_path):
    write_board(tmp_path, "norunner", runner="arduinocli")
    with pytest.raises(BoardError, match=r"unknown runner 'arduinocli' \(did you mean 'arduino-cli'\?\)"):
        load_board("norunner", tmp_path)


def test_bad_flash_offsets_are_refused(tmp_path):
    write_board(tmp_path, "offsets", runner="esptool", upload={"flash_offsets": {"firmware.bin": "0x10000"}})
    with pytest.raises(BoardError, match="flash_offsets must map file names"):
        load_board("offsets", tmp_path)


def test_broken_yaml_is_one_error(tmp_path):
    (tmp_path / "broken.yaml").write_text(textwrap.dedent("""\
        name: [unclosed
        cpu: x
    """))
    with pytest.raises(BoardError, match="broken.yaml cannot be read"):
        load_board("broken", tmp_path)


def test_cli_boards_json_and_table():
    from edgekit.cli.main import app

    runner = CliRunner()
    res = runner.invoke(app, ["boards", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["schema"] == "edgekit.boards/1"
    rows = doc["boards"]
    assert {r["id"] for r in rows} == {b.id for b in list_boards()}
    nano = next(r for r in rows if r["id"] == "nano33ble")
    assert nano["usb_hwids"][0] == "2341:805a" and nano["flash_bytes"] == 1_048_576
    table = runner.invoke(app, ["boards"])
    assert table.exit_code == 0
    for b in list_boards():
        assert b.id in table.stdout
        assert b.name in table.stdout          # off a terminal tables are not cut to 80 columns
    assert "…" not in table.stdout
    assert "256 KB" in table.stdout and "240 MHz" in table.stdout
