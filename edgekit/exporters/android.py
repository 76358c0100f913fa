"""`edgekit export --format android`: the model as an app asset plus a small Kotlin class.

Writes, under ``out_dir`` (normally ``app/src/main``):

- ``assets/<name>.tflite``: the verified model, byte for byte;
- ``java/<package path>/EdgekitModel.kt``: loads the asset with the LiteRT ``Interpreter``
  (``org.tensorflow.lite.Interpreter`` from the ``com.google.ai.edge.litert:litert`` artifact) and
  exposes every input's and output's shape, type, scale and zero point as constants read from the
  model now, plus helpers that quantize float input and dequantize the output.

Files are written atomically and not rewritten when unchanged, so Gradle's up-to-date checks hold.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import UsageError

DEFAULT_PACKAGE = "com.example.edgekit"
CLASS_NAME = "EdgekitModel"
LITERT_ARTIFACT = "com.google.ai.edge.litert:litert"
LITERT_VERSION = "2.1.0"   # pinned; LiteRT keeps the org.tensorflow.lite.Interpreter API (ai.google.dev/edge/litert/migration)
_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KOTLIN_HARD_KEYWORDS = {"as", "break", "class", "continue", "do", "else", "false", "for", "fun", "if", "in",
                         "interface", "is", "null", "object", "package", "return", "super", "this", "throw",
                         "true", "try", "typealias", "typeof", "val", "var", "when", "while"}
_KOTLIN_TYPES = {"int8": ("Byte", 1), "uint8": ("Byte", 1), "int16": ("Short", 2), "int32": ("Int", 4),
                 "float32": ("Float", 4), "float16": ("Short", 2), "int64": ("Long", 8), "bool": ("Byte", 1)}


@dataclass
class AndroidExport:
    out_dir: Path
    package: str
    asset: str
    files: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)   # files whose content changed
    model_sha256: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"format": "android", "out_dir": str(self.out_dir), "package": self.package,
                "asset": self.asset, "files": self.files, "written": self.written,
                "model_sha256": self.model_sha256, "litert": f"{LITERT_ARTIFACT}:{LITERT_VERSION}"}


def check_package(package: str) -> str:
    parts = package.split(".")
    for part in parts:
        if not _SEGMENT.fullmatch(part) or part in _KOTLIN_HARD_KEYWORDS:
            raise UsageError(f"'{package}' is not a valid Kotlin package name (segment '{part}')",
                             hint="use dotted lower-case identifiers, e.g. com.example.myapp")
    return package


def _asset_name(name: str | None, model) -> str:
    if name is None:
        name = Path(model).stem if isinstance(model, (str, os.PathLike)) else "model"
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".") or "model"
    return stem if stem.endswith(".tflite") else stem + ".tflite"


def _kfloat(value: float | None) -> str:
    if value is None:
        return "0f"
    text = f"{float(value):.9g}"
    return text + "f"


def _io_block(kind: str, tensors: list[dict]) -> str:
    shapes = ", ".join("intArrayOf(" + ", ".join(str(int(s)) for s in t["shape"]) + ")" for t in tensors)
    lines = [
        f"        /** Shape of each {kind} tensor, in model order. */",
        f"        val {kind.upper()}_SHAPES: Array<IntArray> = arrayOf({shapes})",
        f"        /** Element type of each {kind} tensor (TFLite names). */",
        f"        val {kind.upper()}_TYPES: Array<String> = arrayOf("
        + ", ".join(f'"{t["dtype"]}"' for t in tensors) + ")",
        f"        /** Bytes of each {kind} tensor. */",
        f"        val {kind.upper()}_BYTES: IntArray = intArrayOf(" + ", ".join(str(int(t["bytes"])) for t in tensors) + ")",
        f"        /** Per-tensor quantization scale (0 when the tensor is not quantized). */",
        f"        val {kind.upper()}_SCALES: FloatArray = floatArrayOf("
        + ", ".join(_kfloat(t["scale"]) for t in tensors) + ")",
        f"        /** Per-tensor quantization zero point (0 when the tensor is not quantized). */",
        f"        val {kind.upper()}_ZERO_POINTS: IntArray = intArrayOf("
        + ", ".join(str(int(t["zero_point"] or 0)) for t in tensors) + ")",
    ]
    return "\n".join(lines)


def render_kotlin(package: str, asset: str, sha256: str, inputs: list[dict], outputs: list[dict],
                  edgekit_version: str) -> str:
    in0, out0 = inputs[0], outputs[0]
    int8_in = in0["dtype"] in ("int8", "uint8") and in0["scale"]
    int8_out = out0["dtype"] in ("int8", "uint8") and out0["scale"]
    lo, hi = (-128, 127) if in0["dtype"] == "int8" else (0, 255)
    quantize = (
        f"""    /** Quantize float values into input 0 ({in0['dtype']}, scale {in0['scale']}, zero point {in0['zero_point']}). */
    fun quantizeInput(values: FloatArray): ByteBuffer {{
        val buffer = ByteBuffer.allocateDirect(INPUT_BYTES[0]).order(ByteOrder.nativeOrder())
        for (v in values) {{
            val q = Math.round(v / INPUT_SCALES[0]) + INPUT_ZERO_POINTS[0]
            buffer.put(q.coerceIn({lo}, {hi}).toByte())
        }}
        buffer.rewind()
        return buffer
    }}
""" if int8_in else
        """    /** Pack float values into input 0 (a float32 tensor). */
    fun quantizeInput(values: FloatArray): ByteBuffer {
        val buffer = ByteBuffer.allocateDirect(INPUT_BYTES[0]).order(ByteOrder.nativeOrder())
        for (v in values) buffer.putFloat(v)
        buffer.rewind()
        return buffer
    }
""")
    signed = out0["dtype"] == "int8"
    to_int = "b.toInt()" if signed else "b.toInt() and 0xFF"
    dequantize = (
        f"""    /** Dequantize output 0 ({out0['dtype']}, scale {out0['scale']}, zero point {out0['zero_point']}) to floats. */
    fun dequantizeOutput(buffer: ByteBuffer): FloatArray {{
        buffer.rewind()
        return FloatArray(OUTPUT_BYTES[0]) {{
            val b = buffer.get()
            ({to_int} - OUTPUT_ZERO_POINTS[0]) * OUTPUT_SCALES[0]
        }}
    }}
""" if int8_out else
        """    /** Read output 0 (a float32 tensor) as floats. */
    fun dequantizeOutput(buffer: ByteBuffer): FloatArray {
        buffer.rewind()
        return FloatArray(OUTPUT_BYTES[0] / 4) { buffer.getFloat() }
    }
""")
    return f"""// Generated by edgekit {edgekit_version} from {asset} (sha256 {sha256}).
// Re-run `edgekit export --format android` instead of editing: the constants below are read from the model.
// Needs implementation("{LITERT_ARTIFACT}:{LITERT_VERSION}") in the app's dependencies.
package {package}

import android.content.Context
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.MappedByteBuffer
import java.nio.channels.FileChannel
import org.tensorflow.lite.Interpreter

/** The edgekit model in assets/{asset}, run with the LiteRT Interpreter. Close it when done. */
class {CLASS_NAME}(context: Context, numThreads: Int = 1) : AutoCloseable {{
    companion object {{
        const val ASSET = "{asset}"
        const val MODEL_SHA256 = "{sha256}"
{_io_block("input", inputs)}
{_io_block("output", outputs)}

        /** Memory-maps the asset (it must be stored uncompressed, the default for .tflite). */
        fun loadModel(context: Context): MappedByteBuffer {{
            context.assets.openFd(ASSET).use {{ fd ->
                FileInputStream(fd.fileDescriptor).use {{ stream ->
                    return stream.channel.map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
                }}
            }}
        }}
    }}

    private val interpreter = Interpreter(loadModel(context), Interpreter.Options().setNumThreads(numThreads))

    /** Run one inference: input 0 in, output 0 out (both direct buffers in native byte order). */
    fun run(input: ByteBuffer, output: ByteBuffer) {{
        output.rewind()
        interpreter.run(input, output)
    }}

    /** A direct buffer sized for output 0. */
    fun newOutputBuffer(): ByteBuffer = ByteBuffer.allocateDirect(OUTPUT_BYTES[0]).order(ByteOrder.nativeOrder())

{quantize}
{dequantize}
    override fun close() = interpreter.close()
}}
"""


def export_android(model, out_dir, *, name: str | None = None, board: Any = None,
                   package: str = DEFAULT_PACKAGE, **_options) -> AndroidExport:
    """Write assets/<name>.tflite and java/<package>/EdgekitModel.kt under ``out_dir``."""
    from edgekit._version import __version__
    from edgekit.fileio import read_input, write_bytes, write_text
    from edgekit.profiling import model_facts

    package = check_package(package or DEFAULT_PACKAGE)
    data = bytes(model) if isinstance(model, (bytes, bytearray)) else read_input(model, "model")
    facts = model_facts(data, str(model) if not isinstance(model, (bytes, bytearray)) else "<bytes>")
    if not facts.inputs or not facts.outputs:
        raise UsageError("the model has no inputs or outputs to expose")
    asset = _asset_name(name, model)
    out = Path(out_dir)
    asset_path = out / "assets" / asset
    kt_path = out / "java" / Path(*package.split(".")) / f"{CLASS_NAME}.kt"
    result = AndroidExport(out_dir=out, package=package, asset=asset, model_sha256=facts.sha256)
    for path, changed in ((asset_path, write_bytes(asset_path, data)),
                          (kt_path, write_text(kt_path, render_kotlin(package, asset, facts.sha256, facts.inputs,
                                                                      facts.outputs, __version__)))):
        rel = str(path.relative_to(out))
        result.files.append(rel)
        if changed:
            result.written.append(rel)
    return result
