"""The qemu-m4 board: the C protocol core cross-compiled for Cortex-M4 and run on QEMU mps2-an386,
reached over a pty with the host session. Outputs are checked against the documented test-runner
transform (firmware_templates/qemu-m4/README.md) computed here; hashes against hashlib.
"""
from __future__ import annotations

import hashlib
import os
import random
import shutil
import struct
import uuid

import pytest

from edgekit.errors import ProtocolError, ToolFailed
from edgekit.link import frames as fr
from edgekit.link.frames import Capability, ErrCode, MsgType
from edgekit.link.session import DeviceSession
from edgekit.runners import qemu as qemu_runner

pytestmark = pytest.mark.timeout(180)
_TOOLS_MISSING = shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None
_SKIP_REASON = ("needs qemu-system-arm and arm-none-eabi-gcc (Debian: qemu-system-arm gcc-arm-none-eabi "
                "libnewlib-arm-none-eabi)")


def qemu_test(fn):
    """Marks a test that boots the firmware on QEMU."""
    return pytest.mark.qemu(pytest.mark.skipif(_TOOLS_MISSING, reason=_SKIP_REASON)(fn))

DIGITS_MODEL_BYTES = 27_000          # about the size of the digits int8 model


def transform(model: bytes, inp: bytes, out_len: int) -> bytes:
    return bytes(inp[i % len(inp)] ^ model[i % len(model)] for i in range(out_len))


@pytest.fixture(scope="module")
def firmware(tmp_path_factory):
    return qemu_runner.build_test_firmware(tmp_path_factory.mktemp("qemu-m4"))


@pytest.fixture
def board(firmware):
    machine = qemu_runner.QemuMachine(firmware)
    machine.start()
    try:
        machine.boot_hello = machine.boot()
        yield machine
    finally:
        machine.stop()
    assert not machine.running


@qemu_test
def test_firmware_is_a_cortex_m_elf(firmware):
    data = firmware.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 1                      # 32-bit
    assert struct.unpack_from("<H", data, 18)[0] == 40                   # EM_ARM
    entry = struct.unpack_from("<I", data, 24)[0]
    assert entry & 1, "entry point must be a Thumb address"


@qemu_test
def test_boot_hello(board):
    hello = board.boot_hello
    assert hello.proto_version == 1 and hello.board_id == "qemu-m4"
    assert hello.max_payload == 4096
    assert not hello.has_model
    for cap in (Capability.UPLOAD, Capability.INVOKE, Capability.PROFILE, Capability.PER_OP,
                Capability.CYCLES, Capability.RESET, Capability.LOG):
        assert hello.has(cap), cap.name
    with DeviceSession.open(board.port) as s:
        again = s.hello()
    assert again.boot_nonce == hello.boot_nonce


@qemu_test
def test_upload_digits_sized_model_and_invoke(board):
    rng = random.Random(7)
    model = bytes(rng.getrandbits(8) for _ in range(DIGITS_MODEL_BYTES))
    with DeviceSession.open(board.port) as s:
        up = s.upload(model)
        assert up.sha256 == hashlib.sha256(model).hexdigest()
        assert up.chunk_size == 4092 and up.arena_used == 64 + 10
        info = s.hello()
        assert info.model_len == len(model) and info.model_sha256 == hashlib.sha256(model).digest()
        for _ in range(3):
            inp = bytes(rng.getrandbits(8) for _ in range(64))
            out = s.invoke(inp)
            assert out.output == transform(model, inp, 10)
            assert out.time_ns > 0 and out.cycles > 0


@qemu_test
def test_hash_mismatch_never_activates(board):
    rng = random.Random(8)
    good = bytes(rng.getrandbits(8) for _ in range(5000))
    bad = bytes(rng.getrandbits(8) for _ in range(9000))
    with DeviceSession.open(board.port) as s:
        s.upload(good)
        begin = fr.UploadBegin(len(bad), hashlib.sha256(bad[:-1] + b"\x00").digest()).pack()
        st = fr.UploadStatus.unpack(s.request(MsgType.UPLOAD_BEGIN, begin, reply_types=(MsgType.UPLOAD_STATUS,)).payload)
        off = st.next_offset
        while off < len(bad):
            rep = s.request(MsgType.UPLOAD_CHUNK, fr.OffsetData(off, bad[off:off + st.chunk_size]).pack(),
                            reply_types=(MsgType.UPLOAD_STATUS,))
            off = fr.UploadStatus.unpack(rep.payload).next_offset
        with pytest.raises(ProtocolError) as exc:
            s.request(MsgType.UPLOAD_END, reply_types=(MsgType.UPLOAD_DONE,))
        assert exc.value.code == ErrCode.HASH_MISMATCH
        info = s.hello()
        assert info.model_sha256 == hashlib.sha256(good).digest() and info.model_len == len(good)
        inp = bytes(range(64))
        assert s.invoke(inp).output == transform(good, inp, 10)


@qemu_test
def test_large_tensors_through_staging_and_tensor_read(board):
    rng = random.Random(9)
    in_len, out_len = 6000, 9000                       # more than one 4 KB frame each way
    model = b"EKT1" + struct.pack("<III", in_len, out_len, 0) + bytes(rng.getrandbits(8) for _ in range(1234))
    with DeviceSession.open(board.port) as s:
        assert s.upload(model).arena_used == in_len + out_len
        inp = bytes(rng.getrandbits(8) for _ in range(in_len))
        assert s.invoke(inp).output == transform(model, inp, out_len)


@qemu_test
def test_profile_on_the_target(board):
    with DeviceSession.open(board.port) as s:
        s.upload(bytes(range(1, 256)) * 8)
        train = s.profile(2, 50)
    assert len(train.runs) == 50
    assert all(t > 0 and c > 0 for t, c in train.runs)
    assert [op[:2] for op in train.ops] == [("XOR_TRANSFORM", 50)]
    assert train.arena_used == 74


@qemu_test
def test_reset_changes_the_nonce_and_forgets_the_model(board):
    with DeviceSession.open(board.port) as s:
        first = s.hello()
        s.upload(os.urandom(3000))
        new = s.reset()
        assert new.boot_nonce != first.boot_nonce
        assert not new.has_model
        # the device serves normally after the reset
        assert s.hello().boot_nonce == new.boot_nonce
        with pytest.raises(ProtocolError) as exc:
            s.invoke(bytes(64))
        assert exc.value.code == ErrCode.NO_MODEL


@qemu_test
def test_two_machines_never_share_a_nonce(firmware, board):
    other = qemu_runner.QemuMachine(firmware)
    try:
        other.start()
        assert other.boot().boot_nonce != board.boot_hello.boot_nonce
    finally:
        other.stop()


@qemu_test
def test_garbage_then_resync(board):
    import select
    import time

    rng = random.Random(10)
    fd = os.open(board.port, os.O_RDWR | os.O_NOCTTY)
    try:
        os.write(fd, bytes(rng.randrange(1, 256) for _ in range(5000)) + b"\x00")   # longer than any frame
        os.write(fd, fr.encode_frame(MsgType.HELLO_REQ, 5)[:9] + b"\x00")           # a cut frame
        os.write(fd, fr.encode_frame(MsgType.HELLO_REQ, 9))
        # the UART takes the 5 KB of garbage at its own pace: wait for the one answer generously
        decoder = fr.FrameDecoder()
        got = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(f.seq == 9 for f in got):
            if select.select([fd], [], [], 0.1)[0]:
                got += [f for f in decoder.feed(os.read(fd, 65536)) if f.type != MsgType.LOG]
        time.sleep(0.2)
        if select.select([fd], [], [], 0)[0]:
            got += [f for f in decoder.feed(os.read(fd, 65536)) if f.type != MsgType.LOG]
    finally:
        os.close(fd)
    assert [(f.type, f.seq) for f in got] == [(MsgType.HELLO, 9)], "garbage or a cut frame was answered"
    with DeviceSession.open(board.port) as s:
        assert s.hello().board_id == "qemu-m4"


# -- the runner's commands, with the seam and PATH faked (no QEMU needed) -------------------------


def test_build_test_firmware_goes_through_the_seam(tmp_path, monkeypatch):
    calls = []

    def fake_tool(argv, **kw):
        calls.append((list(argv), kw))
        return qemu_runner.seam.ToolResult(list(argv), 0, "")

    monkeypatch.setattr(qemu_runner.seam, "which", lambda tool: f"/usr/bin/{tool}")
    elf = qemu_runner.build_test_firmware(tmp_path / "out", tool=fake_tool)
    fw_dir = qemu_runner.firmware_templates_dir() / "qemu-m4"
    assert calls == [(["make", "-C", str(fw_dir), f"OUT={(tmp_path / 'out').resolve()}"],
                      {"dry_run": False, "timeout": qemu_runner.BUILD_TIMEOUT_S, "log": None})]
    assert elf == tmp_path / "out" / "edgekit-qemu-m4.elf"


def test_qemu_command_line_starts_halted_on_a_pty(tmp_path):
    qm = qemu_runner.QemuMachine(tmp_path / "fw.elf")
    argv = qm.command("/run/mon.sock")
    assert argv[:3] == ["qemu-system-arm", "-M", "mps2-an386"]
    assert argv[argv.index("-serial") + 1] == "pty" and "-S" in argv
    assert argv[argv.index("-monitor") + 1] == "unix:/run/mon.sock,server=on,wait=off"
    assert argv[argv.index("-kernel") + 1] == str(tmp_path / "fw.elf")
    loader = argv[argv.index("-device") + 1]
    assert loader == f"loader,addr=0x21000008,data={qm.seed:#x},data-len=4"


def test_missing_tools_are_one_clear_error(tmp_path, monkeypatch):
    from edgekit.errors import ToolMissing

    monkeypatch.setattr(qemu_runner.seam, "which", lambda tool: None)
    with pytest.raises(ToolMissing) as exc:
        qemu_runner.build_test_firmware(tmp_path)
    assert "arm-none-eabi-gcc" in str(exc.value) and "gcc-arm-none-eabi" in exc.value.hint
    (tmp_path / "fw.elf").write_bytes(b"\x7fELF")
    with pytest.raises(ToolMissing) as exc:
        qemu_runner.QemuMachine(tmp_path / "fw.elf").start()
    assert "qemu-system-arm" in str(exc.value) and "apt-get install qemu-system-arm" in exc.value.hint


def test_qemu_starts_through_the_seam_and_a_dry_run_starts_nothing(tmp_path, monkeypatch):
    """No QEMU, no firmware needed: the dry run logs the exact command and the monitor's cont."""
    monkeypatch.setattr(qemu_runner.seam, "which", lambda tool: None)
    lines = []
    qm = qemu_runner.QemuMachine(tmp_path / "fw.elf", log=lines.append, icount=True, dry_run=True)
    assert qm.start() is None and qm.boot() is None
    qm.stop()
    assert lines[0].startswith("$ qemu-system-arm -M mps2-an386 ") and lines[0].endswith(" -S -icount shift=0")
    assert f"-kernel {tmp_path / 'fw.elf'}" in lines[0] and lines[1:] == ["$ (qemu monitor) cont"]
    assert not qm.running and qm.workdir is None
    started = []

    def start_tool(argv, **kw):
        started.append((argv, kw))
        raise ToolFailed("stop here")

    monkeypatch.setattr(qemu_runner.seam, "start_tool", start_tool)
    monkeypatch.setattr(qemu_runner.seam, "require", lambda tool: tool)
    (tmp_path / "fw.elf").write_bytes(b"\x7fELF")
    real = qemu_runner.QemuMachine(tmp_path / "fw.elf", log=lines.append)
    with pytest.raises(ToolFailed, match="stop here"):
        real.start()
    (argv, kw), = started
    assert argv[0] == "qemu-system-arm" and kw["dry_run"] is False and kw["log"] == lines.append
    assert kw["output"].name == "output.log" and real.workdir is None     # its folder is gone again


def test_runner_is_registered_for_the_board():
    from edgekit.boards import load_board
    from edgekit.runners import get_runner

    board = load_board("qemu-m4")
    cls = get_runner(board.runner)
    assert cls is qemu_runner.QemuRunner
    assert cls.capabilities.model_upload and board.runtime_model_upload
    assert not cls.can("flash")


@qemu_test
def test_profile_cli_boots_the_qemu_board_itself(tmp_path):
    """`edgekit profile --board qemu-m4 --opt firmware=test` without --port builds the protocol test
    firmware, boots QEMU, uploads, profiles and stops QEMU; the JSON says its times follow host time."""
    import json
    import subprocess
    import sys

    from tinymodels import int8_cnn   # a real .tflite so the host side can read its facts

    path = tmp_path / "my model.tflite"
    path.write_bytes(int8_cnn())
    mark = uuid.uuid4().hex
    r = subprocess.run([sys.executable, "-m", "edgekit", "profile", str(path), "--board", "qemu-m4", "--runs", "5",
                        "--warmup", "1", "--no-float-baseline", "--opt", "firmware=test", "--json"],
                       capture_output=True, text=True, timeout=150, env={**os.environ, "EDGEKIT_TEST_MARK": mark})
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["board"]["id"] == "qemu-m4" and doc["runner"] == "qemu"
    assert doc["timing"]["source"] == "host" and "test firmware" in doc["timing"]["label"]
    assert doc["energy"] is None and doc["roofline"] is None      # no board numbers from host time
    assert doc["device"]["board_id"] == "qemu-m4" and doc["device"]["port"] is None   # started by edgekit
    assert doc["upload"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert doc["latency_us"]["n"] == 5
    assert not _qemu_pids(mark)                              # the QEMU it started is gone


def _faulty_model(flags: int) -> bytes:
    return b"EKT1" + struct.pack("<III", 64, 10, flags) + bytes(range(48))


@qemu_test
@pytest.mark.parametrize("flags, error, bound_s", [(2, "DeviceReset", 15), (4, "NoAnswer", 30)],
                         ids=["hard-fault", "hang"])
def test_firmware_faults_end_in_bounded_errors(board, flags, error, bound_s):
    """An invoke that hard-faults (the firmware logs where, then resets) or hangs: one bounded error."""
    import time

    from edgekit import errors

    with DeviceSession.open(board.port) as s:
        s.hello()
        s.upload(_faulty_model(flags))
        t0 = time.monotonic()
        with pytest.raises(getattr(errors, error)):
            s.invoke(bytes(64))
        assert time.monotonic() - t0 < bound_s
        if flags == 2:
            assert s.last_log and s.last_log.startswith("hard fault at pc 0x")


def test_runner_quotes_the_device_last_log_line_in_link_errors(monkeypatch):
    """LinkRunner.open_link adds the device's last LOG line to a link error's message."""
    from contextlib import contextmanager

    from edgekit.boards import load_board
    from edgekit.errors import NoAnswer
    from edgekit.link.virtual_board import VirtualBoard
    from edgekit.runners.link import LinkRunner

    vb = VirtualBoard(board_id="virtual")
    port = vb.start()

    class OnePort(LinkRunner):
        name = "one-port"

        @contextmanager
        def device_port(self, *, port=None, models=()):
            yield port_, False, None

    port_ = port
    try:
        runner = OnePort(load_board("virtual"))
        with pytest.raises(NoAnswer) as exc:
            with runner.open_link() as conn:
                conn.session.last_log = "model load failed: arena too small"
                raise NoAnswer("no answer from the device")
        assert "last log line: 'model load failed: arena too small'" in exc.value.message
    finally:
        vb.stop()


def _qemu_pids(mark: str | None = None) -> set[str]:
    """QEMU processes on this machine; with ``mark``, only those whose environment carries
    EDGEKIT_TEST_MARK=<mark> (started by one test's command, whatever else runs QEMU meanwhile)."""
    pids = set()
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if not f.read().split(b"\0")[0].endswith(b"qemu-system-arm"):
                    continue
            if mark is not None:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if f"EDGEKIT_TEST_MARK={mark}".encode() not in f.read().split(b"\0"):
                        continue
            pids.add(pid)
        except OSError:
            continue
    return pids
