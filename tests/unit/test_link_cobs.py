"""COBS encoding: round trips, no zero bytes, exact overhead, and malformed input refused."""
from __future__ import annotations

import random

import pytest

from edgekit.link import cobs


def _cases():
    rng = random.Random(7)
    yield b""
    yield b"\x00"
    yield b"\x00\x00"
    yield b"\x11\x22\x00\x33"
    yield bytes(range(1, 255))          # exactly one full block
    yield bytes(range(1, 256))          # one byte past a full block
    yield bytes(range(1, 255)) + b"\x00"
    yield b"\xff" * 1000
    for n in (1, 253, 254, 255, 508, 509, 4096):
        yield bytes(rng.choice((0, 1, 0xFF, rng.randrange(256))) for _ in range(n))


@pytest.mark.parametrize("data", list(_cases()), ids=lambda d: f"len{len(d)}")
def test_round_trip_and_no_zero(data):
    enc = cobs.encode(data)
    assert 0 not in enc
    assert cobs.decode(enc) == data
    assert len(enc) <= cobs.max_encoded_len(len(data))


@pytest.mark.parametrize("n", [1, 100, 253, 254, 255, 1024, 4110])
def test_overhead_of_zero_free_data(n):
    # no zeros in the data: one code byte per started block of 254 (docs/protocol.md §1)
    assert len(cobs.encode(b"\x01" * n)) == n + -(-n // 254)


def test_known_vectors():
    # from the COBS paper / Wikipedia examples
    assert cobs.encode(b"\x00") == b"\x01\x01"
    assert cobs.encode(b"\x00\x00") == b"\x01\x01\x01"
    assert cobs.encode(b"\x11\x22\x00\x33") == b"\x03\x11\x22\x02\x33"
    assert cobs.encode(b"\x11\x22\x33\x44") == b"\x05\x11\x22\x33\x44"
    assert cobs.encode(b"\x11\x00\x00\x00") == b"\x02\x11\x01\x01\x01"


@pytest.mark.parametrize("bad", [b"", b"\x00", b"\x05\x11\x22", b"\x03\x11\x00", b"\x02\x11\x05"])
def test_malformed_is_refused(bad):
    with pytest.raises(cobs.DecodeError):
        cobs.decode(bad)
