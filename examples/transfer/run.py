"""Transfer learning on real data: a base trained on sklearn digits 0-4, transferred to digits 5-9
with only a few labelled samples per class, side by side with training the same architecture from
scratch on the same few samples.

    python examples/transfer/run.py [--per-class 5] [--json out.json]

Prints, for both: best test accuracy on digits 5-9, the epoch that first reached it, and the wall
time to get there (transfer includes the base model's own training time separately).
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


def split_tasks(per_class: int, seed: int = 0):
    from digits_data import load_split

    x_tr, y_tr, x_te, y_te = load_split(seed=seed)
    old_tr = y_tr < 5
    new_tr, new_te = y_tr >= 5, y_te >= 5
    rng = np.random.default_rng(seed)
    few = np.concatenate([rng.choice(np.flatnonzero(y_tr == c), per_class, replace=False) for c in range(5, 10)])
    return {
        "base": (x_tr[old_tr], y_tr[old_tr]),
        "few": (x_tr[few], y_tr[few] - 5),
        "test": (x_te[new_te], y_te[new_te] - 5),
        "unused_new_train": int(new_tr.sum() - len(few)),
    }


def _best(acc: list[float], seconds: list[float]) -> dict:
    best = max(acc)
    epoch = int(np.argmax(np.asarray(acc) >= best)) + 1
    return {"best_accuracy": best, "epochs_to_best": epoch, "seconds_to_best": seconds[epoch - 1],
            "final_accuracy": acc[-1], "epochs": len(acc)}


def compare(per_class: int = 5, base_epochs: int = 20, head_epochs: int = 60, finetune_epochs: int = 20,
            seed: int = 0) -> dict:
    from digits_data import build_cnn

    from edgekit import _tf
    from edgekit.optimize.transfer import FinetuneSettings, finetune

    keras = _tf.keras()
    tasks = split_tasks(per_class, seed)
    xb, yb = tasks["base"]
    xf, yf = tasks["few"]
    xt, yt = tasks["test"]

    keras.utils.set_random_seed(seed)
    t0 = time.perf_counter()
    base = build_cnn(keras, classes=5)
    base.compile(optimizer=keras.optimizers.Adam(1e-3),
                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    base.fit(xb, yb, epochs=base_epochs, batch_size=32, verbose=0)
    base_seconds = time.perf_counter() - t0

    # The transferable part of a CNN is its convolutional feature extractor: cut before the dense
    # layers (at 'flatten'), the standard transfer-learning recipe; same learning rate as scratch.
    settings = FinetuneSettings(cut_at="flatten", trainable_top=2, head_epochs=head_epochs, finetune_epochs=finetune_epochs,
                                learning_rate=1e-3, finetune_learning_rate=1e-4, batch_size=16, seed=seed)
    res = finetune(base, (xf, yf), settings, eval_data=(xt, yt))
    h = res.report["history"]
    t_start = h["seconds"][0] - (h["seconds"][1] - h["seconds"][0]) if len(h["seconds"]) > 1 else 0.0
    transfer = _best(h["eval_accuracy"], [s - max(t_start, 0.0) for s in h["seconds"]])

    # the same architecture from scratch, the same few samples, the same number of epochs
    keras.utils.set_random_seed(seed)
    scratch_model = build_cnn(keras, classes=5)
    scratch_model.compile(optimizer=keras.optimizers.Adam(1e-3),
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    accs, secs = [], []
    t0 = time.perf_counter()

    class Track(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            accs.append(float(np.mean(self.model.predict(xt, verbose=0).argmax(1) == yt)))
            secs.append(time.perf_counter() - t0)

    scratch_model.fit(xf, yf, epochs=head_epochs + finetune_epochs, batch_size=16, verbose=0, callbacks=[Track()])
    scratch = _best(accs, secs)
    return {"per_class": per_class, "few_shot_samples": len(xf), "test_samples": len(xt),
            "base_samples": len(xb), "base_train_seconds": base_seconds,
            "transfer": transfer, "scratch": scratch, "cut_at": res.report["cut_at"],
            "unfrozen_layers": res.report["unfrozen_layers"]}


def print_table(r: dict) -> None:
    print(f"digits 0-4 base ({r['base_samples']} samples, trained in {r['base_train_seconds']:.1f} s); "
          f"new task digits 5-9 with {r['per_class']} samples per class ({r['few_shot_samples']} in all), "
          f"tested on {r['test_samples']}")
    print(f"{'':22}{'best acc':>10}{'epochs to it':>14}{'seconds to it':>15}{'final acc':>11}")
    for k in ("transfer", "scratch"):
        v = r[k]
        print(f"{k:22}{100 * v['best_accuracy']:>9.1f}%{v['epochs_to_best']:>14}{v['seconds_to_best']:>15.2f}"
              f"{100 * v['final_accuracy']:>10.1f}%")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from edgekit import _tf

    with _tf.quiet_native():
        r = compare(per_class=args.per_class)
    print_table(r)
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
