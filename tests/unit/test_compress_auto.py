"""--compress auto: LUT bits chosen per tensor, and only where the encoded tensor + table + DECODE op
are smaller than the plain int8 tensor; the model never grows."""
from __future__ import annotations

import numpy as np
import pytest

import tinymodels
from edgekit.conversion.compress import compress_lut, encoded_bytes
from edgekit.model import tflm_host
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


def _arena(model: bytes) -> int:
    return int(tflm_host.measure_arena(model)["arena_bytes"])


@pytest.fixture(scope="module")
def lut_cnn_arenas():
    plain, _ = tinymodels.lut_compressed_cnn()
    auto, _ = compress_lut(plain, parse_compress_flag("auto"))
    return plain, auto, _arena(plain), _arena(auto)


def test_auto_weighs_the_arena_decoded_weights_need(lut_cnn_arenas):
    plain, auto, plain_arena, auto_arena = lut_cnn_arenas
    assert auto_arena > plain_arena            # DECODE writes the weights into the arena
    budget = auto_arena - 16
    spec = parse_compress_flag("auto")
    spec.max_arena_bytes = budget
    out, rows = compress_lut(plain, spec)
    assert _arena(out) <= budget                # measured on host TFLM, not estimated
    assert len(out) > len(auto)                 # flash was given back for RAM
    dropped = [r for r in rows if r["method"] == "none" and "arena" in r.get("skipped", "")]
    assert dropped and all(f"{budget:,} B budget" in r["skipped"] for r in dropped)
    assert len(out) <= len(plain)


def test_a_budget_not_even_plain_int8_meets_keeps_the_model_plain(lut_cnn_arenas):
    plain, _, plain_arena, _ = lut_cnn_arenas
    out, rows = compress_lut(plain, parse_compress_flag("auto"), max_arena_bytes=plain_arena - 16)
    assert out == plain
    assert any("even plain int8 needs" in r.get("skipped", "") for r in rows)


def test_a_budget_the_compressed_model_meets_changes_nothing(lut_cnn_arenas):
    plain, auto, _, auto_arena = lut_cnn_arenas
    out, rows = compress_lut(plain, parse_compress_flag("auto"), max_arena_bytes=auto_arena)
    assert out == auto
    assert all(r.get("arena_budget_bytes") == auto_arena for r in rows if r["method"] != "none")


def test_the_arena_budget_of_a_board_is_the_largest_that_fits():
    from edgekit.boards import load_board
    from edgekit.fit import arena_budget, fit

    for board_id in ("nano33ble", "qemu-m4"):
        board = load_board(board_id)
        budget = arena_budget(board)
        assert budget > 0
        assert fit(board, model_bytes=1000, arena_min_bytes=budget, quantization="int8").ram_margin_bytes >= 0
        assert fit(board, model_bytes=1000, arena_min_bytes=budget + 16, quantization="int8").ram_margin_bytes < 0
    assert arena_budget(load_board("rpi4")) is None


def test_a_tensor_dropped_for_the_arena_comes_back_when_it_fits_again():
    """Greedy order drops the conv first (more decoded bytes per flash byte saved), then the dense layer;
    with the dense layer plain, the conv fits the budget again and is compressed after all. The arena is
    a stand-in here (decoded bytes of the compressed tensors over a base), so the test is exact."""
    k = tinymodels._keras()
    model = k.Sequential([k.layers.Input((8, 8, 16), batch_size=1), k.layers.Conv2D(32, 3), k.layers.Flatten(),
                          k.layers.Dense(10)])
    plain = tinymodels.convert_keras(_snapped(model, 8), int8=True)
    auto, rows = compress_lut(plain, parse_compress_flag("auto"))
    sizes = {(r["subgraph"], r["index"]): r["bytes"] for r in rows if r["method"] != "none"}
    assert len(sizes) == 2                                  # both weight tensors pay on flash
    conv = next(r for r in rows if r["op"] == "CONV_2D")
    base = 5000

    def arena(m: bytes) -> int:
        return base + sum(sizes[key] for key in encoded_bytes(m))

    budget = base + conv["bytes"] + 100                      # room for the conv's decoded weights only
    out, rows = compress_lut(plain, parse_compress_flag("auto"), max_arena_bytes=budget, measure_arena=arena)
    by_op = {r["op"]: r for r in rows}
    assert by_op["CONV_2D"]["method"] == "lut3" and "skipped" not in by_op["CONV_2D"]
    assert by_op["FULLY_CONNECTED"]["method"] == "none" and "arena" in by_op["FULLY_CONNECTED"]["skipped"]
    assert arena(out) <= budget and len(auto) < len(out) < len(plain)
