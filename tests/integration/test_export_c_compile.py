"""The generated C compiles: host g++ (bytes round-trip, length, 16-byte alignment) and
arm-none-eabi-g++ for Cortex-M4 (the array lands in read-only .rodata)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tinymodels  # noqa: E402

import edgekit  # noqa: E402
from edgekit.model.tflm_ops import BUILTIN_RESOLVER_METHODS, CUSTOM_RESOLVER_METHODS  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tinymodels.TinyModels(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def exported(models, tmp_path_factory):
    out = tmp_path_factory.mktemp("c_export")
    result = edgekit.export_c(models.path("digits_cnn"), out, name="digits-cnn v2")
    return out, result, models["digits_cnn"]


def _run(cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, **kw)
    assert proc.returncode == 0, f"{cmd[0]} failed:\n{proc.stderr}"
    return proc


ROUNDTRIP = r"""
#include <cstdint>
#include <cstdio>
#include "model_data.h"
int main(int argc, char** argv) {
  if (argc < 2) return 2;
  FILE* f = std::fopen(argv[1], "wb");
  if (!f) return 2;
  std::fwrite(g_digits_cnn_v2_model_data, 1, g_digits_cnn_v2_model_data_len, f);
  std::fclose(f);
  std::printf("%u %u\n", g_digits_cnn_v2_model_data_len,
              static_cast<unsigned>(reinterpret_cast<std::uintptr_t>(g_digits_cnn_v2_model_data) % 16));
  return 0;
}
"""


def test_host_gxx_roundtrip(exported, tmp_path):
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("NO HOST COMPILER: g++ is not installed (tools/apt-packages.txt lists it)")
    out, result, data = exported
    main = tmp_path / "main.cc"
    main.write_text(ROUNDTRIP)
    exe = tmp_path / "roundtrip"
    _run([gxx, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-I", str(out), str(main),
          str(out / "model_data.cc"), "-o", str(exe)])
    dump = tmp_path / "dump.tflite"
    printed = _run([str(exe), str(dump)]).stdout.split()
    assert dump.read_bytes() == data
    assert int(printed[0]) == len(data) == result.model_bytes
    assert int(printed[1]) == 0, "array is not 16-byte aligned"
    # model_data.cc static_asserts sizeof(array) == the length constant; prove that it bites:
    broken = tmp_path / "broken.cc"
    broken.write_text((out / "model_data.cc").read_text().replace("0x", "0x00,0x", 1))
    proc = subprocess.run([gxx, "-std=c++17", "-c", "-I", str(out), str(broken), "-o",
                           str(tmp_path / "broken.o")], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "static assert" in proc.stderr


def test_arm_none_eabi_array_is_read_only(exported, tmp_path):
    gxx = shutil.which("arm-none-eabi-g++")
    readelf = shutil.which("arm-none-eabi-readelf")
    if gxx is None or readelf is None:
        pytest.skip("NO CROSS COMPILER: install gcc-arm-none-eabi, libnewlib-arm-none-eabi, "
                    "libstdc++-arm-none-eabi-newlib (tools/apt-packages.txt) to run this test")
    out, result, data = exported
    obj = tmp_path / "model_data.o"
    _run([gxx, "-mcpu=cortex-m4", "-mthumb", "-std=c++17", "-Os", "-Wall", "-Werror", "-c",
          "-I", str(out), str(out / "model_data.cc"), "-o", str(obj)])
    sections = _run([readelf, "-S", "-W", str(obj)]).stdout
    symbols = _run([readelf, "-s", "-W", str(obj)]).stdout
    # Find the symbol's section index and size, then the section's name.
    line = next(ln for ln in symbols.splitlines() if ln.split()[-1:] == ["g_digits_cnn_v2_model_data"])
    fields = line.split()
    size, bind, ndx = int(fields[2]), fields[4], fields[6]
    assert size == len(data) and bind == "GLOBAL"
    names = {}
    for ln in sections.splitlines():
        ln = ln.strip()
        if ln.startswith("[") and "]" in ln:
            idx, rest = ln[1:].split("]", 1)
            if idx.strip().isdigit():
                parts = rest.split()
                names[idx.strip()] = (parts[0], parts[6] if len(parts) > 6 else "")
    section, flags = names[ndx]
    assert section.startswith(".rodata"), f"array is in {section}, expected .rodata"
    assert "W" not in flags, f"section {section} is writable ({flags})"
    align_line = next(ln for ln in sections.splitlines() if f" {section} " in ln)
    assert int(align_line.split()[-1]) >= 16


def _stub_resolver_header(folder: Path) -> None:
    """A stand-in for TFLM's micro_mutable_op_resolver.h: same method names, counts registrations
    and fails past N, so the generated model_ops.h is compiled and run without TFLM sources."""
    methods = sorted(set(BUILTIN_RESOLVER_METHODS.values()) | set(CUSTOM_RESOLVER_METHODS.values()))
    body = "\n".join(f'  TfLiteStatus {m}() {{ return Add("{m}"); }}' for m in methods)
    hdr = folder / "tensorflow" / "lite" / "micro" / "micro_mutable_op_resolver.h"
    hdr.parent.mkdir(parents=True)
    hdr.write_text(f"""#pragma once
#include <cstdio>
#include <cstring>
typedef enum {{ kTfLiteOk = 0, kTfLiteError = 1 }} TfLiteStatus;
namespace tflite {{
template <unsigned int tOpCount>
class MicroMutableOpResolver {{
 public:
  unsigned int count = 0;
  const char* names[tOpCount + 1] = {{}};
  TfLiteStatus Add(const char* name) {{
    for (unsigned int i = 0; i < count; ++i) if (std::strcmp(names[i], name) == 0) return kTfLiteError;
    if (count >= tOpCount) return kTfLiteError;
    names[count++] = name;
    std::printf("%s\\n", name);
    return kTfLiteOk;
  }}
{body}
}};
}}  // namespace tflite
""")


def test_model_ops_header_registers_exactly_the_models_ops(models, tmp_path):
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("NO HOST COMPILER: g++ is not installed")
    out = tmp_path / "c"
    result = edgekit.export_c(models["float_lstm"], out, name="lstm")
    inc = tmp_path / "inc"
    _stub_resolver_header(inc)
    main = tmp_path / "ops_main.cc"
    main.write_text('#include "model_ops.h"\n'
                    "int main() {\n"
                    "  tflite::MicroMutableOpResolver<g_lstm_op_count> resolver;\n"
                    "  return register_lstm_ops(resolver) == kTfLiteOk ? 0 : 1;\n"
                    "}\n")
    exe = tmp_path / "ops"
    _run([gxx, "-std=c++17", "-Wall", "-Werror", "-I", str(inc), "-I", str(out), str(main), "-o", str(exe)])
    registered = _run([str(exe)]).stdout.split()
    assert registered == result.resolver_methods
    assert len(registered) == len(set(registered)) == len(result.ops)
    assert "AddUnidirectionalSequenceLSTM" in registered
