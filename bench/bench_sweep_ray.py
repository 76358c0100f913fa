"""Benchmark of `edgekit sweep` on Ray: a 3x2 sweep of the digits CNN (sklearn digits, ~21k parameters),
the local executor against Ray with two workers on this machine.

Prints: the wall time of each (the CLI end to end, TensorFlow import and Ray start-up included),
whether the rows are identical, the time of each task (shared prefixes and points), and the expected
wall time on N machines, by calculation from those task times (a list-scheduling simulation of the
same task graph on 2N workers; not measured on N machines).

    python bench/bench_sweep_ray.py [--epochs 3] [--prune 0,0.5,0.75] [--cluster 0,16] [--json out.json]
"""
from __future__ import annotations

import argparse
import heapq
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "digits"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_convert import table, trained_digits  # noqa: E402


def run_sweep(work: Path, name: str, args, extra: list[str]) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "edgekit", "sweep", str(work / "digits.keras"), "--data", str(work / "train.npz"),
           "--eval", str(work / "test.npz"), "--prune", args.prune, "--cluster", args.cluster,
           "--epochs", str(args.epochs), "-o", str(work / name), "--json", *extra]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{name} sweep failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    return wall, json.loads(r.stdout)


def makespan(prefix_s: dict[str, float], point_s: dict[str, float], needs: dict[str, str | None],
             workers: int) -> float:
    """List scheduling of the sweep's task graph: prefix tasks first, then points in grid order; a free
    worker takes the first task whose prefix is done (what Ray does with one CPU per task)."""
    order = [("prefix", k, prefix_s[k], None) for k in prefix_s] + \
            [("point", k, point_s[k], needs.get(k)) for k in point_s]
    done_at: dict[str, float] = {}
    free = [0.0] * workers
    heapq.heapify(free)
    pending = list(order)
    while pending:
        t_free = heapq.heappop(free)
        # the first task in order that is ready by t_free, else the one whose prefix ends first
        ready = [x for x in pending if x[3] is None or done_at.get(x[3], float("inf")) <= t_free]
        task = ready[0] if ready else min((x for x in pending if x[3] in done_at), key=lambda x: done_at[x[3]])
        start = max(t_free, done_at.get(task[3], 0.0) if task[3] else 0.0)
        end = start + task[2]
        done_at[task[1]] = end
        pending.remove(task)
        heapq.heappush(free, end)
    return max(done_at.values())


def point_prefix(point_id: str, prefixes: list[str]) -> str | None:
    """The shared prefix a point of this grid starts from: 'prune S' for p<S>_c<K> when shared."""
    p = point_id.split("_")[0][1:]
    label = f"prune {float(p):g}"
    return label if label in prefixes else None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--prune", default="0,0.5,0.75")
    ap.add_argument("--cluster", default="0,16")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="edgekit-bench-ray-") as tmp:
        work = Path(tmp)
        from edgekit import _tf

        with _tf.quiet_native():
            trained_digits(work)
        local_wall, local = run_sweep(work, "local", args, [])
        ray_wall, ray_doc = run_sweep(work, "ray", args, ["--executor", "ray", "--workers", str(args.workers)])
        local_point_s = {p["id"]: json.loads((work / "local" / "points" / p["id"] / "report.json").read_text())
                         ["duration_s"] for p in local["points"]}

    def row(p):
        return {k: v for k, v in p.items() if k != "reused"}

    same = [row(a) == row(b) for a, b in zip(local["points"], ray_doc["points"])]
    ex = ray_doc["executor"]
    n = len(local["points"])
    print(table(f"edgekit sweep, digits CNN, {args.prune} x {args.cluster} ({n} points, {args.epochs} epochs per "
                "stage), on this machine (host wall time, CLI end to end)",
                ["executor", "wall s", "start-up s", "rows identical to local"],
                [["local (one process)", f"{local_wall:.1f}", "-", "-"],
                 [f"ray, local, {ex['cpus']} workers", f"{ray_wall:.1f}", f"{ex['startup_s']:.1f}",
                  f"{sum(same)}/{n}" + (" (sizes, accuracy, arena, Pareto, choice)" if all(same) else "")]]))
    print()
    prefixes = ex.get("prefix_task_s", {})
    points = ex.get("point_task_s", {})
    rows = [[f"prefix: {k}", f"{v:.1f}", "-"] for k, v in prefixes.items()]
    rows += [[f"point: {p['id']} ({p['recipe']})", f"{points.get(p['id'], float('nan')):.1f}",
              f"{local_point_s[p['id']]:.1f}"] for p in ray_doc["points"]]
    print(table("Task times (host seconds; a worker's first task includes its TensorFlow import)",
                ["task", "ray worker s", "local s"], rows))
    print()
    needs = {pid: point_prefix(pid, list(prefixes)) for pid in points}
    measured_span = makespan(prefixes, points, needs, ex["cpus"])
    overhead = ray_wall - measured_span       # CLI start, Ray start-up, shipping, writing, inspection
    scale = []
    for machines in (1, 2, 3, 4, 8):
        w = machines * args.workers
        span = makespan(prefixes, points, needs, w)
        scale.append([machines, w, f"{span:.1f}", f"{span + overhead:.1f}", f"{local_wall / (span + overhead):.2f}x"])
    print(table(f"Expected wall time on N machines of {args.workers} workers each, by calculation: list scheduling of "
                "the measured task times, plus the measured fixed cost of this run "
                f"({overhead:.1f} s: CLI, Ray start-up, shipping, writing); network time not modelled",
                ["machines", "workers", "tasks s", "expected wall s", "speed-up vs local"], scale))
    crit = max(prefixes.get(needs[p] or "", 0.0) + points[p] for p in points)
    print(f"\nlongest chain (shared prefix + its slowest point): {crit:.1f} s: no number of machines makes the "
          f"tasks of this grid take less")
    # a bigger grid, by the same calculation: each task costs the mean of its kind measured above
    kinds: dict[tuple, list[float]] = {}
    for pid, secs in points.items():
        prune_part, cluster_part = pid.split("_")
        kinds.setdefault((prune_part != "p0", cluster_part != "c0"), []).append(secs)
    mean = {k: sum(v) / len(v) for k, v in kinds.items()}
    if prefixes and len(mean) == 4:
        big_prunes, big_clusters = [0, 0.25, 0.5, 0.75, 0.9], [0, 4, 8, 16]
        big_prefix = {f"prune {p:g}": sum(prefixes.values()) / len(prefixes) for p in big_prunes if p}
        big_points = {f"p{p:g}_c{c}": mean[(p != 0, c != 0)] for p in big_prunes for c in big_clusters}
        big_needs = {pid: point_prefix(pid, list(big_prefix)) for pid in big_points}
        one = makespan(big_prefix, big_points, big_needs, args.workers) + overhead
        big = []
        for machines in (1, 2, 4, 8, 16):
            w = machines * args.workers
            span = makespan(big_prefix, big_points, big_needs, w) + overhead
            big.append([machines, w, f"{span:.0f}", f"{one / span:.2f}x"])
        print()
        print(table(f"Projection, same calculation: a {len(big_prunes)}x{len(big_clusters)} grid ({len(big_points)} points, "
                    f"{len(big_prefix)} shared prune prefixes), each task the mean measured time of its kind",
                    ["machines", "workers", "expected wall s", "speed-up vs 1 machine"], big))
    if args.json:
        args.json.write_text(json.dumps({"local_wall_s": local_wall, "ray_wall_s": ray_wall, "executor": ex,
                                         "rows_identical": all(same), "local_point_s": local_point_s,
                                         "scaling": scale}, indent=2))
    return 0 if all(same) else 1


if __name__ == "__main__":
    sys.exit(main())
