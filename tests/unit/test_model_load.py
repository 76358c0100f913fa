"""Safe model loading: every .tflite enters through edgekit.model.load.load_tflite."""
from __future__ import annotations

import zipfile

import pytest

from edgekit.errors import EdgekitError, InputFileError, ModelFormatError
from edgekit.model.load import describe_non_tflite, load_tflite


def test_valid_model_loads_with_hash(tiny_models):
    m = load_tflite(tiny_models.path("int8_cnn"))
    assert m.data == tiny_models["int8_cnn"]
    assert len(m.sha256) == 64 and m.litert_warning is None
    assert load_tflite(tiny_models["int8_cnn"]).sha256 == m.sha256


@pytest.mark.parametrize("length", range(0, 65))
def test_every_short_prefix_is_rejected(tiny_models, length):
    with pytest.raises(ModelFormatError):
        load_tflite(tiny_models["int8_cnn"][:length])


def test_half_a_model_is_rejected(tiny_models):
    data = tiny_models["int8_cnn"]
    with pytest.raises(ModelFormatError, match="verification|not a TFLite"):
        load_tflite(data[: len(data) // 2])


def test_wrong_identifier_says_what_it_is(tiny_models):
    data = bytearray(tiny_models["int8_cnn"])
    data[4:8] = b"ABCD"
    with pytest.raises(ModelFormatError, match="not a TFLite model"):
        load_tflite(bytes(data))


def test_empty_file(tmp_path):
    p = tmp_path / "empty.tflite"
    p.write_bytes(b"")
    with pytest.raises(ModelFormatError, match="empty file"):
        load_tflite(p)


def test_zip_keras_archive(tmp_path):
    p = tmp_path / "model.keras"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("metadata.json", "{}")
        z.writestr("config.json", '{"class_name": "Sequential"}')
        z.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(ModelFormatError, match="zip archive holding a Keras model"):
        load_tflite(p)


def test_hdf5_file(tmp_path):
    p = tmp_path / "model.h5"
    p.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(ModelFormatError, match="HDF5"):
        load_tflite(p)


def test_text_file(tmp_path):
    p = tmp_path / "model.tflite"
    p.write_text("this is not a model, just some notes\n" * 10)
    with pytest.raises(ModelFormatError, match="text file"):
        load_tflite(p)


def test_directory_and_savedmodel(tmp_path):
    with pytest.raises(InputFileError, match="is a folder"):
        load_tflite(tmp_path)
    (tmp_path / "saved_model.pb").write_bytes(b"\x08\x01")
    with pytest.raises(ModelFormatError, match="SavedModel"):
        load_tflite(tmp_path)


def test_missing_file(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        load_tflite(tmp_path / "nope.tflite")


def test_describe_non_tflite():
    assert describe_non_tflite(b"\x7fELF\x02\x01") == "an ELF executable"
    assert "truncated" in describe_non_tflite(b"\x1c\0\0\0TFL3")


def test_compressed_model_is_accepted_with_litert_objection(tiny_models):
    """LUT-compressed models are valid flatbuffers that LiteRT refuses to build: a warning, no error."""
    m = load_tflite(tiny_models["lut_compressed"])
    assert m.litert_warning
    assert any("LiteRT would not build" in w for w in m.warnings)


def test_errors_are_edgekit_errors_with_hints(tiny_models):
    with pytest.raises(EdgekitError) as info:
        load_tflite(b"PK\x03\x04" + b"\0" * 100)
    assert info.value.hint
