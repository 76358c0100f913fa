#!/usr/bin/env python3
"""edgekit agent for Linux boards (Raspberry Pi): time a .tflite model with the local LiteRT runtime.

Self-contained: Python 3 + numpy + one of ai_edge_litert / tflite_runtime. edgekit copies this file
to the board and runs it over SSH; it prints one JSON document on stdout and nothing else.

    python3 edgekit_agent.py profile MODEL [--runs N] [--warmup N] [--threads N] [--no-xnnpack]
    python3 edgekit_agent.py hash FILE
    python3 edgekit_agent.py serve MODEL [--bind 127.0.0.1] [--port 8577] [--threads N] [--no-xnnpack]
    python3 edgekit_agent.py install-service MODEL [--bind ..] [--port ..] [--threads N] [--name NAME]
                                             [--unit-dir DIR] [--no-start] [--wait SECONDS]

serve: the model as a small HTTP service (one request at a time; the interpreter is not thread-safe):
    GET  /health  -> {"ok": true, "model_sha256": ..., "inputs": [...], "outputs": [...], ...}
    POST /invoke  {"inputs": [tensor, ...]} or {"input": tensor}; "real": true quantizes real
                  values with the input's scale / zero point -> {"ok": true, "outputs": [...],
                  "real_outputs": [...], "latency_us": ...}
    Errors: {"ok": false, "error": ..., "message": ...} with 400 / 404 / 413. No authentication:
    it listens on 127.0.0.1 unless told otherwise.
install-service: writes a systemd user unit that runs `serve` (ExecStart quoted for systemd), then
    `systemctl --user daemon-reload`, `enable`, `restart`, and waits until /health answers with the
    model's SHA-256.

Exit codes: 0 ok, 2 usage, 3 model unreadable, 12 no TFLite runtime, 13 the runtime failed,
14 no systemd user manager (the unit is written), 15 the service did not come up.
"""
import argparse
import hashlib
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import time

DEFAULT_PORT = 8577
MAX_REQUEST_BYTES = 16 * 1024 * 1024

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


def _numpy():
    try:
        import numpy as np
    except ImportError:
        _fail(12, "runtime_missing", "numpy is not installed on this board", "python3 -m pip install numpy")
    return np


def _read_model(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        _fail(3, "model_unreadable", "cannot read model %s: %s" % (path, e.strerror))


def _interpreter(mod, data, args):
    kwargs = {"model_content": data, "num_threads": args.threads}
    if not args.xnnpack:
        resolver = getattr(getattr(mod, "OpResolverType", None), "BUILTIN_WITHOUT_DEFAULT_DELEGATES", None)
        if resolver is None:
            _fail(2, "usage", "this runtime cannot turn XNNPACK off", "run with XNNPACK on")
        kwargs["experimental_op_resolver_type"] = resolver
    return mod.Interpreter(**kwargs)


def profile(args):
    np = _numpy()
    runtime, mod = _load_runtime()
    data = _read_model(args.model)
    try:
        interp = _interpreter(mod, data, args)
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


def run_inputs(args):
    """Outputs of the model for the samples in an .npy file (one row per sample), as base64 in JSON."""
    import base64

    np = _numpy()
    runtime, mod = _load_runtime()
    data = _read_model(args.model)
    try:
        xs = np.load(args.inputs, allow_pickle=False)
    except (OSError, ValueError) as e:
        _fail(3, "model_unreadable", "cannot read inputs %s: %s" % (args.inputs, e))
    try:
        interp = _interpreter(mod, data, args)
        interp.allocate_tensors()
        inp = interp.get_input_details()
        out = interp.get_output_details()
        if len(inp) != 1 or len(out) != 1:
            _fail(2, "usage", "run takes models with one input and one output")
        outputs, times = [], []
        for k in range(len(xs)):
            interp.set_tensor(inp[0]["index"], xs[k].reshape(inp[0]["shape"]).astype(inp[0]["dtype"]))
            t0 = time.perf_counter_ns()
            interp.invoke()
            times.append((time.perf_counter_ns() - t0) / 1000.0)
            outputs.append(np.ascontiguousarray(interp.get_tensor(out[0]["index"])).tobytes())
    except (ValueError, RuntimeError) as e:
        _fail(13, "runtime_failed", "%s failed on this model: %s" % (runtime, str(e).splitlines()[0] if str(e) else e))
    print(json.dumps({"ok": True, "agent_version": AGENT_VERSION, "runtime": runtime,
                      "outputs_b64": [base64.b64encode(o).decode("ascii") for o in outputs], "times_us": times}))


# -- serve: the model over HTTP --------------------------------------------------------------------
class _BadRequest(Exception):
    def __init__(self, status, kind, message):
        Exception.__init__(self, message)
        self.status, self.kind = status, kind


def _tensor_info(d):
    scale, zero_point = d.get("quantization", (0.0, 0))
    return {"name": d["name"], "shape": [int(x) for x in d["shape"]], "dtype": d["dtype"].__name__,
            "scale": float(scale), "zero_point": int(zero_point)}


class ModelService:
    """One interpreter and the JSON requests it answers (no HTTP in here, so it is easy to test)."""

    def __init__(self, np, runtime, mod, path, args):
        self.np, self.runtime, self.path = np, runtime, os.path.abspath(path)
        data = _read_model(path)
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.model_bytes = len(data)
        try:
            self.interp = _interpreter(mod, data, args)
            self.interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            _fail(13, "runtime_failed", "%s cannot load %s: %s" % (runtime, path, str(e).splitlines()[0] if str(e) else e))
        self.inputs = self.interp.get_input_details()
        self.outputs = self.interp.get_output_details()
        self.threads, self.xnnpack = args.threads, args.xnnpack
        self.started = time.time()
        self.invocations = 0

    def health(self):
        return {"ok": True, "agent_version": AGENT_VERSION, "runtime": self.runtime, "model": self.path,
                "model_sha256": self.sha256, "model_bytes": self.model_bytes,
                "inputs": [_tensor_info(d) for d in self.inputs], "outputs": [_tensor_info(d) for d in self.outputs],
                "threads": self.threads, "xnnpack": self.xnnpack, "invocations": self.invocations,
                "uptime_s": round(time.time() - self.started, 3)}

    def invoke(self, request):
        np = self.np
        if not isinstance(request, dict):
            raise _BadRequest(400, "bad_request", "the body must be a JSON object")
        if "inputs" in request:
            values = request["inputs"]
            if not isinstance(values, list) or len(values) != len(self.inputs):
                raise _BadRequest(400, "bad_request", "\"inputs\" must be a list of %d tensors" % len(self.inputs))
        elif "input" in request and len(self.inputs) == 1:
            values = [request["input"]]
        else:
            raise _BadRequest(400, "bad_request", "give \"inputs\": [tensor, ...] (or \"input\" for one input)")
        real = bool(request.get("real", False))
        for i, (d, v) in enumerate(zip(self.inputs, values)):
            self.interp.set_tensor(d["index"], self._as_input(i, d, v, real))
        t0 = time.perf_counter_ns()
        try:
            self.interp.invoke()
        except (ValueError, RuntimeError) as e:
            raise _BadRequest(500, "runtime_failed", str(e).splitlines()[0] if str(e) else "invoke failed")
        latency_us = (time.perf_counter_ns() - t0) / 1000.0
        self.invocations += 1
        raw, real_out = [], []
        for d in self.outputs:
            out = self.interp.get_tensor(d["index"])
            raw.append(out.tolist())
            scale, zero_point = d.get("quantization", (0.0, 0))
            real_out.append(((out.astype(np.float64) - zero_point) * scale).tolist() if scale else out.tolist())
        return {"ok": True, "outputs": raw, "real_outputs": real_out, "latency_us": latency_us}

    def _as_input(self, i, d, value, real):
        np = self.np
        shape = tuple(int(x) for x in d["shape"])
        dtype = np.dtype(d["dtype"])
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise _BadRequest(400, "bad_input", "input %d: not a rectangular array of numbers" % i)
        if arr.shape != shape and shape[:1] == (1,) and arr.shape == shape[1:]:
            arr = arr.reshape(shape)          # the batch dimension may be left out
        if arr.shape != shape:
            raise _BadRequest(400, "bad_input", "input %d: shape %s does not match the model's %s"
                              % (i, list(arr.shape), list(shape)))
        if not np.all(np.isfinite(arr)):
            raise _BadRequest(400, "bad_input", "input %d: NaN or infinite values" % i)
        scale, zero_point = d.get("quantization", (0.0, 0))
        if real and scale and np.issubdtype(dtype, np.integer):
            arr = np.round(arr / scale + zero_point)
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            if arr.min() < info.min or arr.max() > info.max or np.any(arr != np.round(arr)):
                raise _BadRequest(400, "bad_input", "input %d: values must be whole numbers in %d..%d for %s "
                                  "(send \"real\": true to quantize real values)" % (i, info.min, info.max, dtype.name))
        return arr.astype(dtype)


def serve(args):
    from http.server import BaseHTTPRequestHandler, HTTPServer

    np = _numpy()
    runtime, mod = _load_runtime()
    service = ModelService(np, runtime, mod, args.model, args)

    class Handler(BaseHTTPRequestHandler):
        server_version = "edgekit-agent/" + AGENT_VERSION
        timeout = 30                            # a client that stops sending cannot hold the service

        def _send(self, status, body):
            data = (json.dumps(body) + "\n").encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status, kind, message):
            self._send(status, {"ok": False, "error": kind, "message": message})

        def do_GET(self):
            if self.path.split("?")[0] == "/health":
                self._send(200, service.health())
            else:
                self._error(404, "not_found", "GET /health or POST /invoke")

        def do_POST(self):
            if self.path.split("?")[0] != "/invoke":
                self._error(404, "not_found", "GET /health or POST /invoke")
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self._error(411, "bad_request", "Content-Length required")
                return
            if length < 0 or length > MAX_REQUEST_BYTES:
                self.close_connection = True
                self._error(413, "too_large", "request larger than %d bytes" % MAX_REQUEST_BYTES)
                return
            try:
                request = json.loads(self.rfile.read(length).decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                self._error(400, "bad_request", "the body is not JSON")
                return
            try:
                self._send(200, service.invoke(request))
            except _BadRequest as e:
                self._error(e.status, e.kind, str(e))

        def log_message(self, fmt, *a):       # one line per request on stderr (the journal)
            sys.stderr.write("%s %s\n" % (self.address_string(), fmt % a))

    try:
        httpd = HTTPServer((args.bind, args.port), Handler)
    except OSError as e:
        _fail(2, "usage", "cannot listen on %s:%d: %s" % (args.bind, args.port, e.strerror),
              "pick another --port, or stop what uses it")
    host, port = httpd.server_address[:2]
    print(json.dumps({"ok": True, "listening": "%s:%d" % (host, port), "model_sha256": service.sha256}))
    sys.stdout.flush()
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()


# -- install-service: a systemd user unit that runs serve ---------------------------------------------
def systemd_quote(arg):
    """One ExecStart argument, quoted per systemd.syntax: double quotes with \\ and \" escaped, and
    % and $ doubled (specifier and variable expansion); control characters are refused."""
    if any(ord(c) < 32 or ord(c) == 127 for c in arg):
        _fail(2, "usage", "argument %r holds a control character; systemd units cannot carry it" % arg)
    text = arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return '"%s"' % text


def render_unit(python, agent, model, args):
    argv = [python, agent, "serve", model, "--bind", args.bind, "--port", str(args.port),
            "--threads", str(args.threads)]
    if not args.xnnpack:
        argv.append("--no-xnnpack")
    name = os.path.basename(model)
    description = "".join(c if 32 <= ord(c) < 127 else "?" for c in name).replace("%", "%%")
    return ("# Written by edgekit (edgekit flash --service). Re-run it to change the model or flags.\n"
            "[Unit]\n"
            "Description=edgekit agent: LiteRT service for %s\n"
            "After=network.target\n\n"
            "[Service]\n"
            "Type=simple\n"
            "Environment=PYTHONUNBUFFERED=1\n"
            "ExecStart=%s\n"
            "Restart=on-failure\n"
            "RestartSec=3\n\n"
            "[Install]\n"
            "WantedBy=default.target\n") % (description, " ".join(systemd_quote(a) for a in argv))


def unit_name(model):
    stem = os.path.splitext(os.path.basename(model))[0]
    safe = "".join(c if c.isalnum() or c in "_.-" else "-" for c in stem).strip("-.")[:48]
    return "edgekit-%s.service" % (safe or "model")


def _health(args, timeout):
    import urllib.request

    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(args.bind, args.bind)
    url = "http://%s:%d/health" % ("[%s]" % host if ":" in host else host, args.port)
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read().decode("utf-8"))


def install_service(args):
    model = os.path.abspath(args.model)
    data = _read_model(model)
    sha = hashlib.sha256(data).hexdigest()
    name = args.name or unit_name(model)
    if not name.endswith(".service") or "/" in name:
        _fail(2, "usage", "unit name %r must end in .service and hold no /" % name)
    unit_dir = args.unit_dir or os.path.join(os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config"),
                                             "systemd", "user")
    text = render_unit(sys.executable, os.path.abspath(__file__), model, args)
    path = os.path.join(unit_dir, name)
    try:
        os.makedirs(unit_dir, exist_ok=True)
        tmp = path + ".edgekit-tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)                 # never a half-written unit
    except OSError as e:
        _fail(3, "unit_unwritable", "cannot write %s: %s" % (path, e.strerror), "check the disk (df -h)")
    answer = {"ok": True, "unit": path, "name": name, "model": model, "model_sha256": sha,
              "url": "http://%s:%d" % (args.bind, args.port), "started": False}
    if args.no_start:
        print(json.dumps(answer))
        return
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        _fail(14, "service_unavailable", "no systemctl on this board; the unit is written to %s" % path,
              "run the service another way: %s" % " ".join(shlex.quote(a) for a in [
                  sys.executable, os.path.abspath(__file__), "serve", model, "--port", str(args.port)]))
    for step in (["daemon-reload"], ["enable", name], ["restart", name]):
        try:
            r = subprocess.run([systemctl, "--user"] + step, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=60, universal_newlines=True)
        except subprocess.TimeoutExpired:
            _fail(14, "service_unavailable", "systemctl --user %s did not finish in 60 s" % " ".join(step))
        if r.returncode != 0:
            why = (r.stdout.strip().splitlines() or ["exit %d" % r.returncode])[0]
            _fail(14, "service_unavailable", "systemctl --user %s failed (%s); the unit is written to %s"
                  % (" ".join(step), why, path),
                  "a systemd user manager runs while you are logged in; `sudo loginctl enable-linger %s` "
                  "keeps it running without a login" % os.environ.get("USER", "$USER"))
    deadline = time.monotonic() + args.wait
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            health = _health(args, timeout=2)
            if health.get("model_sha256") == sha:
                answer.update(started=True, health=health)
                print(json.dumps(answer))
                return
            last = "it serves another model (sha256 %s)" % str(health.get("model_sha256"))[:16]
        except (OSError, ValueError) as e:
            last = str(e)
        time.sleep(0.5)
    _fail(15, "service_failed", "the service %s did not answer on port %d within %d s: %s"
          % (name, args.port, args.wait, last), "journalctl --user -u %s" % name)


def hash_file(args):
    data = _read_model(args.model)
    print(json.dumps({"ok": True, "path": os.path.abspath(args.model), "bytes": len(data),
                      "sha256": hashlib.sha256(data).hexdigest()}))


def _common(pp):
    pp.add_argument("model")
    pp.add_argument("--threads", type=int, default=1)
    pp.add_argument("--no-xnnpack", dest="xnnpack", action="store_false")


def main(argv=None):
    p = argparse.ArgumentParser(prog="edgekit_agent")
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("profile")
    _common(pp)
    pp.add_argument("--runs", type=int, default=50)
    pp.add_argument("--warmup", type=int, default=5)
    pp.add_argument("--seed", type=int, default=0)
    hp = sub.add_parser("hash")
    hp.add_argument("model")
    rp = sub.add_parser("run")
    _common(rp)
    rp.add_argument("--inputs", required=True, help=".npy file, one sample per row")
    for cmd in ("serve", "install-service"):
        sp = sub.add_parser(cmd)
        _common(sp)
        sp.add_argument("--bind", default="127.0.0.1")
        sp.add_argument("--port", type=int, default=DEFAULT_PORT)
        if cmd == "install-service":
            sp.add_argument("--name")
            sp.add_argument("--unit-dir")
            sp.add_argument("--no-start", action="store_true")
            sp.add_argument("--wait", type=int, default=20)
    args = p.parse_args(argv)
    if args.cmd == "hash":
        hash_file(args)
        return
    if args.threads < 1:
        _fail(2, "usage", "threads must be >= 1")
    if args.cmd == "profile":
        if args.runs < 1 or args.warmup < 0:
            _fail(2, "usage", "runs must be >= 1, warmup >= 0")
        profile(args)
    elif args.cmd == "run":
        run_inputs(args)
    elif args.cmd == "serve":
        serve(args)
    else:
        if not 1 <= args.port <= 65535:
            _fail(2, "usage", "--port must be within 1..65535")
        install_service(args)


if __name__ == "__main__":
    main()
