"""TF-MOT behind one adapter: prune, cluster and quantization-aware training of tf_keras models.

TF-MOT only knows tf_keras (Keras 2); edgekit._tf sets TF_USE_LEGACY_KERAS=1 before TensorFlow is
imported. Layers TF-MOT cannot wrap are left dense and listed, not a crash. After prune and/or
cluster, QAT uses the preserving schemes (tfmot.experimental.combine), since plain quantize_model
destroys sparsity and clusters.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from edgekit import _tf
from edgekit.conversion.data import Dataset
from edgekit.errors import DataError, UnsupportedModelError
from edgekit.optimize.recipe import ClusterSpec, PruneSpec, QatSpec, TrainSpec
from edgekit.progress import ProgressFn


@dataclass
class StageReport:
    stage: str
    settings: dict
    duration_s: float = 0.0
    epochs: int = 0
    wrapped_layers: list[str] = field(default_factory=list)
    skipped_layers: list[dict] = field(default_factory=list)   # layers with weights left as they were
    history: dict = field(default_factory=dict)
    scheme: Optional[str] = None

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


# --- training helpers -------------------------------------------------------------------------

def task_of(model, data: Dataset) -> str:
    """'classification' when labels are integer class ids and the model has one output per class."""
    out_dim = int(model.outputs[0].shape[-1] or 1)
    if data.y is not None and np.issubdtype(data.y.dtype, np.integer) and out_dim > 1:
        return "classification"
    return "regression"


def _output_is_probability(model) -> bool:
    last = model.layers[-1]
    act = getattr(last, "activation", None)
    name = getattr(act, "__name__", "") if act is not None else ""
    return name == "softmax" or type(last).__name__ == "Softmax"


def compile_for(model, data: Dataset, learning_rate: float) -> None:
    keras = _tf.keras()
    if data.y is None:
        raise DataError("fine-tuning (prune / cluster / qat) needs labels in --data",
                        hint="store labels as 'y' in the .npz")
    if task_of(model, data) == "classification":
        n_out = int(model.outputs[0].shape[-1])
        if int(data.y.max()) >= n_out or int(data.y.min()) < 0:
            raise DataError(f"labels range {int(data.y.min())}..{int(data.y.max())} but the model has "
                            f"{n_out} outputs")
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=not _output_is_probability(model))
        metrics = ["accuracy"]
    else:
        loss = keras.losses.MeanSquaredError()
        metrics = ["mae"]
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=metrics)


class _EpochProgress:
    def __new__(cls, name: str, epochs: int, progress: ProgressFn | None):
        keras = _tf.keras()

        class Callback(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                if progress:
                    progress(name, 0, epochs)

            def on_epoch_end(self, epoch, logs=None):
                if progress:
                    progress(name, epoch + 1, epochs)

        return Callback()


def _fit(model, data: Dataset, train: TrainSpec, epochs: int, callbacks: list, name: str,
         progress: ProgressFn | None) -> dict:
    if epochs <= 0:
        return {}
    hist = model.fit(data.x, data.y, batch_size=train.batch_size, epochs=epochs, verbose=0,
                     validation_split=train.validation_split, shuffle=True,
                     callbacks=[*callbacks, _EpochProgress(name, epochs, progress)])
    return {k: [float(v) for v in vals] for k, vals in hist.history.items()}


def _clone_wrapping(model, supports, wrap):
    """Clone ``model`` wrapping the layers ``supports`` accepts; list those with weights it refuses."""
    keras = _tf.keras()
    wrapped, skipped = [], []

    def clone_fn(layer):
        if layer.weights and supports(layer):
            wrapped.append(layer.name)
            return wrap(layer)
        if layer.trainable_weights and not _has_no_kernel(layer):
            skipped.append({"layer": layer.name, "type": type(layer).__name__,
                            "reason": "not supported by TF-MOT; left as it was"})
        return layer.__class__.from_config(layer.get_config())

    if not isinstance(model, keras.Model) or (not isinstance(model, keras.Sequential)
                                              and not getattr(model, "_is_graph_network", False)):
        raise UnsupportedModelError("prune/cluster need a Sequential or functional model (this one is "
                                    "subclassed)")
    try:
        clone = keras.models.clone_model(model, clone_function=clone_fn)
    except (ValueError, TypeError) as e:
        raise UnsupportedModelError(f"TF-MOT could not wrap this model: {str(e).splitlines()[0][:200]}") from e
    # clone_model re-initialises: copy weights of layers that were not wrapped
    for layer in clone.layers:
        if layer.name not in wrapped:
            try:
                src = model.get_layer(layer.name)
            except ValueError:
                continue
            if src.weights:
                layer.set_weights(src.get_weights())
    return clone, wrapped, skipped


# --- stages -----------------------------------------------------------------------------------

def prune(model, data: Dataset, spec: PruneSpec, train: TrainSpec,
          progress: ProgressFn | None = None) -> tuple[Any, StageReport]:
    tfmot = _tf.tfmot()
    t0 = time.perf_counter()
    steps_per_epoch = math.ceil(len(data) * (1 - train.validation_split) / train.batch_size)
    total = max(1, steps_per_epoch * spec.epochs)
    begin = int(total * spec.begin_fraction)
    end = max(begin + 1, int(total * spec.end_fraction))
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=spec.target_sparsity, begin_step=begin, end_step=end,
        frequency=max(1, (end - begin) // 10))
    from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry

    def supports(layer):  # only layers that have weights TF-MOT would prune
        if isinstance(layer, tfmot.sparsity.keras.PrunableLayer):
            return bool(layer.get_prunable_weights())
        return bool(prune_registry.PruneRegistry._LAYERS_WEIGHTS_MAP.get(layer.__class__))

    def wrap(layer):
        return tfmot.sparsity.keras.prune_low_magnitude(_fresh_copy(layer), pruning_schedule=schedule)

    pruned, wrapped, skipped = _clone_wrapping(model, supports, wrap)
    if not wrapped:
        raise UnsupportedModelError("no layer of this model can be pruned by TF-MOT")
    compile_for(pruned, data, train.learning_rate)
    hist = _fit(pruned, data, train, spec.epochs, [tfmot.sparsity.keras.UpdatePruningStep()],
                "prune: fine-tuning", progress)
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    rep = StageReport("prune", {"target_sparsity": spec.target_sparsity, "epochs": spec.epochs,
                                "schedule": f"PolynomialDecay 0 -> {spec.target_sparsity} over steps "
                                            f"{begin}..{end}"},
                      duration_s=time.perf_counter() - t0, epochs=spec.epochs, wrapped_layers=wrapped,
                      skipped_layers=skipped, history=hist)
    return stripped, rep


def cluster(model, data: Dataset, spec: ClusterSpec, train: TrainSpec, *, preserve_sparsity: bool,
            progress: ProgressFn | None = None) -> tuple[Any, StageReport]:
    tfmot = _tf.tfmot()
    t0 = time.perf_counter()
    C = tfmot.clustering.keras
    from tensorflow_model_optimization.python.core.clustering.keras import clustering_registry

    def supports(layer):  # only layers that have weights TF-MOT would cluster
        if isinstance(layer, C.ClusterableLayer):
            return bool(layer.get_clusterable_weights())
        return bool(clustering_registry.ClusteringRegistry._LAYERS_WEIGHTS_MAP.get(layer.__class__))

    params = {"number_of_clusters": spec.clusters,
              "cluster_centroids_init": C.CentroidInitialization.KMEANS_PLUS_PLUS}
    if preserve_sparsity:
        params["preserve_sparsity"] = True

    def wrap(layer):  # k-means++ reads the trained weights, so the copy must carry them
        return C.cluster_weights(_fresh_copy(layer), **params)

    clustered, wrapped, skipped = _clone_wrapping(model, supports, wrap)
    if not wrapped:
        raise UnsupportedModelError("no layer of this model can be clustered by TF-MOT")
    compile_for(clustered, data, train.learning_rate)
    hist = _fit(clustered, data, train, spec.epochs, [], "cluster: fine-tuning", progress)
    stripped = C.strip_clustering(clustered)
    rep = StageReport("cluster", {"clusters": spec.clusters, "epochs": spec.epochs, "init": "kmeans++",
                                  "preserve_sparsity": preserve_sparsity},
                      duration_s=time.perf_counter() - t0, epochs=spec.epochs, wrapped_layers=wrapped,
                      skipped_layers=skipped, history=hist)
    return stripped, rep


def qat(model, data: Dataset, spec: QatSpec, train: TrainSpec, *, pruned: bool, clustered: bool,
        progress: ProgressFn | None = None) -> tuple[Any, StageReport]:
    tfmot = _tf.tfmot()
    t0 = time.perf_counter()
    Q = tfmot.quantization.keras
    combine = tfmot.experimental.combine
    if clustered:
        scheme = combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=pruned)
        scheme_name = "cluster-preserving QAT" + (" (sparsity too)" if pruned else "")
    elif pruned:
        scheme = combine.Default8BitPrunePreserveQuantizeScheme()
        scheme_name = "prune-preserving QAT"
    else:
        scheme = None
        scheme_name = "default 8-bit QAT"
    try:
        annotated = Q.quantize_annotate_model(model)
        q_model = Q.quantize_apply(annotated, scheme) if scheme is not None else Q.quantize_apply(annotated)
    except (ValueError, RuntimeError, TypeError, KeyError) as e:
        raise UnsupportedModelError(f"quantization-aware training cannot wrap this model: "
                                    f"{str(e).splitlines()[0][:200]}",
                                    hint="use post-training int8 quantization (drop --qat)") from e
    compile_for(q_model, data, train.learning_rate / 5)
    hist = _fit(q_model, data, train, spec.epochs, [], "qat: fine-tuning", progress)
    rep = StageReport("qat", {"epochs": spec.epochs, "scheme": scheme_name},
                      duration_s=time.perf_counter() - t0, epochs=spec.epochs, history=hist,
                      scheme=scheme_name)
    return q_model, rep


def _has_no_kernel(layer) -> bool:
    """Normalization layers: their few weights are never pruned or clustered; nothing to report."""
    return type(layer).__name__ in ("BatchNormalization", "LayerNormalization")


def _fresh_copy(layer):
    """A new layer with the same config and the trained weights (clone_model would re-initialise)."""
    fresh = layer.__class__.from_config(layer.get_config())
    fresh.build(layer.input_shape)
    fresh.set_weights(layer.get_weights())
    return fresh


# --- facts about a tf_keras model ------------------------------------------------------------

def weight_stats(model) -> list[dict]:
    """Per layer with a kernel: parameter count, sparsity and distinct values of the kernel."""
    rows = []
    for layer in model.layers:
        kernels = [w for w in layer.weights if "kernel" in w.name or "embeddings" in w.name]
        if not kernels:
            continue
        k = kernels[0].numpy()
        rows.append({"layer": layer.name, "type": type(layer).__name__, "params": int(k.size),
                     "sparsity": float(np.mean(k == 0)), "unique_values": int(len(np.unique(k)))})
    return rows
