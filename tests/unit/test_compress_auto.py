"""--compress auto: LUT bits chosen per tensor, and only where the encoded tensor + table + DECODE op
are smaller than the plain int8 tensor; the model never grows."""
from __future__ import annotations

import numpy as np
import pytest

import tinymodels
from edgekit.conversion.compress import compress_lut, encoded_bytes
from edgekit.optimize.recipe import parse_compress_flag


def _snapped(model, values: int):
    """Every kernel snapped to ``values`` levels per output channel (a stand-in for clustering)."""
    for layer in model.layers:
        w = layer.get_weights()
        if not w:
            continue
        k = w[0]
        flat = k.reshape(-1, k.shape[-1])
        lo, hi = flat.min(axis=0), flat.max(axis=0)
        step = np.where(hi > lo, (hi - lo) / max(values - 1, 1), 1.0)
        w[0] = (lo + np.round((flat - lo) / step) * step).reshape(k.shape).astype(np.float32)
        layer.set_weights(w)
    return model


@pytest.fixture(scope="module")
def depthwise_clustered() -> bytes:
    """A wake-word-like block: a depthwise 3x3 over 64 channels (9 weights per channel, 8 levels each:
    a per-channel 8-entry table costs more than 3-bit indices save) and a 1x1 conv (where LUT pays)."""
    k = tinymodels._keras()
    model = k.Sequential([k.layers.Input((8, 8, 64), batch_size=1), k.layers.DepthwiseConv2D(3),
                          k.layers.Conv2D(64, 1), k.layers.GlobalAveragePooling2D(), k.layers.Dense(10)])
    return tinymodels.convert_keras(_snapped(model, 8), int8=True)


def test_auto_flag():
    spec = parse_compress_flag("auto")
    assert spec.auto and spec.index_bits == 7 and spec.min_tensor_bytes == 0


def test_auto_compresses_what_pays_and_picks_bits_per_tensor():
    plain, _ = tinymodels.lut_compressed_cnn()
    out, rows = compress_lut(plain, parse_compress_flag("auto"))
    assert len(out) < len(plain)
    dense = next(r for r in rows if r["op"] == "FULLY_CONNECTED")
    assert dense["method"] == "lut3" and dense["after_bytes"] < dense["bytes"]   # 8 levels: 3 bits, not 7
    assert encoded_bytes(out)[(dense["subgraph"], dense["index"])] == dense["after_bytes"]
    for r in rows:
        assert {"bytes", "after_bytes", "method"} <= set(r)


def test_auto_never_grows_a_model_whose_tables_do_not_pay(depthwise_clustered):
    fixed, fixed_rows = compress_lut(depthwise_clustered, parse_compress_flag("lut3"))
    depthwise = next(r for r in fixed_rows if r["op"] == "DEPTHWISE_CONV_2D")
    assert depthwise["method"] == "lut3" and depthwise["after_bytes"] > depthwise["bytes"]   # lut3 grows it
    out, rows = compress_lut(depthwise_clustered, parse_compress_flag("auto"))
    assert len(out) < len(fixed) and len(out) < len(depthwise_clustered)       # the 1x1 conv still pays
    conv = next(r for r in rows if r["op"] == "CONV_2D")
    assert conv["method"] == "lut3" and conv["after_bytes"] < conv["bytes"]
    auto_dw = next(r for r in rows if r["op"] == "DEPTHWISE_CONV_2D")
    assert auto_dw["method"] == "none" and "kept plain" in auto_dw["skipped"]
    assert auto_dw["after_bytes"] == auto_dw["bytes"]


def test_auto_on_unclustered_weights_leaves_the_model_as_it_is():
    plain = tinymodels.int8_cnn()
    out, rows = compress_lut(plain, parse_compress_flag("auto"))
    assert out == plain and all(r["method"] == "none" for r in rows)
