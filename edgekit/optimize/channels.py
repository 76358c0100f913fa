"""Structured (channel) pruning: remove whole filters / units, so the model itself gets smaller.

Unstructured pruning (``--prune``) sets weights to zero; TFLM runs dense kernels, so the zeros are
stored and multiplied all the same. Channel pruning removes whole output channels of Conv2D, Conv1D
and Dense layers and rebuilds a smaller tf_keras model: fewer parameters, MACs, model bytes and arena
on every runtime.

What is removed
    Criterion ``l1``: the L1 norm of each output channel's weights as the converted model holds them
    (a BatchNormalization right after the layer is folded in: the norm is multiplied by
    ``|gamma| / sqrt(moving_variance + epsilon)``). ``scope: layer`` removes floor(fraction x channels)
    of each prunable layer's channels; ``scope: global`` ranks the channels of all prunable layers
    together (each norm divided by its layer's mean norm, so layers of different scales compare) and
    removes floor(fraction x all their channels). Each layer keeps at least ``min_channels``.

What follows a removed channel
    The layers after it shrink with it: BatchNormalization (its four vectors), DepthwiseConv2D (its
    channels follow its producer, times the depth multiplier), PReLU, pass-through layers (activations,
    pooling, padding, dropout, global pooling), Flatten (every position's copy of the channel goes) and
    the input rows of the next Conv2D / Conv1D / Dense.

What cannot be shrunk (listed, left as they are)
    A layer whose output is a model output, or reaches one through pass-through layers; a layer whose
    output meets a join (Add, Concatenate, Multiply, ...: residual joins are not handled), or any layer
    edgekit cannot follow (Reshape, attention, recurrent and custom layers, nested models); grouped
    convolutions, channels-first layouts, a softmax over the channels; shared layers.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from edgekit import _tf
from edgekit.conversion.data import Dataset
from edgekit.errors import UnsupportedModelError, UsageError
from edgekit.optimize.recipe import ChannelPruneSpec, TrainSpec
from edgekit.progress import ProgressFn

# layers whose output channels can be removed (kernel [..., in, out], bias [out])
PRODUCERS = ("Conv2D", "Conv1D", "Dense")
# layers that keep the channel axis and shrink with their input (weights sliced where they have any)
PASS_THROUGH = ("ReLU", "Activation", "LeakyReLU", "ELU", "ThresholdedReLU", "Dropout", "SpatialDropout1D",
                "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization",
                "MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D", "GlobalAveragePooling1D",
                "GlobalAveragePooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "ZeroPadding1D",
                "ZeroPadding2D", "Cropping1D", "Cropping2D", "UpSampling1D", "UpSampling2D", "Identity")
CHANNEL_WISE = ("BatchNormalization", "DepthwiseConv2D", "PReLU")
JOINS = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate", "Dot")


@dataclass
class ChannelPruneReport:
    settings: dict
    layers: list[dict]                  # per shrunk or shrinkable layer: channels before / after
    unprunable: list[dict]              # layers with output channels that stay, and why
    params_before: int
    params_after: int
    macs_before: int                    # Keras layers, counted from their shapes (per sample)
    macs_after: int
    duration_s: float = 0.0
    history: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


# --- the layer graph ----------------------------------------------------------------------------

@dataclass
class _Node:
    layer: Any
    kind: str                           # producer | channel | pass | flatten | input | other
    inputs: list[str]                   # names of the layers whose output 0 this layer reads
    consumers: list[str] = field(default_factory=list)
    is_output: bool = False
    blocker: Optional[str] = None       # why a masked input cannot reach this layer


def _kind(layer) -> tuple[str, Optional[str]]:
    name = type(layer).__name__
    cfg = layer.get_config() if hasattr(layer, "get_config") else {}
    if cfg.get("data_format", "channels_last") != "channels_last":
        return "other", "channels-first layout"
    if name in PRODUCERS:
        if int(cfg.get("groups", 1) or 1) != 1:
            return "other", "grouped convolution"
        return "producer", None
    if name == "Activation" and cfg.get("activation") == "softmax":
        return "other", "softmax over the channels couples them"
    if name == "BatchNormalization":
        shape = _shape(layer, "input_shape")
        rank = len(shape) if shape else 0
        axis = cfg.get("axis")
        axes = axis if isinstance(axis, (list, tuple)) else [axis]
        if len(axes) != 1 or int(axes[0]) not in (-1, rank - 1):
            return "other", "normalizes another axis than the channels"
        return "channel", None
    if name in CHANNEL_WISE:
        return "channel", None
    if name in PASS_THROUGH:
        return "pass", None
    if name == "Flatten":
        return "flatten", None
    if name == "InputLayer":
        return "input", None
    if name in JOINS:
        return "other", f"joins branches ({name}); residual and concatenation joins are not handled"
    return "other", f"{name} layers are not followed by channel pruning"


def _shape(layer, which: str) -> Optional[tuple]:
    """A layer's input_shape / output_shape, or None (shared layers with several shapes, nested lists)."""
    try:
        shape = getattr(layer, which)
    except (AttributeError, RuntimeError):
        return None
    return shape if isinstance(shape, tuple) else None


def _graph(model) -> tuple[dict[str, _Node], list[str]]:
    """The layers of a Sequential / functional tf_keras model in topological order."""
    keras = _tf.keras()
    if not isinstance(model, keras.Model) or not getattr(model, "_is_graph_network", False):
        raise UnsupportedModelError("channel pruning needs a Sequential or functional model with a known input "
                                    "shape (this one is subclassed or not built)",
                                    hint="give a Sequential model an Input layer, or use a functional model")
    network_nodes = getattr(model, "_network_nodes", set())
    nodes: dict[str, _Node] = {}
    for layer in model.layers:
        own = [n for i, n in enumerate(layer._inbound_nodes) if f"{layer.name}_ib-{i}" in network_nodes]
        kind, why = _kind(layer)
        inputs: list[str] = []
        if len(own) != 1:
            kind, why = "other", f"shared layer ({len(own)} calls)"
        else:
            for src, _node_index, tensor_index, _t in own[0].iterate_inbound():
                if tensor_index != 0:
                    kind, why = "other", "reads a second output of a layer"
                inputs.append(src.name)
        if kind in ("producer", "channel", "pass", "flatten") and len(inputs) != 1:
            kind, why = "other", f"{len(inputs)} inputs"
        nodes[layer.name] = _Node(layer, kind, inputs, blocker=why)
    for name, node in nodes.items():
        for src in node.inputs:
            if src in nodes:
                nodes[src].consumers.append(name)
    for t in model.outputs:
        nodes[t._keras_history.layer.name].is_output = True
    order: list[str] = []
    done: set[str] = set()
    pending = list(nodes)
    while pending:                   # Kahn's order; sources outside the layer list are model inputs
        progressed = False
        for name in list(pending):
            if all(s in done or s not in nodes for s in nodes[name].inputs):
                order.append(name)
                done.add(name)
                pending.remove(name)
                progressed = True
        if not progressed:
            raise UnsupportedModelError("channel pruning: the layer graph has a cycle")
    return nodes, order


def _absorbed(nodes: dict[str, _Node], name: str) -> Optional[str]:
    """None when every path from ``name``'s output can drop channels; else why not (names the layer)."""
    node = nodes[name]
    if node.is_output:
        return "its output is a model output" if node.kind == "producer" else \
            f"its channels reach the model output through {name} ({type(node.layer).__name__})"
    for c in node.consumers:
        cn = nodes[c]
        label = f"{c} ({type(cn.layer).__name__})"
        if cn.kind == "producer":
            continue
        if cn.kind in ("channel", "pass", "flatten"):
            why = _absorbed(nodes, c)
            if why:
                return why
            continue
        return f"its output reaches {label}: {cn.blocker or 'not followed'}"
    return None


# --- the criterion ------------------------------------------------------------------------------

def _channel_norms(nodes: dict[str, _Node], name: str) -> np.ndarray:
    """L1 norm of each output channel's weights, BatchNormalization (if next) folded in."""
    layer = nodes[name].layer
    kernel = np.asarray(layer.get_weights()[0], dtype=np.float64)
    norms = np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)
    consumers = nodes[name].consumers
    if len(consumers) == 1 and type(nodes[consumers[0]].layer).__name__ == "BatchNormalization":
        bn = nodes[consumers[0]].layer
        gamma = np.asarray(bn.gamma.numpy() if bn.scale else np.ones_like(norms), dtype=np.float64)
        var = np.asarray(bn.moving_variance.numpy(), dtype=np.float64)
        norms = norms * np.abs(gamma) / np.sqrt(var + bn.epsilon)
    return norms


def _keep_sets(nodes, candidates: list[str], spec: ChannelPruneSpec) -> dict[str, np.ndarray]:
    """Sorted indices of the output channels each candidate keeps."""
    norms = {n: _channel_norms(nodes, n) for n in candidates}
    keep: dict[str, np.ndarray] = {}
    if spec.scope == "layer":
        for n, v in norms.items():
            drop = min(int(math.floor(spec.fraction * len(v) + 1e-9)), len(v) - spec.min_channels)
            order = np.argsort(v, kind="stable")            # weakest first
            keep[n] = np.sort(order[max(drop, 0):])
        return keep
    # global: every norm relative to its layer's mean norm, ranked across layers
    ranked = []
    for n, v in norms.items():
        mean = float(v.mean()) or 1.0
        ranked.extend((float(s) / mean, n, j) for j, s in enumerate(v))
    ranked.sort(key=lambda r: (r[0], r[1], r[2]))
    target = int(math.floor(spec.fraction * len(ranked) + 1e-9))
    left = {n: len(v) for n, v in norms.items()}
    dropped: dict[str, set[int]] = {n: set() for n in norms}
    count = 0
    for _score, n, j in ranked:
        if count >= target:
            break
        if left[n] > spec.min_channels:
            dropped[n].add(j)
            left[n] -= 1
            count += 1
    for n, v in norms.items():
        keep[n] = np.array([j for j in range(len(v)) if j not in dropped[n]], dtype=np.int64)
    return keep


# --- planning ------------------------------------------------------------------------------------

def plan(model, spec: ChannelPruneSpec) -> tuple[dict[str, np.ndarray], list[dict], list[dict]]:
    """(channels each shrinkable layer keeps, rows per shrinkable layer, rows per unprunable layer).

    Raises UnsupportedModelError when no layer can lose channels, and UsageError when the fraction
    removes none from any layer. Reads the model only.
    """
    nodes, order = _graph(model)
    candidates, unprunable = [], []
    for name in order:
        node = nodes[name]
        if node.kind != "producer":
            if node.kind == "other" and node.layer.weights and node.blocker:
                unprunable.append({"layer": name, "type": type(node.layer).__name__, "reason": node.blocker})
            continue
        why = _absorbed(nodes, name)
        if why is None and _output_channels(node.layer) <= spec.min_channels:
            why = f"has {_output_channels(node.layer)} channel(s), min_channels is {spec.min_channels}"
        if why is None and getattr(getattr(node.layer, "activation", None), "__name__", "") == "softmax":
            why = "softmax over the channels couples them"
        if why:
            unprunable.append({"layer": name, "type": type(node.layer).__name__, "reason": why})
        else:
            candidates.append(name)
    if not candidates:
        listed = "; ".join(f"{u['layer']} ({u['type']}): {u['reason']}" for u in unprunable) or \
            "it has no Conv2D, Conv1D or Dense layer"
        raise UnsupportedModelError(f"no layer of this model can lose channels: {listed}",
                                    hint="channel pruning removes output channels of Conv2D / Conv1D / Dense "
                                         "layers whose outputs feed other such layers; drop --prune-channels "
                                         "(--prune zeroes weights instead)")
    keep = _keep_sets(nodes, candidates, spec)
    rows = [{"layer": n, "type": type(nodes[n].layer).__name__, "channels_before": _output_channels(nodes[n].layer),
             "channels_after": int(len(keep[n]))} for n in candidates]
    if all(r["channels_after"] == r["channels_before"] for r in rows):
        sizes = ", ".join(str(r["channels_before"]) for r in rows)
        raise UsageError(f"channel fraction {spec.fraction:g} removes no channel: the prunable layers have "
                         f"{sizes} channels", hint="raise the fraction (floor(fraction x channels) go per layer)")
    return keep, rows, unprunable


def _output_channels(layer) -> int:
    return int(layer.get_weights()[0].shape[-1])


# --- rebuilding ----------------------------------------------------------------------------------

def _slice_weights(layer, kind: str, in_mask: Optional[np.ndarray], keep: Optional[np.ndarray],
                   in_channels: int) -> tuple[list[np.ndarray], Optional[np.ndarray]]:
    """(new weights, output mask) of one layer given its input mask and, for producers, what it keeps."""
    weights = [np.asarray(w) for w in layer.get_weights()]
    name = type(layer).__name__
    if kind == "producer":
        if in_mask is not None:
            weights[0] = np.take(weights[0], in_mask, axis=-2)
        if keep is not None:
            weights[0] = weights[0][..., keep]
            if len(weights) > 1:
                weights[1] = weights[1][keep]
        return weights, keep
    if kind == "flatten":
        if in_mask is None:
            return weights, None
        positions = int(np.prod([d for d in layer.input_shape[1:-1]], dtype=np.int64))
        out = (np.arange(positions, dtype=np.int64)[:, None] * in_channels + in_mask[None, :]).reshape(-1)
        return weights, out
    if in_mask is None:
        return weights, None
    if name == "DepthwiseConv2D":
        m = int(layer.depth_multiplier)
        weights[0] = np.take(weights[0], in_mask, axis=2)
        out = (in_mask[:, None] * m + np.arange(m)[None, :]).reshape(-1)
        if len(weights) > 1:
            weights[1] = weights[1][out]
        return weights, out
    if name == "BatchNormalization":
        return [w[in_mask] for w in weights], in_mask
    if name == "PReLU":
        if weights and weights[0].shape[-1] == in_channels:
            weights[0] = weights[0][..., in_mask]
        return weights, in_mask
    return weights, in_mask          # pass-through layers have no weights


def rebuild(model, keep: dict[str, np.ndarray]):
    """A new tf_keras model with the kept channels of each producer in ``keep`` and every layer after
    it shrunk to match; weights are copied (sliced), nothing is re-initialised."""
    keras = _tf.keras()
    nodes, order = _graph(model)
    masks: dict[str, Optional[np.ndarray]] = {}
    channels: dict[str, int] = {}            # size of each layer's output last axis in the source model
    new_weights: dict[str, list[np.ndarray]] = {}
    for name in order:
        node = nodes[name]
        layer = node.layer
        out_shape = _shape(layer, "output_shape")
        channels[name] = int(out_shape[-1]) if out_shape and out_shape[-1] else 0
        if node.kind == "input":
            masks[name] = None
            continue
        src = node.inputs[0] if len(node.inputs) == 1 else None
        in_mask = masks.get(src) if src is not None else None
        if node.kind == "other":
            if any(masks.get(s) is not None for s in node.inputs):
                raise UnsupportedModelError(f"channel pruning reached {name} ({type(layer).__name__}) with "
                                            "removed channels")   # plan() rules this out
            masks[name] = None
            continue
        in_channels = channels.get(src, 0) if src is not None else 0
        new_weights[name], masks[name] = _slice_weights(layer, node.kind, in_mask, keep.get(name), in_channels)

    def clone_fn(layer):
        cfg = layer.get_config()
        if layer.name in keep:
            cfg["filters" if "filters" in cfg else "units"] = int(len(keep[layer.name]))
        return layer.__class__.from_config(cfg)

    try:
        small = keras.models.clone_model(model, clone_function=clone_fn)
    except (ValueError, TypeError) as e:
        raise UnsupportedModelError(f"channel pruning could not rebuild this model: "
                                    f"{str(e).splitlines()[0][:200]}") from e
    for layer in small.layers:
        src_layer = nodes[layer.name].layer if layer.name in nodes else None
        if src_layer is None or not src_layer.weights:
            continue
        layer.set_weights(new_weights.get(layer.name, src_layer.get_weights()))
    if [tuple(t.shape) for t in small.outputs] != [tuple(t.shape) for t in model.outputs]:
        raise UnsupportedModelError("channel pruning changed the model's output shape")  # plan() rules this out
    return small


# --- facts ----------------------------------------------------------------------------------------

def layer_macs(layer) -> int:
    """Multiply-accumulates of one Keras layer per sample, from its shapes (the formulas of
    edgekit.model.macs): Conv = output elements x kernel area x input channels / groups, Dense =
    output elements x input features, DepthwiseConv2D = output elements x kernel area."""
    name = type(layer).__name__
    out, inp = _shape(layer, "output_shape"), _shape(layer, "input_shape")
    if out is None or inp is None:
        return 0
    out_elems = int(np.prod([d or 1 for d in out[1:]], dtype=np.int64))
    if name in ("Conv2D", "Conv1D"):
        k = layer.get_weights()[0]
        return out_elems * int(np.prod(k.shape[:-1]))
    if name == "Dense":
        return out_elems * int(inp[-1])
    if name == "DepthwiseConv2D":
        k = layer.get_weights()[0]
        return out_elems * int(k.shape[0] * k.shape[1])
    return 0


def model_macs(model) -> int:
    return int(sum(layer_macs(layer) for layer in model.layers))


# --- the stage ------------------------------------------------------------------------------------

def prune_channels(model, data: Dataset, spec: ChannelPruneSpec, train: TrainSpec,
                   progress: ProgressFn | None = None) -> tuple[Any, ChannelPruneReport]:
    """Remove the weakest output channels, rebuild the smaller model, fine-tune it ``spec.epochs``."""
    from edgekit.optimize import tfmot_adapter as mot

    t0 = time.perf_counter()
    keep, rows, unprunable = plan(model, spec)
    small = rebuild(model, keep)
    history: dict = {}
    if spec.epochs > 0:
        mot.compile_for(small, data, train.learning_rate)
        history = mot._fit(small, data, train, spec.epochs, [], "prune channels: fine-tuning", progress)
    for r in rows:
        r["macs_before"] = layer_macs(model.get_layer(r["layer"]))
        r["macs_after"] = layer_macs(small.get_layer(r["layer"]))
    settings = {"fraction": spec.fraction, "criterion": spec.criterion, "scope": spec.scope,
                "min_channels": spec.min_channels, "epochs": spec.epochs}
    rep = ChannelPruneReport(settings=settings, layers=rows, unprunable=unprunable,
                             params_before=int(model.count_params()), params_after=int(small.count_params()),
                             macs_before=model_macs(model), macs_after=model_macs(small),
                             duration_s=time.perf_counter() - t0, history=history)
    return small, rep
