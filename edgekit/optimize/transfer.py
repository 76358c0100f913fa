"""Transfer learning: re-use a pretrained base instead of training from scratch.

1. take a base: a tf_keras model file, or a ``keras.applications`` architecture with weights from a
   local file (there is no download; a missing file is a clear error);
2. cut it at a named layer (default: the penultimate layer, i.e. drop the old classifier);
3. add a new classifier head for the new classes (global pooling when the cut is a feature map);
4. train the head with the base frozen, then unfreeze the top N layers of the base and fine-tune at
   a lower learning rate;
5. save a tf_keras model that `edgekit convert` takes, with a sidecar ``<model>.edgekit.json``
   holding class names and the training history (convert copies the class names into its report).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgekit import schemas
from edgekit import _tf
from edgekit.conversion.data import Dataset, check_dataset, load_data
from edgekit.errors import DataError, InputFileError, UnsupportedModelError, UsageError
from edgekit.progress import ProgressFn

SIDECAR_SUFFIX = ".edgekit.json"


@dataclass
class FinetuneSettings:
    cut_at: Optional[str] = None         # layer name; None = penultimate layer
    trainable_top: int = 2               # base layers (with weights) unfrozen in phase 2
    head_epochs: int = 10
    finetune_epochs: int = 5
    learning_rate: float = 1e-3
    finetune_learning_rate: float = 1e-4
    batch_size: int = 32
    dropout: float = 0.0
    seed: int = 0

    def check(self) -> None:
        if self.trainable_top < 0:
            raise UsageError("--trainable-top must be 0 or more")
        if self.head_epochs < 1:
            raise UsageError("--head-epochs must be at least 1")
        if self.finetune_epochs < 0:
            raise UsageError("--finetune-epochs must be 0 or more")
        if not 0 <= self.dropout < 1:
            raise UsageError("--dropout must be in [0, 1)")


@dataclass
class FinetuneResult:
    model: Any
    report: dict = field(default_factory=dict)


APPLICATIONS = {  # name -> (keras.applications attribute, default keyword arguments)
    "mobilenetv2": ("MobileNetV2", {"alpha": 0.35}),
    "mobilenet": ("MobileNet", {"alpha": 0.25}),
    "mobilenetv3small": ("MobileNetV3Small", {"minimalistic": True}),
    "efficientnetb0": ("EfficientNetB0", {}),
}


def load_base(base: str | Path, *, weights: str | Path | None = None, input_shape=None):
    """A tf_keras model file, or 'applications:NAME' (e.g. applications:mobilenetv2) + local weights."""
    keras = _tf.keras()
    text = str(base)
    if text.startswith("applications:"):
        name = text.split(":", 1)[1].lower()
        if name not in APPLICATIONS:
            raise UsageError(f"unknown application '{name}'", hint=f"one of {', '.join(APPLICATIONS)}")
        if weights is None or not Path(weights).is_file():
            where = f" at {weights}" if weights else ""
            raise InputFileError(
                f"pretrained weights for {APPLICATIONS[name][0]} not found{where}; edgekit does not download "
                "them (it runs offline)",
                hint="put the matching no-top .h5 weights file on disk and pass --weights PATH")
        if input_shape is None:
            raise UsageError("an applications base needs --input-shape (e.g. 96,96,3)")
        attr, kwargs = APPLICATIONS[name]
        model = getattr(keras.applications, attr)(include_top=False, weights=None,
                                                  input_shape=tuple(input_shape), **kwargs)
        try:
            model.load_weights(str(weights))
        except (ValueError, OSError) as e:
            raise InputFileError(f"{weights} does not hold weights for {attr} "
                                 f"({str(e).splitlines()[0][:160]})") from e
        return model
    from edgekit.optimize.loading import load_model

    lm = load_model(base)
    return lm.require_keras("finetune")


def _cut(base, cut_at: Optional[str]):
    keras = _tf.keras()
    if cut_at is not None:
        try:
            layer = base.get_layer(cut_at)
        except ValueError as e:
            names = [l.name for l in base.layers]
            raise UnsupportedModelError(f"the base model has no layer named '{cut_at}'",
                                        hint=f"layers: {', '.join(names[-8:])}") from e
        return keras.Model(base.inputs, layer.output, name="base"), cut_at
    if len(base.layers) < 2:
        raise UnsupportedModelError("the base model has a single layer; nothing to cut")
    if any(t.__class__.__name__ == "Dense" for t in [base.layers[-1]]) or len(base.outputs[0].shape) == 2:
        layer = base.layers[-2]
        return keras.Model(base.inputs, layer.output, name="base"), layer.name
    return keras.Model(base.inputs, base.outputs, name="base"), base.layers[-1].name


def _weighted_layers(model) -> list:
    return [l for l in model.layers if l.weights]


def finetune(base: Any, data: Any, settings: FinetuneSettings | None = None, *, eval_data: Any = None,
             weights: str | Path | None = None, input_shape=None, num_classes: int | None = None,
             out: str | Path | None = None, progress: ProgressFn | None = None) -> FinetuneResult:
    """Transfer a pretrained base to new classes. Returns the new model and a report dict."""
    settings = settings or FinetuneSettings()
    settings.check()
    keras = _tf.keras()
    keras.utils.set_random_seed(settings.seed)
    t_start = time.perf_counter()
    base_model = base if hasattr(base, "layers") else load_base(base, weights=weights, input_shape=input_shape)
    in_shape = tuple(base_model.inputs[0].shape[1:])
    train = _dataset(data, in_shape, "data")
    test = _dataset(eval_data, in_shape, "eval data") if eval_data is not None else None
    if not train.is_classification:
        raise DataError("finetune needs integer class labels in --data")
    n_classes = num_classes or (len(train.class_names) if train.class_names else int(train.y.max()) + 1)
    present = np.unique(train.y)
    if n_classes < 2 or len(present) < 2:
        raise DataError(f"finetune needs at least 2 classes; the data has {len(present)}",
                        hint="a classifier head for one class learns nothing")
    for name, ds in (("data", train), ("eval data", test)):
        if ds is not None and (int(ds.y.max()) >= n_classes or int(ds.y.min()) < 0):
            raise DataError(f"{name} has labels {int(ds.y.min())}..{int(ds.y.max())} but the new head has "
                            f"{n_classes} classes", hint="labels must be 0..classes-1 (remap them)")
    features, cut_name = _cut(base_model, settings.cut_at)
    features.trainable = False
    x_in = keras.Input(in_shape)
    h = features(x_in, training=False)
    if len(h.shape) == 4:
        h = keras.layers.GlobalAveragePooling2D(name="head_pool")(h)
    elif len(h.shape) > 2:
        h = keras.layers.Flatten(name="head_flatten")(h)
    if settings.dropout:
        h = keras.layers.Dropout(settings.dropout, name="head_dropout")(h)
    logits = keras.layers.Dense(n_classes, name="head_logits")(h)
    model = keras.Model(x_in, logits, name="transfer")
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    history: dict[str, list] = {"phase": [], "loss": [], "accuracy": [], "eval_accuracy": [], "seconds": []}

    class Track(keras.callbacks.Callback):
        def __init__(self, phase, epochs):
            super().__init__()
            self.phase, self.epochs = phase, epochs

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            history["phase"].append(self.phase)
            history["loss"].append(float(logs.get("loss", np.nan)))
            history["accuracy"].append(float(logs.get("accuracy", np.nan)))
            if test is not None:
                pred = self.model.predict(test.x, verbose=0, batch_size=256)
                history["eval_accuracy"].append(float(np.mean(pred.argmax(1) == test.y)))
            history["seconds"].append(time.perf_counter() - t_start)
            if progress:
                progress(f"finetune: {self.phase}", epoch + 1, self.epochs)

    model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate), loss=loss, metrics=["accuracy"])
    model.fit(train.x, train.y, epochs=settings.head_epochs, batch_size=settings.batch_size, verbose=0,
              callbacks=[Track("head", settings.head_epochs)])
    unfrozen = []
    if settings.trainable_top > 0 and settings.finetune_epochs > 0:
        features.trainable = True
        weighted = _weighted_layers(features)
        for layer in features.layers:
            layer.trainable = False
        for layer in weighted[-settings.trainable_top:]:
            if type(layer).__name__ != "BatchNormalization":   # keep BN statistics frozen
                layer.trainable = True
                unfrozen.append(layer.name)
        model.compile(optimizer=keras.optimizers.Adam(settings.finetune_learning_rate), loss=loss,
                      metrics=["accuracy"])
        model.fit(train.x, train.y, epochs=settings.finetune_epochs, batch_size=settings.batch_size,
                  verbose=0, callbacks=[Track("finetune", settings.finetune_epochs)])
    class_names = train.class_names or [str(i) for i in range(n_classes)]
    report = {
        "schema": schemas.FINETUNE,
        "base": str(base) if not hasattr(base, "layers") else "<in-memory model>",
        "cut_at": cut_name,
        "classes": n_classes,
        "class_names": class_names,
        "unfrozen_layers": unfrozen,
        "settings": settings.__dict__,
        "train_samples": len(train),
        "history": history,
        "duration_s": round(time.perf_counter() - t_start, 3),
    }
    if test is not None:
        report["eval_accuracy"] = history["eval_accuracy"][-1]
    if out is not None:
        save_model(model, Path(out), report)
    return FinetuneResult(model=model, report=report)


def _dataset(value, shape, what) -> Dataset:
    if isinstance(value, Dataset):
        return check_dataset(value, shape, need_labels=True, what=what)
    if isinstance(value, tuple):
        return check_dataset(Dataset(np.asarray(value[0]), np.asarray(value[1])), shape, need_labels=True,
                             what=what)
    return load_data(value, shape, need_labels=True, what=what)


def save_model(model, path: Path, report: dict | None = None) -> None:
    """Save atomically: a temporary name in the same folder, then rename (model and sidecar)."""
    from edgekit.fileio import ensure_dir, write_text

    ensure_dir(path.parent)
    suffix = path.suffix if path.suffix in (".keras", ".h5") else ".keras"
    tmp = path.parent / f".{path.stem}.tmp{os.getpid()}{suffix}"
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    if report is not None:
        write_text(sidecar_path(path), json.dumps(report, indent=2, default=str) + "\n", skip_if_same=False)


def sidecar_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.name + SIDECAR_SUFFIX)


def read_sidecar(model_path: str | Path) -> dict | None:
    p = sidecar_path(Path(model_path))
    try:
        return json.loads(p.read_text()) if p.is_file() else None
    except (OSError, ValueError):
        return None
