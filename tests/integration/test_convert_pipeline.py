"""edgekit.convert on real TF-MOT, the real TFLite converter, LiteRT and host TFLM (tiny digits CNN)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import edgekit
from edgekit.errors import ConversionError, UnsupportedModelError
from edgekit.optimize.recipe import Recipe

pytestmark = pytest.mark.slow


def _litert_argmax(model: bytes, x: np.ndarray) -> np.ndarray:
    from edgekit.conversion.evaluate import litert_run

    out, _ = litert_run(model, x)
    return out.argmax(1)


def test_int8_ptq_artifact(digits_files, tmp_path):
    res = edgekit.convert(digits_files["model"], digits_files["train"], digits_files["test"],
                          edgekit.Recipe.from_flags(), tmp_path / "out")
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["model.tflite", "model_float.tflite", "report.json"]
    model = (out / "model.tflite").read_bytes()
    assert model[4:8] == b"TFL3" and model == res.model
    rep = json.loads((out / "report.json").read_text())
    assert rep["schema"] == "edgekit.convert/1"
    import hashlib

    assert rep["model_sha256"] == hashlib.sha256(model).hexdigest()
    assert rep["sizes"]["final_bytes"] == len(model)
    assert rep["sizes"]["float_bytes"] == len((out / "model_float.tflite").read_bytes())
    assert rep["sizes"]["final_breakdown"]["weight_bytes"] + rep["sizes"]["final_breakdown"]["structure_bytes"] \
        == len(model)
    # int8 in and out, with quantization parameters recorded
    assert rep["io"]["inputs"][0]["dtype"] == "int8" and rep["io"]["inputs"][0]["scale"]
    assert rep["io"]["outputs"][0]["dtype"] == "int8"
    ev = rep["evaluation"]
    # real accuracies of a model that learned something, and runtimes that agree
    assert ev["keras_float"]["accuracy"] == pytest.approx(digits_files["float_accuracy"], abs=1e-9)
    assert ev["litert"]["accuracy"] > 0.6
    assert abs(ev["litert"]["accuracy"] - ev["keras_float"]["accuracy"]) < 0.05
    assert ev["litert_vs_tflm"]["argmax_agreement"] == 1.0
    assert ev["tflm_arena_bytes"] > 0
    # accuracy recomputed here from the written file equals the report
    test = np.load(digits_files["test"])
    acc = float(np.mean(_litert_argmax(model, test["x"]) == test["y"]))
    assert acc == pytest.approx(ev["litert"]["accuracy"])
    assert {s["stage"] for s in rep["stages"]} >= {"load", "float_baseline", "quantize", "strip", "evaluate"}


def test_ptq_exports_the_model_once_and_converts_it_as_the_converter_would(digits_files, monkeypatch):
    """The float baseline and the int8 model come from one SavedModel export (the converter's
    from_keras_model would export twice); the result equals from_keras_model's after the strip pass."""
    from edgekit import _tf
    from edgekit.conversion import converter
    from edgekit.conversion.strip import strip_for_micro

    exports, sources = [], []
    real_export, real_convert = converter.export_for_converter, converter._convert
    monkeypatch.setattr(converter, "export_for_converter",
                        lambda *a, **k: exports.append(a) or real_export(*a, **k))
    monkeypatch.setattr(converter, "_convert",
                        lambda keras_model, sm_dir, *a: sources.append(sm_dir) or real_convert(keras_model, sm_dir, *a))
    res = edgekit.convert(digits_files["model"], digits_files["train"], None, Recipe.from_flags(), None)
    assert len(exports) == 1 and len(sources) == 2 and sources[0] == sources[1] is not None
    # the same model the stock converter path gives
    model = _tf.keras().models.load_model(digits_files["model"], compile=False)
    calib = np.load(digits_files["train"])["x"][:300].astype("float32")
    stock = real_convert(model, None, "int8", "int8", calib)        # TFLiteConverter.from_keras_model
    assert strip_for_micro(stock) == res.model


def test_a_model_the_export_refuses_is_converted_from_keras(digits_files, monkeypatch):
    from edgekit import _tf
    from edgekit.conversion import converter

    tf = _tf.tf()

    def refuse(*a, **k):
        raise ValueError("cannot save this model")

    monkeypatch.setattr(tf.saved_model, "save", refuse)
    res = edgekit.convert(digits_files["model"], digits_files["train"], None, Recipe.from_flags(), None)
    assert res.model[4:8] == b"TFL3" and res.float_model[4:8] == b"TFL3"
    assert converter.export_for_converter(_tf.keras().models.load_model(digits_files["model"]), "x") is None


def test_prune_cluster_qat_lut_chain_keeps_sparsity_and_clusters(digits_files, tmp_path):
    recipe = Recipe.from_flags(prune=0.5, cluster=8, qat=True, compress="lut3", epochs=3)
    res = edgekit.convert(digits_files["model"], digits_files["train"], digits_files["test"], recipe, None)
    rep = res.report
    after = {r["layer"]: r for r in rep["sparsity"]["keras_after"]}
    # the big dense layer keeps its pruning through clustering, and has <= 8 distinct values
    assert after["fc"]["sparsity"] > 0.4
    assert after["fc"]["unique_values"] <= 8
    stages = {s["stage"]: s for s in rep["stages"]}
    assert stages["qat"]["settings"]["scheme"].startswith("cluster-preserving")
    comp = stages["compress"]
    assert comp["bytes"] < comp["bytes_before"]
    assert any(t.get("index_bits") == 3 for t in comp["tensors"])
    # per tensor before / after / method, read back from the compressed model (its names are stripped)
    for t in comp["tensors"]:
        assert (t["after_bytes"] < t["bytes"]) == (t["method"] != "none")
    assert rep["needs_tflm"] is True
    # runs on host TFLM with an accuracy near the float model
    ev = rep["evaluation"]
    assert ev["litert"] is None
    assert ev["tflm"]["accuracy"] > digits_files["float_accuracy"] - 0.15
    # smaller than plain int8
    assert rep["sizes"]["final_bytes"] < 0.5 * rep["sizes"]["float_bytes"]


def test_plain_qat_after_prune_would_destroy_sparsity_preserving_qat_keeps_it(digits_files):
    recipe = Recipe.from_flags(prune=0.7, qat=True, epochs=2, compress=None)
    rep = edgekit.convert(digits_files["model"], digits_files["train"], None, recipe).report
    fc = [r for r in rep["sparsity"]["tflite"] if r["params"] == 16 * 64][0]
    assert fc["sparsity"] > 0.6   # the int8 weights in the .tflite are still 70 %-ish zero
    assert [s for s in rep["stages"] if s["stage"] == "qat"][0]["settings"]["scheme"] == "prune-preserving QAT"


@pytest.mark.parametrize("mode,dtype", [("float16", "float32"), ("dynamic", "float32"), ("none", "float32")])
def test_other_quantization_modes(digits_files, mode, dtype):
    rep = edgekit.convert(digits_files["model"], digits_files["train"], digits_files["test"],
                          Recipe.from_flags(quantize=mode)).report
    assert rep["io"]["inputs"][0]["dtype"] == dtype
    assert rep["evaluation"]["litert"]["accuracy"] == pytest.approx(
        rep["evaluation"]["keras_float"]["accuracy"], abs=0.02)
    if mode == "none":   # TFLM runs float32 models and agrees with LiteRT
        assert rep["evaluation"]["litert_vs_tflm"]["argmax_agreement"] == 1.0
    else:
        assert rep["evaluation"]["tflm"] is None and "TFLM" in rep["evaluation"]["tflm_note"]
    if mode == "float16":
        assert rep["sizes"]["final_bytes"] < 0.7 * rep["sizes"]["float_bytes"]


def test_float_io_keeps_float_input(digits_files):
    rep = edgekit.convert(digits_files["model"], digits_files["train"], None,
                          Recipe.from_flags(float_io=True)).report
    assert rep["io"]["inputs"][0]["dtype"] == "float32"
    assert rep["io"]["outputs"][0]["dtype"] == "float32"


def test_lut_without_clustering_is_a_clear_error(digits_files):
    with pytest.raises(ConversionError, match="cluster"):
        edgekit.convert(digits_files["model"], digits_files["train"], None, Recipe.from_flags(compress="lut2"))


def test_compress_auto_without_clustering_leaves_a_plain_model_that_litert_runs(digits_files):
    """auto compresses nothing when no table pays: no error, no DECODE, LiteRT evaluates the model."""
    rep = edgekit.convert(digits_files["model"], digits_files["train"], digits_files["test"],
                          Recipe.from_flags(compress="auto")).report
    comp = next(s for s in rep["stages"] if s["stage"] == "compress")
    assert all(t["method"] == "none" for t in comp["tensors"]) and comp["bytes"] == comp["bytes_before"]
    assert rep["needs_tflm"] is False and rep["evaluation"]["litert"] is not None
    assert rep["recipe_summary"].endswith("lut-auto")


def test_conversion_is_deterministic(digits_files, tmp_path):
    recipe = Recipe.from_flags(prune=0.5, epochs=1)
    a = edgekit.convert(digits_files["model"], digits_files["train"], None, recipe, tmp_path / "a")
    b = edgekit.convert(digits_files["model"], digits_files["train"], None, recipe, tmp_path / "b")
    assert a.model == b.model
    # rewriting into the same folder leaves unchanged files untouched
    mtime = (tmp_path / "a" / "model.tflite").stat().st_mtime_ns
    c = edgekit.convert(digits_files["model"], digits_files["train"], None, recipe, tmp_path / "a")
    assert c.written == []
    assert (tmp_path / "a" / "model.tflite").stat().st_mtime_ns == mtime


def test_interrupted_run_leaves_earlier_outputs_intact(digits_files, tmp_path, monkeypatch):
    out = tmp_path / "out"
    edgekit.convert(digits_files["model"], digits_files["train"], None, Recipe.from_flags(), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    import os

    from edgekit import fileio
    from edgekit.optimize import tfmot_adapter

    def boom(*a, **k):
        raise KeyboardInterrupt

    real_replace = os.replace
    calls = []

    def replace_then_die(src, dst):       # dies after the first file of the artifact was staged
        calls.append(dst)
        raise KeyboardInterrupt

    monkeypatch.setattr(fileio.os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        edgekit.convert(digits_files["model"], digits_files["train"], None, Recipe.from_flags(quantize="float16"),
                        out)
    assert calls                                    # it got as far as writing
    monkeypatch.setattr(fileio.os, "replace", real_replace)
    monkeypatch.setattr(tfmot_adapter, "_fit", boom)    # dies half-way through fine-tuning
    with pytest.raises(KeyboardInterrupt):
        edgekit.convert(digits_files["model"], digits_files["train"], None, Recipe.from_flags(prune=0.5), out)
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after == before                          # every file as it was, no temporary files left
    rep = json.loads(after["report.json"])
    import hashlib

    assert hashlib.sha256(after["model.tflite"]).hexdigest() == rep["model_sha256"]


def test_keras3_models_are_rebuilt_for_tfmot(tmp_path, digits_files):
    import keras as keras3

    inp = keras3.Input((8, 8, 1))
    a = keras3.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    b = keras3.layers.Conv2D(4, 3, padding="same")(inp)
    c = keras3.layers.Add()([a, b])
    c = keras3.layers.BatchNormalization()(c)
    d = keras3.layers.Flatten()(c)
    out = keras3.layers.Dense(10)(d)
    k3 = keras3.Model(inp, out)
    k3.save(tmp_path / "k3.keras")
    lm = edgekit.load_model(tmp_path / "k3.keras")
    assert lm.origin == "keras3-rebuilt"
    x = np.random.default_rng(1).random((5, 8, 8, 1), dtype=np.float32)
    np.testing.assert_allclose(lm.keras.predict(x, verbose=0), k3.predict(x, verbose=0), rtol=1e-4, atol=1e-5)
    rep = edgekit.convert(tmp_path / "k3.keras", digits_files["train"], None,
                          Recipe.from_flags(prune=0.5, epochs=1)).report
    assert rep["origin"] == "keras3-rebuilt"
    assert any(r["sparsity"] > 0.4 for r in rep["sparsity"]["keras_after"])


def test_keras3_model_that_cannot_be_rebuilt_gets_ptq_and_a_clear_error_for_training(tmp_path, digits_files):
    import keras as keras3

    k3 = keras3.Sequential([keras3.Input((8, 8, 1)), keras3.layers.Flatten(), keras3.layers.Dense(16),
                            keras3.layers.RMSNormalization(name="rms"), keras3.layers.Dense(10)])
    k3.save(tmp_path / "rms.keras")
    rep = edgekit.convert(tmp_path / "rms.keras", digits_files["train"], None, Recipe.from_flags()).report
    assert rep["origin"] == "keras3-savedmodel"
    assert rep["io"]["inputs"][0]["dtype"] == "int8"
    with pytest.raises(UnsupportedModelError, match="rms"):
        edgekit.convert(tmp_path / "rms.keras", digits_files["train"], None, Recipe.from_flags(prune=0.5))


def test_lambda_layers_refused_unless_allowed(tmp_path, digits_files):
    from edgekit import _tf

    keras = _tf.keras()
    m = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Lambda(lambda t: t * 2.0, name="double"),
                          keras.layers.Flatten(), keras.layers.Dense(10)])
    m.save(tmp_path / "lam.h5")
    with pytest.raises(UnsupportedModelError, match="double"):
        edgekit.load_model(tmp_path / "lam.h5")
    lm = edgekit.load_model(tmp_path / "lam.h5", allow_lambda=True)
    assert lm.keras is not None


def test_unprunable_layers_are_listed_not_fatal(tmp_path, digits_files):
    from edgekit import _tf

    keras = _tf.keras()
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="conv"),
                          keras.layers.PReLU(name="prelu"), keras.layers.LayerNormalization(name="ln"),
                          keras.layers.Flatten(),
                          keras.layers.Dense(10, name="out")])
    m.save(tmp_path / "ln.keras")
    warnings = []
    rep = edgekit.convert(tmp_path / "ln.keras", digits_files["train"], None,
                          Recipe.from_flags(prune=0.5, epochs=1), warn=warnings.append).report
    prune = [s for s in rep["stages"] if s["stage"] == "prune"][0]
    assert set(prune["wrapped_layers"]) == {"conv", "out"}
    assert [s["layer"] for s in prune["skipped_layers"]] == ["prelu"]
    assert any("prelu" in w for w in warnings)
    after = {r["layer"]: r for r in rep["sparsity"]["keras_after"]}
    assert after["conv"]["sparsity"] > 0.4 and after["out"]["sparsity"] > 0.4


def test_savedmodel_folders(tmp_path, digits_files):
    from edgekit import _tf

    keras = _tf.keras()
    tf = _tf.tf()
    m = keras.models.load_model(digits_files["model"], compile=False)
    m.save(tmp_path / "keras_sm", save_format="tf")          # Keras SavedModel: loads as tf_keras
    rep = edgekit.convert(tmp_path / "keras_sm", digits_files["train"], digits_files["test"],
                          Recipe.from_flags(prune=0.5, epochs=1)).report
    assert rep["origin"] == "tf_keras" and rep["evaluation"]["tflm"]["accuracy"] > 0.5

    class Plain(tf.Module):                                    # plain SavedModel: PTQ only
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(np.random.default_rng(0).standard_normal((64, 10)).astype("float32"))

        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32)])
        def __call__(self, x):
            return tf.matmul(tf.reshape(x, [-1, 64]), self.w)

    plain = Plain()
    tf.saved_model.save(plain, str(tmp_path / "plain_sm"), signatures=plain.__call__)
    rep = edgekit.convert(tmp_path / "plain_sm", digits_files["train"], digits_files["test"],
                          Recipe.from_flags()).report
    assert rep["origin"] == "savedmodel" and rep["io"]["inputs"][0]["dtype"] == "int8"
    assert "keras_float" not in rep["evaluation"] and "litert_float" in rep["evaluation"]
    with pytest.raises(UnsupportedModelError, match="SavedModel"):
        edgekit.convert(tmp_path / "plain_sm", digits_files["train"], None, Recipe.from_flags(cluster=4))


def test_regression_models_get_mae_and_rmse(tmp_path, digits_files):
    from edgekit import _tf

    keras = _tf.keras()
    keras.utils.set_random_seed(0)
    d = np.load(digits_files["train"])
    t = np.load(digits_files["test"])
    m = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Flatten(),
                          keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    m.compile("adam", "mse")
    m.fit(d["x"], d["y"].astype("float32"), epochs=20, verbose=0)
    m.save(tmp_path / "reg.keras")
    np.savez(tmp_path / "reg_test.npz", x=t["x"], y=t["y"].astype("float32") + 0.25)   # float targets
    rep = edgekit.convert(tmp_path / "reg.keras", digits_files["train"], tmp_path / "reg_test.npz",
                          Recipe.from_flags()).report
    ev = rep["evaluation"]
    assert ev["task"] == "regression"
    assert set(ev["litert"]) == {"mae", "rmse"} and ev["delta_vs_float"]["metric"] == "mae"
    pred = m.predict(t["x"], verbose=0).ravel()
    assert ev["keras_float"]["mae"] == pytest.approx(float(np.mean(np.abs(pred - (t["y"] + 0.25)))), rel=1e-5)
    assert abs(ev["litert"]["mae"] - ev["keras_float"]["mae"]) < 0.3


def test_channel_pruning_shrinks_the_device_model_and_unstructured_pruning_is_measured_as_it_is(digits_files):
    """prune-channels 0.5 then prune 0.5: the converted model has half the filters and units (MACs, bytes,
    arena all smaller, each counted from the .tflite); the zeros alone buy nothing on TFLM, some gzip bytes,
    and a sparse-format file TFLM cannot run."""
    from edgekit.model.graph import parse
    from edgekit.model.load import load_tflite
    from edgekit.model.tflm_host import model_macs

    recipe = Recipe.from_flags(prune_channels=0.5, prune=0.5, epochs=3)
    res = edgekit.convert(digits_files["model"], digits_files["train"], digits_files["test"], recipe, None)
    rep = res.report
    assert [s["stage"] for s in rep["stages"] if s["stage"].startswith("prune")] == ["prune_channels", "prune"]
    cp = rep["channel_pruning"]
    assert {r["layer"]: (r["channels_before"], r["channels_after"]) for r in cp["layers"]} == \
        {"conv": (4, 2), "fc": (16, 8)}
    assert [u["layer"] for u in cp["unprunable"]] == ["logits"]
    # the device model itself: 2 conv filters, 8 dense units over 4x4x2 inputs
    sg = parse(load_tflite(res.model)).main
    weight_shapes = [list(sg.tensors[op.inputs[1]].shape) for op in sg.operators
                     if op.op in ("CONV_2D", "FULLY_CONNECTED")]
    assert weight_shapes == [[2, 3, 3, 1], [8, 32], [10, 8]]
    before, after = cp["before"], cp["after"]
    assert after["bytes"] == len(res.model) and after["macs"] == model_macs(res.model)
    # MACs counted from the .tflite equal those counted from the Keras layers, before and after
    assert before["macs"] == cp["keras"]["macs_before"] and after["macs"] == cp["keras"]["macs_after"]
    assert after["macs"] < 0.55 * before["macs"] and after["params"] < 0.55 * before["params"]
    assert after["bytes"] < before["bytes"]
    assert after["arena_bytes"] == rep["evaluation"]["tflm_arena_bytes"] < before["arena_bytes"]
    # fine-tuned after the rebuild (half of a 4-filter CNN is little: accuracy only well above chance)
    loss = next(s for s in rep["stages"] if s["stage"] == "prune_channels")["history"]["loss"]
    assert len(loss) == 3 and loss[-1] < loss[0]
    assert rep["evaluation"]["tflm"]["accuracy"] > 0.5

    up = rep["unstructured_pruning"]
    assert up["int8_weight_sparsity"] > 0.45
    tflm, gz, sparse = up["runtimes"]
    assert up["pruned"]["bytes"] == len(res.model)      # prune was the last stage: the final model
    assert tflm["bytes_before"] == tflm["bytes_after"] and tflm["macs_before"] == tflm["macs_after"]
    assert tflm["arena_bytes_before"] == tflm["arena_bytes_after"] and tflm["buys"].startswith("nothing")
    assert gz["bytes_after"] < gz["bytes_before"]
    assert sparse["tflm_missing_ops"] == ["DENSIFY"] and sparse["densify_ops"] >= 1
    assert sparse["litert_builtin_runs"] is True
