"""Channel (structured) pruning: the plan, the rebuilt model, the criterion, and what cannot be shrunk.

Real tf_keras models of a few hundred parameters, built here; no training (the pipeline test trains).
"""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import RecipeError, UnsupportedModelError, UsageError
from edgekit.optimize.recipe import ChannelPruneSpec, Recipe


def _keras():
    from edgekit import _tf

    k = _tf.keras()
    k.backend.clear_session()
    k.utils.set_random_seed(0)
    return k


def _chain_model():
    """Conv -> BN -> ReLU -> DepthwiseConv(x2) -> Conv -> MaxPool -> Flatten -> Dense -> Dense (output)."""
    k = _keras()
    inp = k.Input((8, 8, 1))
    x = k.layers.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(inp)
    x = k.layers.BatchNormalization(name="bn1")(x)
    x = k.layers.ReLU(name="r1")(x)
    x = k.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(x)
    x = k.layers.Conv2D(6, 1, activation="relu", name="c2")(x)
    x = k.layers.MaxPooling2D(name="pool")(x)
    x = k.layers.Flatten(name="flat")(x)
    x = k.layers.Dense(12, activation="relu", name="fc")(x)
    return k.Model(inp, k.layers.Dense(10, name="logits")(x))


DEAD = {"c1": [1, 4, 6, 7], "c2": [0, 2, 5], "fc": [3, 4, 5, 6, 7, 11]}


def _with_dead_channels():
    """The chain model with half the channels of c1, c2 and fc contributing exactly nothing downstream."""
    m = _chain_model()
    rng = np.random.default_rng(0)
    for name, idx in DEAD.items():
        layer = m.get_layer(name)
        w = layer.get_weights()
        w[0][..., idx] = 0
        if len(w) > 1:
            w[1][idx] = 0
        layer.set_weights(w)
    bn = m.get_layer("bn1")
    gamma, beta, mean, var = (rng.uniform(0.5, 2, 8), rng.uniform(-0.1, 0.1, 8), rng.uniform(-0.1, 0.1, 8),
                              rng.uniform(0.5, 2, 8))
    beta[DEAD["c1"]] = 0
    mean[DEAD["c1"]] = 0              # BN(0) = 0 for the dead channels
    bn.set_weights([gamma, beta, mean, var])
    dw = m.get_layer("dw")
    w = dw.get_weights()
    for c in DEAD["c1"]:
        w[1][2 * c:2 * c + 2] = 0     # depthwise channels 2c, 2c+1 follow c1's channel c
    dw.set_weights(w)
    return m


def test_rebuilt_model_drops_the_weakest_channels_and_computes_the_same_function():
    from edgekit.optimize import channels

    m = _with_dead_channels()
    keep, rows, unprunable = channels.plan(m, ChannelPruneSpec(fraction=0.5))
    for name, dead in DEAD.items():    # the L1 criterion finds exactly the dead channels
        assert keep[name].tolist() == sorted(set(range(m.get_layer(name).get_weights()[0].shape[-1])) - set(dead))
    assert {r["layer"]: (r["channels_before"], r["channels_after"]) for r in rows} == \
        {"c1": (8, 4), "c2": (6, 3), "fc": (12, 6)}
    assert unprunable == [{"layer": "logits", "type": "Dense", "reason": "its output is a model output"}]
    small = channels.rebuild(m, keep)
    # every layer after a pruned one followed it: BN vectors, depthwise channels x multiplier, the
    # Flatten rows of the next Dense (4x4 positions x 3 channels), the next layers' input rows
    assert small.get_layer("bn1").get_weights()[0].shape == (4,)
    assert small.get_layer("dw").get_weights()[0].shape == (3, 3, 4, 2)
    assert small.get_layer("c2").get_weights()[0].shape == (1, 1, 8, 3)
    assert small.get_layer("fc").get_weights()[0].shape == (48, 6)
    assert small.get_layer("logits").get_weights()[0].shape == (6, 10)
    x = np.random.default_rng(1).uniform(0, 1, (16, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(small.predict(x, verbose=0), m.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    assert small.count_params() < 0.45 * m.count_params()
    assert channels.model_macs(small) < 0.45 * channels.model_macs(m)


def test_batchnorm_is_folded_into_the_criterion():
    """A channel with large weights but a near-zero BatchNorm scale contributes little: it goes first."""
    from edgekit.optimize import channels

    m = _chain_model()
    c1 = m.get_layer("c1")
    w = c1.get_weights()
    w[0] = np.ones_like(w[0]) * 0.1
    w[0][..., 5] = 10.0               # the largest kernel ...
    c1.set_weights(w)
    bn = m.get_layer("bn1")
    gamma = np.ones(8)
    gamma[5] = 1e-4                   # ... scaled to nothing
    bn.set_weights([gamma, np.zeros(8), np.zeros(8), np.ones(8)])
    keep, _, _ = channels.plan(m, ChannelPruneSpec(fraction=0.125))
    assert 5 not in keep["c1"].tolist() and len(keep["c1"]) == 7


def test_global_scope_takes_more_from_the_layer_with_weak_channels():
    from edgekit.optimize import channels

    m = _chain_model()
    c2 = m.get_layer("c2")
    w = c2.get_weights()
    w[0][..., :4] *= 1e-3             # four of c2's six channels are tiny relative to its others
    c2.set_weights(w)
    per_layer, _, _ = channels.plan(m, ChannelPruneSpec(fraction=0.25, scope="layer"))
    glob, rows, _ = channels.plan(m, ChannelPruneSpec(fraction=0.25, scope="global"))
    assert len(per_layer["c2"]) == 5                       # floor(0.25 x 6) = 1 per layer
    assert sorted(glob["c2"].tolist()) == [4, 5]           # global: all four weak ones
    removed = sum(r["channels_before"] - r["channels_after"] for r in rows)
    assert removed == int(0.25 * (8 + 6 + 12))             # floor(fraction x all prunable channels)


def test_residual_joins_and_outputs_are_listed_and_a_model_with_nothing_to_shrink_is_refused():
    from edgekit.optimize import channels

    k = _keras()
    inp = k.Input((6, 6, 2))
    a = k.layers.Conv2D(4, 3, padding="same", name="a")(inp)
    b = k.layers.Conv2D(4, 3, padding="same", name="b")(a)
    x = k.layers.Add(name="join")([a, b])
    x = k.layers.GlobalAveragePooling2D(name="gap")(x)
    m = k.Model(inp, k.layers.Dense(3, name="head")(x))
    with pytest.raises(UnsupportedModelError) as e:
        channels.plan(m, ChannelPruneSpec(fraction=0.5))
    msg = e.value.message
    assert msg.startswith("no layer of this model can lose channels")
    for name in ("a (Conv2D)", "b (Conv2D)", "head (Dense)"):
        assert name in msg
    assert "join (Add)" in msg and "residual" in msg

    # the same block behind a prunable stem: the stem shrinks, the rest is listed
    inp = k.Input((6, 6, 2))
    s = k.layers.Conv2D(8, 3, padding="same", name="stem")(inp)
    a = k.layers.Conv2D(4, 1, name="a")(s)
    b = k.layers.Conv2D(4, 3, padding="same", name="b")(a)
    x = k.layers.GlobalAveragePooling2D(name="gap")(k.layers.Add(name="join")([a, b]))
    m = k.Model(inp, k.layers.Dense(3, name="head")(x))
    keep, rows, unprunable = channels.plan(m, ChannelPruneSpec(fraction=0.5))
    assert [r["layer"] for r in rows] == ["stem"] and len(keep["stem"]) == 4
    assert [u["layer"] for u in unprunable] == ["a", "b", "head"]
    small = channels.rebuild(m, keep)
    assert small.get_layer("a").get_weights()[0].shape == (1, 1, 4, 4)


def test_a_fraction_that_removes_nothing_says_so():
    from edgekit.optimize import channels

    with pytest.raises(UsageError, match="removes no channel"):
        channels.plan(_chain_model(), ChannelPruneSpec(fraction=0.05))


@pytest.mark.parametrize("raw,match", [
    ({"prune_channels": {"fraction": 1.0}}, "prune_channels.fraction"),
    ({"prune_channels": {"fraction": 0}}, "prune_channels.fraction"),
    ({"prune_channels": {"fraction": -0.5}}, "prune_channels.fraction"),
    ({"prune_channels": {"scope": "model"}}, "prune_channels.scope"),
    ({"prune_channels": {"criterion": "taylor"}}, "prune_channels.criterion"),
    ({"prune_channels": {"min_channels": 0}}, "prune_channels.min_channels"),
    ({"prune_channel": {}}, "did you mean"),
])
def test_bad_channel_recipes_name_the_key(raw, match):
    with pytest.raises(RecipeError) as e:
        Recipe.from_dict(raw)
    assert match in f"{e.value.message} {e.value.hint}"


def test_channel_flags_build_the_same_recipe_as_yaml():
    flags = Recipe.from_flags(prune_channels=0.4, cluster=4, qat=True, compress="lut2", epochs=3)
    text = {"prune_channels": {"fraction": 0.4, "epochs": 3}, "cluster": {"clusters": 4, "epochs": 3},
            "qat": {"epochs": 3}, "compress": {"index_bits": 2}}
    assert Recipe.from_dict(text).to_dict() == flags.to_dict()
    assert flags.trains and flags.describe() == "prune-channels 0.4 + cluster 4 + qat + int8 + lut2"


def test_conv1d_global_pooling_and_prelu_follow_and_an_unbuilt_model_is_refused():
    from edgekit.optimize import channels

    k = _keras()
    m = k.Sequential([k.layers.Input((20, 3)), k.layers.Conv1D(6, 3, name="c"), k.layers.PReLU(name="act"),
                      k.layers.GlobalAveragePooling1D(name="gap"), k.layers.Dense(4, name="out")])
    act = m.get_layer("act")
    act.set_weights([np.random.default_rng(2).uniform(0.1, 0.3, act.get_weights()[0].shape)])
    c = m.get_layer("c")
    w = c.get_weights()
    w[0][..., [0, 3, 4]] = 0
    w[1][[0, 3, 4]] = 0
    c.set_weights(w)
    keep, rows, _ = channels.plan(m, ChannelPruneSpec(fraction=0.5))
    assert keep["c"].tolist() == [1, 2, 5]
    small = channels.rebuild(m, keep)
    assert small.get_layer("act").get_weights()[0].shape == (18, 3)
    x = np.random.default_rng(3).normal(size=(4, 20, 3)).astype("float32")
    np.testing.assert_allclose(small.predict(x, verbose=0), m.predict(x, verbose=0), rtol=1e-5, atol=1e-5)

    with pytest.raises(UnsupportedModelError, match="Sequential or functional"):
        channels.plan(k.Sequential([k.layers.Dense(4)]), ChannelPruneSpec())
