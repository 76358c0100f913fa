"""`edgekit sweep` on the tiny digits CNN: a 3x2 grid, its Pareto set, resume after an interrupt."""
from __future__ import annotations

import json

import pytest

from edgekit.errors import UsageError
from edgekit.sweep import SweepPoint, pareto_ids, parse_grid, parse_size, sweep
from test_cli_convert import assert_one_line_error, edgekit

pytestmark = pytest.mark.slow


def _brute_pareto(rows):
    """Independent check: a row is on the front iff no row is at least as good on both axes and better on one."""
    front = set()
    for r in rows:
        if not any(o["flash_bytes"] <= r["flash_bytes"] and o["accuracy"] >= r["accuracy"] and
                   (o["flash_bytes"], o["accuracy"]) != (r["flash_bytes"], r["accuracy"]) for o in rows):
            front.add(r["id"])
    return front


def test_sweep_3x2_grid_pareto_and_resume(tmp_path, digits_files, monkeypatch):
    from edgekit.conversion import pipeline

    calls = []
    real = pipeline.convert

    def counting(*a, **k):
        calls.append(1)
        if len(calls) == 4 and not getattr(counting, "disarmed", False):
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(pipeline, "convert", counting)
    out = tmp_path / "sweep"
    args = dict(prune=[0.0, 0.5, 0.7], cluster=[0, 8], epochs=1, board="virtual")   # host TFLM has DECODE
    with pytest.raises(KeyboardInterrupt):
        sweep(digits_files["model"], digits_files["train"], digits_files["test"], out, **args)
    finished = sorted(p.name for p in (out / "points").iterdir() if (p / "report.json").exists())
    assert len(finished) == 3
    counting.disarmed = True
    calls.clear()
    res = sweep(digits_files["model"], digits_files["train"], digits_files["test"], out, min_accuracy=0.5,
                max_flash=parse_size("1M"), **args)
    assert len(calls) == 3                                  # only the unfinished points ran
    assert sorted(p.id for p in res.points if p.reused) == finished
    assert len(res.points) == 6 and all(p.error is None for p in res.points)
    rows = json.loads((out / "sweep.json").read_text())["points"]
    assert {r["id"] for r in rows if r["pareto"]} == _brute_pareto(rows)
    # clustered points are LUT-compressed and smaller than their unclustered twins
    by = {r["id"]: r for r in rows}
    assert by["p0_c8"]["flash_bytes"] < by["p0_c0"]["flash_bytes"]
    assert "lut3" in by["p0_c8"]["recipe"]
    # the chosen point is the smallest that meets the constraints and fits
    meets = [r for r in rows if r["accuracy"] >= 0.5 and r["fits"]]
    assert res.best.id == min(meets, key=lambda r: (r["flash_bytes"], -r["accuracy"]))["id"]
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "sweep.csv").read_text().count("\n") == 7


def test_pareto_ids_unit():
    pts = [SweepPoint(id=i, prune=0, cluster=0, recipe="", flash_bytes=b, accuracy=a)
           for i, b, a in [("a", 10, 0.90), ("b", 20, 0.95), ("c", 20, 0.93), ("d", 5, 0.80), ("e", 30, 0.95)]]
    assert pareto_ids(pts) == {"a", "b", "d"}


@pytest.mark.parametrize("text,kind,name", [("0,x", float, "prune"), ("1.5", float, "prune"),
                                            ("0,1", int, "cluster"), ("", int, "cluster")])
def test_invalid_grid_values(text, kind, name):
    with pytest.raises(UsageError):
        parse_grid(text, kind, name)


def test_invalid_grid_from_cli(tmp_path, digits_files):
    r = edgekit("sweep", digits_files["model"], "--data", digits_files["train"], "--eval", digits_files["test"],
                "--prune", "0,1.2", "-o", tmp_path / "s")
    assert_one_line_error(r, 2, "--prune value 1.2")


def test_constraints_nobody_meets_say_so_with_the_closest(tmp_path, digits_files):
    r = edgekit("sweep", digits_files["model"], "--data", digits_files["train"], "--eval", digits_files["test"],
                "--prune", "0", "--cluster", "0,8", "--epochs", "1", "--max-flash", "1k", "--min-accuracy", "0.999",
                "-o", tmp_path / "s", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["best"] is None and doc["closest"] in {"p0_c0", "p0_c8"}
    r = edgekit("sweep", digits_files["model"], "--data", digits_files["train"], "--eval", digits_files["test"],
                "--prune", "0", "--cluster", "0,8", "--epochs", "1", "--max-flash", "1k", "-o", tmp_path / "s")
    assert "no point meets the constraints" in r.stdout and "closest" in r.stdout


def test_sweep_points_for_a_board_follow_its_tflm():
    """nano33ble's library has no DECODE and no per-channel dense: its points stay uncompressed, per tensor."""
    from edgekit.boards import load_board
    from edgekit.sweep import point_recipe, recipe_for_board

    plain = point_recipe(0.5, 8, qat=True, epochs=1, seed=0)
    assert plain.compress is not None and not plain.quantize.dense_per_tensor
    nano = recipe_for_board(plain, load_board("nano33ble"))
    assert nano.compress is None and nano.quantize.dense_per_tensor and nano.cluster.clusters == 8
    same = recipe_for_board(plain, load_board("virtual"))
    assert same.to_dict() == plain.to_dict()
