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
    for col in ("point", "recipe", "dense", "bytes", "arena", "RAM", "accuracy", "est. ms", "µJ", "floor µs", "fits",
                "Pareto", "meets"):
        t.add_column(col, justify="left" if col in ("point", "recipe") else "right")
    for p in res["points"]:
        if p["error"]:
            t.add_row(p["id"], p["recipe"], "-", "-", "-", "-", f"error: {p['error'][:40]}", "", "", "", "", "", "")
            continue
        t.add_row(p["id"] + (" (done before)" if p["reused"] else ""), p["recipe"],
                  {"per-tensor": "tensor", "per-channel": "channel"}.get(p.get("dense_weights"), "-"),
                  f"{p['flash_bytes']:,}",
                  f"{p['arena_bytes']:,}" if p["arena_bytes"] else "-",
                  f"{p['ram_bytes']:,}" if p.get("ram_bytes") else "-",
                  f"{100 * p['accuracy']:.2f} %" if p["accuracy"] is not None else "-",
                  f"{p['latency_estimate_us'] / 1000:.2f}" if p.get("latency_estimate_us") else "-",
                  f"{p['energy_uj']:.1f}" if p.get("energy_uj") else "-",
                  f"{p['latency_bound_us']:.0f}" if p["latency_bound_us"] else "-",
                  {True: "yes", False: "no", None: "-"}[p["fits"]], "*" if p["pareto"] else "",
                  "yes" if p["meets"] else "")
    out.console.print(t)
    sources = {p.get("latency_source") for p in res["points"] if p.get("latency_estimate_us")}
    if "MAC-based estimate" in sources:
        out.console.print("[dim]est. ms (MAC-based estimate): model MACs x cycles per MAC calibrated on Cortex-M4 "
                          "published results / the board's clock[/dim]")
    if any(s and s.startswith("emulated") for s in sources):
        emu = res.get("emulated") or {}
        out.console.print(f"[dim]est. ms (emulated): instructions counted on the emulated Cortex-M4 running "
                          f"{emu.get('board')}'s firmware ({emu.get('tflm')}) x CPI / clock[/dim]")
    if sources:
        out.console.print("[dim]µJ: the board's active power x est. ms; floor µs: the roofline lower bound; "
                          "all estimates, none measured on a board[/dim]")
    out.console.print(f"[dim]dense: the scales of the model's dense weights, per tensor or per channel; RAM: "
                      f"{res.get('ram_source', '')}; Pareto over "
                      f"{', '.join(res.get('pareto_objectives') or [])}[/dim]")
    if res.get("merged"):
        out.console.print(f"[dim]{len(res['merged'])} grid combination(s) made another point's recipe and ran "
                          "once (sweep.json: merged)[/dim]")
    if res["best"]:
        out.console.print(f"smallest point that meets the constraints: [bold]{res['best']}[/]")
    else:
        given = {k: v for k, v in res["constraints"].items() if v is not None}
        out.console.print(f"[yellow]no point meets the constraints[/] {given}; closest: {res['closest']}")
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
        prune_channels: str = typer.Option("0", "--prune-channels", help="Structured pruning: fractions of each "
                                           "layer's channels to remove, e.g. 0,0.25,0.5 (0 = none)."),
        prune: str = typer.Option("0", "--prune", help="Sparsities, e.g. 0,0.5,0.75 (0 = no pruning)."),
        cluster: str = typer.Option("0", "--cluster", help="Cluster counts, e.g. 0,16 (0 = none)."),
        compress: str = typer.Option("match", "--compress", help="LUT compression: match (lutN with just the bits "
                                     "the cluster count needs, clustered points only), none, auto, lut1..lut7; "
                                     "e.g. match,auto."),
        granularity: str = typer.Option("auto", "--granularity", help="Dense weight quantization: auto (convert's "
                                        "choice with eval data), per-channel, per-tensor; e.g. auto,per-tensor."),
        no_qat: bool = typer.Option(False, "--no-qat", help="Skip the preserving QAT stage."),
        epochs: int = typer.Option(3, "--epochs", help="Fine-tuning epochs per stage."),
        board: Optional[str] = typer.Option(None, "--board", help="Board to fit (flash/RAM, latency estimate)."),
        max_flash: Optional[str] = typer.Option(None, "--max-flash", help="Largest model, e.g. 200k."),
        max_ram: Optional[str] = typer.Option(None, "--max-ram", help="Most RAM, e.g. 64k: with --board the fit's "
                                              "need (arena as the firmware reserves it + firmware RAM), else the "
                                              "exact tensor arena."),
        max_latency: Optional[float] = typer.Option(None, "--max-latency", help="Longest estimated time per "
                                                    "inference on --board, in ms (emulated with --emulate, else "
                                                    "MAC-based)."),
        min_accuracy: Optional[float] = typer.Option(None, "--min-accuracy", help="e.g. 0.97"),
        emulate: bool = typer.Option(False, "--emulate", help="Run every point's model on --board's emulated core "
                                     "(its own firmware on QEMU): latency and energy from instruction counts."),
        emulate_runs: int = typer.Option(3, "--emulate-runs", help="Emulated inferences per point."),
        tflm_src: Optional[Path] = typer.Option(None, "--tflm-src", help="The board's TFLM tree (an Arduino "
                                                "library folder or a tflite-micro checkout): its DECODE and "
                                                "per-channel dense support decide the points; --emulate builds "
                                                "with it."),
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
        """Run convert over a grid (prune-channels x prune x cluster x compress x granularity); draw the Pareto
        front over accuracy, flash and estimated latency; pick the smallest point that meets the constraints.

        Points run here one after the other, or as Ray tasks (--executor ray, --ray-address)."""
        from edgekit import _tf
        from edgekit.executors import make_executor
        from edgekit.sweep import COMPRESS_CHOICES, GRANULARITIES, parse_choices, parse_grid, parse_size, sweep as run

        output = Output(json_mode=json_out, quiet=quiet)
        prunes = parse_grid(prune, float, "prune")
        clusters = parse_grid(cluster, int, "cluster")
        channel_fractions = parse_grid(prune_channels, float, "prune-channels")
        compresses = parse_choices(compress, "compress", COMPRESS_CHOICES)
        granularities = parse_choices(granularity, "granularity", GRANULARITIES)
        if min_accuracy is not None and not 0 < min_accuracy <= 1:
            from edgekit.errors import UsageError

            raise UsageError("--min-accuracy is a fraction in (0, 1], e.g. 0.97")
        runner = make_executor(executor, ray_address, workers)
        with output.progress() as progress, _tf.quiet_native():
            res = run(model, data, eval_data, out, prune=prunes, cluster=clusters, prune_channels=channel_fractions,
                      compress=compresses, granularity=granularities, qat=not no_qat, epochs=epochs, seed=seed,
                      board=board, max_flash=parse_size(max_flash), max_ram=parse_size(max_ram),
                      max_latency_ms=max_latency, min_accuracy=min_accuracy, emulate=emulate,
                      emulate_runs=emulate_runs, tflm_src=tflm_src, progress=progress, warn=output.warn,
                      executor=runner)
        output.result(res.to_dict(), _human, schema=schemas.SWEEP)
