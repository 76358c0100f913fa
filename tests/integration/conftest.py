"""Fixtures shared by the integration tests: a tiny digits CNN (real sklearn digits data) on disk."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples" / "digits"))


def build_tiny_digits(keras):
    """~1.3k parameters: enough to learn digits to ~90 % in a few epochs."""
    return keras.Sequential([
        keras.layers.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv"),
        keras.layers.MaxPooling2D(name="pool"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(16, activation="relu", name="fc"),
        keras.layers.Dense(10, name="logits"),
    ], name="tiny_digits")


@pytest.fixture(scope="session")
def digits_files(tmp_path_factory):
    """{'model': .keras path, 'train': .npz, 'test': .npz, 'float_accuracy': float} for a tiny CNN."""
    from digits_data import load_split

    from edgekit import _tf

    keras = _tf.keras()
    d = tmp_path_factory.mktemp("digits")
    x_train, y_train, x_test, y_test = load_split()
    x_train, y_train, x_test, y_test = x_train[:1000], y_train[:1000], x_test[:300], y_test[:300]
    keras.utils.set_random_seed(0)
    model = build_tiny_digits(keras)
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=12, batch_size=32, verbose=0)
    acc = float(np.mean(model.predict(x_test, verbose=0).argmax(1) == y_test))
    model.save(d / "tiny.keras")
    np.savez(d / "train.npz", x=x_train, y=y_train)
    np.savez(d / "test.npz", x=x_test, y=y_test)
    return {"model": d / "tiny.keras", "train": d / "train.npz", "test": d / "test.npz",
            "float_accuracy": acc, "dir": d}


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the test session, in this process: two CPUs (two workers at a time), a small
    object store. Yields its GCS address, which other processes (the CLI) join by --ray-address."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'edgekit[ray]'; make setup does)")
    from edgekit.ray_executor import start_local

    assert not ray.is_initialized()
    startup_s = start_local(ray, workers=2, object_store_bytes=256 * 1024 * 1024)
    yield {"address": ray.get_runtime_context().gcs_address, "startup_s": startup_s}
    ray.shutdown()


@pytest.fixture(scope="session")
def ray_client_address(ray_cluster):
    """A Ray Client server (what `ray://HOST:PORT` reaches) on the session's Ray, in its own process."""
    import os
    import socket
    import subprocess
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "ray.util.client.server", "--address", ray_cluster["address"],
                             "--host", "127.0.0.1", "--port", str(port), "--mode", "proxy"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("the Ray Client server did not start")
            time.sleep(0.3)
    yield f"ray://127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
