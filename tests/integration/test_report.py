"""`edgekit report`: a real convert artifact + real profile/validate runs on the virtual board -> HTML,
rendered by headless Chromium; JSON and terminal output checked against report.json and the model."""
from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgekit
from edgekit.errors import InputFileError

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "edgekit"]
DATA_URI = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")


def _cli(*args, timeout=180):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env={**os.environ, "EDGEKIT_DEBUG": ""})


@pytest.fixture(scope="module")
def artifact(digits_files, tmp_path_factory):
    """A pruned int8 artifact folder (per-channel dense weights) with a profile and a validate result in it."""
    out = tmp_path_factory.mktemp("report") / "digits"
    edgekit.convert(digits_files["model"], digits_files["train"], digits_files["test"],
                    edgekit.Recipe.from_flags(prune=0.5, epochs=1, dense_auto=False), out)
    p = _cli("profile", out / "model.tflite", "--board", "virtual", "--runs", "40", "--json")
    assert p.returncode == 0, p.stderr
    (out / "profile.json").write_text(p.stdout)
    v = _cli("validate", out / "model.tflite", "-d", digits_files["test"], "-n", "40", "--json")
    assert v.returncode == 0, v.stderr
    (out / "validate.json").write_text(v.stdout)
    return out


def _expected_charts(data) -> int:
    """Charts the folder allows: layer sizes, weights/structure, sparsity, accuracy, one histogram and
    (with per-op data) one per-op chart per profile, and the board budget."""
    n = (4 + bool((data.convert.get("evaluation") or {}).get("confusion"))
         + sum(bool((p.get("float_baseline") or {}).get("sha256")) for p in data.profiles)
         + sum(1 + bool(p.get("per_op")) for p in data.profiles) + (data.budget is not None))
    return n


@pytest.mark.slow
def test_html_opens_in_headless_chromium(artifact, tmp_path):
    from PIL import Image

    html_path = tmp_path / "report.html"
    r = _cli("report", artifact, "-o", html_path)
    assert r.returncode == 0, r.stderr
    html = html_path.read_text()
    data = edgekit.report.collect(artifact)
    assert len(data.profiles) == 1 and len(data.validations) == 1
    # every <img> is an embedded PNG that PIL can open, and there is one per chart the data allows
    imgs = re.findall(r"<img\b[^>]*>", html)
    uris = [DATA_URI.search(tag) for tag in imgs]
    assert all(uris) and len(imgs) == _expected_charts(data) == 8
    for m in uris:
        im = Image.open(io.BytesIO(base64.b64decode(m.group(1))))
        im.load()
        assert im.format == "PNG" and im.width > 300 and im.height > 150

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("SKIPPED LOUDLY: chromium is not installed (apt-get install chromium; `make setup` does)")
    png = tmp_path / "shot.png"
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}", "--window-size=1200,3000",
           html_path.as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=90, check=False)
    assert png.is_file(), "chromium wrote no screenshot"
    shot = np.asarray(Image.open(png).convert("RGB"))
    assert shot.shape[:2] == (3000, 1200)
    assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 50      # not a blank page
    # charts come first: the band below the title holds coloured bars, not just black text on white
    band = shot[200:1400]
    colours = {tuple(c) for c in band.reshape(-1, 3)[::7]}
    saturated = np.abs(band.astype(int) - band.mean(axis=2, keepdims=True)).max(axis=2) > 60
    assert len(colours) > 100 and saturated.mean() > 0.01


@pytest.mark.slow
def test_html_has_no_external_references(artifact, tmp_path):
    edgekit.report.write_html(artifact, tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    stripped = DATA_URI.sub("", html)
    assert not re.search(r"https?://", stripped, re.I)
    assert "//" not in stripped
    assert not re.search(r"<(script|link|iframe|object|embed)\b", stripped, re.I)
    assert not re.search(r"@import|url\(", stripped, re.I)
    for m in re.finditer(r"\b(src|href)\s*=\s*['\"]([^'\"]*)", html, re.I):
        assert m.group(1).lower() == "src" and m.group(2).startswith("data:image/png;base64,")


@pytest.mark.slow
def test_numbers_equal_report_json_and_model(artifact, digits_files, tmp_path):
    from edgekit import _tf

    rep = json.loads((artifact / "report.json").read_text())
    r = _cli("report", artifact, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema"] == "edgekit.report/1"
    assert doc["sizes"] == rep["sizes"] and doc["sparsity"] == rep["sparsity"]
    ev = rep["evaluation"]
    acc = doc["accuracy"]["values"]
    assert acc["float (Keras)"] == ev["keras_float"]["accuracy"]
    assert acc["final (LiteRT)"] == ev["litert"]["accuracy"]
    assert acc["final (host TFLM)"] == ev["tflm"]["accuracy"]
    val = json.loads((artifact / "validate.json").read_text())
    assert [v for k, v in acc.items() if k.startswith("on device")] == [val["accuracy_device"]]
    prof = json.loads((artifact / "profile.json").read_text())
    assert doc["latency"][0]["latency_us"] == prof["latency_us"]
    # one arena figure: the exact minimum (host TFLM, report.json) as the firmware reserves it, and the same
    # RAM as inspect's fit; the recording allocator's total of the profile is not a fit figure
    assert doc["budget"]["board"] == "virtual"           # an upload board: its fixed arena must hold the minimum
    assert doc["budget"]["arena_min_bytes"] == doc["budget"]["arena_bytes"] == rep["evaluation"]["tflm_arena_bytes"]
    info = edgekit.inspect(artifact / "model.tflite", board=doc["budget"]["board"])
    assert doc["budget"]["fit"]["ram_needed_bytes"] == info.board_fit.ram_needed_bytes

    # per-layer bytes from the flatbuffers, against the Keras model's own weights: float32 kernel + bias
    # in model_float.tflite; int8 kernel + int32 bias in model.tflite
    keras_model = _tf.keras().models.load_model(digits_files["model"])
    layers = [l for l in keras_model.layers if l.get_weights()]
    rows = doc["layer_sizes"]
    assert [r["name"] for r in rows] == [l.name for l in layers]
    for row, layer in zip(rows, layers):
        kernel, bias = layer.get_weights()
        assert row["float_bytes"] == 4 * (kernel.size + bias.size)
        assert row["final_bytes"] == kernel.size + 4 * bias.size
        assert row["decoded"] is False
    assert sum(r["final_bytes"] for r in rows) <= rep["sizes"]["final_breakdown"]["weight_bytes"]

    html = edgekit.report.render_html(edgekit.report.collect(artifact))
    assert f"{rep['sizes']['final_bytes']:,}" in html and f"{rep['sizes']['float_bytes']:,}" in html
    # the terminal gets the same facts (plain text when stdout is not a terminal)
    t = _cli("report", artifact)
    assert t.returncode == 0, t.stderr
    assert f"{rep['sizes']['final_bytes']:,}" in t.stdout
    assert "no per-op data: " + prof["per_op_note"] in t.stdout
    assert "\x1b[" not in t.stdout


@pytest.mark.slow
def test_lut_compressed_layers_count_decode_inputs(digits_files, tmp_path):
    recipe = edgekit.Recipe.from_flags(compress="lut4")
    recipe.compress.min_tensor_bytes = 16
    edgekit.convert(digits_files["model"], digits_files["train"], digits_files["test"], recipe, tmp_path / "c")
    rep = json.loads((tmp_path / "c" / "report.json").read_text())
    planned = next(s for s in rep["stages"] if s["stage"] == "compress")["tensors"]
    data = edgekit.report.collect(tmp_path / "c", board="nano33ble")
    assert any("skipped" not in t for t in planned)
    assert [r["decoded"] for r in data.layer_sizes] == ["skipped" not in t for t in planned]
    for row, t in zip(data.layer_sizes, planned):
        if "skipped" in t:
            assert row["final_bytes"] == t["bytes"] + 4 * t["shape"][0]     # int8 kernel + int32 bias
        else:   # the DECODE op's constants: packed indices + value table (+ bias, a direct input)
            packed = (t["bytes"] * t["index_bits"] + 7) // 8
            assert row["final_bytes"] >= packed + 4 * t["shape"][0]
    from edgekit.boards import load_board

    b = load_board("nano33ble")
    assert data.budget["flash_available_bytes"] == b.flash_bytes - b.firmware_flash_bytes
    assert data.budget["ram_available_bytes"] == b.ram_bytes - b.firmware_ram_bytes
    from edgekit.exporters.c_arrays import arena_with_margin

    assert data.budget["arena_min_bytes"] == rep["evaluation"]["tflm_arena_bytes"]
    assert data.budget["arena_bytes"] == arena_with_margin(rep["evaluation"]["tflm_arena_bytes"])  # the header's
    assert data.budget["estimate"]["from"] == "model MACs" and "MAC-based" in data.budget["estimate"]["label"]
    assert data.accuracy["values"]["final (LiteRT)"] is None


def test_folder_without_report_json_is_a_clear_error(tmp_path):
    (tmp_path / "model.tflite").write_bytes(b"\x00" * 32)
    with pytest.raises(InputFileError, match="no report.json"):
        edgekit.report.collect(tmp_path)
    r = _cli("report", tmp_path, timeout=60)
    assert r.returncode == 3
    assert r.stdout == ""
    first = r.stderr.strip().splitlines()[0]
    assert first.startswith("edgekit: error: ") and "no report.json" in first
    assert "Traceback" not in r.stderr


def test_report_json_of_another_kind_is_refused(tmp_path):
    (tmp_path / "report.json").write_text(json.dumps({"schema": "edgekit.profile/1"}))
    with pytest.raises(InputFileError, match="expected 'edgekit.convert/1'"):
        edgekit.report.collect(tmp_path)


@pytest.mark.slow
def test_per_op_profile_adds_a_chart_and_a_table(artifact, tmp_path):
    """A device with per-op timing (none of the boards here has one): the per-op table and bars appear."""
    folder = tmp_path / "f"
    shutil.copytree(artifact, folder)
    prof = json.loads((folder / "profile.json").read_text())
    mean = prof["latency_us"]["mean"]
    prof["per_op"] = [{"name": "FULLY_CONNECTED", "count": 2, "total_us": 0.7 * mean * prof["runs"],
                       "mean_us": 0.7 * mean, "share": 0.7},
                      {"name": "CONV_2D", "count": 1, "total_us": 0.3 * mean * prof["runs"],
                       "mean_us": 0.3 * mean, "share": 0.3}]
    prof["per_op_note"] = None
    (folder / "profile.json").write_text(json.dumps(prof))
    data = edgekit.report.collect(folder)
    html = edgekit.report.render_html(data)
    assert len(re.findall(r"<img\b", html)) == _expected_charts(data) == 9
    assert "Per-op latency" in html and "no per-op data" not in html
    table = dict((t, rows) for t, _, rows in edgekit.report.tables(data))
    assert [r[0] for r in table["Per-op latency on virtual (host time)"]] == ["FULLY_CONNECTED", "CONV_2D"]


def test_budget_says_whether_the_board_runtime_runs_the_model_correctly(artifact):
    """A per-channel dense int8 model fits a Nano 33 BLE, but its TFLM library computes it wrong."""
    nano = edgekit.report.collect(artifact, board="nano33ble").budget
    assert nano["flash_fits"] and nano["runs_correctly"] is False
    assert nano["runtime"] == "Chirale_TensorFLowLite 2.0.0" and "FULLY_CONNECTED" in nano["runtime_problems"][0]
    virtual = edgekit.report.collect(artifact, board="virtual").budget
    assert virtual["runs_correctly"] is True and virtual["runtime_problems"] == []


def test_an_emulated_estimate_counts_only_for_the_model_it_profiled(artifact, tmp_path):
    """A profile of another model on the same board (the demo's int8 model next to its LUT model) must
    not give model.tflite its time: the budget falls back to the MAC-based estimate, labelled so."""
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(artifact, folder)
    sha = edgekit.inspect(folder / "model.tflite", measure_arena_bytes=False).sha256
    doc = {"schema": "edgekit.profile/1", "board": {"id": "nano33ble"}, "model": {"sha256": "0" * 64},
           "timing": {"unit": "instructions", "source": "emulated"}, "runs": 5,
           "estimate": {"latency_us": 1234.0, "latency_us_low": 1000.0, "latency_us_high": 1500.0, "cpi": 2.21}}
    (folder / "profile_other.json").write_text(json.dumps(doc))
    est = edgekit.report.collect(folder, board="nano33ble").budget["estimate"]
    assert est["from"] == "model MACs" and "MAC-based" in est["label"]
    doc["model"]["sha256"] = sha                                  # the same model: its estimate is used
    (folder / "profile_other.json").write_text(json.dumps(doc))
    est = edgekit.report.collect(folder, board="nano33ble").budget["estimate"]
    assert est["from"] == "profile_other.json" and est["latency_us"] == 1234.0
