"""TFLM source trees: layout detection, facts read from the sources, source selection, bad trees.

Small fake trees are written here (a few files shaped like the real trees'); the real trees of
EDGEKIT_TFLM_SRC are described too when they are given.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekit.errors import ToolMissing, UnsupportedModelError
from edgekit.runners import seam
from edgekit.tflm import build, tree as tflm_tree
from edgekit.tflm.tree import SourceTreeError, describe_tree, find_trees, select_tree

RESOLVER = """
class MicroMutableOpResolver {
  TfLiteStatus AddConv2D(const TFLMRegistration& registration = Register_CONV_2D()) {
    return AddBuiltin(BuiltinOperator_CONV_2D, registration, ParseConv2D);
  }
  TfLiteStatus AddFullyConnected(const TFLMRegistration& registration = Register_FULLY_CONNECTED()) {
    return AddBuiltin(BuiltinOperator_FULLY_CONNECTED, registration, ParseFullyConnected);
  }
  %s
  TfLiteStatus AddBuiltin(tflite::BuiltinOperator op, const TFLMRegistration& registration, TfLiteBridgeBuiltinParseFunction parser);
};
"""
DECODE = """TfLiteStatus AddDecode() {
    const TFLMRegistration& registration = tflite::Register_DECODE();
    return AddCustom("TFLM_DECODE", &registration);
  }"""


def _write(path: Path, text: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def fake_tree(root: Path, *, layout: str = "tflite-micro", fb_shipped=(25, 9, 23), fb_required=(25, 9, 23),
              cmsis: bool = True, decode: bool = True, per_channel: bool = True) -> Path:
    src = root / "src" if layout == "arduino-library" else root
    ext = ".cpp" if layout == "arduino-library" else ".cc"
    if layout == "arduino-library":
        _write(root / "library.properties", "name=Fake_TFLM\nversion=1.2.3\narchitectures=mbed_nano\n")
    micro = src / "tensorflow/lite/micro"
    _write(micro / "micro_interpreter.h", "class MicroInterpreter;\n")
    _write(micro / f"micro_interpreter{ext}", "MicroInterpreter::MicroInterpreter(const Model* model) {}\n")
    _write(micro / "micro_mutable_op_resolver.h", RESOLVER % (DECODE if decode else ""))
    _write(micro / "debug_log.h", 'extern "C" {\nvoid DebugLog(const char* format, va_list args);\n}\n'
           if layout == "tflite-micro" else 'extern "C" void DebugLog(const char* s);\n')
    _write(micro / f"debug_log{ext}", "")
    _write(micro / f"micro_interpreter_test{ext}", "")
    _write(micro / "cortex_m_generic" / f"micro_time{ext}", "")
    _write(micro / "kernels" / f"conv{ext}", "TFLMRegistration Register_CONV_2D() { return {}; }\n")
    _write(micro / "kernels" / f"fully_connected_common{ext}",
           "void Calc() { data->is_per_channel = true; per_channel_output_multiplier; }\n" if per_channel
           else "void Calc() { one_multiplier; }\n")
    _write(micro / "kernels" / f"fully_connected{ext}",
           "TFLMRegistration Register_FULLY_CONNECTED();\nTFLMRegistration Register_FULLY_CONNECTED() {\n}\n")
    _write(micro / "kernels" / "xtensa" / f"conv{ext}", "TFLMRegistration Register_CONV_2D() { return {}; }\n")
    _write(src / "tensorflow/lite/schema/schema_generated.h",
           "static_assert(FLATBUFFERS_VERSION_MAJOR == %d &&\n              FLATBUFFERS_VERSION_MINOR == %d &&\n"
           "              FLATBUFFERS_VERSION_REVISION == %d,\n             \"Non-compatible flatbuffers\");\n"
           % fb_required)
    _write(src / "third_party/flatbuffers/include/flatbuffers/base.h",
           "#define FLATBUFFERS_VERSION_MAJOR %d\n#define FLATBUFFERS_VERSION_MINOR %d\n"
           "#define FLATBUFFERS_VERSION_REVISION %d\n" % fb_shipped)
    for dep in ("gemmlowp", "ruy"):
        (src / "third_party" / dep).mkdir(parents=True, exist_ok=True)
    if cmsis:
        _write(src / "third_party/cmsis_nn/Include/arm_nnfunctions.h", "")
        _write(micro / "kernels" / "cmsis_nn" / f"conv{ext}", "TFLMRegistration Register_CONV_2D() { return {}; }\n")
        _write(src / "third_party/cmsis_nn/Source/ConvolutionFunctions/arm_convolve_s8.c",
               "arm_cmsis_nn_status arm_convolve_s8(const cmsis_nn_context *ctx,\n                 int x)\n{\n}\n")
        _write(src / "third_party/cmsis_nn/Source/ConvolutionFunctions/arm_convolve_f16.c", "")
    return root


@pytest.fixture
def no_arduino_cli(monkeypatch):
    monkeypatch.delenv(tflm_tree.ENV_VAR, raising=False)
    real_which = seam.which
    monkeypatch.setattr(seam, "which", lambda t: None if t == "arduino-cli" else real_which(t))


def test_a_checkout_is_described_from_its_sources(tmp_path):
    t = describe_tree(fake_tree(tmp_path / "tflm"))
    assert t.layout == "tflite-micro" and t.name == "tflite-micro" and t.version is None and t.source_ext == ".cc"
    assert t.resolver_methods == ("AddConv2D", "AddDecode", "AddFullyConnected")
    assert t.ops == frozenset({"CONV_2D", "FULLY_CONNECTED", "TFLM_DECODE"})
    assert t.decode and t.per_channel_fully_connected and t.cmsis_nn and t.kernels == "cmsis-nn"
    assert t.flatbuffers_version == t.flatbuffers_required == "25.9.23"
    assert t.debug_log == "va_list" and t.defines == () and t.problems == ()


def test_an_arduino_library_is_found_from_its_folder_or_its_src(tmp_path):
    root = fake_tree(tmp_path / "Fake_TFLM", layout="arduino-library", decode=False, per_channel=False,
                     fb_shipped=(2, 0, 6), fb_required=(2, 0, 6))
    for given in (root, root / "src"):
        t = describe_tree(given)
        assert t.layout == "arduino-library" and t.root == root.resolve() and t.src == (root / "src").resolve()
        assert (t.name, t.version, t.pinned_name) == ("Fake_TFLM", "1.2.3", "Fake_TFLM@1.2.3")
        assert t.defines == ("ARDUINO",) and t.debug_log == "string" and t.source_ext == ".cpp"
        assert not t.decode and not t.per_channel_fully_connected


@pytest.mark.parametrize("setup, words", [
    (lambda p: p.mkdir(), "is not a TFLM source tree"),
    (lambda p: p.write_text("x"), "is a file"),
    (lambda p: None, "not found"),
    (lambda p: (p.mkdir(), (p / "library.properties").write_text("name=Servo\n")), "without TFLM sources"),
])
def test_a_folder_that_is_not_a_tree_is_one_clear_error(tmp_path, setup, words):
    folder = tmp_path / "thing"
    setup(folder)
    with pytest.raises(SourceTreeError) as exc:
        describe_tree(folder)
    assert words in exc.value.message and exc.value.exit_code == 3
    assert "--tflm-src" in exc.value.hint and "arduino-cli lib install" in exc.value.hint


def test_a_flatbuffers_version_the_schema_rejects_is_refused_before_building(tmp_path, no_arduino_cli):
    root = fake_tree(tmp_path / "tflm", fb_shipped=(24, 3, 25))
    t = describe_tree(root)
    assert t.problems and "needs flatbuffers 25.9.23 but third_party/flatbuffers is 24.3.25" in t.problems[0]
    with pytest.raises(SourceTreeError) as exc:
        select_tree(None, root)
    assert "cannot be built" in exc.value.message and "25.9.23" in exc.value.message


def test_missing_third_party_downloads_are_named(tmp_path):
    root = fake_tree(tmp_path / "tflm")
    import shutil

    shutil.rmtree(root / "third_party" / "flatbuffers")
    shutil.rmtree(root / "third_party" / "gemmlowp")
    problems = " ".join(describe_tree(root).problems)
    assert "no flatbuffers headers" in problems and "third_party_downloads" in problems
    assert "third_party/gemmlowp is missing" in problems


def test_a_tree_without_cmsis_nn_builds_with_reference_kernels(tmp_path):
    t = describe_tree(fake_tree(tmp_path / "tflm", cmsis=False))
    assert not t.cmsis_nn and t.kernels == "reference"
    pool = build.candidate_sources(t)
    assert "tensorflow/lite/micro/kernels/conv.cc" in pool
    assert not any("cmsis_nn" in rel for rel in pool)
    assert all(not p.startswith("-I") or "cmsis" not in p for p in map(str, build.include_dirs(t)))


def test_candidate_sources_prefer_cmsis_nn_and_leave_out_tests_ports_and_f16(tmp_path):
    pool = build.candidate_sources(describe_tree(fake_tree(tmp_path / "tflm")))
    assert "tensorflow/lite/micro/kernels/cmsis_nn/conv.cc" in pool
    assert "tensorflow/lite/micro/kernels/conv.cc" not in pool                 # replaced by the CMSIS-NN one
    assert "third_party/cmsis_nn/Source/ConvolutionFunctions/arm_convolve_s8.c" in pool
    for left_out in ("arm_convolve_f16.c", "micro_interpreter_test.cc", "cortex_m_generic/micro_time.cc",
                     "kernels/xtensa/conv.cc", "micro/debug_log.cc"):
        assert not any(rel.endswith(left_out) for rel in pool), left_out


def test_undefined_symbols_are_found_in_the_file_that_defines_them(tmp_path):
    pool = build.candidate_sources(describe_tree(fake_tree(tmp_path / "tflm")))
    index = build._Index(pool)
    assert index.definers("tflite::Register_CONV_2D()", set()) == ["tensorflow/lite/micro/kernels/cmsis_nn/conv.cc"]
    # a declaration (ending in ';') does not count; the definition two lines below does
    assert index.definers("tflite::Register_FULLY_CONNECTED()", set()) == [
        "tensorflow/lite/micro/kernels/fully_connected.cc"]
    assert index.definers("arm_convolve_s8", set()) == [
        "third_party/cmsis_nn/Source/ConvolutionFunctions/arm_convolve_s8.c"]
    assert index.definers("vtable for tflite::MicroInterpreter", set()) == ["tensorflow/lite/micro/micro_interpreter.cc"]
    assert index.definers("tflite::NoSuchThing(int)", set()) == []
    assert index.definers("tflite::Register_CONV_2D()", {"tensorflow/lite/micro/kernels/cmsis_nn/conv.cc"}) == []


def test_trees_come_from_the_flag_the_environment_and_arduino_cli(tmp_path, monkeypatch):
    a = fake_tree(tmp_path / "a")
    b = fake_tree(tmp_path / "Fake_TFLM", layout="arduino-library")
    monkeypatch.setenv(tflm_tree.ENV_VAR, f"{tmp_path / 'nothing'}:{b}")
    monkeypatch.setattr(seam, "which", lambda t: "/usr/bin/arduino-cli" if t == "arduino-cli" else None)
    calls = []

    def fake_tool(argv, **kw):
        calls.append(list(argv))
        doc = {"installed_libraries": [{"library": {"name": "Servo", "install_dir": str(tmp_path / "Servo")}},
                                       {"library": {"name": "Fake_TFLM", "install_dir": str(b)}}]}
        return seam.ToolResult(list(argv), 0, json.dumps(doc))

    search = find_trees(a, tool=fake_tool)
    assert [(t.root, t.origin) for t in search.trees] == [(a.resolve(), "--tflm-src"), (b.resolve(), "EDGEKIT_TFLM_SRC")]
    assert calls == [["arduino-cli", "lib", "list", "--format", "json"]]
    assert [r["origin"] for r in search.refused] == ["EDGEKIT_TFLM_SRC"]       # the missing folder, named
    with pytest.raises(SourceTreeError):
        find_trees(tmp_path / "nothing", tool=fake_tool)                      # an explicit bad folder is an error


def test_a_board_gets_the_library_it_pins(tmp_path, monkeypatch, no_arduino_cli):
    from edgekit.boards import load_board

    checkout = fake_tree(tmp_path / "tflm")
    lib = fake_tree(tmp_path / "Fake_TFLM", layout="arduino-library")
    monkeypatch.setenv(tflm_tree.ENV_VAR, f"{checkout}:{lib}")
    nano = load_board("nano33ble")            # pins Chirale_TensorFLowLite@2.0.0
    with pytest.raises(ToolMissing) as exc:
        select_tree(nano)
    assert "Chirale_TensorFLowLite@2.0.0" in exc.value.message and "arduino-cli lib install" in exc.value.hint
    assert select_tree(load_board("qemu-m4")).root == checkout.resolve()     # no pin: a checkout first
    assert select_tree(nano, lib).root == lib.resolve()                       # --tflm-src wins


def test_no_tree_at_all_says_how_to_get_one(monkeypatch, no_arduino_cli):
    with pytest.raises(ToolMissing) as exc:
        select_tree(None)
    assert "no TFLM source tree found" in exc.value.message and "EDGEKIT_TFLM_SRC" in exc.value.hint


def test_an_op_the_tree_lacks_is_refused_before_compiling(tmp_path):
    t = describe_tree(fake_tree(tmp_path / "tflm", decode=False))
    with pytest.raises(UnsupportedModelError) as exc:
        build.check_ops(t, ("CONV_2D", "TFLM_DECODE", "SVDF"))
    assert "TFLM_DECODE, SVDF" in exc.value.message and "tflite-micro checkout" in exc.value.hint


def _config(ops=("CONV_2D",)):
    from edgekit.boards import load_board
    from edgekit.exporters.firmware import board_config_header

    header = board_config_header(load_board("qemu-m4"), "-", 64, 16, model_slots=2, model_max_bytes=1024)
    return build.FirmwareConfig(board_id="qemu-m4", config_header=header, ops=ops, arena_bytes=4096)


def test_a_dry_run_shows_every_command_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))
    t = describe_tree(fake_tree(tmp_path / "Fake_TFLM", layout="arduino-library"))
    calls = []

    def fake_tool(argv, dry_run=False, **kw):
        calls.append((list(argv), dry_run))
        return seam.ToolResult(list(argv), 0, "", dry_run=dry_run)

    result = build.build_tflm_firmware(t, _config(), tool=fake_tool, dry_run=True)
    assert all(dry for _, dry in calls)
    compiles = [argv for argv, _ in calls if "-c" in argv]
    assert {Path(a[a.index("-c") + 1]).name for a in compiles} >= {
        "main.c", "board.c", "startup.c", "ek_proto.c", "ek_tflm_runner.cpp", "ek_tflm_support.cc", "model_data.cc"}
    for argv in compiles:
        assert "-mcpu=cortex-m4" in argv and "-mfloat-abi=hard" in argv and "-mfpu=fpv4-sp-d16" in argv
    runner = next(a for a in compiles if a[a.index("-c") + 1].endswith("ek_tflm_runner.cpp"))
    assert {"-DTF_LITE_STATIC_MEMORY", "-DARDUINO", "-DCMSIS_NN", "-fno-exceptions", "-fno-rtti"} <= set(runner)
    assert "-DEK_TFLM_DEBUG_LOG_VA" not in runner                      # the library's DebugLog(const char*)
    link = next(argv for argv, _ in calls if "-Wl,--gc-sections" in argv)
    assert link[0] == "arm-none-eabi-g++" and link[-2:] == ["-o", str(result.elf)]
    assert not (tmp_path / "cache").exists()


def test_a_missing_cross_compiler_is_tool_missing_with_the_install_line(tmp_path, monkeypatch):
    monkeypatch.setattr(seam, "which", lambda t: None)
    t = describe_tree(fake_tree(tmp_path / "tflm"))
    with pytest.raises(ToolMissing) as exc:
        build.build_tflm_firmware(t, _config())
    assert "arm-none-eabi-gcc" in exc.value.message and "apt-get install gcc-arm-none-eabi" in exc.value.hint


def test_real_trees_when_given():
    trees = find_trees().trees
    if not trees:
        pytest.skip(f"TFLM TREE NOT GIVEN: set {tflm_tree.ENV_VAR} to describe real trees")
    for t in trees:
        assert not t.problems, (t.root, t.problems)
        assert {"CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "RESHAPE"} <= t.ops
        assert t.flatbuffers_version == t.flatbuffers_required
        if t.layout == "arduino-library" and t.name == "Chirale_TensorFLowLite":
            assert (t.version, t.decode, t.per_channel_fully_connected) == ("2.0.0", False, False)
        if t.layout == "tflite-micro":
            assert t.decode and t.per_channel_fully_connected and t.debug_log == "va_list"


def test_16x8_kernels_are_read_from_the_kernels_the_build_compiles(tmp_path):
    """An op runs 16x8 models when the kernel file the build compiles for it (CMSIS-NN's when the tree
    has one, else the reference kernel and its _common file) handles kTfLiteInt16; RESHAPE runs any type."""
    root = fake_tree(tmp_path / "tflm")
    micro = root / "tensorflow/lite/micro"
    assert describe_tree(root).ops_16x8 == ()          # no kernel mentions int16
    _write(micro / "kernels" / "conv.cc", "case kTfLiteInt16: return EvalInt16();\n")
    assert describe_tree(root).ops_16x8 == ()          # CMSIS-NN's conv is what the build uses
    _write(micro / "kernels" / "cmsis_nn" / "conv.cc", "case kTfLiteInt16: return arm_convolve_s16();\n")
    _write(micro / "kernels" / "fully_connected_common.cc", "if (input->type == kTfLiteInt16) {}\n")
    resolver = micro / "micro_mutable_op_resolver.h"
    resolver.write_text(resolver.read_text().replace(
        "TfLiteStatus AddDecode", "TfLiteStatus AddReshape() { return 0; }\n  TfLiteStatus AddDecode"))
    t = describe_tree(root)
    assert t.ops_16x8 == ("CONV_2D", "FULLY_CONNECTED", "RESHAPE")
    assert t.to_dict()["ops_16x8"] == ["CONV_2D", "FULLY_CONNECTED", "RESHAPE"]


def test_board_files_record_what_their_library_runs_in_16x8():
    """The Arduino boards' ops_16x8 list is what edgekit reads from their pinned library (when given)."""
    from edgekit.boards import load_board

    chirale = [t for t in find_trees().trees if t.name == "Chirale_TensorFLowLite" and t.version == "2.0.0"]
    recorded = load_board("nano33ble").tflm["ops_16x8"]
    assert {"CONV_2D", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D"} <= set(recorded)
    assert "MAX_POOL_2D" not in recorded and "AVERAGE_POOL_2D" not in recorded
    for board in ("esp32s3", "pico"):
        assert load_board(board).tflm["ops_16x8"] == recorded
    if not chirale:
        pytest.skip(f"TFLM TREE NOT GIVEN: set {tflm_tree.ENV_VAR} to check the list against Chirale 2.0.0")
    assert sorted(recorded) == list(chirale[0].ops_16x8)
