"""Find and describe TFLite-Micro source trees.

Two layouts exist in the wild, and both are what a user already has:

- ``arduino-library``: a TFLM library as ``arduino-cli lib install`` puts it in the sketchbook's
  ``libraries/`` folder (``library.properties`` + ``src/`` with ``tensorflow/`` and ``third_party/``
  inside; sources end in ``.cpp``). Such libraries guard code with ``ARDUINO``.
- ``tflite-micro``: a checkout of the tflite-micro repository after its third-party downloads
  (``tensorflow/``, ``signal/``, ``third_party/{flatbuffers,gemmlowp,ruy,cmsis_nn,...}``; ``.cc``).

Where edgekit looks (:func:`find_trees`): ``--tflm-src DIR`` (``explicit``), then
``$EDGEKIT_TFLM_SRC`` (one folder, or several separated by ``os.pathsep``), then the libraries that
arduino-cli reports as installed (``arduino-cli lib list --format json``), when it is on PATH.

What a tree can run is read from its own sources (:func:`describe_tree`): the ``Add...`` methods of
its ``MicroMutableOpResolver``, whether it has the DECODE kernel (LUT-compressed models), whether its
FULLY_CONNECTED handles per-channel weight scales, which ops have kernels for 16x8 models (int16
activations, int8 weights), the flatbuffers version it ships and the one its schema header demands,
and the defines and logging hook it needs.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from edgekit.errors import EdgekitError, InputFileError, ToolMissing
from edgekit.runners import seam

ENV_VAR = "EDGEKIT_TFLM_SRC"
LAYOUTS = ("arduino-library", "tflite-micro")
_INTERPRETER_H = Path("tensorflow/lite/micro/micro_interpreter.h")
_RESOLVER_H = Path("tensorflow/lite/micro/micro_mutable_op_resolver.h")
_SCHEMA_H = Path("tensorflow/lite/schema/schema_generated.h")
_ADD_METHOD = re.compile(r"TfLiteStatus\s+(Add[A-Z]\w*)\s*\(")
_FB_ASSERT = re.compile(r"static_assert\(\s*FLATBUFFERS_VERSION_MAJOR\s*==\s*(\d+)\s*&&\s*"
                        r"FLATBUFFERS_VERSION_MINOR\s*==\s*(\d+)\s*&&\s*FLATBUFFERS_VERSION_REVISION\s*==\s*(\d+)")
_FB_DEFINE = re.compile(r"#define\s+FLATBUFFERS_VERSION_(MAJOR|MINOR|REVISION)\s+(\d+)")

# Kernel source files (stem) of the ops a 16x8 model uses: an op has a 16x8 kernel when the file the
# build compiles for it (kernels/cmsis_nn/<stem> when the tree has CMSIS-NN and that file, else
# kernels/<stem> and kernels/<stem>_common) handles kTfLiteInt16. Ops that only move bytes run any type.
KERNEL_STEMS_16X8 = {
    "ADD": "add", "AVERAGE_POOL_2D": "pooling", "BATCH_MATMUL": "batch_matmul", "CONCATENATION": "concatenation",
    "CONV_2D": "conv", "DEPTHWISE_CONV_2D": "depthwise_conv", "DEQUANTIZE": "dequantize",
    "FULLY_CONNECTED": "fully_connected", "HARD_SWISH": "hard_swish", "LEAKY_RELU": "leaky_relu",
    "LOGISTIC": "logistic", "MAX_POOL_2D": "pooling", "MAXIMUM": "maximum_minimum", "MEAN": "reduce",
    "MINIMUM": "maximum_minimum", "MUL": "mul", "PAD": "pad", "PRELU": "prelu", "QUANTIZE": "quantize",
    "RELU": "activations", "RELU6": "activations", "RESIZE_NEAREST_NEIGHBOR": "resize_nearest_neighbor",
    "SOFTMAX": "softmax", "STRIDED_SLICE": "strided_slice", "SUB": "sub", "SVDF": "svdf", "TANH": "tanh",
    "TRANSPOSE": "transpose", "TRANSPOSE_CONV": "transpose_conv",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "unidirectional_sequence_lstm",
}
TYPE_AGNOSTIC_OPS = frozenset({"RESHAPE", "SQUEEZE", "EXPAND_DIMS", "SHAPE"})

GET_TREE_HINT = ("pass --tflm-src DIR (an Arduino TFLM library folder, or a tflite-micro checkout after "
                 "`make -f tensorflow/lite/micro/tools/make/Makefile third_party_downloads`), set "
                 f"{ENV_VAR}, or install the board's library: arduino-cli lib install "
                 "\"Chirale_TensorFLowLite@2.0.0\"")


class SourceTreeError(InputFileError):
    """A folder that is not a usable TFLM source tree."""


@dataclass(frozen=True)
class TflmTree:
    """One TFLM source tree and what it can run (read from its sources)."""

    root: Path                      # the folder as found (library folder or checkout)
    src: Path                       # the include root: the library's src/, or the checkout
    layout: str                     # one of LAYOUTS
    name: str                       # library name, or "tflite-micro"
    version: str | None             # library.properties version; None for a checkout
    origin: str                     # how it was found: --tflm-src, EDGEKIT_TFLM_SRC, arduino-cli
    source_ext: str                 # ".cpp" (Arduino libraries) or ".cc"
    resolver_methods: tuple[str, ...]
    decode: bool                    # has the DECODE kernel (AddDecode): LUT-compressed models
    per_channel_fully_connected: bool
    cmsis_nn: bool                  # third_party/cmsis_nn and kernels/cmsis_nn are there
    flatbuffers_version: str | None     # the flatbuffers the tree ships
    flatbuffers_required: str | None    # what its schema_generated.h static_asserts
    defines: tuple[str, ...]        # preprocessor defines the tree needs on a bare-metal build
    debug_log: str                  # "va_list": DebugLog(format, va_list); "string": DebugLog(const char*)
    problems: tuple[str, ...] = ()  # why it cannot build (empty: it can)
    ops_16x8: tuple[str, ...] = ()  # ops whose kernel runs 16x8 models (int16 activations, int8 weights)

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}" if self.version else self.name

    @property
    def ops(self) -> frozenset[str]:
        """TFLite op names (builtin or custom code) its resolver can add."""
        from edgekit.model.tflm_ops import BUILTIN_RESOLVER_METHODS, CUSTOM_RESOLVER_METHODS

        methods = set(self.resolver_methods)
        table = {**BUILTIN_RESOLVER_METHODS, **CUSTOM_RESOLVER_METHODS}
        return frozenset(op for op, m in table.items() if m in methods)

    @property
    def kernels(self) -> str:
        return "cmsis-nn" if self.cmsis_nn else "reference"

    @property
    def pinned_name(self) -> str:
        """``name@version`` as board files pin libraries (``Chirale_TensorFLowLite@2.0.0``)."""
        return f"{self.name}@{self.version}" if self.version else self.name

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["root"], d["src"] = str(self.root), str(self.src)
        d["resolver_methods"] = list(self.resolver_methods)
        d["ops_16x8"] = list(self.ops_16x8)
        d["op_count"] = len(self.resolver_methods)
        d["kernels"] = self.kernels
        d["label"] = self.label
        return d


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _properties(path: Path) -> dict[str, str]:
    out = {}
    for line in _read(path).splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            out[key.strip()] = value.strip()
    return out


def _flatbuffers_shipped(src: Path) -> str | None:
    for cand in (src / "third_party/flatbuffers/include/flatbuffers/base.h",):
        text = _read(cand)
        if text:
            parts = dict(_FB_DEFINE.findall(text))
            if {"MAJOR", "MINOR", "REVISION"} <= set(parts):
                return f"{parts['MAJOR']}.{parts['MINOR']}.{parts['REVISION']}"
    return None


def _per_channel_fc(src: Path, ext: str) -> bool:
    """FULLY_CONNECTED computes one multiplier per output channel (read from its common source).

    TFLM kernels that honour per-channel weight scales compute them in fully_connected_common
    (``is_per_channel`` / ``per_channel_output_multiplier``); older releases take only the first scale.
    """
    text = _read(src / f"tensorflow/lite/micro/kernels/fully_connected_common{ext}")
    return "per_channel" in text


def _ops_16x8(src: Path, ext: str, cmsis: bool, ops: frozenset[str]) -> tuple[str, ...]:
    """The ops of ``ops`` whose kernel, as the tree builds it, handles int16 activations (16x8 models)."""
    kernels = src / "tensorflow/lite/micro/kernels"
    texts: dict[str, str] = {}

    def handles_int16(stem: str) -> bool:
        if stem not in texts:
            optimized = kernels / "cmsis_nn" / f"{stem}{ext}"
            files = [optimized] if cmsis and optimized.is_file() else [kernels / f"{stem}{ext}",
                                                                       kernels / f"{stem}_common{ext}"]
            texts[stem] = "".join(_read(f) for f in files)
        return "kTfLiteInt16" in texts[stem]

    return tuple(sorted(op for op in ops if op in TYPE_AGNOSTIC_OPS
                        or (op in KERNEL_STEMS_16X8 and handles_int16(KERNEL_STEMS_16X8[op]))))


def locate_root(path: Path) -> tuple[Path, Path, str]:
    """(root, src, layout) for a folder, or SourceTreeError saying what is missing."""
    path = Path(path).expanduser()
    if not path.exists():
        raise SourceTreeError(f"TFLM source folder not found: {path}", hint=GET_TREE_HINT)
    if not path.is_dir():
        raise SourceTreeError(f"{path} is a file, not a TFLM source folder", hint=GET_TREE_HINT)
    # an Arduino library folder, or its src/ folder
    for root in (path, path.parent):
        if (root / "library.properties").is_file() and (root / "src" / _INTERPRETER_H).is_file():
            return root, root / "src", "arduino-library"
    if (path / _INTERPRETER_H).is_file():
        return path, path, "tflite-micro"
    if (path / "library.properties").is_file():
        raise SourceTreeError(f"{path} is an Arduino library without TFLM sources "
                              f"(no src/{_INTERPRETER_H})", hint=GET_TREE_HINT)
    raise SourceTreeError(f"{path} is not a TFLM source tree (no {_INTERPRETER_H}, no library.properties)",
                          hint=GET_TREE_HINT)


def describe_tree(path: str | os.PathLike, origin: str = "--tflm-src") -> TflmTree:
    """Read what the tree at ``path`` is and can run. Raises SourceTreeError if it is no TFLM tree."""
    root, src, layout = locate_root(Path(path))
    if layout == "arduino-library":
        props = _properties(root / "library.properties")
        name, version = props.get("name") or root.name, props.get("version") or None
        defines: tuple[str, ...] = ("ARDUINO",)
    else:
        name, version, defines = "tflite-micro", None, ()
    ext = ".cpp" if any((src / "tensorflow/lite/micro").glob("micro_interpreter*.cpp")) else ".cc"
    resolver = _read(src / _RESOLVER_H)
    methods = tuple(sorted(set(_ADD_METHOD.findall(resolver)) - {"AddBuiltin", "AddCustom"}))
    debug_log_h = _read(src / "tensorflow/lite/micro/debug_log.h")
    debug_log = "va_list" if re.search(r"void\s+DebugLog\s*\([^)]*va_list", debug_log_h) else "string"
    shipped = _flatbuffers_shipped(src)
    m = _FB_ASSERT.search(_read(src / _SCHEMA_H))
    required = ".".join(m.groups()) if m else None
    cmsis = ((src / "third_party/cmsis_nn/Include/arm_nnfunctions.h").is_file()
             and (src / "tensorflow/lite/micro/kernels/cmsis_nn").is_dir())
    problems = []
    if not methods:
        problems.append(f"no MicroMutableOpResolver in {_RESOLVER_H}")
    if shipped is None:
        problems.append("no flatbuffers headers under third_party/flatbuffers (for a tflite-micro checkout: "
                        "run its third_party_downloads first)")
    elif required is not None and shipped != required:
        problems.append(f"its schema needs flatbuffers {required} but third_party/flatbuffers is {shipped}")
    for dep in ("gemmlowp", "ruy"):
        if not (src / "third_party" / dep).is_dir():
            problems.append(f"third_party/{dep} is missing (third-party downloads incomplete)")
    tree = TflmTree(root=root.resolve(), src=src.resolve(), layout=layout, name=name, version=version,
                    origin=origin, source_ext=ext, resolver_methods=methods, decode="AddDecode" in methods,
                    per_channel_fully_connected=_per_channel_fc(src, ext), cmsis_nn=cmsis,
                    flatbuffers_version=shipped, flatbuffers_required=required, defines=defines,
                    debug_log=debug_log, problems=tuple(problems))
    return replace(tree, ops_16x8=_ops_16x8(src, ext, cmsis, tree.ops))


# -- finding trees -------------------------------------------------------------------------------

def _arduino_cli_libraries(tool: Callable[..., seam.ToolResult]) -> list[Path]:
    """Install folders of the libraries arduino-cli has installed (empty when it is not there)."""
    if seam.which("arduino-cli") is None:
        return []
    try:
        result = tool(["arduino-cli", "lib", "list", "--format", "json"], timeout=30.0)
        doc = json.loads(result.output or "null")
    except (EdgekitError, ValueError):
        return []
    entries = doc.get("installed_libraries", []) if isinstance(doc, dict) else (doc or [])
    out = []
    for entry in entries:
        lib = entry.get("library", entry) if isinstance(entry, dict) else {}
        folder = lib.get("install_dir") or lib.get("source_dir")
        if folder:
            out.append(Path(folder))
    return out


def candidate_folders(explicit: str | os.PathLike | None = None, *,
                      tool: Callable[..., seam.ToolResult] = seam.run_tool,
                      use_arduino_cli: bool = True) -> list[tuple[Path, str]]:
    """(folder, origin) pairs in the order edgekit tries them."""
    out: list[tuple[Path, str]] = []
    if explicit:
        out.append((Path(explicit), "--tflm-src"))
    for part in (os.environ.get(ENV_VAR) or "").split(os.pathsep):
        if part.strip():
            out.append((Path(part.strip()), ENV_VAR))
    if use_arduino_cli:
        out += [(p, "arduino-cli") for p in _arduino_cli_libraries(tool)]
    return out


@dataclass
class TreeSearch:
    """What :func:`find_trees` found: usable trees, and folders that were looked at and refused."""

    trees: list[TflmTree] = field(default_factory=list)
    refused: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"trees": [t.to_dict() for t in self.trees], "refused": self.refused}


def find_trees(explicit: str | os.PathLike | None = None, *,
               tool: Callable[..., seam.ToolResult] = seam.run_tool) -> TreeSearch:
    """Every TFLM tree edgekit can see. An explicit folder that is no tree raises SourceTreeError."""
    search = TreeSearch()
    seen: set[Path] = set()
    for folder, origin in candidate_folders(explicit, tool=tool):
        try:
            tree = describe_tree(folder, origin)
        except SourceTreeError as e:
            if origin == "--tflm-src":
                raise
            if origin != "arduino-cli":      # other arduino libraries are simply not TFLM
                search.refused.append({"folder": str(folder), "origin": origin, "reason": e.message})
            continue
        if tree.root in seen:
            continue
        seen.add(tree.root)
        search.trees.append(tree)
    return search


def board_library(board) -> str | None:
    """The TFLM library a board builds with (``name@version``), from its board file."""
    facts = getattr(board, "tflm", None) or {}
    return facts.get("library")


def _matches(tree: TflmTree, pinned: str) -> bool:
    name, _, version = pinned.partition("@")
    if tree.name.lower() != name.lower():
        return False
    return not version or tree.version == version


def select_tree(board=None, explicit: str | os.PathLike | None = None, *,
                tool: Callable[..., seam.ToolResult] = seam.run_tool) -> TflmTree:
    """The tree to build ``board``'s firmware with.

    ``explicit`` (``--tflm-src``) wins. Otherwise a board that pins a TFLM library gets a tree that is
    that library (name and version), if one is found; a board that pins none gets the first tree.
    A tree with problems raises SourceTreeError; no tree at all raises ToolMissing with the ways to get one.
    """
    search = find_trees(explicit, tool=tool)
    trees = search.trees
    if explicit:
        chosen = trees[0]
    else:
        if not trees:
            refused = "; ".join(f"{r['folder']}: {r['reason']}" for r in search.refused)
            raise ToolMissing("no TFLM source tree found" + (f" ({refused})" if refused else ""),
                              hint=GET_TREE_HINT, tool="tflm-src")
        pinned = board_library(board) if board is not None else None
        chosen = trees[0]
        if pinned:
            matching = [t for t in trees if _matches(t, pinned)]
            if not matching:
                found = ", ".join(t.label for t in trees)
                raise ToolMissing(f"board {board.id} builds with {pinned}, and no such tree was found "
                                  f"(found: {found})",
                                  hint=f"arduino-cli lib install \"{pinned}\", or pass --tflm-src to build "
                                       "with another tree anyway", tool="tflm-src")
            chosen = matching[0]
        elif board is not None and getattr(board, "tflm", None) is not None:
            # a board without a pinned library prefers a full tflite-micro checkout
            checkouts = [t for t in trees if t.layout == "tflite-micro"]
            chosen = checkouts[0] if checkouts else trees[0]
    if chosen.problems:
        raise SourceTreeError(f"the TFLM tree {chosen.root} cannot be built: {chosen.problems[0]}",
                              hint=GET_TREE_HINT)
    return chosen
