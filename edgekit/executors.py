"""Where the points of a sweep run.

A point is a recipe and the folder its artifact goes to (:class:`PointJob`). An executor takes the
points a sweep still has to run and yields each one's outcome as it finishes; the sweep itself (the
grid, resume, the table, the Pareto front) does not know which executor ran them.

- ``local``: one after the other in this process, sharing one stage cache (edgekit.conversion.pipeline).
- ``ray``: each point a Ray task, on a local Ray started for the run or on a cluster by address
  (edgekit.ray_executor). Ray is imported only there.

Points that share a prefix of reusable stages (the same pruning before different cluster counts) get
that prefix computed once: :func:`shared_prefixes` says which.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Protocol

from edgekit.errors import UsageError
from edgekit.optimize.recipe import Recipe

Warn = Callable[[str], None]


@dataclass
class PointJob:
    """One point of a sweep: run ``recipe`` and leave its artifact in ``folder``."""
    id: str
    recipe: Recipe
    folder: Path


@dataclass
class PointOutcome:
    """A finished point: the report written into its folder, or the one-line error that stopped it."""
    id: str
    report: Optional[dict] = None
    error: Optional[str] = None


@dataclass
class SweepInputs:
    """What every point reads: the Keras model, the fine-tuning / calibration data, the eval data."""
    model: Path
    data: Path
    eval_data: Path


@dataclass
class PrefixTask:
    """A run of reusable stages several pending points share: ``key`` is the stage-cache key of its
    last stage, ``depth`` how many reusable stages it runs, ``recipe`` any recipe that has the prefix,
    ``needs`` the keys of shorter shared prefixes it starts from."""
    key: tuple
    depth: int
    recipe: Recipe
    needs: list[tuple] = field(default_factory=list)

    def label(self) -> str:
        """e.g. 'prune 0.5' or 'prune 0.5 + cluster 8'."""
        from edgekit.conversion.pipeline import reusable_specs

        def one(name, spec) -> str:
            if name == "prune_channels":
                return f"prune-channels {spec.fraction:g}"
            return f"prune {spec.target_sparsity:g}" if name == "prune" else f"cluster {spec.clusters}"

        return " + ".join(one(name, spec) for name, spec in reusable_specs(self.recipe)[:self.depth])


class Executor(Protocol):
    kind: str

    def describe(self) -> dict:
        """What ran the points, for the sweep's JSON (``kind`` plus executor facts)."""

    def run(self, jobs: list[PointJob], inputs: SweepInputs, *, warn: Warn) -> Iterator[PointOutcome]:
        """Run ``jobs``; yield each outcome once its artifact is in its folder. Closing the iterator
        early (an interrupt) stops the points still running."""


def shared_prefixes(jobs: list[PointJob], source: str) -> tuple[list[PrefixTask], dict[str, list[tuple]]]:
    """The prefixes of reusable stages that two or more of ``jobs`` share (shortest first), and for
    each job the keys of the shared prefixes it starts from (shortest first)."""
    from edgekit.conversion.pipeline import stage_keys

    keys_of = {j.id: stage_keys(source, j.recipe) for j in jobs}
    uses: dict[tuple, int] = {}
    for keys in keys_of.values():
        for k in keys:
            uses[k] = uses.get(k, 0) + 1
    shared = {k for k, n in uses.items() if n >= 2}
    tasks: dict[tuple, PrefixTask] = {}
    for j in jobs:
        for depth, k in enumerate(keys_of[j.id], start=1):
            if k in shared and k not in tasks:
                tasks[k] = PrefixTask(key=k, depth=depth, recipe=j.recipe,
                                      needs=[a for a in keys_of[j.id][:depth - 1] if a in shared])
    needs = {j.id: [k for k in keys_of[j.id] if k in shared] for j in jobs}
    return sorted(tasks.values(), key=lambda t: t.depth), needs


class LocalExecutor:
    """The points one after the other in this process; one stage cache shares the prefixes."""

    kind = "local"

    def describe(self) -> dict:
        return {"kind": self.kind}

    def run(self, jobs: list[PointJob], inputs: SweepInputs, *, warn: Warn) -> Iterator[PointOutcome]:
        from edgekit.conversion import pipeline
        from edgekit.errors import EdgekitError
        from edgekit.optimize.loading import load_model

        cache: dict = {}
        loaded = None
        for job in jobs:
            if loaded is None:
                loaded = load_model(inputs.model)
            try:
                rep = pipeline.convert(loaded, inputs.data, inputs.eval_data, job.recipe, job.folder, warn=warn,
                                       stage_cache=cache, progress=None).report
            except EdgekitError as e:          # one failing point must not end the sweep
                yield PointOutcome(job.id, error=e.message)
                continue
            yield PointOutcome(job.id, report=rep)


EXECUTORS = ("local", "ray")


def make_executor(executor: str | None = None, ray_address: str | None = None,
                  workers: int | None = None) -> Executor:
    """The executor the CLI's ``--executor`` / ``--ray-address`` / ``--workers`` ask for.

    ``local`` (default); ``ray`` starts a local Ray for the run (``workers`` CPUs, default all);
    ``ray://HOST:PORT`` or ``ray_address`` (``HOST:PORT``, ``ray://HOST:PORT`` or ``auto``) use an
    existing cluster. Ray is not imported here.
    """
    spec = (executor or "").strip()
    if spec.startswith("ray://"):
        if ray_address and ray_address != spec:
            raise UsageError(f"--executor {spec} and --ray-address {ray_address} name two clusters",
                             hint="give the address once")
        spec, ray_address = "ray", spec
    if not spec:
        spec = "ray" if ray_address else "local"
    if spec not in EXECUTORS:
        raise UsageError(f"unknown executor '{spec}'", hint="use local, ray, or ray://HOST:PORT")
    if workers is not None and workers < 1:
        raise UsageError(f"--workers {workers}: needs at least 1")
    if spec == "local":
        if ray_address:
            raise UsageError("--ray-address needs the Ray executor", hint="drop --executor local")
        if workers is not None:
            raise UsageError("--workers sets the CPUs of a local Ray", hint="add --executor ray")
        return LocalExecutor()
    if ray_address and workers is not None:
        raise UsageError("--workers sets the CPUs of a local Ray; a cluster brings its own",
                         hint="drop --workers, or drop --ray-address to start a local Ray")
    from edgekit.ray_executor import RayExecutor

    return RayExecutor(address=ray_address or None, workers=workers)
