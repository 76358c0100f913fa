"""Transfer learning: re-use a pretrained base instead of training from scratch.

1. take a base: a tf_keras model file, or a ``keras.applications`` architecture with weights from a
   local file (there is no download; a missing file is a clear error);
2. cut it at a named layer (default: the end of its feature extractor, the output of the last Flatten
   or global pooling layer under the classifier's dense layers; a base without one is cut before its
   last layer);
3. add a new classifier head for the new classes (global pooling when the cut is a feature map);
   labels that are not 0..k-1 (digits 5-9, say) are mapped to 0..k-1 and keep their values as class
   names;
4. train the head with the base frozen, then unfreeze the top N layers of the base and fine-tune at
   a lower learning rate. The default budget is counted in optimizer steps, not epochs: each phase
   runs at least HEAD_MIN_STEPS / FINETUNE_MIN_STEPS steps however few the samples (100 samples at
   batch 32 are 4 steps an epoch; ten such epochs leave a new head about where it started);
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


HEAD_MIN_STEPS = 300        # optimizer steps the head phase runs at least (auto --head-epochs)
FINETUNE_MIN_STEPS = 100    # ... and the fine-tune phase (auto --finetune-epochs)
MIN_HEAD_EPOCHS = 10        # large data: at least this many passes
MIN_FINETUNE_EPOCHS = 5
EVAL_POINTS = 25            # --eval data is scored at most this often per phase (and after its last epoch)
FEATURE_CACHE_BYTES = 256 << 20   # the head phase trains on precomputed base features up to this size


@dataclass
class FinetuneSettings:
    cut_at: Optional[str] = None              # layer name; None = the end of the feature extractor
    trainable_top: int = 2                    # base layers (with weights) unfrozen in phase 2
    head_epochs: Optional[int] = None         # None = enough for HEAD_MIN_STEPS steps, >= MIN_HEAD_EPOCHS
    finetune_epochs: Optional[int] = None     # None = enough for FINETUNE_MIN_STEPS steps, >= 5
    learning_rate: float = 3e-3               # head phase (a fresh linear head on frozen features)
    finetune_learning_rate: float = 1e-4      # fine-tune phase (pretrained weights: move them gently)
    batch_size: Optional[int] = None          # None = a quarter of the samples, within 8..32
    dropout: float = 0.0
    seed: int = 0

    def check(self) -> None:
        if self.trainable_top < 0:
            raise UsageError("--trainable-top must be 0 or more")
        if self.head_epochs is not None and self.head_epochs < 1:
            raise UsageError("--head-epochs must be at least 1")
        if self.finetune_epochs is not None and self.finetune_epochs < 0:
            raise UsageError("--finetune-epochs must be 0 or more")
        if self.batch_size is not None and self.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        if not (self.learning_rate > 0 and self.finetune_learning_rate > 0):
            raise UsageError("--lr and --finetune-lr must be above 0")
        if not 0 <= self.dropout < 1:
            raise UsageError("--dropout must be in [0, 1)")


@dataclass
class TrainingPlan:
    """What the two phases will run, resolved from the settings and the number of samples."""
    samples: int
    batch_size: int
    head_epochs: int
    finetune_epochs: int

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.samples // self.batch_size)

    def as_dict(self) -> dict:
        return {"samples": self.samples, "batch_size": self.batch_size, "steps_per_epoch": self.steps_per_epoch,
                "head_epochs": self.head_epochs, "finetune_epochs": self.finetune_epochs,
                "head_steps": self.head_epochs * self.steps_per_epoch,
                "finetune_steps": self.finetune_epochs * self.steps_per_epoch,
                "samples_seen": (self.head_epochs + self.finetune_epochs) * self.samples}


def plan_training(samples: int, settings: FinetuneSettings, *, finetunes: bool = True) -> TrainingPlan:
    """Batch size and epochs per phase. Unset values are chosen so that small data still gets enough
    optimizer steps: the budget is steps, not passes over the data."""
    batch = settings.batch_size or min(32, max(8, samples // 4))
    batch = max(1, min(batch, samples))
    per_epoch = -(-samples // batch)
    head = settings.head_epochs or max(MIN_HEAD_EPOCHS, -(-HEAD_MIN_STEPS // per_epoch))
    if settings.finetune_epochs is not None:
        tune = settings.finetune_epochs
    else:
        tune = max(MIN_FINETUNE_EPOCHS, -(-FINETUNE_MIN_STEPS // per_epoch)) if finetunes else 0
    return TrainingPlan(samples, batch, head, tune)


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


# Layers a classifier top is made of, and the layers that end a feature extractor. The default cut
# walks back from the output over the former and stops at the latter: the dense layers were trained
# to tell the old classes apart (in the digits example a third of the penultimate layer's ReLUs are
# dead on the new classes), the features under them are what transfers.
_TOP_KINDS = {"Dense", "Dropout", "Activation", "ReLU", "Softmax", "BatchNormalization",
              "LayerNormalization", "Reshape"}
_FEATURE_ENDS = {"Flatten", "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
                 "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D"}


def _default_cut_layer(base):
    for layer in reversed(base.layers[:-1]):
        kind = type(layer).__name__
        if kind in _FEATURE_ENDS:
            return layer
        if kind not in _TOP_KINDS:
            return None
    return None


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
    if len(base.outputs[0].shape) == 2:    # a classifier (or embedding) output: drop the top
        layer = _default_cut_layer(base) or base.layers[-2]
        return keras.Model(base.inputs, layer.output, name="base"), layer.name
    return keras.Model(base.inputs, base.outputs, name="base"), base.layers[-1].name


def _own_copy(model):
    keras = _tf.keras()
    try:
        copy = keras.models.clone_model(model)
    except (ValueError, TypeError, NotImplementedError) as e:   # a subclassed model cannot be cloned
        raise UnsupportedModelError(f"finetune cannot copy the in-memory base ({e})",
                                    hint="pass the base as a saved .keras/.h5 file") from e
    copy.set_weights(model.get_weights())
    return copy


def _weighted_layers(model) -> list:
    return [l for l in model.layers if l.weights]


def _label_map(train: Dataset, num_classes: int | None) -> dict[int, int] | None:
    """Labels that are not 0..k-1 (and no --classes, no class names): map them to 0..k-1 in order."""
    if num_classes is not None or train.class_names:
        return None
    present = np.unique(train.y)
    if np.array_equal(present, np.arange(len(present))):
        return None
    return {int(v): i for i, v in enumerate(present)}


def _remap(ds: Dataset, mapping: dict[int, int], what: str) -> Dataset:
    unknown = sorted(set(np.unique(ds.y).tolist()) - set(mapping))
    if unknown:
        raise DataError(f"{what} has label(s) {', '.join(map(str, unknown[:5]))} that the training data "
                        "does not have", hint=f"the training labels are {', '.join(map(str, mapping))}")
    lut = np.zeros(max(max(mapping), int(ds.y.max())) + 1, np.int64)
    for old, new in mapping.items():
        lut[old] = new
    return Dataset(ds.x, lut[ds.y], ds.source, ds.class_names, ds.raw_dtype)


def _accuracy(model, ds: Dataset) -> float:
    # a direct call per chunk: model.predict builds a loop and costs ~5x more per call on small data
    right = 0
    for i in range(0, len(ds), 512):
        logits = np.asarray(model(ds.x[i:i + 512], training=False))
        right += int(np.sum(logits.argmax(1) == ds.y[i:i + 512]))
    return right / len(ds)


def train_linear_head(features: np.ndarray, labels: np.ndarray, n_classes: int, *, epochs: int,
                      batch_size: int, learning_rate: float, dropout: float = 0.0, seed: int = 0,
                      on_epoch=None, initial: tuple | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Softmax regression on fixed features with shuffled mini-batch Adam, as Keras trains a Dense head
    (Glorot-uniform kernel, zero bias, Adam beta 0.9 / 0.999, epsilon 1e-7, mean cross-entropy).
    ``on_epoch(epoch, loss, accuracy, kernel, bias)`` after each epoch; ``initial`` = (kernel, bias) to
    start from instead of a random kernel. Returns (kernel, bias)."""
    rng = np.random.default_rng(seed)
    f = np.asarray(features, np.float32)
    n, d = f.shape
    limit = np.sqrt(6.0 / (d + n_classes))
    w = rng.uniform(-limit, limit, (d, n_classes)).astype(np.float32)
    b = np.zeros(n_classes, np.float32)
    if initial is not None:
        w, b = (np.array(v, np.float32) for v in initial)
    moments = [np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b)]
    beta1, beta2, eps = 0.9, 0.999, 1e-7
    onehot = np.eye(n_classes, dtype=np.float32)
    step = 0
    for epoch in range(epochs):
        order = rng.permutation(n)
        loss_sum, right = 0.0, 0
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            x, y = f[idx], labels[idx]
            if dropout:
                x = x * ((rng.random(x.shape) >= dropout) / (1.0 - dropout)).astype(np.float32)
            z = x @ w + b
            z -= z.max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            loss_sum += float(-np.log(p[np.arange(len(idx)), y] + 1e-12).sum())
            right += int(np.sum(p.argmax(1) == y))
            g = (p - onehot[y]) / len(idx)
            step += 1
            alpha = learning_rate * np.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
            for var, grad, m, v in ((w, x.T @ g, moments[0], moments[1]), (b, g.sum(0), moments[2], moments[3])):
                m *= beta1
                m += (1 - beta1) * grad
                v *= beta2
                v += (1 - beta2) * grad * grad
                var -= (alpha * m / (np.sqrt(v) + eps)).astype(np.float32)
        if on_epoch is not None:
            on_epoch(epoch, loss_sum / n, right / n, w, b)
    return w, b


def _features(features, x: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(features(x[i:i + 256], training=False)) for i in range(0, len(x), 256)])


def finetune(base: Any, data: Any, settings: FinetuneSettings | None = None, *, eval_data: Any = None,
             weights: str | Path | None = None, input_shape=None, num_classes: int | None = None,
             out: str | Path | None = None, progress: ProgressFn | None = None) -> FinetuneResult:
    """Transfer a pretrained base to new classes. Returns the new model and a report dict."""
    settings = settings or FinetuneSettings()
    settings.check()
    keras = _tf.keras()
    keras.utils.set_random_seed(settings.seed)
    t_start = time.perf_counter()
    if hasattr(base, "layers"):
        base_model = _own_copy(base)     # fine-tuning trains the base's layers: never the caller's model
    else:
        base_model = load_base(base, weights=weights, input_shape=input_shape)
    in_shape = tuple(base_model.inputs[0].shape[1:])
    train = _dataset(data, in_shape, "data")
    test = _dataset(eval_data, in_shape, "eval data") if eval_data is not None else None
    if not train.is_classification:
        raise DataError("finetune needs integer class labels in --data")
    if test is not None and not test.is_classification:
        raise DataError("finetune needs integer class labels in --eval")
    present = np.unique(train.y)
    if len(present) < 2:
        raise DataError(f"finetune needs at least 2 classes; the data has {len(present)}",
                        hint="a classifier head for one class learns nothing")
    mapping = _label_map(train, num_classes)
    if mapping is not None:
        train = _remap(train, mapping, "data")
        test = _remap(test, mapping, "eval data") if test is not None else None
        train.class_names = [str(v) for v in mapping]
    n_classes = num_classes or (len(train.class_names) if train.class_names else int(train.y.max()) + 1)
    if n_classes < 2:
        raise DataError(f"finetune needs at least 2 classes; --classes is {n_classes}")
    for name, ds in (("data", train), ("eval data", test)):
        if ds is not None and (int(ds.y.max()) >= n_classes or int(ds.y.min()) < 0):
            raise DataError(f"{name} has labels {int(ds.y.min())}..{int(ds.y.max())} but the new head has "
                            f"{n_classes} classes", hint="labels must be 0..classes-1 (remap them)")
    train_start, cpu_start = time.perf_counter(), time.process_time()   # training compute from here
    features, cut_name = _cut(base_model, settings.cut_at)
    weighted = _weighted_layers(features)
    plan = plan_training(len(train), settings, finetunes=settings.trainable_top > 0 and bool(weighted))
    features.trainable = False
    x_in = keras.Input(in_shape)
    feature_shape = tuple(features.outputs[0].shape[1:])
    pre_layers = []                       # parameter-free: pooling / flattening of the features
    if len(feature_shape) == 3:
        pre_layers.append(keras.layers.GlobalAveragePooling2D(name="head_pool"))
    elif len(feature_shape) > 1:
        pre_layers.append(keras.layers.Flatten(name="head_flatten"))
    head_layers = list(pre_layers)
    if settings.dropout:
        head_layers.append(keras.layers.Dropout(settings.dropout, name="head_dropout"))
    dense = keras.layers.Dense(n_classes, name="head_logits")
    head_layers.append(dense)

    def apply(layers, h):
        for layer in layers:
            h = layer(h)
        return h

    model = keras.Model(x_in, apply(head_layers, features(x_in, training=False)), name="transfer")
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    history: dict[str, list] = {"phase": [], "loss": [], "accuracy": [], "seconds": [],
                                "eval_epoch": [], "eval_accuracy": []}
    eval_cost = {"wall_s": 0.0, "cpu_s": 0.0}

    def record(phase: str, epoch: int, epochs: int, loss_value: float, accuracy: float, score) -> None:
        history["phase"].append(phase)
        history["loss"].append(float(loss_value))
        history["accuracy"].append(float(accuracy))
        every = max(1, -(-epochs // EVAL_POINTS))
        if score is not None and ((epoch + 1) % every == 0 or epoch + 1 == epochs):
            t0, c0 = time.perf_counter(), time.process_time()
            history["eval_epoch"].append(len(history["phase"]))
            history["eval_accuracy"].append(score())
            eval_cost["wall_s"] += time.perf_counter() - t0
            eval_cost["cpu_s"] += time.process_time() - c0
        history["seconds"].append(time.perf_counter() - t_start)
        if progress:
            progress(f"finetune: {phase}", epoch + 1, epochs)

    class Track(keras.callbacks.Callback):
        def __init__(self, phase, epochs):
            super().__init__()
            self.phase, self.epochs = phase, epochs

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            record(self.phase, epoch, self.epochs, logs.get("loss", np.nan), logs.get("accuracy", np.nan),
                   None if test is None else (lambda: _accuracy(self.model, test)))

    # Phase 1. The frozen base gives the same features every epoch, so they are computed once (one
    # forward pass per sample instead of one per sample per epoch: the compute transfer learning
    # saves) and the linear head trains on them in NumPy, the same mini-batch Adam Keras would run,
    # without a framework step per batch. Features too big to hold go through the base every step.
    pooled_shape = tuple(apply(pre_layers, features.outputs[0]).shape[1:])
    cached = 4 * len(train) * int(np.prod(pooled_shape)) <= FEATURE_CACHE_BYTES
    if cached:
        pooled = keras.Model(x_in, apply(pre_layers, features(x_in, training=False)))
        train_f = _features(pooled, train.x)
        test_f = None
        if test is not None:
            t0, c0 = time.perf_counter(), time.process_time()
            test_f = _features(pooled, test.x)
            eval_cost["wall_s"] += time.perf_counter() - t0
            eval_cost["cpu_s"] += time.process_time() - c0

        def on_epoch(epoch, loss_value, accuracy, w, b):
            record("head", epoch, plan.head_epochs, loss_value, accuracy,
                   None if test_f is None else (lambda: float(np.mean((test_f @ w + b).argmax(1) == test.y))))

        w, b = train_linear_head(train_f, train.y, n_classes, epochs=plan.head_epochs,
                                 batch_size=plan.batch_size, learning_rate=settings.learning_rate,
                                 dropout=settings.dropout, seed=settings.seed, on_epoch=on_epoch)
        dense.set_weights([w, b])
        del train_f, test_f
    else:
        model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate), loss=loss, metrics=["accuracy"])
        model.fit(train.x, train.y, epochs=plan.head_epochs, batch_size=plan.batch_size, verbose=0,
                  callbacks=[Track("head", plan.head_epochs)])
    unfrozen = []
    if settings.trainable_top > 0 and plan.finetune_epochs > 0 and weighted:
        features.trainable = True
        for layer in features.layers:
            layer.trainable = False
        for layer in weighted[-settings.trainable_top:]:
            if type(layer).__name__ != "BatchNormalization":   # keep BN statistics frozen
                layer.trainable = True
                unfrozen.append(layer.name)
        model.compile(optimizer=keras.optimizers.Adam(settings.finetune_learning_rate), loss=loss,
                      metrics=["accuracy"])
        model.fit(train.x, train.y, epochs=plan.finetune_epochs, batch_size=plan.batch_size,
                  verbose=0, callbacks=[Track("finetune", plan.finetune_epochs)])
    else:
        plan.finetune_epochs = 0
    class_names = train.class_names or [str(i) for i in range(n_classes)]
    wall, cpu = time.perf_counter() - train_start, time.process_time() - cpu_start
    report = {
        "schema": schemas.FINETUNE,
        "base": str(base) if not hasattr(base, "layers") else "<in-memory model>",
        "cut_at": cut_name,
        "classes": n_classes,
        "class_names": class_names,
        "label_map": {str(k): v for k, v in mapping.items()} if mapping else None,
        "unfrozen_layers": unfrozen,
        "settings": settings.__dict__,
        "plan": plan.as_dict(),
        "head_on_cached_features": cached,
        "train_samples": len(train),
        "history": history,
        # training compute without the --eval scoring; process CPU time counts every thread
        "compute": {"samples_seen": plan.as_dict()["samples_seen"],
                    # samples that went through the base (forward), and back through its unfrozen layers
                    "base_forward_samples": (1 if cached else plan.head_epochs) * len(train)
                    + plan.finetune_epochs * len(train),
                    "base_backward_samples": plan.finetune_epochs * len(train),
                    "optimizer_steps": (plan.head_epochs + plan.finetune_epochs) * plan.steps_per_epoch,
                    "train_wall_s": round(wall - eval_cost["wall_s"], 3),
                    "train_cpu_s": round(cpu - eval_cost["cpu_s"], 3)},
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
