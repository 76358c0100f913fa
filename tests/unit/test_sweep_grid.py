"""The sweep's grid and choices without running a model: point ids for the newer axes (prune-channels,
compress, granularity), combinations that make one recipe merged, the Pareto front over accuracy,
flash and estimated latency against a brute-force check, the closest point under every constraint,
and the prefixes of channel-pruned points shared through the executor seam."""
from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from edgekit.boards import load_board
from edgekit.errors import UsageError
from edgekit.executors import PointJob, shared_prefixes
from edgekit.sweep import (COMPRESS_CHOICES, GRANULARITIES, SweepPoint, _closest, parse_choices, parse_grid,
                           pareto_ids, pareto_objectives, plan_grid, point_recipe)


def test_default_axis_values_keep_the_ids_and_recipes_of_older_sweeps():
    """p<prune>_c<cluster> with the recipe point_recipe made before the newer axes: old folders resume."""
    grid = plan_grid(prune=[0.0, 0.5], cluster=[0, 16])
    assert [p.id for p in grid.points] == ["p0_c0", "p0_c16", "p0.5_c0", "p0.5_c16"]
    assert grid.merged == []
    r = grid.recipes["p0.5_c16"]
    assert r.compress.index_bits == 4 and not r.compress.auto and r.qat is not None
    assert not r.quantize.dense_per_tensor and r.quantize.dense_auto
    assert grid.recipes["p0_c0"].qat is None and grid.recipes["p0_c0"].compress is None
    nano = plan_grid(prune=[0.5], cluster=[8], board=load_board("nano33ble"))
    assert [p.id for p in nano.points] == ["p0.5_c8"]
    assert nano.points[0].compress == "none" and nano.points[0].granularity == "per-tensor"


def test_new_axes_get_short_suffixes_and_duplicates_merge():
    grid = plan_grid(prune=[0.0], cluster=[0, 16], prune_channels=[0.0, 0.25],
                     compress=["match", "none", "auto", "lut4", "lut2"], granularity=["auto", "per-tensor"])
    by = {p.id: p for p in grid.points}
    # unclustered: lutN and none are what match gives (no compression); auto is its own point
    assert {"p0_c0", "p0_c0_lutauto", "p0_c0_dpt", "p0_c0_lutauto_dpt"} <= set(by)
    assert not any(i.startswith("p0_c0_lut4") or i.startswith("p0_c0_nolut") or i.startswith("p0_c0_lut2")
                   for i in by)
    # clustered 16: match is lut4, so lut4 merges into it; none and lut2 are points of their own
    assert {"p0_c16", "p0_c16_nolut", "p0_c16_lut2", "p0_c16_lutauto"} <= set(by) and "p0_c16_lut4" not in by
    assert by["p0_c16"].compress == "lut4" and by["p0_c16_lut2"].compress == "lut2"
    assert by["p0_c16_nolut"].compress == "none" and by["p0_c0_lutauto"].compress == "auto"
    assert grid.recipes["p0_c16_lut2"].compress.index_bits == 2
    # channel pruning: _ch<f>, the fraction in the recipe, and QAT after it; QAT quantizes dense weights
    # per tensor whatever the converter is told, so granularity applies to the untrained points only
    ch = by["p0_c16_ch0.25"]
    assert ch.prune_channels == 0.25 and ch.granularity == "auto"
    rc = grid.recipes[ch.id]
    assert rc.prune_channels.fraction == 0.25 and rc.qat is not None and not rc.quantize.dense_per_tensor
    assert not any(i.endswith("_dpt") for i in by if i != "p0_c0_dpt" and i != "p0_c0_lutauto_dpt")
    assert len(grid.points) + len(grid.merged) == 2 * 2 * 5 * 2
    same = {m["same_as"] for m in grid.merged}
    assert same <= set(by)
    assert "lutN compresses clustered points only" in grid.reasons and "QAT quantizes dense weights" in grid.reasons
    # without QAT every point has the axis
    no_qat = plan_grid(cluster=[16], prune_channels=[0.25], granularity=["auto", "per-tensor"], qat=False)
    assert [p.id for p in no_qat.points] == ["p0_c16_ch0.25", "p0_c16_ch0.25_dpt"]
    assert no_qat.recipes["p0_c16_ch0.25_dpt"].quantize.dense_per_tensor
    # every id names one recipe, every recipe one id
    dicts = [repr(r.to_dict()) for r in grid.recipes.values()]
    assert len(set(dicts)) == len(dicts)


def test_granularity_values_make_the_recipes_convert_knows():
    auto, pch, pt = (point_recipe(0, 0, qat=True, epochs=1, seed=0, granularity=g) for g in GRANULARITIES)
    assert (auto.quantize.dense_per_tensor, auto.quantize.dense_auto) == (False, True)
    assert (pch.quantize.dense_per_tensor, pch.quantize.dense_auto) == (False, False)
    assert pt.quantize.dense_per_tensor
    grid = plan_grid(granularity=["per-channel", "per-tensor"])
    assert [(p.id, p.granularity) for p in grid.points] == [("p0_c0_dpc", "per-channel"), ("p0_c0_dpt", "per-tensor")]


def test_a_board_without_decode_or_per_channel_dense_merges_those_axes_and_says_why():
    grid = plan_grid(prune=[0.0], cluster=[0, 8], prune_channels=[0.0, 0.5], compress=["match", "auto", "lut3"],
                     granularity=["auto", "per-channel", "per-tensor"], board=load_board("nano33ble"))
    assert [p.id for p in grid.points] == ["p0_c0", "p0_c8", "p0_c0_ch0.5", "p0_c8_ch0.5"]
    assert all(p.compress == "none" and p.granularity == "per-tensor" for p in grid.points)
    assert len(grid.merged) == 2 * 2 * 3 * 3 - 4
    assert "no DECODE kernel" in grid.reasons and "no per-channel FULLY_CONNECTED" in grid.reasons


def test_a_tree_with_decode_keeps_compression_on_a_board():
    """--tflm-src: the tree's facts decide (a tflite-micro checkout has DECODE and per-channel dense)."""
    from edgekit.tflm.compat import RuntimeFacts

    facts = RuntimeFacts(label="tflite-micro", source="test", ops=None, decode=True, per_channel_fully_connected=True)
    grid = plan_grid(cluster=[8], compress=["match", "none"], granularity=["auto", "per-tensor"],
                     board=load_board("nano33ble"), facts=facts, qat=False)
    assert [p.id for p in grid.points] == ["p0_c8", "p0_c8_dpt", "p0_c8_nolut", "p0_c8_nolut_dpt"]
    assert grid.points[0].compress == "lut3"


@pytest.mark.parametrize("text,name,allowed,match", [
    ("lut8", "compress", COMPRESS_CHOICES, "'lut8' is not one of"),
    ("match,,zip", "compress", COMPRESS_CHOICES, "'zip' is not one of"),
    ("", "granularity", GRANULARITIES, "needs at least one value"),
    ("per-layer", "granularity", GRANULARITIES, "'per-layer' is not one of"),
])
def test_bad_choice_values(text, name, allowed, match):
    with pytest.raises(UsageError, match=match):
        parse_choices(text, name, allowed)


@pytest.mark.parametrize("text,match", [("0,1", "must be 0 (no channel pruning) or in (0, 1)"),
                                        ("0,-0.5", "must be 0"), ("nan", "not a finite number"),
                                        ("a", "is not a number")])
def test_bad_prune_channels_values(text, match):
    with pytest.raises(UsageError, match=re.escape(match)):
        parse_grid(text, float, "prune-channels")


def test_choices_keep_the_default_first():
    assert parse_choices("lut4, MATCH,none,lut4", "compress", COMPRESS_CHOICES) == ["match", "none", "lut4"]
    assert parse_choices("per-tensor,auto", "granularity", GRANULARITIES) == ["auto", "per-tensor"]


def _pt(i, acc, flash, lat=None, err=None):
    return SweepPoint(id=i, accuracy=acc, flash_bytes=flash, latency_estimate_us=lat, error=err)


def _brute(points, keys):
    """Independent: a point is on the front iff no point is >= on every objective and > on one."""
    def better_eq(q, p):
        return all((getattr(q, k) >= getattr(p, k)) if k == "accuracy" else (getattr(q, k) <= getattr(p, k))
                   for k in keys)

    ok = [p for p in points if p.error is None and p.accuracy is not None]
    return {p.id for p in ok if not any(q is not p and better_eq(q, p) and
                                        any(getattr(q, k) != getattr(p, k) for k in keys) for q in ok)}


def test_three_objective_front_by_hand():
    pts = [_pt("a", 0.90, 10, 500), _pt("b", 0.95, 20, 900), _pt("c", 0.95, 20, 400),
           _pt("d", 0.80, 5, 800), _pt("e", 0.95, 30, 300), _pt("f", 0.90, 10, 600),
           _pt("g", 0.99, 99, 999, err="boom")]
    assert pareto_objectives(pts) == ["accuracy", "flash_bytes", "latency_estimate_us"]
    # b loses to c (same accuracy and flash, slower); f loses to a; e is slowest-flash but fastest
    assert pareto_ids(pts) == {"a", "c", "d", "e"}
    # over two objectives e (30 bytes, 0.95) loses to c (20 bytes, 0.95); equal points beat neither
    assert pareto_ids(pts, ["accuracy", "flash_bytes"]) == {"a", "f", "b", "c", "d"}


def test_three_objective_front_matches_brute_force():
    rng = random.Random(7)
    for _ in range(50):
        pts = [_pt(f"x{k}", rng.choice([0.8, 0.85, 0.9, 0.95]), rng.choice([10, 20, 30, 40]),
                   rng.choice([100.0, 200.0, 300.0])) for k in range(rng.randint(1, 12))]
        keys = ["accuracy", "flash_bytes", "latency_estimate_us"]
        assert pareto_ids(pts) == _brute(pts, keys)


def test_front_falls_back_to_two_objectives_when_a_latency_is_missing():
    pts = [_pt("a", 0.90, 10, 500), _pt("b", 0.90, 20, 100), _pt("c", 0.95, 30)]
    assert pareto_objectives(pts) == ["accuracy", "flash_bytes"]
    assert pareto_ids(pts) == {"a", "c"}          # b is bigger at the same accuracy; its latency is not counted


def test_closest_counts_the_ram_and_latency_shortfalls():
    a = SweepPoint(id="a", accuracy=0.9, flash_bytes=100, ram_bytes=1000, latency_estimate_us=5000.0)
    b = SweepPoint(id="b", accuracy=0.9, flash_bytes=100, ram_bytes=3000, latency_estimate_us=1000.0)
    assert _closest([a, b], None, None, max_ram=1000, max_latency_us=1000).id == "b"   # RAM 2x over vs latency 4x
    assert _closest([a, b], None, None, max_ram=1000, max_latency_us=3000).id == "a"   # latency 0.67x vs RAM 2x
    c = SweepPoint(id="c", accuracy=0.9, flash_bytes=100, ram_bytes=None, latency_estimate_us=1000.0)
    assert _closest([c, b], None, None, max_ram=2500).id == "b"        # no RAM figure counts as missing it


def _jobs(grid):
    return [PointJob(pid, r, Path("/x") / pid) for pid, r in grid.recipes.items()]


def test_channel_pruned_points_share_their_prefix_and_name_it():
    grid = plan_grid(prune=[0.0, 0.5], cluster=[0, 8], prune_channels=[0.5])
    tasks, needs = shared_prefixes(_jobs(grid), "m.keras")
    labels = [t.label() for t in tasks]
    # prune-channels 0.5 feeds all four points; + prune 0.5 feeds two; + cluster 8 without prune is one point
    assert labels == ["prune-channels 0.5", "prune-channels 0.5 + prune 0.5"]
    assert tasks[1].needs == [tasks[0].key]
    assert needs["p0_c0_ch0.5"] == needs["p0_c8_ch0.5"] == [tasks[0].key]
    assert needs["p0.5_c8_ch0.5"] == [tasks[0].key, tasks[1].key]


def test_compress_and_granularity_variants_share_every_training_stage():
    grid = plan_grid(cluster=[8], prune_channels=[0.25], compress=["match", "none"], granularity=["auto", "per-tensor"],
                     qat=False)
    tasks, needs = shared_prefixes(_jobs(grid), "m.keras")
    assert [t.label() for t in tasks] == ["prune-channels 0.25", "prune-channels 0.25 + cluster 8"]
    assert all(n == [tasks[0].key, tasks[1].key] for n in needs.values()) and len(needs) == 4
