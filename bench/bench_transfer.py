"""Benchmark: transfer learning against training from scratch, with the compute each one spends.

    python bench/bench_transfer.py [--per-class 1,2,3,5,10,20] [--seeds 5] [--core-watts 5.83] [--json F]

The task of examples/transfer (its run.py holds the code): a base CNN trained on sklearn digits 0-4
(8x8 images, shipped with scikit-learn), moved to digits 5-9 with k labelled samples per class, tested
on all 231 test images of 5-9. About 10 minutes on 2 cores.

Bases (each trained once; its cost is printed apart: it is paid once for any number of new tasks)
  A  the issue's base: the 683 training images of 0-4, 20 epochs;
  B  a base trained on more data: the same images in 10 copies shifted by up to one pixel (6,830).
Methods, per k and seed (the seed draws the k samples per class and initialises the model)
  transfer head    edgekit finetune --trainable-top 0: base frozen, new head on cached features;
  transfer         edgekit finetune with its defaults: that head, then conv1+conv2 fine-tuned;
  scratch          the same CNN (digits_data.build_cnn) from random weights on the same samples, Adam
                   1e-3, the batch finetune picks, scored at 10, 25, 50, ... 800 optimizer steps. Rows:
                   at the CPU time of "transfer, base B" (its last checkpoint within it), at
                   transfer's samples seen (400 steps), at 800 steps, and at its first checkpoint at or
                   above the accuracy of "transfer head, base B" on the same seed (a seed that never
                   gets there counts its 800-step cost; the row says how many).

Compute columns
  samples seen   epochs x samples (every sample the optimizer saw, through the base or not);
  train MMACs    multiply-accumulates counted from the layer shapes: forward 1x, backward 2x the
                 forward of the layers gradients pass through; cached features cost one forward;
  CPU s          process CPU time of the training (time.process_time: all threads; scoring left out);
  wall s         host wall time; the machine is shared, so wall > CPU when other work runs;
  energy J       ESTIMATE = CPU s x the per-core power below. Not measured: no power meter or RAPL
                 counter is readable in this VM.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "transfer"))

# The VM reports an Intel Xeon, family 6 model 207 (Emerald Rapids, 5th gen Xeon Scalable) with 300 MB
# of L3 and hides the exact part. The 60-core Xeon Platinum 8580 is the Emerald Rapids part with 300 MB
# L3; Intel's specification gives it a TDP of 350 W: 350 W / 60 cores = 5.83 W per busy core. TDP is
# the sustained all-core package power, so this is a rough per-core share (DRAM, the rest of the
# server and idle cores left out; a vCPU may be one hyperthread of a core): an ESTIMATE, not a reading.
CORE_WATTS = 350.0 / 60
CORE_WATTS_SOURCE = ("ESTIMATE: Intel's 350 W TDP / 60 cores of the Xeon Platinum 8580, the Emerald Rapids "
                     "part with the 300 MB L3 this VM's CPU (family 6 model 207) reports; not measured")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", default="1,2,3,5,10,20")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--bases", default="A,B")
    ap.add_argument("--core-watts", type=float, default=CORE_WATTS,
                    help="per-core power for the energy estimate (default: the Xeon figure above)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import run as transfer_example

    from edgekit import _tf

    source = CORE_WATTS_SOURCE if args.core_watts == CORE_WATTS else "given with --core-watts"
    log = open(os.dup(2), "w")                # progress lines; the native log below is silenced
    with _tf.quiet_native():
        result = transfer_example.compare(tuple(int(v) for v in args.per_class.split(",")), args.seeds,
                                          tuple(args.bases.split(",")), log=log)
    summary = transfer_example.summarize(result, args.core_watts)
    transfer_example.print_table(result, summary, args.core_watts, source)
    if args.json:
        args.json.write_text(json.dumps({"result": result, "summary": summary, "core_watts": args.core_watts,
                                         "core_watts_source": source}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
