"""Recipes: what to do to a model, as YAML parsed into dataclasses with strict checks.

CLI flags build the same Recipe (``Recipe.from_flags``), so a flag run and a recipe run are one code
path. Unknown keys, wrong types and out-of-range values raise RecipeError naming the key.
"""
from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from edgekit.errors import RecipeError

EXAMPLE_RECIPE = """\
# edgekit recipe: every section is optional; a missing section skips that stage.
seed: 0
train:                  # fine-tuning settings shared by prune / cluster / qat
  batch_size: 32
  learning_rate: 0.0005
  validation_split: 0.1
prune_channels:         # structured: remove whole filters / units (smaller model, fewer MACs, smaller arena)
  fraction: 0.5         # of each prunable layer's output channels, in (0, 1)
  scope: layer          # layer (that fraction of every layer) | global (ranked across layers)
  epochs: 4
prune:
  target_sparsity: 0.75 # fraction of weights set to zero, in (0, 1)
  epochs: 4
cluster:
  clusters: 16          # weights per layer take at most this many distinct values (>= 2)
  epochs: 3
qat:
  epochs: 2             # quantization-aware training; keeps sparsity/clusters when they were made
quantize:
  mode: int8            # int8 | float16 | dynamic | none
  io: int8              # int8 | float (input/output tensor type of an int8 model)
  calibration_samples: 300
  dense_auto: true      # with eval data: per-tensor dense weights where they cost <= 0.1 point
compress:
  method: lut           # TFLM look-up-table compression of clustered weights
  index_bits: 4         # 1..7; tensors with more distinct values per channel stay uncompressed
strip: true             # drop what TFLM never reads (tensor names, signatures, metadata)
"""  # parsed by this module's own test


@dataclass
class TrainSpec:
    batch_size: int = 32
    learning_rate: float = 5e-4
    validation_split: float = 0.0

    def check(self) -> None:
        _require(self.batch_size >= 1, "train.batch_size", "must be at least 1")
        _require(self.learning_rate > 0, "train.learning_rate", "must be positive")
        _require(0 <= self.validation_split < 1, "train.validation_split", "must be in [0, 1)")


@dataclass
class PruneSpec:
    target_sparsity: float = 0.5
    epochs: int = 4
    begin_fraction: float = 0.0     # where in fine-tuning the schedule starts ramping
    end_fraction: float = 0.7       # where it reaches the target (the rest recovers accuracy)

    def check(self) -> None:
        _require(0 < self.target_sparsity < 1, "prune.target_sparsity",
                 f"must be in (0, 1), got {self.target_sparsity}")
        _require(self.epochs >= 1, "prune.epochs", "must be at least 1")
        _require(0 <= self.begin_fraction < self.end_fraction <= 1, "prune.begin_fraction/end_fraction",
                 "need 0 <= begin_fraction < end_fraction <= 1")


CHANNEL_CRITERIA = ("l1",)
CHANNEL_SCOPES = ("layer", "global")


@dataclass
class ChannelPruneSpec:
    """Structured pruning (edgekit.optimize.channels): remove whole output channels."""

    fraction: float = 0.5
    criterion: str = "l1"           # L1 norm of each channel's weights (BatchNorm folded in)
    scope: str = "layer"            # layer: floor(fraction x channels) per layer | global: across layers
    min_channels: int = 1           # every shrunk layer keeps at least this many
    epochs: int = 4                 # fine-tuning after the rebuild

    def check(self) -> None:
        _require(0 < self.fraction < 1, "prune_channels.fraction", f"must be in (0, 1), got {self.fraction}")
        _require(self.criterion in CHANNEL_CRITERIA, "prune_channels.criterion",
                 f"must be one of {', '.join(CHANNEL_CRITERIA)}")
        _require(self.scope in CHANNEL_SCOPES, "prune_channels.scope", f"must be one of {', '.join(CHANNEL_SCOPES)}")
        _require(self.min_channels >= 1, "prune_channels.min_channels", "must be at least 1")
        _require(self.epochs >= 0, "prune_channels.epochs", "must be 0 or more")


@dataclass
class ClusterSpec:
    clusters: int = 16
    epochs: int = 3

    def check(self) -> None:
        _require(self.clusters >= 2, "cluster.clusters", f"must be at least 2, got {self.clusters}")
        _require(self.clusters <= 256, "cluster.clusters", "must be at most 256 (int8 has 256 values)")
        _require(self.epochs >= 0, "cluster.epochs", "must be 0 or more")


@dataclass
class QatSpec:
    epochs: int = 2

    def check(self) -> None:
        _require(self.epochs >= 1, "qat.epochs", "must be at least 1")


QUANT_MODES = ("int8", "float16", "dynamic", "none")
IO_TYPES = ("int8", "float")


@dataclass
class QuantizeSpec:
    mode: str = "int8"
    io: str = "int8"
    calibration_samples: int = 300
    # one weight scale per FULLY_CONNECTED tensor instead of one per output channel (the TF
    # converter's default); what TFLM runtimes without per-channel dense kernels need
    dense_per_tensor: bool = False
    # with eval data and dense_per_tensor false: per-tensor dense weights are kept where they cost at most
    # 0.1 accuracy point against per-channel on host TFLM (smaller model and arena; doctor.choose_dense)
    dense_auto: bool = True

    def check(self) -> None:
        _require(self.mode in QUANT_MODES, "quantize.mode", f"must be one of {', '.join(QUANT_MODES)}")
        _require(self.io in IO_TYPES, "quantize.io", f"must be one of {', '.join(IO_TYPES)}")
        _require(self.calibration_samples >= 1, "quantize.calibration_samples", "must be at least 1")


@dataclass
class CompressSpec:
    method: str = "lut"
    index_bits: int = 4
    min_tensor_bytes: int = 256     # smaller tensors gain nothing after the lookup-table overhead
    # auto: every tensor gets the fewest index bits its values need (up to index_bits) and is kept
    # compressed only where its encoded indices + value table + DECODE op are smaller than before
    auto: bool = False
    # auto under a RAM budget: decoded weights live in the tensor arena (the firmware sets up no
    # alternate decompression buffer), so tensors are kept plain, worst arena cost per flash byte saved
    # first, until the exact arena is at most this (None: no budget; `convert --board` uses the board's)
    max_arena_bytes: Optional[int] = None

    def check(self) -> None:
        _require(self.method == "lut", "compress.method", "only 'lut' is supported")
        _require(self.max_arena_bytes is None or self.max_arena_bytes > 0, "compress.max_arena_bytes",
                 f"must be a positive number of bytes, got {self.max_arena_bytes}")
        _require(1 <= self.index_bits <= 7, "compress.index_bits", f"must be 1..7, got {self.index_bits}")
        _require(self.min_tensor_bytes >= 0, "compress.min_tensor_bytes", "must be 0 or more")


@dataclass
class Recipe:
    seed: int = 0
    train: TrainSpec = field(default_factory=TrainSpec)
    prune_channels: Optional[ChannelPruneSpec] = None
    prune: Optional[PruneSpec] = None
    cluster: Optional[ClusterSpec] = None
    qat: Optional[QatSpec] = None
    quantize: QuantizeSpec = field(default_factory=QuantizeSpec)
    compress: Optional[CompressSpec] = None
    strip: bool = True

    def check(self) -> "Recipe":
        for part in (self.train, self.prune_channels, self.prune, self.cluster, self.qat, self.quantize, self.compress):
            if part is not None:
                part.check()
        if self.qat is not None and self.quantize.mode != "int8":
            raise RecipeError("qat needs quantize.mode int8",
                              hint="drop qat or set quantize.mode: int8")
        if self.compress is not None and self.quantize.mode != "int8":
            raise RecipeError("compress (TFLM LUT) needs an int8 model",
                              hint="set quantize.mode: int8")
        return self

    @property
    def trains(self) -> bool:
        return any(s is not None for s in (self.prune_channels, self.prune, self.cluster, self.qat))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        parts = []
        if self.prune_channels:
            parts.append(f"prune-channels {self.prune_channels.fraction:g}"
                         + (" global" if self.prune_channels.scope == "global" else ""))
        if self.prune:
            parts.append(f"prune {self.prune.target_sparsity:g}")
        if self.cluster:
            parts.append(f"cluster {self.cluster.clusters}")
        if self.qat:
            parts.append("qat")
        parts.append(self.quantize.mode)
        if self.compress:
            parts.append("lut-auto" if self.compress.auto else f"lut{self.compress.index_bits}")
        return " + ".join(parts)

    @classmethod
    def from_dict(cls, raw: Any, source: str = "recipe") -> "Recipe":
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise RecipeError(f"{source}: the top level must be a mapping of sections")
        return _build(cls, raw, "").check()

    @classmethod
    def from_flags(cls, *, prune: float | None = None, cluster: int | None = None, qat: bool = False,
                   quantize: str = "int8", float_io: bool = False, compress: str | None = None,
                   epochs: int | None = None, batch_size: int = 32, learning_rate: float | None = None,
                   calibration_samples: int = 300, seed: int = 0, strip: bool = True,
                   dense_per_tensor: bool = False, dense_auto: bool = True,
                   prune_channels: float | None = None) -> "Recipe":
        r = cls(seed=seed, strip=strip)
        r.train = TrainSpec(batch_size=batch_size, learning_rate=learning_rate or TrainSpec.learning_rate)
        if prune_channels is not None and prune_channels != 0:
            r.prune_channels = ChannelPruneSpec(fraction=prune_channels, **({"epochs": epochs} if epochs else {}))
        if prune is not None and prune != 0:
            r.prune = PruneSpec(target_sparsity=prune, **({"epochs": epochs} if epochs else {}))
        if cluster is not None and cluster != 0:
            r.cluster = ClusterSpec(clusters=cluster, **({"epochs": epochs} if epochs else {}))
        if qat:
            r.qat = QatSpec(**({"epochs": epochs} if epochs else {}))
        r.quantize = QuantizeSpec(mode=quantize, io="float" if float_io else "int8",
                                  calibration_samples=calibration_samples, dense_per_tensor=dense_per_tensor,
                                  dense_auto=dense_auto)
        if compress:
            r.compress = parse_compress_flag(compress)
        return r.check()


def recipe_for_runtime(recipe: Recipe, facts, board_id: str) -> tuple[Recipe, list[str]]:
    """``recipe`` adjusted to what a board's TFLM runtime runs correctly (``facts``: RuntimeFacts).

    Returns the recipe and the notes saying what was changed. A runtime without per-channel
    FULLY_CONNECTED gets per-tensor dense weights; LUT compression on a runtime without DECODE is
    refused (a RecipeError naming the way out).
    """
    import copy

    if facts is None:
        return recipe, []
    out = copy.deepcopy(recipe)
    notes = []
    if out.compress is not None and not facts.decode:
        raise RecipeError(f"--compress makes a LUT-compressed model, and {board_id}'s TFLM ({facts.label}) has no "
                          "DECODE kernel to run it", hint="drop --compress, or build the firmware from a tflite-micro "
                          "tree that has DECODE (--tflm-src)")
    if out.quantize.mode == "int8" and not facts.per_channel_fully_connected and not out.quantize.dense_per_tensor:
        out.quantize.dense_per_tensor = True
        notes.append(f"dense layers quantized per tensor: {board_id}'s TFLM ({facts.label}) uses one weight scale "
                     "per FULLY_CONNECTED")
    return out.check(), notes


def parse_compress_flag(text: str) -> CompressSpec:
    """'lut4' -> CompressSpec(index_bits=4); 'lut' -> 4 bits; 'auto' -> per tensor, only where it pays."""
    t = text.strip().lower()
    if t in ("auto", "lut-auto", "lutauto"):
        return CompressSpec(index_bits=7, min_tensor_bytes=0, auto=True)
    if not t.startswith("lut"):
        raise RecipeError(f"unknown compression '{text}'", hint="use auto, or lutN with N = 1..7, e.g. lut4")
    bits = t[3:]
    try:
        spec = CompressSpec(index_bits=int(bits) if bits else 4)
    except ValueError as e:
        raise RecipeError(f"unknown compression '{text}'", hint="use auto, or lutN with N = 1..7, e.g. lut4") from e
    spec.check()
    return spec


def load_recipe(path: str | Path) -> Recipe:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"recipe file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise RecipeError(f"{p.name} is not valid YAML: {str(e).splitlines()[0]}") from e
    return Recipe.from_dict(raw, source=p.name)


# --- strict dataclass building ---------------------------------------------------------------

_SECTIONS = {"train": TrainSpec, "prune_channels": ChannelPruneSpec, "prune": PruneSpec, "cluster": ClusterSpec, "qat": QatSpec,
             "quantize": QuantizeSpec, "compress": CompressSpec}


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise RecipeError(f"recipe key '{key}' {message}")


def _build(cls, raw: dict, prefix: str):
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f"did you mean '{prefix}{close[0]}'?" if close else f"known keys: {', '.join(known)}"
            raise RecipeError(f"unknown recipe key '{dotted}'", hint=hint)
        if prefix == "" and key in _SECTIONS:
            if value is None:
                value = {}
            if value is False:
                kwargs[key] = None if key not in ("train", "quantize") else _SECTIONS[key]()
                continue
            if not isinstance(value, dict):
                raise RecipeError(f"recipe section '{dotted}' must be a mapping, got {value!r}")
            kwargs[key] = _build(_SECTIONS[key], value, f"{dotted}.")
            continue
        kwargs[key] = _coerce(value, known[key], dotted)
    return cls(**kwargs)


def _coerce(value: Any, f, dotted: str):
    default = f.default if f.default is not f.default_factory else None  # noqa: PLR1714
    typ = type(default) if default is not None else None
    if typ is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"recipe key '{dotted}' must be true or false, got {value!r}")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"recipe key '{dotted}' must be an integer, got {value!r}")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"recipe key '{dotted}' must be a number, got {value!r}")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise RecipeError(f"recipe key '{dotted}' must be a string, got {value!r}")
        return value
    return value
