"""The sweep's executor seam without running a model: which prefixes are shared, which executor the
flags ask for, Ray addresses and the bounded probe, and that the local path never imports Ray."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgekit.errors import ExecutorError, UsageError
from edgekit.executors import LocalExecutor, PointJob, make_executor, shared_prefixes
from edgekit.sweep import point_recipe

ROOT = Path(__file__).resolve().parents[2]


def _jobs(prunes, clusters, seed=0):
    return [PointJob(f"p{p:g}_c{c}", point_recipe(p, c, qat=True, epochs=1, seed=seed), Path("/x") / f"p{p}_c{c}")
            for p in prunes for c in clusters]


def test_shared_prefixes_of_a_3x2_grid():
    """Prune 0.5 and 0.7 each feed two points (c0 and c8): one prefix task each; prune 0 has none."""
    tasks, needs = shared_prefixes(_jobs([0, 0.5, 0.7], [0, 8]), "m.keras")
    assert [(t.depth, t.key[3:]) for t in tasks] == [
        (1, ("prune", repr(point_recipe(0.5, 0, qat=True, epochs=1, seed=0).prune))),
        (1, ("prune", repr(point_recipe(0.7, 0, qat=True, epochs=1, seed=0).prune)))]
    assert all(t.needs == [] for t in tasks)
    assert needs["p0_c0"] == [] and needs["p0_c8"] == []
    assert needs["p0.5_c0"] == needs["p0.5_c8"] == [tasks[0].key]
    assert needs["p0.7_c8"] == [tasks[1].key]


def test_a_prefix_of_two_stages_starts_from_the_shared_first_one():
    """Two recipes that differ only after cluster share prune and prune+cluster: the cluster task needs
    the prune task; a point that shares nothing gets no task."""
    a, b, c = (point_recipe(0.5, 8, qat=True, epochs=1, seed=0) for _ in range(3))
    b.quantize.dense_per_tensor = True          # differs after the reusable stages
    c.seed = 1                                  # another seed shares nothing
    jobs = [PointJob("a", a, Path("a")), PointJob("b", b, Path("b")), PointJob("c", c, Path("c"))]
    tasks, needs = shared_prefixes(jobs, "m.keras")
    assert [t.depth for t in tasks] == [1, 2]
    assert tasks[1].needs == [tasks[0].key]
    assert needs["a"] == needs["b"] == [tasks[0].key, tasks[1].key] and needs["c"] == []


def test_resumed_points_share_nothing_left():
    """Only pending points count: when one of a pair is finished, the other computes its prefix itself."""
    tasks, needs = shared_prefixes(_jobs([0.5], [8]), "m.keras")
    assert tasks == [] and needs == {"p0.5_c8": []}


@pytest.mark.parametrize("args,match", [
    (("foo", None, None), "unknown executor 'foo'"),
    (("local", "h:1", None), "--ray-address needs the Ray executor"),
    (("local", None, 2), "--workers sets the CPUs of a local Ray"),
    (("ray", "h:1", 2), "a cluster brings its own"),
    (("ray://a:1", "ray://b:2", None), "name two clusters"),
    (("ray", None, 0), "needs at least 1"),
    (("ray", "nohost", None), "is not understood"),
    (("ray", "h:99999", None), "is not understood"),
])
def test_executor_flags_that_make_no_sense(args, match):
    with pytest.raises(UsageError, match=match):
        make_executor(*args)


def test_executor_flags():
    assert isinstance(make_executor(), LocalExecutor) and isinstance(make_executor("local"), LocalExecutor)
    ray_exec = make_executor("ray://head:10001")
    assert (ray_exec.kind, ray_exec.address, ray_exec.workers) == ("ray", "ray://head:10001", None)
    assert make_executor(None, "10.0.0.5:6379").address == "10.0.0.5:6379"      # an address implies ray
    assert make_executor("ray", None, 2).workers == 2 and make_executor("ray").address is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_probe_of_a_port_nobody_listens_on_is_one_quick_error():
    from edgekit.ray_executor import probe

    port = _free_port()
    t0 = time.monotonic()
    with pytest.raises(ExecutorError, match=f"Ray cluster at 127.0.0.1:{port} does not answer"):
        probe(f"127.0.0.1:{port}")
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("reply,match", [
    (None, "does not answer \\(no reply within 0.5 s\\)"),
    (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", "answers, but not as a Ray cluster"),
])
def test_probe_of_a_server_that_is_not_ray_is_bounded(reply, match):
    """A listener that accepts and says nothing, or speaks HTTP/1 (not gRPC), is refused within the
    probe's timeout (Ray's own connect would retry for minutes)."""
    from edgekit.ray_executor import probe

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    held = []
    stop = threading.Event()

    def serve():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn = srv.accept()[0]
            except OSError:
                continue
            held.append(conn)
            if reply is not None:
                conn.recv(64)
                conn.sendall(reply)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        t0 = time.monotonic()
        with pytest.raises(ExecutorError, match=match):
            probe(f"ray://127.0.0.1:{srv.getsockname()[1]}", timeout_s=0.5)
        assert time.monotonic() - t0 < 3
    finally:
        stop.set()
        t.join()
        for c in held:
            c.close()
        srv.close()


def test_the_local_path_never_imports_ray():
    code = ("import sys; from edgekit.cli import main; from edgekit import sweep, executors; "
            "executors.make_executor('local'); executors.make_executor(None, None, None); "
            "print('ray' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_prefix_labels():
    a, b = point_recipe(0.5, 8, qat=True, epochs=1, seed=0), point_recipe(0.5, 8, qat=True, epochs=1, seed=0)
    b.quantize.dense_per_tensor = True
    tasks, _ = shared_prefixes([PointJob("a", a, Path("a")), PointJob("b", b, Path("b"))], "m.keras")
    assert [t.label() for t in tasks] == ["prune 0.5", "prune 0.5 + cluster 8"]
