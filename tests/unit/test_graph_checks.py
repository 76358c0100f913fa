"""Graph checks (edgekit.model.checks): broken graphs that pass the flatbuffer verifier are refused, by
name, before any runtime sees them; every model edgekit itself makes passes."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import edgekit
from edgekit.errors import BrokenGraph, ModelFormatError
from edgekit.model.checks import check_graph, graph_problems
from edgekit.model.graph import parse
from edgekit.model.load import load_tflite

import tinymodels

ALL_TINY_MODELS = [*tinymodels.BUILDERS, "lut_plain", "lut_compressed", "dynamic_range"]


def _mutate(model: bytes, edit) -> bytes:
    """Re-pack ``model`` after ``edit(ModelT)``: a valid flatbuffer with whatever graph edit made."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    m = fb.ModelT.InitFromObj(fb.Model.GetRootAs(model, 0))
    edit(m, fb)
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _conv_weight(m, fb):
    sg = m.subgraphs[0]
    for op in sg.operators:
        code = m.operatorCodes[op.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) == fb.BuiltinOperator.CONV_2D:
            return sg.tensors[int(op.inputs[1])]
    raise AssertionError("no CONV_2D")


def swap_first_ops(m, fb):
    ops = m.subgraphs[0].operators
    ops[0], ops[1] = ops[1], ops[0]


def drop_weight_data(m, fb):
    m.buffers.append(fb.BufferT())              # an empty buffer, like the ones activations use
    _conv_weight(m, fb).buffer = len(m.buffers) - 1


def shorten_weight_buffer(m, fb):
    buf = m.buffers[_conv_weight(m, fb).buffer]
    buf.data = buf.data[:-8]


# int8_cnn: op 0 CONV_2D [input, weight 4 (int8 [8,3,3,1]), bias] -> 5, op 1 MAX_POOL_2D 5 -> 6, ...
MUTANTS = {
    "ops_swapped": (swap_first_ops, "used_before_produced",
                    "op 0 (MAX_POOL_2D) reads tensor 5 "),
    "weight_without_data": (drop_weight_data, "no_data",
                            "op 0 (CONV_2D) reads tensor 4 'sequential/conv2d/Conv2D' "
                            "(int8, shape [8, 3, 3, 1]), which no op produces, is no graph input and has no data (buffer "),
    "short_buffer": (shorten_weight_buffer, "size_mismatch",
                     "tensor 4 'sequential/conv2d/Conv2D' (int8, shape [8, 3, 3, 1]) needs 72 bytes, "
                     "buffer 5 holds 64"),
}


@pytest.fixture(scope="module")
def mutants(tiny_models, tmp_path_factory):
    base = tiny_models["int8_cnn"]
    folder = tmp_path_factory.mktemp("broken_graphs")
    out = {}
    for name, (edit, _, _) in MUTANTS.items():
        data = _mutate(base, edit)
        (folder / f"{name}.tflite").write_bytes(data)
        out[name] = (data, folder / f"{name}.tflite")
    return out


@pytest.mark.parametrize("name", ALL_TINY_MODELS)
def test_every_tiny_model_passes(tiny_models, name):
    graph = parse(load_tflite(tiny_models[name]))
    assert graph_problems(graph) == []
    check_graph(graph)


def test_repacking_alone_keeps_the_model_sound(tiny_models):
    assert graph_problems(parse(load_tflite(_mutate(tiny_models["int8_cnn"], lambda m, fb: None)))) == []


@pytest.mark.parametrize("name", list(MUTANTS))
def test_broken_graph_is_a_named_error(mutants, name):
    data, path = mutants[name]
    _, kind, text = MUTANTS[name]
    with pytest.raises(BrokenGraph) as e:
        load_tflite(path)
    err = e.value
    assert isinstance(err, ModelFormatError) and err.exit_code == 3
    assert [p.kind for p in err.problems] == [kind], err.problems
    assert text in err.message and str(path) in err.message
    assert "\n" not in err.message and err.hint
    with pytest.raises(BrokenGraph, match="the model has a broken graph"):
        load_tflite(data)


@pytest.mark.parametrize("api", ["inspect", "export_c", "model_facts"])
def test_every_entry_point_refuses_before_a_runtime_runs(mutants, tmp_path, monkeypatch, api):
    from edgekit.model import tflm_host
    from edgekit.profiling import model_facts

    def no_runtime(*a, **k):
        raise AssertionError("a runtime ran on a broken graph")

    monkeypatch.setattr(tflm_host, "call_child", no_runtime)
    call = {"inspect": lambda d: edgekit.inspect(d),
            "export_c": lambda d: edgekit.export_c(d, tmp_path / "out"),
            "model_facts": lambda d: model_facts(d)}[api]
    for data, _ in mutants.values():
        with pytest.raises(BrokenGraph):
            call(data)
    assert not (tmp_path / "out").exists()


def test_optional_inputs_variables_and_decode_inputs_are_not_problems(tiny_models):
    lstm = parse(load_tflite(tiny_models["float_lstm"])).main
    assert any(i == -1 for op in lstm.operators for i in op.inputs)
    assert any(t.is_variable and not t.is_constant for t in lstm.tensors)
    lut = parse(load_tflite(tiny_models["lut_compressed"])).main
    decode = [op for op in lut.operators if op.op == "TFLM_DECODE"]
    assert decode and graph_problems(parse(load_tflite(tiny_models["lut_compressed"]))) == []


def test_all_problems_are_listed_in_the_error(tiny_models):
    def both(m, fb):
        swap_first_ops(m, fb)
        shorten_weight_buffer(m, fb)

    with pytest.raises(BrokenGraph) as e:
        load_tflite(_mutate(tiny_models["int8_cnn"], both))
    assert sorted(p.kind for p in e.value.problems) == ["size_mismatch", "used_before_produced"]
    assert "needs 72 bytes" in e.value.message and "before op 1 (CONV_2D) produces it" in e.value.message


def test_cli_inspect_exits_3_with_one_line(mutants):
    env = dict(os.environ)
    env.pop("EDGEKIT_DEBUG", None)
    for name, (_, path) in mutants.items():
        r = subprocess.run([sys.executable, "-m", "edgekit", "inspect", str(path)], capture_output=True,
                           text=True, timeout=120, env=env)
        assert r.returncode == 3, (name, r.returncode, r.stderr)
        assert "Traceback" not in r.stderr and r.stdout == ""
        errors = [line for line in r.stderr.splitlines() if line.startswith("edgekit: error:")]
        assert len(errors) == 1 and "broken graph" in errors[0] and MUTANTS[name][2] in errors[0], r.stderr


def test_control_flow_subgraphs_are_checked_against_their_own_inputs():
    """WHILE / IF bodies live in subgraphs of their own: each is sound on its own inputs."""
    from edgekit._tf import tf as _tf

    tf = _tf()

    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    def f(x):
        _, y = tf.while_loop(lambda i, x: i < 3, lambda i, x: (i + 1, tf.nn.relu(x * 2.0 - 1.0)),
                             [tf.constant(0), x])
        return tf.cond(tf.reduce_sum(y) > 0, lambda: y + 1.0, lambda: y - 1.0)

    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    data = bytes(conv.convert())
    graph = parse(load_tflite(data))
    assert len(graph.subgraphs) > 1 and {"WHILE", "IF"} <= {o.op for o in graph.main.operators}
    assert graph_problems(graph) == []

    body = max(graph.subgraphs[1:], key=lambda sg: len(sg.operators))      # ADD (i + 1), MUL, SUB

    def swap_in_body(m, fb):
        ops = m.subgraphs[body.index].operators
        ops[0], ops[-1] = ops[-1], ops[0]

    with pytest.raises(BrokenGraph, match=rf"subgraph {body.index} op 0 \(SUB\) reads tensor .* before op 1 "
                                          r"\(MUL\) produces it"):
        load_tflite(_mutate(data, swap_in_body))
