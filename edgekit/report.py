"""One report for an artifact folder: the facts of convert, profile and validate runs, as data, HTML or tables.

    data = edgekit.report.collect("build/digits")          # ReportData (to_dict() is plain JSON)
    edgekit.report.write_html("build/digits", "build/digits/report.html")

Input: a folder written by ``edgekit convert`` (model.tflite, model_float.tflite, report.json with schema
``edgekit.convert/1``) plus any ``*.json`` in it whose ``schema`` is ``edgekit.profile/1`` or
``edgekit.validate/1``. The HTML is one self-contained file: charts are PNG data URIs drawn with
matplotlib (Agg), no scripts, no style sheets or fonts from the network.
"""
from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import BoardError, EdgekitError, InputFileError

from edgekit.schemas import CONVERT as CONVERT_SCHEMA
from edgekit.schemas import PROFILE as PROFILE_SCHEMA
from edgekit.schemas import REPORT as REPORT_SCHEMA
from edgekit.schemas import VALIDATE as VALIDATE_SCHEMA

# Ops whose constant inputs are weights (the rest of a model's constants are shapes, axes, ...).
WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D",
              "BATCH_MATMUL", "EMBEDDING_LOOKUP", "SVDF", "UNIDIRECTIONAL_SEQUENCE_LSTM")
DECODE_OPS = ("DECODE", "TFLM_DECODE")     # TFLM's LUT decompression op (custom code in compressed models)


@dataclass
class ReportData:
    """Everything the report shows; ``to_dict()`` is what ``edgekit report --json`` prints."""

    folder: str
    convert: dict[str, Any]
    layer_sizes: list[dict[str, Any]]
    accuracy: dict[str, Any]
    profiles: list[dict[str, Any]] = field(default_factory=list)
    validations: list[dict[str, Any]] = field(default_factory=list)
    budget: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def sizes(self) -> dict[str, Any]:
        return self.convert.get("sizes") or {}

    @property
    def sparsity(self) -> dict[str, Any]:
        return self.convert.get("sparsity") or {}

    def to_dict(self) -> dict[str, Any]:
        c = self.convert
        return {
            "schema": REPORT_SCHEMA,
            "folder": self.folder,
            "source": c.get("source"),
            "recipe_summary": c.get("recipe_summary"),
            "model_sha256": c.get("model_sha256"),
            "sizes": self.sizes,
            "layer_sizes": self.layer_sizes,
            "sparsity": self.sparsity,
            "channel_pruning": c.get("channel_pruning"),
            "unstructured_pruning": c.get("unstructured_pruning"),
            "accuracy": self.accuracy,
            "latency": [_latency_facts(p) for p in self.profiles],
            "validations": self.validations,
            "budget": self.budget,
            "notes": self.notes,
        }


# --- collecting -----------------------------------------------------------------------------------

def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputFileError(f"{path.name} is not readable JSON: {str(e).splitlines()[0]}",
                             hint="run `edgekit convert` again to rewrite the artifact folder") from e


def collect(folder: str | Path, *, board: str | None = None) -> ReportData:
    """Read an artifact folder. ``board`` (an id from targets/) sets the budget when no profile names one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputFileError(f"artifact folder not found: {folder}",
                             hint="give the folder `edgekit convert -o` wrote")
    rep_path = folder / "report.json"
    if not rep_path.is_file():
        raise InputFileError(f"{folder} has no report.json, so it is not an `edgekit convert` artifact folder",
                             hint="run `edgekit convert MODEL -o FOLDER` first, then report on FOLDER")
    convert = _read_json(rep_path)
    if not isinstance(convert, dict) or convert.get("schema") != CONVERT_SCHEMA:
        got = convert.get("schema") if isinstance(convert, dict) else type(convert).__name__
        raise InputFileError(f"{rep_path.name} has schema {got!r}, expected {CONVERT_SCHEMA!r}",
                             hint="run `edgekit convert` with this edgekit version to rewrite it")
    notes: list[str] = []
    profiles, validations = [], []
    for p in sorted(folder.glob("*.json")):
        if p.name == "report.json":
            continue
        try:
            text = p.read_text(encoding="utf-8")
            doc, end = json.JSONDecoder().raw_decode(text.lstrip())
        except (OSError, UnicodeDecodeError, ValueError):
            notes.append(f"{p.name}: not readable JSON, ignored")
            continue
        if text.lstrip()[end:].strip():
            # a native library's chatter after the document (a shell redirect caught it); the JSON is whole
            notes.append(f"{p.name}: text after the JSON document ignored")
        if not isinstance(doc, dict):
            continue
        if doc.get("schema") == PROFILE_SCHEMA:
            profiles.append({"file": p.name, **doc})
        elif doc.get("schema") == VALIDATE_SCHEMA:
            validations.append({"file": p.name, **doc})
    layer_sizes = _layer_sizes(folder, notes)
    _short_names(layer_sizes, convert)
    data = ReportData(folder=str(folder), convert=convert, layer_sizes=layer_sizes,
                      accuracy=_accuracy(convert, validations), profiles=profiles, validations=validations,
                      notes=notes)
    data.budget = _budget(data, board)
    return data


def _weight_rows(path: Path) -> list[dict[str, Any]]:
    """Per weight op of the main subgraph: its constant inputs' bytes (through DECODE ops, if compressed)."""
    from edgekit.model.graph import parse
    from edgekit.model.load import load_tflite

    sg = parse(load_tflite(path)).main      # the verifier runs before the flatbuffer is read

    def const_bytes(ti: int) -> int:
        return sg.tensors[ti].buffer_bytes if ti >= 0 else 0

    producer = {o: op for op in sg.operators for o in op.outputs if o >= 0}
    rows = []
    for op in sg.operators:
        if op.op not in WEIGHT_OPS:
            continue
        total, decoded = 0, False
        for ti in op.inputs:
            src = producer.get(ti)
            if src is not None and src.op in DECODE_OPS:
                decoded = True
                total += sum(const_bytes(j) for j in src.inputs)
            else:
                total += const_bytes(ti)
        out = sg.tensors[op.outputs[0]].name if op.outputs and op.outputs[0] >= 0 else ""
        rows.append({"op": op.op, "name": str(out), "bytes": int(total), "decoded": decoded})
    return rows


def _layer_sizes(folder: Path, notes: list[str]) -> list[dict[str, Any]]:
    from edgekit.errors import EdgekitError

    rows: dict[str, list] = {}
    for key, name in (("float", "model_float.tflite"), ("final", "model.tflite")):
        p = folder / name
        if not p.is_file():
            notes.append(f"{name} missing: no per-layer size for it")
            rows[key] = []
            continue
        try:
            rows[key] = _weight_rows(p)
        except EdgekitError as e:
            notes.append(f"{name}: {e.message}")
            rows[key] = []
    fl, fi = rows["float"], rows["final"]
    out = []
    for k in range(max(len(fl), len(fi))):
        a = fl[k] if k < len(fl) else None
        b = fi[k] if k < len(fi) else None
        if a and b and a["op"] != b["op"]:
            notes.append(f"weight op {k}: {a['op']} in the float model but {b['op']} in the final one")
        out.append({"index": k, "op": (b or a)["op"],
                    "name": (a or {}).get("name") or (b or {}).get("name") or f"op {k}",
                    "float_bytes": None if a is None else a["bytes"],
                    "final_bytes": None if b is None else b["bytes"],
                    "decoded": bool(b and b["decoded"])})
    return out


def _short_names(rows: list[dict], convert: dict) -> None:
    """Name layers after the Keras layers when they line up one to one (same count, in order)."""
    sp = convert.get("sparsity") or {}
    keras_rows = sp.get("keras_before") or sp.get("keras_after") or []
    if keras_rows and len(keras_rows) == len(rows):
        for r, k in zip(rows, keras_rows):
            r["tensor"], r["name"] = r["name"], str(k.get("layer") or r["name"])
        return
    for r in rows:
        r["tensor"], r["name"] = r["name"], r["name"].split(";")[0]


def _metric(score: Any, metric: str) -> float | None:
    if isinstance(score, dict) and isinstance(score.get(metric), (int, float)):
        return float(score[metric])
    return None


def _accuracy(convert: dict, validations: list[dict]) -> dict[str, Any]:
    ev = convert.get("evaluation") or {}
    metric = (ev.get("delta_vs_float") or {}).get("metric") or "accuracy"
    rows = {
        "float (Keras)": _metric(ev.get("keras_float"), metric),
        "float (LiteRT)": _metric(ev.get("litert_float"), metric),
        "final (LiteRT)": _metric(ev.get("litert"), metric),
        "final (host TFLM)": _metric(ev.get("tflm"), metric),
    }
    for v in validations:
        if metric == "accuracy" and v.get("accuracy_device") is not None:
            rows[f"on device ({v.get('board', '?')}, {v.get('samples', '?')} samples)"] = \
                float(v["accuracy_device"])
    notes = [str(ev[k]) for k in ("litert_note", "litert_error", "tflm_note", "tflm_error") if ev.get(k)]
    return {"metric": metric if ev else None, "values": rows,
            "samples": ((convert.get("data") or {}).get("eval") or {}).get("samples"), "notes": notes}


def _latency_facts(p: dict) -> dict[str, Any]:
    return {"file": p.get("file"), "board": (p.get("board") or {}).get("id"),
            "latency_us": p.get("latency_us"), "runs": p.get("runs"),
            "per_op": p.get("per_op"), "per_op_note": p.get("per_op_note"),
            "memory": p.get("memory")}


def _budget(data: ReportData, board: str | None) -> dict[str, Any] | None:
    """The board budget: the one fit (edgekit.fit) of the final model, with the arena's exact minimum
    from report.json (host TFLM), plus the time estimate where the profiles or the model's MACs give one."""
    from edgekit.boards import load_board
    from edgekit.fit import fit

    prof = data.profiles[0] if data.profiles else None
    board_id = board or (((prof or {}).get("board") or {}).get("id"))
    if not board_id:
        return None
    try:
        b = load_board(board_id)
    except BoardError as e:
        if board:
            raise
        data.notes.append(f"board {board_id!r} of {prof['file']}: {e.message}; no budget shown")
        return None
    ev = data.convert.get("evaluation") or {}
    arena_min = ev.get("tflm_arena_bytes")
    model_file = Path(data.folder) / "model.tflite"
    model_bytes = data.sizes.get("final_bytes") or (model_file.stat().st_size if model_file.is_file() else None)
    runtime, problems = _runtime_problems(model_file, b)
    for problem in problems:
        data.notes.append(f"{board_id} cannot run model.tflite correctly: {problem}")
    if model_bytes is None:
        return None
    f = fit(b, model_bytes=int(model_bytes), arena_min_bytes=arena_min if b.runtime == "tflm" else None,
            quantization=((data.convert.get("recipe") or {}).get("quantize") or {}).get("mode"),
            arena_error=None if arena_min is not None else (ev.get("tflm_error") or "not in report.json"),
            runtime_problems=[{"message": m} for m in problems], tflm_runtime=runtime)
    out = {"board": board_id, "board_name": b.name, "fit": f.to_dict(),
           "flash_bytes": f.flash_bytes, "firmware_flash_bytes": f.firmware_flash_bytes,
           "flash_available_bytes": f.flash_available_bytes, "model_bytes": f.model_bytes,
           "ram_bytes": f.ram_bytes, "firmware_ram_bytes": f.firmware_ram_bytes,
           "ram_available_bytes": f.ram_available_bytes, "arena_bytes": f.arena_bytes,
           "arena_min_bytes": f.arena_min_bytes,
           "arena_source": f"report.json (host TFLM): {f.arena_source}" if arena_min is not None else None,
           "flash_fits": f.flash_needed_bytes <= f.flash_bytes,
           "ram_fits": None if f.ram_needed_bytes is None else f.ram_needed_bytes <= f.ram_bytes,
           "fits": f.fits, "runtime": runtime, "runtime_problems": problems,
           "runs_correctly": None if runtime is None else not problems, "estimate": _budget_estimate(data, b)}
    return out


def _budget_estimate(data: ReportData, board) -> dict[str, Any] | None:
    """The board's time per inference for the final model: an emulated estimate from a profile of it on
    this board, else the MAC-based estimate (edgekit.estimate), each with its label; None for boards
    whose clock is not a board's (virtual, emulated upload boards) or LiteRT boards."""
    import hashlib

    model_file = Path(data.folder) / "model.tflite"
    digest = hashlib.sha256(model_file.read_bytes()).hexdigest() if model_file.is_file() else None
    for p in data.profiles:
        est = p.get("estimate")
        same_model = digest is not None and (p.get("model") or {}).get("sha256") == digest
        if est and same_model and (p.get("board") or {}).get("id") == board.id:
            label = est.get("label") or (f"estimate from {p['file']}: instructions on the emulated core x CPI "
                                         f"{est.get('cpi')} / {board.clock_hz / 1e6:g} MHz")
            return {"latency_us": est["latency_us"], "latency_us_low": est.get("latency_us_low"),
                    "latency_us_high": est.get("latency_us_high"), "label": label, "from": p["file"]}
    if not model_file.is_file():
        return None
    try:
        from edgekit.model.inspect import board_estimate, inspect

        est = board_estimate(inspect(model_file, measure_arena_bytes=False).total_macs, board)
    except EdgekitError:
        return None
    if est is None:
        return None
    return {"latency_us": est["latency_us"], "latency_us_low": est["latency_us_low"],
            "latency_us_high": est["latency_us_high"], "label": est["label"], "from": "model MACs"}


def _runtime_problems(model_file: Path, board) -> tuple[str | None, list[str]]:
    """The board's TFLM runtime (from its board file) and what it cannot run correctly in the model."""
    from edgekit.tflm.compat import check_model, facts_from_board

    facts = facts_from_board(board)
    if facts is None or not model_file.is_file():
        return None, []
    try:
        return facts.label, [p.message for p in check_model(model_file.read_bytes(), facts)]
    except EdgekitError:
        return facts.label, []


# --- charts ---------------------------------------------------------------------------------------

def charts(data: ReportData) -> list[tuple[str, bytes]]:
    """(title, PNG bytes) for every chart the data allows. matplotlib is imported here only."""
    out: list[tuple[str, bytes]] = []
    for title, fig in _figures(data):
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=90)
        out.append((title, buf.getvalue()))
    return out


def _figures(data: ReportData) -> list[tuple[str, Any]]:
    """(title, matplotlib Figure) for every chart the data allows, in the order the report shows them."""
    out: list[tuple[str, Any]] = []
    for chart in (_layer_bytes_chart, _structure_chart, _sparsity_chart, _accuracy_chart, _confusion_chart):
        got = chart(data)
        if got is not None:
            out.append(got)
    out.extend(_float_vs_final_charts(data))
    for p in data.profiles:
        for chart in (_per_op_chart, _histogram_chart):
            got = chart(p)
            if got is not None:
                out.append(got)
    got = _budget_chart(data)
    if got is not None:
        out.append(got)
    return out


def _new_figure(figsize: tuple[float, float], ncols: int = 1):
    # Figure + the Agg canvas directly: no pyplot, so no global backend or figure state is touched
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols)


def _grouped(title, labels, series, ylabel, fmt="{:,.0f}", ylim=None, log=False):
    import numpy as np

    fig, ax = _new_figure((8, 3.6))
    x = np.arange(len(labels))
    w = 0.8 / max(1, len(series))
    for k, (name, vals) in enumerate(series):
        # a missing value is no bar (nan), not a bar of 0: on a log axis 0 does not exist
        v = [np.nan if a is None or (log and a <= 0) else a for a in vals]
        bars = ax.bar(x + (k - (len(series) - 1) / 2) * w, v, w, label=name)
        ax.bar_label(bars, labels=[fmt.format(a) if a is not None else "-" for a in vals], fontsize=7)
    ax.set_xticks(x, labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
        shown = [a for _, vals in series for a in vals if a is not None and a > 0]
        if shown:   # room above the tallest bar for its label
            ax.set_ylim(min(shown) / 2, max(shown) * 4)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def _layer_bytes_chart(data: ReportData):
    if not data.layer_sizes:
        return None
    title = "Weight bytes per layer: float vs final (log scale)"
    rows = data.layer_sizes
    return title, _grouped(title, [f"{r['name']} ({r['op']})" for r in rows],
                           [("float", [r["float_bytes"] for r in rows]), ("final", [r["final_bytes"] for r in rows])],
                           "bytes (log scale)", log=True)


def _structure_chart(data: ReportData):
    fb, bb = data.sizes.get("float_breakdown"), data.sizes.get("final_breakdown")
    if not (fb and bb):
        return None
    fig, ax = _new_figure((8, 2.8))
    names = ["float", "final"]
    w = [fb["weight_bytes"], bb["weight_bytes"]]
    s = [fb["structure_bytes"], bb["structure_bytes"]]
    ax.barh(names, w, label="weights")
    ax.barh(names, s, left=w, label="structure")
    for k in range(2):
        ax.text(w[k] + s[k], k, f" {w[k] + s[k]:,} B", va="center", fontsize=8)
    ax.set_xlabel("bytes")
    ax.set_title("Model bytes: weights vs structure")
    ax.legend(fontsize=8)
    return "Model bytes: weights vs structure", fig


def _sparsity_chart(data: ReportData):
    sp = data.sparsity
    before, after, lite = sp.get("keras_before") or [], sp.get("keras_after") or [], sp.get("tflite") or []
    n = max(len(before), len(after), len(lite))
    if not n:
        return None

    def col(rows):
        return [rows[k]["sparsity"] * 100 if k < len(rows) else None for k in range(n)]

    named = before or after or lite
    labels = [_row_label(named[k], k) if k < len(named) else f"#{k}" for k in range(n)]
    series = [(name, col(rows)) for name, rows in
              (("Keras before", before), ("Keras after", after), ("TFLite int8", lite)) if rows]
    title = "Sparsity per layer (% zero weights)"
    return title, _grouped(title, labels, series, "% zeros", fmt="{:.1f}", ylim=(0, 105))


ACCURACY_MIN_SPAN_POINTS = 3.0      # the accuracy axis spans at least this: a 0.5-point drop is 1/6 of it


def _zoomed_limits(values: list[float], min_span: float, bounds: tuple[float, float] | None = None):
    """An axis range around ``values``: their spread plus a margin, at least ``min_span`` wide, kept
    inside ``bounds`` (shifted, not cut, when it would cross one)."""
    lo, hi = min(values), max(values)
    span = hi - lo
    pad = max(0.2 * span, (min_span - span) / 2)
    lo, hi = lo - pad, hi + pad
    if bounds is not None:
        if hi > bounds[1]:
            lo, hi = lo - (hi - bounds[1]), bounds[1]
        if lo < bounds[0]:
            lo, hi = bounds[0], min(bounds[1], hi + (bounds[0] - lo))
    return lo, hi


def _accuracy_chart(data: ReportData):
    vals = {k: v for k, v in data.accuracy["values"].items() if v is not None}
    if not vals:
        return None
    metric = data.accuracy.get("metric") or "accuracy"
    pct = metric == "accuracy"
    shown = {k: v * 100 if pct else v for k, v in vals.items()}
    base_key = ((data.convert.get("evaluation") or {}).get("delta_vs_float") or {}).get("baseline")
    base_name = {"keras_float": "float (Keras)", "litert_float": "float (LiteRT)"}.get(str(base_key))
    if base_name not in shown:
        base_name = next((k for k in shown if k.startswith("float")), next(iter(shown)))
    base = shown[base_name]
    unit = "points" if pct else metric
    names = list(shown)
    fig, ax = _new_figure((8, 1.2 + 0.5 * len(names)))
    ax.axvline(base, color="gray", linestyle="--", linewidth=1)
    for y, name in enumerate(names):
        v = shown[name]
        d = v - base
        worse = d < 0 if pct else d > 0          # error metrics: higher is worse
        colour = "tab:gray" if name == base_name or abs(d) < 1e-9 else ("tab:red" if worse else "tab:green")
        ax.plot([base, v], [y, y], color=colour, linewidth=2)
        ax.plot([v], [y], "o", color=colour)
        change = f"{d:+.2f} pt" if pct else f"{d:+.4g} {metric}"
        text = (f"{v:.2f}" if pct else f"{v:.4g}") + ("" if name == base_name else f" ({change} vs float)")
        ax.annotate(text, (v, y), xytext=(0, 7), textcoords="offset points", ha="center", fontsize=8)
    if pct:
        lo, hi = _zoomed_limits(list(shown.values()), ACCURACY_MIN_SPAN_POINTS, (0.0, 100.0))
    else:
        spread = max(abs(v) for v in shown.values()) or 1.0
        lo, hi = _zoomed_limits(list(shown.values()), 0.2 * spread)
    ax.set_xlim(lo, hi)
    ax.set_ylim(len(names) - 0.4, -0.7)          # first row on top, room for the labels above the dots
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel(f"{'accuracy (%)' if pct else metric}; axis zoomed to {hi - lo:.3g} {unit}")
    samples = data.accuracy.get("samples")
    title = f"Accuracy vs float ({base_name}, {samples} eval samples)" if samples else f"Accuracy vs {base_name}"
    ax.set_title(title if pct else title.replace("Accuracy", metric.upper()))
    return "Accuracy", fig


def _confusion_chart(data: ReportData):
    conf = (data.convert.get("evaluation") or {}).get("confusion") or {}
    matrix = conf.get("matrix")
    if not matrix:
        return None
    import numpy as np

    m = np.asarray(matrix, dtype=np.int64)
    n = m.shape[0]
    names = [str(c) for c in (data.convert.get("class_names") or [])]
    if len(names) != n:
        names = [str(k) for k in range(n)]
    runtime = {"tflm": "host TFLM", "litert": "LiteRT"}.get(str(conf.get("runtime")), str(conf.get("runtime")))
    fig, ax = _new_figure((min(9, 2.5 + 0.5 * n), min(8, 2 + 0.45 * n)))
    ax.imshow(m, cmap="Blues")
    top = m.max() or 1
    for i in range(n):
        for j in range(n):
            if m[i, j]:
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if m[i, j] > top / 2 else "black")
    ax.set_xticks(range(n), names, rotation=45 if max(map(len, names)) > 2 else 0, ha="right", fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    total = int(m.sum())
    ax.set_title(f"Confusion matrix of the final model ({runtime}, {total} eval samples, "
                 f"{100 * np.trace(m) / max(total, 1):.2f} % correct)", fontsize=9)
    return f"Confusion matrix (final model, {runtime})", fig


def _source_label(p: dict) -> str:
    """What a profile's numbers are, in words: never a board's time when they are the host's."""
    timing = p.get("timing") or {}
    bid = (p.get("board") or {}).get("id", "?")
    est = p.get("estimate") or {}
    source = timing.get("source")
    if source == "device":
        return f"measured on {bid}"
    if source == "host":
        return f"host time on {bid} (this computer, not a board's time)"
    if source == "emulated" and est.get("estimate"):
        cpi, clock = est.get("cpi"), est.get("clock_hz")
        how = f"CPI {cpi:g} / {clock / 1e6:g} MHz" if cpi and clock else "CPI / clock"
        return f"estimate for {bid}: emulated instructions x {how}"
    if source == "emulated":
        return f"instructions counted on the emulated target ({bid}), not time"
    if source == "estimate":
        cpm, clock = est.get("cycles_per_mac"), est.get("clock_hz")
        how = f": MACs x {cpm:g} cycles per MAC / {clock / 1e6:g} MHz" if cpm and clock else ""
        return f"MAC-based estimate for {bid}{how} (nothing ran)"
    return f"{bid}: {timing.get('label') or 'timing source not stated'}"


def _model_role(p: dict, convert: dict) -> str:
    """'final (recipe)', 'float' or the profiled file's name."""
    sha = (p.get("model") or {}).get("sha256")
    if sha and sha == convert.get("model_sha256"):
        return f"final ({convert.get('recipe_summary') or 'model.tflite'})"
    if sha and sha == convert.get("float_model_sha256"):
        return "float"
    return Path(str((p.get("model") or {}).get("path") or p.get("file"))).name


def _typical(p: dict, baseline: dict | None) -> tuple[str | None, dict | None, str, str]:
    """(statistic, the profile's stats of it, the baseline key, unit) to compare a model with its float
    baseline: the median where both have it (what energy uses), else the mean."""
    counts = (p.get("timing") or {}).get("unit") == "instructions"
    stats, prefix = (p.get("instructions"), "instructions_") if counts else (p.get("latency_us"), "latency_us_")
    if not stats:
        return None, None, "", ""
    b = baseline or {}
    stat = "median" if stats.get("median") is not None and (not b or f"{prefix}median" in b) else "mean"
    return stat, stats, prefix + stat, "instructions" if counts else "µs"


def _comparison_rows(p: dict, convert: dict) -> tuple[str, list[dict]]:
    """(unit, rows) of one profile: its float baseline (when measured) and its own model, each with
    ``name``, ``time`` and optional ``band``, ``energy_uj``, ``energy_band``."""
    fb = p.get("float_baseline") or {}
    if "skipped" in fb:
        fb = {}
    est = p.get("estimate") or {}
    energy = p.get("energy") or {}
    if est.get("estimate"):      # emulated board: estimated µs and µJ (with the CPI band)
        t = est.get("latency_us")
        if t is None:
            return "", []
        band = (est.get("latency_us_low"), est.get("latency_us_high"))
        row = {"name": _model_role(p, convert), "time": t, "band": band,
               "energy_uj": energy.get("per_inference_uj"),
               "energy_band": (energy.get("per_inference_uj_low"), energy.get("per_inference_uj_high"))}
        rows = [row]
        ft = fb.get("estimated_latency_us")
        if ft is not None:
            k = [None if b is None else b / t for b in band] if t else [None, None]
            rows.insert(0, {"name": "float", "time": ft, "band": tuple(None if r is None else ft * r for r in k),
                            "energy_uj": fb.get("per_inference_uj") if row["energy_uj"] is not None else None,
                            "energy_band": tuple(None if r is None or fb.get("per_inference_uj") is None
                                                 else fb["per_inference_uj"] * r for r in k)})
        return "estimated µs", rows
    stat, stats, key, unit = _typical(p, fb)
    if stats is None or stats.get(stat) is None:
        return "", []
    ci = ("median_ci95_low", "median_ci95_high") if stat == "median" else ("ci95_low", "ci95_high")
    measured = (p.get("timing") or {}).get("source") == "device"
    # energy only from a board's own time (board power x measured time); host time has none
    uj = energy.get("per_inference_uj") if measured else None
    rows = [{"name": _model_role(p, convert), "time": stats[stat], "band": (stats.get(ci[0]), stats.get(ci[1])),
             "energy_uj": uj,
             "energy_band": (energy.get("per_inference_uj_low"), energy.get("per_inference_uj_high"))}]
    if fb.get(key) is not None:
        rows.insert(0, {"name": "float", "time": fb[key], "band": (None, None),
                        "energy_uj": fb.get("per_inference_uj") if uj is not None else None,
                        "energy_band": (None, None)})
    return f"{stat} {unit}", rows


def _float_vs_final_charts(data: ReportData) -> list[tuple[str, Any]]:
    """Float vs final (vs any other profiled model) per board and timing source: time, and energy where
    it comes from an estimate or a board's measured time; one chart per group of comparable profiles."""
    groups: dict[tuple, dict] = {}
    for p in data.profiles:
        unit, rows = _comparison_rows(p, data.convert)
        if not rows:
            continue
        key = ((p.get("board") or {}).get("id"), (p.get("timing") or {}).get("source"), unit)
        g = groups.setdefault(key, {"label": _source_label(p), "unit": unit, "rows": {}, "energy_method": None})
        if (p.get("energy") or {}).get("method") and any(r["energy_uj"] is not None for r in rows):
            g["energy_method"] = g["energy_method"] or p["energy"]["method"]
        for r in rows:
            g["rows"].setdefault(r["name"], r)
    out = []
    for g in groups.values():
        rows = list(g["rows"].values())
        if len(rows) < 2:
            continue
        rows.sort(key=lambda r: (r["name"] != "float", not r["name"].startswith("final")))
        with_energy = [r for r in rows if r["energy_uj"] is not None]
        fig, axes = _new_figure((9 if with_energy else 8, 1.8 + 0.5 * len(rows)), 2 if with_energy else 1)
        axes = list(axes) if with_energy else [axes]
        unit = "instructions" if "instructions" in g["unit"] else "µs"
        _comparison_bars(axes[0], rows, "time", unit)
        axes[0].set_xlabel(f"{g['unit']} per inference")
        axes[0].set_title("instructions" if "instructions" in unit else
                          "time (estimate)" if g["unit"].startswith("estimated") else "time", fontsize=9)
        if with_energy:
            _comparison_bars(axes[1], with_energy, "energy_uj", "µJ")
            axes[1].set_xlabel("estimated µJ per inference")
            axes[1].set_title(f"energy (estimate: {g['energy_method']})", fontsize=7, wrap=True)
        fig.suptitle(f"Float vs final: {g['label']}", fontsize=9)
        title = f"Float vs final {'time and energy' if with_energy else 'time'}: {g['label']}"
        out.append((title, fig))
    return out


def _comparison_bars(ax, rows: list[dict], key: str, unit: str) -> None:
    import numpy as np

    band_key = "band" if key == "time" else "energy_band"
    vals = [r[key] for r in rows]
    err = np.array([[v - (r[band_key][0] if r[band_key][0] is not None else v) for r, v in zip(rows, vals)],
                    [(r[band_key][1] if r[band_key][1] is not None else v) - v for r, v in zip(rows, vals)]])
    colours = ["tab:gray" if r["name"] == "float" else "tab:blue" for r in rows]
    bars = ax.barh([r["name"] for r in rows], vals, color=colours,
                   xerr=np.clip(err, 0, None) if err.any() else None, capsize=3)
    base = vals[0] if rows[0]["name"] == "float" else None
    labels = [f"{v:,.1f} {unit}" + ("" if base is None or r["name"] == "float" or not base
                                    else f" ({v / base:.2f}x float)") for r, v in zip(rows, vals)]
    ax.bar_label(bars, labels=labels, fontsize=7, padding=3)
    ax.set_xlim(0, max(vals + [r[band_key][1] or 0 for r in rows]) * 1.6)
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=8)


def _per_op_values(p: dict) -> tuple[str, str, str]:
    """(row key, unit, what) of a profile's per-op bars: a board's estimated time where the emulated
    board has one, else instruction counts, else time (measured or host, as ``timing`` says)."""
    rows = p.get("per_op") or []
    if rows and all(r.get("estimated_us") is not None for r in rows):
        return "estimated_us", "µs", "estimated time"
    if (p.get("timing") or {}).get("unit") == "instructions":
        return "instructions_mean", "instructions", "instructions"
    return "mean_us", "µs", "latency"


def _per_op_chart(p: dict):
    if not p.get("per_op"):
        return None
    key, unit, what = _per_op_values(p)
    label = _source_label(p)
    ops = sorted(p["per_op"], key=lambda o: -(o.get(key) or 0))
    fig, ax = _new_figure((8, 0.9 + 0.35 * len(ops)))
    bars = ax.barh([o["name"] for o in ops], [o.get(key) or 0 for o in ops],
                   color="tab:olive" if key == "estimated_us" else "tab:orange")
    suffix = " (estimate)" if key == "estimated_us" else ""
    ax.bar_label(bars, labels=[f"{o.get(key) or 0:,.1f} {unit}{suffix}" for o in ops], fontsize=8)
    ax.set_xlim(0, max(o.get(key) or 0 for o in ops) * 1.35 or 1)
    ax.invert_yaxis()
    ax.set_xlabel(f"{'estimated ' if key == 'estimated_us' else 'mean '}{unit} per inference")
    ax.set_title(f"Per-op {what}: {label} ({p['file']})", fontsize=9)
    return f"Per-op {what}: {label} ({p['file']})", fig


def _histogram_chart(p: dict):
    samples = p.get("latency_samples_us") or []
    if not samples:
        return None
    label = _source_label(p)
    fig, ax = _new_figure((8, 3.2))
    ax.hist(samples, bins=min(40, max(5, len(samples) // 5)), color="tab:purple")
    lat = p.get("latency_us") or {}
    for key, style in (("median", "-"), ("p99", "--")):
        if lat.get(key) is not None:
            ax.axvline(lat[key], color="black", linestyle=style, label=f"{key} {lat[key]:.1f} µs")
    ax.set_xlabel("host time per run (µs)" if (p.get("timing") or {}).get("source") == "host" else "latency (µs)")
    ax.set_ylabel("runs")
    ax.set_title(f"Latency of {len(samples)} runs: {label} ({p['file']})", fontsize=9)
    ax.legend(fontsize=8)
    return f"Latency histogram ({p['file']})", fig


def _budget_chart(data: ReportData):
    b = data.budget
    if not b:
        return None
    fig, ax = _new_figure((8, 2.6))
    rows = [("flash", b["model_bytes"], b["flash_available_bytes"]),
            ("RAM (arena)", b["arena_bytes"], b["ram_available_bytes"])]
    for k, (name, used, avail) in enumerate(rows):
        # share of what the firmware leaves: flash and RAM differ by orders of magnitude in bytes
        ax.barh(k, 100, color="lightgray", label="available" if k == 0 else None)
        if used is not None:
            share = 100 * used / max(avail, 1)
            ax.barh(k, min(share, 100), height=0.5, color="tab:red" if used > avail else "tab:blue",
                    label="used" if k == 0 else None)
            ax.text(min(share, 100), k, f" {used:,} / {avail:,} B ({share:.1f} %)", va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of what the firmware leaves")
    ax.set_title(f"Budget on {b['board']} (after firmware)")
    ax.legend(fontsize=8, loc="lower right")
    return "Budget", fig


# --- HTML -----------------------------------------------------------------------------------------

_CSS = """body{font-family:sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#eee}td:first-child,th:first-child{text-align:left}
img{display:block;margin:0.5em 0 1.5em;max-width:100%}.note{color:#666}"""


def _row_label(row: dict, k: int) -> str:
    """A sparsity row's name: Keras layer, else tensor name, else op and position (stripped models)."""
    return str(row.get("layer") or row.get("tensor") or f"{row.get('op', 'op')} #{k}")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def tables(data: ReportData) -> list[tuple[str, list[str], list[list[Any]]]]:
    """The report's facts as (title, header, rows): the same for HTML and the terminal."""
    s = data.sizes
    out = [("Sizes", ["", "bytes", "gzip bytes"],
            [["float model", s.get("float_bytes"), s.get("float_gzip_bytes")],
             ["final model", s.get("final_bytes"), s.get("final_gzip_bytes")],
             ["final / float", s.get("ratio"), None]])]
    fb, bb = s.get("float_breakdown") or {}, s.get("final_breakdown") or {}
    if fb or bb:
        out.append(("Weights vs structure", ["", "weight bytes", "structure bytes", "total bytes"],
                    [["float", fb.get("weight_bytes"), fb.get("structure_bytes"), fb.get("total_bytes")],
                     ["final", bb.get("weight_bytes"), bb.get("structure_bytes"), bb.get("total_bytes")]]))
    if data.layer_sizes:
        out.append(("Weight bytes per layer", ["layer", "op", "float bytes", "final bytes", "LUT-decoded"],
                    [[r["name"], r["op"], r["float_bytes"], r["final_bytes"], r["decoded"]]
                     for r in data.layer_sizes]))
    out.extend(_pruning_tables(data.convert))
    sp = data.sparsity
    zeros = " (zeros are stored and multiplied on TFLM)"
    for key, title in (("keras_before", "Sparsity before (Keras)"), ("keras_after", "Sparsity after (Keras)" + zeros),
                       ("tflite", "Sparsity of int8 weights (TFLite)" + zeros)):
        rows = sp.get(key) or []
        if rows:
            out.append((title, ["layer", "params", "zeros %", "distinct values"],
                        [[_row_label(r, k), r.get("params"), round(r["sparsity"] * 100, 2),
                          r.get("unique_values")] for k, r in enumerate(rows)]))
    acc = data.accuracy
    if any(v is not None for v in acc["values"].values()):
        metric = acc.get("metric") or "accuracy"
        out.append((f"{metric.capitalize()} ({_fmt(acc.get('samples'))} samples)", ["model", metric],
                    [[k, v] for k, v in acc["values"].items()]))
    for p in data.profiles:
        bid = (p.get("board") or {}).get("id")
        where = _timing_suffix(p)
        stats = ("mean", "median", "p90", "p99", "min", "max", "std")
        if p.get("latency_us"):
            lat = p["latency_us"]
            out.append((f"Latency on {bid}{where} ({p['file']}, {_fmt(p.get('runs'))} runs)",
                        ["", "us"], [[k, lat.get(k)] for k in stats]))
        if p.get("instructions"):
            ins = p["instructions"]
            out.append((f"Instructions per inference on {bid}{where} ({p['file']}, {_fmt(p.get('runs'))} runs)",
                        ["", "instructions"], [[k, ins.get(k)] for k in stats]))
        if p.get("per_op"):
            key, unit = _per_op_key(p)
            out.append((f"Per-op {'instructions' if unit == 'instructions' else 'latency'} on {bid}{where}",
                        ["op", "count", f"mean {unit}", "share %"],
                        [[o["name"], o.get("count"), o.get(key), round(o.get("share", 0) * 100, 1)]
                         for o in p["per_op"]]))
    for v in data.validations:
        out.append((f"Validation on {v.get('board')} ({v['file']})", ["", "value"],
                    [[k, v.get(k)] for k in ("samples", "agreement", "agreement_tflm", "max_lsb",
                                            "accuracy_device", "accuracy_host", "passed")]))
    b = data.budget
    if b:
        out.append((f"Budget on {b['board']} ({b['board_name']})", ["", "used", "available", "total", "fits"],
                    [["flash (model)", b["model_bytes"], b["flash_available_bytes"], b["flash_bytes"],
                      b["flash_fits"]],
                     ["RAM (arena)", b["arena_bytes"], b["ram_available_bytes"], b["ram_bytes"], b["ram_fits"]],
                     *([[f"runs correctly on {b['runtime']}", "", "", "", b["runs_correctly"]]] if b.get("runtime") else []),
                     *([["estimated time per inference (ms)", round(b["estimate"]["latency_us"] / 1000, 2), "", "",
                         ""]] if b.get("estimate") else [])]))
    return out


def _pruning_tables(convert: dict) -> list[tuple[str, list[str], list[list[Any]]]]:
    """What channel pruning and unstructured pruning bought, as report.json measured it."""
    out = []
    cp = convert.get("channel_pruning")
    if cp:
        b, a, ch = cp["before"], cp["after"], cp.get("change") or {}
        names = (("params", "parameters (Keras)"), ("macs", "MACs (from the .tflite)"), ("bytes", "model bytes"),
                 ("gzip_bytes", "gzip bytes"), ("arena_bytes", "TFLM arena bytes (exact)"))
        out.append((f"Channel pruning ({cp['criterion']}, {cp['scope']}, fraction {cp['fraction']:g}): unshrunk model "
                    "vs final", ["", "before", "after", "change %"],
                    [[label, b.get(k), a.get(k), None if ch.get(k) is None else round(100 * ch[k], 1)]
                     for k, label in names]))
        out.append(("Channels per layer (layers kept whole: see the notes)",
                    ["layer", "type", "channels before", "channels after", "MACs before", "MACs after"],
                    [[r["layer"], r["type"], r["channels_before"], r["channels_after"], r.get("macs_before"),
                      r.get("macs_after")] for r in cp["layers"]]))
    up = convert.get("unstructured_pruning")
    if up:
        rows = []
        for r in up["runtimes"]:
            if "bytes" in r:               # the sparse format: against the dense pruned file
                rows.append([r["runtime"], up["pruned"]["bytes"], r["bytes"], None, None, None, None,
                             "yes" if not r.get("tflm_missing_ops") else "no: " + ", ".join(r["tflm_missing_ops"])])
            else:
                tflm = "macs_before" in r
                rows.append([r["runtime"], r.get("bytes_before"), r.get("bytes_after"), r.get("macs_before"),
                             r.get("macs_after"), r.get("arena_bytes_before"), r.get("arena_bytes_after"),
                             ("yes" if r.get("arena_bytes_after") else "no") if tflm else None])
        out.append((f"What unstructured pruning buys ({round(100 * up['int8_weight_sparsity'], 1)} % zeros), measured "
                    "(what each row means: see the notes)",
                    ["runtime", "bytes before", "bytes after", "MACs before", "MACs after", "arena before",
                     "arena after", "runs on TFLM"], rows))
    return out


def _timing_suffix(p: dict) -> str:
    source = (p.get("timing") or {}).get("source")
    return {"host": " (host time)", "emulated": " (emulated Cortex-M4)"}.get(source, "")


def _per_op_key(p: dict) -> tuple[str, str]:
    if (p.get("timing") or {}).get("unit") == "instructions":
        return "instructions_mean", "instructions"
    return "mean_us", "us"


def text_notes(data: ReportData) -> list[str]:
    """One-line remarks shown under the tables (missing per-op data, runtime caveats, ...)."""
    notes = list(data.notes) + list(data.accuracy.get("notes") or [])
    cp = data.convert.get("channel_pruning")
    if cp:
        notes.append(f"channel pruning, before = {cp['reference']}; {cp['instructions']}")
        notes.extend(f"channel pruning kept {u['layer']} ({u['type']}) whole: {u['reason']}" for u in cp["unprunable"])
    up = data.convert.get("unstructured_pruning")
    if up:
        notes.extend(f"unstructured pruning on {r['runtime']}: {r['buys']}" for r in up["runtimes"])
        notes.append(f"unstructured pruning measured on {up['measured_on']}; {up['speed']}")
    for p in data.profiles:
        label = (p.get("timing") or {}).get("label")
        if label:
            notes.append(f"{p['file']}: {label}")
    for p in data.profiles:
        if not p.get("per_op"):
            notes.append(f"{p['file']}: no per-op data: {p.get('per_op_note') or 'not reported'}")
    if not data.profiles:
        notes.append("no profile results in the folder (edgekit profile MODEL --json > FOLDER/profile.json)")
    if data.budget and data.budget.get("arena_source"):
        notes.append(f"arena from {data.budget['arena_source']}")
    if data.budget and data.budget.get("estimate"):
        notes.append(f"estimated time on {data.budget['board']}: {data.budget['estimate']['label']}")
    if data.budget:
        notes.append(f"firmware size: {data.budget['fit']['firmware_source']}")
    return notes


def render_html(data: ReportData) -> str:
    """The whole report as one HTML document (charts embedded as PNG data URIs)."""
    c = data.convert
    e = html.escape
    parts = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
             f"<title>edgekit report: {e(str(c.get('source')))}</title>", f"<style>{_CSS}</style></head><body>",
             "<h1>edgekit report</h1>",
             f"<p>source <b>{e(str(c.get('source')))}</b> &middot; recipe {e(str(c.get('recipe_summary')))}"
             f" &middot; model sha256 <code>{e(str(c.get('model_sha256')))}</code>"
             f" &middot; edgekit {e(str(c.get('edgekit_version')))}</p>"]
    parts.append("<h2>Charts</h2>")
    for title, png in charts(data):
        b64 = base64.b64encode(png).decode("ascii")
        parts.append(f"<h3>{e(title)}</h3><img alt='{e(title)}' src='data:image/png;base64,{b64}'>")
    parts.append("<h2>Tables</h2>")
    for title, header, rows in tables(data):
        parts.append(f"<h2>{e(title)}</h2><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
        for r in rows:
            parts.append("<tr>" + "".join(f"<td>{e(_fmt(v))}</td>" for v in r) + "</tr>")
        parts.append("</table>")
    notes = text_notes(data)
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li class='note'>{e(n)}</li>" for n in notes) + "</ul>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_html(folder: str | Path, out: str | Path | None = None, *, board: str | None = None) -> ReportData:
    """Collect ``folder`` and write the HTML report atomically (default: FOLDER/report.html)."""
    from edgekit.fileio import write_text

    data = collect(folder, board=board)
    write_text(Path(out) if out is not None else Path(folder) / "report.html", render_html(data))
    return data
