"""Benchmark of structured (channel) pruning on the digits CNN (sklearn digits, ~21k parameters).

One table: int8 PTQ, unstructured pruning (`--prune 0.5`), channel pruning (`--prune-channels F`), and
channel pruning chained with cluster + preserving QAT + LUT compression. Per chain: accuracy and its
change against the Keras float model, Keras parameters, MACs (counted from the .tflite shapes), model
bytes and their ratio to the float32 .tflite, gzip bytes, the exact TFLM arena (host TFLM), and the
instructions per inference on the emulated Cortex-M4 (QEMU mps2-an386, real TFLM + CMSIS-NN from a
tflite-micro tree; needs EDGEKIT_TFLM_SRC or --tflm-src, qemu-system-arm and arm-none-eabi-g++;
the first cross build takes minutes, then it is cached).

Fine-tuning epochs: 6 after channel pruning (and after unstructured pruning), 4 for clustering, 2 for
QAT. The test set has 449 samples: one sample is 0.22 points, and a fine-tuning run's accuracy moves by
about that much from seed to seed, so read "within 1.0 point" with that in mind.

    python bench/bench_prune_channels.py [--quick] [--tflm-src DIR] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "digits"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_convert import table, trained_digits  # noqa: E402


def _emulated_tree(explicit: str | None):
    """A tflite-micro tree for the qemu-m4 firmware (it has DECODE for the LUT chains), or (None, why)."""
    from edgekit.tflm.tree import describe_tree, find_trees

    missing = [t for t in ("qemu-system-arm", "arm-none-eabi-g++") if shutil.which(t) is None]
    if missing:
        return None, f"{', '.join(missing)} not installed"
    trees = [describe_tree(explicit)] if explicit else find_trees().trees
    tree = next((t for t in trees if t.layout == "tflite-micro"), None)
    return (tree, None) if tree else (None, "no tflite-micro tree (set EDGEKIT_TFLM_SRC or pass --tflm-src)")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer chains")
    ap.add_argument("--runs", type=int, default=10, help="emulated inferences per model")
    ap.add_argument("--tflm-src", default=None)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import edgekit
    from edgekit import _tf
    from edgekit.optimize.recipe import Recipe

    tree, no_emulation = _emulated_tree(args.tflm_src)
    work = Path(tempfile.mkdtemp(prefix="edgekit-bench-channels-"))
    model, (x_train, x_test) = trained_digits(work)
    print(f"digits CNN: {model.count_params():,} parameters; train {len(x_train)}, test {len(x_test)}; "
          f"emulated Cortex-M4: {tree.label if tree else 'not available: ' + no_emulation}\n", flush=True)

    def recipe(prune_channels=None, prune=None, cluster=None, qat=False, compress=None, scope="layer"):
        r = Recipe.from_flags(prune_channels=prune_channels, prune=prune, cluster=cluster, qat=qat, compress=compress)
        if r.prune_channels:
            r.prune_channels.epochs, r.prune_channels.scope = 6, scope
        if r.prune:
            r.prune.epochs = 6
        if r.cluster:
            r.cluster.epochs = 4
        if r.qat:
            r.qat.epochs = 2
        return r.check()

    chains = [("int8 PTQ", recipe()),
              ("prune 0.5 (unstructured)", recipe(prune=0.5))]
    fractions = [0.5, 0.625] if args.quick else [0.4, 0.5, 0.625]
    chains += [(f"prune-channels {f:g}", recipe(prune_channels=f)) for f in fractions]
    if not args.quick:
        chains.append(("prune-channels 0.5 global", recipe(prune_channels=0.5, scope="global")))
    chains.append(("cluster 4 + QAT + lut2", recipe(cluster=4, qat=True, compress="lut2")))
    chains.append(("prune-channels 0.4 + cluster 4 + QAT + lut2",
                   recipe(prune_channels=0.4, cluster=4, qat=True, compress="lut2")))
    if not args.quick:
        chains += [("prune-channels 0.4 + cluster 8 + QAT + lut3",
                    recipe(prune_channels=0.4, cluster=8, qat=True, compress="lut3")),
                   ("prune-channels 0.5 + cluster 16 + lut4", recipe(prune_channels=0.5, cluster=16, compress="lut4")),
                   ("prune-channels 0.5 + cluster 4 + QAT + lut2",
                    recipe(prune_channels=0.5, cluster=4, qat=True, compress="lut2"))]

    results = []
    for i, (name, recipe) in enumerate(chains):
        t0 = time.perf_counter()
        folder = work / f"m{i}"
        with _tf.quiet_native():
            rep = edgekit.convert(work / "digits.keras", work / "train.npz", work / "test.npz", recipe, folder).report
        ev = rep["evaluation"]
        final_acc = (ev.get("litert") or ev["tflm"])["accuracy"]
        float_acc = ev["keras_float"]["accuracy"]
        facts = edgekit.inspect(folder / "model.tflite", measure_arena_bytes=False).to_dict()
        cp = rep.get("channel_pruning") or {}
        row = {"chain": name, "accuracy": final_acc, "delta_pt": 100 * (final_acc - float_acc),
               "params": (cp.get("after") or {}).get("params", model.count_params()),
               "macs": facts["total_macs"], "bytes": rep["sizes"]["final_bytes"], "ratio": rep["sizes"]["ratio"],
               "gzip_bytes": rep["sizes"]["final_gzip_bytes"], "arena": ev.get("tflm_arena_bytes"),
               "float_bytes": rep["sizes"]["float_bytes"], "float_accuracy": float_acc,
               "unprunable": [u["layer"] for u in cp.get("unprunable") or []],
               "unstructured": rep.get("unstructured_pruning"), "instructions": None}
        if tree is not None:
            p = edgekit.profile(folder / "model.tflite", board="qemu-m4", runs=args.runs, warmup=2,
                                options={"tflm_src": str(tree.root)}).to_dict()
            row["instructions"] = p["instructions"]["median"]
        row["seconds"] = time.perf_counter() - t0
        results.append(row)
        print(f"  done: {name} ({row['seconds']:.1f} s)", flush=True)

    base = results[0]

    def rel(r, k):
        if r[k] is None or base[k] is None:
            return "-"
        return f"{100 * (r[k] / base[k] - 1):+.0f}"

    rows = [[r["chain"], f"{100 * r['accuracy']:.2f}", f"{r['delta_pt']:+.2f}", f"{r['params']:,}",
             f"{r['macs']:,}", rel(r, "macs"), "-" if r["instructions"] is None else f"{r['instructions']:,.0f}",
             rel(r, "instructions"), f"{r['bytes']:,}", f"{r['ratio']:.3f}", f"{r['gzip_bytes']:,}",
             "-" if r["arena"] is None else f"{r['arena']:,}", rel(r, "arena")] for r in results]
    print()
    print(table(f"Channel pruning on the digits CNN (float32 .tflite {base['float_bytes']:,} B, Keras float accuracy "
                f"{100 * base['float_accuracy']:.2f} %; % columns against int8 PTQ; instructions: median per "
                "inference on the emulated Cortex-M4, qemu-m4)",
                ["chain", "acc %", "Δ pt", "params", "MACs", "MACs %", "instructions", "instr %", "bytes",
                 "x float", "gzip", "arena", "arena %"], rows))
    print()
    structured = [r for r in results if r["chain"].startswith("prune-channels") and "+" not in r["chain"]
                  and r["delta_pt"] >= -1.0]      # channel pruning alone (int8), within 1.0 point
    if structured:
        best = min(structured, key=lambda r: r["macs"])
        print(f"structured pruning within 1.0 pt: {best['chain']}: Δ {best['delta_pt']:+.2f} pt, MACs {rel(best, 'macs')} %"
              f" (target <= -50), instructions {rel(best, 'instructions')} % (target <= -40), arena "
              f"{base['arena']:,} -> {best['arena']:,} B, bytes {base['bytes']:,} -> {best['bytes']:,} B")
    else:
        print("structured pruning: no fraction stayed within 1.0 pt")
    unstructured = results[1]
    print(f"unstructured prune 0.5 on TFLM: bytes {unstructured['bytes']:,} (int8 {base['bytes']:,}), MACs "
          f"{unstructured['macs']:,}, arena {unstructured['arena']:,}, instructions "
          f"{'-' if unstructured['instructions'] is None else format(unstructured['instructions'], ',.0f')} "
          f"(int8 {'-' if base['instructions'] is None else format(base['instructions'], ',.0f')})")
    ok = [r for r in results if r["delta_pt"] >= -1.0]
    smallest = min(ok, key=lambda r: r["bytes"]) if ok else None
    if smallest:
        print(f"smallest chain within 1.0 pt: {smallest['chain']}: {smallest['bytes']:,} B = {smallest['ratio']:.3f} of "
              f"float32 (target <= 0.100), arena {smallest['arena']:,} B, Δ {smallest['delta_pt']:+.2f} pt")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
