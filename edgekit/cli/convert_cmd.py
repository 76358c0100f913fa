"""`edgekit convert`: flags -> Recipe -> edgekit.convert -> table or JSON."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgekit import schemas

from edgekit.cli.output import Output


def _human(out: Output, rep: dict) -> None:
    from rich.table import Table

    s = rep["sizes"]
    t = Table(title=f"edgekit convert: {rep['recipe_summary']}", show_header=True, header_style="bold")
    t.add_column("")
    t.add_column("float32 baseline", justify="right")
    t.add_column("final", justify="right")
    t.add_row("model bytes", f"{s['float_bytes']:,}", f"{s['final_bytes']:,}  ({s['ratio']:.3f}x)")
    t.add_row("gzip bytes", f"{s['float_gzip_bytes']:,}", f"{s['final_gzip_bytes']:,}")
    fb = s["final_breakdown"]
    t.add_row("weights / structure", f"{s['float_breakdown']['weight_bytes']:,} / "
              f"{s['float_breakdown']['structure_bytes']:,}",
              f"{fb['weight_bytes']:,} / {fb['structure_bytes']:,}")
    ev = rep.get("evaluation") or {}
    if ev:
        metric = ev["delta_vs_float"]["metric"]
        base = ev.get("keras_float") or ev.get("litert_float") or {}

        def fmt(d):
            if not d or metric not in d:
                return "-"
            return f"{d[metric]:.4f}"

        t.add_row(f"{metric} (Keras / LiteRT float)", fmt(base), "")
        t.add_row(f"{metric} LiteRT", "", fmt(ev.get("litert")) if ev.get("litert") else
                  ev.get("litert_note", ev.get("litert_error", "-")))
        t.add_row(f"{metric} TFLM (host)", "", fmt(ev.get("tflm")))
        agree = ev.get("litert_vs_tflm")
        if agree:
            t.add_row("LiteRT vs TFLM", "", f"argmax {agree.get('argmax_agreement', float('nan')):.3f}, "
                                             f"max {agree.get('max_diff_lsb', '-')} LSB")
        if ev.get("tflm_arena_bytes"):
            t.add_row("TFLM arena bytes", "", f"{ev['tflm_arena_bytes']:,}")
    out.console.print(t)
    quant = next((st for st in rep.get("stages", []) if st["stage"] == "quantize"), {})
    if quant.get("settings", {}).get("auto_fix"):
        doc = quant["doctor"]["chosen"]
        out.console.print(f"auto-fix: {doc['setting']['name']} ({doc['drop_points']:+.2f} points against float "
                          f"on host TFLM, budget {quant['doctor']['max_drop_points']:g})")
    elif quant.get("dense_choice"):
        dc = quant["dense_choice"]
        if "cost_points" in dc:
            out.console.print(f"dense weights: {dc['chosen']} (per-tensor costs {dc['cost_points']:+.2f} points "
                              f"against per-channel on host TFLM; kept where <= {dc['max_cost_points']:g})")
    if rep.get("needs_tflm"):
        out.console.print("[yellow]note:[/] LUT-compressed: this model runs on TFLite-Micro only")
    from edgekit.conversion.payoff import human_lines

    for line in human_lines(rep):
        out.console.print(line, markup=False, highlight=False)
    out.console.print(f"model sha256 {rep['model_sha256'][:16]}…  ({rep['duration_s']:.1f} s)")


def register(app: typer.Typer) -> None:
    @app.command("convert")
    def convert(
        model: Path = typer.Argument(..., help="Keras model: .keras, .h5 or a SavedModel folder."),
        out: Path = typer.Option(..., "-o", "--out", help="Artifact folder (model.tflite, report.json)."),
        data: Optional[Path] = typer.Option(None, "--data", help="Calibration / fine-tuning data "
                                            "(.npz with x,y; .npy; .csv; image folder)."),
        eval_data: Optional[Path] = typer.Option(None, "--eval", help="Labelled evaluation data."),
        recipe: Optional[Path] = typer.Option(None, "--recipe", help="Recipe YAML (instead of stage flags)."),
        prune: Optional[float] = typer.Option(None, "--prune", help="Target sparsity in (0, 1)."),
        prune_channels: Optional[float] = typer.Option(None, "--prune-channels",
                                                       help="Remove this fraction of each Conv/Dense layer's "
                                                            "output channels, in (0, 1) (a smaller model)."),
        cluster: Optional[int] = typer.Option(None, "--cluster", help="Clusters per layer (>= 2)."),
        qat: bool = typer.Option(False, "--qat", help="Quantization-aware training (preserving)."),
        quantize: str = typer.Option("int8", "--quantize", help="int8 | float16 | dynamic | none."),
        float_io: bool = typer.Option(False, "--float-io", help="Keep float input/output on int8 models."),
        compress: Optional[str] = typer.Option(None, "--compress", help="TFLM LUT compression: lut1..lut7, or auto (bits per tensor, only where it makes the model smaller)."),
        max_arena: Optional[str] = typer.Option(None, "--max-arena",
                                                help="With --compress auto: keep tensors plain until the exact "
                                                     "arena (decoded weights included) is at most this, e.g. "
                                                     "64k (default with --board: what the board's RAM leaves)."),
        epochs: Optional[int] = typer.Option(None, "--epochs", help="Fine-tuning epochs per stage."),
        batch_size: int = typer.Option(32, "--batch-size"),
        learning_rate: Optional[float] = typer.Option(None, "--lr", help="Fine-tuning learning rate."),
        calibration_samples: int = typer.Option(300, "--calibration-samples"),
        seed: int = typer.Option(0, "--seed"),
        no_strip: bool = typer.Option(False, "--keep-metadata",
                                      help="Keep signatures, names and metadata TFLM never reads."),
        unsafe_allow_lambda: bool = typer.Option(False, "--unsafe-allow-lambda",
                                                 help="Load models with Lambda layers (runs their code)."),
        board: Optional[str] = typer.Option(None, "--board", "-b",
                                            help="Make what this board's TFLM runtime runs correctly (per-tensor "
                                                 "dense weights where it needs them; refuses --compress without DECODE)."),
        dense_per_tensor: bool = typer.Option(False, "--dense-per-tensor",
                                              help="One weight scale per dense layer (not per output channel)."),
        dense_per_channel: bool = typer.Option(False, "--dense-per-channel",
                                               help="Keep per-channel dense weights even where per-tensor costs "
                                                    "<= 0.1 point on --eval (the default choice)."),
        auto_fix: bool = typer.Option(False, "--auto-fix", help="Quantize with the doctor's cheapest setting "
                                      "within --max-drop points of float (edgekit diagnose; needs --eval)."),
        max_drop: float = typer.Option(1.0, "--max-drop", help="Accuracy points --auto-fix may lose."),
        json_out: bool = typer.Option(False, "--json", help="Print report.json on stdout."),
        quiet: bool = typer.Option(False, "-q", "--quiet"),
    ) -> None:
        """Shrink a Keras model (prune, cluster, QAT, quantize, compress) and convert it to TFLite."""
        from edgekit import _tf
        from edgekit.errors import UsageError
        from edgekit.optimize.recipe import Recipe, load_recipe

        output = Output(json_mode=json_out, quiet=quiet)
        if dense_per_tensor and dense_per_channel:
            raise UsageError("give --dense-per-tensor or --dense-per-channel, not both")
        stage_flags = (prune is not None or prune_channels is not None or cluster is not None or qat
                       or compress is not None or max_arena is not None)
        if recipe is not None:
            if stage_flags:
                raise UsageError("give either --recipe or stage flags (--prune-channels/--prune/--cluster/--qat/"
                                 "--compress)")
            rec = load_recipe(recipe)
        else:
            if prune is not None and not 0 < prune < 1:
                raise UsageError(f"--prune must be in (0, 1), got {prune}", hint="e.g. --prune 0.75")
            if prune_channels is not None and not 0 < prune_channels < 1:
                raise UsageError(f"--prune-channels must be in (0, 1), got {prune_channels}",
                                 hint="the fraction of each layer's output channels to remove, "
                                      "e.g. --prune-channels 0.5")
            if cluster is not None and cluster < 2:
                raise UsageError(f"--cluster must be at least 2, got {cluster}", hint="e.g. --cluster 16")
            rec = Recipe.from_flags(prune=prune, cluster=cluster, qat=qat, quantize=quantize,
                                    float_io=float_io, compress=compress, epochs=epochs,
                                    batch_size=batch_size, learning_rate=learning_rate,
                                    calibration_samples=calibration_samples, seed=seed, strip=not no_strip,
                                    dense_per_tensor=dense_per_tensor, dense_auto=not dense_per_channel,
                                    prune_channels=prune_channels)
            if max_arena is not None:
                from edgekit.sweep import parse_size

                if rec.compress is None or not rec.compress.auto:
                    raise UsageError("--max-arena goes with --compress auto",
                                     hint="e.g. --compress auto --max-arena 64k")
                rec.compress.max_arena_bytes = parse_size(max_arena)
                rec.check()
        from edgekit.conversion.pipeline import convert as run_convert

        with output.progress() as progress, _tf.quiet_native():
            result = run_convert(model, data, eval_data, rec, out, allow_lambda=unsafe_allow_lambda,
                                 progress=progress, warn=output.warn, board=board,
                                 auto_fix=max_drop if auto_fix else None)
        output.result(result.report, _human, schema=schemas.CONVERT)
        if not json_out and not quiet:
            output.info(f"wrote {out}/ ({', '.join(result.written) or 'unchanged'})")
