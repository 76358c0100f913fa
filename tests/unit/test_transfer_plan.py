"""Transfer learning without TensorFlow: the training plan, the label mapping and the NumPy head trainer."""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.conversion.data import Dataset
from edgekit.errors import DataError, UsageError
from edgekit.optimize import transfer
from edgekit.optimize.transfer import FinetuneSettings, plan_training, train_linear_head


def test_small_data_gets_enough_steps():
    # the case that reached chance: 100 samples at batch 32 for 10 epochs were 40 optimizer steps
    plan = plan_training(100, FinetuneSettings())
    assert plan.batch_size == 25 and plan.steps_per_epoch == 4
    assert plan.head_epochs * plan.steps_per_epoch >= transfer.HEAD_MIN_STEPS
    assert plan.finetune_epochs * plan.steps_per_epoch >= transfer.FINETUNE_MIN_STEPS
    d = plan.as_dict()
    assert d["samples_seen"] == (plan.head_epochs + plan.finetune_epochs) * 100


def test_one_sample_per_class_is_a_full_batch():
    plan = plan_training(5, FinetuneSettings())
    assert plan.batch_size == 5 and plan.steps_per_epoch == 1
    assert plan.head_epochs == transfer.HEAD_MIN_STEPS


def test_large_data_keeps_epoch_minimums():
    plan = plan_training(50_000, FinetuneSettings())
    assert plan.batch_size == 32
    assert plan.head_epochs == transfer.MIN_HEAD_EPOCHS and plan.finetune_epochs == transfer.MIN_FINETUNE_EPOCHS


def test_explicit_values_win():
    plan = plan_training(100, FinetuneSettings(head_epochs=3, finetune_epochs=0, batch_size=50))
    assert (plan.batch_size, plan.head_epochs, plan.finetune_epochs) == (50, 3, 0)
    assert plan_training(100, FinetuneSettings(), finetunes=False).finetune_epochs == 0


@pytest.mark.parametrize("kw, match", [({"batch_size": 0}, "--batch-size"), ({"learning_rate": 0}, "--lr"),
                                       ({"head_epochs": 0}, "--head-epochs")])
def test_bad_settings(kw, match):
    with pytest.raises(UsageError, match=match):
        FinetuneSettings(**kw).check()


def test_labels_5_to_9_map_to_0_to_4():
    ds = Dataset(np.zeros((4, 2), np.float32), np.array([9, 5, 7, 5]))
    mapping = transfer._label_map(ds, None)
    assert mapping == {5: 0, 7: 1, 9: 2}
    assert transfer._remap(ds, mapping, "data").y.tolist() == [2, 0, 1, 0]
    assert transfer._label_map(ds, 10) is None                       # --classes: labels are taken as given
    assert transfer._label_map(Dataset(ds.x, np.array([0, 1, 2, 1])), None) is None
    with pytest.raises(DataError, match="label\\(s\\) 6 that the training data does not have"):
        transfer._remap(Dataset(ds.x, np.array([5, 6, 7, 9])), mapping, "eval data")


def test_linear_head_learns_and_repeats():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 3
    y = np.repeat(np.arange(3), 2)                                   # two samples per class
    x = (centres[y] + rng.normal(size=(6, 16))).astype(np.float32)
    seen = []
    w, b = train_linear_head(x, y, 3, epochs=100, batch_size=6, learning_rate=3e-3,
                             on_epoch=lambda e, loss, acc, w, b: seen.append((loss, acc)))
    assert len(seen) == 100 and seen[-1][1] == 1.0 and seen[-1][0] < seen[0][0] / 5
    x_new = (centres[y] + rng.normal(size=(6, 16))).astype(np.float32)
    assert np.mean((x_new @ w + b).argmax(1) == y) >= 5 / 6
    w2, b2 = train_linear_head(x, y, 3, epochs=100, batch_size=6, learning_rate=3e-3)
    assert np.array_equal(w, w2) and np.array_equal(b, b2)          # the seed fixes the run
