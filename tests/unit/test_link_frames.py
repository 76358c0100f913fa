"""Frames: header/CRC, the resyncing decoder, payload layouts and the wire-overhead formula."""
from __future__ import annotations

import math
import random
import struct
import zlib

import pytest

from edgekit.link import cobs
from edgekit.link import frames as fr
from edgekit.link.frames import MsgType


def test_frame_layout_is_the_spec():
    wire = fr.encode_frame(MsgType.UPLOAD_STATUS, 0x1234, b"\xaa\xbb")
    assert wire.endswith(b"\x00") and 0 not in wire[:-1]
    body = cobs.decode(wire[:-1])
    assert body[:6] == bytes([1, 0x82, 0x34, 0x12, 2, 0])          # little-endian header
    assert body[6:8] == b"\xaa\xbb"
    assert struct.unpack("<I", body[8:])[0] == zlib.crc32(body[:8])


def test_decoder_round_trip_byte_by_byte():
    frames = [(MsgType.HELLO, 0, b""), (MsgType.LOG, 0, b"\x01hi"), (MsgType.INVOKE, 65535, bytes(300))]
    stream = b"".join(fr.encode_frame(*f) for f in frames)
    dec = fr.FrameDecoder()
    got = []
    for b in stream:
        got += dec.feed(bytes([b]))
    assert [(f.type, f.seq, f.payload) for f in got] == frames
    assert dec.stats.dropped == 0


def test_decoder_resyncs_after_garbage_and_damage():
    rng = random.Random(3)
    good = fr.encode_frame(MsgType.HELLO_REQ, 5)
    damaged = bytearray(fr.encode_frame(MsgType.HELLO_REQ, 6, b"xyz"))
    damaged[3] ^= 0x10
    cut = fr.encode_frame(MsgType.HELLO_REQ, 7, bytes(50))[:20]       # delimiter lost
    garbage = bytes(rng.randrange(1, 256) for _ in range(100))
    stream = garbage + b"\x00" + bytes(damaged) + cut + b"\x00" + good + b"\x00\x00" + good
    dec = fr.FrameDecoder()
    got = dec.feed(stream)
    assert [f.seq for f in got] == [5, 5]
    assert dec.stats.dropped == 3          # garbage, damaged frame, cut frame (+ its follower's head)


@pytest.mark.parametrize("kind", ["crc", "short", "length", "version"])
def test_each_bad_frame_kind_is_counted(kind):
    header = fr.HEADER.pack(1, MsgType.HELLO_REQ, 1, 0)
    if kind == "crc":
        body = header + b"\x00\x00\x00\x00"
    elif kind == "short":
        body = b"\x01\x01\x01"
    elif kind == "length":
        body = fr.HEADER.pack(1, MsgType.HELLO_REQ, 1, 3) + struct.pack("<I", zlib.crc32(
            fr.HEADER.pack(1, MsgType.HELLO_REQ, 1, 3)))
    else:
        h = fr.HEADER.pack(2, MsgType.HELLO_REQ, 1, 0)
        body = h + struct.pack("<I", zlib.crc32(h))
    dec = fr.FrameDecoder()
    assert dec.feed(cobs.encode(body) + b"\x00") == []
    field = {"crc": "bad_crc", "short": "short", "length": "bad_length", "version": "foreign_version"}[kind]
    assert getattr(dec.stats, field) == 1
    if kind == "version":
        assert dec.stats.last_foreign_version == 2


def test_oversize_run_is_discarded_up_to_next_delimiter():
    dec = fr.FrameDecoder(max_body=64)
    stream = b"\x01" * 500 + b"\x00" + fr.encode_frame(MsgType.ACK, 9)
    got = dec.feed(stream)
    assert [f.seq for f in got] == [9]
    assert dec.stats.oversize == 1


def test_skip_to_first_delimiter():
    dec = fr.FrameDecoder(skip_to_first_delimiter=True)
    assert dec.feed(b"boot noise" + fr.encode_frame(MsgType.ACK, 1) + fr.encode_frame(MsgType.ACK, 2)) \
        and dec.stats.skipped_bytes > 0


def test_wire_len_is_a_tight_bound():
    for n in (0, 1, 243, 244, 245, 1000, 4100):
        actual = len(fr.encode_frame(MsgType.UPLOAD_CHUNK, 1, b"\x01" * n))
        assert fr.wire_len(n) - 1 <= actual <= fr.wire_len(n)   # zeros in header/CRC can save one


@pytest.mark.parametrize("chunk", [256, 1024, 4096])
def test_upload_overhead_formula(chunk):
    spec = (chunk + 15 + math.ceil((chunk + 14) / 254)) / chunk
    assert fr.upload_wire_bytes_per_model_byte(chunk) == pytest.approx(spec)
    if chunk >= 1024:
        assert spec <= 1.02


def test_payload_round_trips():
    hello = fr.Hello(capabilities=0b1010111, max_payload=1028, boot_nonce=0xDEADBEEF, arena_bytes=65536,
                     model_len=3, model_sha256=bytes(range(32)), board_id="nano33ble",
                     firmware_version="1.2.3")
    assert fr.Hello.unpack(hello.pack()) == hello
    assert hello.has(fr.Capability.PROFILE) and not hello.has(fr.Capability.PER_OP)
    assert hello.to_dict()["capabilities"] == ["upload", "invoke", "profile", "cycles", "log"]
    cases = [
        fr.UploadBegin(123, bytes(32)), fr.OffsetData(7, b"abc"), fr.UploadStatus(99, 1024),
        fr.UploadDone(b"\x01" * 32, 2048), fr.InvokeResult(10**12, 5, 3, b"\x01\x02\x03"),
        fr.TensorAck(64), fr.TensorRead(10, 20), fr.ProfileRequest(10, 200),
        fr.ProfileRuns(200, 80, [(1000, 1), (2000, 2)]),
        fr.ProfileOps(3, 0, [("CONV_2D", 10, 12345), ("FULLY_CONNECTED", 10, 99)]),
        fr.ProfileEnd(200, 4096), fr.Log(2, "low battery"), fr.Error(5, "hash differs"),
    ]
    for obj in cases:
        assert type(obj).unpack(obj.pack()) == obj


@pytest.mark.parametrize("cls,payload", [
    (fr.Hello, b"\x01\x02"), (fr.UploadBegin, b"\x00" * 35), (fr.UploadStatus, b"\x00"),
    (fr.ProfileRuns, fr.TRAIN_HEADER.pack(1, 0, 2) + bytes(12)), (fr.TensorRead, b"\x00" * 5),
    (fr.Error, b"\x01"),
])
def test_short_payloads_raise_payload_error(cls, payload):
    with pytest.raises(fr.PayloadError):
        cls.unpack(payload)


def test_profile_runs_per_frame_fits_max_payload():
    for mp in (20, 64, 1028, 4100):
        per = fr.ProfileRuns.per_frame(mp)
        recs = [(i, i) for i in range(per)]
        assert len(fr.ProfileRuns(per, 0, recs).pack()) <= max(mp, 6 + 12)
