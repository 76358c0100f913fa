"""The virtual board end to end: CLI (virtual-board, profile, validate), SDK results, limits."""
from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conformance.linkkit import model_cache_dir, tiny_float_model, tiny_model, wide_model  # noqa: F401
from edgekit.errors import ProtocolError, ValidationFailed
from edgekit.link.frames import ErrCode
from edgekit.link.session import DeviceSession
from edgekit.link.virtual_board import BoardFaults, VirtualBoard

pytestmark = pytest.mark.timeout(180)

EDGEKIT = [sys.executable, "-m", "edgekit"]


def _run(args, timeout=120):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(EDGEKIT + args, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture
def artifact(tmp_path, tiny_model, tiny_float_model):
    """A convert-style artifact folder: model.tflite and its float baseline."""
    (tmp_path / "model.tflite").write_bytes(tiny_model)
    (tmp_path / "model_float.tflite").write_bytes(tiny_float_model)
    return tmp_path


def test_cli_profile_on_auto_started_virtual_board(artifact):
    out_file = artifact / "profile.json"
    res = _run(["profile", str(artifact / "model.tflite"), "--runs", "40", "--warmup", "3", "--json",
                "--out", str(out_file)])
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)                      # stdout is one JSON document
    assert json.loads(out_file.read_text()) == d
    assert d["schema"] == "edgekit.profile/1"
    lat = d["latency_us"]
    assert lat["n"] == 40 == len(d["latency_samples_us"])
    assert lat["min"] <= lat["median"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert lat["ci95_low"] <= lat["mean"] <= lat["ci95_high"]
    assert lat["mean"] == pytest.approx(np.mean(d["latency_samples_us"]))
    assert d["memory"]["arena_used_bytes"] > 0
    assert d["model"]["macs"] > 0
    assert d["timing"]["source"] == "host" and "host time" in d["timing"]["label"]
    assert d["roofline"] is None and d["energy"] is None      # host time is no board's time
    fb = d["float_baseline"]
    assert fb["runs"] > 0 and fb["latency_us_mean"] > 0
    assert d["upload"]["sha256"] == d["model"]["sha256"]
    assert d["per_op"] is None and "PER_OP" in d["per_op_note"]


def test_cli_human_output_has_stats_table(artifact):
    res = _run(["profile", str(artifact / "model.tflite"), "--runs", "10", "--no-float-baseline"])
    assert res.returncode == 0, res.stderr
    for word in ("median", "p99", "arena used", "(host time)", "no board roofline or energy"):
        assert word in res.stdout


def test_cli_virtual_board_serves_until_interrupted(artifact, tiny_model):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(EDGEKIT + ["virtual-board", str(artifact / "model.tflite"), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        buf = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                buf += chunk
                try:
                    info = json.loads(buf)
                    break
                except ValueError:
                    continue
        else:
            pytest.fail("virtual-board printed no port")
        assert info["model_sha256"] == hashlib.sha256(tiny_model).hexdigest()
        res = _run(["profile", str(artifact / "model.tflite"), "--port", info["port"], "--runs", "15",
                    "--no-float-baseline", "--json"])
        assert res.returncode == 0, res.stderr
        d = json.loads(res.stdout)
        assert d["upload"] is None                 # the board already ran this model: hash confirmed
        assert d["device"]["port"] == info["port"]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert b"Traceback" not in proc.stderr.read()


def test_cli_errors_are_one_line(tmp_path, tiny_model):
    model = tmp_path / "model.tflite"
    model.write_bytes(tiny_model)
    res = _run(["profile", str(model), "--board", "nano33ble"])       # no board on USB here
    assert res.returncode == 9 and "no nano33ble found on USB" in res.stderr and "Traceback" not in res.stderr
    res = _run(["profile", str(model), "--board", "nano33ble", "--port", "/dev/ttyNOPE"])
    assert res.returncode == 9 and "no port /dev/ttyNOPE" in res.stderr
    assert "hint:" in res.stderr


def test_cli_help_does_not_import_tensorflow():
    code = ("import sys; from edgekit.cli import device_cmds, main; "
            "assert 'tensorflow' not in sys.modules and 'tflite_micro' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    res = _run(["profile", "--help"])
    assert res.returncode == 0 and "--runs" in res.stdout


def _val_data(path, n=30, seed=4):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, 8, 8, 1)).astype(np.float32)
    np.savez(path, x=x, y=rng.integers(0, 10, n))
    return path


def test_cli_validate_passes_against_host(artifact):
    data = _val_data(artifact / "val.npz")
    res = _run(["validate", str(artifact / "model.tflite"), "--data", str(data), "-n", "25", "--json"])
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    assert d["samples"] == 25 and d["passed"] is True
    assert d["agreement_tflm"] == 1.0 and d["max_lsb_tflm"] == 0     # same kernels: bit-exact
    assert d["max_lsb"] <= 1
    assert d["accuracy_device"] is not None


def test_validate_fails_when_device_is_wrong(artifact):
    from edgekit.validation import validate

    data = _val_data(artifact / "val.npz", n=10)
    with pytest.raises(ValidationFailed, match="LSBs") as info:
        validate(artifact / "model.tflite", data, n=10, max_lsb=1,
                 options={"faults": BoardFaults(output_offset=3)})
    assert info.value.exit_code == 10
    res = validate(artifact / "model.tflite", data, n=10, max_lsb=1, raise_on_fail=False,
                   options={"faults": BoardFaults(output_offset=3)})
    assert res.max_lsb >= 3 and res.max_lsb_tflm >= 3 and not res.passed


def test_small_frames_stage_input_and_read_output(tiny_model, wide_model):
    """max_payload 40: inputs go by TENSOR_WRITE, long outputs come back by TENSOR_READ."""
    from edgekit.model import tflm_host

    rng = np.random.default_rng(2)
    xs = rng.integers(-128, 128, (4, 8, 8, 1)).astype(np.int8)
    host = tflm_host.invoke(tiny_model, xs)["outputs"][0].reshape(4, -1)
    ws = rng.integers(-128, 128, (3, 16)).astype(np.int8)
    host_w = tflm_host.invoke(wide_model, ws)["outputs"][0].reshape(3, -1)
    with VirtualBoard(max_payload=40) as board, DeviceSession.open(board.port) as s:
        up = s.upload(tiny_model)
        assert up.chunk_size == 36
        for k in range(4):
            out = s.invoke(xs[k].tobytes())            # 64 input bytes > 40: staged
            np.testing.assert_array_equal(np.frombuffer(out.output, np.int8), host[k])
        train = s.profile(1, 30)        # 30 records need several PROFILE_RUNS frames
        assert len(train.runs) == 30
        s.upload(wide_model)
        for k in range(3):
            out = s.invoke(ws[k].tobytes())            # 64 output bytes > 24 per reply: read back
            np.testing.assert_array_equal(np.frombuffer(out.output, np.int8), host_w[k])
        assert s.stats.resends == 0
        assert board.requests_handled > 100


def test_invalid_model_never_becomes_active(tiny_model):
    junk = b"TFL3" + os.urandom(2000)
    with VirtualBoard(tiny_model) as board, DeviceSession.open(board.port) as s:
        with pytest.raises(ProtocolError, match="MODEL_INVALID") as info:
            s.upload(junk)
        assert info.value.code == ErrCode.MODEL_INVALID
        assert s.hello().has_model is False and board.model is None
        s.upload(tiny_model)
        assert s.hello().model_sha256 == hashlib.sha256(tiny_model).digest()


def test_too_large_model_is_refused_with_a_hint(tiny_model):
    with VirtualBoard(model_capacity=1000) as board, DeviceSession.open(board.port) as s:
        with pytest.raises(ProtocolError, match="TOO_LARGE") as info:
            s.upload(tiny_model)
        assert "shrink" in info.value.hint


def test_device_logs_reach_the_log_handler(tiny_model):
    logs = []
    with VirtualBoard() as board:
        with DeviceSession.open(board.port, log_handler=lambda lvl, text: logs.append((lvl, text))) as s:
            s.upload(tiny_model)
            s.hello()
    assert any(lvl == 1 and "model active" in text for lvl, text in logs)


def test_no_model_error_names_the_fix():
    with VirtualBoard() as board, DeviceSession.open(board.port) as s:
        with pytest.raises(ProtocolError, match="NO_MODEL") as info:
            s.invoke(bytes(64))
        assert "upload a model" in info.value.hint


def test_documented_schema_example_matches_a_real_result(artifact):
    """docs/profile-schema.md's example has exactly the keys a real result has (two levels deep)."""
    import re
    from pathlib import Path

    from edgekit.profiling import profile

    doc = (Path(__file__).resolve().parents[2] / "docs" / "profile-schema.md").read_text()
    example = json.loads(re.search(r"```json\n(.*?)```", doc, re.S).group(1))
    real = profile(artifact / "model.tflite", runs=5, warmup=1).to_dict()
    assert example["schema"] == real["schema"]

    def keys(d, depth=2, prefix=""):
        out = set()
        for k, v in d.items():
            out.add(prefix + k)
            if depth > 1 and isinstance(v, dict):
                out |= keys(v, depth - 1, prefix + k + ".")
        return out

    assert keys(example) == keys(real)
    table = doc.split("## Example")[0]
    for field in keys(real):
        leaf = re.escape(field.split(".")[-1])
        assert re.search(r"`[^`]*\b" + leaf + r"\b[^`]*`", table), f"{field} is not in the field table"


def test_virtual_runner_runs_and_resets(tiny_model):
    from edgekit.boards import load_board
    from edgekit.model import tflm_host
    from edgekit.runners import get_runner

    runner_cls = get_runner("virtual")
    assert runner_cls.__name__ == "VirtualRunner"
    runner = runner_cls(load_board("virtual"))
    xs = np.random.default_rng(8).integers(-128, 128, (3, 8, 8, 1)).astype(np.int8)
    outs = runner.run("run", model=tiny_model, inputs=[x.tobytes() for x in xs])
    host = tflm_host.invoke(tiny_model, xs)["outputs"][0].reshape(3, -1)
    assert [np.frombuffer(o, np.int8).tolist() for o in outs] == host.tolist()
    with pytest.raises(Exception, match="cannot flash"):
        runner.run("flash")


def test_session_reset_adopts_the_new_boot(tiny_model):
    with VirtualBoard(tiny_model) as board, DeviceSession.open(board.port) as s:
        before = s.hello().boot_nonce
        after = s.reset()
        assert after.boot_nonce != before and s.boot_nonce == after.boot_nonce
        assert board.boots == 2
        assert len(s.invoke(bytes(64)).output) == 10       # no DeviceReset after an asked-for reset


def test_profile_without_profile_capability_times_invokes(artifact):
    from edgekit.link.frames import Capability
    from edgekit.profiling import profile

    class NoProfileBoard(VirtualBoard):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.capabilities &= ~Capability.PROFILE

    board = NoProfileBoard()
    port = board.start()
    try:
        res = profile(artifact / "model.tflite", port=port, runs=12, warmup=1, float_baseline=False)
    finally:
        board.stop()
    assert res.latency_us["n"] == 12 and res.latency_us["min"] > 0
    assert "profile" not in res.device["capabilities"]
    assert res.memory["arena_used_bytes"] == res.upload["arena_used"] > 0     # from UPLOAD_DONE


def test_public_api_names_stay_callable_after_module_imports(artifact):
    """The public functions live in modules of other names (profiling, validation, flashing,
    diagnostics, exporters), so importing those modules cannot rebind edgekit.<function>."""
    import edgekit
    import edgekit.diagnostics  # noqa: F401
    import edgekit.exporters.c_arrays  # noqa: F401
    import edgekit.flashing  # noqa: F401
    from edgekit.profiling import latency_stats  # noqa: F401
    from edgekit.validation import quantize_input  # noqa: F401

    for name in ("profile", "validate", "flash", "doctor", "export", "inspect", "convert"):
        assert callable(getattr(edgekit, name)), name
        assert not isinstance(getattr(edgekit, name), type(edgekit)), name
    res = edgekit.profile(artifact / "model.tflite", runs=3, warmup=0, float_baseline=False)
    assert res.latency_us["n"] == 3


def test_progress_reports_upload_and_runs(artifact):
    from edgekit.profiling import profile

    calls = []
    profile(artifact / "model.tflite", runs=25, warmup=2, float_baseline=False,
            progress=lambda task, done, total: calls.append((task, done, total)))
    uploads = [c for c in calls if c[0] == "upload"]
    runs = [c for c in calls if c[0] == "profile"]
    assert uploads and uploads[-1][1] == uploads[-1][2] == (artifact / "model.tflite").stat().st_size
    assert runs and runs[-1] == ("profile", 25, 25)
    assert all(a[1] <= b[1] for a, b in zip(runs, runs[1:]))


def test_per_op_records_are_merged_into_the_result(artifact):
    """A device with PER_OP: the host collects PROFILE_OPS frames (split over several) into per_op."""
    from edgekit.link import frames as fr
    from edgekit.link.frames import Capability, MsgType
    from edgekit.profiling import profile

    ops = [("CONV_2D", 30, 600_000), ("MAX_POOL_2D", 30, 150_000), ("FULLY_CONNECTED", 30, 250_000)]

    class PerOpBoard(VirtualBoard):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.capabilities |= Capability.PER_OP

        def _profile(self, req, reply):
            captured = []
            super()._profile(req, lambda t, p: captured.append((t, p)))
            for t, p in captured[:-1]:                       # the PROFILE_RUNS frames
                reply(t, p)
            for i, rec in enumerate(ops):                    # one op record per frame
                reply(MsgType.PROFILE_OPS, fr.ProfileOps(len(ops), i, [rec]).pack())
            reply(*captured[-1])                             # PROFILE_END

    board = PerOpBoard()
    port = board.start()
    try:
        res = profile(artifact / "model.tflite", port=port, runs=30, warmup=0, float_baseline=False)
    finally:
        board.stop()
    assert [op["name"] for op in res.per_op] == [n for n, _, _ in ops]
    assert res.per_op[0]["share"] == pytest.approx(0.6)
    assert res.per_op[0]["mean_us"] == pytest.approx(600_000 / 1000 / 30)
    assert res.per_op_note is None


def test_times_measured_on_a_device_get_roofline_and_energy(artifact):
    """A link whose device times itself (a serial board): roofline, energy and the float model's saving."""
    from edgekit.boards import load_board
    from edgekit.profiling import profile_link
    from edgekit.runners.link import DEVICE_CLOCK
    from edgekit.runners.virtual import VirtualRunner

    class TimedVirtual(VirtualRunner):        # the virtual board, its times read as a board's own
        def timing(self):
            return dict(DEVICE_CLOCK)

    d = profile_link(TimedVirtual(load_board("virtual")), artifact / "model.tflite", runs=20, warmup=2).to_dict()
    lat, r, e = d["latency_us"], d["roofline"], d["energy"]
    assert d["timing"]["source"] == "device"
    assert r["compute_bound_us"] == pytest.approx(r["macs"] / (r["peak_macs_per_cycle"] * r["clock_hz"]) * 1e6)
    assert e["estimate"] is True
    assert e["latency_statistic"] == "median"
    assert e["per_inference_uj"] == pytest.approx(e["active_power_mw"] * lat["median"] / 1000)
    assert e["per_inference_uj_low"] <= e["per_inference_uj"] <= e["per_inference_uj_high"]
    fb = e["float_baseline"]
    assert fb["runs"] > 0 and fb["latency_us_mean"] > 0 and fb["latency_us_median"] > 0
    assert fb["per_inference_uj"] == pytest.approx(e["active_power_mw"] * fb["latency_us_median"] / 1000)
    assert fb["saved_uj"] == pytest.approx(fb["per_inference_uj"] - e["per_inference_uj"])


def test_a_device_that_says_it_is_another_board_is_refused(tiny_model, tmp_path):
    """A virtual board passed as a Nano: its numbers would be read as the Nano's, so profile refuses."""
    import edgekit
    from edgekit.errors import DeviceError

    model = tmp_path / "m.tflite"
    model.write_bytes(tiny_model)
    with VirtualBoard() as board:
        with pytest.raises(DeviceError) as exc:
            edgekit.profile(model, board="nano33ble", port=board.port, runs=2, float_baseline=False)
    assert "says it is 'virtual', not nano33ble" in exc.value.message and exc.value.exit_code == 9
    assert "--force" in exc.value.hint


def test_force_uses_a_mismatched_device_and_computes_no_board_numbers(tiny_model, tmp_path):
    """--force: the virtual board passed as a Nano is used, the document says so, and no Nano energy or
    roofline is made from another device's times."""
    import edgekit

    model = tmp_path / "m.tflite"
    model.write_bytes(tiny_model)
    with VirtualBoard() as board:
        d = edgekit.profile(model, board="nano33ble", port=board.port, runs=3, float_baseline=False,
                            options={"force": True}).to_dict()
    assert d["timing"]["board_mismatch"] == "virtual" and "says it is 'virtual'" in d["timing"]["label"]
    assert d["energy"] is None and d["roofline"] is None
    assert d["latency_us"]["n"] == 3
    assert any("says it is 'virtual'" in n for n in d["notes"])


def test_continuous_outputs_are_judged_by_their_error_not_by_argmax(tmp_path):
    """An autoencoder's 640 outputs: argmax agreement is shown, not judged; LSBs and real-unit errors are."""
    import tinymodels

    from edgekit.validation import validate

    model = tmp_path / "ae.tflite"
    model.write_bytes(tinymodels.int8_autoencoder())
    x = np.random.default_rng(5).uniform(-1, 1, size=(8, 640)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    ok = validate(model, tmp_path / "x.npz", n=8)
    assert ok.passed and ok.judged_by.startswith("output LSBs") and ok.max_abs_real == 0.0
    bad = validate(model, tmp_path / "x.npz", n=8, raise_on_fail=False, options={"faults": BoardFaults(output_offset=3)})
    assert not bad.passed and bad.failures == [f"outputs differ by up to {bad.max_lsb} LSBs (limit 1)"]
    from edgekit.profiling import model_facts

    scale = model_facts(model.read_bytes()).outputs[0]["scale"]
    assert bad.max_abs_real == pytest.approx(bad.max_lsb * scale) and 0 < bad.mae_real <= bad.max_abs_real


def test_a_float_baseline_that_does_not_fit_the_board_is_skipped_with_the_reason(artifact):
    """The virtual board's arena holds the int8 model but not its float baseline: the profile still
    succeeds, the baseline says why it is missing, and no half row (energy, savings) is made of it."""
    import edgekit
    from edgekit.model import tflm_host

    int8 = tflm_host.measure_arena((artifact / "model.tflite").read_bytes())["arena_bytes"]
    flt = tflm_host.measure_arena((artifact / "model_float.tflite").read_bytes())["arena_bytes"]
    assert flt > int8 + 64
    d = edgekit.profile(artifact / "model.tflite", runs=5, warmup=1,
                        options={"arena_bytes": (int8 + flt) // 2}).to_dict()
    fb = d["float_baseline"]
    assert d["latency_us"]["n"] == 5
    assert "float model" in fb["skipped"] and "refused" in fb["skipped"]
    assert not any(k in fb for k in ("runs", "latency_us_mean", "per_inference_uj", "saved_uj"))
    res = _run(["profile", str(artifact / "model.tflite"), "--runs", "5", "--opt", f"arena_bytes={(int8 + flt) // 2}"])
    assert res.returncode == 0, res.stderr
    assert "float model" in res.stdout and "skipped" in res.stdout
