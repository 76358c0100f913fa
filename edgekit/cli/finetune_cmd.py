"""`edgekit finetune`: transfer learning from a pretrained base to new classes."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgekit import schemas

from edgekit.cli.output import Output


def _human(out: Output, rep: dict) -> None:
    from rich.table import Table

    t = Table(title="edgekit finetune", show_header=False)
    t.add_row("base", rep["base"])
    t.add_row("cut at", rep["cut_at"])
    t.add_row("classes", f"{rep['classes']} ({', '.join(rep['class_names'][:10])})")
    if rep.get("label_map"):
        t.add_row("labels", ", ".join(f"{k} -> output {v}" for k, v in list(rep["label_map"].items())[:10]))
    t.add_row("unfrozen base layers", ", ".join(rep["unfrozen_layers"]) or "none")
    t.add_row("train samples", str(rep["train_samples"]))
    p, c = rep["plan"], rep["compute"]
    t.add_row("training", f"batch {p['batch_size']}, head {p['head_epochs']} epochs ({p['head_steps']} steps"
              f"{', on cached features' if rep.get('head_on_cached_features') else ''}), fine-tune "
              f"{p['finetune_epochs']} epochs ({p['finetune_steps']} steps)")
    t.add_row("compute", f"{c['samples_seen']:,} samples seen, {c['base_forward_samples']:,} through the base; "
              f"{c['train_cpu_s']:.1f} s CPU, {c['train_wall_s']:.1f} s wall (host)")
    h = rep["history"]
    if h["accuracy"]:
        t.add_row("final train accuracy", f"{h['accuracy'][-1]:.4f}")
    if rep.get("eval_accuracy") is not None:
        t.add_row("eval accuracy", f"{rep['eval_accuracy']:.4f}")
    t.add_row("time", f"{rep['duration_s']:.1f} s")
    out.console.print(t)


def _shape(text: Optional[str]):
    if not text:
        return None
    from edgekit.errors import UsageError

    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError as e:
        raise UsageError(f"--input-shape must look like 96,96,3, got {text!r}") from e


def register(app: typer.Typer) -> None:
    @app.command("finetune")
    def finetune(
        base: str = typer.Argument(..., help="Pretrained tf_keras model file, or applications:mobilenetv2 "
                                             "(with --weights)."),
        data: Path = typer.Option(..., "--data", help="Labelled data of the new task (.npz, image folder, ...)."),
        out: Path = typer.Option(..., "-o", "--out", help="Where to save the new model (.keras)."),
        eval_data: Optional[Path] = typer.Option(None, "--eval", help="Labelled test data of the new task."),
        cut_at: Optional[str] = typer.Option(None, "--cut-at", help="Layer to cut the base at (default: the "
                                                                   "end of its feature extractor, the last "
                                                                   "Flatten/global pooling under the dense "
                                                                   "top; else the penultimate layer)."),
        trainable_top: int = typer.Option(2, "--trainable-top", help="Base layers unfrozen in phase 2."),
        head_epochs: Optional[int] = typer.Option(None, "--head-epochs", help="Head phase epochs (default: "
                                                                              "enough for 300 optimizer steps, "
                                                                              "at least 10)."),
        finetune_epochs: Optional[int] = typer.Option(None, "--finetune-epochs", help="Fine-tune phase epochs "
                                                                                      "(default: enough for 100 "
                                                                                      "steps, at least 5)."),
        lr: float = typer.Option(3e-3, "--lr", help="Learning rate of the head phase."),
        finetune_lr: float = typer.Option(1e-4, "--finetune-lr", help="Learning rate of the fine-tune phase."),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Default: a quarter of the "
                                                                            "samples, within 8..32."),
        classes: Optional[int] = typer.Option(None, "--classes", help="Classes of the new head "
                                                                     "(default: from the labels; labels that are "
                                                                     "not 0..k-1 are mapped to 0..k-1 in order)."),
        weights: Optional[Path] = typer.Option(None, "--weights", help="Local weights for an applications base."),
        input_shape: Optional[str] = typer.Option(None, "--input-shape", help="Input shape for an "
                                                                             "applications base, e.g. 96,96,3."),
        seed: int = typer.Option(0, "--seed"),
        json_out: bool = typer.Option(False, "--json"),
        quiet: bool = typer.Option(False, "-q", "--quiet"),
    ) -> None:
        """Transfer learning: new classifier head on a pretrained base, then fine-tune its top layers."""
        from edgekit import _tf
        from edgekit.optimize.transfer import FinetuneSettings, finetune as run

        output = Output(json_mode=json_out, quiet=quiet)
        settings = FinetuneSettings(cut_at=cut_at, trainable_top=trainable_top, head_epochs=head_epochs,
                                    finetune_epochs=finetune_epochs, learning_rate=lr,
                                    finetune_learning_rate=finetune_lr, batch_size=batch_size, seed=seed)
        with output.progress() as progress, _tf.quiet_native():
            res = run(base, data, settings, eval_data=eval_data, weights=weights, input_shape=_shape(input_shape),
                      num_classes=classes, out=out, progress=progress)
        output.result(res.report, _human, schema=schemas.FINETUNE)
        if not json_out and not quiet:
            output.info(f"wrote {out} (convert it next: edgekit convert {out} --data ... -o build/...)")
