"""The one door through which every .tflite enters edgekit.

:func:`load_tflite` reads a path or takes bytes, says what a file looks like when it is not TFLite
(HDF5, zip / .keras, SavedModel folder, text, ...), checks the ``TFL3`` identifier and size limits,
runs the LiteRT flatbuffer verifier on the bytes, then the graph checks of edgekit.model.checks (every
op input produced before it is read, constants with their bytes, buffers that match their shapes).
Nothing else in edgekit parses or runs a model that did not come out of here.

Verifier vs. semantic checks (measured with ai-edge-litert 2.3): ``Interpreter(model_content=...)``
first runs the flatbuffer verifier (failure: "The model is not a valid Flatbuffer buffer"), then
builds the interpreter, which also resolves every op and checks quantization parameters against
tensor shapes. A model that passes the verifier but fails the build (a TFLM-only custom op such as
TFLM_DECODE, per-channel scales LiteRT does not accept, ...) is structurally sound: it is accepted,
and LiteRT's objection travels along as ``litert_warning``. ``allocate_tensors`` (kernel Prepare) is
not run here.

Random single-byte mutations never crashed the interpreter build, but overwriting 32-bit fields with
boundary values (0x7fffffff, 0xffffffff, ...) did (SIGSEGV inside ``Interpreter(model_content=)``,
about one model in a few thousand). So the build runs in a child process
(edgekit.model._litert_child through edgekit.childproc, one long-lived child per process, restarted
after a crash; a check costs milliseconds), as does everything that runs kernels (TFLM,
edgekit.model.tflm_host). A crash there is a NativeCrash error; edgekit itself lives on.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.childproc import ChildProcess
from edgekit.errors import InputFileError, ModelFormatError

TFLITE_IDENTIFIER = b"TFL3"
# Smallest buffer that can hold a root offset, the identifier and a table: anything shorter is junk.
MIN_MODEL_BYTES = 16
# FlatBuffers address at most 2 GiB; models larger than that store buffers outside the flatbuffer,
# which no microcontroller or phone path in edgekit handles.
MAX_MODEL_BYTES = 2**31 - 1


@dataclass(frozen=True)
class VerifiedModel:
    """Bytes of a .tflite that passed the identifier check and the LiteRT flatbuffer verifier."""

    data: bytes
    source: str                         # file path, or "<bytes>"
    sha256: str
    litert_warning: str | None = None   # why LiteRT would not build it (TFLM may still run it)
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def size_bytes(self) -> int:
        return len(self.data)


def describe_non_tflite(data: bytes) -> str:
    """A short phrase saying what ``data`` looks like, for an error about a file that is not TFLite."""
    if not data:
        return "an empty file"
    head = data[:64]
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "an HDF5 file (a Keras .h5 model? convert it first: edgekit convert)"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        if b"config.json" in data[:4096] or b"model.weights.h5" in data[:65536]:
            return "a zip archive holding a Keras model (.keras; convert it first: edgekit convert)"
        return "a zip archive"
    if head.startswith(b"\x7fELF"):
        return "an ELF executable"
    if head[:2] == b"\x1f\x8b":
        return "a gzip-compressed file"
    if head.startswith(b"\x93NUMPY"):
        return "a NumPy .npy array"
    if len(data) >= 8 and data[4:8] == b"TFL3":
        return "a truncated or damaged TFLite model"
    try:
        text = data[:4096].decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\r\n\t" for c in text):
        return "a text file"
    return "unrecognised binary data"


def _check_path(path: Path) -> bytes:
    if not path.exists():
        raise InputFileError(f"model file not found: {path}",
                             hint="check the path; models are .tflite files made by edgekit convert")
    if path.is_dir():
        if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():
            raise ModelFormatError(f"{path} is a TensorFlow SavedModel folder, not a .tflite file",
                                   hint="convert it first: edgekit convert")
        raise InputFileError(f"{path} is a folder, expected a .tflite file")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise InputFileError(f"cannot read {path}: {e.strerror}") from e
    if size > MAX_MODEL_BYTES:
        raise ModelFormatError(f"{path} is {size} bytes; TFLite flatbuffers are at most 2 GiB")
    try:
        return path.read_bytes()
    except OSError as e:
        raise InputFileError(f"cannot read {path}: {e.strerror}") from e


def check_identifier(data: bytes, source: str = "<bytes>") -> None:
    """Raise ModelFormatError unless ``data`` is large enough and carries the TFL3 identifier."""
    if len(data) < MIN_MODEL_BYTES or data[4:8] != TFLITE_IDENTIFIER:
        looks = describe_non_tflite(data)
        hint = "pass a .tflite model (edgekit convert makes one)"
        if len(data) < MIN_MODEL_BYTES and data:
            looks = f"{looks} of only {len(data)} bytes"
        raise ModelFormatError(f"{source} is not a TFLite model: it looks like {looks}", hint=hint)
    if len(data) > MAX_MODEL_BYTES:
        raise ModelFormatError(f"{source} is {len(data)} bytes; TFLite flatbuffers are at most 2 GiB")


# One long-lived LiteRT child per edgekit process, started on first use and again after a crash, so
# verifying a model costs milliseconds, not a process start.
_LITERT = ChildProcess("edgekit.model._litert_child", name="LiteRT",
                       crash_hint="the model is malformed; re-create the .tflite file (edgekit rejected it "
                                  "safely)",
                       timeout_hint="the model is malformed or far too large")


def litert_build(data: bytes, *, timeout_s: float | None = None) -> str | None:
    """Run the LiteRT verifier and interpreter build on ``data`` (bytes, never a path).

    Runs in a child process (edgekit.model._litert_child, kept alive between calls): a crafted
    flatbuffer can crash LiteRT's interpreter build natively, which must not take edgekit down.
    Returns None when LiteRT builds it, or LiteRT's objection (a one-line string) when the flatbuffer
    is valid but LiteRT refuses to build an interpreter. Raises ModelFormatError when the verifier
    rejects the flatbuffer, NativeCrash when LiteRT crashed (NativeTimeout: hung) on it, RuntimeMissing
    without ai-edge-litert.
    """
    if timeout_s is None:
        timeout_s = 30.0 + len(data) / 20e6          # generous: verification runs at ~100 MB/s
    reply = _LITERT.request({"op": "verify", "model": bytes(data)}, timeout_s)
    status = reply.get("status")
    if status == "invalid":
        raise ModelFormatError("the model failed flatbuffer verification (truncated or corrupt)",
                               hint="re-create or re-download the .tflite file")
    if status == "objection":
        return str(reply.get("message") or "refused")
    return None


def load_tflite(model: str | os.PathLike | bytes | bytearray | memoryview | VerifiedModel) -> VerifiedModel:
    """Read and verify a .tflite model from a path or bytes. Raises an EdgekitError, never crashes."""
    from edgekit.fileio import sha256

    if isinstance(model, VerifiedModel):
        return model
    if isinstance(model, (bytes, bytearray, memoryview)):
        data, source = bytes(model), "<bytes>"
    elif isinstance(model, (str, os.PathLike)):
        path = Path(model)
        data, source = _check_path(path), str(path)
    else:
        raise InputFileError(f"expected a .tflite path or bytes, got {type(model).__name__}")
    check_identifier(data, source)
    objection = litert_build(data)
    warnings = ()
    if objection:
        warnings = (f"LiteRT would not build this model ({objection}); TFLM may still run it",)
    verified = VerifiedModel(data=data, source=source, sha256=sha256(data), litert_warning=objection,
                             warnings=warnings)
    # The verifier proved the flatbuffer well-formed; now the graph itself (ops in order, constants
    # with their bytes), before TFLM or LiteRT allocates or invokes anything.
    from edgekit.model.checks import check_graph
    from edgekit.model.graph import parse

    check_graph(parse(verified), "the model" if source == "<bytes>" else source)
    return verified
