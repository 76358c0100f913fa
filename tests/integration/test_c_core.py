"""The portable C protocol core (firmware_templates/core), built for this host with warnings as errors
and AddressSanitizer + UndefinedBehaviorSanitizer, driven frame by frame over pipes (and once over a
pty with the real host session). Expected outputs come from the documented test-runner transform
(core/ek_test_runner.h), computed here in Python; hashes from hashlib; framing from edgekit.link.
"""
from __future__ import annotations

import hashlib
import os
import random
import select
import shutil
import struct
import subprocess
import time
import zlib

import pytest

from edgekit.link import cobs
from edgekit.link import frames as fr
from edgekit.link.frames import ErrCode, MsgType
from edgekit.runners import qemu as qemu_runner

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

MAX_PAYLOAD = 1024
IO_MAX = 8192
DEFINES = {"EK_MAX_PAYLOAD": f"{MAX_PAYLOAD}u", "EK_MODEL_MAX": "65536u",
           "EK_INPUT_MAX": f"{IO_MAX}u", "EK_OUTPUT_MAX": f"{IO_MAX}u", "EK_PROFILE_MAX_RUNS": "256u"}
WAIT_S = 5.0


def transform(model: bytes, inp: bytes, out_len: int) -> bytes:
    """core/ek_test_runner.h: output[i] = input[i % in_len] ^ model[i % model_len]."""
    return bytes(inp[i % len(inp)] ^ model[i % len(model)] for i in range(out_len))


def ekt1(in_bytes: int, out_bytes: int, flags: int = 0, body: bytes = b"") -> bytes:
    return b"EKT1" + struct.pack("<III", in_bytes, out_bytes, flags) + body


@pytest.fixture(scope="module")
def host_binary(tmp_path_factory):
    out = tmp_path_factory.mktemp("c-core")
    return qemu_runner.build_host_core(out, sanitize=True, defines=DEFINES)


class PipeDevice:
    """The host build on stdin/stdout; frames in, frames out, nothing hidden."""

    def __init__(self, binary, *args):
        self.proc = subprocess.Popen([str(binary), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.decoder = fr.FrameDecoder()
        self.pending: list[fr.Frame] = []
        self.raw = bytearray()
        self.seq = 0

    def write(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, msg_type: int, payload: bytes = b"", seq: int | None = None) -> int:
        if seq is None:
            self.seq = self.seq % 0xFFFF + 1
            seq = self.seq
        self.write(fr.encode_frame(msg_type, seq, payload))
        return seq

    def _read_some(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return False
        data = os.read(self.proc.stdout.fileno(), 65536)
        assert data, f"the device exited: {self.proc.stderr.read().decode(errors='replace')}"
        self.raw += data
        self.pending.extend(self.decoder.feed(data))
        return True

    def recv(self, timeout: float = WAIT_S) -> fr.Frame:
        deadline = time.monotonic() + timeout
        while not self.pending:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "no frame from the device"
            self._read_some(remaining)
        return self.pending.pop(0)

    def silent(self, seconds: float = 0.3) -> bool:
        """True if no frame arrives within ``seconds``."""
        deadline = time.monotonic() + seconds
        while not self.pending and time.monotonic() < deadline:
            self._read_some(max(0.0, deadline - time.monotonic()))
        return not self.pending

    def request(self, msg_type: int, payload: bytes = b"", seq: int | None = None) -> fr.Frame:
        seq = self.send(msg_type, payload, seq)
        frame = self.recv()
        assert frame.seq == seq, f"reply seq {frame.seq} to request seq {seq}"
        return frame

    def expect_error(self, msg_type: int, payload: bytes, code: ErrCode) -> fr.Error:
        frame = self.request(msg_type, payload)
        assert frame.type == MsgType.ERROR, f"expected ERROR {code.name}, got {frame.name}"
        err = fr.Error.unpack(frame.payload)
        assert err.code == code, f"expected {code.name}, got {err.name}: {err.message}"
        return err

    def upload(self, model: bytes, sha: bytes | None = None) -> fr.Frame:
        begin = self.request(MsgType.UPLOAD_BEGIN, fr.UploadBegin(len(model), sha or hashlib.sha256(model).digest()).pack())
        assert begin.type == MsgType.UPLOAD_STATUS, begin
        status = fr.UploadStatus.unpack(begin.payload)
        offset = status.next_offset
        while offset < len(model):
            rep = self.request(MsgType.UPLOAD_CHUNK,
                               fr.OffsetData(offset, model[offset:offset + status.chunk_size]).pack())
            assert rep.type == MsgType.UPLOAD_STATUS, rep
            offset = fr.UploadStatus.unpack(rep.payload).next_offset
        return self.request(MsgType.UPLOAD_END)

    def hello(self) -> fr.Hello:
        frame = self.request(MsgType.HELLO_REQ)
        assert frame.type == MsgType.HELLO
        return fr.Hello.unpack(frame.payload)

    def close(self) -> str:
        """Ends the device (EOF on stdin) and returns its stderr; sanitizer reports fail the test."""
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            self.proc.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=WAIT_S)
        err = self.proc.stderr.read().decode(errors="replace")
        assert "Sanitizer" not in err and "runtime error" not in err, err
        assert self.proc.returncode == 0, f"exit code {self.proc.returncode}: {err}"
        return err


@pytest.fixture
def dev(host_binary):
    d = PipeDevice(host_binary, "--nonce", "0x1234abcd")
    boot = d.recv()
    assert (boot.type, boot.seq) == (MsgType.HELLO, 0)
    log = d.recv()
    assert log.type == MsgType.LOG
    yield d
    d.close()


# ---------------------------------------------------------------------------------------------


def test_single_slot_build_drops_the_active_model_when_an_upload_begins(tmp_path):
    binary = qemu_runner.build_host_core(tmp_path, sanitize=True,
                                         defines={"EK_MODEL_SLOTS": "1", "EK_MAX_PAYLOAD": "64u"})
    d = PipeDevice(binary)
    assert fr.Hello.unpack(d.recv().payload).max_payload == 64
    d.recv()   # LOG
    first = bytes(range(1, 200))
    assert d.upload(first).type == MsgType.UPLOAD_DONE
    assert d.hello().model_sha256 == hashlib.sha256(first).digest()
    other = bytes(range(2, 150))
    d.request(MsgType.UPLOAD_BEGIN, fr.UploadBegin(len(other), hashlib.sha256(other).digest()).pack())
    assert not d.hello().has_model          # one slot: the upload overwrites the model's buffer
    d.expect_error(MsgType.INVOKE, bytes(64), ErrCode.NO_MODEL)
    assert d.upload(other).type == MsgType.UPLOAD_DONE
    inp = bytes(range(64))
    res = fr.InvokeResult.unpack(d.request(MsgType.INVOKE, inp).payload)   # 64-byte input fits 64-byte frames
    assert res.output == transform(other, inp, 10)
    d.close()


def test_core_compiles_warning_free_for_cortex_m4(tmp_path):
    gcc = shutil.which("arm-none-eabi-gcc")
    if gcc is None:
        pytest.skip("arm-none-eabi-gcc not installed (Debian: gcc-arm-none-eabi)")
    core = qemu_runner.firmware_templates_dir() / "core"
    for src in ("ek_cobs.c", "ek_crc32.c", "ek_sha256.c", "ek_proto.c", "ek_test_runner.c"):
        subprocess.run([gcc, "-mcpu=cortex-m4", "-mthumb", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic",
                        "-Os", f"-I{core}", "-c", str(core / src), "-o", str(tmp_path / (src + ".o"))],
                       check=True, capture_output=True, timeout=120)


def test_boot_hello_and_log(host_binary):
    d = PipeDevice(host_binary, "--nonce", "0x1234abcd", "--board-id", "c-host-test")
    boot = d.recv()
    assert (boot.type, boot.seq, boot.version) == (MsgType.HELLO, 0, 1)
    hello = fr.Hello.unpack(boot.payload)
    assert hello.proto_version == 1
    assert hello.boot_nonce == 0x1234ABCD
    assert hello.max_payload == MAX_PAYLOAD
    assert hello.board_id == "c-host-test"
    assert hello.model_len == 0 and not hello.has_model
    caps = fr.Capability(hello.capabilities)
    want = (fr.Capability.UPLOAD | fr.Capability.INVOKE | fr.Capability.PROFILE | fr.Capability.PER_OP
            | fr.Capability.RESET | fr.Capability.LOG)
    assert caps == want          # no CYCLES: the host build has no cycle counter
    log = d.recv()
    assert log.type == MsgType.LOG and log.seq == 0
    assert fr.Log.unpack(log.payload).text == "c-host ready"
    # the exact wire bytes of the boot HELLO: COBS body + one delimiter, CRC as zlib computes it
    assert d.raw[0] == 0                   # every device frame is preceded by a 0x00 (an empty frame)
    first = bytes(d.raw[1:d.raw.index(0, 1) + 1])
    body = cobs.decode(first[:-1])
    assert struct.unpack("<I", body[-4:])[0] == zlib.crc32(body[:-4])
    assert first == fr.encode_frame(MsgType.HELLO, 0, boot.payload)
    d.close()


def test_hello_request_echoes_seq(dev):
    for seq in (1, 2, 65535, 7):
        frame = dev.request(MsgType.HELLO_REQ, seq=seq)
        assert frame.type == MsgType.HELLO and frame.seq == seq


def test_sha256_matches_hashlib_across_block_boundaries(dev):
    rng = random.Random(5)
    for n in (1, 3, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 1000, 4093, 9999):
        model = bytes(rng.getrandbits(8) for _ in range(n))
        done = dev.upload(model)
        assert done.type == MsgType.UPLOAD_DONE, (n, done)
        assert fr.UploadDone.unpack(done.payload).sha256 == hashlib.sha256(model).digest(), n


def test_upload_then_invoke_gives_the_documented_transform(dev):
    rng = random.Random(1)
    model = bytes(rng.getrandbits(8) for _ in range(25_000))
    done = fr.UploadDone.unpack(dev.upload(model).payload)
    assert done.sha256 == hashlib.sha256(model).digest()
    assert done.arena_used == 64 + 10
    hello = dev.hello()
    assert hello.model_len == len(model) and hello.model_sha256 == done.sha256
    for _ in range(3):
        inp = bytes(rng.getrandbits(8) for _ in range(64))
        frame = dev.request(MsgType.INVOKE, inp)
        assert frame.type == MsgType.INVOKE_RESULT
        res = fr.InvokeResult.unpack(frame.payload)
        assert res.output_len == 10
        assert res.output == transform(model, inp, 10)
        assert res.cycles == 0 and res.time_ns > 0


def test_hash_mismatch_keeps_previous_model_active(dev):
    rng = random.Random(2)
    good = bytes(rng.getrandbits(8) for _ in range(3000))
    assert dev.upload(good).type == MsgType.UPLOAD_DONE
    bad = bytes(rng.getrandbits(8) for _ in range(3000))
    frame = dev.upload(bad, sha=hashlib.sha256(bad + b"x").digest())
    assert frame.type == MsgType.ERROR
    assert fr.Error.unpack(frame.payload).code == ErrCode.HASH_MISMATCH
    hello = dev.hello()
    assert hello.model_sha256 == hashlib.sha256(good).digest()
    inp = bytes(range(64))
    res = fr.InvokeResult.unpack(dev.request(MsgType.INVOKE, inp).payload)
    assert res.output == transform(good, inp, 10)
    # the discarded upload cannot be finished any more
    dev.expect_error(MsgType.UPLOAD_END, b"", ErrCode.BAD_STATE)


def test_upload_resume_and_wrong_offsets(dev):
    rng = random.Random(3)
    model = bytes(rng.getrandbits(8) for _ in range(5000))
    begin = fr.UploadBegin(len(model), hashlib.sha256(model).digest()).pack()
    status = fr.UploadStatus.unpack(dev.request(MsgType.UPLOAD_BEGIN, begin).payload)
    assert status.next_offset == 0 and 0 < status.chunk_size <= MAX_PAYLOAD - 4
    chunk = status.chunk_size
    st = fr.UploadStatus.unpack(dev.request(MsgType.UPLOAD_CHUNK, fr.OffsetData(0, model[:chunk]).pack()).payload)
    assert st.next_offset == chunk
    # a chunk at the wrong offset is not applied; the device names the offset it expects
    st = fr.UploadStatus.unpack(dev.request(MsgType.UPLOAD_CHUNK,
                                            fr.OffsetData(3 * chunk, b"\xff" * 10).pack()).payload)
    assert st.next_offset == chunk
    # UPLOAD_BEGIN again with the same hash and length: resume where it is
    st = fr.UploadStatus.unpack(dev.request(MsgType.UPLOAD_BEGIN, begin).payload)
    assert st.next_offset == chunk
    # END before all bytes: BAD_STATE, and the partial upload is gone
    dev.expect_error(MsgType.UPLOAD_END, b"", ErrCode.BAD_STATE)
    st = fr.UploadStatus.unpack(dev.request(MsgType.UPLOAD_BEGIN, begin).payload)
    assert st.next_offset == 0
    # another hash restarts at 0 too
    other = fr.UploadBegin(len(model), hashlib.sha256(model[::-1]).digest()).pack()
    dev.request(MsgType.UPLOAD_CHUNK, fr.OffsetData(0, model[:100]).pack())
    st = fr.UploadStatus.unpack(dev.request(MsgType.UPLOAD_BEGIN, other).payload)
    assert st.next_offset == 0
    # a chunk past total_len is refused
    small = fr.UploadBegin(10, hashlib.sha256(b"0123456789").digest()).pack()
    dev.request(MsgType.UPLOAD_BEGIN, small)
    dev.expect_error(MsgType.UPLOAD_CHUNK, fr.OffsetData(0, b"x" * 11).pack(), ErrCode.BAD_LENGTH)


def test_error_codes(dev):
    dev.expect_error(MsgType.INVOKE, b"\x00" * 64, ErrCode.NO_MODEL)
    dev.expect_error(MsgType.TENSOR_WRITE, fr.OffsetData(0, b"1").pack(), ErrCode.NO_MODEL)
    dev.expect_error(MsgType.PROFILE, fr.ProfileRequest(0, 1).pack(), ErrCode.NO_MODEL)
    dev.expect_error(MsgType.UPLOAD_CHUNK, fr.OffsetData(0, b"abc").pack(), ErrCode.BAD_STATE)
    dev.expect_error(MsgType.UPLOAD_END, b"", ErrCode.BAD_STATE)
    dev.expect_error(MsgType.UPLOAD_BEGIN, fr.UploadBegin(65537, bytes(32)).pack(), ErrCode.TOO_LARGE)
    dev.expect_error(MsgType.UPLOAD_BEGIN, b"\x01\x02", ErrCode.BAD_FRAME)
    dev.expect_error(MsgType.UPLOAD_CHUNK, b"\x01", ErrCode.BAD_FRAME)
    dev.expect_error(0x42, b"", ErrCode.UNKNOWN_TYPE)
    dev.expect_error(MsgType.HELLO, b"", ErrCode.UNKNOWN_TYPE)     # a device-to-host type
    model = bytes(range(1, 200))
    assert dev.upload(model).type == MsgType.UPLOAD_DONE
    dev.expect_error(MsgType.INVOKE, b"\x00" * 63, ErrCode.BAD_LENGTH)
    dev.expect_error(MsgType.TENSOR_WRITE, fr.OffsetData(60, b"12345").pack(), ErrCode.BAD_LENGTH)
    dev.expect_error(MsgType.TENSOR_READ, fr.TensorRead(0, 4).pack(), ErrCode.BAD_STATE)   # no output yet
    dev.expect_error(MsgType.TENSOR_READ, b"\x00" * 5, ErrCode.BAD_FRAME)
    dev.expect_error(MsgType.PROFILE, b"\x00" * 3, ErrCode.BAD_FRAME)
    dev.expect_error(MsgType.PROFILE, fr.ProfileRequest(0, 257).pack(), ErrCode.BAD_LENGTH)


def test_model_invalid_leaves_no_model_and_invoke_failed(dev):
    assert dev.upload(bytes(range(1, 100))).type == MsgType.UPLOAD_DONE
    frame = dev.upload(ekt1(0, 4))           # the test runner refuses zero-sized inputs
    assert frame.type == MsgType.ERROR and fr.Error.unpack(frame.payload).code == ErrCode.MODEL_INVALID
    assert not dev.hello().has_model
    dev.expect_error(MsgType.INVOKE, b"", ErrCode.NO_MODEL)
    frame = dev.upload(ekt1(8, 4 + IO_MAX))  # output larger than the device's output buffer: TOO_LARGE
    err = fr.Error.unpack(frame.payload)
    assert frame.type == MsgType.ERROR and err.code == ErrCode.TOO_LARGE and "tensor buffers" in err.message
    assert not dev.hello().has_model
    assert dev.upload(ekt1(4, 4, flags=1)).type == MsgType.UPLOAD_DONE
    dev.expect_error(MsgType.INVOKE, b"abcd", ErrCode.INVOKE_FAILED)
    dev.expect_error(MsgType.PROFILE, fr.ProfileRequest(1, 2).pack(), ErrCode.INVOKE_FAILED)


def test_large_tensors_staged_and_read_back(dev):
    rng = random.Random(4)
    in_len, out_len = 3000, 5000
    model = ekt1(in_len, out_len, body=bytes(rng.getrandbits(8) for _ in range(777)))
    done = fr.UploadDone.unpack(dev.upload(model).payload)
    assert done.arena_used == in_len + out_len
    inp = bytes(rng.getrandbits(8) for _ in range(in_len))
    step = MAX_PAYLOAD - 4
    for off in range(0, in_len, step):
        ack = fr.TensorAck.unpack(dev.request(MsgType.TENSOR_WRITE, fr.OffsetData(off, inp[off:off + step]).pack()).payload)
        assert ack.next_offset == min(off + step, in_len)
    res = fr.InvokeResult.unpack(dev.request(MsgType.INVOKE, b"").payload)
    assert res.output_len == out_len
    assert len(res.output) == MAX_PAYLOAD - 16
    out = bytearray(res.output)
    while len(out) < out_len:
        data = fr.OffsetData.unpack(dev.request(MsgType.TENSOR_READ, fr.TensorRead(len(out), 0xFFFF).pack()).payload)
        assert data.offset == len(out) and 0 < len(data.data) <= MAX_PAYLOAD - 4
        out += data.data
    assert bytes(out) == transform(model, inp, out_len)
    tail = fr.OffsetData.unpack(dev.request(MsgType.TENSOR_READ, fr.TensorRead(out_len, 10).pack()).payload)
    assert tail.data == b""
    dev.expect_error(MsgType.TENSOR_READ, fr.TensorRead(out_len + 1, 10).pack(), ErrCode.BAD_LENGTH)


def test_duplicate_seq_replays_without_executing(dev):
    model = bytes(range(1, 256)) * 4
    assert dev.upload(model).type == MsgType.UPLOAD_DONE
    inp = bytes(range(64))
    first = dev.request(MsgType.INVOKE, inp, seq=500)
    again = dev.request(MsgType.INVOKE, inp, seq=500)
    assert again == first                      # same time_ns: the cached reply, not a new run
    other = dev.request(MsgType.INVOKE, inp, seq=501)
    assert other.type == MsgType.INVOKE_RESULT
    # a duplicated chunk is not appended twice
    m2 = bytes(range(100, 200)) * 30
    st = fr.UploadStatus.unpack(dev.request(MsgType.UPLOAD_BEGIN, fr.UploadBegin(len(m2), hashlib.sha256(m2).digest()).pack()).payload)
    half = 900                                 # fits one frame (max_payload 1024)
    chunk = fr.OffsetData(0, m2[:half]).pack()
    a = dev.request(MsgType.UPLOAD_CHUNK, chunk, seq=600)
    b = dev.request(MsgType.UPLOAD_CHUNK, chunk, seq=600)
    assert a == b and fr.UploadStatus.unpack(b.payload).next_offset == half
    for i, off in enumerate(range(half, len(m2), 900)):
        dev.request(MsgType.UPLOAD_CHUNK, fr.OffsetData(off, m2[off:off + 900]).pack(), seq=601 + i)
    assert dev.request(MsgType.UPLOAD_END, seq=700).type == MsgType.UPLOAD_DONE
    assert st.next_offset == 0


def _collect_train(dev, seq):
    frames = []
    while True:
        f = dev.recv()
        assert f.seq == seq, f
        frames.append(f)
        if f.type in (MsgType.PROFILE_END, MsgType.ERROR):
            return frames


def test_profile_train_and_its_replay(dev):
    model = bytes(range(1, 200))
    assert dev.upload(model).type == MsgType.UPLOAD_DONE
    runs = 200                                  # more than one PROFILE_RUNS frame at 1024 bytes
    seq = dev.send(MsgType.PROFILE, fr.ProfileRequest(3, runs).pack())
    frames = _collect_train(dev, seq)
    run_frames = [fr.ProfileRuns.unpack(f.payload) for f in frames if f.type == MsgType.PROFILE_RUNS]
    per_frame = fr.ProfileRuns.per_frame(MAX_PAYLOAD)
    assert len(run_frames) == -(-runs // per_frame)
    records = [r for part in run_frames for r in part.records]
    assert len(records) == runs and all(part.total == runs for part in run_frames)
    assert [p.first for p in run_frames] == list(range(0, runs, per_frame))
    assert all(t > 0 and c == 0 for t, c in records)
    ops = [fr.ProfileOps.unpack(f.payload) for f in frames if f.type == MsgType.PROFILE_OPS]
    assert len(ops) == 1 and ops[0].records[0][:2] == ("XOR_TRANSFORM", runs)   # warm-up not counted
    end = fr.ProfileEnd.unpack(frames[-1].payload)
    assert (end.runs, end.arena_used) == (runs, 74)
    # the duplicate gets the very same train (same times: nothing ran again)
    dev.send(MsgType.PROFILE, fr.ProfileRequest(3, runs).pack(), seq=seq)
    assert _collect_train(dev, seq) == frames
    # profile output is readable like an invoke's (staged input: zeros)
    data = fr.OffsetData.unpack(dev.request(MsgType.TENSOR_READ, fr.TensorRead(0, 10).pack()).payload)
    assert data.data == transform(model, bytes(64), 10)


def test_resync_after_garbage_and_damaged_frames(dev):
    rng = random.Random(6)
    dev.write(bytes(rng.randrange(1, 256) for _ in range(3000)) + b"\x00")      # oversize garbage
    good = fr.encode_frame(MsgType.HELLO_REQ, 77)
    flipped = bytearray(good)
    flipped[5] ^= 0x10
    dev.write(bytes(flipped))                                                   # bad CRC
    dev.write(good[:7] + b"\x00")                                               # cut frame
    body = struct.pack("<BBHH", 2, MsgType.HELLO_REQ, 78, 0)                    # foreign version
    dev.write(cobs.encode(body + struct.pack("<I", zlib.crc32(body))) + b"\x00")
    body = struct.pack("<BBHH", 1, MsgType.HELLO_REQ, 79, 5)                    # length field lies
    dev.write(cobs.encode(body + struct.pack("<I", zlib.crc32(body))) + b"\x00")
    dev.write(b"\x05\x01\x00")                                                  # invalid COBS
    dev.write(b"\x00\x00\x00")                                                  # empty frames
    assert dev.silent(0.3), f"the device answered a damaged frame: {dev.pending}"
    frame = dev.request(MsgType.HELLO_REQ, seq=80)
    assert frame.type == MsgType.HELLO
    # a frame split into single bytes arrives fine too
    for b in fr.encode_frame(MsgType.HELLO_REQ, 81):
        dev.write(bytes([b]))
    assert dev.recv().seq == 81


def test_reset_sends_a_new_boot_hello(dev):
    assert dev.upload(bytes(range(1, 50))).type == MsgType.UPLOAD_DONE
    old = dev.hello().boot_nonce
    ack = dev.request(MsgType.RESET)
    assert ack.type == MsgType.ACK and ack.payload == b""
    boot = dev.recv()
    assert (boot.type, boot.seq) == (MsgType.HELLO, 0)
    hello = fr.Hello.unpack(boot.payload)
    assert hello.boot_nonce != old
    assert not hello.has_model                   # a reboot forgets the uploaded model


def test_builtin_model_is_active_at_boot_and_after_reset(host_binary, tmp_path):
    """ek_activate_model(): a model compiled into the firmware (the sketches' model_data.cc; here a
    file given to the host build) is active from boot, HELLO reports its hash, uploads replace it."""
    rng = random.Random(7)
    builtin = bytes(rng.getrandbits(8) for _ in range(5000))
    path = tmp_path / "builtin.bin"
    path.write_bytes(builtin)
    d = PipeDevice(host_binary, "--builtin", str(path))
    boot = fr.Hello.unpack(d.recv().payload)
    assert boot.has_model and boot.model_len == len(builtin)
    assert boot.model_sha256 == hashlib.sha256(builtin).digest()
    assert fr.Log.unpack(d.recv().payload).text == "c-host ready"
    inp = bytes(range(64))
    res = fr.InvokeResult.unpack(d.request(MsgType.INVOKE, inp).payload)
    assert res.output == transform(builtin, inp, 10)
    uploaded = bytes(rng.getrandbits(8) for _ in range(3000))
    assert d.upload(uploaded).type == MsgType.UPLOAD_DONE
    assert d.hello().model_sha256 == hashlib.sha256(uploaded).digest()
    res = fr.InvokeResult.unpack(d.request(MsgType.INVOKE, inp).payload)
    assert res.output == transform(uploaded, inp, 10)
    assert d.request(MsgType.RESET).type == MsgType.ACK
    again = fr.Hello.unpack(d.recv().payload)      # the reboot brings the built-in model back
    assert again.model_sha256 == hashlib.sha256(builtin).digest()
    d.close()


def test_builtin_model_the_runner_refuses_leaves_no_model_and_says_so(host_binary, tmp_path):
    path = tmp_path / "bad.bin"
    path.write_bytes(ekt1(0, 4))                 # the test runner refuses zero-sized inputs
    d = PipeDevice(host_binary, "--builtin", str(path))
    assert not fr.Hello.unpack(d.recv().payload).has_model
    log = fr.Log.unpack(d.recv().payload)
    assert log.level == 3 and "built-in model did not load" in log.text
    assert fr.Log.unpack(d.recv().payload).text == "c-host ready"
    d.expect_error(MsgType.INVOKE, b"", ErrCode.NO_MODEL)
    big = tmp_path / "big.bin"
    big.write_bytes(ekt1(8, 4 + IO_MAX))         # output beyond the device's output buffer
    d2 = PipeDevice(host_binary, "--builtin", str(big))
    assert not fr.Hello.unpack(d2.recv().payload).has_model
    d.close()
    d2.close()


def test_reset_unsupported_without_capability(host_binary):
    d = PipeDevice(host_binary, "--no-reset")
    hello = fr.Hello.unpack(d.recv().payload)
    assert not hello.has(fr.Capability.RESET)
    d.recv()   # LOG
    d.expect_error(MsgType.RESET, b"", ErrCode.UNSUPPORTED)
    d.close()


def test_pty_mode_with_the_host_session(host_binary):
    from edgekit.link.session import DeviceSession

    proc = qemu_runner.HostCoreProcess(host_binary)
    try:
        port = proc.start()
        with DeviceSession.open(port) as s:
            hello = s.hello()
            assert hello.board_id == "c-host"
            model = os.urandom(20_000)
            res = s.upload(model)
            assert res.sha256 == hashlib.sha256(model).hexdigest()
            inp = os.urandom(64)
            assert s.invoke(inp).output == transform(model, inp, 10)
            train = s.profile(1, 5)
            assert len(train.runs) == 5 and train.ops[0][0] == "XOR_TRANSFORM"
            new = s.reset()
            assert new.boot_nonce != hello.boot_nonce
        assert proc.running
        output = proc.output()
    finally:
        proc.stop()
    assert "Sanitizer" not in output and "runtime error" not in output, output


def test_random_frames_never_break_the_core(dev):
    """Random requests (valid framing, random payloads) under the sanitizers: every frame that fits
    gets exactly one answer with its seq, oversize ones none, and the core keeps serving."""
    rng = random.Random(12)
    model = bytes(rng.getrandbits(8) for _ in range(500))
    assert dev.upload(model).type == MsgType.UPLOAD_DONE
    types = [t for t in fr.REQUEST_TYPES if t != MsgType.RESET] + [0x00, 0x0A, 0x7F, 0x80, 0xFF]
    for i in range(400):
        msg_type = rng.choice(types)
        n = rng.choice([0, 1, 2, 4, 5, 6, 36, rng.randrange(0, MAX_PAYLOAD + 1), MAX_PAYLOAD + rng.randrange(1, 50)])
        payload = bytes(rng.getrandbits(8) for _ in range(n))
        if msg_type == MsgType.PROFILE and n == 4:
            payload = struct.pack("<HH", rng.randrange(0, 3), rng.randrange(0, 300))
        seq = dev.send(msg_type, payload)
        if n > MAX_PAYLOAD:
            assert dev.silent(0.05), f"an oversize frame was answered ({n} bytes)"
            continue
        frame = dev.recv()
        assert frame.seq == seq, (i, msg_type, n, frame)
        if msg_type == MsgType.PROFILE and frame.type != MsgType.ERROR:
            while frame.type != MsgType.PROFILE_END:
                frame = dev.recv()
                assert frame.seq == seq
    assert dev.hello().proto_version == 1
