"""`edgekit sweep`: the convert pipeline over a grid of settings, the Pareto front over accuracy, flash
and the board's estimated latency, and the smallest point that meets the constraints and fits the board.

The grid: structured pruning (``prune_channels``) x unstructured pruning (``prune``) x clustering
(``cluster``) x LUT compression (``compress``) x dense-weight quantization granularity
(``granularity``). Each point is a full convert run (its own artifact folder under
``<out>/points/<id>/``). Runs that share a prefix (the same pruning before different cluster counts)
reuse the fine-tuned model of that prefix. A point whose folder already holds a report for the same
recipe is not run again, so an interrupted sweep keeps its finished points and a rerun continues where
it stopped. Grid combinations that make the same recipe as another (lutN on an unclustered point, a
board whose TFLM has no DECODE kernel) run once. Where the points run (this process, or Ray tasks on a
local Ray or a cluster) is an executor's business (edgekit.executors).

With ``emulate``, every finished point's model also runs on the board's emulated core (its own
firmware on QEMU, a few runs): its latency is then instructions x CPI / clock (edgekit.estimate)
instead of the MAC-based estimate. Either way the figure is an estimate and its row says which.
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
from typing import TYPE_CHECKING, Any, Callable, Optional

from edgekit import schemas
from edgekit.errors import UsageError
from edgekit.fileio import check_output_dir, write_text
from edgekit.optimize.recipe import Recipe
from edgekit.progress import ProgressFn

if TYPE_CHECKING:
    from edgekit.executors import Executor

SCHEMA = schemas.SWEEP

# --compress: match (lutN with just enough bits for the cluster count on clustered points, else none),
# none, auto (per tensor, only where it pays), lut1..lut7 (clustered points only)
COMPRESS_CHOICES = ("match", "none", "auto") + tuple(f"lut{n}" for n in range(1, 8))
# --granularity of dense (FULLY_CONNECTED) weights: auto (convert's choice with eval data: per tensor
# where it costs <= 0.1 point), per-channel, per-tensor
GRANULARITIES = ("auto", "per-channel", "per-tensor")

LATENCY_EMULATED = "emulated: instructions x CPI / clock"
LATENCY_MAC = "MAC-based estimate"
RAM_FIT = "the board's fit: tensor arena as the firmware reserves it + firmware RAM"
RAM_ARENA = "the exact tensor arena (host TFLM); no board given"
EMULATE_RUNS = 3                 # emulated inferences per point (-icount: runs differ by ~0.02 %)
EMULATED_FILE = "emulated.json"  # a point's emulated profile, kept for reruns


@dataclass
class SweepPoint:
    id: str
    prune: float = 0.0
    cluster: int = 0
    recipe: str = ""
    prune_channels: float = 0.0
    compress: str = "none"        # what the point got: none | lutN | auto
    granularity: str = "auto"     # dense weights asked for: auto | per-channel | per-tensor
    dense_weights: Optional[str] = None   # what the final model got: per-channel | per-tensor
    same_model_as: Optional[str] = None   # an earlier point whose model is byte for byte this one
    flash_bytes: int = 0
    arena_bytes: Optional[int] = None     # the exact tensor arena (host TFLM)
    ram_bytes: Optional[int] = None       # with a board: its fit's RAM need; without: the exact arena
    accuracy: Optional[float] = None
    latency_bound_us: Optional[float] = None      # roofline floor on the board (MACs / peak)
    latency_estimate_us: Optional[float] = None   # the board's estimated time per inference
    latency_source: Optional[str] = None          # LATENCY_EMULATED or LATENCY_MAC (never host time)
    instructions: Optional[float] = None          # per inference on the emulated core (median)
    energy_uj: Optional[float] = None             # the board's active power x the estimated time
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
    pareto_objectives: list = field(default_factory=lambda: ["accuracy", "flash_bytes"])
    ram_source: str = RAM_ARENA
    emulated: Optional[dict] = None       # the emulated target (board, TFLM tree, runs) with emulate
    merged: list = field(default_factory=list)   # grid combinations that made another point's recipe

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "board": self.board, "constraints": self.constraints,
                "points": [asdict(p) for p in self.points],
                "best": self.best.id if self.best else None,
                "closest": self.closest.id if self.closest else None,
                "pareto_objectives": self.pareto_objectives, "ram_source": self.ram_source,
                "emulated": self.emulated, "merged": self.merged,
                "executor": self.executor,
                "files": {k: str(v) for k, v in self.files.items()}}


_GRID_HINTS = {"prune": "0,0.5,0.75", "cluster": "0,16", "prune-channels": "0,0.25,0.5"}


def parse_grid(text: str, kind: type, name: str) -> list:
    values = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            v = kind(part)
        except ValueError as e:
            raise UsageError(f"--{name}: '{part}' is not a number",
                             hint=f"e.g. --{name} {_GRID_HINTS.get(name, '0,0.5')}") from e
        if isinstance(v, float) and not math.isfinite(v):
            raise UsageError(f"--{name}: '{part}' is not a finite number")
        values.append(v)
    if not values:
        raise UsageError(f"--{name} needs at least one value")
    for v in values:
        if name == "prune" and not (v == 0 or 0 < v < 1):
            raise UsageError(f"--prune value {v} must be 0 (no pruning) or in (0, 1)")
        if name == "prune-channels" and not (v == 0 or 0 < v < 1):
            raise UsageError(f"--prune-channels value {v} must be 0 (no channel pruning) or in (0, 1)")
        if name == "cluster" and not (v == 0 or 2 <= v <= 256):
            raise UsageError(f"--cluster value {v} must be 0 (no clustering) or 2..256")
    return sorted(set(values))


def parse_choices(text: str | list | tuple, name: str, allowed: tuple[str, ...]) -> list[str]:
    """'match,lut4' -> ['match', 'lut4'] for --compress / --granularity, in ``allowed``'s order (the
    default first, so a merged combination keeps the default's id)."""
    parts = text if isinstance(text, (list, tuple)) else str(text).split(",")
    values = []
    for part in parts:
        part = str(part).strip().lower()
        if not part:
            continue
        if part not in allowed:
            raise UsageError(f"--{name}: '{part}' is not one of {', '.join(allowed)}",
                             hint=f"e.g. --{name} {','.join(allowed[:2])}")
        values.append(part)
    if not values:
        raise UsageError(f"--{name} needs at least one value", hint=f"one or more of {', '.join(allowed)}")
    return sorted(set(values), key=allowed.index)


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
        n = int(float(t) * mult)
    except (ValueError, OverflowError) as e:
        raise UsageError(f"size '{text}' is not understood", hint="e.g. 200k, 1M or 50000") from e
    if n <= 0:
        raise UsageError(f"size '{text}' must be more than 0 bytes", hint="e.g. 200k, 1M or 50000")
    return n


def match_bits(cluster: int) -> Optional[int]:
    """Index bits that just hold ``cluster`` values (None: unclustered, or more than LUT's 7 bits hold)."""
    return max(1, math.ceil(math.log2(cluster))) if cluster and cluster <= 128 else None


def point_recipe(prune: float, cluster: int, *, qat: bool, epochs: int, seed: int, prune_channels: float = 0.0,
                 compress: str = "match", granularity: str = "auto") -> Recipe:
    """One grid point: int8 always. ``compress``: match (clustered points get LUT compression with just
    enough index bits), none, auto, lutN (clustered points only: an unclustered point stays
    uncompressed). ``granularity`` of dense weights: auto (convert's default with eval data),
    per-channel or per-tensor. A board's runtime may change the recipe further (recipe_for_board)."""
    if compress not in COMPRESS_CHOICES:
        raise UsageError(f"compress '{compress}' is not one of {', '.join(COMPRESS_CHOICES)}")
    if granularity not in GRANULARITIES:
        raise UsageError(f"granularity '{granularity}' is not one of {', '.join(GRANULARITIES)}")
    if compress == "match":
        bits = match_bits(cluster)
        flag = f"lut{bits}" if bits else None
    elif compress == "none" or (compress.startswith("lut") and not cluster):
        flag = None
    else:
        flag = compress
    trains = bool(prune or cluster or prune_channels)
    recipe = Recipe.from_flags(prune=prune or None, cluster=cluster or None, qat=qat and trains,
                               compress=flag, epochs=epochs, seed=seed, prune_channels=prune_channels or None,
                               dense_per_tensor=granularity == "per-tensor", dense_auto=granularity != "per-channel")
    return recipe


def recipe_for_board(recipe: Recipe, board, facts=None) -> Recipe:
    """A grid point's recipe made for what ``board``'s TFLM runs correctly: no LUT compression without
    DECODE (clustered weights stay uncompressed), per-tensor dense weights without per-channel dense.
    ``facts``: the runtime's facts when they come from a TFLM tree (--tflm-src), else the board file's."""
    from edgekit.optimize.recipe import recipe_for_runtime
    from edgekit.tflm.compat import facts_from_board

    if facts is None:
        facts = facts_from_board(board)
    if facts is not None and not facts.decode and recipe.compress is not None:
        recipe = copy.deepcopy(recipe)
        recipe.compress = None
    recipe = recipe_for_runtime(recipe, facts, board.id)[0]
    if recipe.quantize.dense_per_tensor and not recipe.quantize.dense_auto:
        recipe = copy.deepcopy(recipe)      # dense_auto means nothing once dense weights are per tensor:
        recipe.quantize.dense_auto = True   # one spelling, so combinations that make one model compare equal
    return recipe


def compress_label(recipe: Recipe) -> str:
    c = recipe.compress
    return "none" if c is None else ("auto" if c.auto else f"lut{c.index_bits}")


def granularity_label(recipe: Recipe) -> str:
    q = recipe.quantize
    return "per-tensor" if q.dense_per_tensor else ("auto" if q.dense_auto else "per-channel")


_COMPRESS_SUFFIX = {"none": "_nolut", "auto": "_lutauto"}
_GRANULARITY_SUFFIX = {"per-tensor": "_dpt", "per-channel": "_dpc", "auto": "_dauto"}


def point_id(recipe: Recipe, default: Recipe) -> str:
    """``p<prune>_c<cluster>`` (a sweep's ids before the newer axes, kept so old folders resume), then a
    short suffix for each setting that differs from the point's default: ``_ch<f>`` channel pruning,
    ``_lutN`` / ``_lutauto`` / ``_nolut`` compression other than match, ``_dpt`` / ``_dpc`` dense weights
    per tensor / per channel where auto is the default. ``default``: the same point with compress match
    and granularity auto (after the board's changes)."""
    prune = recipe.prune.target_sparsity if recipe.prune else 0.0
    cluster = recipe.cluster.clusters if recipe.cluster else 0
    pid = f"p{prune:g}_c{cluster}"
    if recipe.prune_channels:
        pid += f"_ch{recipe.prune_channels.fraction:g}"
    comp, base = compress_label(recipe), compress_label(default)
    if comp != base:
        pid += _COMPRESS_SUFFIX.get(comp, f"_{comp}")
    gran, base = granularity_label(recipe), granularity_label(default)
    if gran != base:
        pid += _GRANULARITY_SUFFIX[gran]
    return pid


def pareto_objectives(points: list[SweepPoint]) -> list[str]:
    """accuracy, flash_bytes and latency_estimate_us when every finished point has a latency figure
    (energy on one board is proportional to it), else accuracy and flash_bytes."""
    ok = [p for p in points if p.error is None and p.accuracy is not None]
    if ok and all(p.latency_estimate_us is not None for p in ok):
        return ["accuracy", "flash_bytes", "latency_estimate_us"]
    return ["accuracy", "flash_bytes"]


def pareto_ids(points: list[SweepPoint], objectives: list[str] | None = None) -> set[str]:
    """Points no other point beats: at least as good on every objective (accuracy higher, flash and
    latency lower) and better on one. ``objectives``: default :func:`pareto_objectives`."""
    objectives = objectives or pareto_objectives(points)
    ok = [p for p in points if p.error is None and p.accuracy is not None]

    def cost(p: SweepPoint) -> tuple:
        return tuple(-p.accuracy if name == "accuracy" else getattr(p, name) for name in objectives)

    costs = {id(p): cost(p) for p in ok}
    front = set()
    for p in ok:
        cp = costs[id(p)]
        dominated = any(q is not p and all(a <= b for a, b in zip(costs[id(q)], cp)) and costs[id(q)] != cp
                        for q in ok)
        if not dominated:
            front.add(p.id)
    return front


@dataclass
class _Emulation:
    board: Any
    options: dict
    tree: Any
    runs: int


def check_emulation(board, tflm_src: str | None = None, runs: int = EMULATE_RUNS) -> _Emulation:
    """Refuse, before any work, an emulated sweep that cannot run: a board the emulator cannot run (or
    the emulated machine itself, whose clock is nominal), a board without a CPI calibration, the cross
    compiler or QEMU missing, no TFLM tree."""
    from edgekit.estimate import not_available, time_estimate
    from edgekit.runners import runner_for, seam

    if not 1 <= runs <= 1000:
        raise UsageError(f"--emulate-runs must be 1..1000, got {runs}")
    if not board.emulator:
        then = ("the sweep's latency is then the MAC-based estimate" if board.runtime == "tflm" else
                "a Linux board or phone is measured with `edgekit profile`, not estimated")
        raise UsageError(f"--emulate: board {board.id} ({board.cpu}) cannot be emulated: edgekit emulates "
                         "Cortex-M4 boards only",
                         hint=f"drop --emulate ({then}); boards with an emulator: `edgekit boards` (column emulated)")
    options = {"tflm_src": str(tflm_src)} if tflm_src else {}
    runner = runner_for(board, emulate=True, options=options)
    if not getattr(runner, "emulating", False):
        raise UsageError(f"--emulate: {board.id} is the emulated machine itself; its clock is nominal, so its "
                         "instruction counts give no board's time",
                         hint="emulate a board's own firmware, e.g. --board nano33ble --emulate")
    if time_estimate(1, board) is None:
        raise UsageError(f"--emulate: {not_available(board)}")
    for tool in runner.capabilities.tools:
        seam.require(tool)
    return _Emulation(board=board, options=options, tree=runner.tree(), runs=runs)


@dataclass
class GridPlan:
    """The points a grid makes: one per distinct recipe, ``merged`` the combinations that made a recipe
    an earlier one made (``{"asked": {...}, "same_as": id}``), ``reasons`` why, in one line."""
    points: list[SweepPoint]
    recipes: dict[str, Recipe]
    merged: list[dict]
    reasons: str = ""


def plan_grid(*, prune=(0.0,), cluster=(0,), prune_channels=(0.0,), compress=("match",), granularity=("auto",),
              qat: bool = True, epochs: int = 3, seed: int = 0, board=None, facts=None) -> GridPlan:
    """Every combination of the axes (in that order of nesting: prune-channels, prune, cluster,
    compress, granularity), made for ``board`` (a Board; ``facts`` its runtime from a TFLM tree) and
    merged where two make one recipe. Nothing runs."""
    def made(p, c, pc, comp, gran) -> Recipe:
        r = point_recipe(p, c, qat=qat, epochs=epochs, seed=seed, prune_channels=pc, compress=comp,
                         granularity=gran)
        return recipe_for_board(r, board, facts) if board is not None else r

    points: list[SweepPoint] = []
    recipes: dict[str, Recipe] = {}
    merged: list[dict] = []
    first: dict[str, dict] = {}
    for pc, p, c, comp, gran in itertools.product(prune_channels, prune, cluster, compress, granularity):
        # QAT (TF-MOT's scheme) quantizes dense weights per tensor whatever the converter is told: the
        # granularity axis applies to points without QAT
        recipe = made(p, c, pc, comp, "auto" if qat and (p or c or pc) else gran)
        pid = point_id(recipe, made(p, c, pc, "match", "auto"))
        asked = {"prune_channels": pc, "prune": p, "cluster": c, "compress": comp, "granularity": gran}
        if pid in recipes:
            if recipes[pid].to_dict() != recipe.to_dict():     # pragma: no cover - ids name recipes
                raise AssertionError(f"two recipes for point {pid}")
            merged.append({"asked": asked, "same_as": pid})
            continue
        recipes[pid], first[pid] = recipe, asked
        points.append(SweepPoint(id=pid, prune=p, cluster=c, prune_channels=pc, compress=compress_label(recipe),
                                 granularity=granularity_label(recipe), recipe=recipe.describe()))
    return GridPlan(points, recipes, merged, _merge_reasons(merged, first, board, facts, qat) if merged else "")


def sweep(model: str | Path, data: str | Path, eval_data: str | Path, out_dir: str | Path, *,
          prune: list[float] = (0.0,), cluster: list[int] = (0,), prune_channels: list[float] = (0.0,),
          compress: list[str] = ("match",), granularity: list[str] = ("auto",), qat: bool = True,
          epochs: int = 3, seed: int = 0, board: str | None = None, max_flash: int | None = None,
          max_ram: int | None = None, max_latency_ms: float | None = None, min_accuracy: float | None = None,
          emulate: bool = False, emulate_runs: int = EMULATE_RUNS, tflm_src: str | Path | None = None,
          progress: ProgressFn | None = None, warn: Callable[[str], None] | None = None,
          executor: "str | Executor | None" = None) -> SweepResult:
    """Run the grid; ``executor``: "local" (default), "ray", "ray://HOST:PORT" or an Executor
    (edgekit.executors). Every executor gives the same rows for the same seed.

    Constraints: ``max_flash`` (model bytes), ``max_ram`` (with ``board``: the fit's RAM need, the arena
    as the firmware reserves it + the firmware's RAM; without: the exact arena), ``max_latency_ms``
    (needs ``board``: the emulated estimate with ``emulate``, else the MAC-based one), ``min_accuracy``.
    ``emulate``: run every finished point on ``board``'s emulated core (``emulate_runs`` runs) for its
    instruction counts. ``tflm_src``: the TFLM tree the board's firmware is built from (its DECODE and
    per-channel dense support decide the recipes; the emulated firmware is built from it)."""
    from contextlib import closing

    from edgekit.executors import PointJob, SweepInputs, make_executor

    warn = warn or (lambda m: None)
    for name, value in (("--max-latency", max_latency_ms), ("--max-ram", max_ram), ("--max-flash", max_flash)):
        if value is not None and not value > 0:
            raise UsageError(f"{name} must be more than 0, got {value}")
    if min_accuracy is not None and not 0 < min_accuracy <= 1:
        raise UsageError("--min-accuracy is a fraction in (0, 1], e.g. 0.97")
    prune = parse_grid(",".join(map(str, prune)), float, "prune")
    cluster = parse_grid(",".join(map(str, cluster)), int, "cluster")
    prune_channels = parse_grid(",".join(map(str, prune_channels)), float, "prune-channels")
    compress = parse_choices(list(compress), "compress", COMPRESS_CHOICES)
    granularity = parse_choices(list(granularity), "granularity", GRANULARITIES)
    board_obj = facts = emulation = None
    if board is not None:
        from edgekit.boards import load_board

        board_obj = load_board(board)
    if (emulate or max_latency_ms is not None) and board_obj is None:
        what = "--emulate" if emulate else "--max-latency"
        raise UsageError(f"{what} needs --board: the latency is that board's estimate",
                         hint="add --board B (e.g. --board nano33ble)")
    if tflm_src is not None:
        if board_obj is None:
            raise UsageError("--tflm-src needs --board: the tree is the board's TFLM runtime",
                             hint="add --board B (e.g. --board nano33ble)")
        from edgekit.tflm.compat import facts_from_tree
        from edgekit.tflm.tree import describe_tree

        facts = facts_from_tree(describe_tree(tflm_src))
    if emulate:
        emulation = check_emulation(board_obj, tflm_src, emulate_runs)
    elif max_latency_ms is not None:
        from edgekit.model.inspect import board_estimate

        if board_estimate(1, board_obj) is None:
            raise UsageError(f"--max-latency: there is no latency estimate for {board_obj.id} (edgekit estimates "
                             "microcontroller boards' time; a Linux board or phone is measured)",
                             hint=f"profile it instead: edgekit profile MODEL --board {board_obj.id}")
    out = check_output_dir(out_dir)     # made when the first point writes; checked before any work
    runner = make_executor(executor) if executor is None or isinstance(executor, str) else executor

    grid = plan_grid(prune=prune, cluster=cluster, prune_channels=prune_channels, compress=compress,
                     granularity=granularity, qat=qat, epochs=epochs, seed=seed, board=board_obj, facts=facts)
    points, recipes, merged = grid.points, grid.recipes, grid.merged
    if merged:
        warn(f"{len(merged)} grid combination(s) make the same recipe as another point and run once "
             f"({grid.reasons}); sweep.json lists them under 'merged'")
    jobs: list[PointJob] = []
    reports: dict[str, dict] = {}
    for pt in points:
        folder = out / "points" / pt.id
        rep = _finished(folder, recipes[pt.id])
        if rep is not None:
            pt.reused = True
            reports[pt.id] = rep
        else:
            jobs.append(PointJob(pt.id, recipes[pt.id], folder))
    done = len(reports)
    if progress and done:
        progress("sweep", done, len(points))
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
                    progress("sweep", done, len(points))
    first_with: dict[str, str] = {}
    for pt in points:
        if pt.id in reports:
            _fill(pt, reports[pt.id], out / "points" / pt.id, board_obj, facts)
            sha = reports[pt.id].get("model_sha256")
            if sha in first_with:
                pt.same_model_as = first_with[sha]
            elif sha:
                first_with[sha] = pt.id
    if emulation is not None:
        todo = [pt for pt in points if pt.id in reports and pt.error is None]
        seen: dict = {}
        for k, pt in enumerate(todo):
            _emulate(pt, out / "points" / pt.id, emulation, seen)
            if progress:
                progress("emulate", k + 1, len(todo))
    objectives = pareto_objectives(points)
    front = pareto_ids(points, objectives)
    max_latency_us = None if max_latency_ms is None else max_latency_ms * 1000.0
    for pt in points:
        pt.pareto = pt.id in front
        pt.meets = (pt.error is None and pt.accuracy is not None
                    and (min_accuracy is None or pt.accuracy >= min_accuracy)
                    and (max_flash is None or pt.flash_bytes <= max_flash)
                    and (max_ram is None or (pt.ram_bytes is not None and pt.ram_bytes <= max_ram))
                    and (max_latency_us is None or (pt.latency_estimate_us is not None
                                                    and pt.latency_estimate_us <= max_latency_us))
                    and pt.fits is not False)
    meeting = [p for p in points if p.meets]
    best = min(meeting, key=lambda p: (p.flash_bytes, -(p.accuracy or 0))) if meeting else None
    closest = None if best else _closest(points, max_flash, min_accuracy, max_ram, max_latency_us)
    constraints = {"max_flash_bytes": max_flash, "max_ram_bytes": max_ram, "max_latency_ms": max_latency_ms,
                   "min_accuracy": min_accuracy}
    emulated = None
    if emulation is not None:
        emulated = {"board": board_obj.id, "tflm": emulation.tree.label, "tflm_root": str(emulation.tree.root),
                    "runs": emulation.runs, "latency_source": LATENCY_EMULATED}
    result = SweepResult(points=points, best=best, closest=closest, constraints=constraints,
                         board=board_obj.id if board_obj else None, out_dir=out, executor=runner.describe(),
                         pareto_objectives=objectives, ram_source=RAM_FIT if board_obj is not None else RAM_ARENA,
                         emulated=emulated, merged=merged)
    result.files = _write_outputs(out, result)
    return result


def _merge_reasons(merged: list[dict], first: dict[str, dict], board, facts, qat: bool = True) -> str:
    """Why grid combinations made another point's recipe, one clause per reason. ``first``: point id ->
    the combination that made it."""
    from edgekit.tflm.compat import facts_from_board

    f = facts if facts is not None else (facts_from_board(board) if board is not None else None)
    reasons: list[str] = []

    def add(text: str) -> None:
        if text not in reasons:
            reasons.append(text)

    for m in merged:
        asked, other = m["asked"], first[m["same_as"]]
        if asked["compress"] != other["compress"]:
            pair, c = {asked["compress"], other["compress"]}, asked["cluster"]
            plain = {"match", "none"} | {x for x in pair if x.startswith("lut")}
            if match_bits(c) is None and pair <= plain:
                add("lutN compresses clustered points only" if not c and pair - {"match", "none"} else
                    "compress match and none agree on points that are not clustered (or have more than 128 clusters)")
            elif f is not None and not f.decode:
                add(f"{board.id}'s TFLM ({f.label}) has no DECODE kernel, so no LUT compression")
            else:
                add("lutN with the bits match gives is match")
        if asked["granularity"] != other["granularity"]:
            if qat and (asked["prune"] or asked["cluster"] or asked["prune_channels"]):
                add("QAT quantizes dense weights per tensor, so --granularity applies to points without QAT")
            elif f is not None and not f.per_channel_fully_connected:
                add(f"{board.id}'s TFLM ({f.label}) has no per-channel FULLY_CONNECTED, so dense weights are per "
                    "tensor")
            else:
                add("the same dense weights")
    return "; ".join(reasons)


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


def _fill(pt: SweepPoint, rep: dict, folder: Path, board, facts=None) -> None:
    ev = rep.get("evaluation") or {}
    score = ev.get("litert") or ev.get("tflm") or {}
    pt.accuracy = score.get("accuracy")
    pt.flash_bytes = rep["sizes"]["final_bytes"]
    pt.arena_bytes = ev.get("tflm_arena_bytes")
    pt.ram_bytes = pt.arena_bytes
    pt.dense_weights = _dense_weights(folder / "model.tflite")
    if board is not None:
        from edgekit.model.inspect import inspect

        pt.ram_bytes = None
        try:
            info = inspect(folder / "model.tflite", board, runtime_facts=facts)
            pt.arena_bytes = info.arena_bytes or pt.arena_bytes
            pt.fits = info.board_fit.fits
            pt.ram_bytes = info.board_fit.ram_needed_bytes
            pt.latency_bound_us = (info.roofline or {}).get("latency_bound_us")
            est = info.estimate or {}
            if est.get("latency_us") is not None:
                pt.latency_estimate_us = est["latency_us"]
                pt.energy_uj = est.get("energy_uj")
                pt.latency_source = LATENCY_MAC
        except Exception as e:  # noqa: BLE001
            from edgekit.errors import EdgekitError

            if not isinstance(e, EdgekitError):
                raise
            pt.error = f"inspect: {e.message}"


def _dense_weights(path: Path) -> Optional[str]:
    """per-channel when any FULLY_CONNECTED weight has a scale per output channel, per-tensor when all
    have one, None without quantized dense weights (read from the model, not from what was asked)."""
    from edgekit.errors import EdgekitError
    from edgekit.model.graph import parse
    from edgekit.model.load import load_tflite
    from edgekit.tflm.compat import per_channel_dense_ops

    try:
        graph = parse(load_tflite(path.read_bytes()))
    except (OSError, EdgekitError):
        return None
    dense = [op for sg in graph.subgraphs for op in sg.operators
             if op.op == "FULLY_CONNECTED" and len(op.inputs) > 1 and op.inputs[1] >= 0
             and sg.tensors[op.inputs[1]].scales]
    if not dense:
        return None
    return "per-channel" if per_channel_dense_ops(graph) else "per-tensor"


def _emulate(pt: SweepPoint, folder: Path, emulation: _Emulation, seen: dict | None = None) -> None:
    """The point's model on the board's emulated core: instruction counts -> the board's estimated time
    and energy (edgekit.estimate). Kept in the point's folder (``emulated.json``) for reruns: a folder
    whose model, board and TFLM tree are the same is not run again, nor a model ``seen`` (sha256 ->
    profile document) in this sweep already."""
    from edgekit.errors import EdgekitError
    from edgekit.fileio import sha256

    model = folder / "model.tflite"
    key = {"model_sha256": sha256(model.read_bytes()), "board": emulation.board.id,
           "tflm_root": str(emulation.tree.root), "tflm": emulation.tree.label}
    cache = folder / EMULATED_FILE
    kept: dict = {}
    try:
        kept = json.loads(cache.read_text())
    except (OSError, ValueError):
        pass
    doc = (seen or {}).get(key["model_sha256"])
    if doc is None and isinstance(kept, dict) and kept.get("key") == key and (kept.get("profile") or {}).get("estimate"):
        doc = kept["profile"]
    if doc is None:
        from edgekit.profiling import profile

        try:
            res = profile(model, board=emulation.board, emulate=True, runs=emulation.runs, warmup=1,
                          float_baseline=False, options=emulation.options)
        except EdgekitError as e:               # one point the emulated board cannot run: its row says so
            pt.latency_estimate_us = pt.energy_uj = pt.latency_source = None
            pt.error = f"emulate: {e.message}"
            return
        doc = res.to_dict()
    if not isinstance(kept, dict) or kept.get("key") != key or kept.get("profile") != doc:
        write_text(cache, json.dumps({"key": key, "profile": doc}, indent=1) + "\n", skip_if_same=False)
    if seen is not None:
        seen[key["model_sha256"]] = doc
    est, energy = doc.get("estimate") or {}, doc.get("energy") or {}
    if est.get("latency_us") is None:
        pt.latency_estimate_us = pt.energy_uj = pt.latency_source = None
        pt.error = "emulate: " + ("; ".join(doc.get("notes") or []) or "no time estimate")
        return
    pt.latency_estimate_us = float(est["latency_us"])
    pt.energy_uj = energy.get("per_inference_uj")
    pt.instructions = (doc.get("instructions") or {}).get("median")
    pt.latency_source = LATENCY_EMULATED


def _closest(points: list[SweepPoint], max_flash, min_accuracy, max_ram=None,
             max_latency_us=None) -> Optional[SweepPoint]:
    """The point that misses the constraints by the least (relative shortfalls added up; a figure a
    constraint needs and the point lacks, or a point that does not fit the board, counts as 1)."""
    def over(value, limit) -> float:
        if limit is None:
            return 0.0
        if value is None:
            return 1.0
        return max(0.0, (value - limit) / limit)

    def miss(p: SweepPoint) -> float:
        m = 0.0
        if min_accuracy is not None and p.accuracy is not None and p.accuracy < min_accuracy:
            m += (min_accuracy - p.accuracy) / max(min_accuracy, 1e-9)
        m += over(p.flash_bytes, max_flash) + over(p.ram_bytes, max_ram) + over(p.latency_estimate_us, max_latency_us)
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
    """Size vs accuracy with the Pareto front marked; with latency figures a second panel of estimated
    latency vs accuracy (the front is over all of result.pareto_objectives, so on either panel a front
    point may sit behind another)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    pts = [p for p in result.points if p.accuracy is not None and p.error is None]
    if not pts:
        return None
    lat = [p for p in pts if p.latency_estimate_us is not None]
    c = result.constraints
    three = "latency_estimate_us" in result.pareto_objectives
    panels = [("flash_bytes", 1 / 1024, "model size (KiB)", c.get("max_flash_bytes"), "max flash")]
    if lat:
        sources = sorted({p.latency_source for p in lat if p.latency_source})
        panels.append(("latency_estimate_us", 1 / 1000, f"estimated latency on {result.board} (ms; "
                       f"{', '.join(sources)})", None if c.get("max_latency_ms") is None else
                       c["max_latency_ms"] * 1000, "max latency"))
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5), dpi=110, squeeze=False)
    for ax, (attr, scale, xlabel, limit, limit_label) in zip(axes[0], panels):
        shown = [p for p in pts if getattr(p, attr) is not None]
        ax.scatter([getattr(p, attr) * scale for p in shown], [100 * p.accuracy for p in shown], c="#8a9bb0",
                   label="points", zorder=2)
        front = sorted([p for p in shown if p.pareto], key=lambda p: getattr(p, attr))
        if three:
            ax.scatter([getattr(p, attr) * scale for p in front], [100 * p.accuracy for p in front], c="#d1495b",
                       label="Pareto front (accuracy, flash, latency)", zorder=3)
        else:
            ax.plot([getattr(p, attr) * scale for p in front], [100 * p.accuracy for p in front], "-o",
                    c="#d1495b", label="Pareto front", zorder=3)
        twins: dict[str, list[str]] = {}
        for p in shown:
            if p.same_model_as:
                twins.setdefault(p.same_model_as, []).append(p.id)
        for p in shown:
            if not p.same_model_as:        # a point whose model is another's is named with it
                ax.annotate(" = ".join([p.id, *twins.get(p.id, [])]), (getattr(p, attr) * scale, 100 * p.accuracy),
                            fontsize=7, xytext=(4, 3), textcoords="offset points")
        if result.best and getattr(result.best, attr) is not None:
            ax.scatter([getattr(result.best, attr) * scale], [100 * result.best.accuracy], s=160,
                       facecolors="none", edgecolors="#00798c", linewidths=2, label=f"chosen: {result.best.id}",
                       zorder=4)
        if c.get("min_accuracy") is not None:
            ax.axhline(100 * c["min_accuracy"], ls="--", c="#edae49", lw=1, label="min accuracy")
        if limit is not None:
            ax.axvline(limit * scale, ls="--", c="#66a182", lw=1, label=limit_label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_title("edgekit sweep: size vs accuracy")
    if len(panels) > 1:
        axes[0][1].set_title("edgekit sweep: estimated latency vs accuracy")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
