"""sklearn's digits (8x8 grey images of 0-9, 1,797 samples, shipped inside scikit-learn): a small
real dataset that needs no network. Shared by the digits and transfer examples, bench/ and tests."""
from __future__ import annotations

import numpy as np


def load_split(test_fraction: float = 0.25, seed: int = 0):
    """(x_train, y_train, x_test, y_test): x float32 in [0, 1], shape (N, 8, 8, 1); y int64."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    y = d.target.astype(np.int64)
    idx = np.random.default_rng(seed).permutation(len(x))
    x, y = x[idx], y[idx]
    n_test = int(len(x) * test_fraction)
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test]


def build_cnn(keras, conv1: int = 16, conv2: int = 32, dense: int = 32, classes: int = 10):
    """The digits CNN: ~21k parameters, float32 .tflite ~90 KB."""
    return keras.Sequential([
        keras.layers.Input((8, 8, 1)),
        keras.layers.Conv2D(conv1, 3, padding="same", activation="relu", name="conv1"),
        keras.layers.Conv2D(conv2, 3, padding="same", activation="relu", name="conv2"),
        keras.layers.MaxPooling2D(name="pool"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(dense, activation="relu", name="fc1"),
        keras.layers.Dense(classes, name="logits"),
    ], name="digits_cnn")


def train_cnn(x, y, epochs: int = 30, seed: int = 0, **sizes):
    from edgekit import _tf

    keras = _tf.keras()
    keras.utils.set_random_seed(seed)
    model = build_cnn(keras, **sizes)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model
