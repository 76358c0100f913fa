"""Helpers for the device-link tests: tiny models (cached on disk), a raw frame-level link.

Imported as ``conformance.linkkit`` (tests/ is on sys.path through tests/conftest.py). The fixtures
here can be imported into any test module: ``from conformance.linkkit import tiny_model``.
"""
from __future__ import annotations

import hashlib
import inspect
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest

from edgekit.link import frames as fr
from edgekit.link.frames import MsgType
from edgekit.link.transport import open_port

_TESTS = Path(__file__).resolve().parents[1]
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))


def _wide_dense() -> bytes:
    """int8 dense model with a 64-byte output (bigger than small frames carry)."""
    import tinymodels

    return tinymodels.convert_keras(tinymodels.dense_keras(inputs=16, hidden=12, outputs=64), int8=True)


_LOCAL_BUILDERS = {"wide_dense": _wide_dense}


def cached_model(name: str, cache_dir: Path) -> bytes:
    """tinymodels.<name>() as .tflite bytes, built once and kept in pytest's cache folder."""
    import tinymodels

    try:
        tf_version = metadata.version("tensorflow")
    except metadata.PackageNotFoundError:
        tf_version = "none"
    key = hashlib.sha256((inspect.getsource(tinymodels) + name + tf_version).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"{name}-{key}.tflite"
    if path.is_file():
        return path.read_bytes()
    builder = tinymodels.BUILDERS.get(name) or _LOCAL_BUILDERS[name]
    data = builder()
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return data


@pytest.fixture(scope="session")
def model_cache_dir(request) -> Path:
    return Path(request.config.cache.mkdir("edgekit-link-models"))


@pytest.fixture(scope="session")
def tiny_model(model_cache_dir) -> bytes:
    """Full-int8 CNN, 8x8x1 int8 in, 10 int8 out, about 3.4 KB."""
    return cached_model("int8_cnn", model_cache_dir)


@pytest.fixture(scope="session")
def tiny_float_model(model_cache_dir) -> bytes:
    return cached_model("float_cnn", model_cache_dir)


@pytest.fixture(scope="session")
def wide_model(model_cache_dir) -> bytes:
    """int8 dense 16 -> 12 -> 64: a 64-byte output."""
    return cached_model("wide_dense", model_cache_dir)


@pytest.fixture(scope="session")
def digits_model(model_cache_dir) -> bytes:
    """Full-int8 CNN of about 26 KB (several upload chunks at any chunk size)."""
    return cached_model("digits_cnn", model_cache_dir)


class RawLink:
    """Frames in and out of a port, with no retries and no interpretation: for protocol tests."""

    def __init__(self, port: str, baud: int = 115200):
        self.t = open_port(port, baud)
        self.decoder = fr.FrameDecoder()
        self.inbox: list[fr.Frame] = []
        self.seq = 100
        self.t.write(fr.DELIMITER)

    def close(self) -> None:
        self.t.close()

    def next_seq(self) -> int:
        self.seq = self.seq % 0xFFFF + 1
        return self.seq

    def send(self, msg_type: int, payload: bytes = b"", seq: int | None = None) -> int:
        seq = self.next_seq() if seq is None else seq
        self.t.write(fr.encode_frame(msg_type, seq, payload))
        return seq

    def send_raw(self, data: bytes) -> None:
        self.t.write(data)

    def recv(self, timeout: float = 2.0, *, seq: int | None = None, skip_logs: bool = True) -> fr.Frame | None:
        deadline = time.monotonic() + timeout
        while True:
            for i, f in enumerate(self.inbox):
                if skip_logs and f.type == MsgType.LOG:
                    continue
                if seq is None or f.seq == seq:
                    return self.inbox.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            data = self.t.read(min(left, 0.2))
            if data:
                self.inbox.extend(self.decoder.feed(data))

    def request(self, msg_type: int, payload: bytes = b"", seq: int | None = None,
                timeout: float = 5.0) -> fr.Frame:
        seq = self.send(msg_type, payload, seq)
        frame = self.recv(timeout, seq=seq)
        assert frame is not None, f"no reply to {MsgType(msg_type).name} seq {seq}"
        return frame

    def hello(self) -> fr.Hello:
        f = self.request(MsgType.HELLO_REQ)
        assert f.type == MsgType.HELLO
        return fr.Hello.unpack(f.payload)

    def expect_error(self, frame: fr.Frame, code: fr.ErrCode) -> fr.Error:
        assert frame.type == MsgType.ERROR, f"expected ERROR {code.name}, got {frame.name}"
        err = fr.Error.unpack(frame.payload)
        assert err.code == code, f"expected {code.name}, got {err.name} ({err.message})"
        return err

    def upload(self, model: bytes, *, sha: bytes | None = None) -> fr.Frame:
        """Raw upload at the device's chunk size; returns the UPLOAD_END reply."""
        sha = sha or hashlib.sha256(model).digest()
        st = fr.UploadStatus.unpack(self.request(MsgType.UPLOAD_BEGIN,
                                                 fr.UploadBegin(len(model), sha).pack()).payload)
        off = st.next_offset
        while off < len(model):
            f = self.request(MsgType.UPLOAD_CHUNK, fr.OffsetData(off, model[off:off + st.chunk_size]).pack())
            assert f.type == MsgType.UPLOAD_STATUS, f.name
            off = fr.UploadStatus.unpack(f.payload).next_offset
        return self.request(MsgType.UPLOAD_END, timeout=30.0)
