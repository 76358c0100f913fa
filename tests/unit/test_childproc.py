"""edgekit.childproc with real child processes: one that answers, crashes (SIGABRT, SIGSEGV), hangs past
its deadline, never reads its request, writes garbage, exits mid-reply, reports errors, or sends what
the restricted unpickler refuses. Each child is a real ``python -m`` process running the module below."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from edgekit import childproc
from edgekit.childproc import ChildProcess, run_once
from edgekit.errors import NativeCrash, NativeTimeout, RuntimeFailed, RuntimeMissing

CHILD_SOURCE = '''
import ctypes, os, pickle, sys, time

from edgekit.childproc import HEADER, MAGIC, serve

RAW = os.environ.get("EK_TEST_CHILD_RAW", "")


def handle(request):
    op = request["op"]
    if op == "echo":
        import numpy as np
        sys.stderr.write("echo: working\\n@@mark 1\\n")
        return {"value": request["value"], "array": np.arange(6, dtype=np.int8).reshape(2, 3) * 3,
                "pid": os.getpid()}
    if op == "abort":
        sys.stderr.write("about to abort\\n")
        sys.stderr.flush()
        os.abort()
    if op == "segv":
        ctypes.string_at(0)
    if op == "hang":
        time.sleep(120)
    if op == "exit":
        sys.stderr.write("giving up\\n")
        sys.exit(3)
    if op == "fail":
        raise ValueError("the model has no inputs")
    if op == "missing":
        import edgekit_no_such_runtime  # noqa: F401
    if op == "evil":
        class Evil:
            def __reduce__(self):
                return (os.system, ("true",))
        return Evil()


def raw():
    """Misbehaviours on the reply channel itself (what a native bug or a stray write can do)."""
    if RAW == "deaf":                    # never reads its request
        time.sleep(120)
    head = os.read(0, HEADER.size)
    os.read(0, HEADER.unpack(head)[1])
    if RAW == "garbage":
        os.write(1, os.urandom(64))
        time.sleep(120)
    if RAW == "half":                    # a frame header announcing 1000 bytes, 10 of them, then exit
        os.write(1, HEADER.pack(MAGIC, 1000) + bytes(10))
        os._exit(0)
    if RAW == "huge":
        os.write(1, HEADER.pack(MAGIC, 1 << 40))
        time.sleep(120)


if RAW:
    raw()
else:
    serve(handle)
'''

MODULE = "ek_test_child"
NAMES = {"name": "TestRT", "crash_hint": "the model is bad", "timeout_hint": "the model spins"}


@pytest.fixture(autouse=True)
def child_module(tmp_path, monkeypatch):
    (tmp_path / f"{MODULE}.py").write_text(CHILD_SOURCE)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.delenv("EK_TEST_CHILD_RAW", raising=False)


@pytest.fixture
def child():
    c = ChildProcess(MODULE, **NAMES)
    yield c
    c.close()


def test_a_child_answers_and_stays_up_between_requests(child):
    first = child.request({"op": "echo", "value": b"x" * 3_000_000}, 30)
    assert first["value"] == b"x" * 3_000_000               # 3 MB each way: far past a pipe's buffer
    np.testing.assert_array_equal(first["array"], [[0, 3, 6], [9, 12, 15]])
    assert first["array"].dtype == np.int8
    assert "echo: working" in child.last_stderr and "@@mark 1" in child.last_stderr
    second = child.request({"op": "echo", "value": 7}, 30)
    assert second["value"] == 7 and second["pid"] == first["pid"]
    assert child.last_stderr.count("echo: working") == 1    # stderr of that request only


@pytest.mark.parametrize("op, signal", [("abort", "SIGABRT"), ("segv", "SIGSEGV")])
def test_a_crash_is_native_crash_with_the_signal_and_the_next_request_restarts(child, op, signal):
    with pytest.raises(NativeCrash) as info:
        child.request({"op": op}, 30)
    err = info.value
    assert type(err) is NativeCrash and err.exit_code == 13
    assert err.message.startswith(f"TestRT crashed ({signal}) during '{op}'")
    assert err.hint == "the model is bad" and "\n" not in err.message
    if op == "abort":
        assert err.message.endswith("its last words: about to abort")
        assert "about to abort" in err.context["stderr"]
    assert not child.running
    assert child.request({"op": "echo", "value": 1}, 30)["value"] == 1


def test_a_hanging_child_is_killed_at_its_deadline(child):
    child.request({"op": "echo", "value": 0}, 30)             # started: the deadline is the work's own
    proc = child._proc
    t0 = time.monotonic()
    with pytest.raises(NativeTimeout) as info:
        child.request({"op": "hang"}, 0.5)
    took = time.monotonic() - t0
    assert 0.5 <= took < 0.5 + 2
    assert info.value.message == "TestRT did not answer 'hang' within 0.5 s; it was killed"
    assert info.value.hint == "the model spins" and isinstance(info.value, NativeCrash)
    assert proc.poll() is not None and proc.returncode < 0    # killed, not left running


def test_ctrl_c_mid_request_kills_the_child_and_the_next_request_starts_afresh(child):
    import signal

    def interrupt(*_):
        raise KeyboardInterrupt

    child.request({"op": "echo", "value": 0}, 30)
    proc = child._proc
    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(KeyboardInterrupt):
            child.request({"op": "hang"}, 30)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert proc.poll() is not None and not child.running
    assert child.request({"op": "echo", "value": 2}, 30)["value"] == 2


def test_a_child_that_never_reads_its_request_times_out_too(monkeypatch):
    monkeypatch.setenv("EK_TEST_CHILD_RAW", "deaf")
    t0 = time.monotonic()
    with pytest.raises(NativeTimeout, match="did not answer 'echo' within 1 s"):
        run_once(MODULE, {"op": "echo", "value": bytes(4 << 20)}, 1.0, **NAMES)   # 4 MB: writing blocks
    assert time.monotonic() - t0 < 1.0 + 2


@pytest.mark.parametrize("raw, expected", [
    ("garbage", r"TestRT sent a malformed reply to 'echo' \(b'.*' where a frame starts\); it was killed"),
    ("huge", r"TestRT sent a malformed reply to 'echo' \(a frame of 1099511627776 bytes\); it was killed"),
    ("half", r"TestRT exited without answering 'echo'"),
])
def test_garbage_and_a_cut_reply_are_native_crashes_at_once(monkeypatch, raw, expected):
    monkeypatch.setenv("EK_TEST_CHILD_RAW", raw)
    t0 = time.monotonic()
    with pytest.raises(NativeCrash, match=expected) as info:
        run_once(MODULE, {"op": "echo", "value": 1}, 60, **NAMES)
    assert type(info.value) is NativeCrash
    assert time.monotonic() - t0 < 10                          # not the 60 s deadline


def test_a_reply_naming_other_code_is_refused():
    with pytest.raises(NativeCrash, match=r"malformed reply to 'evil' \(unreadable: UnpicklingError\)"):
        run_once(MODULE, {"op": "evil"}, 30, **NAMES)


def test_an_exit_mid_request_names_the_code_and_the_last_words(child):
    with pytest.raises(NativeCrash, match=r"^TestRT exited with code 3 during 'exit'; its last words: giving up$"):
        child.request({"op": "exit"}, 30)


def test_errors_the_child_reports_map_into_the_error_tree(child):
    with pytest.raises(RuntimeFailed) as info:
        child.request({"op": "fail"}, 30)
    assert info.value.message == "TestRT: ValueError: the model has no inputs"
    assert info.value.kind == "failed" and info.value.exit_code == 6
    pid = child._proc.pid
    with pytest.raises(RuntimeMissing, match="cannot import edgekit_no_such_runtime") as info:
        child.request({"op": "missing"}, 30)
    assert info.value.hint == childproc.MISSING_HINT
    assert child._proc.pid == pid                              # an answered error keeps the child


def test_run_once_returns_the_stderr_and_leaves_no_child():
    reply, stderr = run_once(MODULE, {"op": "echo", "value": "v"}, 30, **NAMES)
    assert reply["value"] == "v" and "echo: working" in stderr
    with pytest.raises(ProcessLookupError):
        os.kill(reply["pid"], 0)


def test_last_words_skip_progress_marks():
    assert childproc.last_words("Failed to allocate\n@@probe 1024 0\n") == "Failed to allocate"
    assert childproc.last_words("@@probe 1\n") == ""
    assert childproc.signal_name(-11) == "SIGSEGV" and childproc.signal_name(-99) == "signal 99"
