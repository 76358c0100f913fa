"""A model host TFLM cannot allocate gets a sentence and the right exit code: `validate` says "host TFLM
cannot allocate this model's tensors: <TFLM's reason>" (UnsupportedModelError, exit 5, not a raw
RuntimeError as a conversion failure), and `inspect` calls a model corrupt when the arena search hits
its 256 MiB ceiling for a reason that is not size."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from edgekit.errors import ModelFormatError, UnsupportedModelError
from edgekit.model import tflm_alloc

import tinymodels

PREPARE_STDERR = """@@probe 268435456 0
tensorflow/lite/micro/kernels/fully_connected.cc:57 input->type != output->type (INT8 != INT16)
Node FULLY_CONNECTED (number 0) failed to prepare with status 1
@@result 268435456 0 fail
"""
ARENA_STDERR = "Failed to resize buffer. Requested: 268435472, available 64416, missing: 268371056\n"


def _mutate(model: bytes, edit) -> bytes:
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    m = fb.ModelT.InitFromObj(fb.Model.GetRootAs(model, 0))
    edit(m.subgraphs[0])
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _first_fc_output(sg):
    return sg.tensors[int(sg.operators[0].outputs[0])]


@pytest.fixture(scope="module")
def refused_model(tiny_models) -> bytes:
    """int8_dense whose first FULLY_CONNECTED output claims int16: a valid flatbuffer, a sound graph, and
    TFLM's FULLY_CONNECTED Prepare refuses it (input->type != output->type)."""
    def edit(sg):
        _first_fc_output(sg).type = 7          # TensorType.INT16

    return _mutate(tiny_models["int8_dense"], edit)


def test_reasons_are_read_from_tflms_own_lines():
    f = tflm_alloc.allocation_failure(PREPARE_STDERR, "TFLM: RuntimeError: TFLM failed to allocate tensors")
    assert f.kind == "prepare"
    assert f.reason == ("FULLY_CONNECTED (node 0) failed to prepare: input->type != output->type "
                        "(INT8 != INT16) (fully_connected.cc:57)")
    a = tflm_alloc.allocation_failure(ARENA_STDERR)
    assert a.kind == "arena" and "missing: 268371056" in a.reason
    assert tflm_alloc.allocation_failure(PREPARE_STDERR, "TFLM: RuntimeError: invoke failed") is None
    err = f.error()
    assert isinstance(err, UnsupportedModelError) and err.exit_code == 5
    assert err.message.startswith("host TFLM cannot allocate this model's tensors: FULLY_CONNECTED (node 0)")


def test_validate_prepare_names_the_allocation_failure(tmp_path, refused_model):
    from edgekit.validation import prepare

    path = tmp_path / "refused.tflite"
    path.write_bytes(refused_model)
    data = tmp_path / "d.npz"
    np.savez(data, x=np.random.default_rng(0).uniform(-1, 1, (4, 16)).astype(np.float32))
    with pytest.raises(UnsupportedModelError) as err:
        prepare(path, data, 4, runtime="tflm")
    assert err.value.exit_code == 5
    assert err.value.message == ("host TFLM cannot allocate this model's tensors: FULLY_CONNECTED (node 0) "
                                 "failed to prepare: input->type != output->type (INT8 != INT16) "
                                 "(fully_connected.cc:57)")
    assert "RuntimeError" not in err.value.message


def test_validate_cli_exits_5_with_one_sentence(tmp_path, refused_model):
    path = tmp_path / "refused.tflite"
    path.write_bytes(refused_model)
    data = tmp_path / "d.npz"
    np.savez(data, x=np.zeros((2, 16), np.float32))
    env = {k: v for k, v in os.environ.items() if k != "EDGEKIT_DEBUG"}
    r = subprocess.run([sys.executable, "-m", "edgekit", "validate", str(path), "-d", str(data), "--board",
                        "virtual", "-n", "2"], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 5, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("edgekit: error:")]
    assert errors == ["edgekit: error: host TFLM cannot allocate this model's tensors: FULLY_CONNECTED "
                      "(node 0) failed to prepare: input->type != output->type (INT8 != INT16) "
                      "(fully_connected.cc:57)"], r.stderr
    assert "TFLM: RuntimeError" not in r.stderr and "Traceback" not in r.stderr


def test_a_too_small_arena_guess_is_measured_and_retried():
    """Few weights, large activations: tflm_host's guess (10 x the model size, at least 64 KiB) is too
    small; the invoke measures the exact arena and runs in it instead of failing."""
    from edgekit.model import tflm_host

    model = tinymodels.convert_keras(tinymodels.conv_keras(input_hw=96, in_ch=4, filters=8), int8=True)
    x = np.zeros((1, 96, 96, 4), np.int8)
    with pytest.raises(Exception, match="failed to allocate tensors"):
        tflm_host.invoke(model, x)
    out = tflm_alloc.invoke(model, x)["outputs"][0]
    assert out.shape == (1, 94, 94, 8)


def test_inspect_calls_a_model_refused_at_the_ceiling_corrupt(refused_model):
    from edgekit.model.inspect import inspect

    r = inspect(refused_model)
    assert r.arena.arena_bytes is None
    assert r.arena.error == ("the model looks corrupt: host TFLM could not allocate it even with a 256 MiB "
                             "arena (FULLY_CONNECTED (node 0) failed to prepare: input->type != output->type "
                             "(INT8 != INT16) (fully_connected.cc:57))")
    assert r.arena.error in r.warnings
    assert not any("needs a tensor arena above" in w for w in r.warnings)


def test_inspect_keeps_too_large_for_tensors_that_really_declare_that_much(tiny_models):
    from edgekit.model.inspect import _at_the_ceiling
    from edgekit.errors import ModelTooLarge
    from edgekit.model.graph import parse
    from edgekit.model.load import load_tflite

    def edit(sg):
        _first_fc_output(sg).shape = np.array([1, 1 << 28], dtype=np.int32)

    huge = load_tflite(_mutate(tiny_models["int8_dense"], edit))
    err = _at_the_ceiling(huge, parse(huge), 120.0)
    assert isinstance(err, ModelTooLarge) and not isinstance(err, ModelFormatError)
    assert err.message.startswith("the model needs a tensor arena above 256 MiB on TFLM (its activation "
                                  "tensors declare 268,")
