"""`edgekit sweep`: the convert pipeline over a grid; Pareto front; the smallest point that fits."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgekit import schemas

from edgekit.cli.output import Output


def _human(out: Output, res: dict) -> None:
    from rich.table import Table

    t = Table(title="edgekit sweep", header_style="bold")
    for col in ("point", "recipe", "bytes", "arena", "accuracy", "est. ms", "floor µs", "fits", "Pareto", "meets"):
        t.add_column(col, justify="left" if col in ("point", "recipe") else "right")
    for p in res["points"]:
        if p["error"]:
            t.add_row(p["id"], p["recipe"], "-", "-", f"error: {p['error'][:40]}", "", "", "", "", "")
            continue
        t.add_row(p["id"] + (" (done before)" if p["reused"] else ""), p["recipe"], f"{p['flash_bytes']:,}",
                  f"{p['arena_bytes']:,}" if p["arena_bytes"] else "-",
                  f"{100 * p['accuracy']:.2f} %" if p["accuracy"] is not None else "-",
                  f"{p['latency_estimate_us'] / 1000:.1f}" if p.get("latency_estimate_us") else "-",
                  f"{p['latency_bound_us']:.0f}" if p["latency_bound_us"] else "-",
                  {True: "yes", False: "no", None: "-"}[p["fits"]], "*" if p["pareto"] else "",
                  "yes" if p["meets"] else "")
    out.console.print(t)
    if any(p.get("latency_estimate_us") for p in res["points"]):
        out.console.print("[dim]est. ms: MAC-based estimate on the board (model MACs x cycles per MAC calibrated on "
                          "Cortex-M4 published results / clock); floor µs: the roofline lower bound[/dim]")
    if res["best"]:
        out.console.print(f"smallest point that meets the constraints: [bold]{res['best']}[/]")
    else:
        out.console.print(f"[yellow]no point meets the constraints[/] {res['constraints']}; closest: "
                          f"{res['closest']}")
    ex = res.get("executor") or {}
    if ex.get("kind") == "ray":
        where = f"a cluster at {ex['address']}" if ex.get("address") else "a local Ray"
        out.console.print(f"ran on Ray: {where}, {ex.get('nodes', '?')} node(s), {ex.get('cpus', '?')} CPUs; "
                          f"{ex.get('prefix_tasks', 0)} shared prefix task(s); start-up {ex.get('startup_s', 0):.1f} s")
    for k, v in res["files"].items():
        out.console.print(f"{k}: {v}")


def register(app: typer.Typer) -> None:
    @app.command("sweep")
    def sweep(
        model: Path = typer.Argument(..., help="Keras model (.keras, .h5, SavedModel folder)."),
        data: Path = typer.Option(..., "--data", help="Fine-tuning / calibration data with labels."),
        eval_data: Path = typer.Option(..., "--eval", help="Labelled evaluation data."),
        out: Path = typer.Option(..., "-o", "--out", help="Sweep folder (points/, sweep.csv, pareto.png)."),
        prune: str = typer.Option("0", "--prune", help="Sparsities, e.g. 0,0.5,0.75 (0 = no pruning)."),
        cluster: str = typer.Option("0", "--cluster", help="Cluster counts, e.g. 0,16 (0 = none)."),
        no_qat: bool = typer.Option(False, "--no-qat", help="Skip the preserving QAT stage."),
        epochs: int = typer.Option(3, "--epochs", help="Fine-tuning epochs per stage."),
        board: Optional[str] = typer.Option(None, "--board", help="Board to fit (flash/RAM, latency bound)."),
        max_flash: Optional[str] = typer.Option(None, "--max-flash", help="Largest model, e.g. 200k."),
        min_accuracy: Optional[float] = typer.Option(None, "--min-accuracy", help="e.g. 0.97"),
        seed: int = typer.Option(0, "--seed"),
        executor: Optional[str] = typer.Option(
            None, "--executor", help="Where points run: local (default), ray (a local Ray started for the run) "
                                     "or ray://HOST:PORT (a Ray cluster's client port)."),
        ray_address: Optional[str] = typer.Option(
            None, "--ray-address", help="An existing Ray cluster: HOST:PORT (its GCS port), ray://HOST:PORT or "
                                        "auto; implies --executor ray."),
        workers: Optional[int] = typer.Option(None, "--workers", help="CPUs of the local Ray (default: all)."),
        json_out: bool = typer.Option(False, "--json"),
        quiet: bool = typer.Option(False, "-q", "--quiet"),
    ) -> None:
        """Run convert over a grid of prune x cluster settings; draw the Pareto front; pick the smallest fit.

        Points run here one after the other, or as Ray tasks (--executor ray, --ray-address)."""
        from edgekit import _tf
        from edgekit.executors import make_executor
        from edgekit.sweep import parse_grid, parse_size, sweep as run

        output = Output(json_mode=json_out, quiet=quiet)
        prunes = parse_grid(prune, float, "prune")
        clusters = parse_grid(cluster, int, "cluster")
        if min_accuracy is not None and not 0 < min_accuracy <= 1:
            from edgekit.errors import UsageError

            raise UsageError("--min-accuracy is a fraction in (0, 1], e.g. 0.97")
        runner = make_executor(executor, ray_address, workers)
        with output.progress() as progress, _tf.quiet_native():
            res = run(model, data, eval_data, out, prune=prunes, cluster=clusters, qat=not no_qat, epochs=epochs,
                      seed=seed, board=board, max_flash=parse_size(max_flash), min_accuracy=min_accuracy,
                      progress=progress, warn=output.warn, executor=runner)
        output.result(res.to_dict(), _human, schema=schemas.SWEEP)
