"""`edgekit export --format c`: model_data.h / model_data.cc / model_ops.h for TFLM firmware.

The layout follows TFLM's own generator (generate_cc_arrays): the model as
``alignas(16) const unsigned char g_<name>_model_data[]`` with ``constexpr unsigned int
g_<name>_model_data_len``, plus what firmware needs next to it: the tensor arena size (measured on
host TFLM, plus a margin for 32-bit targets), input/output quantization constants, and a function that
fills a ``tflite::MicroMutableOpResolver<N>`` with exactly the model's ops.

The .cc is streamed to disk (12 bytes per line as ``0x1c,``: about 5.3 characters per model byte),
so a multi-megabyte model never sits in memory as one big string.
"""
from __future__ import annotations

import keyword
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from edgekit._version import __version__
from edgekit.errors import UnsupportedModelError, UsageError

BYTES_PER_LINE = 12
# Arena margin for 32-bit targets. The arena is measured by the host (64-bit) TFLM with reference
# kernels. On a Cortex-M the interpreter's own structs are smaller (4-byte pointers), but optimized
# kernels (CMSIS-NN, ...) may ask for scratch buffers the reference kernels do not, and alignment can
# differ. Margin: a quarter of the measured size, at least 1 KiB, rounded up to 16 bytes.
ARENA_MARGIN_FRACTION = 0.25
ARENA_MARGIN_MIN_BYTES = 1024

_C_KEYWORDS = frozenset("""
alignas alignof and and_eq asm auto bitand bitor bool break case catch char char8_t char16_t char32_t
class compl concept const consteval constexpr constinit const_cast continue co_await co_return
co_yield decltype default delete do double dynamic_cast else enum explicit export extern false float
for friend goto if inline int long mutable namespace new noexcept not not_eq nullptr operator or or_eq
private protected public register reinterpret_cast requires restrict return short signed sizeof static
static_assert static_cast struct switch template this thread_local throw true try typedef typeid
typename union unsigned using virtual void volatile wchar_t while xor xor_eq _Bool _Complex _Imaginary
""".split())

_HEX = [f"0x{b:02x}," for b in range(256)]


def c_identifier(name: str) -> str:
    """A valid C/C++ identifier from any name: ``my-model v2`` -> ``my_model_v2``, ``2nd`` -> ``m_2nd``.

    Raises UsageError when nothing usable is left (no letters or digits at all).
    """
    ident = re.sub(r"[^0-9A-Za-z_]+", "_", str(name))
    ident = re.sub(r"_+", "_", ident).strip("_")
    if not ident:
        raise UsageError(f"model name {name!r} has no letters or digits to make a C identifier from",
                         hint="pass --name with letters, digits or underscores, e.g. --name digits")
    if ident[0].isdigit():
        ident = "m_" + ident
    if ident in _C_KEYWORDS or keyword.iskeyword(ident):
        ident += "_model"
    return ident


def arena_with_margin(measured_bytes: int) -> int:
    margin = max(ARENA_MARGIN_MIN_BYTES, int(measured_bytes * ARENA_MARGIN_FRACTION))
    return (measured_bytes + margin + 15) // 16 * 16


@dataclass
class CExportResult:
    out_dir: str
    name: str                          # the C identifier used in g_<name>_...
    files: list[str]
    model_bytes: int
    source_bytes: int                  # size of model_data.cc
    arena_bytes: int                   # measured on host TFLM
    arena_size_constant: int           # what the header declares (measured + margin)
    ops: list[str]
    resolver_methods: list[str]
    sha256: str
    board_fit: Any = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.board_fit is not None and hasattr(self.board_fit, "__dataclass_fields__"):
            d["board_fit"] = asdict(self.board_fit)
        return d


def _float_literal(v: float) -> str:
    text = repr(float(v))
    if "e" not in text and "." not in text and "inf" not in text and "nan" not in text:
        text += ".0"
    return text + "f"


def _io_constants(prefix: str, kind: str, tensors) -> list[str]:
    lines = []
    for i, t in enumerate(tensors):
        tag = kind if len(tensors) == 1 else f"{kind}{i}"
        dims = ", ".join(str(d) for d in t.shape) or "scalar"
        if t.scale is not None:
            lines.append(f"// {kind} {i}: {t.dtype} [{dims}], real = scale * (q - zero_point)")
            lines.append(f"constexpr float {prefix}_{tag}_scale = {_float_literal(t.scale)};")
            lines.append(f"constexpr int {prefix}_{tag}_zero_point = {int(t.zero_point or 0)};")
        else:
            lines.append(f"// {kind} {i}: {t.dtype} [{dims}], not quantized "
                         "(scale 1, zero point 0 leave values unchanged)")
            lines.append(f"constexpr float {prefix}_{tag}_scale = 1.0f;")
            lines.append(f"constexpr int {prefix}_{tag}_zero_point = 0;")
    return lines


def _banner(what: str, info, board) -> list[str]:
    origin = Path(info.source).name if info.source != "<bytes>" else "model bytes"
    lines = [
        f"// {what}",
        f"// Generated by edgekit {__version__} from {origin}.",
        f"// Model SHA-256: {info.sha256}",
        f"// Model size: {info.model_bytes} bytes. Do not edit: re-run `edgekit export --format c`.",
    ]
    if board is not None:
        lines.append(f"// Board: {board.id} ({board.name})")
    return lines


def _write_header(path: Path, prefix: str, guard: str, info, arena_const: int, board) -> None:
    from edgekit.fileio import write_text

    a = info.arena
    lines = [*_banner("TFLite model as a C array, with its tensor arena size and I/O quantization.",
                      info, board), "",
             f"#ifndef {guard}", f"#define {guard}", "",
             f"extern const unsigned char {prefix}_model_data[];",
             f"constexpr unsigned int {prefix}_model_data_len = {info.model_bytes};", "",
             "// Smallest tensor arena in which host TFLM allocated and ran the model",
             f"// ({a.arena_bytes} bytes; 16 bytes less failed). The size below adds a margin for",
             "// 32-bit targets and optimized kernels: "
             f"max({ARENA_MARGIN_MIN_BYTES}, {int(ARENA_MARGIN_FRACTION * 100)} %), rounded up to 16.",
             f"constexpr unsigned int {prefix}_arena_measured_bytes = {a.arena_bytes};",
             f"constexpr unsigned int {prefix}_tensor_arena_size = {arena_const};"]
    if a.alt_decompression_bytes:
        lines += ["",
                  "// LUT-compressed model: with an alternate decompression buffer of this size",
                  "// (MicroInterpreter alt_decompression_memory) the arena can shrink to the",
                  "// second figure.",
                  f"constexpr unsigned int {prefix}_alt_decompression_bytes = "
                  f"{a.alt_decompression_bytes};",
                  f"constexpr unsigned int {prefix}_arena_with_alt_measured_bytes = "
                  f"{a.arena_with_alt_bytes};"]
    lines += ["", *_io_constants(prefix, "input", info.inputs),
              *_io_constants(prefix, "output", info.outputs), "", f"#endif  // {guard}", ""]
    write_text(path, "\n".join(lines))


def _source_chunks(prefix: str, header_name: str, info, data: bytes, board) -> Iterator[bytes]:
    """model_data.cc as a stream of UTF-8 chunks (a few hundred KiB each)."""
    head = "\n".join([*_banner("TFLite model bytes (16-byte aligned, read-only).", info, board), "",
                      f'#include "{header_name}"', "",
                      f"alignas(16) const unsigned char {prefix}_model_data[] = {{", ""])
    yield head.encode("utf-8")
    view = memoryview(data)
    step = BYTES_PER_LINE * 4096
    hexes = _HEX
    for start in range(0, len(data), step):
        block = view[start:start + step]
        lines = ["  " + "".join([hexes[b] for b in block[i:i + BYTES_PER_LINE]]) + "\n"
                 for i in range(0, len(block), BYTES_PER_LINE)]
        yield "".join(lines).encode("ascii")
    yield (f"}};\n\nstatic_assert(sizeof({prefix}_model_data) == {prefix}_model_data_len,\n"
           f"              \"model array and length constant disagree\");\n").encode("ascii")


def _write_source(path: Path, prefix: str, header_name: str, info, data: bytes, board) -> int:
    """Stream model_data.cc to disk atomically; an identical existing file is left untouched.

    Returns the file's size in bytes.
    """
    import hashlib

    from edgekit.fileio import atomic_open

    if path.is_file():
        digest, size = hashlib.sha256(), 0
        for chunk in _source_chunks(prefix, header_name, info, data, board):
            digest.update(chunk)
            size += len(chunk)
        try:
            if path.stat().st_size == size:
                existing = hashlib.sha256()
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        existing.update(block)
                if existing.digest() == digest.digest():
                    return size
        except OSError:
            pass
    written = 0
    with atomic_open(path, "wb") as f:
        for chunk in _source_chunks(prefix, header_name, info, data, board):
            f.write(chunk)
            written += len(chunk)
    return written


def write_op_resolver(path: Path, prefix: str, guard: str, banner: list[str],
                      methods: list[tuple[str, str]]) -> None:
    """model_ops.h: ``register_<name>_ops()`` adding exactly ``methods`` ((op, resolver method) pairs)."""
    from edgekit.fileio import write_text

    n = len(methods)
    lines = [*banner, "",
             f"#ifndef {guard}", f"#define {guard}", "",
             '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"', "",
             f"constexpr unsigned int {prefix}_op_count = {n};", "",
             f"// Usage: tflite::MicroMutableOpResolver<{prefix}_op_count> resolver;",
             f"//        if (register_{prefix[2:]}_ops(resolver) != kTfLiteOk) {{ /* handle error */ }}",
             f"inline TfLiteStatus register_{prefix[2:]}_ops(",
             f"    tflite::MicroMutableOpResolver<{prefix}_op_count>& resolver) {{"]
    for op, method in methods:
        lines.append(f"  if (resolver.{method}() != kTfLiteOk) return kTfLiteError;  // {op}")
    lines += ["  return kTfLiteOk;", "}", "", f"#endif  // {guard}", ""]
    write_text(path, "\n".join(lines))


def export_c(model: str | os.PathLike | bytes, out_dir: str | os.PathLike, *, name: str | None = None,
             board: Any = None, timeout_s: float | None = None, **_ignored) -> CExportResult:
    """Write model_data.h, model_data.cc and model_ops.h for ``model`` into ``out_dir``.

    ``name`` (default: the file's stem, or "model") becomes the C identifier in g_<name>_model_data.
    ``board`` (id or Board) adds a fit check to the result (a warning when it does not fit).
    Raises UnsupportedModelError when the model has ops TFLM cannot run.
    """
    from edgekit.fileio import ensure_dir
    from edgekit.model.inspect import inspect
    from edgekit.model.load import load_tflite
    from edgekit.model.tflm_ops import resolver_method

    if name is None:
        name = Path(model).stem if isinstance(model, (str, os.PathLike)) else "model"
    ident = c_identifier(name)
    prefix = f"g_{ident}"
    verified = load_tflite(model)
    info = inspect(verified, board=board, timeout_s=timeout_s)
    if info.tflm_unsupported_ops:
        raise UnsupportedModelError(
            "TFLM cannot run this model's ops: " + ", ".join(info.tflm_unsupported_ops),
            hint="replace those layers or convert with TFLITE_BUILTINS(_INT8) only")
    if info.arena.arena_bytes is None:
        raise UnsupportedModelError(f"TFLM could not allocate this model: {info.arena.error}",
                                    hint="`edgekit inspect` shows what the model holds")
    methods = [(op, resolver_method(op)) for op in info.resolver_ops]
    arena_const = arena_with_margin(info.arena.arena_bytes)
    if board is not None and isinstance(board, str):
        from edgekit.boards import load_board

        board = load_board(board)

    out = ensure_dir(out_dir)
    guard_base = f"EDGEKIT_{ident.upper()}"
    header = out / "model_data.h"
    _write_header(header, prefix, f"{guard_base}_MODEL_DATA_H_", info, arena_const, board)
    source_bytes = _write_source(out / "model_data.cc", prefix, header.name, info, verified.data, board)
    write_op_resolver(out / "model_ops.h", prefix, f"{guard_base}_MODEL_OPS_H_",
                      _banner("The op resolver for this model: exactly its ops, nothing else.", info, board),
                      methods)

    warnings = list(info.warnings)
    fit = info.board_fit
    if fit is not None and fit.fits is False and (fit.flash_margin_bytes < 0 or (fit.ram_margin_bytes or 0) < 0):
        warnings.append(f"the model does not fit {fit.board}: flash margin {fit.flash_margin_bytes} B, "
                        f"RAM margin {fit.ram_margin_bytes} B")
    return CExportResult(out_dir=str(out), name=ident,
                         files=[str(out / f) for f in ("model_data.h", "model_data.cc", "model_ops.h")],
                         model_bytes=info.model_bytes, source_bytes=source_bytes,
                         arena_bytes=info.arena.arena_bytes, arena_size_constant=arena_const,
                         ops=[op for op, _ in methods], resolver_methods=[m for _, m in methods],
                         sha256=info.sha256, board_fit=fit, warnings=warnings)
