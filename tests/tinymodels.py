"""Tiny models built in the tests, returned as .tflite bytes.

Every builder is deterministic (fixed seeds, untrained or trained for a moment on random data) and
small (a few thousand parameters), so a whole session builds them all in seconds. Use the
``tiny_models`` session fixture from tests/unit/conftest.py to share one build per pytest session, or
call the functions directly (each call builds again).

TensorFlow is reached only through edgekit._tf.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

SEED = 1234


def _keras():
    from edgekit._tf import keras, tf

    tf().random.set_seed(SEED)
    k = keras()
    k.backend.clear_session()         # layer-name counters too: the same bytes in any test order
    k.utils.set_random_seed(SEED)
    return k


def _representative(shape: tuple[int, ...], count: int = 16, seed: int = SEED):
    rng = np.random.default_rng(seed)

    def gen():
        for _ in range(count):
            yield [rng.uniform(-1.0, 1.0, size=(1, *shape)).astype(np.float32)]

    return gen


def convert_keras(model, *, int8: bool, input_shape: tuple[int, ...] | None = None,
                  dense_per_tensor: bool = False) -> bytes:
    """Convert a Keras model to .tflite bytes: full-integer int8 (int8 in/out) or plain float32.

    ``dense_per_tensor``: one weight scale per Dense layer (the converter's default is one per
    output channel).
    """
    from edgekit._tf import tf

    conv = tf().lite.TFLiteConverter.from_keras_model(model)
    if dense_per_tensor:
        conv._experimental_disable_per_channel_quantization_for_dense_layers = True
    if int8:
        shape = input_shape or tuple(int(d) for d in model.input_shape[1:])
        conv.optimizations = [tf().lite.Optimize.DEFAULT]
        conv.representative_dataset = _representative(shape)
        conv.target_spec.supported_ops = [tf().lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf().int8
        conv.inference_output_type = tf().int8
    return bytes(conv.convert())


def int8_cnn_keras(input_hw: int = 8, filters: int = 8, classes: int = 10):
    """Keras CNN: Conv2D(3x3, valid) -> ReLU -> MaxPool 2x2 -> Flatten -> Dense(classes) -> Softmax."""
    k = _keras()
    return k.Sequential([
        k.layers.Input((input_hw, input_hw, 1), batch_size=1),
        k.layers.Conv2D(filters, 3, activation="relu"),
        k.layers.MaxPooling2D(2),
        k.layers.Flatten(),
        k.layers.Dense(classes),
        k.layers.Softmax(),
    ])


def int8_cnn() -> bytes:
    """Full-integer int8 CNN on an 8x8x1 input (Conv2D 8 filters 3x3, MaxPool, Dense 10); ~1k params."""
    return convert_keras(int8_cnn_keras(), int8=True)


def digits_cnn(dense_per_tensor: bool = False) -> bytes:
    """Full-integer int8 CNN sized like an sklearn-digits classifier (8x8x1 in, 10 out), ~20k params.

    Conv2D(16, 3x3, same) -> Conv2D(32, 3x3, same) -> MaxPool 2x2 -> Flatten -> Dense(32) -> Dense(10).
    Its dense layers are quantized per output channel (the converter's default) unless
    ``dense_per_tensor``.
    """
    k = _keras()
    model = k.Sequential([
        k.layers.Input((8, 8, 1), batch_size=1),
        k.layers.Conv2D(16, 3, padding="same", activation="relu"),
        k.layers.Conv2D(32, 3, padding="same", activation="relu"),
        k.layers.MaxPooling2D(2),
        k.layers.Flatten(),
        k.layers.Dense(32, activation="relu"),
        k.layers.Dense(10),
    ])
    return convert_keras(model, int8=True, dense_per_tensor=dense_per_tensor)


def int8_cnn_per_tensor() -> bytes:
    """int8_cnn with per-tensor dense weights (what the Arduino boards' pinned TFLM library runs right)."""
    return convert_keras(int8_cnn_keras(), int8=True, dense_per_tensor=True)


def digits_cnn_per_tensor() -> bytes:
    """digits_cnn with per-tensor dense weights (what TFLM runtimes without per-channel dense need)."""
    return digits_cnn(dense_per_tensor=True)


def lut_digits_cnn() -> bytes:
    """The LUT-compressed CNN of lut_compressed_cnn (TFLM_DECODE ops; 12x12x1 in, 10 out)."""
    return lut_compressed_cnn()[1]


def int8_autoencoder() -> bytes:
    """A dense int8 autoencoder (640 -> 4 x 128 -> 8 -> 4 x 128 -> 640, the MLPerf Tiny AD shape): host TFLM
    crashes (SIGSEGV) instead of failing cleanly at some too-small arena sizes."""
    k = _keras()
    inp = k.layers.Input((640,), batch_size=1)
    x = inp
    for units in (128, 128, 128, 128, 8, 128, 128, 128, 128):
        x = k.layers.ReLU()(k.layers.BatchNormalization()(k.layers.Dense(units)(x)))
    return convert_keras(k.Model(inp, k.layers.Dense(640)(x)), int8=True)


def float_cnn() -> bytes:
    """The int8_cnn architecture left in float32 (no quantization at all)."""
    return convert_keras(int8_cnn_keras(), int8=False)


def conv_keras(input_hw: int = 6, in_ch: int = 2, filters: int = 4, kernel: int = 3,
               strides: int = 1, padding: str = "valid"):
    """A single Conv2D layer with bias (for MAC-count checks)."""
    k = _keras()
    return k.Sequential([
        k.layers.Input((input_hw, input_hw, in_ch), batch_size=1),
        k.layers.Conv2D(filters, kernel, strides=strides, padding=padding),
    ])


def depthwise_keras(input_hw: int = 6, channels: int = 3, multiplier: int = 2, kernel: int = 3):
    """DepthwiseConv2D(kernel, depth_multiplier) -> ReLU -> Conv2D 1x1 (4 filters) -> GlobalAveragePool."""
    k = _keras()
    return k.Sequential([
        k.layers.Input((input_hw, input_hw, channels), batch_size=1),
        k.layers.DepthwiseConv2D(kernel, depth_multiplier=multiplier, activation="relu"),
        k.layers.Conv2D(4, 1),
        k.layers.GlobalAveragePooling2D(),
    ])


def int8_depthwise() -> bytes:
    """Full-integer int8 model with a depthwise convolution (6x6x3 in, multiplier 2, then 1x1 conv)."""
    return convert_keras(depthwise_keras(), int8=True)


def dense_keras(inputs: int = 16, hidden: int = 12, outputs: int = 5):
    """Dense(hidden, relu) -> Dense(outputs)."""
    k = _keras()
    return k.Sequential([
        k.layers.Input((inputs,), batch_size=1),
        k.layers.Dense(hidden, activation="relu"),
        k.layers.Dense(outputs),
    ])


def int8_dense() -> bytes:
    """Full-integer int8 dense-only model: 16 -> 12 (ReLU) -> 5."""
    return convert_keras(dense_keras(), int8=True)


def float_lstm() -> bytes:
    """Float32 LSTM model: (1, 6 steps, 3 features) -> LSTM(8) -> Dense(4).

    The converter fuses the Keras LSTM into one UNIDIRECTIONAL_SEQUENCE_LSTM op, which TFLM runs.
    """
    k = _keras()
    model = k.Sequential([
        k.layers.Input((6, 3), batch_size=1),
        k.layers.LSTM(8),
        k.layers.Dense(4),
    ])
    return convert_keras(model, int8=False)


def blobs(samples: int, *, classes: int = 4, features: int = 16, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs: ``classes`` overlapping centres in ``features`` dimensions (spread 0.7 against unit
    noise: a float MLP gets ~96 %); (x float32, y int64)."""
    centres = np.random.default_rng(SEED).normal(0.0, 0.7, (classes, features))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, samples)
    return (centres[y] + rng.normal(0.0, 1.0, (samples, features))).astype(np.float32), y.astype(np.int64)


def outlier_mlp_keras(outlier: float = 1500.0, epochs: int = 12):
    """A classifier that plain int8 PTQ breaks and 16x8 does not: Dense(24, relu) -> Dense(4), trained on
    ``blobs``, then one hidden unit is added that is always on at ``outlier`` and feeds nothing.

    The float model computes exactly what it computed before (the unit's outgoing weights are 0), but
    the hidden activation tensor's int8 range now spans 0..``outlier``: one int8 step is ~``outlier``/255,
    coarser than every other unit's whole range. 16x8 activations have 256 times finer steps.
    """
    k = _keras()
    w1, b1, w2, b2 = _blobs_mlp(k, epochs)
    model = k.Sequential([k.layers.Input((16,)), k.layers.Dense(25, activation="relu", name="hidden"),
                          k.layers.Dense(4, name="logits")])
    model.set_weights([np.concatenate([w1, np.zeros((16, 1), np.float32)], axis=1),
                       np.concatenate([b1, [outlier]]).astype(np.float32),
                       np.concatenate([w2, np.zeros((1, 4), np.float32)], axis=0), b2])
    return model


def _blobs_mlp(k, epochs: int):
    x, y = blobs(1200)
    small = k.Sequential([k.layers.Input((16,)), k.layers.Dense(24, activation="relu"), k.layers.Dense(4)])
    small.compile(k.optimizers.Adam(0.01), k.losses.SparseCategoricalCrossentropy(from_logits=True))
    small.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return small.get_weights()


def dead_unit_mlp_keras(weight: float = 200.0, epochs: int = 12):
    """A classifier whose dense weights need one scale per output channel: the ``blobs`` MLP plus one
    hidden unit that is never active (its bias keeps it below zero, a dead ReLU) but has large weights.

    Float outputs are unchanged. Per-channel int8 gives the dead unit its own scale; with one scale for
    the whole tensor every other unit's weights fall onto a few int8 steps.
    """
    k = _keras()
    w1, b1, w2, b2 = _blobs_mlp(k, epochs)
    dead = np.full((16, 1), weight, np.float32)
    model = k.Sequential([k.layers.Input((16,)), k.layers.Dense(25, activation="relu", name="hidden"),
                          k.layers.Dense(4, name="logits")])
    model.set_weights([np.concatenate([w1, dead], axis=1), np.concatenate([b1, [-1000.0 * weight]]).astype(np.float32),
                       np.concatenate([w2, np.zeros((1, 4), np.float32)], axis=0), b2])
    return model


def lut_cnn_keras(values_per_channel: int = 8):
    """int8_cnn with every Conv2D/Dense kernel snapped to a few distinct values per output channel.

    Snapping (k-means-like: evenly spaced levels between each channel's min and max) stands in for
    weight clustering; after int8 quantization each channel holds at most ``values_per_channel``
    distinct values, so LUT compression with 4-bit (or smaller) indices is lossless.
    """
    k = _keras()
    model = k.Sequential([
        k.layers.Input((12, 12, 1), batch_size=1),
        k.layers.Conv2D(16, 3, activation="relu"),
        k.layers.MaxPooling2D(2),
        k.layers.Flatten(),
        k.layers.Dense(10),
    ])
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        kernel = weights[0]
        flat = kernel.reshape(-1, kernel.shape[-1])       # output channel is the last axis in Keras
        lo, hi = flat.min(axis=0), flat.max(axis=0)
        steps = (hi - lo) / (values_per_channel - 1)
        snapped = lo + np.round((flat - lo) / steps) * steps
        weights[0] = snapped.reshape(kernel.shape).astype(np.float32)
        layer.set_weights(weights)
    return model


def lut_compressed_cnn(index_bitwidth: int = 4) -> tuple[bytes, bytes]:
    """(uncompressed int8 model, TFLM LUT-compressed model) of lut_cnn_keras.

    Weight tensors of Conv2D and FullyConnected get per-channel LUT specs (axis 0: output channel in
    TFLite's layout); tiny tensors are skipped. The compressed model contains TFLM_DECODE ops and runs
    only on TFLM.
    """
    from tflite_micro import compression
    from tflite_micro.tensorflow.lite.micro.compression import spec
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    plain = convert_keras(lut_cnn_keras(), int8=True)
    model = fb.ModelT.InitFromObj(fb.Model.GetRootAs(plain, 0))
    builder = compression.SpecBuilder()
    graph = model.subgraphs[0]
    wanted = {fb.BuiltinOperator.CONV_2D, fb.BuiltinOperator.FULLY_CONNECTED}
    count = 0
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) not in wanted:
            continue
        weight_index = int(op.inputs[1])
        tensor = graph.tensors[weight_index]
        if int(np.prod(tensor.shape)) < 256:      # the LUT would outweigh the savings
            continue
        builder.add_tensor(0, weight_index).with_lut(index_bitwidth=index_bitwidth,
                                                        mode=spec.PerChannel(axis=0))
        count += 1
    assert count, "no tensor qualified for compression"
    return plain, bytes(compression.compress(plain, builder.build()))


BUILDERS: dict[str, Callable[[], bytes]] = {
    "int8_cnn": int8_cnn,
    "float_cnn": float_cnn,
    "int8_depthwise": int8_depthwise,
    "int8_dense": int8_dense,
    "float_lstm": float_lstm,
    "digits_cnn": digits_cnn,
    "digits_cnn_per_tensor": digits_cnn_per_tensor,
    "int8_cnn_per_tensor": int8_cnn_per_tensor,
    "int8_autoencoder": int8_autoencoder,
    "lut_digits_cnn": lut_digits_cnn,
}


def dynamic_range_dense() -> bytes:
    """dense_keras with dynamic-range quantization: int8 weights, float32 activations ("mixed")."""
    from edgekit._tf import tf

    conv = tf().lite.TFLiteConverter.from_keras_model(dense_keras(inputs=64, hidden=32))
    conv.optimizations = [tf().lite.Optimize.DEFAULT]
    return bytes(conv.convert())


class TinyModels:
    """Lazily built, session-cached .tflite bytes; ``models["int8_cnn"]``, ``models.path("int8_cnn")``.

    Names: the keys of BUILDERS, plus "lut_plain" / "lut_compressed" (lut_compressed_cnn) and
    "dynamic_range" (weights int8, activations float).
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self._cache: dict[str, bytes] = {}

    def __getitem__(self, name: str) -> bytes:
        if name not in self._cache:
            if name in ("lut_plain", "lut_compressed"):
                plain, compressed = lut_compressed_cnn()
                self._cache["lut_plain"], self._cache["lut_compressed"] = plain, compressed
            elif name == "dynamic_range":
                self._cache[name] = dynamic_range_dense()
            else:
                self._cache[name] = BUILDERS[name]()
        return self._cache[name]

    def path(self, name: str) -> Path:
        p = self.folder / f"{name}.tflite"
        if not p.exists():
            p.write_bytes(self[name])
        return p
