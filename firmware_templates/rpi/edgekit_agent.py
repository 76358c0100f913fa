#!/usr/bin/env python3
"""edgekit agent for Linux boards (Raspberry Pi): time a .tflite model with the local LiteRT runtime.

Self-contained: Python 3 + numpy + one of ai_edge_litert / tflite_runtime. edgekit copies this file
to the board and runs it over SSH; it prints one JSON document on stdout and nothing else.

    python3 edgekit_agent.py profile MODEL [--runs N] [--warmup N] [--threads N] [--no-xnnpack]

Exit codes: 0 ok, 2 usage, 3 model unreadable, 12 no TFLite runtime, 13 the runtime failed.
"""
import argparse
import json
import resource
import sys
import time

AGENT_VERSION = "1"


def _fail(code, kind, message, hint=None):
    print(json.dumps({"ok": False, "error": kind, "message": message, "hint": hint}))
    sys.exit(code)


def _load_runtime():
    try:
        from ai_edge_litert import interpreter as mod
        return "ai_edge_litert", mod
    except ImportError:
        pass
    try:
        from tflite_runtime import interpreter as mod
        return "tflite_runtime", mod
    except ImportError:
        pass
    _fail(12, "runtime_missing", "no TFLite runtime on this board (neither ai_edge_litert nor tflite_runtime)",
          "install one for this Python: python3 -m pip install ai-edge-litert")


def _random_input(np, detail, rng):
    dtype = np.dtype(detail["dtype"])
    shape = [int(s) for s in detail["shape"]]
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=np.int64).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 1, size=shape, endpoint=True).astype(dtype)
    return rng.uniform(-1, 1, size=shape).astype(dtype)


def profile(args):
    try:
        import numpy as np
    except ImportError:
        _fail(12, "runtime_missing", "numpy is not installed on this board", "python3 -m pip install numpy")
    runtime, mod = _load_runtime()
    try:
        with open(args.model, "rb") as f:
            data = f.read()
    except OSError as e:
        _fail(3, "model_unreadable", "cannot read model %s: %s" % (args.model, e.strerror))
    kwargs = {"model_content": data, "num_threads": args.threads}
    if not args.xnnpack:
        resolver = getattr(getattr(mod, "OpResolverType", None), "BUILTIN_WITHOUT_DEFAULT_DELEGATES", None)
        if resolver is None:
            _fail(2, "usage", "this runtime cannot turn XNNPACK off", "run with XNNPACK on")
        kwargs["experimental_op_resolver_type"] = resolver
    try:
        interp = mod.Interpreter(**kwargs)
        interp.allocate_tensors()
        rng = np.random.default_rng(args.seed)
        for d in interp.get_input_details():
            interp.set_tensor(d["index"], _random_input(np, d, rng))
        t0 = time.perf_counter_ns()
        interp.invoke()
        first_us = (time.perf_counter_ns() - t0) / 1000.0
        for _ in range(args.warmup):
            interp.invoke()
        samples = []
        for _ in range(args.runs):
            t0 = time.perf_counter_ns()
            interp.invoke()
            samples.append((time.perf_counter_ns() - t0) / 1000.0)
    except (ValueError, RuntimeError) as e:
        _fail(13, "runtime_failed", "%s failed on this model: %s" % (runtime, str(e).splitlines()[0] if str(e) else e))
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    import platform
    print(json.dumps({
        "ok": True, "agent_version": AGENT_VERSION, "runtime": runtime,
        "runtime_version": getattr(sys.modules.get(runtime), "__version__", None),
        "python": platform.python_version(), "machine": platform.machine(), "node": platform.node(),
        "threads": args.threads, "xnnpack": args.xnnpack, "first_inference_us": first_us,
        "samples_us": samples, "peak_rss_bytes": int(peak_kb) * 1024, "model_bytes": len(data),
        "per_op": None,
        "per_op_note": "the LiteRT Python Interpreter has no op profiler; use benchmark_model for per-op times",
    }))


def main(argv=None):
    p = argparse.ArgumentParser(prog="edgekit_agent")
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("profile")
    pp.add_argument("model")
    pp.add_argument("--runs", type=int, default=50)
    pp.add_argument("--warmup", type=int, default=5)
    pp.add_argument("--threads", type=int, default=1)
    pp.add_argument("--seed", type=int, default=0)
    pp.add_argument("--no-xnnpack", dest="xnnpack", action="store_false")
    args = p.parse_args(argv)
    if args.runs < 1 or args.warmup < 0 or args.threads < 1:
        _fail(2, "usage", "runs and threads must be >= 1, warmup >= 0")
    profile(args)


if __name__ == "__main__":
    main()
