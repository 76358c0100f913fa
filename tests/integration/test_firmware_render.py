"""Rendered firmware projects: every file present, byte-identical on re-render, and the C/C++ compiles.

The protocol core, the rendered board config and model_data compile with the host gcc/g++ (-Wall
-Wextra -Werror). The sketch's TFLM runner compiles against real TFLM headers only when a TFLM
source tree is given: EDGEKIT_TFLM_SRC=<folder holding tensorflow/ and third_party/> (for example the
src/ folder of the Chirale_TensorFlowLite Arduino library, or a tflite-micro checkout).
"""
from __future__ import annotations

import configparser
import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.boards import list_boards, load_board
from edgekit.exporters.firmware import render_project, templates_dir

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

CORE_SOURCES = ("ek_proto.c", "ek_cobs.c", "ek_crc32.c", "ek_sha256.c")
SKETCH_FILES = ("ek_tflm_runner.cpp", "ek_tflm_runner.h", "ek_board_config.h", "model_data.h", "model_ops.h",
                "ek_proto.h", "ek_cobs.h", "ek_crc32.h", "ek_sha256.h", *CORE_SOURCES)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    import tinymodels

    path = tmp_path_factory.mktemp("render") / "digits.tflite"
    path.write_bytes(tinymodels.int8_cnn())
    return path


@pytest.fixture(scope="module")
def projects(model_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("projects")
    return {
        "arduino": render_project(model_path, "nano33ble", root / "arduino"),
        "platformio": render_project(model_path, "esp32s3", root / "platformio"),
    }


def test_arduino_sketch_has_every_file(projects):
    r = projects["arduino"]
    sketch = Path(r.project_dir) / "edgekit_runner"
    for name in (*SKETCH_FILES, "edgekit_runner.ino", "model_data.cpp", "sketch.yaml"):
        assert (sketch / name).is_file(), name
    assert not (sketch / "model_data.cc").exists()          # Arduino compiles .cpp, not .cc
    assert not (sketch / "ek_test_runner.c").exists()      # host/QEMU-only core parts stay out
    assert r.files == sorted(str(p.relative_to(r.project_dir)) for p in sketch.iterdir())
    config = (sketch / "ek_board_config.h").read_text()
    assert '#define EK_BOARD_ID "nano33ble"' in config and r.model_sha256 in config
    assert f"#define EK_INPUT_MAX {max(16, (r.input_bytes + 15) // 16 * 16)}u" in config
    assert "arduino:mbed_nano (4.1.5)" in (sketch / "sketch.yaml").read_text()


def test_platformio_project_has_every_file(projects):
    r = projects["platformio"]
    src = Path(r.project_dir) / "src"
    for name in (*SKETCH_FILES, "main.cpp", "model_data.cc"):
        assert (src / name).is_file(), name
    assert (Path(r.project_dir) / "platformio.ini").is_file()
    main = (src / "main.cpp").read_bytes()
    assert main == (templates_dir() / "arduino" / "edgekit_runner" / "edgekit_runner.ino").read_bytes()


def test_core_sources_are_the_template_core_plus_the_config_include(projects):
    src = Path(projects["platformio"].source_dir)
    for name in CORE_SOURCES:
        rendered = (src / name).read_text()
        first, rest = rendered.split("\n", 1)
        assert first.startswith('#include "ek_board_config.h"')
        assert rest == (templates_dir() / "core" / name).read_text()


def test_rendering_is_a_pure_function(model_path, projects, tmp_path):
    again = render_project(model_path, "nano33ble", tmp_path / "again")
    first = Path(projects["arduino"].project_dir)
    assert again.files == projects["arduino"].files
    for rel in again.files:
        assert filecmp.cmp(first / rel, tmp_path / "again" / rel, shallow=False), rel
    # rendering over itself changes nothing on disk
    assert render_project(model_path, "nano33ble", tmp_path / "again").changed == []


def test_every_platformio_board_has_a_pinned_env():
    ini = configparser.ConfigParser()
    ini.read(templates_dir() / "platformio" / "platformio.ini")
    assert {s for s in ini.sections() if s.startswith("env:")} == {"env:nano33ble", "env:esp32s3", "env:pico"}
    lib = ini["env"]["lib_deps"].strip()
    assert "Chirale_TensorFlowLite" in lib and "#v" in lib              # pinned to a release tag
    for board in list_boards():
        env_name = (board.build or {}).get("platformio_env")
        if not env_name:
            continue
        env = ini[f"env:{env_name}"]
        assert env["board"] == board.build["platformio_board"], board.id
        assert "@" in env["platform"], f"{board.id}: platform version not pinned"


def test_litert_boards_are_refused(model_path, tmp_path):
    from edgekit.errors import UsageError

    with pytest.raises(UsageError, match="rpi4 runs LiteRT"):
        render_project(model_path, "rpi4", tmp_path / "x")


def test_export_formats_are_registered(model_path, tmp_path):
    from edgekit.exporters import FORMATS, export

    assert {"arduino", "platformio"} <= set(FORMATS)
    r = export(model_path, tmp_path / "pio", format="platformio", board=load_board("pico"))
    assert (tmp_path / "pio" / "platformio.ini").is_file() and r.board == "pico"


def _compile(argv, cwd):
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(argv)}\n{proc.stdout}{proc.stderr}"


@pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("g++") is None, reason="needs gcc and g++")
def test_rendered_core_and_model_data_compile_with_warnings_as_errors(projects, tmp_path):
    src = Path(projects["platformio"].source_dir)
    for name in CORE_SOURCES:
        _compile(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-I.", "-c", name,
                  "-o", str(tmp_path / (name + ".o"))], src)
    _compile(["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-I.", "-c", "model_data.cc",
              "-o", str(tmp_path / "model_data.o")], src)


def test_sketch_runner_compiles_against_tflm_headers(projects, tmp_path):
    tflm = os.environ.get("EDGEKIT_TFLM_SRC")
    if not tflm:
        pytest.skip("TFLM HEADERS NOT GIVEN: set EDGEKIT_TFLM_SRC to a TFLM source tree (tensorflow/ and "
                    "third_party/) to compile the sketch's TFLM runner")
    root = Path(tflm)
    if not (root / "tensorflow" / "lite" / "micro" / "micro_interpreter.h").is_file():
        pytest.fail(f"EDGEKIT_TFLM_SRC={tflm} holds no tensorflow/lite/micro/micro_interpreter.h")
    includes = [root, root / "third_party" / "flatbuffers" / "include", root / "third_party" / "gemmlowp",
                root / "third_party" / "ruy"]
    src = Path(projects["arduino"].source_dir)
    argv = ["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-I."]
    for inc in includes:
        argv += ["-isystem", str(inc)]
    _compile([*argv, "-c", "ek_tflm_runner.cpp", "-o", str(tmp_path / "runner.o")], src)


# -- the rendered firmware, built for this host against real TFLM sources, answers the protocol ------
HOST_HARNESS = r'''
// Host harness: the rendered firmware (protocol core + TFLM runner + model) served on a pty.
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "ek_board_config.h"
#include "ek_proto.h"
#include "ek_tflm_runner.h"

static int master_fd = -1;
static ek_core core;

extern "C" void DebugLog(const char *s) { fputs(s, stderr); }

static void host_write(void *, const uint8_t *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(master_fd, data, len);
        if (n > 0) { data += n; len -= (size_t)n; continue; }
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
            struct pollfd p = {master_fd, POLLOUT, 0};
            poll(&p, 1, 100);
            continue;
        }
        return;
    }
}

static uint64_t host_time_ns(void *)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int main()
{
    master_fd = posix_openpt(O_RDWR | O_NOCTTY);
    if (master_fd < 0 || grantpt(master_fd) != 0 || unlockpt(master_fd) != 0) return 2;
    const char *slave_path = ptsname(master_fd);
    int slave = open(slave_path, O_RDWR | O_NOCTTY);   // kept open: no hang-up when a client closes
    struct termios tio;
    tcgetattr(slave, &tio);
    cfmakeraw(&tio);
    tcsetattr(slave, TCSANOW, &tio);
    static ek_platform platform;
    static ek_runner runner;
    platform.write_bytes = host_write;
    platform.time_ns = host_time_ns;
    platform.boot_nonce = (uint32_t)host_time_ns(NULL) | 1u;
    platform.board_id = EK_BOARD_ID;
    platform.firmware_version = EK_FIRMWARE_VERSION;
    ek_tflm_runner_init(&runner, host_time_ns, NULL);
    ek_init(&core, &platform, &runner);
    int status = ek_tflm_activate_builtin_model(&core);
    printf("%s %d\n", slave_path, status);
    fflush(stdout);
    uint8_t buf[512];
    for (;;) {
        struct pollfd fds[2] = {{master_fd, POLLIN, 0}, {0, POLLIN, 0}};
        if (poll(fds, 2, 1000) < 0 && errno != EINTR) return 3;
        if (fds[1].revents) {            // the test closed our stdin: stop
            char c;
            if (read(0, &c, 1) <= 0) return 0;
        }
        if (fds[0].revents & POLLIN) {
            ssize_t n = read(master_fd, buf, sizeof buf);
            if (n > 0) ek_feed(&core, buf, (size_t)n);
        }
    }
}
'''

# Arduino-packaged TFLM trees (Chirale_TensorFlowLite) use their CMSIS-NN kernels under ARDUINO and
# leave a few non-micro helpers and a clock to the board package: the harness supplies those.
ARDUINO_TREE_STUBS = r'''
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include "tensorflow/lite/c/common.h"
extern "C" TfLiteIntArray *TfLiteIntArrayCreate(int size)
{
    TfLiteIntArray *a = (TfLiteIntArray *)malloc(sizeof(TfLiteIntArray) + sizeof(int) * (size_t)size);
    a->size = size;
    return a;
}
extern "C" void TfLiteIntArrayFree(TfLiteIntArray *a) { free(a); }
namespace peripherals {
uint32_t MicrosecondsCounter()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)(ts.tv_sec * 1000000ull + ts.tv_nsec / 1000);
}
}  // namespace peripherals
'''


def _tflm_host_sources(root: Path) -> tuple[list[Path], list[str], bool]:
    arduino_tree = (root / "tensorflow" / "lite" / "micro" / "kernels" / "cmsis_nn").is_dir()
    skip = ("microfrontend", "/examples/", "_test.cc", "_test.cpp", "/tools/", "/python/", "system_setup",
            "/benchmarks/", "/testing/", "/integration_tests/")
    sources = [p for p in sorted(root.rglob("*")) if p.suffix in (".c", ".cc", ".cpp")
               and ("tensorflow" in p.parts or (arduino_tree and "cmsis_nn" in p.parts and "Source" in p.parts))
               and not any(s in str(p) for s in skip)]
    if not arduino_tree:
        # a tflite-micro checkout: reference kernels only (no other platform directories)
        sources = [p for p in sources if not any(d in p.parts for d in ("cortex_m_generic", "cortex_m_corstone_300",
                   "cmsis_nn", "xtensa", "ceva", "arc_mli", "riscv32_generic", "hexagon", "bluepill", "ruy"))]
    defines = ["-DTF_LITE_STATIC_MEMORY"] + (["-DARDUINO"] if arduino_tree else [])
    return sources, defines, arduino_tree


@pytest.mark.slow
def test_rendered_firmware_runs_the_model_on_host_tflm(projects, model_path, tmp_path, request):
    """Build the rendered sketch sources + TFLM for this host; the binary must answer HELLO with the
    model's SHA-256, invoke like host TFLM (within 1 LSB: optimized kernels may round differently)
    and time every op. Opt-in: needs EDGEKIT_TFLM_SRC; objects are cached in .pytest_cache."""
    import concurrent.futures
    import hashlib

    import numpy as np

    tflm = os.environ.get("EDGEKIT_TFLM_SRC")
    if not tflm:
        pytest.skip("TFLM SOURCES NOT GIVEN: set EDGEKIT_TFLM_SRC to build the rendered firmware for this host")
    root = Path(tflm).resolve()
    sources, defines, arduino_tree = _tflm_host_sources(root)
    includes = [f"-I{root}", f"-I{root / 'third_party' / 'flatbuffers' / 'include'}",
                f"-I{root / 'third_party' / 'gemmlowp'}", f"-I{root / 'third_party' / 'ruy'}",
                f"-I{root / 'third_party' / 'cmsis_nn'}", f"-I{root / 'third_party' / 'cmsis_nn' / 'Include'}",
                f"-I{root / 'third_party' / 'kissfft'}", f"-I{root / 'third_party' / 'cmsis' / 'CMSIS' / 'Core' / 'Include'}"]
    cache = Path(request.config.cache.mkdir("edgekit-tflm-host-objects"))

    def compile_one(src: Path) -> Path:
        key = hashlib.sha256(f"{src}|{src.stat().st_mtime_ns}|{defines}".encode()).hexdigest()[:20]
        obj = cache / f"{src.stem}-{key}.o"
        if not obj.exists():
            cc = ["gcc", "-std=c11"] if src.suffix == ".c" else ["g++", "-std=c++17"]
            part = obj.with_suffix(".part")
            _compile([*cc, "-O1", *defines, *includes, "-c", str(src), "-o", str(part)], root)
            part.rename(obj)
        return obj

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        tflm_objects = list(pool.map(compile_one, sources))

    src = Path(projects["platformio"].source_dir)
    (tmp_path / "host_main.cpp").write_text(HOST_HARNESS)
    own = [src / n for n in (*CORE_SOURCES, "ek_tflm_runner.cpp", "model_data.cc")] + [tmp_path / "host_main.cpp"]
    if arduino_tree:
        (tmp_path / "stubs.cpp").write_text(ARDUINO_TREE_STUBS)
        own.append(tmp_path / "stubs.cpp")
    objects = []
    for f in own:
        obj = tmp_path / (f.name + ".o")
        cc = ["gcc", "-std=c99"] if f.suffix == ".c" else ["g++", "-std=c++17"]
        _compile([*cc, "-O1", *defines, f"-I{src}", *includes, "-c", str(f), "-o", str(obj)], src)
        objects.append(obj)
    binary = tmp_path / "firmware-host"
    _compile(["g++", "-o", str(binary), *map(str, objects), *map(str, tflm_objects)], tmp_path)

    from edgekit.link.session import DeviceSession
    from edgekit.model import tflm_host

    model = model_path.read_bytes()
    proc = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        port, status = proc.stdout.readline().split()
        assert status == "0", proc.stderr.read()
        with DeviceSession.open(port) as session:
            hello = session.hello()
            assert hello.board_id == "esp32s3"
            assert bytes(hello.model_sha256).hex() == hashlib.sha256(model).hexdigest()
            assert hello.model_len == len(model) and hello.arena_bytes == projects["platformio"].arena_size_constant
            x = np.random.default_rng(7).integers(-128, 128, size=(4, 8, 8, 1), dtype=np.int8)
            host = np.asarray(tflm_host.invoke(model, x)["outputs"][0]).reshape(4, -1).astype(int)
            device = np.stack([np.frombuffer(session.invoke(row.tobytes()).output, dtype=np.int8) for row in x])
            assert np.abs(host - device.astype(int)).max() <= 1
            train = session.profile(1, 5)
            assert [name for name, _, _ in train.ops][:1] == ["CONV_2D"]
            assert all(count == 5 and total_ns > 0 for _, count, total_ns in train.ops)
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
