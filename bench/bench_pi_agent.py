"""What the Raspberry Pi agent adds on top of LiteRT, measured on this host (it stands in for a Pi; the
absolute numbers of a Pi are its own, the overheads carry over).

- `edgekit_agent.py profile`: the latency it reports against LiteRT timed in-process here;
- `edgekit_agent.py serve`: one HTTP /invoke round trip (JSON in, JSON out) against a bare invoke,
  and requests per second from one client.

Model: the int8 digits CNN of examples/digits (sklearn digits, 8x8x1 int8 in, 10 int8 out).

    python bench/bench_pi_agent.py [--requests 500]
"""
from __future__ import annotations

import argparse
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AGENT = ROOT / "firmware_templates" / "rpi" / "edgekit_agent.py"
sys.path.insert(0, str(ROOT / "examples" / "digits"))
sys.path.insert(0, str(ROOT / "bench"))


def table(title, header, rows):
    from bench_convert import table as fmt

    return fmt(title, header, rows)


def digits_int8(work: Path) -> Path:
    import numpy as np
    from digits_data import load_split, train_cnn

    import edgekit
    from edgekit import _tf

    x_train, y_train, _, _ = load_split()
    np.savez(work / "train.npz", x=x_train, y=y_train)
    with _tf.quiet_native():
        train_cnn(x_train, y_train, epochs=5).save(work / "digits.keras")
        edgekit.convert(work / "digits.keras", work / "train.npz", None, edgekit.Recipe.from_flags(), work / "out")
    return work / "out" / "model.tflite"


def in_process_us(model: Path, runs: int) -> list[float]:
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model.read_bytes(), num_threads=1)
    interp.allocate_tensors()
    d = interp.get_input_details()[0]
    interp.set_tensor(d["index"], np.zeros(d["shape"], dtype=d["dtype"]))
    for _ in range(20):
        interp.invoke()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        interp.invoke()
        out.append((time.perf_counter_ns() - t0) / 1000.0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=500)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgekit-bench-agent-"))
    model = digits_int8(work)
    runs = args.requests

    local = in_process_us(model, runs)
    t0 = time.perf_counter()
    prof = subprocess.run([sys.executable, str(AGENT), "profile", str(model), "--runs", str(runs), "--warmup", "20"],
                          capture_output=True, text=True, timeout=600, check=True)
    agent_wall = time.perf_counter() - t0
    agent = json.loads(prof.stdout)["samples_us"]

    proc = subprocess.Popen([sys.executable, str(AGENT), "serve", str(model), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        if not ready:
            raise SystemExit("the agent did not start serving within 60 s")
        url = "http://" + json.loads(proc.stdout.readline())["listening"] + "/invoke"
        body = json.dumps({"input": [[[0] for _ in range(8)] for _ in range(8)]}).encode()

        def call() -> dict:
            req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read())

        for _ in range(20):
            call()
        rtt, served = [], []
        t_all = time.perf_counter()
        for _ in range(runs):
            t0 = time.perf_counter_ns()
            answer = call()
            rtt.append((time.perf_counter_ns() - t0) / 1000.0)
            served.append(answer["latency_us"])
        wall = time.perf_counter() - t_all
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)

    med = statistics.median
    print(f"model: {model.stat().st_size:,} B int8 digits CNN; {runs} runs each; host: {os.uname().machine}\n")
    print(table("Latency per inference (microseconds, median / p90)", ["what", "median", "p90"], [
        ["LiteRT in-process (this script)", f"{med(local):.1f}", f"{statistics.quantiles(local, n=10)[-1]:.1f}"],
        ["agent `profile` (reported)", f"{med(agent):.1f}", f"{statistics.quantiles(agent, n=10)[-1]:.1f}"],
        ["agent `serve`: invoke inside the service", f"{med(served):.1f}",
         f"{statistics.quantiles(served, n=10)[-1]:.1f}"],
        ["agent `serve`: HTTP round trip (client)", f"{med(rtt):.1f}", f"{statistics.quantiles(rtt, n=10)[-1]:.1f}"],
    ]))
    print()
    print(table("Service", ["what", "value"], [
        ["HTTP + JSON overhead per request (median RTT - median invoke)", f"{med(rtt) - med(served):.0f} us"],
        ["requests per second, one client, keep-alive off", f"{runs / wall:.0f}"],
        ["agent profile: wall time of the whole call", f"{agent_wall:.2f} s"],
    ]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
