"""Sweep points as Ray tasks, on a local Ray started for the run or on an existing cluster.

edgekit rides Ray; it adds no scheduler of its own:

- The inputs (model, data, eval data; a folder travels as a tar) are put in Ray's object store once;
  each worker unpacks them into a private temporary folder once per process. Workers need edgekit
  (and the ``tf`` extra) installed, nothing else: no shared storage.
- Every prefix of reusable stages (prune, cluster) that two or more pending points share is one task;
  its model travels through the object store as architecture + weights
  (edgekit.conversion.pipeline.pack_stage) to the points that start from it.
- Every point is a task that runs ``edgekit.convert`` without an output folder and returns the
  artifact's bytes; this process writes them into ``<out>/points/<id>/`` as each point finishes
  (pipeline.write_artifact: atomic), so the out folder lives only here, and an interrupt keeps every
  finished point for the rerun.
- Each training stage seeds itself (pipeline.stage_seed): a point's rows are the same whether it ran
  here, on a worker, from a shared prefix or not.

Ray is imported only when this executor runs; without it the error names the extra to install.
"""
from __future__ import annotations

import atexit
import hashlib
import io
import logging
import os
import shutil
import socket
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from edgekit.errors import EdgekitError, ExecutorError, RuntimeMissing, UsageError
from edgekit.executors import PointJob, PointOutcome, SweepInputs, Warn, shared_prefixes
from edgekit.optimize.recipe import Recipe

INSTALL_HINT = "install the Ray extra: pip install 'edgekit[ray]'"
CONNECT_TIMEOUT_S = 5.0        # a TCP connect and a gRPC handshake with the address given
INIT_TIMEOUT_S = 60.0          # ray.init joining a cluster that passed the probe
POLL_S = 0.5                   # how often the wait for finished points returns (Ctrl-C stays quick)


def import_ray():
    """The ray module, or RuntimeMissing with the install hint."""
    try:
        import ray
    except ImportError as e:
        raise RuntimeMissing(f"the Ray executor needs Ray, which is not installed ({e})", hint=INSTALL_HINT) from e
    return ray


# --- connecting ----------------------------------------------------------------------------------

def parse_address(address: str) -> tuple[Optional[str], Optional[int]]:
    """(host, port) of 'HOST:PORT' or 'ray://HOST:PORT'; (None, None) for 'auto'."""
    a = address.strip()
    if a == "auto":
        return None, None
    rest = a[len("ray://"):] if a.startswith("ray://") else a
    host, sep, port = rest.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"Ray address '{address}' is not understood",
                         hint="give HOST:PORT (the head's GCS port, 6379 by default), ray://HOST:PORT "
                              "(Ray Client, 10001 by default) or auto")
    return host, int(port)


# An HTTP/2 client preface and an empty SETTINGS frame: a gRPC server (Ray's GCS, the Ray Client
# server) answers with its own SETTINGS frame at once; anything else stays silent or says something else.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def probe(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Fail in ``timeout_s`` when nothing answers at ``address`` as a Ray cluster would (Ray's own
    connect retries for many minutes). 'auto' is left to Ray."""
    host, port = parse_address(address)
    if host is None:
        return
    hint = ("start one with `ray start --head` there, or check the host and port "
            "(`--executor ray` starts a local Ray instead)")
    deadline = time.monotonic() + timeout_s
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as s:
            s.sendall(_H2_PREFACE)
            head = b""
            while len(head) < 9:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise socket.timeout
                s.settimeout(remaining)
                chunk = s.recv(9 - len(head))
                if not chunk:
                    break
                head += chunk
    except socket.timeout:
        raise ExecutorError(f"Ray cluster at {address} does not answer (no reply within {timeout_s:g} s)",
                            hint=hint) from None
    except OSError as e:
        raise ExecutorError(f"Ray cluster at {address} does not answer ({e.strerror or e})", hint=hint) from e
    if len(head) < 9 or head[3] != 0x04:
        raise ExecutorError(f"{address} answers, but not as a Ray cluster (no gRPC handshake)", hint=hint)


def _bounded(fn: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Run ``fn`` in a helper thread and give up after ``timeout_s`` (ray.init has no timeout)."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e

    t = threading.Thread(target=target, name="edgekit-ray-init", daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        raise ExecutorError(f"{what} did not finish within {timeout_s:g} s",
                            hint="check the cluster's state (`ray status` there) and try again")
    if "error" in box:
        raise box["error"]
    return box.get("value")


class _NoSigtermNote(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("SIGTERM handler is not set")


def _debug() -> bool:
    return os.environ.get("EDGEKIT_DEBUG", "") not in ("", "0")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def start_local(ray=None, *, workers: int | None = None, object_store_bytes: int | None = None) -> float:
    """Start a local Ray (``workers`` CPUs, default all of them) in this process; return seconds taken."""
    ray = ray or import_ray()
    t0 = time.perf_counter()
    kwargs = dict(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=_debug(),
                  logging_level=logging.DEBUG if _debug() else logging.WARNING, namespace="edgekit")
    if object_store_bytes:
        kwargs["object_store_memory"] = object_store_bytes
    try:
        # in this thread: Ray's processes die with the thread that started them (parent-death signal)
        ray.init(**kwargs)
    except Exception as e:  # noqa: BLE001 - Ray's own start-up failures
        raise ExecutorError(f"could not start a local Ray: {_first_line(e)}",
                            hint="run with EDGEKIT_DEBUG=1 to see Ray's log") from e
    return time.perf_counter() - t0


def connect(ray, address: str, *, timeout_s: float = INIT_TIMEOUT_S) -> float:
    """Connect this process to the cluster at ``address``; return seconds taken."""
    t0 = time.perf_counter()
    probe(address)
    # ray.init has no timeout of its own; joining a cluster starts no process here, so a helper thread
    # can bound it (it would not hold the SIGTERM handler Ray wants: say nothing about that)
    logging.getLogger("ray._private.worker").addFilter(_NoSigtermNote())
    try:
        _bounded(lambda: ray.init(address=address, log_to_driver=_debug(), namespace="edgekit",
                                  logging_level=logging.DEBUG if _debug() else logging.WARNING),
                 timeout_s, f"connecting to Ray at {address}")
    except EdgekitError:
        raise
    except Exception as e:  # noqa: BLE001 - refused, auth token missing, version mismatch, ...
        raise ExecutorError(f"could not connect to Ray at {address}: {_first_line(e)}",
                            hint="the cluster needs the same Ray and Python versions as this machine; a cluster "
                                 "with token authentication also needs RAY_AUTH_MODE=token and its token here "
                                 "(RAY_AUTH_TOKEN or ~/.ray/auth_token)") from e
    return time.perf_counter() - t0


# --- shipping the inputs --------------------------------------------------------------------------

def pack_path(path: Path) -> dict:
    """A file's bytes, or a folder as an uncompressed tar, with its name and SHA-256."""
    path = Path(path)
    if path.is_dir():
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(path, arcname=path.name)
        blob, kind = buf.getvalue(), "dir"
    else:
        blob, kind = path.read_bytes(), "file"
    return {"name": path.name, "kind": kind, "blob": blob, "sha256": hashlib.sha256(blob).hexdigest(),
            "source": str(path)}


_UNPACKED: dict[str, Path] = {}
_WORK: list[Path] = []


def _work_dir() -> Path:
    if not _WORK:
        d = Path(tempfile.mkdtemp(prefix="edgekit-ray-"))
        atexit.register(shutil.rmtree, d, True)
        _WORK.append(d)
    return _WORK[0]


def unpack_path(packed: dict) -> Path:
    """Where a packed input lies on this worker (unpacked once per process, under its own name, so
    error messages name the user's file)."""
    got = _UNPACKED.get(packed["sha256"])
    if got is not None and got.exists():
        return got
    d = _work_dir() / packed["sha256"][:16]
    d.mkdir(parents=True, exist_ok=True)
    target = d / packed["name"]
    if packed["kind"] == "dir":
        with tarfile.open(fileobj=io.BytesIO(packed["blob"]), mode="r") as tar:
            try:
                tar.extractall(d, filter="data")       # no links or paths out of d
            except TypeError:                          # a Python without extraction filters
                tar.extractall(d)
    else:
        target.write_bytes(packed["blob"])
    _UNPACKED[packed["sha256"]] = target
    return target


# --- on the workers -------------------------------------------------------------------------------

def _load_inputs(inputs: dict):
    """The model (its source named as on the machine that started the sweep) and the data paths."""
    from edgekit.optimize.loading import load_model

    loaded = load_model(unpack_path(inputs["model"]))
    loaded.source = inputs["model"]["source"]     # stage-cache keys and report.json as the driver sees them
    return loaded, unpack_path(inputs["data"]), unpack_path(inputs["eval"])


def _seed_cache(entries: tuple, like) -> dict:
    from edgekit.conversion.pipeline import unpack_stage

    return {tuple(e["key"]): unpack_stage(e, like=like) for e in entries}


def _failed_prefix(entries: tuple) -> Optional[dict]:
    return next((e for e in entries if e.get("error")), None)


def _node() -> str:
    return socket.gethostname()


def prefix_task(inputs: dict, recipe: Recipe, depth: int, key: tuple, *entries: dict) -> dict:
    """Run a shared prefix of reusable stages; return its stage-cache entry (pack_stage) or the error."""
    from edgekit.conversion.pipeline import pack_stage, train_prefix

    notes: list[str] = []
    t0 = time.perf_counter()
    failed = _failed_prefix(entries)
    if failed is not None:
        return {"key": key, "error": failed["error"]}
    try:
        loaded, data, _ = _load_inputs(inputs)
        cache = _seed_cache(entries, loaded.keras)
        got = train_prefix(loaded, data, recipe, cache, depth=depth, warn=notes.append)
        if tuple(got) != tuple(key):
            raise ExecutorError("a worker computed another stage key than this machine (different edgekit "
                                "versions?)", hint="install the same edgekit version on every node")
        entry = pack_stage(*cache[got])
    except EdgekitError as e:
        return {"key": key, "error": e.message, "warnings": notes}
    return {"key": key, **entry, "warnings": notes, "node": _node(), "duration_s": time.perf_counter() - t0}


def point_task(inputs: dict, recipe: Recipe, *entries: dict) -> dict:
    """Run one point (edgekit.convert without an output folder); return the artifact or the error."""
    from edgekit._version import __version__
    from edgekit.conversion.pipeline import convert

    notes: list[str] = []
    t0 = time.perf_counter()
    failed = _failed_prefix(entries)
    if failed is not None:
        return {"error": failed["error"]}
    try:
        loaded, data, eval_data = _load_inputs(inputs)
        cache = _seed_cache(entries, loaded.keras)
        res = convert(loaded, data, eval_data, recipe, None, warn=notes.append,
                      stage_cache=cache)
    except EdgekitError as e:
        return {"error": e.message, "warnings": notes}
    report = res.report
    for key, name in (("train", "data"), ("eval", "eval")):      # the driver's paths, not this worker's
        if report["data"].get(key):
            report["data"][key]["source"] = inputs[name]["source"]
    return {"model": res.model, "float_model": res.float_model, "report": report, "warnings": notes,
            "node": _node(), "edgekit_version": __version__, "duration_s": time.perf_counter() - t0}


# --- the executor ---------------------------------------------------------------------------------

class RayExecutor:
    """Points as Ray tasks. ``address`` None: a local Ray started for the run (``workers`` CPUs), or
    the Ray this process already joined (ray.init done by the caller, left running)."""

    kind = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None):
        if address is not None:
            parse_address(address)      # a malformed address is a usage error before any work
        self.address = address
        self.workers = workers
        self.facts: dict = {}

    def describe(self) -> dict:
        return {"kind": self.kind, "address": self.address, **self.facts}

    def _join(self, ray) -> bool:
        """Join or start Ray; True when this run started or joined it (and leaves it at the end)."""
        if ray.is_initialized():
            if self.address is not None:
                raise UsageError("Ray is already initialised in this process; it cannot join another cluster",
                                 hint="call ray.shutdown() first, or leave the address out to use it")
            self.facts.update(started="already running", startup_s=0.0)
            return False
        if self.address is None:
            self.facts.update(started="local", startup_s=round(start_local(ray, workers=self.workers), 2))
        else:
            self.facts.update(started="connected", startup_s=round(connect(ray, self.address), 2))
        return True

    def run(self, jobs: list[PointJob], inputs: SweepInputs, *, warn: Warn) -> Iterator[PointOutcome]:
        ray = import_ray()
        if not jobs:
            return
        owned = self._join(ray)
        refs: list = []
        try:
            self.facts["cpus"] = int(ray.cluster_resources().get("CPU", 0))
            self.facts["nodes"] = sum(1 for n in ray.nodes() if n.get("Alive"))
            shipped = ray.put({"model": pack_path(inputs.model), "data": pack_path(inputs.data),
                               "eval": pack_path(inputs.eval_data)})
            prefixes, needs = shared_prefixes(jobs, str(Path(inputs.model)))
            prefix_fn = ray.remote(num_cpus=1, max_retries=1)(prefix_task)
            point_fn = ray.remote(num_cpus=1, max_retries=1)(point_task)
            made: dict[tuple, Any] = {}
            for t in prefixes:
                ref = prefix_fn.remote(shipped, t.recipe, t.depth, t.key, *[made[k] for k in t.needs])
                made[t.key] = ref
                refs.append(ref)
            pending = {}
            for job in jobs:
                ref = point_fn.remote(shipped, job.recipe, *[made[k] for k in needs[job.id]])
                pending[ref] = job
                refs.append(ref)
            durations: dict[str, float] = {}
            seen_versions: set[str] = set()
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
                for ref in ready:
                    job = pending.pop(ref)
                    got = self._get(ray, ref, job)
                    for note in got.get("warnings", ()):
                        warn(note)
                    if got.get("error") is not None:
                        yield PointOutcome(job.id, error=got["error"])
                        continue
                    self._check(got, job, seen_versions, warn)
                    from edgekit.conversion.pipeline import write_artifact

                    write_artifact(job.folder, got["model"], got["float_model"], got["report"])
                    durations[job.id] = round(got["duration_s"], 2)
                    yield PointOutcome(job.id, report=got["report"])
            self.facts["point_task_s"] = durations
            self.facts["prefix_tasks"] = len(prefixes)
            self.facts["prefix_task_s"] = {t.label(): round(ray.get(made[t.key]).get("duration_s", 0.0), 2)
                                           for t in prefixes}
        finally:
            for ref in refs:
                try:
                    ray.cancel(ref, force=True)     # a finished task: nothing happens
                except Exception:  # noqa: BLE001 - cancelling during shutdown is best effort
                    pass
            if owned:
                ray.shutdown()

    @staticmethod
    def _get(ray, ref, job: PointJob) -> dict:
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            cause = e.cause if getattr(e, "cause", None) is not None else e
            msg = f"sweep point {job.id}: the Ray task failed: {type(cause).__name__}: {_first_line(cause)}"
            hint = "run again with EDGEKIT_DEBUG=1 for the worker's traceback"
            if isinstance(cause, ModuleNotFoundError) and "edgekit" in str(cause):
                hint = "install edgekit[tf] (the same version as here) on every node of the cluster"
            raise ExecutorError(msg, hint=hint) from e
        except ray.exceptions.RayError as e:
            raise ExecutorError(f"sweep point {job.id}: {type(e).__name__}: {_first_line(e)}",
                                hint="finished points are kept; run the sweep again to continue") from e

    @staticmethod
    def _check(got: dict, job: PointJob, seen: set, warn: Warn) -> None:
        import json

        from edgekit._version import __version__

        if got["report"].get("recipe") != json.loads(json.dumps(job.recipe.to_dict())):
            raise ExecutorError(f"sweep point {job.id}: a Ray worker ran another recipe than this machine sent",
                                hint="install the same edgekit version on every node")
        theirs = got.get("edgekit_version")
        if theirs and theirs != __version__ and theirs not in seen:
            seen.add(theirs)
            warn(f"a Ray worker on {got.get('node')} runs edgekit {theirs}, this machine {__version__}: "
                 "rows may differ from a local run")
