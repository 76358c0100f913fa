"""`edgekit.convert`: the whole shrink pipeline as one function.

load model -> check data -> [prune channels] -> [prune] -> [cluster] -> [qat]
-> convert (int8 / float16 / dynamic / none) -> [strip] -> [LUT compress] -> evaluate (Keras, LiteRT, host TFLM) -> write the artifact folder:
``model.tflite``, ``model_float.tflite`` (float32 baseline of the input model) and ``report.json``.
With channel or unstructured pruning, report.json also says what the pruning bought on the device
(edgekit.conversion.payoff), against the input model quantized the same way.

Nothing is written until every stage succeeded; each file is written atomically (and left untouched
when its bytes are unchanged), so a failed or interrupted run keeps earlier outputs intact. The output
folder is checked for writability before any work and created only then: a failed run leaves none.
"""
from __future__ import annotations

import gzip
import json
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from edgekit import schemas
from edgekit import _tf
from edgekit._version import __version__
from edgekit.conversion import evaluate as ev
from edgekit.conversion.data import Dataset, calibration_checks, calibration_warning, load_data
from edgekit.errors import DataError, EdgekitError
from edgekit.fileio import check_output_dir, sha256, write_group
from edgekit.optimize.recipe import Recipe
from edgekit.progress import ProgressFn

REPORT_SCHEMA = schemas.CONVERT


@dataclass
class ConvertResult:
    model: bytes
    float_model: bytes
    report: dict
    out_dir: Optional[Path] = None
    written: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return self.report


def _gzip_len(b: bytes) -> int:
    return len(gzip.compress(b, compresslevel=9, mtime=0))


def _as_dataset(value, input_shape, *, need_labels: bool, what: str) -> Optional[Dataset]:
    if value is None:
        return None
    if isinstance(value, Dataset):
        from edgekit.conversion.data import check_dataset

        return check_dataset(value, input_shape, need_labels=need_labels, what=what)
    if isinstance(value, tuple) and len(value) == 2:
        from edgekit.conversion.data import check_dataset

        return check_dataset(Dataset(np.asarray(value[0]), None if value[1] is None else np.asarray(value[1])),
                             input_shape, need_labels=need_labels, what=what)
    return load_data(value, input_shape, need_labels=need_labels, what=what)


def _main_subgraph(model: bytes):
    from edgekit.model.graph import parse
    from edgekit.model.load import load_tflite

    return parse(load_tflite(model)).main


def _io_details(model: bytes) -> dict:
    sg = _main_subgraph(model)

    def one(ti: int) -> dict:
        t = sg.tensors[ti]
        return {"name": t.name or f"tensor_{ti}", "shape": list(t.shape), "dtype": t.dtype,
                "scale": list(t.scales), "zero_point": list(t.zero_points)}

    return {"inputs": [one(i) for i in sg.inputs], "outputs": [one(i) for i in sg.outputs]}


def convert(model: Any, data: Any = None, eval_data: Any = None, recipe: Recipe | None = None,
            out_dir: str | Path | None = None, *, allow_lambda: bool = False,
            progress: ProgressFn | None = None,
            warn: Callable[[str], None] | None = None, stage_cache: dict | None = None,
            board: Any = None, auto_fix: float | None = None) -> ConvertResult:
    """Shrink and convert a Keras model.

    model: path to .keras / .h5 / SavedModel folder, or a tf_keras model object.
    data: calibration + fine-tuning data (path, Dataset or (x, y)); eval_data: labelled test data.
    recipe: a Recipe (default: int8 post-training quantization). out_dir: artifact folder or None.
    stage_cache: a dict shared between calls (sweeps) so that runs whose recipes share a prefix
    (same prune settings, say) reuse the fine-tuned model of that prefix instead of training again.
    board: an id or Board: the recipe is adjusted to what that board's TFLM runtime runs correctly
    (per-tensor dense weights where it lacks per-channel FULLY_CONNECTED; LUT compression refused
    where it lacks DECODE), before any work starts.
    auto_fix: the quantization doctor's cheapest setting within this many accuracy points of float,
    verified on host TFLM (edgekit.conversion.doctor.auto_fix; needs eval data, no QAT). Without it, an
    int8 model with eval data keeps per-tensor dense weights where they cost <= 0.1 point against
    per-channel (``quantize.dense_auto``; doctor.choose_dense).
    """
    from edgekit.optimize import tfmot_adapter as mot
    from edgekit.optimize.loading import as_loaded
    from edgekit.conversion.converter import export_for_converter, to_tflite

    recipe = (recipe or Recipe()).check()
    warn = warn or (lambda msg: None)
    board_doc = facts = None
    if board is not None:
        from edgekit.boards import Board, load_board
        from edgekit.optimize.recipe import recipe_for_runtime
        from edgekit.tflm.compat import facts_from_board

        board = board if isinstance(board, Board) else load_board(str(board))
        facts = facts_from_board(board)
        recipe, board_notes = recipe_for_runtime(recipe, facts, board.id)
        for note in board_notes:
            warn(note)
        board_doc = {"id": board.id, "notes": board_notes}
    arena_budget = recipe.compress.max_arena_bytes if recipe.compress is not None else None
    if arena_budget is None and board is not None and recipe.compress is not None and recipe.compress.auto:
        from edgekit.fit import arena_budget as board_arena_budget

        arena_budget = board_arena_budget(board)
    t_start = time.perf_counter()
    stages: list[dict] = []
    if out_dir is not None:
        # fail at once on an output path that cannot be written (a file, under a file, no permission);
        # the folder itself is made only when the artifact is written, so a failed run leaves none
        check_output_dir(out_dir)

    def stage(name: str, settings: dict, t0: float, **extra) -> None:
        stages.append({"stage": name, "settings": settings, "duration_s": round(time.perf_counter() - t0, 3),
                       **extra})
        if progress:
            progress("stages", len(stages), None)

    t0 = time.perf_counter()
    loaded = as_loaded(model, allow_lambda=allow_lambda)
    input_shape = loaded.input_shape
    stage("load", {"source": loaded.source, "origin": loaded.origin}, t0, notes=loaded.notes)

    train = _as_dataset(data, input_shape, need_labels=recipe.trains, what="data")
    test = _as_dataset(eval_data, input_shape, need_labels=True, what="eval data")
    if recipe.quantize.mode == "int8" and train is None:
        raise DataError("int8 quantization needs calibration samples",
                        hint="pass --data with a few hundred representative inputs")
    calibration_facts, data_warnings = None, []
    if train is not None and recipe.quantize.mode == "int8":
        msg = calibration_warning(min(len(train), recipe.quantize.calibration_samples))
        calibration_facts, range_warnings = calibration_checks(train.head(recipe.quantize.calibration_samples),
                                                               test)
        data_warnings = ([msg] if msg else []) + range_warnings
        for msg in data_warnings:
            warn(msg)
    if recipe.trains:
        loaded.require_keras("prune / cluster / qat")   # fail before any work on PTQ-only models
    if recipe.prune_channels is not None:
        from edgekit.optimize import channels

        channels.plan(loaded.keras, recipe.prune_channels)   # no layer can lose channels: say so before any work
    if auto_fix is not None:
        from edgekit.conversion.doctor import check_auto_fix

        check_auto_fix(recipe, test, auto_fix)

    tf = _tf.tf()
    keras = _tf.keras()
    keras.utils.set_random_seed(recipe.seed)
    try:
        tf.config.experimental.enable_op_determinism()
    except Exception:  # noqa: BLE001 - only unavailable on exotic builds
        pass

    q = recipe.quantize
    calib = train.x[:q.calibration_samples] if train is not None else None

    # the dense-weight granularity the final model got (chosen by quantize() when q.dense_auto)
    final_dense = {"per_tensor": q.dense_per_tensor}

    def quantize_like_final(keras_model, saved_model_dir=None, sparse: bool = False) -> bytes:
        from edgekit.conversion.strip import strip_for_micro

        out = to_tflite(keras_model=keras_model, saved_model_dir=saved_model_dir, mode=q.mode, io=q.io,
                        calibration=calib, dense_per_tensor=final_dense["per_tensor"], sparse=sparse)
        return strip_for_micro(out) if recipe.strip else out

    def quantize(keras_model, saved_model_dir) -> bytes:
        t0 = time.perf_counter()
        settings = {"mode": q.mode, "io": q.io, "calibration_samples": 0 if calib is None else len(calib),
                    "dense_per_tensor": q.dense_per_tensor}
        if auto_fix is not None:                    # the doctor's cheapest setting within the budget
            from edgekit.conversion import doctor

            out, doc = doctor.auto_fix(keras_model=keras_model, saved_model_dir=saved_model_dir, calibration=calib,
                                       test=test, facts=facts, int8_only=bool(getattr(board, "int8_only", False)),
                                       max_drop=auto_fix, io=q.io, progress=progress)
            chosen = doc["chosen"]["setting"]
            settings.update(dense_per_tensor=chosen["dense_per_tensor"], activations=chosen["activations"],
                            bias_correction=chosen["bias_correction"], auto_fix=chosen["name"])
            stage("quantize", settings, t0, bytes=len(out), doctor=doc)
            final_dense["per_tensor"] = bool(chosen["dense_per_tensor"])
            return out
        out = to_tflite(keras_model=keras_model, saved_model_dir=saved_model_dir,
                        mode=q.mode, io=q.io, calibration=calib, dense_per_tensor=q.dense_per_tensor)
        extra = {}
        if q.mode == "int8" and q.dense_auto and not q.dense_per_tensor and test is not None:
            from edgekit.conversion.doctor import choose_dense

            out, extra["dense_choice"] = choose_dense(out, lambda: to_tflite(
                keras_model=keras_model, saved_model_dir=saved_model_dir, mode=q.mode, io=q.io, calibration=calib,
                dense_per_tensor=True), test)
            settings["dense_per_tensor"] = (extra["dense_choice"] or {}).get("chosen") == "per-tensor"
        stage("quantize", settings, t0, bytes=len(out), **{k: v for k, v in extra.items() if v})
        final_dense["per_tensor"] = bool(settings["dense_per_tensor"])
        return out

    # float32 baseline of the input model; without training stages the quantized model is converted
    # from the same SavedModel export
    final = None
    with tempfile.TemporaryDirectory(prefix="edgekit-convert-") as scratch:
        t0 = time.perf_counter()
        source_dir = loaded.saved_model_dir or export_for_converter(loaded.keras, Path(scratch) / "input")
        float_model = to_tflite(keras_model=loaded.keras, saved_model_dir=source_dir, mode="none")
        stage("float_baseline", {}, t0, bytes=len(float_model))
        # what pruning buys is measured against the input model quantized like the final one
        reference = quantize_like_final(loaded.keras, source_dir) \
            if recipe.prune_channels is not None or recipe.prune is not None else None
        reference_dense = final_dense["per_tensor"]
        if not recipe.trains:
            final = quantize(loaded.keras, source_dir)

    current = loaded.keras
    keras_layers_before = mot.weight_stats(current) if current is not None else []
    trained = _reusable_stages(current, train, recipe, loaded.source, stage_cache, stage, progress, warn)
    current, pruned, clustered = trained.model, trained.pruned, trained.clustered
    channel_rep, prune_input, pruned_keras = trained.channel_rep, trained.prune_input, trained.pruned_keras
    keras_layers_after = mot.weight_stats(current) if current is not None else []
    if recipe.qat is not None:
        t0 = time.perf_counter()
        keras.utils.set_random_seed(stage_seed(recipe.seed, "qat"))
        current, rep = mot.qat(current, train, recipe.qat, recipe.train, pruned=pruned, clustered=clustered,
                               progress=progress)
        stage("qat", rep.settings, t0, history=rep.history)

    if final is None:
        final = quantize(current, None if current is not None else loaded.saved_model_dir)

    if recipe.strip:
        from edgekit.conversion.strip import strip_for_micro

        t0 = time.perf_counter()
        before = len(final)
        final = strip_for_micro(final)
        stage("strip", {"dropped": "signatures, description, conversion metadata, inner tensor names, "
                                   "min/max"}, t0, bytes_before=before, bytes=len(final))

    compress_rows = None
    compressed = False              # the final model holds DECODE ops (auto may compress nothing)
    if recipe.compress is not None:
        from edgekit.conversion.compress import compress_lut

        t0 = time.perf_counter()
        before = len(final)
        final, compress_rows = compress_lut(final, recipe.compress, max_arena_bytes=arena_budget)
        compressed = any(r.get("method", "none") != "none" for r in compress_rows)
        stage("compress", {"method": "lut", "index_bits": recipe.compress.index_bits,
                           "min_tensor_bytes": recipe.compress.min_tensor_bytes, "auto": recipe.compress.auto,
                           "max_arena_bytes": arena_budget if recipe.compress.auto else None},
              t0, bytes_before=before, bytes=len(final), tensors=compress_rows)
        for r in compress_rows:
            if r.get("skipped") and r.get("bytes", 0) >= recipe.compress.min_tensor_bytes and not recipe.compress.auto:
                warn(f"tensor {r['tensor']} not compressed: {r['skipped']}")
        if recipe.compress.auto and not compressed:
            warn("--compress auto: no weight tensor gets smaller with a lookup table; the model stays plain int8")

    # evaluation
    evaluation: dict[str, Any] = {}
    if test is not None:
        t0 = time.perf_counter()
        evaluation = _evaluate(loaded, float_model, final, test, compressed=compressed,
                               mode=recipe.quantize.mode, warn=warn)
        stage("evaluate", {"samples": len(test)}, t0)

    from edgekit.conversion import payoff
    from edgekit.conversion.strip import byte_breakdown

    t0 = time.perf_counter()
    if reference is not None and reference_dense != final_dense["per_tensor"]:
        reference = quantize_like_final(loaded.keras)      # the final model's dense granularity was chosen later
    channel_doc, unstructured_doc = payoff.measure(
        recipe, reference=reference, final=final, final_arena=evaluation.get("tflm_arena_bytes"),
        channel_rep=channel_rep, prune_input=prune_input, pruned=pruned_keras, quantize=quantize_like_final,
        warn=warn)
    if reference is not None:
        stage("pruning_payoff", {"against": "the input model quantized like the final one"}, t0)

    report = {
        "schema": REPORT_SCHEMA,
        "edgekit_version": __version__,
        "source": loaded.source,
        "origin": loaded.origin,
        "recipe": recipe.to_dict(),
        "recipe_summary": recipe.describe(),
        "board": board_doc,
        "runtime": "tflm" if compressed else "litert+tflm",
        "needs_tflm": compressed,
        "model_sha256": sha256(final),
        "float_model_sha256": sha256(float_model),
        "sizes": {
            "float_bytes": len(float_model),
            "final_bytes": len(final),
            "ratio": round(len(final) / len(float_model), 4),
            "float_gzip_bytes": _gzip_len(float_model),
            "final_gzip_bytes": _gzip_len(final),
            "final_breakdown": byte_breakdown(final),
            "float_breakdown": byte_breakdown(float_model),
        },
        "io": _io_details(final),
        "sparsity": {
            "keras_before": keras_layers_before,
            "keras_after": keras_layers_after,
            "tflite": payoff.int8_weight_rows(final) if recipe.quantize.mode == "int8" and not compressed else [],
        },
        "channel_pruning": channel_doc,
        "unstructured_pruning": unstructured_doc,
        "stages": stages,
        "evaluation": evaluation,
        "class_names": _class_names(model, train),
        "data": {"train": None if train is None else {"source": train.source, "samples": len(train),
                                                       "class_names": train.class_names},
                 "eval": None if test is None else {"source": test.source, "samples": len(test)},
                 "calibration": calibration_facts,
                 "warnings": data_warnings},
        "tool_versions": _tf.versions(),
        "duration_s": round(time.perf_counter() - t_start, 3),
    }
    result = ConvertResult(model=final, float_model=float_model, report=report)
    if out_dir is not None:
        result.out_dir = Path(out_dir)
        result.written = write_artifact(result.out_dir, final, float_model, report)
    return result


# --- the stages a sweep shares between points ----------------------------------------------------
#
# Prune and cluster produce a Keras model that every later stage starts from; runs whose recipes agree
# on them (same source, seed, training settings and stage settings) can take that model from a
# ``stage_cache`` instead of training again. Each training stage seeds the random generators itself
# (stage_seed), so a stage's result depends on its input model and settings alone, not on whether the
# stages before it ran in this process, were taken from the cache, or came from another machine.

def stage_seed(seed: int, stage: str) -> int:
    """The seed a training stage starts from: the recipe's seed and the stage's name."""
    return (int(seed) * 1_000_003 + zlib.crc32(stage.encode())) % (2 ** 31)


def reusable_specs(recipe: Recipe) -> list[tuple[str, Any]]:
    """The recipe's stages whose output model can be shared, in the order they run."""
    return [(name, spec) for name, spec in (("prune_channels", recipe.prune_channels), ("prune", recipe.prune),
                                            ("cluster", recipe.cluster))
            if spec is not None]


def stage_keys(source: str, recipe: Recipe) -> list[tuple]:
    """The stage-cache key of each reusable stage of ``recipe`` (reusable_specs order). Two recipes
    whose lists share a key share the model that stage produces (and every stage before it)."""
    key: tuple = (str(source), recipe.seed, repr(recipe.train))
    keys = []
    for name, spec in reusable_specs(recipe):
        key = key + (name, repr(spec))
        keys.append(key)
    return keys


@dataclass
class TrainedStages:
    """What the reusable stages made: the model, which stages ran, and what the pruning payoff needs."""

    model: Any
    pruned: bool = False
    clustered: bool = False
    channel_rep: Any = None          # the channel-pruning stage's report
    prune_input: Any = None          # the model unstructured pruning started from
    pruned_keras: Any = None         # the model unstructured pruning made


def _reusable_stages(current, train, recipe: Recipe, source: str, stage_cache: dict | None, stage: Callable,
                     progress, warn, depth: int | None = None) -> TrainedStages:
    """Run (or take from ``stage_cache``) the first ``depth`` reusable stages (all when None)."""
    from edgekit.optimize import tfmot_adapter as mot

    out = TrainedStages(current)
    specs = reusable_specs(recipe)
    keys = stage_keys(source, recipe)
    for (name, spec), key in list(zip(specs, keys))[:depth]:
        t0 = time.perf_counter()
        base, was_pruned = out.model, out.pruned
        if name == "prune_channels":
            from edgekit.optimize import channels

            run = lambda: channels.prune_channels(base, train, spec, recipe.train, progress=progress)  # noqa: E731
        elif name == "prune":
            run = lambda: mot.prune(base, train, spec, recipe.train, progress=progress)  # noqa: E731
        else:
            run = lambda: mot.cluster(base, train, spec, recipe.train,  # noqa: E731
                                      preserve_sparsity=was_pruned, progress=progress)
        out.model, rep, reused = _cached(stage_cache, key, run, stage_seed(recipe.seed, name))
        if name == "prune_channels":
            out.channel_rep = rep
            stage(name, rep.settings, t0, layers=rep.layers, unprunable=rep.unprunable,
                  params_before=rep.params_before, params_after=rep.params_after, macs_before=rep.macs_before,
                  macs_after=rep.macs_after, history=rep.history, reused=reused)
            for u in rep.unprunable:
                warn(f"layer {u['layer']} ({u['type']}) keeps its channels: {u['reason']}")
            continue
        stage(name, rep.settings, t0, wrapped_layers=rep.wrapped_layers, skipped_layers=rep.skipped_layers,
              history=rep.history, reused=reused)
        what = "pruned; left dense" if name == "prune" else "clustered; left as it was"
        for s in rep.skipped_layers:
            warn(f"layer {s['layer']} ({s['type']}) cannot be {what}")
        if name == "prune":
            out.pruned, out.prune_input, out.pruned_keras = True, base, out.model
        else:
            out.clustered = True
    return out


def train_prefix(model: Any, data: Any, recipe: Recipe, stage_cache: dict, *, depth: int,
                 warn: Callable[[str], None] | None = None) -> tuple:
    """Run the first ``depth`` reusable stages of ``recipe`` into ``stage_cache`` (taking what is
    already there) and return the key of the last one: what a sweep computes once for the points that
    share it. ``model``: a path or LoadedModel; ``data``: the fine-tuning data."""
    from edgekit.optimize.loading import LoadedModel, load_model

    recipe = recipe.check()
    keys = stage_keys("", recipe)
    if not 1 <= depth <= len(keys):
        raise ValueError(f"depth {depth} outside 1..{len(keys)}")
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    train = _as_dataset(data, loaded.input_shape, need_labels=True, what="data")
    loaded.require_keras("prune / cluster / qat")
    try:
        _tf.tf().config.experimental.enable_op_determinism()
    except Exception:  # noqa: BLE001 - only unavailable on exotic builds
        pass
    _reusable_stages(loaded.keras, train, recipe, loaded.source, stage_cache, lambda *a, **k: None, None,
                     warn or (lambda m: None), depth=depth)
    return stage_keys(loaded.source, recipe)[depth - 1]


def pack_stage(model, rep) -> dict:
    """A stage-cache entry as plain data (architecture JSON, weights, stage report) that can cross
    processes and machines; unpack_stage rebuilds it exactly."""
    return {"config": model.to_json(), "weights": [np.asarray(w) for w in model.get_weights()], "report": rep}


def unpack_stage(entry: dict, like=None) -> tuple[Any, Any]:
    """(model, stage report) from pack_stage. ``like``: a model whose layer classes the architecture may
    name (a user model's own layers)."""
    keras = _tf.keras()
    custom = {type(layer).__name__: type(layer) for layer in (like.layers if like is not None else [])}
    with keras.utils.custom_object_scope(custom):
        model = keras.models.model_from_json(entry["config"])
    model.set_weights(entry["weights"])
    return model, entry["report"]


def _cached(cache: dict | None, key: tuple, run: Callable[[], tuple], seed: int) -> tuple[Any, Any, bool]:
    """Run a training stage from ``seed``, or reuse the model a previous run with the same prefix produced."""
    import copy

    if cache is not None and key in cache:
        model, rep = cache[key]
        return _clone(model), copy.deepcopy(rep), True
    _tf.keras().utils.set_random_seed(seed)
    model, rep = run()
    if cache is not None:
        cache[key] = (_clone(model), copy.deepcopy(rep))
    return model, rep, False


def _clone(model):
    keras = _tf.keras()
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    return twin


def _class_names(model, train: Optional[Dataset]) -> list[str]:
    """Class names from the data (image folders) or from a finetuned model's sidecar file."""
    if train is not None and train.class_names:
        return list(train.class_names)
    if isinstance(model, (str, Path)):
        from edgekit.optimize.transfer import read_sidecar

        side = read_sidecar(model)
        if side and isinstance(side.get("class_names"), list):
            return [str(c) for c in side["class_names"]]
    return []


def _evaluate(loaded, float_model: bytes, final: bytes, test: Dataset, *, compressed: bool, mode: str,
              warn: Callable[[str], None]) -> dict:
    out: dict[str, Any] = {"task": "classification" if test.is_classification else "regression"}
    if loaded.keras is not None:
        pred = loaded.keras.predict(test.x, verbose=0, batch_size=256)
        out["keras_float"] = ev.score(np.asarray(pred), test)
    fl, _ = ev.litert_run(float_model, test.x)
    out["litert_float"] = ev.score(fl, test)
    lite = raw_lite = None
    if not compressed:
        try:
            lite, raw_lite = ev.litert_run(final, test.x)
            out["litert"] = ev.score(lite, test)
        except EdgekitError as e:
            warn(f"LiteRT refused the converted model ({e.message}); TFLM numbers only")
            out["litert_error"] = e.message
    else:
        out["litert"] = None
        out["litert_note"] = "LUT-compressed models run on TFLM only"
    micro = None
    try:
        micro, raw_micro, recorded = ev.tflm_run(final, test.x)
        out["tflm"] = ev.score(micro, test)
        out["tflm_arena_bytes"] = _exact_arena(final, warn)        # the one arena figure (edgekit.fit)
        out["tflm_arena_recorded_bytes"] = recorded                 # TFLM's recording allocator's total
    except EdgekitError as e:
        out["tflm"] = None
        out["tflm_error"] = e.message
        if mode == "int8":
            warn(f"host TFLM could not run the model: {e.message}")
        else:
            out["tflm_note"] = f"TFLM does not run {mode} models (use int8 for microcontrollers)"
    if lite is not None and micro is not None:
        out["litert_vs_tflm"] = ev.agreement(lite, micro, raw_lite, raw_micro)
    # the final model's confusion matrix, from the runtime a microcontroller runs (host TFLM) if it ran
    for runtime, outputs in (("tflm", micro), ("litert", lite)):
        matrix = None if outputs is None else ev.confusion(outputs, test)
        if matrix is not None:
            out["confusion"] = {"runtime": runtime, "matrix": matrix}
            break
    base_key = "keras_float" if "keras_float" in out else "litert_float"
    metric = "accuracy" if "accuracy" in out[base_key] else "mae"
    base = out[base_key].get(metric)
    deltas = {}
    for k in ("litert", "tflm"):
        if out.get(k) and base is not None:
            deltas[k] = round(out[k][metric] - base, 6)
    out["delta_vs_float"] = {"metric": metric, "baseline": base_key, **deltas}
    return out


def write_artifact(out_dir: Path, model: bytes, float_model: bytes, report: dict) -> list[str]:
    """Write model.tflite, model_float.tflite and report.json together (edgekit.fileio.write_group):
    an interrupted write leaves the previous artifact whole; unchanged files are left untouched."""
    text = json.dumps(report, indent=2, default=str) + "\n"
    files = {"model.tflite": model, "model_float.tflite": float_model, "report.json": text.encode("utf-8")}
    prev = Path(out_dir) / "report.json"
    if prev.is_file():   # same facts, only other timings: keep the file (build tools' up-to-date checks)
        try:
            if _without_timings(json.loads(prev.read_text())) == _without_timings(json.loads(text)):
                files["report.json"] = prev.read_bytes()
        except (OSError, ValueError):
            pass
    return write_group(out_dir, files)


def _without_timings(obj):
    if isinstance(obj, dict):
        return {k: _without_timings(v) for k, v in obj.items() if k not in ("duration_s", "history", "reused")}
    if isinstance(obj, list):
        return [_without_timings(v) for v in obj]
    return obj


def _exact_arena(model: bytes, warn) -> int | None:
    """The smallest arena in which host TFLM allocates and runs ``model`` (what export and fit use)."""
    from edgekit.model import tflm_host

    try:
        return int(tflm_host.measure_arena(model)["arena_bytes"])
    except EdgekitError as e:
        warn(f"the exact TFLM arena could not be measured ({e.message})")
        return None
