"""The quantization doctor and what convert takes from it, on small models built here where int8 PTQ
really loses accuracy (real converter, LiteRT and host TFLM; the emulated Nano for 16x8 on its library).

- outlier MLP: one always-on hidden unit at 1500 stretches the hidden activation's int8 range, so plain
  int8 PTQ loses ~7 points; 16x8 activations recover them.
- dead-unit MLP: one never-active hidden unit with large weights; per-tensor dense weights lose ~60
  points, per-channel none.
Both compute exactly what the trained MLP computes in float.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import tinymodels
from edgekit.conversion import doctor, quantizer
from edgekit.errors import AccuracyBudgetError, DataError, RecipeError, UnsupportedModelError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("doctor")
    x, y = tinymodels.blobs(600, seed=1)
    np.savez(d / "train.npz", x=x, y=y)
    x, y = tinymodels.blobs(400, seed=2)
    np.savez(d / "test.npz", x=x, y=y)
    tinymodels.outlier_mlp_keras().save(d / "outlier.keras")
    tinymodels.dead_unit_mlp_keras().save(d / "dead.keras")
    return d


@pytest.fixture(scope="module")
def outlier_diagnosis(files):
    return doctor.diagnose(files / "outlier.keras", files / "train.npz", files / "test.npz")


def _accuracy(model: bytes, path) -> float:
    from edgekit.conversion import evaluate as ev

    data = np.load(path)
    out, _, _ = ev.tflm_run(model, data["x"])
    return float(np.mean(out.argmax(1) == data["y"]))


def test_the_doctor_finds_the_layer_and_recovers_what_plain_int8_loses(outlier_diagnosis, files):
    d = outlier_diagnosis
    float_acc = d.float_score["accuracy"]
    assert float_acc > 0.9
    assert d.baseline.setting.name == "int8, per-channel dense" and d.baseline.drop_points > 2.0
    # per layer: the hidden tensor looks fine as a whole (its outlier unit dominates the norm) but its
    # other channels are lost; quantized alone, either dense layer costs accuracy
    hidden, logits = d.layers
    assert (hidden["op"], hidden["layer"], logits["layer"]) == ("FULLY_CONNECTED", "hidden", "logits")
    assert hidden["rel_l2"] < 0.05 and hidden["worst_channel_rel_l2"] > 0.5
    assert logits["cosine"] < 0.99 and logits["rel_l2"] > 0.1 and logits["mse"] > 0
    assert min(r["alone_int8"]["drop_points"] for r in d.layers) > 2.0
    assert sorted(r["sensitivity_rank"] for r in d.layers) == [1, 2]
    # fixes in order of cost; int8 ones cannot reach the hidden units, 16x8 does
    names = [t.setting.name for t in d.trials]
    assert names == ["int8, per-tensor dense", "int8, per-tensor dense + bias correction", "int8, per-channel dense",
                     "int8, per-channel dense + bias correction", "16x8, per-tensor dense"]
    assert all(not t.meets for t in d.trials[:-1]) and d.chosen is d.trials[-1]
    assert d.chosen.drop_points <= 1.0
    assert d.baseline.drop_points - d.chosen.drop_points >= 0.8 * d.baseline.drop_points     # most of it back
    assert d.trials[0].model_bytes < d.trials[2].model_bytes           # per-tensor dense is smaller
    assert d.trials[0].arena_bytes < d.trials[2].arena_bytes           # and needs a smaller arena
    assert logits["chosen"]["rel_l2"] < 0.1 * logits["rel_l2"]
    # the chosen model is what was measured: int16 in and out, the same accuracy on host TFLM again
    from edgekit.model.graph import parse
    from edgekit.model.load import load_tflite

    sg = parse(load_tflite(d.model)).main
    assert sg.tensors[sg.inputs[0]].dtype == "int16"
    assert _accuracy(d.model, files / "test.npz") == pytest.approx(d.chosen.score["accuracy"])
    doc = d.to_dict()
    assert doc["schema"] == "edgekit.diagnose/1" and doc["chosen"]["setting"]["activations"] == "int16"
    json.dumps(doc)


def test_per_channel_is_chosen_where_per_tensor_dense_loses(files):
    d = doctor.diagnose(files / "dead.keras", files / "train.npz", files / "test.npz", max_drop=0.5,
                        fixes="dense,bias", layer_samples=50)
    pt, pt_bc = d.trials[0], d.trials[1]
    assert pt.setting.name == "int8, per-tensor dense"
    assert pt_bc.setting.name == "int8, per-tensor dense + bias correction"
    assert pt.drop_points > 20 and pt_bc.drop_points > 20     # a mean shift cannot bring back collapsed weights
    assert pt_bc.notes == ["bias correction on 2 layer(s)"] and not pt_bc.meets
    assert d.chosen.setting == doctor.Setting("int8", dense_per_tensor=False)
    assert d.chosen.drop_points <= 0.5 and len(d.trials) == 3


def test_bias_correction_moves_each_bias_by_its_layers_mean_error(files):
    """The first dense layer's bias moves by W_q E[x_q] - W E[x], computed here from the Keras weights and
    the model input as the int8 model quantizes it; after the correction the logits' mean error is gone."""
    from edgekit._tf import keras
    from edgekit.model.graph import parse
    from edgekit.model.load import load_tflite

    model = keras().models.load_model(files / "dead.keras")
    x = np.load(files / "train.npz")["x"][:200]
    graph = quantizer.float_graph(keras_model=model, calibration=x)

    def quantize(g):
        return quantizer.int8(quantizer.calibrate(g, x), io="float", dense_per_tensor=True)

    plain = quantize(graph)
    edited, rows = doctor.bias_correction(graph, quantize, x)
    assert [r["layer"] for r in rows] == ["hidden", "logits"] and rows[0]["max_abs_shift"] > 0
    q = parse(load_tflite(plain)).main
    fc = next(op for op in q.operators if op.op == "FULLY_CONNECTED")
    w_t, in_t = q.tensors[fc.inputs[1]], q.tensors[fc.inputs[0]]
    w_q = w_t.data.view(np.int8).reshape(w_t.shape).astype(np.float64) * w_t.scales[0]
    s, zp = in_t.scales[0], in_t.zero_points[0]
    x_q = (np.clip(np.round(x / s) + zp, -128, 127) - zp) * s
    w, b = (v.astype(np.float64) for v in model.layers[0].get_weights())
    expected = b - (w_q @ x_q.mean(axis=0) - w.T @ x.mean(axis=0))
    e = parse(load_tflite(edited)).main
    efc = next(op for op in e.operators if op.op == "FULLY_CONNECTED")
    assert np.allclose(e.tensors[efc.inputs[2]].data.view(np.float32), expected, rtol=1e-4, atol=1e-3)
    f = doctor._Litert(graph).run(x)
    mean_err = [np.abs((doctor._Litert(m).run(x) - f).mean(axis=0)).max() for m in (plain, quantize(edited))]
    assert mean_err[0] > 0.5 and mean_err[1] < 0.1 * mean_err[0]


def test_no_setting_within_max_drop_names_the_closest(files):
    d = doctor.diagnose(files / "outlier.keras", files / "train.npz", files / "test.npz", fixes="dense,bias",
                        layer_samples=50, raise_if_unmet=False)
    assert d.chosen is None and len(d.trials) == 4 and all(t.drop_points > 2 for t in d.trials)
    closest = min(d.trials, key=lambda t: t.drop_points)
    assert d.closest is closest
    with pytest.raises(AccuracyBudgetError) as exc:
        d.raise_if_unmet()
    e = exc.value
    assert e.exit_code == 6 and "no quantization setting keeps accuracy within 1 points of float" in e.message
    assert f"closest is {closest.setting.name} at {closest.drop_points:.2f} points" in e.message
    assert "--max-drop" in e.hint and e.closest == closest.to_dict()
    with pytest.raises(AccuracyBudgetError):            # raise_if_unmet is the default
        doctor.diagnose(files / "outlier.keras", files / "train.npz", files / "test.npz", fixes="dense",
                        eval_samples=100, layer_samples=20)


def test_16x8_asked_for_a_board_without_its_kernels_is_refused_before_any_evaluation(files, monkeypatch):
    k = tinymodels.int8_cnn_keras()
    calib = np.random.default_rng(0).uniform(-1, 1, (120, 8, 8, 1)).astype(np.float32)
    evaluated = []
    monkeypatch.setattr(doctor, "_tflm_trial", lambda *a, **kw: evaluated.append(a))
    with pytest.raises(UnsupportedModelError) as exc:
        doctor.diagnose(k, (calib, None), board="nano33ble", fixes="16x8")
    assert exc.value.exit_code == 5 and "MAX_POOL_2D" in exc.value.message and "nano33ble" in exc.value.message
    assert "drop 16x8 from --fixes" in exc.value.hint and evaluated == []
    # not asked for by name: skipped, saying why
    d = doctor.diagnose(k, (calib, None), board="nano33ble")
    assert any(s["setting"] == "16x8" and "MAX_POOL_2D" in s["reason"] for s in d.skipped)
    assert d.chosen is None and "no labelled --eval data" in d.notes[0]


def test_on_the_nano_16x8_comes_with_per_tensor_dense_weights(files):
    d = doctor.diagnose(files / "outlier.keras", files / "train.npz", files / "test.npz", board="nano33ble",
                        eval_samples=200, layer_samples=50)
    assert d.chosen.setting == doctor.Setting("int16", dense_per_tensor=True)
    assert all(t.setting.dense_per_tensor for t in d.trials)
    assert any("per-channel" in s["setting"] for s in d.skipped)


def test_convert_auto_fix_applies_the_doctors_setting(files):
    import edgekit

    rep = edgekit.convert(files / "outlier.keras", files / "train.npz", files / "test.npz", auto_fix=1.0).report
    q = next(s for s in rep["stages"] if s["stage"] == "quantize")
    assert q["settings"]["auto_fix"] == "16x8, per-tensor dense" and q["settings"]["activations"] == "int16"
    assert rep["io"]["inputs"][0]["dtype"] == "int16"
    ev = rep["evaluation"]
    assert ev["keras_float"]["accuracy"] - ev["tflm"]["accuracy"] <= 0.01
    assert q["doctor"]["chosen"]["drop_points"] <= 1.0 and len(q["doctor"]["trials"]) == 5
    with pytest.raises(DataError, match="--eval"):
        edgekit.convert(files / "outlier.keras", files / "train.npz", None, auto_fix=1.0)
    with pytest.raises(RecipeError, match="QAT"):
        edgekit.convert(files / "outlier.keras", files / "train.npz", files / "test.npz",
                        edgekit.Recipe.from_flags(qat=True), auto_fix=1.0)


def test_convert_keeps_per_tensor_dense_only_where_it_costs_at_most_a_tenth_of_a_point(files):
    import edgekit
    from edgekit.model.graph import parse
    from edgekit.model.load import load_tflite
    from edgekit.tflm.compat import per_channel_dense_ops

    def run(name, **flags):
        res = edgekit.convert(files / name, files / "train.npz", files / "test.npz", edgekit.Recipe.from_flags(**flags))
        q = next(s for s in res.report["stages"] if s["stage"] == "quantize")
        return res, q

    res, q = run("outlier.keras")                    # per-tensor costs nothing here: it is kept
    dc = q["dense_choice"]
    assert dc["chosen"] == "per-tensor" and dc["cost_points"] <= 0.1 and q["settings"]["dense_per_tensor"]
    assert dc["per_tensor"]["bytes"] < dc["per_channel"]["bytes"]
    assert per_channel_dense_ops(parse(load_tflite(res.model))) == []
    res, q = run("dead.keras")                       # per-tensor would cost ~60 points: per-channel stays
    assert q["dense_choice"]["chosen"] == "per-channel" and q["dense_choice"]["cost_points"] > 10
    assert per_channel_dense_ops(parse(load_tflite(res.model)))
    res, q = run("outlier.keras", dense_auto=False)  # --dense-per-channel: no choice made
    assert "dense_choice" not in q and per_channel_dense_ops(parse(load_tflite(res.model)))


def test_cli_diagnose_json_and_exit_codes(files, capsys):
    from edgekit.cli.main import main

    base = ["diagnose", str(files / "outlier.keras"), "--data", str(files / "train.npz"), "--eval",
            str(files / "test.npz"), "--samples", "200", "--layer-samples", "50"]

    def run(*extra) -> tuple[int, str, str]:
        try:
            main([*base, *extra])
            code = 0
        except SystemExit as e:
            code = e.code or 0
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, err = run("--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["schema"] == "edgekit.diagnose/1" and doc["chosen"]["setting"]["name"] == "16x8, per-tensor dense"
    assert doc["samples"] == {"calibration": 300, "eval": 200, "layers": 50}
    code, out, err = run("--fixes", "dense", "--json")
    assert code == 6
    doc = json.loads(out)                            # the diagnosis stays the one document on stdout
    assert doc["schema"] == "edgekit.diagnose/1" and doc["chosen"] is None and doc["closest"]
    assert "edgekit: error: no quantization setting keeps accuracy" in err and "Traceback" not in err
    code, out, err = run("--fixes", "dense,sparkle")
    assert code == 2 and "unknown fix sparkle" in err


@pytest.mark.qemu
def test_the_16x8_fix_runs_exactly_on_the_nanos_own_library(files, tmp_path):
    """The Nano's firmware, built with its pinned library (Chirale 2.0.0) for the emulated Cortex-M4,
    runs the doctor's 16x8 model with the outputs host TFLM computes: the board file's ops_16x8 holds."""
    from tflm_trees import require_tree

    import edgekit

    chirale = require_tree("arduino-library", "Chirale_TensorFLowLite")
    d = doctor.diagnose(files / "outlier.keras", files / "train.npz", files / "test.npz", board="nano33ble",
                        eval_samples=100, layer_samples=20)
    model = tmp_path / "m16.tflite"
    model.write_bytes(d.model)
    res = edgekit.validate(model, files / "test.npz", board="nano33ble", emulate=True, n=100,
                           options={"tflm_src": str(chirale.root)})
    assert res.passed and res.exact_fraction == 1.0 and res.max_lsb == 0
