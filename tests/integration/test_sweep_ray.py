"""`edgekit sweep` on Ray: a local two-CPU Ray for the session, the tiny digits CNN.

The rows a Ray sweep gives equal the local executor's rows for the same seed (sizes, accuracy, arena,
fit, Pareto), the shared prune prefix is computed once and travels through the object store, an
interrupted Ray sweep keeps its finished points and a rerun (here: the CLI joining the cluster by
address) runs only the rest; the CLI joins through a Ray Client server too (ray://). Bad input: an
address that does not answer, Ray not installed.
"""
from __future__ import annotations

import json
import socket
import sys
import time
from dataclasses import asdict

import pytest

from edgekit.sweep import sweep
from test_cli_convert import assert_one_line_error, edgekit

GRID = dict(prune=[0.5], cluster=[0, 8], epochs=1, board="virtual")   # two points sharing prune 0.5


def _row(point: dict) -> dict:
    return {k: v for k, v in point.items() if k != "reused"}


@pytest.mark.slow
def test_ray_rows_equal_local_rows_interrupt_and_resume(tmp_path, digits_files, ray_cluster):
    files = (digits_files["model"], digits_files["train"], digits_files["test"])
    local = sweep(*files, tmp_path / "local", **GRID)
    assert all(p.error is None for p in local.points)

    # Ray, interrupted (Ctrl-C) once the first point is in: it stays, the other is cancelled
    seen = []

    def progress(task, done, total):
        seen.append((task, done, total))
        raise KeyboardInterrupt

    out = tmp_path / "ray"
    with pytest.raises(KeyboardInterrupt):
        sweep(*files, out, executor="ray", progress=progress, **GRID)
    assert seen == [("sweep", 1, 2)]
    finished = [p for p in (out / "points").iterdir() if (p / "report.json").exists()]
    assert len(finished) == 1
    first = json.loads((finished[0] / "report.json").read_text())
    # the prune stage came from the one shared prefix task, through the object store
    assert [s["reused"] for s in first["stages"] if s["stage"] == "prune"] == [True]
    # the report names the user's files, not the worker's unpacked copies
    assert first["source"] == str(digits_files["model"])
    assert first["data"]["train"]["source"] == str(digits_files["train"])
    assert "edgekit-ray-" not in (finished[0] / "report.json").read_text()
    before = (finished[0] / "model.tflite").stat().st_mtime_ns

    # the rerun: the CLI joins the session's cluster by address and runs only the unfinished point
    r = edgekit("sweep", files[0], "--data", files[1], "--eval", files[2], "--prune", "0.5", "--cluster", "0,8", "--epochs", "1", "--board", "virtual",
                "--ray-address", ray_cluster["address"], "-o", out, "--json", timeout=600)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["executor"]["kind"] == "ray" and doc["executor"]["started"] == "connected"
    assert doc["executor"]["cpus"] == 2 and list(doc["executor"]["point_task_s"]) != [finished[0].name]
    assert [p["id"] for p in doc["points"] if p["reused"]] == [finished[0].name]
    assert (finished[0] / "model.tflite").stat().st_mtime_ns == before
    # the same rows, the same front and choice as the local executor's
    assert [_row(p) for p in doc["points"]] == [_row(asdict(p)) for p in local.points]
    assert doc["best"] == (local.best.id if local.best else None)
    assert json.loads((out / "sweep.json").read_text())["points"] == doc["points"]


@pytest.mark.slow
def test_ray_client_address(tmp_path, digits_files, ray_client_address):
    """`--executor ray://HOST:PORT` through a real Ray Client server; the session's Ray has token
    authentication on (Ray's default), so the joining side sets RAY_AUTH_MODE=token as docs/convert.md
    says. One int8-only point: its row equals the local executor's."""
    files = (digits_files["model"], digits_files["train"], digits_files["test"])
    local = sweep(*files, tmp_path / "local", prune=[0.0], cluster=[0], board="virtual")
    r = edgekit("sweep", files[0], "--data", files[1], "--eval", files[2], "--prune", "0", "--cluster", "0",
                "--board", "virtual", "--executor", ray_client_address, "-o", tmp_path / "ray", "--json",
                env={"RAY_AUTH_MODE": "token"}, timeout=300)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["executor"]["address"] == ray_client_address and doc["executor"]["started"] == "connected"
    assert list(doc["executor"]["point_task_s"]) == ["p0_c0"]
    assert [_row(p) for p in doc["points"]] == [_row(asdict(p)) for p in local.points]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("form", ["HOST:PORT", "ray://HOST:PORT"])
def test_a_ray_address_that_does_not_answer(tmp_path, digits_files, form):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'edgekit[ray]'; make setup does)")
    address = form.replace("HOST", "127.0.0.1").replace("PORT", str(_free_port()))
    t0 = time.monotonic()
    r = edgekit("sweep", digits_files["model"], "--data", digits_files["train"], "--eval", digits_files["test"],
                "--prune", "0.5", "--executor" if form.startswith("ray://") else "--ray-address", address,
                "-o", tmp_path / "s", timeout=120)
    assert time.monotonic() - t0 < 60
    assert_one_line_error(r, 15, f"Ray cluster at {address} does not answer")
    assert "ray start --head" in r.stderr
    assert not (tmp_path / "s").exists()          # checked before any work: nothing written


def test_ray_not_installed_names_the_extra(tmp_path, digits_files):
    """Ray hidden from the import system (as on a machine without the extra): exit 12 and the hint."""
    import subprocess

    code = ("import sys; sys.modules['ray'] = None; sys.argv[0] = 'edgekit'; "
            "from edgekit.cli.main import main; main()")
    r = subprocess.run([sys.executable, "-c", code, "sweep", str(digits_files["model"]), "--data",
                        str(digits_files["train"]), "--eval", str(digits_files["test"]), "--executor", "ray",
                        "-o", str(tmp_path / "s")], capture_output=True, text=True, timeout=120)
    assert_one_line_error(r, 12, "the Ray executor needs Ray, which is not installed")
    assert "pip install 'edgekit[ray]'" in r.stderr
    assert not (tmp_path / "s").exists()


def test_executor_usage_error_from_the_cli(tmp_path, digits_files):
    r = edgekit("sweep", digits_files["model"], "--data", digits_files["train"], "--eval", digits_files["test"],
                "--executor", "dask", "-o", tmp_path / "s")
    assert_one_line_error(r, 2, "unknown executor 'dask'")
