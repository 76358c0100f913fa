"""export --format c: identifiers, file contents, streaming size, the FORMATS table, the CLI."""
from __future__ import annotations

import json
import re

import pytest

import edgekit
from edgekit.cli.main import main as cli_main
from edgekit.errors import OutputError, UnsupportedModelError, UsageError
from edgekit.exporters import FORMATS, export
from edgekit.exporters.c_arrays import (BYTES_PER_LINE, _write_source, arena_with_margin,
                                     c_identifier)


@pytest.mark.parametrize("name, ident", [
    ("my-model v2", "my_model_v2"),
    ("digits", "digits"),
    ("2nd model", "m_2nd_model"),
    ("  weird..name!! ", "weird_name"),
    ("int", "int_model"),
    ("Ünïcode-net", "n_code_net"),
    ("__x__", "x"),
])
def test_c_identifier(name, ident):
    assert c_identifier(name) == ident
    assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", ident)


@pytest.mark.parametrize("name", ["", "---", "   ", "!!!"])
def test_name_without_identifier_characters_is_a_usage_error(name, tiny_models, tmp_path):
    with pytest.raises(UsageError, match="C identifier"):
        edgekit.export_c(tiny_models["int8_cnn"], tmp_path / "out", name=name)
    assert not (tmp_path / "out").exists()


def test_arena_margin():
    assert arena_with_margin(2000) == 3024          # +1024 minimum, rounded to 16
    assert arena_with_margin(100_000) == 125_008    # +25 %
    assert arena_with_margin(100_000) % 16 == 0


def test_export_c_files(tiny_models, tmp_path):
    r = edgekit.export_c(tiny_models.path("int8_cnn_per_tensor"), tmp_path, name="my-model v2", board="nano33ble")
    h = (tmp_path / "model_data.h").read_text()
    cc = (tmp_path / "model_data.cc").read_text()
    ops = (tmp_path / "model_ops.h").read_text()
    data = tiny_models["int8_cnn_per_tensor"]
    assert r.name == "my_model_v2" and r.model_bytes == len(data)
    assert "#ifndef EDGEKIT_MY_MODEL_V2_MODEL_DATA_H_" in h and h.rstrip().endswith("_MODEL_DATA_H_")
    assert f"constexpr unsigned int g_my_model_v2_model_data_len = {len(data)};" in h
    assert f"g_my_model_v2_arena_measured_bytes = {r.arena_bytes};" in h
    assert f"g_my_model_v2_tensor_arena_size = {arena_with_margin(r.arena_bytes)};" in h
    assert r.sha256 in h and r.sha256 in cc and edgekit.__version__ in h
    assert "g_my_model_v2_input_scale" in h and "g_my_model_v2_output_zero_point" in h
    assert "alignas(16) const unsigned char g_my_model_v2_model_data[] = {" in cc
    assert '#include "model_data.h"' in cc
    body = cc[cc.index("{") + 1: cc.rindex("}")]
    values = bytes(int(v, 16) for v in re.findall(r"0x([0-9a-f]{2})", body))
    assert values == data
    # op resolver: exactly the model's distinct ops, N = their count
    assert r.ops == ["CONV_2D", "MAX_POOL_2D", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX"]
    assert "constexpr unsigned int g_my_model_v2_op_count = 5;" in ops
    calls = re.findall(r"resolver\.(Add\w+)\(\)", ops)
    assert calls == ["AddConv2D", "AddMaxPool2D", "AddReshape", "AddFullyConnected", "AddSoftmax"]
    assert r.board_fit.fits is True


def test_export_c_warns_when_the_board_library_computes_the_model_wrong(tiny_models, tmp_path):
    r = edgekit.export_c(tiny_models.path("int8_cnn"), tmp_path, name="m", board="nano33ble")
    assert r.board_fit.fits is False and r.board_fit.runtime_problems[0]["kind"] == "per-channel-fully-connected"
    assert any("nano33ble cannot run this model correctly" in w for w in r.warnings)


def test_export_is_repeatable_and_unchanged_files_untouched(tiny_models, tmp_path):
    edgekit.export_c(tiny_models["int8_dense"], tmp_path, name="dense")
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    first = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    edgekit.export_c(tiny_models["int8_dense"], tmp_path, name="dense")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == first
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
    # A different name changes every file.
    edgekit.export_c(tiny_models["int8_dense"], tmp_path, name="dense2")
    assert all((tmp_path / n).read_bytes() != b for n, b in first.items())


def test_compressed_model_exports_despite_litert_objection(tiny_models, tmp_path):
    r = edgekit.export_c(tiny_models["lut_compressed"], tmp_path, name="lut")
    assert "TFLM_DECODE" in r.ops and "AddDecode" in r.resolver_methods
    assert any("LiteRT would not build" in w for w in r.warnings)
    h = (tmp_path / "model_data.h").read_text()
    assert "g_lut_alt_decompression_bytes" in h and "g_lut_arena_with_alt_measured_bytes" in h


def test_large_model_source_is_streamed_and_compact(tmp_path):
    """A 3 MB model gives a source of about 5.3x its size (12 bytes per line), not 6x."""
    import numpy as np

    from edgekit.model.inspect import ArenaReport, InspectResult

    data = np.random.default_rng(0).integers(0, 256, 3 * 1024 * 1024, dtype=np.uint8).tobytes()
    info = InspectResult(source="big.tflite", sha256="0" * 64, model_bytes=len(data), subgraphs=1,
                         inputs=[], outputs=[], op_histogram={}, ops=[], total_macs=0,
                         total_params=0, weight_bytes=0, weights=[], sparsity=None,
                         quantization="int8", float_tensors=[], tflm_unsupported_ops=[],
                         compressed=False, arena=ArenaReport(arena_bytes=1))
    path = tmp_path / "model_data.cc"
    written = _write_source(path, "g_big", "model_data.h", info, data, None)
    size = path.stat().st_size
    assert written == size
    assert size < 5.5 * len(data)
    lines = path.read_text().splitlines()
    body = [ln for ln in lines if ln.startswith("  0x")]
    assert len(body) == -(-len(data) // BYTES_PER_LINE)
    assert body[0].count("0x") == BYTES_PER_LINE


def test_output_folder_that_cannot_be_created(tiny_models, tmp_path):
    """Tests run as root, so permissions alone would not stop the write: the output folder is placed
    under a regular file, which no user (root included) can create a folder in."""
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(OutputError):
        edgekit.export_c(tiny_models["int8_cnn"], blocker / "out", name="m")
    with pytest.raises(OutputError):
        edgekit.export_c(tiny_models["int8_cnn"], blocker, name="m")   # the output path is a file


def test_unknown_format_and_table(tiny_models, tmp_path):
    assert "c" in FORMATS
    with pytest.raises(UsageError, match="unknown export format"):
        export(tiny_models["int8_cnn"], tmp_path, format="nope")


def test_model_with_ops_tflm_lacks_is_refused(tiny_models, tmp_path):
    from test_model_inspect import _replace_op

    model = _replace_op(tiny_models["float_cnn"], "MAX_POOL_2D", "LSH_PROJECTION")
    with pytest.raises(UnsupportedModelError, match="LSH_PROJECTION"):
        edgekit.export_c(model, tmp_path / "o", name="m")
    assert not (tmp_path / "o").exists()


def test_cli_export_and_inspect_json(tiny_models, tmp_path, capsys):
    model = tiny_models.path("int8_cnn")
    with pytest.raises(SystemExit) as e:
        cli_main(["export", str(model), "--format", "c", "--out", str(tmp_path / "c"), "--json"])
    assert e.value.code in (0, None)
    doc = json.loads(capsys.readouterr().out)
    assert doc["name"] == "int8_cnn" and len(doc["files"]) == 3
    with pytest.raises(SystemExit) as e:
        cli_main(["inspect", str(model), "--board", "nano33ble", "--json"])
    assert e.value.code in (0, None)
    doc = json.loads(capsys.readouterr().out)
    assert doc["total_macs"] > 0 and doc["arena"]["arena_bytes"] > 0
    assert doc["board_fit"]["board"] == "nano33ble"


def test_cli_inspect_human_tables(tiny_models, capfd):
    model = tiny_models.path("lut_compressed")
    capfd.readouterr()
    with pytest.raises(SystemExit) as e:
        cli_main(["inspect", str(model), "--board", "nano33ble"])
    assert e.value.code in (0, None)
    captured = capfd.readouterr()
    assert "FULLY_CONNECTED" in captured.out and "TFLM_DECODE" in captured.out
    assert "tensor arena, exact minimum (host TFLM)" in captured.out and "roofline floor" in captured.out
    assert "MAC-based estimate" in captured.out and "does not fit" in captured.out   # Chirale has no DECODE
    assert "alternate decompression buffer" in captured.out
    assert "LiteRT would not build" in captured.err          # warnings on stderr, not stdout


def test_cli_bad_inputs_exit_codes(tmp_path, capfd):
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    with pytest.raises(SystemExit) as e:
        cli_main(["inspect", str(empty)])
    assert e.value.code == 3
    err = capfd.readouterr().err
    assert "edgekit: error:" in err and "empty file" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as e:
        cli_main(["inspect", str(tmp_path)])
    assert e.value.code == 3
