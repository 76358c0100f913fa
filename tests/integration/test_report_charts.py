"""`edgekit report` charts: what each one shows and from which data, read off the matplotlib Figures.

One real int8 artifact folder (convert + a profile on the virtual board, host time) per module; the
other timing sources (an emulated board's estimate, a board's own clock, bare instruction counts) are
that profile rewritten the way the runners write them, with the time and energy figures made by
edgekit.estimate itself.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgekit
from edgekit import report
from edgekit.boards import load_board
from edgekit.estimate import energy_from_time, time_estimate

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def artifact(digits_files, tmp_path_factory):
    """A plain int8 artifact folder (no training: fast) with a virtual-board profile in it."""
    out = tmp_path_factory.mktemp("charts") / "digits"
    edgekit.convert(digits_files["model"], digits_files["train"], digits_files["test"],
                    edgekit.Recipe.from_flags(), out)
    p = subprocess.run([sys.executable, "-m", "edgekit", "profile", str(out / "model.tflite"), "--board", "virtual",
                        "--runs", "20", "--json"], capture_output=True, text=True, timeout=180, cwd=ROOT,
                       env={**os.environ, "EDGEKIT_DEBUG": ""})
    assert p.returncode == 0, p.stderr
    (out / "profile.json").write_text(p.stdout)
    return out


@pytest.fixture
def data(artifact):
    """A fresh ReportData of the folder (tests change its profiles and accuracy in memory)."""
    return report.collect(artifact)


def _figures(data) -> dict:
    return dict(report._figures(data))


def _only(figures: dict, start: str):
    found = [(t, f) for t, f in figures.items() if t.startswith(start)]
    assert len(found) == 1, (start, list(figures))
    return found[0]


def _bar_widths(ax) -> list[float]:
    return [round(p.get_width(), 6) for p in ax.patches]


def _op_rows(prof: dict, instructions: list[float]) -> list[dict]:
    total = sum(instructions)
    return [{"name": n, "count": 1, "share": i / total, "instructions_total": i * prof["runs"],
             "instructions_mean": i} for n, i in zip(("CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D"), instructions)]


def _instruction_stats(median: float) -> dict:
    return {"mean": median * 1.01, "median": median, "p90": median, "p99": median, "min": median,
            "max": median * 1.05, "std": 1.0, "n": 20}


def _emulated(prof: dict, *, board_id: str, estimate: bool) -> dict:
    """The profile as an emulated run writes it: instruction counts; with a board's estimate when
    ``estimate`` (``--emulate --board``), the same keys and numbers as profiling._board_estimate."""
    doc = copy.deepcopy(prof)
    b = load_board(board_id)
    doc["board"] = {**doc["board"], "id": b.id, "name": b.name, "clock_hz": b.clock_hz,
                    "active_power_mw": b.active_power_mw}
    doc["timing"] = {"unit": "instructions", "source": "emulated", "label": "instructions executed on the "
                     "emulated Cortex-M4; counts, not time", "resolution": 40}
    doc["latency_us"] = doc["latency_samples_us"] = None
    doc["instructions"] = _instruction_stats(200_000.0)
    doc["per_op"] = _op_rows(doc, [120_000.0, 60_000.0, 20_000.0])
    doc["float_baseline"] = {"path": "model_float.tflite", "runs": 20, "instructions_mean": 510_000.0,
                             "instructions_median": 500_000.0, "sha256": "f" * 64}
    doc["energy"] = doc["estimate"] = None
    if estimate:
        est = {**time_estimate(200_000.0, b), "statistic": "median"}
        scale = est["latency_us"] / 200_000.0
        for row in doc["per_op"]:
            row["estimated_us"] = row["instructions_mean"] * scale
        energy = energy_from_time(b, est["latency_us"], est["latency_us_low"], est["latency_us_high"],
                                  method="board active_power_mw x estimated time (instructions x CPI / clock)")
        f_est = time_estimate(500_000.0, b)
        f_uj = b.active_power_mw * f_est["latency_us"] / 1000.0
        doc["float_baseline"].update({"estimated_latency_us": f_est["latency_us"], "per_inference_uj": f_uj,
                                      "saved_uj": f_uj - energy["per_inference_uj"]})
        energy["float_baseline"] = doc["float_baseline"]
        doc["estimate"], doc["energy"] = est, energy
    return doc


def _measured(prof: dict, board_id: str = "nano33ble") -> dict:
    """The profile as a board with its own clock writes it: time measured on it, energy from that time."""
    doc = copy.deepcopy(prof)
    b = load_board(board_id)
    doc["board"] = {**doc["board"], "id": b.id, "name": b.name}
    doc["timing"] = {"unit": "ns", "source": "device", "label": "measured on the board (its own clock)"}
    lat = doc["latency_us"] = {**doc["latency_us"], "median": 4000.0, "median_ci95_low": 3900.0,
                               "median_ci95_high": 4100.0, "mean": 4050.0}
    doc["latency_samples_us"] = [4000.0] * 20
    doc["energy"] = energy_from_time(b, lat["median"], lat["median_ci95_low"], lat["median_ci95_high"],
                                     method="board active_power_mw x median latency measured on the board")
    f_uj = b.active_power_mw * 9000.0 / 1000.0
    doc["float_baseline"] = {"path": "model_float.tflite", "runs": 20, "latency_us_mean": 9100.0,
                             "latency_us_median": 9000.0, "sha256": "f" * 64, "per_inference_uj": f_uj}
    doc["energy"]["float_baseline"] = doc["float_baseline"]
    return doc


# --- data -------------------------------------------------------------------------------------------

def test_convert_stores_the_final_models_confusion_matrix(artifact, digits_files):
    rep = json.loads((artifact / "report.json").read_text())
    ev = rep["evaluation"]
    conf = ev["confusion"]
    m = np.asarray(conf["matrix"])
    y = np.load(digits_files["test"])["y"]
    assert conf["runtime"] == "tflm" and m.shape == (10, 10) and m.dtype.kind == "i"
    assert m.sum() == len(y) == rep["data"]["eval"]["samples"]
    assert m.sum(axis=1).tolist() == np.bincount(y, minlength=10).tolist()      # rows are the true classes
    assert np.trace(m) / m.sum() == pytest.approx(ev["tflm"]["accuracy"], abs=1e-12)


def test_confusion_matrix_of_a_regression_or_many_classes_is_none():
    from edgekit.conversion.data import Dataset
    from edgekit.conversion.evaluate import confusion

    x = np.zeros((4, 1), np.float32)
    logits = np.eye(4, dtype=np.float32)
    assert confusion(logits, Dataset(x, np.array([0, 1, 2, 2]))) == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1],
                                                                     [0, 0, 0, 0]]
    assert confusion(logits, Dataset(x, np.array([0.1, 0.2, 0.3, 0.4], np.float32))) is None   # regression
    assert confusion(np.zeros((4, 21), np.float32), Dataset(x, np.array([0, 1, 2, 3]))) is None  # > 20 classes
    assert confusion(logits, Dataset(x, np.array([0, 1, 2, 7]))) is None       # a label the output cannot have


# --- charts -----------------------------------------------------------------------------------------

def test_charts_are_pngs_of_the_figures(data):
    pngs = report.charts(data)
    assert [t for t, _ in pngs] == list(_figures(data))
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 2000 for _, png in pngs)
    titles = [t for t, _ in pngs]
    assert titles[:5] == ["Weight bytes per layer: float vs final (log scale)", "Model bytes: weights vs structure",
                          "Sparsity per layer (% zero weights)", "Accuracy",
                          "Confusion matrix (final model, host TFLM)"]


def test_layer_bytes_are_on_a_log_axis(data):
    _, fig = _only(_figures(data), "Weight bytes per layer")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    heights = sorted(round(p.get_height()) for p in ax.patches)
    want = sorted([r["float_bytes"] for r in data.layer_sizes] + [r["final_bytes"] for r in data.layer_sizes])
    assert heights == want
    lo, hi = ax.get_ylim()
    assert 0 < lo <= min(want) and hi >= max(want)


def test_accuracy_axis_shows_a_half_point_drop(data):
    data.accuracy["values"] = {"float (Keras)": 0.95, "float (LiteRT)": 0.95, "final (LiteRT)": 0.945,
                               "final (host TFLM)": 0.945}
    _, fig = _only(_figures(data), "Accuracy")
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    assert lo <= 94.5 and hi >= 95.0
    assert hi - lo < 10 and 0.5 / (hi - lo) >= 0.1       # the drop is at least a tenth of the axis
    notes = [t.get_text() for t in ax.texts]
    assert sum("-0.50 pt vs float" in t for t in notes) == 2
    assert any(t == "95.00" for t in notes)               # the baseline itself: its value, no change


def test_accuracy_axis_of_the_real_folder_is_zoomed(data, artifact):
    ev = json.loads((artifact / "report.json").read_text())["evaluation"]
    _, fig = _only(_figures(data), "Accuracy")
    lo, hi = fig.axes[0].get_xlim()
    values = [v * 100 for v in data.accuracy["values"].values() if v is not None]
    assert lo <= min(values) and max(values) <= hi <= 100
    assert hi - lo < 10
    d = round(100 * ev["delta_vs_float"]["tflm"], 2)
    assert any(f"{d:+.2f} pt vs float" in t.get_text() for t in fig.axes[0].texts)


def test_confusion_chart_draws_the_matrix_and_only_with_one(data):
    matrix = data.convert["evaluation"]["confusion"]["matrix"]
    _, fig = _only(_figures(data), "Confusion matrix")
    ax = fig.axes[0]
    assert ax.images[0].get_array().tolist() == matrix
    assert f"{sum(map(sum, matrix))} eval samples" in ax.get_title()
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    del data.convert["evaluation"]["confusion"]
    assert not any(t.startswith("Confusion") for t in _figures(data))


def test_host_time_is_labelled_host_time_and_has_no_energy(data):
    prof = data.profiles[0]
    assert prof["timing"]["source"] == "host" and prof["energy"] is None
    prof["energy"] = {"estimate": True, "per_inference_uj": 1.0, "method": "old: power x host time"}   # ignored
    figures = _figures(data)
    title, fig = _only(figures, "Float vs final")
    assert title == "Float vs final time: host time on virtual (this computer, not a board's time)"
    assert len(fig.axes) == 1                                # no energy axis
    fb = prof["float_baseline"]
    stat = "median" if "latency_us_median" in fb else "mean"
    assert _bar_widths(fig.axes[0]) == [round(fb[f"latency_us_{stat}"], 6), round(prof["latency_us"][stat], 6)]
    assert all("measured on" not in t and "energy" not in t for t in figures)
    _, hist = _only(figures, "Latency histogram")
    assert "host time" in hist.axes[0].get_title() and "host time" in hist.axes[0].get_xlabel()


def test_host_per_op_bars_say_host_time(data):
    prof = data.profiles[0]
    mean = prof["latency_us"]["mean"]
    prof["per_op"] = [{"name": "FULLY_CONNECTED", "count": 2, "total_us": 0.7 * mean * 20, "mean_us": 0.7 * mean,
                       "share": 0.7}, {"name": "CONV_2D", "count": 1, "total_us": 0.3 * mean * 20,
                                       "mean_us": 0.3 * mean, "share": 0.3}]
    title, fig = _only(_figures(data), "Per-op")
    assert title.startswith("Per-op latency: host time on virtual") and "estimate" not in title
    assert _bar_widths(fig.axes[0]) == [round(0.7 * mean, 6), round(0.3 * mean, 6)]


def test_emulated_board_estimate_per_op_and_float_vs_final_with_energy(data):
    doc = _emulated(data.profiles[0], board_id="nano33ble", estimate=True)
    data.profiles = [doc]
    figures = _figures(data)
    est, energy, fb = doc["estimate"], doc["energy"], doc["float_baseline"]

    title, fig = _only(figures, "Per-op")
    assert title.startswith("Per-op estimated time: estimate for nano33ble: emulated instructions x CPI")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "estimated µs per inference"
    assert _bar_widths(ax) == [round(r["estimated_us"], 6) for r in doc["per_op"]]
    assert all(t.get_text().endswith("µs (estimate)") for t in ax.texts)

    title, fig = _only(figures, "Float vs final")
    assert title.startswith("Float vs final time and energy: estimate for nano33ble")
    t_ax, e_ax = fig.axes
    assert _bar_widths(t_ax) == [round(fb["estimated_latency_us"], 6), round(est["latency_us"], 6)]
    assert [t.get_text() for t in t_ax.get_yticklabels()] == ["float", "final (int8)"]
    assert _bar_widths(e_ax) == [round(fb["per_inference_uj"], 6), round(energy["per_inference_uj"], 6)]
    assert "estimate" in e_ax.get_title() and "estimated µJ" in e_ax.get_xlabel()
    assert not any(t.startswith("Latency histogram") for t in figures)    # no time samples on the emulator


def test_instruction_counts_without_an_estimate_are_counts_and_have_no_energy(data):
    doc = _emulated(data.profiles[0], board_id="qemu-m4", estimate=False)
    data.profiles = [doc]
    figures = _figures(data)
    title, fig = _only(figures, "Per-op")
    assert title.startswith("Per-op instructions: instructions counted on the emulated target (qemu-m4)")
    assert _bar_widths(fig.axes[0]) == [120_000.0, 60_000.0, 20_000.0]
    title, fig = _only(figures, "Float vs final")
    assert title == "Float vs final time: instructions counted on the emulated target (qemu-m4), not time"
    assert len(fig.axes) == 1 and "median instructions" in fig.axes[0].get_xlabel()
    assert _bar_widths(fig.axes[0]) == [500_000.0, 200_000.0]


def test_measured_on_a_board_with_energy_and_a_second_model(data, artifact):
    final = _measured(data.profiles[0])
    other = copy.deepcopy(final)           # another model profiled on the same board: its own bar
    other["file"], other["model"] = "profile_int8.json", {**other["model"], "path": "int8/digits_int8.tflite",
                                                          "sha256": "0" * 64}
    other["latency_us"] = {**other["latency_us"], "median": 5000.0, "median_ci95_low": 4950.0,
                           "median_ci95_high": 5050.0}
    other["energy"] = {**other["energy"], "per_inference_uj": other["energy"]["active_power_mw"] * 5.0}
    data.profiles = [final, other]
    title, fig = _only(_figures(data), "Float vs final")
    assert title == "Float vs final time and energy: measured on nano33ble"
    t_ax, e_ax = fig.axes
    assert [t.get_text() for t in t_ax.get_yticklabels()] == ["float", "final (int8)", "digits_int8.tflite"]
    assert _bar_widths(t_ax) == [9000.0, 4000.0, 5000.0]
    mw = final["energy"]["active_power_mw"]
    assert _bar_widths(e_ax) == [round(mw * 9.0, 6), round(mw * 4.0, 6), round(mw * 5.0, 6)]
    assert any("0.44x float" in t.get_text() for t in t_ax.texts)


def test_no_float_vs_final_chart_without_a_baseline(data):
    data.profiles[0]["float_baseline"] = {"path": "model_float.tflite", "skipped": "board runs int8 only"}
    assert not any(t.startswith("Float vs final") for t in _figures(data))


def test_mac_based_estimates_of_float_and_final_compare_and_say_nothing_ran(data):
    """A board the emulator cannot run: profiles of both models hold a MAC-based estimate, no time."""
    def estimated(prof: dict, sha: str, path: str, latency_us: float) -> dict:
        doc = copy.deepcopy(prof)
        doc["board"] = {**doc["board"], "id": "esp32s3"}
        doc["model"] = {**doc["model"], "sha256": sha, "path": path}
        doc["timing"] = {"unit": None, "source": "estimate", "label": "not run: MAC-based estimate only"}
        doc["latency_us"] = doc["latency_samples_us"] = doc["float_baseline"] = doc["per_op"] = None
        doc["estimate"] = {"estimate": True, "method": "MACs x cycles per MAC / clock", "cycles_per_mac": 2.0,
                           "clock_hz": 240_000_000, "latency_us": latency_us, "latency_us_low": latency_us / 2,
                           "latency_us_high": latency_us * 2}
        doc["energy"] = energy_from_time(load_board("esp32s3"), latency_us, latency_us / 2, latency_us * 2,
                                         method="board active_power_mw x MAC-based time estimate")
        return doc

    c = data.convert
    final = estimated(data.profiles[0], c["model_sha256"], "model.tflite", 30.0)
    flt = {**estimated(data.profiles[0], c["float_model_sha256"], "model_float.tflite", 80.0), "file": "f.json"}
    data.profiles = [final, flt]
    figures = _figures(data)
    title, fig = _only(figures, "Float vs final")
    assert title == ("Float vs final time and energy: MAC-based estimate for esp32s3: MACs x 2 cycles per MAC / "
                     "240 MHz (nothing ran)")
    t_ax, e_ax = fig.axes
    assert [t.get_text() for t in t_ax.get_yticklabels()] == ["float", "final (int8)"]
    assert _bar_widths(t_ax) == [80.0, 30.0]
    assert t_ax.get_xlabel() == "estimated µs per inference"
    assert not any(t.startswith(("Per-op", "Latency histogram")) for t in figures)
