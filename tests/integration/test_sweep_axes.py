"""`edgekit sweep` over the newer axes on the tiny digits CNN (1 epoch a stage): channel pruning on a
board with its RAM and MAC-based latency constraints and the three-objective front, resume with the
new ids, the granularity axis without a board (RAM = the exact arena), bad input, and one emulated
point whose latency is counted on the emulated Cortex-M4 (qemu)."""
from __future__ import annotations

import json

import pytest

from edgekit.sweep import LATENCY_EMULATED, LATENCY_MAC, RAM_ARENA, RAM_FIT, sweep
from test_cli_convert import assert_one_line_error, edgekit
from test_sweep import _brute_pareto


def _files(d):
    return d["model"], d["train"], d["test"]


def _front3(rows):
    """Independent: no row at least as good on accuracy, flash and latency, and better on one."""
    keys = lambda r: (-r["accuracy"], r["flash_bytes"], r["latency_estimate_us"])  # noqa: E731
    return {r["id"] for r in rows if not any(all(a <= b for a, b in zip(keys(o), keys(r))) and keys(o) != keys(r)
                                             for o in rows)}


@pytest.fixture
def counting_convert(monkeypatch):
    from edgekit.conversion import pipeline

    calls = []
    real = pipeline.convert

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(pipeline, "convert", counting)
    return calls


@pytest.mark.slow
def test_channel_pruning_axis_on_a_board_constraints_front_and_resume(tmp_path, digits_files, counting_convert):
    """nano33ble: lut4 (unclustered) and per-channel (no per-channel dense) merge; 2 points run."""
    out = tmp_path / "sweep"
    grid = dict(prune_channels=[0.0, 0.5], compress=["match", "lut4"], granularity=["auto", "per-channel"],
                epochs=1, board="nano33ble")
    warned = []
    res = sweep(*_files(digits_files), out, warn=warned.append, **grid)
    assert len(counting_convert) == 2
    assert [p.id for p in res.points] == ["p0_c0", "p0_c0_ch0.5"] and len(res.merged) == 6
    assert any("run once" in w and "no per-channel FULLY_CONNECTED" in w for w in warned)
    doc = json.loads((out / "sweep.json").read_text())
    rows = {r["id"]: r for r in doc["points"]}
    plain, pruned = rows["p0_c0"], rows["p0_c0_ch0.5"]
    assert (plain["prune_channels"], pruned["prune_channels"]) == (0.0, 0.5)
    assert all(r["error"] is None and r["compress"] == "none" and r["granularity"] == "per-tensor"
               and r["dense_weights"] == "per-tensor" for r in rows.values())
    assert "prune-channels 0.5" in pruned["recipe"]
    # channel pruning removes MACs and activations: a faster estimate, a smaller model and arena
    assert pruned["latency_estimate_us"] < plain["latency_estimate_us"]
    assert pruned["flash_bytes"] < plain["flash_bytes"] and pruned["arena_bytes"] <= plain["arena_bytes"]
    # the MAC-based estimate, labelled; energy = the board's 20 mW x the time
    assert all(r["latency_source"] == LATENCY_MAC and r["instructions"] is None for r in rows.values())
    assert pruned["energy_uj"] == pytest.approx(20 * pruned["latency_estimate_us"] / 1000)
    # RAM with a board: the fit's need = the arena the exported firmware reserves + the firmware's RAM
    from edgekit.boards import load_board
    from edgekit.fit import reserved_arena

    nano = load_board("nano33ble")
    assert doc["ram_source"] == RAM_FIT
    assert pruned["ram_bytes"] == reserved_arena(nano, pruned["arena_bytes"]) + nano.firmware_ram_bytes
    assert doc["pareto_objectives"] == ["accuracy", "flash_bytes", "latency_estimate_us"]
    assert {i for i, r in rows.items() if r["pareto"]} == _front3(list(rows.values()))

    # the rerun (CLI, JSON) with constraints: nothing converts again, the new ids resume
    counting_convert.clear()
    between_ms = (pruned["latency_estimate_us"] + plain["latency_estimate_us"]) / 2 / 1000
    model, data, test = _files(digits_files)
    r = edgekit("sweep", model, "--data", data, "--eval", test, "-o", out, "--prune-channels", "0,0.5", "--compress", "match,lut4",
                "--granularity", "auto,per-channel", "--epochs", "1", "--board", "nano33ble",
                "--max-latency", f"{between_ms:.6f}", "--max-ram", str(plain["ram_bytes"]), "--json")
    assert r.returncode == 0, r.stderr
    again = json.loads(r.stdout)
    by = {p["id"]: p for p in again["points"]}
    assert all(p["reused"] for p in by.values())
    assert by["p0_c0_ch0.5"]["meets"] and not by["p0_c0"]["meets"]       # too slow for --max-latency
    assert again["best"] == "p0_c0_ch0.5"
    assert again["constraints"]["max_latency_ms"] == pytest.approx(between_ms)
    # RAM one byte short of the pruned point's need: nobody meets; the closest is the one that misses least
    res = sweep(*_files(digits_files), out, max_ram=pruned["ram_bytes"] - 1, **grid)
    assert len(counting_convert) == 0
    assert res.best is None and not any(p.meets for p in res.points) and res.closest.id == "p0_c0_ch0.5"
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_granularity_axis_without_a_board(tmp_path, digits_files):
    """Two PTQ points (no training): per-channel and per-tensor dense weights; RAM is the exact arena."""
    out = tmp_path / "sweep"
    res = sweep(*_files(digits_files), out, granularity=["per-channel", "per-tensor"], epochs=1)
    by = {p.id: p for p in res.points}
    assert set(by) == {"p0_c0_dpc", "p0_c0_dpt"}
    assert by["p0_c0_dpc"].dense_weights == "per-channel" and by["p0_c0_dpt"].dense_weights == "per-tensor"
    assert all(p.ram_bytes == p.arena_bytes and p.ram_bytes for p in res.points) and res.ram_source == RAM_ARENA
    assert all(p.latency_estimate_us is None and p.latency_source is None for p in res.points)
    assert res.pareto_objectives == ["accuracy", "flash_bytes"]
    assert {p.id for p in res.points if p.pareto} == _brute_pareto([
        {"id": p.id, "flash_bytes": p.flash_bytes, "accuracy": p.accuracy} for p in res.points])
    low = min(p.ram_bytes for p in res.points)
    res = sweep(*_files(digits_files), out, granularity=["per-channel", "per-tensor"], epochs=1, max_ram=low)
    assert all(p.reused for p in res.points)
    assert {p.id for p in res.points if p.meets} == {p.id for p in res.points if p.ram_bytes <= low} != set()
    res = sweep(*_files(digits_files), out, granularity=["per-channel", "per-tensor"], epochs=1, max_ram=low - 1)
    assert res.best is None and res.closest is not None


@pytest.mark.parametrize("args,code,match", [
    (["--compress", "match,lut9"], 2, "--compress: 'lut9' is not one of"),
    (["--granularity", "per-layer"], 2, "--granularity: 'per-layer' is not one of"),
    (["--prune-channels", "0,1"], 2, "--prune-channels value 1.0 must be 0"),
    (["--max-latency", "5"], 2, "--max-latency needs --board"),
    (["--emulate"], 2, "--emulate needs --board"),
    (["--max-latency", "5", "--board", "rpi4"], 2, "no latency estimate for rpi4"),
    (["--emulate", "--board", "esp32s3"], 2, "board esp32s3 (ESP32-S3 (dual-core Xtensa LX7)) cannot be emulated"),
    (["--emulate", "--board", "qemu-m4"], 2, "qemu-m4 is the emulated machine itself"),
    (["--max-ram", "lots"], 2, "size 'lots' is not understood"),
])
def test_bad_sweep_input_is_one_line_before_any_work(tmp_path, args, code, match):
    model, data, test = tmp_path / "m.keras", tmp_path / "train.npz", tmp_path / "test.npz"   # never read
    r = edgekit("sweep", model, "--data", data, "--eval", test, "-o", tmp_path / "s", *args)
    assert_one_line_error(r, code, match)
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
@pytest.mark.qemu
@pytest.mark.timeout(1800)
def test_emulated_latency_is_counted_and_labelled(tmp_path, digits_files, monkeypatch):
    """One PTQ point on nano33ble's own firmware (Chirale TFLM) on the emulated Cortex-M4: its latency
    is instructions x CPI / clock, labelled so; a rerun takes the counts from the point's folder."""
    from tflm_trees import require_tree

    from edgekit.boards import load_board
    from edgekit.estimate import core_of

    tree = require_tree("arduino-library", "Chirale_TensorFLowLite")
    out = tmp_path / "sweep"
    res = sweep(*_files(digits_files), out, board="nano33ble", emulate=True, emulate_runs=2, tflm_src=tree.root)
    (pt,) = res.points
    assert pt.error is None and pt.latency_source == LATENCY_EMULATED and pt.instructions > 1000
    nano = load_board("nano33ble")
    assert pt.latency_estimate_us == pytest.approx(pt.instructions * core_of(nano).cpi / nano.clock_hz * 1e6)
    assert pt.energy_uj == pytest.approx(nano.active_power_mw * pt.latency_estimate_us / 1000)
    assert res.emulated["board"] == "nano33ble" and "Chirale" in res.emulated["tflm"]
    assert res.pareto_objectives[-1] == "latency_estimate_us"
    kept = json.loads((out / "points" / pt.id / "emulated.json").read_text())
    assert kept["profile"]["timing"]["unit"] == "instructions"

    from edgekit import profiling

    def no_profile(*a, **k):
        raise AssertionError("the emulated counts of a finished point are kept")

    monkeypatch.setattr(profiling, "profile", no_profile)
    again = sweep(*_files(digits_files), out, board="nano33ble", emulate=True, emulate_runs=2, tflm_src=tree.root,
                  max_latency_ms=pt.latency_estimate_us / 1000 * 0.5)
    (p2,) = again.points
    assert p2.reused and p2.latency_estimate_us == pt.latency_estimate_us and not p2.meets
