"""Mutated-model campaign: damaged .tflite files through inspect, export and profile (API, in this
process: a segfault in native code would end the bench) and through the CLI (subprocesses: exit code
and stderr). Counts outcomes, crashes (anything but an EdgekitError), tracebacks on the CLI, and the
worst time per command.

    python bench/bench_mutants.py [--count 1000] [--cli 100]

Mutations (tests/integration/test_fuzz_tflite.py's, on three models): random bytes, boundary int32
values at aligned offsets, truncation. Asserts nothing.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "integration"))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=1000, help="mutants through the API")
    ap.add_argument("--cli", type=int, default=100, help="of those, how many also through the CLI")
    args = ap.parse_args()

    import tinymodels
    from test_fuzz_tflite import mutate

    import edgekit
    from edgekit import _tf
    from edgekit.errors import EdgekitError

    with _tf.quiet_native():
        models = {"int8 CNN": tinymodels.int8_cnn(), "LUT-compressed CNN": tinymodels.lut_digits_cnn(),
                  "int8 dense": tinymodels.int8_dense()}
    rng = np.random.default_rng(20261202)
    work = Path(tempfile.mkdtemp(prefix="edgekit-mutants-"))
    outcomes: dict[str, Counter] = defaultdict(Counter)
    worst: dict[str, float] = defaultdict(float)
    crashes: list[str] = []
    names = list(models)
    t_all = time.monotonic()
    for k in range(args.count):
        name = names[k % len(names)]
        data = mutate(models[name], rng)
        path = work / f"m{k}.tflite"
        path.write_bytes(data)
        steps = [("inspect", lambda: edgekit.inspect(data, measure_arena_bytes=k % 2 == 0)),
                 ("export", lambda: edgekit.export_c(data, work / f"c{k}")),
                 ("profile", lambda: edgekit.profile(path, runs=2, warmup=0, float_baseline=False))]
        for cmd, call in steps:
            t0 = time.monotonic()
            try:
                call()
                outcome = "result"
            except EdgekitError as e:
                outcome = type(e).__name__
            except Exception as e:  # noqa: BLE001 - what the bench counts
                outcome = "CRASH"
                crashes.append(f"{cmd} mutant {k} ({name}): {type(e).__name__}: {e}")
            worst[cmd] = max(worst[cmd], time.monotonic() - t0)
            outcomes[cmd][outcome] += 1
            if outcome != "result" and cmd == "inspect":
                break                   # a model inspect refuses goes no further
        if (k + 1) % 100 == 0:
            print(f"  {k + 1}/{args.count} mutants, {time.monotonic() - t_all:.0f} s", file=sys.stderr, flush=True)

    tracebacks, bad_codes, cli_worst = 0, 0, 0.0
    cli_outcomes: Counter = Counter()
    from edgekit.errors import EXIT_CODES

    for k in range(min(args.cli, args.count)):
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "edgekit", "inspect", str(work / f"m{k}.tflite")],
                           capture_output=True, text=True, timeout=300)
        cli_worst = max(cli_worst, time.monotonic() - t0)
        cli_outcomes[r.returncode] += 1
        tracebacks += "Traceback" in r.stderr
        bad_codes += r.returncode not in EXIT_CODES

    print(f"\nmutated-model campaign: {args.count} mutants of {len(models)} models "
          f"({', '.join(f'{n} {len(m):,} B' for n, m in models.items())}), {time.monotonic() - t_all:.0f} s")
    print(f"{'command':8} {'runs':>5} {'worst s':>8}  outcomes")
    for cmd in ("inspect", "export", "profile"):
        c = outcomes[cmd]
        print(f"{cmd:8} {sum(c.values()):>5} {worst[cmd]:>8.2f}  "
              + ", ".join(f"{o} {n}" for o, n in c.most_common()))
    print(f"CLI inspect: {sum(cli_outcomes.values())} runs, worst {cli_worst:.2f} s, exit codes "
          f"{dict(sorted(cli_outcomes.items()))}, tracebacks {tracebacks}, undocumented exit codes {bad_codes}")
    print(f"crashes (not an EdgekitError): {len(crashes)}")
    for line in crashes[:10]:
        print("  " + line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
