"""`edgekit sweep`: the convert pipeline over a grid of settings, the Pareto front of size vs accuracy,
and the smallest point that meets the constraints and fits the board.

Each point is a full convert run (its own artifact folder under ``<out>/points/<id>/``). Runs that share
a prefix (the same pruning before different cluster counts) reuse the fine-tuned model of that prefix.
A point whose folder already holds a report for the same recipe is not run again, so an interrupted
sweep keeps its finished points and a rerun continues where it stopped. Where the points run (this
process, or Ray tasks on a local Ray or a cluster) is an executor's business (edgekit.executors).
"""
from __future__ import annotations

import copy

import csv
import io
import itertools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from edgekit import schemas
from edgekit.errors import UsageError
from edgekit.fileio import check_output_dir, write_text
from edgekit.optimize.recipe import Recipe
from edgekit.progress import ProgressFn

if TYPE_CHECKING:
    from edgekit.executors import Executor

SCHEMA = schemas.SWEEP


@dataclass
class SweepPoint:
    id: str
    prune: float
    cluster: int
    recipe: str
    flash_bytes: int = 0
    arena_bytes: Optional[int] = None
    accuracy: Optional[float] = None
    latency_bound_us: Optional[float] = None      # roofline floor on the board (MACs / peak)
    latency_estimate_us: Optional[float] = None   # the board's estimated time (MAC-based, edgekit.estimate)
    fits: Optional[bool] = None
    meets: bool = False
    pareto: bool = False
    reused: bool = False          # finished in an earlier run of this sweep
    error: Optional[str] = None


@dataclass
class SweepResult:
    points: list[SweepPoint]
    best: Optional[SweepPoint]
    closest: Optional[SweepPoint]
    constraints: dict
    board: Optional[str]
    out_dir: Optional[Path] = None
    files: dict = field(default_factory=dict)
    executor: dict = field(default_factory=lambda: {"kind": "local"})   # what ran the points

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "board": self.board, "constraints": self.constraints,
                "points": [asdict(p) for p in self.points],
                "best": self.best.id if self.best else None,
                "closest": self.closest.id if self.closest else None,
                "executor": self.executor,
                "files": {k: str(v) for k, v in self.files.items()}}


def parse_grid(text: str, kind: type, name: str) -> list:
    values = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            v = kind(part)
        except ValueError as e:
            raise UsageError(f"--{name}: '{part}' is not a number", hint=f"e.g. --{name} 0,0.5,0.75") from e
        values.append(v)
    if not values:
        raise UsageError(f"--{name} needs at least one value")
    for v in values:
        if name == "prune" and not (v == 0 or 0 < v < 1):
            raise UsageError(f"--prune value {v} must be 0 (no pruning) or in (0, 1)")
        if name == "cluster" and not (v == 0 or 2 <= v <= 256):
            raise UsageError(f"--cluster value {v} must be 0 (no clustering) or 2..256")
    return sorted(set(values))


def parse_size(text: str | int | None) -> Optional[int]:
    """'200k' -> 204800, '1M' -> 1048576, '5000' -> 5000."""
    if text is None or isinstance(text, int):
        return text
    t = str(text).strip().lower().rstrip("b")
    mult = 1
    if t.endswith("k"):
        mult, t = 1024, t[:-1]
    elif t.endswith("m"):
        mult, t = 1024 * 1024, t[:-1]
    try:
        return int(float(t) * mult)
    except ValueError as e:
        raise UsageError(f"size '{text}' is not understood", hint="e.g. 200k, 1M or 50000") from e


def point_recipe(prune: float, cluster: int, *, qat: bool, epochs: int, seed: int) -> Recipe:
    """One grid point: int8 always; clustered points get LUT compression with just enough index bits
    (unless the sweep's board has no DECODE kernel: then the recipe is adjusted in sweep())."""
    compress = f"lut{max(1, math.ceil(math.log2(cluster)))}" if cluster and cluster <= 128 else None
    return Recipe.from_flags(prune=prune or None, cluster=cluster or None, qat=qat and bool(prune or cluster),
                             compress=compress, epochs=epochs, seed=seed)


def recipe_for_board(recipe: Recipe, board) -> Recipe:
    """A grid point's recipe made for what ``board``'s TFLM runs correctly: no LUT compression without
    DECODE (clustered weights stay uncompressed), per-tensor dense weights without per-channel dense."""
    from edgekit.optimize.recipe import recipe_for_runtime
    from edgekit.tflm.compat import facts_from_board

    facts = facts_from_board(board)
    if facts is not None and not facts.decode and recipe.compress is not None:
        recipe = copy.deepcopy(recipe)
        recipe.compress = None
    return recipe_for_runtime(recipe, facts, board.id)[0]


def pareto_ids(points: list[SweepPoint]) -> set[str]:
    """Points no other point beats on both size (smaller) and accuracy (higher)."""
    ok = [p for p in points if p.error is None and p.accuracy is not None]
    front = set()
    for p in ok:
        dominated = any(q is not p and q.flash_bytes <= p.flash_bytes and q.accuracy >= p.accuracy
                        and (q.flash_bytes < p.flash_bytes or q.accuracy > p.accuracy) for q in ok)
        if not dominated:
            front.add(p.id)
    return front


def sweep(model: str | Path, data: str | Path, eval_data: str | Path, out_dir: str | Path, *,
          prune: list[float] = (0.0,), cluster: list[int] = (0,), qat: bool = True, epochs: int = 3,
          seed: int = 0, board: str | None = None, max_flash: int | None = None,
          min_accuracy: float | None = None, progress: ProgressFn | None = None,
          warn: Callable[[str], None] | None = None, executor: "str | Executor | None" = None) -> SweepResult:
    """Run the grid; ``executor``: "local" (default), "ray", "ray://HOST:PORT" or an Executor
    (edgekit.executors). Every executor gives the same rows for the same seed."""
    from contextlib import closing

    from edgekit.executors import PointJob, SweepInputs, make_executor

    warn = warn or (lambda m: None)
    out = check_output_dir(out_dir)     # made when the first point writes; checked before any work
    runner = make_executor(executor) if executor is None or isinstance(executor, str) else executor
    board_obj = None
    if board is not None:
        from edgekit.boards import load_board

        board_obj = load_board(board)
    grid = list(itertools.product(sorted(prune), sorted(cluster)))
    points: list[SweepPoint] = []
    jobs: list[PointJob] = []
    reports: dict[str, dict] = {}
    for p, c in grid:
        pid = f"p{p:g}_c{c}"
        recipe = point_recipe(p, c, qat=qat, epochs=epochs, seed=seed)
        if board_obj is not None:
            recipe = recipe_for_board(recipe, board_obj)
        points.append(SweepPoint(id=pid, prune=p, cluster=c, recipe=recipe.describe()))
        folder = out / "points" / pid
        rep = _finished(folder, recipe)
        if rep is not None:
            points[-1].reused = True
            reports[pid] = rep
        else:
            jobs.append(PointJob(pid, recipe, folder))
    done = len(reports)
    if progress and done:
        progress("sweep", done, len(grid))
    if jobs:
        with closing(runner.run(jobs, SweepInputs(Path(model), Path(data), Path(eval_data)), warn=warn)) as outcomes:
            by_id = {pt.id: pt for pt in points}
            for outcome in outcomes:
                if outcome.error is not None:
                    by_id[outcome.id].error = outcome.error
                    warn(f"sweep point {outcome.id} failed: {outcome.error}")
                else:
                    reports[outcome.id] = outcome.report
                done += 1
                if progress:
                    progress("sweep", done, len(grid))
    for pt in points:
        if pt.id in reports:
            _fill(pt, reports[pt.id], out / "points" / pt.id, board_obj)
    front = pareto_ids(points)
    for pt in points:
        pt.pareto = pt.id in front
        pt.meets = (pt.error is None and pt.accuracy is not None
                    and (min_accuracy is None or pt.accuracy >= min_accuracy)
                    and (max_flash is None or pt.flash_bytes <= max_flash)
                    and pt.fits is not False)
    meeting = [p for p in points if p.meets]
    best = min(meeting, key=lambda p: (p.flash_bytes, -(p.accuracy or 0))) if meeting else None
    closest = None if best else _closest(points, max_flash, min_accuracy)
    constraints = {"max_flash_bytes": max_flash, "min_accuracy": min_accuracy}
    result = SweepResult(points=points, best=best, closest=closest, constraints=constraints,
                         board=board_obj.id if board_obj else None, out_dir=out, executor=runner.describe())
    result.files = _write_outputs(out, result)
    return result


def _finished(folder: Path, recipe: Recipe) -> Optional[dict]:
    rp = folder / "report.json"
    if not (rp.is_file() and (folder / "model.tflite").is_file()):
        return None
    try:
        rep = json.loads(rp.read_text())
    except (OSError, ValueError):
        return None
    same = json.loads(json.dumps(recipe.to_dict())) == rep.get("recipe")
    return rep if same and rep.get("evaluation") else None


def _fill(pt: SweepPoint, rep: dict, folder: Path, board) -> None:
    ev = rep.get("evaluation") or {}
    score = ev.get("litert") or ev.get("tflm") or {}
    pt.accuracy = score.get("accuracy")
    pt.flash_bytes = rep["sizes"]["final_bytes"]
    pt.arena_bytes = ev.get("tflm_arena_bytes")
    if board is not None:
        from edgekit.model.inspect import inspect

        try:
            info = inspect(folder / "model.tflite", board)
            pt.arena_bytes = info.arena_bytes or pt.arena_bytes
            pt.fits = info.board_fit.fits
            pt.latency_bound_us = (info.roofline or {}).get("latency_bound_us")
            pt.latency_estimate_us = (info.estimate or {}).get("latency_us")
        except Exception as e:  # noqa: BLE001
            from edgekit.errors import EdgekitError

            if not isinstance(e, EdgekitError):
                raise
            pt.error = f"inspect: {e.message}"


def _closest(points: list[SweepPoint], max_flash, min_accuracy) -> Optional[SweepPoint]:
    """The point that misses the constraints by the least (relative shortfalls added up)."""
    def miss(p: SweepPoint) -> float:
        m = 0.0
        if min_accuracy is not None and p.accuracy is not None and p.accuracy < min_accuracy:
            m += (min_accuracy - p.accuracy) / max(min_accuracy, 1e-9)
        if max_flash is not None and p.flash_bytes > max_flash:
            m += (p.flash_bytes - max_flash) / max_flash
        if p.fits is False:
            m += 1.0
        return m

    ok = [p for p in points if p.error is None and p.accuracy is not None]
    return min(ok, key=miss) if ok else None


def _write_outputs(out: Path, result: SweepResult) -> dict:
    files = {}
    buf = io.StringIO()
    fields_ = list(asdict(result.points[0]).keys()) if result.points else []
    w = csv.DictWriter(buf, fieldnames=fields_)
    w.writeheader()
    for p in result.points:
        w.writerow(asdict(p))
    write_text(out / "sweep.csv", buf.getvalue(), skip_if_same=False)
    files["csv"] = out / "sweep.csv"
    write_text(out / "sweep.json", json.dumps(result.to_dict(), indent=2) + "\n", skip_if_same=False)
    files["json"] = out / "sweep.json"
    png = _plot(result)
    if png is not None:
        from edgekit.fileio import write_bytes

        write_bytes(out / "pareto.png", png, skip_if_same=False)
        files["chart"] = out / "pareto.png"
    return files


def _plot(result: SweepResult) -> Optional[bytes]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    pts = [p for p in result.points if p.accuracy is not None]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    ax.scatter([p.flash_bytes / 1024 for p in pts], [100 * p.accuracy for p in pts], c="#8a9bb0",
               label="points", zorder=2)
    front = sorted([p for p in pts if p.pareto], key=lambda p: p.flash_bytes)
    ax.plot([p.flash_bytes / 1024 for p in front], [100 * p.accuracy for p in front], "-o", c="#d1495b",
            label="Pareto front", zorder=3)
    for p in pts:
        ax.annotate(p.id, (p.flash_bytes / 1024, 100 * p.accuracy), fontsize=7, xytext=(4, 3),
                    textcoords="offset points")
    if result.best:
        ax.scatter([result.best.flash_bytes / 1024], [100 * result.best.accuracy], s=160, facecolors="none",
                   edgecolors="#00798c", linewidths=2, label=f"chosen: {result.best.id}", zorder=4)
    c = result.constraints
    if c.get("min_accuracy") is not None:
        ax.axhline(100 * c["min_accuracy"], ls="--", c="#edae49", lw=1, label="min accuracy")
    if c.get("max_flash_bytes") is not None:
        ax.axvline(c["max_flash_bytes"] / 1024, ls="--", c="#66a182", lw=1, label="max flash")
    ax.set_xlabel("model size (KiB)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("edgekit sweep: size vs accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
