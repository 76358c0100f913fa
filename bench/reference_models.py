"""The MLPerf Tiny v0.5 reference architectures, built with tf_keras and converted to full-int8 TFLite.

Weights are random (no weights are downloaded): CMSIS-NN's int8 kernels run the same instructions
whatever the weight values, so instruction counts match the trained reference models'; accuracy is
meaningless here. Architectures as the MLPerf Tiny training code describes them:

- kws: DS-CNN, 49x10x1 MFCC input, Conv 64 (10x4, stride 2), 4 x (depthwise 3x3 + pointwise 64), average
  pool, Dense 12 (about 2.7 M MACs)
- ic: ResNet-8 for CIFAR-10, 32x32x3, three stacks of 16/32/64 filters with residual adds, average pool,
  Dense 10 (about 12.5 M MACs)
- vww: MobileNetV1 alpha 0.25 on 96x96x3, average pool, two classes (about 7.5 M MACs)
- ad: FC autoencoder, 640 -> 4 x 128 -> 8 -> 4 x 128 -> 640 (about 0.26 M MACs)
"""
from __future__ import annotations

import numpy as np


def _keras():
    from edgekit import _tf

    k = _tf.keras()
    k.backend.clear_session()
    k.utils.set_random_seed(0)
    return k


def kws():
    k = _keras()
    L = k.layers
    inp = L.Input((49, 10, 1), batch_size=1)
    x = L.Conv2D(64, (10, 4), strides=(2, 2), padding="same")(inp)
    x = L.ReLU()(L.BatchNormalization()(x))
    for _ in range(4):
        x = L.ReLU()(L.BatchNormalization()(L.DepthwiseConv2D((3, 3), padding="same")(x)))
        x = L.ReLU()(L.BatchNormalization()(L.Conv2D(64, (1, 1), padding="same")(x)))
    x = L.AveragePooling2D(pool_size=(25, 5))(x)
    out = L.Dense(12, activation="softmax")(L.Flatten()(x))
    return k.Model(inp, out, name="kws_dscnn")


def ic():
    k = _keras()
    L = k.layers

    def conv(x, filters, kernel, stride):
        return L.Conv2D(filters, kernel, strides=stride, padding="same")(x)

    inp = L.Input((32, 32, 3), batch_size=1)
    x = L.ReLU()(L.BatchNormalization()(conv(inp, 16, 3, 1)))
    for filters, stride in ((16, 1), (32, 2), (64, 2)):
        y = L.ReLU()(L.BatchNormalization()(conv(x, filters, 3, stride)))
        y = L.BatchNormalization()(conv(y, filters, 3, 1))
        if stride != 1:
            x = conv(x, filters, 1, stride)
        x = L.ReLU()(L.add([x, y]))
    x = L.AveragePooling2D(pool_size=8)(x)
    out = L.Dense(10, activation="softmax")(L.Flatten()(x))
    return k.Model(inp, out, name="ic_resnet8")


# MobileNetV1 pointwise filters and strides, at alpha 1.0 (x 0.25 here)
_MOBILENET_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1),
                     (512, 1), (512, 1), (1024, 2), (1024, 1))


def vww(alpha: float = 0.25):
    k = _keras()
    L = k.layers
    inp = L.Input((96, 96, 3), batch_size=1)
    he = {"kernel_initializer": "he_normal"}
    x = L.ReLU(6.0)(L.BatchNormalization()(L.Conv2D(int(32 * alpha), 3, strides=2, padding="same", **he)(inp)))
    for filters, stride in _MOBILENET_BLOCKS:
        x = L.DepthwiseConv2D(3, strides=stride, padding="same", depthwise_initializer="he_normal")(x)
        x = L.ReLU(6.0)(L.BatchNormalization()(x))
        x = L.ReLU(6.0)(L.BatchNormalization()(L.Conv2D(int(filters * alpha), 1, padding="same", **he)(x)))
    x = L.AveragePooling2D(pool_size=3)(x)                  # 3x3 feature map after five stride-2 steps
    out = L.Dense(2, activation="softmax")(L.Flatten()(x))
    return _normalized(k.Model(inp, out, name="vww_mobilenet025"))


def _normalized(model, samples: int = 8):
    """Data-dependent init: set every BatchNormalization's statistics to what it sees on random inputs,
    so that activations keep their range through a deep random network (else they shrink layer by
    layer until the int8 scales underflow and TFLM refuses the model)."""
    from edgekit import _tf

    k = _tf.keras()
    shape = tuple(int(d) for d in model.input_shape[1:])
    x = np.random.default_rng(1).uniform(-1.0, 1.0, size=(samples, *shape)).astype(np.float32)
    for layer in model.layers:
        if isinstance(layer, k.layers.BatchNormalization):
            seen = k.Model(model.input, layer.input)(x).numpy().reshape(-1, layer.input.shape[-1])
            gamma, beta, _, _ = layer.get_weights()
            layer.set_weights([gamma, beta, seen.mean(axis=0), seen.var(axis=0) + 1e-6])
    return model


def ad():
    k = _keras()
    L = k.layers
    inp = L.Input((640,), batch_size=1)
    x = inp
    for units in (128, 128, 128, 128, 8, 128, 128, 128, 128):
        x = L.ReLU()(L.BatchNormalization()(L.Dense(units)(x)))
    out = L.Dense(640)(x)
    return k.Model(inp, out, name="ad_fc_autoencoder")


BUILDERS = {"kws": kws, "vww": vww, "ic": ic, "ad": ad}


def int8_tflite(model, samples: int = 16) -> bytes:
    """Full-integer int8 conversion with random calibration data in the input's range."""
    from edgekit._tf import tf

    shape = tuple(int(d) for d in model.input_shape[1:])
    rng = np.random.default_rng(0)

    def rep():
        for _ in range(samples):
            yield [rng.uniform(-1.0, 1.0, size=(1, *shape)).astype(np.float32)]

    conv = tf().lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf().lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf().lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf().int8
    conv.inference_output_type = tf().int8
    return bytes(conv.convert())
