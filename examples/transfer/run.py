"""Transfer learning on real data: a base trained on sklearn digits 0-4, transferred to digits 5-9
with a few labelled samples per class, against training the same CNN from scratch on the same samples.

    python examples/transfer/run.py [--per-class 5] [--seeds 3] [--json out.json]

For each seed (which draws the samples and initialises the models) it runs
  transfer head  edgekit finetune --trainable-top 0: base frozen, new head on cached base features;
  transfer       edgekit finetune with its defaults: the head, then conv1+conv2 fine-tuned;
  scratch        the digits CNN from random weights, Adam 1e-3, scored at 10 ... 800 optimizer steps,
and prints test accuracy on all 231 test images of 5-9 with the compute each one spent: samples
seen (epochs x samples), multiply-accumulates counted from the layer shapes, process CPU time and host
wall time. bench/bench_transfer.py runs the same over 1-20 samples per class and adds energy.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples" / "digits"))

SCRATCH_CHECKPOINTS = (10, 25, 50, 100, 200, 400, 800)
SAME_SAMPLES_STEPS = 400      # transfer's default budget: 300 head + 100 fine-tune optimizer steps
BASES = {"A": "the 683 training images of 0-4, 20 epochs",
         "B": "the same images in 10 copies shifted by up to 1 pixel (6,830), 5 epochs"}


def split_tasks(per_class: int, seed: int = 0, draw_seed: int | None = None):
    """Base task (0-4), the few labelled samples of the new task (5-9, labels 0-4) and its test set.
    ``seed`` fixes the train/test split, ``draw_seed`` (default: seed) which few samples are drawn."""
    from digits_data import load_split

    x_tr, y_tr, x_te, y_te = load_split(seed=seed)
    old_tr = y_tr < 5
    new_tr, new_te = y_tr >= 5, y_te >= 5
    rng = np.random.default_rng(seed if draw_seed is None else draw_seed)
    few = np.concatenate([rng.choice(np.flatnonzero(y_tr == c), per_class, replace=False) for c in range(5, 10)])
    return {
        "base": (x_tr[old_tr], y_tr[old_tr]),
        "few": (x_tr[few], y_tr[few] - 5),
        "test": (x_te[new_te], y_te[new_te] - 5),
        "unused_new_train": int(new_tr.sum() - len(few)),
    }


def forward_macs(layers) -> int:
    """Multiply-accumulates of one sample's forward pass through Conv2D and Dense layers."""
    total = 0
    for layer in layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            h, w, c_out = layer.output_shape[1:]
            kh, kw = layer.kernel_size
            total += h * w * c_out * kh * kw * layer.input_shape[-1]
        elif kind == "Dense":
            total += int(layer.input_shape[-1]) * layer.units
    return total


def shifted_copies(x, copies: int, seed: int = 0):
    """Each copy moves every image by -1, 0 or +1 pixel in x and in y (zero fill)."""
    rng = np.random.default_rng(seed)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = []
    for _ in range(copies):
        dx, dy = rng.integers(0, 3, len(x)), rng.integers(0, 3, len(x))
        out.append(np.stack([padded[i, dy[i]:dy[i] + 8, dx[i]:dx[i] + 8] for i in range(len(x))]))
    return np.concatenate(out)


def train_base(kind: str, x, y, epochs: int | None = None):
    """Base A: the images as they are; base B: 10 shifted copies of them. Returns (model, cost)."""
    from digits_data import build_cnn

    from edgekit import _tf

    keras = _tf.keras()
    if kind == "B":
        x, y, epochs = shifted_copies(x, 10), np.tile(y, 10), epochs or 5
    epochs = epochs or 20
    keras.utils.set_random_seed(0)
    t0, c0 = time.perf_counter(), time.process_time()
    model = build_cnn(keras, classes=5)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model, {"samples": len(x), "epochs": epochs, "samples_seen": epochs * len(x),
                   "mmacs": epochs * len(x) * 3 * forward_macs(model.layers) / 1e6,
                   "cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - t0}


def accuracy(model, x, y) -> float:
    return float(np.mean(np.asarray(model(x, training=False)).argmax(1) == y))


def run_transfer(base, xf, yf, xt, yt, seed: int, head_only: bool) -> dict:
    """edgekit.optimize.transfer.finetune with its defaults (head_only: --trainable-top 0)."""
    from edgekit.optimize.transfer import FinetuneSettings, finetune

    res = finetune(base, (xf, yf), FinetuneSettings(seed=seed, trainable_top=0 if head_only else 2))
    c, p = res.report["compute"], res.report["plan"]
    base_fwd = forward_macs(res.model.get_layer("base").layers)
    head_fwd = forward_macs([res.model.get_layer("head_logits")])
    # forward = 1x, backward ~ 2x the forward of the layers gradients pass through
    head_features = (1 if res.report["head_on_cached_features"] else p["head_epochs"]) * len(xf) * base_fwd
    mmacs = (head_features + p["head_epochs"] * len(xf) * 3 * head_fwd
             + p["finetune_epochs"] * len(xf) * 3 * (base_fwd + head_fwd)) / 1e6
    return {"accuracy": accuracy(res.model, xt, yt), "samples_seen": c["samples_seen"], "mmacs": mmacs,
            "cpu_s": c["train_cpu_s"], "wall_s": c["train_wall_s"], "cut_at": res.report["cut_at"],
            "unfrozen_layers": res.report["unfrozen_layers"]}


def run_scratch(xf, yf, xt, yt, seed: int, batch: int, checkpoints=SCRATCH_CHECKPOINTS) -> list[dict]:
    """The digits CNN from random weights; its state at 0 steps and at each checkpoint (scoring left out
    of the times)."""
    from digits_data import build_cnn

    from edgekit import _tf

    keras = _tf.keras()
    keras.utils.set_random_seed(seed)
    t0, c0 = time.perf_counter(), time.process_time()
    model = build_cnn(keras, classes=5)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    per_epoch = -(-len(xf) // batch)
    macs_per_sample = 3 * forward_macs(model.layers)
    spent = {"cpu": 0.0, "wall": 0.0}
    points: list[dict] = []
    todo = list(checkpoints)

    def score(steps: int, seen: int) -> None:
        e0, ec0 = time.perf_counter(), time.process_time()
        points.append({"steps": steps, "accuracy": accuracy(model, xt, yt), "samples_seen": seen,
                       "mmacs": seen * macs_per_sample / 1e6, "cpu_s": ec0 - c0 - spent["cpu"],
                       "wall_s": e0 - t0 - spent["wall"]})
        spent["cpu"] += time.process_time() - ec0
        spent["wall"] += time.perf_counter() - e0

    class Score(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if todo and (epoch + 1) * per_epoch >= todo[0]:
                score(todo.pop(0), (epoch + 1) * len(xf))

    score(0, 0)                               # untrained: what no training time buys
    model.fit(xf, yf, epochs=-(-checkpoints[-1] // per_epoch), batch_size=batch, verbose=0, callbacks=[Score()])
    return points


def compare(per_class=(5,), seeds: int = 3, bases=("A", "B"), base_epochs: int | None = None,
            checkpoints=SCRATCH_CHECKPOINTS, log=None) -> dict:
    """Every method on every (samples per class, seed); the raw numbers, for summarize()."""
    from edgekit.optimize.transfer import FinetuneSettings, plan_training

    tasks = split_tasks(1, seed=0)
    xb, yb = tasks["base"]
    xt, yt = tasks["test"]
    built = {b: train_base(b, xb, yb, base_epochs) for b in bases}
    rows = []
    for k in per_class:
        for seed in range(seeds):
            xf, yf = split_tasks(k, seed=0, draw_seed=100 + seed)["few"]
            row = {"per_class": k, "seed": seed, "samples": len(xf)}
            for b, (base, _) in built.items():
                row[f"transfer_head_{b}"] = run_transfer(base, xf, yf, xt, yt, seed, head_only=True)
                row[f"transfer_{b}"] = run_transfer(base, xf, yf, xt, yt, seed, head_only=False)
            batch = plan_training(len(xf), FinetuneSettings()).batch_size
            row["scratch_curve"] = run_scratch(xf, yf, xt, yt, seed, batch, checkpoints)
            rows.append(row)
            if log is not None:
                print(f"  {k} per class, seed {seed}: " + ", ".join(
                    f"{m} {v['accuracy']:.3f}" for m, v in row.items() if isinstance(v, dict)) +
                    f", scratch {row['scratch_curve'][-1]['accuracy']:.3f}", file=log, flush=True)
    return {"bases": {b: c for b, (_, c) in built.items()}, "rows": rows, "test_samples": len(xt),
            "checkpoints": list(checkpoints)}


def _scratch_at(curve, cpu_s=None, steps=None) -> dict:
    if steps is not None:
        return next(p for p in curve if p["steps"] == steps)
    return [p for p in curve if p["cpu_s"] <= cpu_s or p["steps"] == 0][-1]


def summarize(result: dict, watts: float | None = None) -> list[dict]:
    """One row per (samples per class, method): accuracy mean and spread over seeds, mean compute, and
    the paired difference to scratch at transfer's samples seen (the same seed's samples)."""
    out = []
    bases = list(result["bases"])
    ref = bases[-1]
    same = SAME_SAMPLES_STEPS if SAME_SAMPLES_STEPS in result["checkpoints"] else result["checkpoints"][-1]
    last = result["checkpoints"][-1]
    for k in sorted({r["per_class"] for r in result["rows"]}):
        rows = [r for r in result["rows"] if r["per_class"] == k]
        methods: dict[str, list[dict]] = {}
        for b in bases:
            methods[f"transfer head, base {b}"] = [r[f"transfer_head_{b}"] for r in rows]
            methods[f"transfer, base {b}"] = [r[f"transfer_{b}"] for r in rows]
        methods[f"scratch at transfer {ref}'s CPU"] = [
            _scratch_at(r["scratch_curve"], cpu_s=r[f"transfer_{ref}"]["cpu_s"]) for r in rows]
        methods[f"scratch, {same} steps"] = [_scratch_at(r["scratch_curve"], steps=same) for r in rows]
        if last != same:
            methods[f"scratch, {last} steps"] = [r["scratch_curve"][-1] for r in rows]
        reach, missed = [], 0
        for r in rows:
            goal = r[f"transfer_head_{ref}"]["accuracy"]
            hit = next((p for p in r["scratch_curve"][1:] if p["accuracy"] >= goal), None)
            missed += hit is None
            reach.append(hit or r["scratch_curve"][-1])
        methods[f"scratch to head {ref}'s acc" + (f" ({missed} never)" if missed else "")] = reach
        baseline = np.array([v["accuracy"] for v in methods[f"scratch, {same} steps"]])
        for name, vals in methods.items():
            acc = np.array([v["accuracy"] for v in vals])
            cpu = np.array([v["cpu_s"] for v in vals])
            diff = acc - baseline
            out.append({"per_class": k, "method": name, "seeds": len(vals), "accuracy_mean": float(acc.mean()),
                        "accuracy_sd": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
                        "vs_scratch_mean": float(diff.mean()),
                        "vs_scratch_sd": float(diff.std(ddof=1)) if len(diff) > 1 else 0.0,
                        "samples_seen": float(np.mean([v["samples_seen"] for v in vals])),
                        "mmacs": float(np.mean([v["mmacs"] for v in vals])),
                        "cpu_s": float(cpu.mean()), "wall_s": float(np.mean([v["wall_s"] for v in vals])),
                        "energy_j": None if watts is None else float(cpu.mean() * watts)})
    return out


def print_table(result: dict, summary: list[dict], watts: float | None = None, source: str = "") -> None:
    same = SAME_SAMPLES_STEPS if SAME_SAMPLES_STEPS in result["checkpoints"] else result["checkpoints"][-1]
    print(f"Transfer (digits 0-4 base -> digits 5-9) against scratch: {summary[0]['seeds']} seeds, "
          f"tested on {result['test_samples']} images of 5-9; mean ± sd over seeds")
    for b, c in result["bases"].items():
        energy = f", {c['cpu_s'] * watts:.0f} J (est.)" if watts else ""
        print(f"  base {b} ({c['samples']:,} images x {c['epochs']} epochs): {c['samples_seen']:,} samples seen, "
              f"{c['mmacs']:,.0f} MMACs, {c['cpu_s']:.1f} s CPU{energy}; paid once, not in the rows")
    print(f"  'vs scratch' = paired difference to 'scratch, {same} steps' on the same seed's samples "
          "(percentage points)")
    if watts:
        print(f"  energy J = CPU s x {watts:.2f} W per core ({source})")
    head = (f"{'k/class':>7}  {'method':<35}{'test acc':>15}{'vs scratch':>15}{'samples seen':>14}"
            f"{'train MMACs':>13}{'CPU s':>8}{'wall s':>8}" + (f"{'energy J':>10}" if watts else ""))
    print(head)
    print("-" * len(head))
    last = None
    for s in summary:
        k = "" if s["per_class"] == last else str(s["per_class"])
        last = s["per_class"]
        one = s["seeds"] == 1                  # no spread to show
        versus = ("" if s["method"].startswith(f"scratch, {same} ")
                  else f"{100 * s['vs_scratch_mean']:+.1f}" + ("" if one else f" ± {100 * s['vs_scratch_sd']:.1f}"))
        spread = " " * 7 if one else f" ± {100 * s['accuracy_sd']:>4.1f}"
        print(f"{k:>7}  {s['method']:<35}{100 * s['accuracy_mean']:>8.1f}{spread}"
              f"{versus:>15}{s['samples_seen']:>14,.0f}{s['mmacs']:>13,.1f}{s['cpu_s']:>8.2f}{s['wall_s']:>8.2f}"
              + (f"{s['energy_j']:>10.1f}" if watts else ""))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import os

    from edgekit import _tf

    log = open(os.dup(2), "w")                # progress lines; the native log below is silenced
    with _tf.quiet_native():
        result = compare((args.per_class,), args.seeds, log=log)
    summary = summarize(result)
    print_table(result, summary)
    if args.json:
        args.json.write_text(json.dumps({"result": result, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
