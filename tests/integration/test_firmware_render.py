"""Rendered firmware projects: every file present, byte-identical on re-render, and the C/C++ compiles.

The protocol core, the rendered board config and model_data compile with the host gcc/g++ (-Wall
-Wextra -Werror). The sketch's TFLM runner compiles against real TFLM headers only when a TFLM
source tree is given: EDGEKIT_TFLM_SRC=<an Arduino TFLM library folder or a tflite-micro checkout>
(several separated by ':').
"""
from __future__ import annotations

import configparser
import filecmp
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
    # per-tensor dense weights: what the boards' pinned TFLM library (Chirale 2.0.0) computes right
    path.write_bytes(tinymodels.convert_keras(tinymodels.int8_cnn_keras(), int8=True, dense_per_tensor=True))
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
    """The sketch's TFLM runner compiles for this host against every TFLM tree given (-Wall -Werror).

    (The same runner source runs real TFLM on the emulated Cortex-M4 in test_emulated_tflm.py.)"""
    if shutil.which("g++") is None:
        pytest.skip("needs g++")
    from edgekit.tflm.build import include_dirs
    from edgekit.tflm.tree import ENV_VAR, find_trees

    trees = find_trees().trees
    if not trees:
        pytest.skip(f"TFLM HEADERS NOT GIVEN: set {ENV_VAR} to a TFLM source tree to compile the sketch's "
                    "TFLM runner")
    src = Path(projects["arduino"].source_dir)
    for tree in trees:
        argv = ["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-I.", *(f"-D{d}" for d in tree.defines)]
        for inc in include_dirs(tree):
            argv += ["-isystem", str(inc)]
        _compile([*argv, "-c", "ek_tflm_runner.cpp", "-o", str(tmp_path / f"runner-{tree.name}.o")], src)


def test_a_model_the_board_library_computes_wrong_is_refused_before_rendering(tmp_path):
    """nano33ble pins Chirale 2.0.0, whose FULLY_CONNECTED ignores per-channel weight scales."""
    import tinymodels

    from edgekit.errors import UnsupportedModelError

    model = tmp_path / "per_channel.tflite"
    model.write_bytes(tinymodels.int8_cnn())
    with pytest.raises(UnsupportedModelError) as exc:
        render_project(model, "nano33ble", tmp_path / "project")
    assert "FULLY_CONNECTED" in exc.value.message and "per-channel" in exc.value.message
    assert "--dense-per-tensor" in exc.value.hint or "per-tensor" in exc.value.hint
    assert not (tmp_path / "project").exists()
