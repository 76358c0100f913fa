"""`edgekit diagnose`: which layer loses accuracy in int8, and the cheapest setting that keeps it."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgekit import schemas

from edgekit.cli.output import Output


def _num(v, fmt: str = "{:.4f}") -> str:
    return "-" if v is None else fmt.format(v)


def _score(doc: dict, score: dict) -> str:
    metric = doc.get("metric")
    if not score or metric not in score:
        return "-"
    return f"{100 * score[metric]:.2f} %" if metric == "accuracy" else f"{score[metric]:.4g}"


def _human(out: Output, doc: dict) -> None:
    from rich.table import Table

    c = out.console
    n = doc["samples"]
    t = Table(title=f"Per layer: float vs plain int8 PTQ ({n['layers']} samples, LiteRT)", header_style="bold")
    for col in ("#", "op", "layer", "cosine", "rel L2", "worst channel rel L2", "alone int8: drop pt",
                "alone int8: out rel L2", "rank"):
        t.add_column(col, justify="left" if col in ("op", "layer") else "right")
    chosen_cols = any("chosen" in r for r in doc["layers"])
    if chosen_cols:
        t.add_column("rel L2 after fix", justify="right")
    for r in doc["layers"]:
        alone = r.get("alone_int8") or {}
        row = [str(r["index"]), r["op"], r["layer"], _num(r.get("cosine")), _num(r.get("rel_l2")),
               _num(r.get("worst_channel_rel_l2")), _num(alone.get("drop_points"), "{:+.2f}"),
               _num(alone.get("rel_l2")), str(r.get("sensitivity_rank", "-"))]
        if chosen_cols:
            row.append(_num((r.get("chosen") or {}).get("rel_l2")))
        t.add_row(*row)
    c.print(t)
    if doc["float"]:
        base = doc["baseline"]
        c.print(f"float {doc['metric']}: {_score(doc, doc['float'])} (LiteRT); plain int8 PTQ: "
                f"{_score(doc, base['score'])}, drop {base['drop_points']:+.2f} points (host TFLM)")
    if doc["trials"]:
        t = Table(title=f"Settings, cheapest on the device first (host TFLM, {n['eval']} samples; "
                        f"budget {doc['max_drop_points']:g} points)", header_style="bold")
        for col in ("setting", "model bytes", "arena (recorded)", doc["metric"], "drop pt", ""):
            t.add_column(col, justify="left" if col in ("setting", "") else "right")
        for tr in doc["trials"]:
            t.add_row(tr["setting"]["name"], f"{tr['model_bytes']:,}",
                      f"{tr['arena_bytes']:,}" if tr["arena_bytes"] else "-", _score(doc, tr["score"]),
                      f"{tr['drop_points']:+.2f}", "meets" if tr["meets"] else "; ".join(tr["notes"]))
        c.print(t)
    for s in doc["skipped"]:
        c.print(f"[dim]not tried: {s['setting']}: {s['reason']}[/dim]")
    for note in doc["notes"]:
        c.print(f"[dim]{note}[/dim]")
    ch = doc["chosen"]
    if ch:
        base = doc["baseline"]
        arena = (f", exact arena {ch['exact_arena_bytes']:,} B (plain int8 PTQ: {base['exact_arena_bytes']:,} B)"
                 if ch["exact_arena_bytes"] and base["exact_arena_bytes"] else "")
        c.print(f"cheapest setting within {doc['max_drop_points']:g} points: [bold]{ch['setting']['name']}[/] "
                f"({ch['drop_points']:+.2f} points, {ch['model_bytes']:,} B{arena}, host TFLM)")
        if ch["setting"]["float_layers"]:
            c.print("[dim]float fallback is not applied by convert --auto-fix (it tries dense, bias and 16x8)[/dim]")
        else:
            c.print(f"apply it: edgekit convert MODEL -o OUT --data D --eval E --auto-fix --max-drop "
                    f"{doc['max_drop_points']:g}" + (f" --board {doc['board']}" if doc["board"] else ""))
    elif doc["closest"]:
        cl = doc["closest"]
        c.print(f"[yellow]no setting within {doc['max_drop_points']:g} points[/]; closest: {cl['setting']['name']} "
                f"at {cl['drop_points']:+.2f} points")


def register(app: typer.Typer) -> None:
    @app.command("diagnose")
    def diagnose_cmd(
        model: Path = typer.Argument(..., help="Keras model: .keras, .h5 or a SavedModel folder."),
        data: Path = typer.Option(..., "--data", help="Calibration data (.npz, .npy, .csv, image folder)."),
        eval_data: Optional[Path] = typer.Option(None, "--eval", help="Labelled evaluation data (needed to "
                                                 "choose a setting)."),
        board: Optional[str] = typer.Option(None, "--board", "-b", help="Only settings this board's TFLM runs."),
        tflm_src: Optional[Path] = typer.Option(None, "--tflm-src", help="Read the runtime's facts from this TFLM "
                                                "source tree (instead of the board file)."),
        max_drop: float = typer.Option(1.0, "--max-drop", help="Accuracy points the chosen setting may lose "
                                       "against float."),
        fixes: Optional[str] = typer.Option(None, "--fixes", help="Fixes to try, comma list of dense, bias, 16x8, "
                                            "float (default: dense,bias,16x8)."),
        float_io: bool = typer.Option(False, "--float-io", help="Float input/output tensors."),
        calibration_samples: int = typer.Option(300, "--calibration-samples"),
        samples: Optional[int] = typer.Option(None, "--samples", help="Evaluate on the first N --eval samples."),
        layer_samples: int = typer.Option(200, "--layer-samples", help="Samples for the per-layer errors and "
                                          "the sensitivity ranking."),
        unsafe_allow_lambda: bool = typer.Option(False, "--unsafe-allow-lambda",
                                                 help="Load models with Lambda layers (runs their code)."),
        json_out: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
        quiet: bool = typer.Option(False, "-q", "--quiet"),
    ) -> None:
        """Per-layer int8 error and sensitivity; the cheapest quantization within --max-drop (host TFLM)."""
        from edgekit import _tf
        from edgekit.errors import UsageError

        for name, value in (("--calibration-samples", calibration_samples), ("--layer-samples", layer_samples),
                            ("--samples", samples)):
            if value is not None and value < 1:
                raise UsageError(f"{name} must be at least 1, got {value}")
        from edgekit.conversion.doctor import diagnose, parse_fixes

        parse_fixes(fixes)          # a bad --fixes fails before TensorFlow loads
        output = Output(json_mode=json_out, quiet=quiet)
        with output.progress() as progress, _tf.quiet_native():
            result = diagnose(model, data, eval_data, board=board, tflm_src=tflm_src, max_drop=max_drop,
                              fixes=fixes, io="float" if float_io else "int8",
                              calibration_samples=calibration_samples, eval_samples=samples,
                              layer_samples=layer_samples, allow_lambda=unsafe_allow_lambda, progress=progress,
                              warn=output.warn, raise_if_unmet=False)
        output.result(result.to_dict(), _human, schema=schemas.DIAGNOSE)
        result.raise_if_unmet()
