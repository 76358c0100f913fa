"""Protocol v1 conformance (docs/protocol.md), run against every device in ``device_factories``."""
from __future__ import annotations

import hashlib
import os
import time

import numpy as np
import pytest

from conformance.linkkit import RawLink
from edgekit.link import frames as fr
from edgekit.link.frames import Capability, ErrCode, MsgType
from edgekit.link.session import DeviceSession

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def link(device):
    raw = RawLink(device.port, device.baud)
    yield raw
    raw.close()


def _needs_pristine(device):
    if not device.pristine:
        pytest.skip(f"{device.name}: needs a device without an active model")


def _upload_ok(link: RawLink, model: bytes) -> fr.UploadDone:
    reply = link.upload(model)
    assert reply.type == MsgType.UPLOAD_DONE, reply.name
    return fr.UploadDone.unpack(reply.payload)


def test_hello_fields(link):
    h1 = link.hello()
    h2 = link.hello()
    assert h1.proto_version == fr.VERSION
    assert h1.board_id and h1.firmware_version
    assert h1.has(Capability.INVOKE)
    assert h1.max_payload >= 20
    assert h1.arena_bytes > 0
    assert h1.boot_nonce == h2.boot_nonce, "boot nonce changed without a reset"
    assert (h1.model_len == 0) == (h1.model_sha256 == fr.ZERO_HASH)


def test_upload_activates_model_with_its_hash(link, tiny_model):
    info = link.hello()
    if not info.has(Capability.UPLOAD):
        pytest.skip("device takes no models at run time")
    done = _upload_ok(link, tiny_model)
    digest = hashlib.sha256(tiny_model).digest()
    assert done.sha256 == digest
    assert done.arena_used > 0
    after = link.hello()
    assert after.model_sha256 == digest and after.model_len == len(tiny_model)


def test_upload_resumes_from_device_offset(link, digits_model):
    info = link.hello()
    if not info.has(Capability.UPLOAD):
        pytest.skip("device takes no models at run time")
    digest = hashlib.sha256(digits_model).digest()
    begin = fr.UploadBegin(len(digits_model), digest).pack()
    st = fr.UploadStatus.unpack(link.request(MsgType.UPLOAD_BEGIN, begin).payload)
    assert st.next_offset == 0 and 0 < st.chunk_size <= info.max_payload - 4
    sent = 0
    for _ in range(3):
        reply = link.request(MsgType.UPLOAD_CHUNK,
                             fr.OffsetData(sent, digits_model[sent:sent + st.chunk_size]).pack())
        sent = fr.UploadStatus.unpack(reply.payload).next_offset
    assert sent == 3 * st.chunk_size
    # the host "reconnects": the same BEGIN reports how far the device got
    again = fr.UploadStatus.unpack(link.request(MsgType.UPLOAD_BEGIN, begin).payload)
    assert again.next_offset == sent
    reply = link.upload(digits_model)     # continues from the reported offset
    assert reply.type == MsgType.UPLOAD_DONE
    assert fr.UploadDone.unpack(reply.payload).sha256 == digest


def test_chunks_shorter_than_chunk_size_are_taken(link, tiny_model):
    """A host may send shorter chunks than the device asks for (edgekit does after failures)."""
    info = link.hello()
    if not info.has(Capability.UPLOAD):
        pytest.skip("device takes no models at run time")
    digest = hashlib.sha256(tiny_model).digest()
    st = fr.UploadStatus.unpack(link.request(
        MsgType.UPLOAD_BEGIN, fr.UploadBegin(len(tiny_model), digest).pack()).payload)
    sent, step = st.next_offset, max(1, min(st.chunk_size // 3, 300))
    while sent < len(tiny_model):
        reply = link.request(MsgType.UPLOAD_CHUNK, fr.OffsetData(sent, tiny_model[sent:sent + step]).pack())
        new = fr.UploadStatus.unpack(reply.payload).next_offset
        assert new == min(len(tiny_model), sent + step)
        sent = new
    done = link.request(MsgType.UPLOAD_END)
    assert done.type == MsgType.UPLOAD_DONE and fr.UploadDone.unpack(done.payload).sha256 == digest


def test_chunk_at_wrong_offset_is_not_applied(link, digits_model):
    if not link.hello().has(Capability.UPLOAD):
        pytest.skip("device takes no models at run time")
    digest = hashlib.sha256(digits_model).digest()
    st = fr.UploadStatus.unpack(link.request(
        MsgType.UPLOAD_BEGIN, fr.UploadBegin(len(digits_model), digest).pack()).payload)
    skip = st.chunk_size * 2
    reply = link.request(MsgType.UPLOAD_CHUNK, fr.OffsetData(skip, digits_model[skip:skip + 16]).pack())
    assert reply.type == MsgType.UPLOAD_STATUS
    assert fr.UploadStatus.unpack(reply.payload).next_offset == st.next_offset


def test_hash_mismatch_never_activates(link, tiny_model, tiny_float_model):
    if not link.hello().has(Capability.UPLOAD):
        pytest.skip("device takes no models at run time")
    _upload_ok(link, tiny_model)
    good = hashlib.sha256(tiny_model).digest()
    # the float model's bytes announced with a wrong hash
    wrong = hashlib.sha256(b"not this model").digest()
    reply = link.upload(tiny_float_model, sha=wrong)
    link.expect_error(reply, ErrCode.HASH_MISMATCH)
    info = link.hello()
    assert info.model_sha256 == good, "a model with a wrong hash became active"
    # the old model still runs
    res = link.request(MsgType.INVOKE, bytes(64))
    assert res.type == MsgType.INVOKE_RESULT
    # and the discarded upload cannot be finished
    link.expect_error(link.request(MsgType.UPLOAD_END), ErrCode.BAD_STATE)


def test_end_before_all_bytes_is_bad_state(link, digits_model):
    if not link.hello().has(Capability.UPLOAD):
        pytest.skip("device takes no models at run time")
    before = link.hello().model_sha256
    digest = hashlib.sha256(digits_model).digest()
    st = fr.UploadStatus.unpack(link.request(
        MsgType.UPLOAD_BEGIN, fr.UploadBegin(len(digits_model), digest).pack()).payload)
    link.request(MsgType.UPLOAD_CHUNK, fr.OffsetData(0, digits_model[:st.chunk_size]).pack())
    link.expect_error(link.request(MsgType.UPLOAD_END), ErrCode.BAD_STATE)
    assert link.hello().model_sha256 == before
    # discarded: a new BEGIN starts at 0
    st2 = fr.UploadStatus.unpack(link.request(
        MsgType.UPLOAD_BEGIN, fr.UploadBegin(len(digits_model), digest).pack()).payload)
    assert st2.next_offset == 0


def test_too_large_is_refused(link):
    if not link.hello().has(Capability.UPLOAD):
        pytest.skip("device takes no models at run time")
    reply = link.request(MsgType.UPLOAD_BEGIN, fr.UploadBegin(0xFFFFFF00, bytes(32)).pack())
    link.expect_error(reply, ErrCode.TOO_LARGE)


def test_duplicate_seq_replays_without_executing(link, tiny_model):
    info = link.hello()
    if not info.has(Capability.UPLOAD):
        pytest.skip("device takes no models at run time")
    digest = hashlib.sha256(tiny_model).digest()
    st = fr.UploadStatus.unpack(link.request(
        MsgType.UPLOAD_BEGIN, fr.UploadBegin(len(tiny_model), digest).pack()).payload)
    off = st.next_offset
    while off < len(tiny_model):
        chunk = fr.OffsetData(off, tiny_model[off:off + st.chunk_size]).pack()
        seq = link.next_seq()
        first = link.request(MsgType.UPLOAD_CHUNK, chunk, seq=seq)
        second = link.request(MsgType.UPLOAD_CHUNK, chunk, seq=seq)
        assert first.payload == second.payload
        off = fr.UploadStatus.unpack(first.payload).next_offset
    # UPLOAD_END executed twice would answer BAD_STATE (no upload left); a replay repeats DONE
    seq = link.next_seq()
    done1 = link.request(MsgType.UPLOAD_END, seq=seq, timeout=30)
    done2 = link.request(MsgType.UPLOAD_END, seq=seq, timeout=30)
    assert done1.type == done2.type == MsgType.UPLOAD_DONE
    assert done1.payload == done2.payload
    # a replayed PROFILE train carries the same timings (a second run would not)
    if info.has(Capability.PROFILE):
        seq = link.send(MsgType.PROFILE, fr.ProfileRequest(0, 5).pack())
        train1 = _collect_train(link, seq)
        link.send(MsgType.PROFILE, fr.ProfileRequest(0, 5).pack(), seq=seq)
        train2 = _collect_train(link, seq)
        assert train1 == train2


def _collect_train(link: RawLink, seq: int) -> list[bytes]:
    frames = []
    while True:
        f = link.recv(10.0, seq=seq)
        assert f is not None, "PROFILE train stopped"
        frames.append(f.payload)
        if f.type == MsgType.PROFILE_END:
            return frames


def test_bad_crc_is_dropped_silently(link):
    link.hello()
    body = bytearray(fr.cobs.decode(fr.encode_frame(MsgType.HELLO_REQ, 7)[:-1]))
    body[-1] ^= 0x55                                   # damage the CRC
    link.send_raw(fr.cobs.encode(bytes(body)) + fr.DELIMITER)
    assert link.recv(0.6, seq=7) is None, "a frame with a bad CRC was answered"
    link.send_raw(fr.cobs.encode(b"\x01\x01\x08\x00") + fr.DELIMITER)   # shorter than 10 bytes
    link.send_raw(b"\x05\x00\x00")                      # not valid COBS
    assert link.recv(0.4) is None
    assert link.hello().proto_version == 1             # still serving


def test_wrong_length_field_is_dropped(link):
    import struct
    import zlib

    link.hello()
    body = fr.HEADER.pack(1, MsgType.HELLO_REQ, 11, 5)          # says 5 payload bytes, has 0
    body += struct.pack("<I", zlib.crc32(body))
    link.send_raw(fr.cobs.encode(body) + fr.DELIMITER)
    assert link.recv(0.6, seq=11) is None


def test_unknown_version_is_dropped(link):
    link.send_raw(fr.encode_frame(MsgType.HELLO_REQ, 12, version=2))
    assert link.recv(0.6, seq=12) is None


def test_garbage_before_hello(device):
    rng = np.random.default_rng(5)
    garbage = rng.integers(0, 256, 300, dtype=np.uint8).tobytes()
    link = RawLink(device.port, device.baud)
    try:
        link.send_raw(garbage + fr.DELIMITER)
        assert link.hello().proto_version == 1
        # garbage glued to the next frame (no 0x00 between): that frame is lost, nothing else
        link.send_raw(bytes(b or 1 for b in garbage[:50]))
    finally:
        link.close()
    with DeviceSession.open(device.port, device.baud) as s:
        assert s.hello().proto_version == 1


def test_invoke_matches_host_tflm(link, tiny_model):
    from edgekit.model import tflm_host

    info = link.hello()
    if info.has(Capability.UPLOAD):
        _upload_ok(link, tiny_model)
    elif info.model_sha256 != hashlib.sha256(tiny_model).digest():
        pytest.skip("device runs another model and takes no uploads")
    rng = np.random.default_rng(11)
    xs = rng.integers(-128, 128, size=(6, 8, 8, 1), dtype=np.int64).astype(np.int8)
    host = tflm_host.invoke(tiny_model, xs)["outputs"][0].reshape(6, -1)
    for k in range(len(xs)):
        reply = link.request(MsgType.INVOKE, xs[k].tobytes())
        assert reply.type == MsgType.INVOKE_RESULT, reply.name
        res = fr.InvokeResult.unpack(reply.payload)
        assert res.output_len == host.shape[1]
        dev = np.frombuffer(res.output, dtype=np.int8)
        np.testing.assert_array_equal(dev, host[k])
        assert res.time_ns > 0
    assert len(set(map(bytes, host))) > 1, "inputs too alike to prove anything"


def test_profile_frame_train(link, tiny_model):
    info = link.hello()
    if not info.has(Capability.PROFILE):
        pytest.skip("device cannot profile")
    if info.has(Capability.UPLOAD):
        _upload_ok(link, tiny_model)
    runs = 200
    seq = link.send(MsgType.PROFILE, fr.ProfileRequest(3, runs).pack())
    got: dict[int, tuple[int, int]] = {}
    end = None
    deadline = time.monotonic() + 60
    while end is None and time.monotonic() < deadline:
        f = link.recv(5.0, seq=seq)
        assert f is not None, "PROFILE train stopped"
        assert f.type in (MsgType.PROFILE_RUNS, MsgType.PROFILE_OPS, MsgType.PROFILE_END), f.name
        if f.type == MsgType.PROFILE_RUNS:
            part = fr.ProfileRuns.unpack(f.payload)
            assert part.total == runs
            assert len(f.payload) <= max(info.max_payload, 6 + 12)
            for i, rec in enumerate(part.records):
                got[part.first + i] = rec
        elif f.type == MsgType.PROFILE_END:
            end = fr.ProfileEnd.unpack(f.payload)
    assert end is not None and end.runs == runs
    assert sorted(got) == list(range(runs))
    assert all(t > 0 for t, _ in got.values())
    assert end.arena_used > 0
    if runs * 12 > info.max_payload:
        assert link.decoder.stats.frames >= 3  # a train of several frames


def test_error_no_model(device, link):
    _needs_pristine(device)
    link.expect_error(link.request(MsgType.INVOKE, bytes(64)), ErrCode.NO_MODEL)
    link.expect_error(link.request(MsgType.PROFILE, fr.ProfileRequest(0, 1).pack()), ErrCode.NO_MODEL)


def test_error_bad_length(link, tiny_model):
    info = link.hello()
    if info.has(Capability.UPLOAD):
        _upload_ok(link, tiny_model)
    link.expect_error(link.request(MsgType.INVOKE, bytes(63)), ErrCode.BAD_LENGTH)
    link.expect_error(link.request(MsgType.INVOKE, bytes(65)), ErrCode.BAD_LENGTH)
    link.expect_error(link.request(MsgType.UPLOAD_BEGIN, b"\x01\x02"), ErrCode.BAD_FRAME)


def test_unknown_type(link):
    link.expect_error(link.request(0x3F), ErrCode.UNKNOWN_TYPE)


def test_staged_input_and_tensor_read(link, tiny_model):
    from edgekit.model import tflm_host

    info = link.hello()
    if info.has(Capability.UPLOAD):
        _upload_ok(link, tiny_model)
    x = np.arange(-32, 32, dtype=np.int8)
    half = 32
    a = link.request(MsgType.TENSOR_WRITE, fr.OffsetData(0, x[:half].tobytes()).pack())
    assert fr.TensorAck.unpack(a.payload).next_offset == half
    a = link.request(MsgType.TENSOR_WRITE, fr.OffsetData(half, x[half:].tobytes()).pack())
    assert fr.TensorAck.unpack(a.payload).next_offset == 64
    res = fr.InvokeResult.unpack(link.request(MsgType.INVOKE).payload)
    data = fr.OffsetData.unpack(link.request(MsgType.TENSOR_READ, fr.TensorRead(3, 7).pack()).payload)
    assert data.offset == 3 and data.data == res.output[3:10]
    host = tflm_host.invoke(tiny_model, x.reshape(1, 8, 8, 1))["outputs"][0].reshape(-1)
    np.testing.assert_array_equal(np.frombuffer(res.output, np.int8), host)


def test_reset_gives_new_nonce(device, link):
    if not device.can_reset:
        pytest.skip("reset not safe on this device")
    info = link.hello()
    if not info.has(Capability.RESET):
        pytest.skip("device cannot reset on request")
    ack = link.request(MsgType.RESET)
    assert ack.type == MsgType.ACK
    boot = link.recv(10.0, seq=0)
    assert boot is not None and boot.type == MsgType.HELLO, "no HELLO after reset"
    assert fr.Hello.unpack(boot.payload).boot_nonce != info.boot_nonce
    assert link.hello().boot_nonce == fr.Hello.unpack(boot.payload).boot_nonce


def test_session_against_device(device, tiny_model):
    """The host session end to end: upload (hash checked), invoke, profile."""
    with DeviceSession.open(device.port, device.baud) as s:
        info = s.hello()
        if info.has(Capability.UPLOAD):
            up = s.upload(tiny_model)
            assert up.sha256 == hashlib.sha256(tiny_model).hexdigest()
        out = s.invoke(os.urandom(64))
        assert len(out.output) == 10
        s.stage_input(bytes(64))
        train = s.profile(2, 20)
        assert len(train.runs) == 20
        assert s.stats.resends == 0
