"""Fault campaign over the device link: every fault kind at 1e-3 and 1e-2 per byte (frame-level kinds
at 100x that per frame), plus silence and unplug, over upload, repeated invokes and profile, through the
fault relay between the host session and the virtual board. Prints runs, correct, clean errors, silent
corruptions and the worst time (to an error) per fault kind, rate and operation.

    python bench/bench_faults.py [--seeds 3] [--model digits|tiny]

Asserts nothing (benchmarks never fail a build); the same cases are checked in
tests/integration/test_fault_campaign.py.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--model", choices=("digits", "tiny"), default="digits")
    args = ap.parse_args()

    import faultcampaign as fc
    from conformance.linkkit import cached_model

    cache = Path(tempfile.gettempdir()) / "edgekit-bench-faults"
    cache.mkdir(exist_ok=True)
    model = cached_model("digits_cnn" if args.model == "digits" else "int8_cnn", cache)
    t0 = time.monotonic()

    def progress(done, total, row):
        print(f"  [{done}/{total}] {row.kind} {row.rate} {row.op} seed {row.seed}: {row.outcome} "
              f"{row.seconds:.2f} s {row.error[:80]}", file=sys.stderr, flush=True)

    rows = fc.campaign(model, 64, seeds=tuple(range(1, args.seeds + 1)), progress=progress)
    print(f"\nfault campaign: {args.model} model ({len(model):,} B), {args.seeds} seed(s), "
          f"{len(rows)} runs, {time.monotonic() - t0:.0f} s")
    print("\n".join(fc.table(rows)))
    silent = sum(r.outcome == "silent" for r in rows)
    slowest = max(rows, key=lambda r: r.seconds)
    at_1e3 = [r for r in rows if r.rate == 1e-3]
    print(f"\nsilent corruptions: {silent}; runs past {fc.HANG_S:.0f} s: "
          f"{sum(r.seconds > fc.HANG_S for r in rows)}; slowest: {slowest.kind} {slowest.rate} {slowest.op} "
          f"{slowest.seconds:.1f} s")
    print(f"success at 1e-3: {sum(r.outcome == 'ok' for r in at_1e3)}/{len(at_1e3)}; uploads at 1e-3: "
          f"{sum(r.outcome == 'ok' for r in at_1e3 if r.op == 'upload')}/{sum(r.op == 'upload' for r in at_1e3)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
