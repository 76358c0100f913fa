"""Loading Keras models for the shrink pipeline.

- ``.keras`` / ``.h5`` written by tf_keras (Keras 2) load directly with tf_keras.
- Keras 3 files (the default Keras of TensorFlow 2.21) cannot go through TF-MOT, which only knows
  tf_keras. Sequential and functional Keras 3 models made of standard layers are rebuilt as tf_keras
  models (layer configs + weights) and the rebuild is accepted only if its outputs equal the original's.
  A model that cannot be rebuilt is exported as a SavedModel and still gets post-training
  quantization; prune/cluster/QAT on it raise UnsupportedModelError naming the layer.
- SavedModel folders: a Keras SavedModel loads as tf_keras; any other SavedModel gets PTQ only.
- Lambda layers hold arbitrary Python code. Models with them are refused unless ``allow_lambda``.
"""
from __future__ import annotations

import json
import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgekit import _tf
from edgekit.errors import InputFileError, ModelFormatError, UnsupportedModelError

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"


@dataclass
class LoadedModel:
    keras: Any                              # a tf_keras model, or None (PTQ-only SavedModel)
    origin: str                             # tf_keras | keras3-rebuilt | keras3-savedmodel | savedmodel
    source: str
    saved_model_dir: Optional[str] = None   # for models only the converter can take
    blocker: Optional[str] = None           # why TF-MOT stages cannot run (names the layer)
    notes: list[str] = field(default_factory=list)
    _tmp: Any = None                        # keeps a temporary SavedModel folder alive

    @property
    def input_shape(self) -> tuple:
        if self.keras is not None:
            return tuple(self.keras.inputs[0].shape[1:])
        return self._sm_input_shape

    def require_keras(self, stage: str):
        if self.keras is None:
            raise UnsupportedModelError(f"{stage} needs a tf_keras model, but {self.blocker}",
                                        hint="only post-training quantization works on this model; "
                                             "drop --prune/--cluster/--qat")
        return self.keras


def sniff(path: Path) -> str:
    """What a path looks like: keras-zip, hdf5, tflite, savedmodel, folder, text, unknown."""
    if path.is_dir():
        return "savedmodel" if (path / "saved_model.pb").exists() else "folder"
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(HDF5_MAGIC):
        return "hdf5"
    if head.startswith(ZIP_MAGIC):
        return "keras-zip"
    if len(head) >= 8 and head[4:8] == b"TFL3":
        return "tflite"
    if not head:
        return "empty"
    try:
        head.decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return "unknown"


def _config_text(path: Path, kind: str) -> tuple[str, Optional[str]]:
    """(model config JSON text, keras major version) without deserializing anything."""
    if kind == "keras-zip":
        try:
            with zipfile.ZipFile(path) as z:
                cfg = z.read("config.json").decode("utf-8")
                meta = json.loads(z.read("metadata.json")) if "metadata.json" in z.namelist() else {}
        except (KeyError, zipfile.BadZipFile, ValueError) as e:
            raise ModelFormatError(f"{path.name} is a zip file but not a Keras model ({e})") from e
        return cfg, str(meta.get("keras_version", ""))[:1] or None
    if kind == "hdf5":
        import h5py

        try:
            with h5py.File(path, "r") as f:
                cfg = f.attrs.get("model_config")
                ver = f.attrs.get("keras_version")
        except OSError as e:
            raise ModelFormatError(f"{path.name} is not a readable HDF5 file ({e})") from e
        if cfg is None:
            raise ModelFormatError(f"{path.name} is an HDF5 file without a model config "
                                   "(weights only?)", hint="save the whole model: model.save('m.h5')")
        cfg = cfg.decode() if isinstance(cfg, bytes) else str(cfg)
        ver = ver.decode() if isinstance(ver, bytes) else (str(ver) if ver is not None else "")
        return cfg, ver[:1] or None
    if kind == "savedmodel":
        meta = path / "keras_metadata.pb"
        return (meta.read_bytes().decode("utf-8", "replace") if meta.exists() else ""), None
    return "", None


def _lambda_layers(config_text: str) -> list[str]:
    names = []
    try:
        cfg = json.loads(config_text)
    except ValueError:
        return ['(unnamed)'] if '"Lambda"' in config_text else []

    def walk(node):
        if isinstance(node, dict):
            if node.get("class_name") == "Lambda":
                names.append(str(node.get("config", {}).get("name", "(unnamed)")))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(cfg)
    return names


def load_model(path: str | Path, *, allow_lambda: bool = False) -> LoadedModel:
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"model not found: {p}")
    kind = sniff(p)
    if kind == "tflite":
        raise ModelFormatError(f"{p.name} is already a TFLite model; convert takes a Keras model "
                               "(.keras, .h5 or a SavedModel folder)",
                               hint="use `edgekit inspect` or `edgekit export` on .tflite files")
    if kind in ("folder", "empty", "text", "unknown"):
        what = {"folder": "a folder without saved_model.pb", "empty": "an empty file",
                "text": "a text file", "unknown": "not a model file"}[kind]
        raise ModelFormatError(f"{p} is {what}",
                               hint="give a .keras or .h5 file or a SavedModel folder")
    cfg_text, major = _config_text(p, kind)
    lambdas = _lambda_layers(cfg_text)
    if lambdas and not allow_lambda:
        raise UnsupportedModelError(
            f"{p.name} has Lambda layer(s) {', '.join(lambdas)}, which run arbitrary Python code when loaded",
            hint="load only models you trust; pass --unsafe-allow-lambda to accept them")
    if kind == "savedmodel":
        return _load_savedmodel(p, allow_lambda)
    if major == "3":
        return _load_keras3(p, allow_lambda)
    keras = _tf.keras()
    try:
        model = keras.models.load_model(p, compile=False, safe_mode=not allow_lambda) \
            if kind == "keras-zip" else keras.models.load_model(p, compile=False)
    except (ValueError, TypeError, OSError, KeyError) as e:
        if kind == "keras-zip" and major is None:
            return _load_keras3(p, allow_lambda)
        raise ModelFormatError(f"{p.name} could not be loaded as a tf_keras model: "
                               f"{str(e).splitlines()[0][:200]}") from e
    return LoadedModel(keras=model, origin="tf_keras", source=str(p))


def _load_savedmodel(p: Path, allow_lambda: bool) -> LoadedModel:
    keras = _tf.keras()
    if (p / "keras_metadata.pb").exists():
        try:
            model = keras.models.load_model(p, compile=False)
            return LoadedModel(keras=model, origin="tf_keras", source=str(p))
        except Exception as e:  # noqa: BLE001 - fall back to a plain SavedModel
            note = f"Keras SavedModel did not load as tf_keras ({type(e).__name__}); PTQ only"
    else:
        note = "plain SavedModel (no Keras metadata)"
    lm = LoadedModel(keras=None, origin="savedmodel", source=str(p), saved_model_dir=str(p),
                     blocker="it is a SavedModel without a loadable Keras model", notes=[note])
    lm._sm_input_shape = _savedmodel_input_shape(p)
    return lm


def _savedmodel_input_shape(p: Path) -> tuple:
    tf = _tf.tf()
    try:
        loaded = tf.saved_model.load(str(p))
        fn = loaded.signatures["serving_default"]
        specs = list(fn.structured_input_signature[1].values())
        return tuple(specs[0].shape[1:])
    except Exception as e:  # noqa: BLE001
        raise ModelFormatError(f"{p.name}: SavedModel has no usable serving_default signature ({e})") from e


# --- Keras 3 -> tf_keras ----------------------------------------------------------------------

def _load_keras3(p: Path, allow_lambda: bool) -> LoadedModel:
    try:
        import keras as keras3
    except ImportError as e:
        raise ModelFormatError(f"{p.name} was saved by Keras 3, which is not installed",
                               hint="pip install keras, or re-save the model with tf_keras") from e
    _tf.tf()
    try:
        k3 = keras3.saving.load_model(p, compile=False, safe_mode=not allow_lambda)
    except Exception as e:  # noqa: BLE001 - any load failure is a bad model file
        raise ModelFormatError(f"{p.name} could not be loaded by Keras 3: {str(e).splitlines()[0][:200]}") from e
    try:
        model, notes = rebuild_as_tf_keras(k3)
        return LoadedModel(keras=model, origin="keras3-rebuilt", source=str(p),
                           notes=["Keras 3 model rebuilt as tf_keras (outputs checked equal)", *notes])
    except UnsupportedModelError as e:
        tmp = tempfile.TemporaryDirectory(prefix="edgekit-k3-")
        try:
            k3.export(tmp.name, format="tf_saved_model", verbose=False)
        except Exception as e2:  # noqa: BLE001
            raise UnsupportedModelError(f"{p.name}: {e.message}; exporting it as a SavedModel also "
                                        f"failed ({str(e2).splitlines()[0][:160]})") from e2
        lm = LoadedModel(keras=None, origin="keras3-savedmodel", source=str(p), saved_model_dir=tmp.name,
                         blocker=e.message, notes=[f"{e.message}; using a SavedModel export (PTQ only)"])
        lm._tmp = tmp
        lm._sm_input_shape = tuple(k3.inputs[0].shape[1:])
        return lm


def _clean_config(cfg: dict) -> dict:
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict) and "class_name" in v and "module" in v:
            if v.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
                out[k] = v.get("config", {}).get("name", "float32")
                continue
            if k.endswith("_initializer"):
                continue  # weights are copied after; initializers do not matter
            out[k] = {"class_name": v["class_name"], "config": v.get("config", {})}
            continue
        out[k] = v
    return out


def _make_layer(keras, layer) -> tuple[Any, list[str]]:
    cls_name = type(layer).__name__
    cls = getattr(keras.layers, cls_name, None)
    if cls is None:
        raise UnsupportedModelError(f"layer '{layer.name}' ({cls_name}) has no tf_keras equivalent")
    cfg = _clean_config(layer.get_config())
    dropped = []
    for _ in range(12):
        try:
            return cls.from_config(cfg), dropped
        except (TypeError, ValueError, KeyError) as e:
            msg = str(e)
            bad = [k for k in re.findall(r"(?:unexpected keyword argument|argument not understood:',) '([^']+)'", msg) if k in cfg]
            if not bad:
                raise UnsupportedModelError(f"layer '{layer.name}' ({cls_name}) config not accepted by "
                                            f"tf_keras: {msg.splitlines()[-1][:160]}") from e
            for k in bad:
                dropped.append(f"{layer.name}.{k}")
                cfg.pop(k)
    raise UnsupportedModelError(f"layer '{layer.name}' ({cls_name}) could not be rebuilt")


def rebuild_as_tf_keras(k3) -> tuple[Any, list[str]]:
    """Rebuild a Keras 3 Sequential/functional model as tf_keras; outputs must match."""
    import keras as keras3

    keras = _tf.keras()
    if not isinstance(k3, keras3.Model) or not hasattr(k3, "inputs") or k3.inputs is None:
        raise UnsupportedModelError("the Keras 3 model is subclassed (no layer graph to rebuild)")
    graph = getattr(k3, "_functional", None) or k3   # Sequential keeps its graph here
    graph_nodes = getattr(graph, "_nodes", None)
    inputs = graph.inputs
    tensors: dict[str, Any] = {}
    new_inputs = []
    for t in inputs:
        src = t._keras_history.operation
        ti = keras.Input(shape=tuple(t.shape[1:]), dtype=t.dtype, name=src.name)
        tensors[src.name] = ti
        new_inputs.append(ti)
    notes: list[str] = []
    for layer in graph.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        nodes = [n for i, n in enumerate(layer._inbound_nodes)
                 if graph_nodes is None or f"{id(layer)}_ib-{i}" in graph_nodes]
        if len(nodes) != 1:
            raise UnsupportedModelError(f"layer '{layer.name}' is shared ({len(nodes)} calls)")
        in_t = nodes[0].input_tensors
        srcs = [x._keras_history.operation.name for x in keras3.tree.flatten(in_t)]
        if any(s not in tensors for s in srcs):
            raise UnsupportedModelError(f"layer '{layer.name}' has inputs the rebuild cannot follow")
        new_layer, dropped = _make_layer(keras, layer)
        notes.extend(f"dropped Keras 3 option {d}" for d in dropped)
        args = [tensors[s] for s in srcs]
        out = new_layer(args if len(args) > 1 or isinstance(in_t, (list, tuple)) and len(in_t) > 1
                        else args[0])
        tensors[layer.name] = out
        try:
            new_layer.set_weights(layer.get_weights())
        except ValueError as e:
            raise UnsupportedModelError(f"layer '{layer.name}': weights do not fit the tf_keras layer "
                                        f"({str(e)[:120]})") from e
    outs = [tensors[t._keras_history.operation.name] for t in graph.outputs]
    model = keras.Model(new_inputs, outs if len(outs) > 1 else outs[0], name=k3.name)
    rng = np.random.default_rng(0)
    probe = [rng.standard_normal((4, *[d or 1 for d in t.shape[1:]])).astype("float32") for t in inputs]
    want = k3.predict(probe if len(probe) > 1 else probe[0], verbose=0)
    got = model.predict(probe if len(probe) > 1 else probe[0], verbose=0)
    for w, g in zip(want if isinstance(want, list) else [want], got if isinstance(got, list) else [got]):
        w, g = np.asarray(w), np.asarray(g)
        if w.shape != g.shape or not np.allclose(w, g, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(w).max()))):
            raise UnsupportedModelError("the tf_keras rebuild of the Keras 3 model gives different outputs")
    return model, notes


def as_loaded(model, *, allow_lambda: bool = False) -> LoadedModel:
    """``model`` as a LoadedModel: one already, a path (loaded), or an in-memory tf_keras model."""
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, (str, Path)):
        return load_model(model, allow_lambda=allow_lambda)
    return LoadedModel(keras=model, origin="tf_keras", source="<in-memory model>")
