"""Transfer learning: `edgekit finetune` and the digits 0-4 -> 5-9 example (real sklearn digits).

Cost: 8 `edgekit` subprocesses (about 5 s of CPU each, mostly TensorFlow starting) and ~10 s of
training in process."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from test_cli_convert import assert_one_line_error, edgekit

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def new_task(tmp_path_factory, digits_files):
    """Digits relabelled as a 3-class task (0-2 -> 0-2): few samples, image folder-free npz."""
    d = tmp_path_factory.mktemp("task")
    tr, te = np.load(digits_files["train"]), np.load(digits_files["test"])
    keep, keep_t = tr["y"] < 3, te["y"] < 3
    np.savez(d / "train.npz", x=tr["x"][keep][:60], y=tr["y"][keep][:60],
             class_names=np.array(["zero", "one", "two"]))
    np.savez(d / "test.npz", x=te["x"][keep_t], y=te["y"][keep_t])
    return d


@pytest.fixture(scope="module")
def digits_0_to_4(tmp_path_factory):
    """The issue's case, small: a tiny base trained on digits 0-4; the new task is digits 5-9 with their
    labels as they are (5..9), 20 samples per class, and the same with one sample per class."""
    from digits_data import load_split

    from edgekit import _tf

    keras = _tf.keras()
    d = tmp_path_factory.mktemp("five")
    x_tr, y_tr, x_te, y_te = load_split()
    keras.utils.set_random_seed(0)
    base = keras.Sequential([
        keras.layers.Input((8, 8, 1)),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv"),
        keras.layers.MaxPooling2D(name="pool"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(16, activation="relu", name="fc"),
        keras.layers.Dense(5, name="logits"),
    ])
    base.compile(optimizer=keras.optimizers.Adam(3e-3),
                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    base.fit(x_tr[y_tr < 5], y_tr[y_tr < 5], epochs=8, batch_size=32, verbose=0)
    base.save(d / "base.keras")
    rng = np.random.default_rng(0)
    for name, k in (("few", 20), ("one", 1)):
        pick = np.concatenate([rng.choice(np.flatnonzero(y_tr == c), k, replace=False) for c in range(5, 10)])
        np.savez(d / f"{name}.npz", x=x_tr[pick], y=y_tr[pick])
    np.savez(d / "test.npz", x=x_te[y_te >= 5], y=y_te[y_te >= 5])
    np.savez(d / "test_with_4.npz", x=x_te[y_te >= 4], y=y_te[y_te >= 4])
    return d


def test_defaults_learn_the_issue_case(tmp_path, digits_0_to_4):
    """`edgekit finetune base.keras --data few.npz -o new.keras` with labels 5..9 and 20 samples per class
    reached 0.24 train accuracy with the old defaults (40 optimizer steps on the penultimate ReLUs)."""
    d = digits_0_to_4
    r = edgekit("finetune", d / "base.keras", "--data", d / "few.npz", "--eval", d / "test.npz",
                "-o", tmp_path / "new.keras", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["cut_at"] == "flatten"                      # under the dense top, not the penultimate ReLUs
    assert rep["label_map"] == {"5": 0, "6": 1, "7": 2, "8": 3, "9": 4}
    assert rep["classes"] == 5 and rep["class_names"] == ["5", "6", "7", "8", "9"]
    assert rep["plan"]["head_steps"] >= 300 and rep["head_on_cached_features"] is True
    assert rep["compute"]["base_forward_samples"] == 100 + rep["plan"]["finetune_epochs"] * 100
    assert rep["history"]["accuracy"][-1] > 0.9
    assert rep["eval_accuracy"] > 0.8                       # 5 classes: chance is 0.2
    assert rep["history"]["eval_epoch"][-1] == len(rep["history"]["phase"])


def test_one_sample_per_class(tmp_path, digits_0_to_4):
    """Bad input that works: one sample per class is a full batch, and the head still gets 300 steps."""
    d = digits_0_to_4
    r = edgekit("finetune", d / "base.keras", "--data", d / "one.npz", "--eval", d / "test.npz",
                "-o", tmp_path / "new.keras", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["train_samples"] == 5 and rep["plan"]["batch_size"] == 5
    assert rep["plan"]["head_steps"] == 300
    assert rep["history"]["accuracy"][-1] == 1.0            # five points, five classes: fitted
    assert rep["eval_accuracy"] > 0.4                       # from one example each; chance is 0.2
    assert (tmp_path / "new.keras").is_file()


def test_eval_label_the_training_data_lacks(tmp_path, digits_0_to_4):
    """Labels 5..9 are mapped to outputs 0..4; an eval label outside them has no output to score."""
    from edgekit.errors import DataError
    from edgekit.optimize.transfer import finetune

    d = digits_0_to_4
    with pytest.raises(DataError, match=r"label\(s\) 4 that the training data does not have"):
        finetune(d / "base.keras", d / "few.npz", eval_data=d / "test_with_4.npz", out=tmp_path / "new.keras")
    assert not (tmp_path / "new.keras").exists()


def test_numpy_head_trains_as_keras_does():
    """The head phase on cached features runs Adam in NumPy; it must move the weights as Keras would."""
    from edgekit import _tf
    from edgekit.optimize.transfer import train_linear_head

    keras = _tf.keras()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 6)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    w0, b0 = rng.normal(size=(6, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    inp = keras.Input((6,))
    dense = keras.layers.Dense(3)
    model = keras.Model(inp, dense(inp))
    dense.set_weights([w0, b0])
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=5, batch_size=8, shuffle=False, verbose=0)      # one batch: order does not matter
    w, b = train_linear_head(x, y, 3, epochs=5, batch_size=8, learning_rate=0.01, initial=(w0, b0))
    assert not np.allclose(w, w0, atol=1e-3)
    np.testing.assert_allclose(w, dense.get_weights()[0], atol=1e-5)
    np.testing.assert_allclose(b, dense.get_weights()[1], atol=1e-5)


def test_finetune_then_convert(tmp_path, digits_files, new_task):
    out = tmp_path / "new.keras"
    r = edgekit("finetune", digits_files["model"], "--data", new_task / "train.npz", "--eval",
                new_task / "test.npz", "--head-epochs", "30", "--lr", "0.01", "--finetune-epochs", "2", "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["cut_at"] == "flatten"                     # the feature extractor, under the dense top
    assert rep["classes"] == 3 and rep["class_names"] == ["zero", "one", "two"]
    assert rep["label_map"] is None                       # class names given: labels stay as they are
    assert rep["unfrozen_layers"] == ["conv"]             # the only base layer with weights under the cut
    assert rep["plan"]["head_epochs"] == 30 and rep["plan"]["finetune_epochs"] == 2
    assert len(rep["history"]["phase"]) == 32 and rep["history"]["eval_epoch"][-1] == 32
    assert rep["eval_accuracy"] > 0.6                     # 3 classes: chance is 0.33
    side = json.loads((tmp_path / "new.keras.edgekit.json").read_text())
    assert side["class_names"] == ["zero", "one", "two"]
    # the saved model is what convert takes; class names travel into its report
    r = edgekit("convert", out, "--data", new_task / "train.npz", "--eval", new_task / "test.npz",
                "-o", tmp_path / "conv", "--json")
    assert r.returncode == 0, r.stderr
    conv = json.loads(r.stdout)
    assert conv["class_names"] == ["zero", "one", "two"]
    assert conv["io"]["outputs"][0]["shape"] == [1, 3]
    assert conv["evaluation"]["litert"]["accuracy"] > 0.6


def test_base_without_the_named_layer(tmp_path, digits_files, new_task):
    r = edgekit("finetune", digits_files["model"], "--data", new_task / "train.npz", "--cut-at", "nope",
                "-o", tmp_path / "m.keras")
    assert_one_line_error(r, 5, "no layer named 'nope'")
    assert not (tmp_path / "m.keras").exists()


def test_class_count_of_one(tmp_path, digits_files):
    d = np.load(digits_files["train"])
    np.savez(tmp_path / "one.npz", x=d["x"][:20], y=np.zeros(20, np.int64))
    assert_one_line_error(edgekit("finetune", digits_files["model"], "--data", tmp_path / "one.npz",
                                  "-o", tmp_path / "m.keras"), 4, "at least 2 classes")


def test_data_classes_do_not_match_head(tmp_path, digits_files, new_task):
    d = np.load(digits_files["train"])
    np.savez(tmp_path / "ten.npz", x=d["x"][:50], y=d["y"][:50])
    assert_one_line_error(edgekit("finetune", digits_files["model"], "--data", tmp_path / "ten.npz",
                                  "--classes", "3", "-o", tmp_path / "m.keras"), 4, "but the new head has 3 classes")


def test_missing_pretrained_weights(tmp_path, new_task):
    r = edgekit("finetune", "applications:mobilenetv2", "--input-shape", "96,96,3", "--data",
                new_task / "train.npz", "-o", tmp_path / "m.keras")
    assert_one_line_error(r, 3, "pretrained weights for MobileNetV2 not found")
    assert "offline" in r.stderr
    r = edgekit("finetune", "applications:mobilenetv2", "--input-shape", "96,96,3", "--weights",
                tmp_path / "absent.h5", "--data", new_task / "train.npz", "-o", tmp_path / "m.keras")
    assert_one_line_error(r, 3, "absent.h5")


def test_transfer_example_against_scratch_reduced(capsys):
    """The examples/transfer comparison at a reduced size (one seed, 2 samples per class, a short base).
    It prints the real rows; it checks that both learned and the compute each one spent, not who wins
    on accuracy (bench/bench_transfer.py measures that over seeds)."""
    sys.path.insert(0, str(ROOT / "examples" / "transfer"))
    import run as transfer_example

    r = transfer_example.compare(per_class=(2,), seeds=1, bases=("A",), base_epochs=4, checkpoints=(10, 50))
    summary = transfer_example.summarize(r)
    with capsys.disabled():
        print()
        transfer_example.print_table(r, summary)
    row = r["rows"][0]
    assert row["samples"] == 10 and r["test_samples"] > 200
    assert row["transfer_A"]["cut_at"] == "flatten" and row["transfer_A"]["unfrozen_layers"] == ["conv1", "conv2"]
    for k in ("transfer_head_A", "transfer_A"):
        assert row[k]["accuracy"] > 0.5                # 5 classes: chance is 0.2
    assert row["scratch_curve"][-1]["steps"] == 50 and row["scratch_curve"][-1]["accuracy"] > 0.3
    # the frozen-base head saw the base once per sample: far fewer MACs than 50 scratch steps
    assert row["transfer_head_A"]["mmacs"] * 10 < row["scratch_curve"][-1]["mmacs"]
    assert {s["method"] for s in summary} >= {"transfer head, base A", "transfer, base A", "scratch, 50 steps"}
