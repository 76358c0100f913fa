"""Protocol v1 frames (docs/protocol.md): COBS( header | payload | crc32 ) 0x00.

Header: version u8 | type u8 | seq u16 | length u16, all little-endian; CRC-32 (zlib.crc32) over
header | payload. :class:`FrameDecoder` takes bytes as they arrive, resyncs on 0x00 and drops (counts)
every malformed frame. The payload dataclasses pack and unpack each message's payload.
"""
from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass, field

from edgekit.link import cobs

VERSION = 1
HEADER = struct.Struct("<BBHH")
HEADER_LEN = HEADER.size          # 6
CRC_LEN = 4
OVERHEAD = HEADER_LEN + CRC_LEN   # 10 bytes of header + crc per frame, before COBS
DELIMITER = b"\x00"
MIN_MAX_PAYLOAD = 40              # UPLOAD_BEGIN (36 bytes) and a useful chunk must fit a request


class MsgType(enum.IntEnum):
    HELLO_REQ = 0x01
    UPLOAD_BEGIN = 0x02
    UPLOAD_CHUNK = 0x03
    UPLOAD_END = 0x04
    INVOKE = 0x05
    TENSOR_WRITE = 0x06
    TENSOR_READ = 0x07
    PROFILE = 0x08
    RESET = 0x09
    HELLO = 0x81
    UPLOAD_STATUS = 0x82
    UPLOAD_DONE = 0x84
    INVOKE_RESULT = 0x85
    TENSOR_ACK = 0x86
    TENSOR_DATA = 0x87
    PROFILE_RUNS = 0x88
    PROFILE_OPS = 0x89
    PROFILE_END = 0x8A
    ACK = 0x8B
    LOG = 0x8C
    ERROR = 0xFF


REQUEST_TYPES = frozenset(t for t in MsgType if t < 0x80)


class ErrCode(enum.IntEnum):
    BAD_FRAME = 1
    UNKNOWN_TYPE = 2
    BAD_LENGTH = 3
    NO_MODEL = 4
    HASH_MISMATCH = 5
    MODEL_INVALID = 6
    TOO_LARGE = 7
    INVOKE_FAILED = 8
    BAD_STATE = 9
    UNSUPPORTED = 10


class Capability(enum.IntFlag):
    UPLOAD = 1 << 0
    INVOKE = 1 << 1
    PROFILE = 1 << 2
    PER_OP = 1 << 3
    CYCLES = 1 << 4
    RESET = 1 << 5
    LOG = 1 << 6


def capability_names(bits: int) -> list[str]:
    return [c.name.lower() for c in Capability if bits & c]


@dataclass(frozen=True)
class Frame:
    type: int
    seq: int
    payload: bytes = b""
    version: int = VERSION

    @property
    def name(self) -> str:
        try:
            return MsgType(self.type).name
        except ValueError:
            return f"0x{self.type:02x}"


def encode_frame(msg_type: int, seq: int, payload: bytes = b"", *, version: int = VERSION) -> bytes:
    """The wire bytes of one frame, delimiter included."""
    if len(payload) > 0xFFFF:
        raise ValueError(f"payload of {len(payload)} bytes does not fit a frame (max 65535)")
    body = HEADER.pack(version, int(msg_type), seq & 0xFFFF, len(payload)) + bytes(payload)
    body += struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)
    return cobs.encode(body) + DELIMITER


def wire_len(payload_len: int) -> int:
    """Exact wire bytes of a frame whose payload has ``payload_len`` bytes (worst case of COBS)."""
    body = payload_len + OVERHEAD
    return body + -(-body // 254) + 1


def parse_body(body: bytes) -> Frame:
    """Parse a decoded (un-COBSed) frame body; raises ValueError naming what is wrong."""
    if len(body) < OVERHEAD:
        raise ValueError("short frame")
    (crc,) = struct.unpack_from("<I", body, len(body) - CRC_LEN)
    if zlib.crc32(body[:-CRC_LEN]) & 0xFFFFFFFF != crc:
        raise ValueError("bad crc")
    version, msg_type, seq, length = HEADER.unpack_from(body, 0)
    if length != len(body) - OVERHEAD:
        raise ValueError("length mismatch")
    return Frame(msg_type, seq, bytes(body[HEADER_LEN:-CRC_LEN]), version)


@dataclass
class DecoderStats:
    frames: int = 0
    dropped: int = 0
    bad_cobs: int = 0
    bad_crc: int = 0
    short: int = 0
    bad_length: int = 0
    foreign_version: int = 0
    oversize: int = 0
    skipped_bytes: int = 0
    last_foreign_version: int | None = None


class FrameDecoder:
    """Turns a byte stream into frames. Never raises on bad input: bad frames are counted and dropped.

    ``max_body``: longest COBS body accepted (longer runs are discarded up to the next 0x00).
    ``skip_to_first_delimiter``: discard everything before the first 0x00 (boot noise after opening a
    port, docs/protocol.md §4).
    """

    def __init__(self, max_body: int = 70000, *, skip_to_first_delimiter: bool = False):
        self.max_body = max_body
        self._buf = bytearray()
        self._discarding = skip_to_first_delimiter
        self._oversize = False
        self.stats = DecoderStats()

    def reset(self, *, skip_to_first_delimiter: bool = False) -> None:
        self._buf.clear()
        self._discarding = skip_to_first_delimiter
        self._oversize = False

    def feed(self, data: bytes) -> list[Frame]:
        frames: list[Frame] = []
        start = 0
        while True:
            idx = data.find(0, start)
            if idx < 0:
                self._append(data[start:])
                return frames
            self._append(data[start:idx])
            start = idx + 1
            if self._discarding:
                self._discarding = False
                self._buf.clear()
                continue
            if self._oversize:
                self._oversize = False
                self.stats.oversize += 1
                self.stats.dropped += 1
                self._buf.clear()
                continue
            body, self._buf = bytes(self._buf), bytearray()
            if not body:
                continue            # back-to-back delimiters: no frame, not an error
            frame = self._parse(body)
            if frame is not None:
                frames.append(frame)

    def _append(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self._discarding:
            self.stats.skipped_bytes += len(chunk)
            return
        if self._oversize:
            return
        self._buf += chunk
        if len(self._buf) > self.max_body:
            self._buf.clear()
            self._oversize = True

    def _parse(self, body: bytes) -> Frame | None:
        try:
            raw = cobs.decode(body)
        except cobs.DecodeError:
            self.stats.bad_cobs += 1
            self.stats.dropped += 1
            return None
        try:
            frame = parse_body(raw)
        except ValueError as e:
            reason = str(e)
            if reason == "bad crc":
                self.stats.bad_crc += 1
            elif reason == "short frame":
                self.stats.short += 1
            else:
                self.stats.bad_length += 1
            self.stats.dropped += 1
            return None
        if frame.version != VERSION:
            self.stats.foreign_version += 1
            self.stats.last_foreign_version = frame.version
            self.stats.dropped += 1
            return None
        self.stats.frames += 1
        return frame


# ---------------------------------------------------------------------------------------------
# Payloads


class PayloadError(ValueError):
    """A well-formed frame whose payload cannot be parsed (ERROR BAD_FRAME on the device)."""


def _need(payload: bytes, n: int, what: str) -> None:
    if len(payload) < n:
        raise PayloadError(f"{what} payload is {len(payload)} bytes, needs at least {n}")


def pack_str(text: str) -> bytes:
    raw = text.encode("utf-8")[:255]
    return bytes([len(raw)]) + raw


def unpack_str(payload: bytes, offset: int) -> tuple[str, int]:
    if offset >= len(payload):
        raise PayloadError("string length byte missing")
    n = payload[offset]
    end = offset + 1 + n
    if end > len(payload):
        raise PayloadError("string runs past the payload")
    return payload[offset + 1:end].decode("utf-8", "replace"), end


ZERO_HASH = bytes(32)


@dataclass(frozen=True)
class Hello:
    capabilities: int
    max_payload: int
    boot_nonce: int
    arena_bytes: int
    model_len: int
    model_sha256: bytes
    board_id: str
    firmware_version: str
    proto_version: int = VERSION

    _FIXED = struct.Struct("<BIHIII32s")

    def pack(self) -> bytes:
        return (self._FIXED.pack(self.proto_version, self.capabilities, self.max_payload,
                                 self.boot_nonce, self.arena_bytes, self.model_len, self.model_sha256)
                + pack_str(self.board_id) + pack_str(self.firmware_version))

    @classmethod
    def unpack(cls, payload: bytes) -> "Hello":
        _need(payload, cls._FIXED.size + 2, "HELLO")
        pv, caps, maxp, nonce, arena, mlen, sha = cls._FIXED.unpack_from(payload, 0)
        board, off = unpack_str(payload, cls._FIXED.size)
        fw, _ = unpack_str(payload, off)
        return cls(caps, maxp, nonce, arena, mlen, sha, board, fw, pv)

    @property
    def has_model(self) -> bool:
        return self.model_sha256 != ZERO_HASH

    def has(self, cap: Capability) -> bool:
        return bool(self.capabilities & cap)

    def to_dict(self) -> dict:
        return {"proto_version": self.proto_version, "board_id": self.board_id,
                "firmware_version": self.firmware_version,
                "capabilities": capability_names(self.capabilities), "max_payload": self.max_payload,
                "boot_nonce": self.boot_nonce, "arena_bytes": self.arena_bytes,
                "model_len": self.model_len,
                "model_sha256": self.model_sha256.hex() if self.has_model else None}


@dataclass(frozen=True)
class UploadBegin:
    total_len: int
    sha256: bytes
    _S = struct.Struct("<I32s")

    def pack(self) -> bytes:
        return self._S.pack(self.total_len, self.sha256)

    @classmethod
    def unpack(cls, payload: bytes) -> "UploadBegin":
        if len(payload) != cls._S.size:
            raise PayloadError(f"UPLOAD_BEGIN payload must be {cls._S.size} bytes")
        return cls(*cls._S.unpack(payload))


@dataclass(frozen=True)
class OffsetData:
    """UPLOAD_CHUNK, TENSOR_WRITE and TENSOR_DATA: offset u32 | data."""
    offset: int
    data: bytes

    def pack(self) -> bytes:
        return struct.pack("<I", self.offset) + bytes(self.data)

    @classmethod
    def unpack(cls, payload: bytes) -> "OffsetData":
        _need(payload, 4, "offset+data")
        return cls(struct.unpack_from("<I", payload)[0], bytes(payload[4:]))


@dataclass(frozen=True)
class UploadStatus:
    next_offset: int
    chunk_size: int
    _S = struct.Struct("<IH")

    def pack(self) -> bytes:
        return self._S.pack(self.next_offset, self.chunk_size)

    @classmethod
    def unpack(cls, payload: bytes) -> "UploadStatus":
        _need(payload, cls._S.size, "UPLOAD_STATUS")
        return cls(*cls._S.unpack_from(payload))


@dataclass(frozen=True)
class UploadDone:
    sha256: bytes
    arena_used: int
    _S = struct.Struct("<32sI")

    def pack(self) -> bytes:
        return self._S.pack(self.sha256, self.arena_used)

    @classmethod
    def unpack(cls, payload: bytes) -> "UploadDone":
        _need(payload, cls._S.size, "UPLOAD_DONE")
        return cls(*cls._S.unpack_from(payload))


@dataclass(frozen=True)
class InvokeResult:
    time_ns: int
    cycles: int
    output_len: int
    output: bytes
    _S = struct.Struct("<QII")
    HEADER_LEN = 16

    def pack(self) -> bytes:
        return self._S.pack(self.time_ns, self.cycles, self.output_len) + bytes(self.output)

    @classmethod
    def unpack(cls, payload: bytes) -> "InvokeResult":
        _need(payload, cls._S.size, "INVOKE_RESULT")
        t, c, n = cls._S.unpack_from(payload)
        return cls(t, c, n, bytes(payload[cls._S.size:]))


@dataclass(frozen=True)
class TensorAck:
    next_offset: int

    def pack(self) -> bytes:
        return struct.pack("<I", self.next_offset)

    @classmethod
    def unpack(cls, payload: bytes) -> "TensorAck":
        _need(payload, 4, "TENSOR_ACK")
        return cls(struct.unpack_from("<I", payload)[0])


@dataclass(frozen=True)
class TensorRead:
    offset: int
    length: int
    _S = struct.Struct("<IH")

    def pack(self) -> bytes:
        return self._S.pack(self.offset, self.length)

    @classmethod
    def unpack(cls, payload: bytes) -> "TensorRead":
        if len(payload) != cls._S.size:
            raise PayloadError("TENSOR_READ payload must be 6 bytes")
        return cls(*cls._S.unpack(payload))


@dataclass(frozen=True)
class ProfileRequest:
    warmup: int
    runs: int
    _S = struct.Struct("<HH")

    def pack(self) -> bytes:
        return self._S.pack(self.warmup, self.runs)

    @classmethod
    def unpack(cls, payload: bytes) -> "ProfileRequest":
        if len(payload) != cls._S.size:
            raise PayloadError("PROFILE payload must be 4 bytes")
        return cls(*cls._S.unpack(payload))


RUN_RECORD = struct.Struct("<QI")     # time_ns u64, cycles u32
TRAIN_HEADER = struct.Struct("<HHH")  # total, first, count


@dataclass(frozen=True)
class ProfileRuns:
    total: int
    first: int
    records: list[tuple[int, int]] = field(default_factory=list)   # (time_ns, cycles)

    def pack(self) -> bytes:
        return (TRAIN_HEADER.pack(self.total, self.first, len(self.records))
                + b"".join(RUN_RECORD.pack(t, c) for t, c in self.records))

    @classmethod
    def unpack(cls, payload: bytes) -> "ProfileRuns":
        _need(payload, TRAIN_HEADER.size, "PROFILE_RUNS")
        total, first, count = TRAIN_HEADER.unpack_from(payload)
        if len(payload) != TRAIN_HEADER.size + count * RUN_RECORD.size:
            raise PayloadError("PROFILE_RUNS record count does not match its length")
        recs = [RUN_RECORD.unpack_from(payload, TRAIN_HEADER.size + i * RUN_RECORD.size)
                for i in range(count)]
        return cls(total, first, recs)

    @staticmethod
    def per_frame(max_payload: int) -> int:
        return max(1, (max_payload - TRAIN_HEADER.size) // RUN_RECORD.size)


@dataclass(frozen=True)
class ProfileOps:
    total: int
    first: int
    records: list[tuple[str, int, int]] = field(default_factory=list)   # (name, count, total_ns)

    def pack(self) -> bytes:
        return (TRAIN_HEADER.pack(self.total, self.first, len(self.records))
                + b"".join(pack_str(n) + struct.pack("<IQ", c, t) for n, c, t in self.records))

    @classmethod
    def unpack(cls, payload: bytes) -> "ProfileOps":
        _need(payload, TRAIN_HEADER.size, "PROFILE_OPS")
        total, first, count = TRAIN_HEADER.unpack_from(payload)
        off = TRAIN_HEADER.size
        recs = []
        for _ in range(count):
            name, off = unpack_str(payload, off)
            _need(payload, off + 12, "PROFILE_OPS record")
            c, t = struct.unpack_from("<IQ", payload, off)
            off += 12
            recs.append((name, c, t))
        return cls(total, first, recs)


@dataclass(frozen=True)
class ProfileEnd:
    runs: int
    arena_used: int
    _S = struct.Struct("<HI")

    def pack(self) -> bytes:
        return self._S.pack(self.runs, self.arena_used)

    @classmethod
    def unpack(cls, payload: bytes) -> "ProfileEnd":
        _need(payload, cls._S.size, "PROFILE_END")
        return cls(*cls._S.unpack_from(payload))


@dataclass(frozen=True)
class Log:
    level: int
    text: str
    LEVELS = ("debug", "info", "warning", "error")

    def pack(self) -> bytes:
        return bytes([self.level]) + self.text.encode("utf-8")

    @classmethod
    def unpack(cls, payload: bytes) -> "Log":
        _need(payload, 1, "LOG")
        return cls(payload[0], payload[1:].decode("utf-8", "replace"))


@dataclass(frozen=True)
class Error:
    code: int
    message: str

    def pack(self) -> bytes:
        return struct.pack("<H", self.code) + self.message.encode("utf-8")

    @classmethod
    def unpack(cls, payload: bytes) -> "Error":
        _need(payload, 2, "ERROR")
        return cls(struct.unpack_from("<H", payload)[0], payload[2:].decode("utf-8", "replace"))

    @property
    def name(self) -> str:
        try:
            return ErrCode(self.code).name
        except ValueError:
            return f"code {self.code}"


def upload_wire_bytes_per_model_byte(chunk_size: int) -> float:
    """Wire bytes per model byte for an upload in chunks of ``chunk_size`` (docs/protocol.md §1)."""
    return wire_len(chunk_size + 4) / chunk_size
