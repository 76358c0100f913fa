"""Consistent Overhead Byte Stuffing (COBS).

The encoded body never contains 0x00, so 0x00 can delimit frames and a receiver resyncs at the next
0x00 after garbage. Encoding adds at most one byte per 254 bytes of data (plus one).
"""
from __future__ import annotations


class DecodeError(ValueError):
    """The bytes are not a valid COBS encoding."""


def encode(data: bytes) -> bytes:
    """COBS-encode ``data`` (without the 0x00 delimiter). Output length is len(data) + ceil(len/254),
    and 1 for empty data."""
    out = bytearray([0])
    block_start = 0          # index in ``out`` of the current block's code byte
    code = 1
    opened_by_full_block = False
    for byte in data:
        if byte == 0:
            out[block_start] = code
            block_start = len(out)
            out.append(0)
            code = 1
            opened_by_full_block = False
            continue
        out.append(byte)
        code += 1
        if code == 0xFF:
            out[block_start] = code
            block_start = len(out)
            out.append(0)
            code = 1
            opened_by_full_block = True
    if code == 1 and opened_by_full_block:
        del out[block_start]      # data ended exactly after a full block: no empty trailing block
    else:
        out[block_start] = code
    return bytes(out)


def decode(data: bytes) -> bytes:
    """Decode one COBS body (without the delimiter); raises :class:`DecodeError` if malformed."""
    out = bytearray()
    i = 0
    n = len(data)
    if n == 0:
        raise DecodeError("empty COBS body")
    while i < n:
        code = data[i]
        if code == 0:
            raise DecodeError("zero byte inside a COBS body")
        end = i + code
        if end > n:
            raise DecodeError("COBS block runs past the end")
        block = data[i + 1:end]
        if 0 in block:
            raise DecodeError("zero byte inside a COBS body")
        out += block
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


def max_encoded_len(n: int) -> int:
    """Upper bound of ``len(encode(x))`` for ``len(x) == n``."""
    return n + n // 254 + 1
