"""`edgekit virtual-board`, `edgekit profile`, `edgekit validate`: the device link commands."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgekit import schemas

from edgekit.cli.output import Output

_BOARD_HELP = ("Board id from targets/ (default virtual: the built-in virtual board, which starts itself without "
               "--port; with --place, the place's board= tag).")
_PLACE_HELP = ("A labgrid place: acquire it, use its serial port (and power / reset), release it on every exit "
               "path. Its board= tag names the board (docs/farm.md).")
_COORDINATOR_HELP = "labgrid coordinator HOST:PORT for --place (default: $LG_COORDINATOR, else 127.0.0.1:20408)."
_PORT_HELP = "Serial port or pyserial URL (/dev/ttyACM0, COM3, rfc2217://host:port, socket://host:port)."


def _fmt_us(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v / 1000:.3f} ms" if v >= 1000 else f"{v:.1f} µs"


def _fmt_count(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def _print_profile(out: Output, data: dict) -> None:
    from rich.table import Table

    c = out.console
    lat = data.get("latency_us")
    ins = data.get("instructions")
    dev = data["device"]
    timing = data.get("timing") or {}
    c.print(f"[bold]{Path(data['model']['path']).name}[/] on [bold]{data['board']['id']}[/] "
            f"({dev['firmware_version']}), {data['runs']} runs after {data['warmup']} warm-up")
    if timing.get("label"):
        c.print(f"[dim]numbers:[/] {timing['label']}")
    place = data.get("place")
    if place:
        c.print(f"[dim]place:[/] {place['place']} on {place['coordinator']} ({place['port']})"
                + (f"; {', '.join(place['resets'])}" if place.get("resets") else ""))
    if data["board"].get("notes"):
        c.print(f"[yellow]note:[/] {data['board']['notes']}")
    keys = ("mean", "median", "p90", "p99", "min", "max", "std")
    if ins:
        t = Table(title="instructions per inference (emulated target)", show_header=True)
        for col in keys:
            t.add_column(col, justify="right", no_wrap=True)
        t.add_row(*(_fmt_count(ins[k]) for k in keys))
        c.print(t)
    if lat:
        title = "latency per inference" + (" (host time)" if timing.get("source") == "host" else "")
        t = Table(title=title, show_header=True)
        for col in keys:
            t.add_column(col, justify="right", no_wrap=True)
        t.add_row(*(_fmt_us(lat[k]) for k in keys))
        c.print(t)
        for stat, prefix in (("median", "median_"), ("mean", "")):
            if lat.get(f"{prefix}ci95_low") is not None:
                c.print(f"95% interval of the {stat}: {_fmt_us(lat[f'{prefix}ci95_low'])} – "
                        f"{_fmt_us(lat[f'{prefix}ci95_high'])}")
        if lat.get("ci_method"):
            c.print(f"[dim]({lat['ci_method']})[/dim]")
    est = data.get("estimate")
    if est and "cpi" not in est:
        c.print(f"[bold]estimated on {data['board']['id']}: {_fmt_us(est['latency_us'])} per inference[/bold] "
                f"({_fmt_us(est['latency_us_low'])} – {_fmt_us(est['latency_us_high'])})")
        c.print(f"[dim]{est['label']}[/dim]")
    elif est:
        c.print(f"estimated on {data['board']['id']}: {_fmt_us(est['latency_us'])} per inference "
                f"({_fmt_us(est['latency_us_low'])} – {_fmt_us(est['latency_us_high'])}), {est['statistic']} "
                f"instructions x CPI {est['cpi']} ({est['cpi_range'][0]}–{est['cpi_range'][1]}) / "
                f"{est['clock_hz'] / 1e6:g} MHz")
    if data.get("per_op"):
        ops = Table(title="per op", show_header=True)
        cols = ["op", "count", "instructions" if ins else "mean"] + (["estimated"] if est else []) + ["share"]
        for col in cols:
            ops.add_column(col, justify="right" if col != "op" else "left")
        for op in data["per_op"]:
            value = _fmt_count(op.get("instructions_mean")) if ins else _fmt_us(op.get("mean_us"))
            extra = [_fmt_us(op.get("estimated_us"))] if est else []
            ops.add_row(op["name"], str(op["count"]), value, *extra, f"{op['share']:.0%}")
        c.print(ops)
    elif data.get("per_op_note"):
        c.print(f"per-op timing: not available; {data['per_op_note']}")
    m, r, e = data["memory"], data.get("roofline") or {}, data.get("energy")
    facts = Table(show_header=False, box=None)
    facts.add_column(style="dim")
    facts.add_column()
    if m.get("arena_used_bytes"):
        facts.add_row("arena used (TFLM's count on the device)",
                      f"{m['arena_used_bytes']:,} B of {m['arena_bytes']:,} B (not the size to reserve: "
                      "`edgekit inspect --board` gives the exact minimum)")
    if r.get("macs"):
        facts.add_row("MACs", f"{r['macs']:,}")
        if r.get("compute_bound_us") is not None:
            facts.add_row("compute bound", f"{_fmt_us(r['compute_bound_us'])} at {r['peak_macs_per_cycle']} "
                          f"MACs/cycle, {r['clock_hz'] / 1e6:.0f} MHz")
            facts.add_row("achieved", f"{r['achieved_macs_per_cycle']:.3f} MACs/cycle")
        if r.get("instructions_per_mac") is not None:
            facts.add_row("instructions per MAC", f"{r['instructions_per_mac']:.2f}")
    if e:
        band = (f", {e['per_inference_uj_low']:.3f}–{e['per_inference_uj_high']:.3f}"
                if e.get("per_inference_uj_low") is not None else "")
        facts.add_row("energy (estimate)", f"{e['per_inference_uj']:.3f} µJ per inference{band} "
                      f"({e['active_power_mw']} mW active x {e.get('latency_statistic', 'median')} time)")
        if e.get("per_year_at_1_hz_j") is not None:
            facts.add_row("at 1 inference/s", f"{e['per_year_at_1_hz_j']:.2f} J per year "
                          f"({e['per_year_at_1_hz_j'] / 3600:.4f} Wh)")
    fb = (e or {}).get("float_baseline") or data.get("float_baseline")
    if fb:
        if "saved_uj" in fb:
            frac = fb.get("saved_fraction")
            facts.add_row("vs float model", f"{fb['per_inference_uj']:.3f} µJ; saves {fb['saved_uj']:.3f} µJ"
                          + (f" ({frac:.0%})" if frac is not None else ""))
        elif "instructions_mean" in fb and ins:
            stat = "median" if "instructions_median" in fb else "mean"
            value = fb[f"instructions_{stat}"]
            facts.add_row("float model", f"{value:,.0f} instructions per inference "
                          f"({value / ins[stat]:.2f}x this model, {stat})")
        elif "latency_us_mean" in fb:
            med = fb.get("latency_us_median")
            facts.add_row("float model", (f"{_fmt_us(med)} median, " if med is not None else "")
                          + f"{_fmt_us(fb['latency_us_mean'])} mean on the same device")
        else:
            facts.add_row("vs float model", f"skipped: {fb.get('skipped')}")
    fw = data.get("firmware")
    if fw:
        sizes = fw.get("sizes") or {}
        facts.add_row("firmware", f"{fw['tree']['label']} ({fw['kernels']} kernels), text {sizes.get('text', 0):,} B, "
                      f"data {sizes.get('data', 0):,} B, bss {sizes.get('bss', 0):,} B")
        fit = fw.get("fit")
        if fit:
            facts.add_row("linked fit", f"flash {fit['flash_used_bytes']:,} of {fit['flash_bytes']:,} B, "
                          f"RAM {fit['ram_used_bytes']:,} of {fit['ram_bytes']:,} B (no Arduino core in it)")
    up = data.get("upload")
    if up:
        facts.add_row("upload", f"{up['total_bytes']:,} B in {up['seconds']:.2f} s "
                      f"(chunks of {up['chunk_size']} B)")
    c.print(facts)
    for note in data.get("notes") or []:
        c.print(f"[dim]note:[/] {note}")


def _print_validation(out: Output, data: dict) -> None:
    from rich.table import Table

    t = Table(title=f"{data['board']} vs host on {data['samples']} samples", show_header=True)
    t.add_column("check")
    t.add_column("value", justify="right")
    t.add_column("limit", justify="right")
    names = {"litert": "host LiteRT", "tflm": "host TFLM"}
    ref = names.get(data.get("host_reference", "tflm"), "host")
    t.add_row(f"argmax agreement (device vs {ref})", f"{data['agreement']:.2%}", f"≥ {data['min_agreement']:.2%}")
    t.add_row(f"max |difference| (output LSBs, vs {ref})", str(data["max_lsb"]), f"≤ {data['max_lsb_limit']}")
    if data.get("exact_fraction") is not None:
        t.add_row(f"samples equal to {ref}", f"{data['exact_fraction']:.2%}", "")
    if data.get("max_abs_real") is not None:
        t.add_row("mean / max |difference| (real units)", f"{data['mae_real']:.4g} / {data['max_abs_real']:.4g}", "")
    other = "litert" if data.get("host_reference") == "tflm" else "tflm"
    if data.get(f"agreement_{other}") is not None:
        t.add_row(f"argmax agreement (device vs {names[other]}, for information)",
                  f"{data[f'agreement_{other}']:.2%}", "")
        if data.get(f"max_lsb_{other}") is not None:
            t.add_row(f"max |difference| (vs {names[other]}, for information)", str(data[f"max_lsb_{other}"]), "")
    if data.get("accuracy_device") is not None:
        t.add_row("accuracy on device", f"{data['accuracy_device']:.2%}", "")
        t.add_row(f"accuracy on host ({ref})", f"{data['accuracy_host']:.2%}", "")
    out.console.print(t)
    if (data.get("timing") or {}).get("label"):
        out.console.print(f"device: {data['timing']['label']}")
    out.console.print(f"judged by: {data.get('judged_by')}")
    if data.get("host_note"):
        out.console.print(f"note: {data['host_note']}")
    for cause in data.get("diagnosis") or []:
        out.console.print(f"[red]likely cause:[/] {cause}")
    out.console.print("[green]passed[/]" if data["passed"] else "[red]failed[/]")


def runner_options(pairs: list[str] | None, **named) -> dict:
    """Runner options from ``--opt name=value`` pairs and named flags (only those given)."""
    from edgekit.errors import UsageError

    opts = {k: v for k, v in named.items() if v is not None}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--opt takes name=value, got {pair!r}", hint="e.g. --opt host=pi@raspberrypi.local")
        opts[key.strip().replace("-", "_")] = value
    return opts


_OPT_HELP = "A runner option, name=value (repeatable); `edgekit boards B` lists the board's runner options."
_EMULATE_HELP = ("Run the board's own firmware (its TFLM library, buffers, model built in) on the emulated "
                 "Cortex-M4 instead of the board: instruction counts, outputs as the board would compute them.")
_FORCE_HELP = ("Use a device whose HELLO names another board than --board (refused otherwise, exit 9); its "
               "numbers are then reported as that device's: no board energy or roofline.")
_TFLM_SRC_HELP = ("TFLM source tree for emulated builds: an Arduino TFLM library folder or a tflite-micro "
                  "checkout (default: $EDGEKIT_TFLM_SRC, then the library arduino-cli installed).")


def register(app: typer.Typer) -> None:
    @app.command("virtual-board")
    def virtual_board(
        model: Optional[Path] = typer.Argument(None, help="A .tflite model to start with (optional)."),
        max_payload: int = typer.Option(4100, "--max-payload", help="Largest frame payload the board takes."),
        arena_kb: int = typer.Option(200, "--arena-kb", help="Tensor arena of the board, KiB."),
        json_out: bool = typer.Option(False, "--json", help="Print {\"port\": ...} as JSON."),
    ) -> None:
        """Run the virtual board (real TFLM kernels) on a pty; prints the port. Ctrl-C stops it."""
        import sys

        from edgekit.errors import UsageError
        from edgekit.fileio import read_input
        from edgekit.link.virtual_board import VirtualBoard

        out = Output(json_mode=json_out)
        data = None
        if model is not None:
            from edgekit.model.load import load_tflite

            data = load_tflite(read_input(model, "model")).data
        if not 40 <= max_payload <= 65535:
            raise UsageError("--max-payload must be 40..65535")
        board = VirtualBoard(data, max_payload=max_payload, arena_bytes=arena_kb * 1024)
        try:
            port = board.open()
            out.result({"port": port, "board_id": board.board_id, "max_payload": max_payload,
                        "model_sha256": board.model_sha.hex() if board.model else None},
                       human=lambda o, d: o.console.print(d["port"]), schema=schemas.VIRTUAL_BOARD)
            sys.stdout.flush()
            out.info("virtual board running; connect with --port " + port + "; Ctrl-C stops it")
            board.serve_forever()
        except KeyboardInterrupt:
            out.info("virtual board stopped")
        finally:
            board.stop()

    @app.command("profile")
    def profile_cmd(
        model: Path = typer.Argument(..., help="The .tflite model to profile."),
        board: Optional[str] = typer.Option(None, "--board", "-b", help=_BOARD_HELP),
        port: Optional[str] = typer.Option(None, "--port", "-p", help=_PORT_HELP),
        place: Optional[str] = typer.Option(None, "--place", help=_PLACE_HELP),
        coordinator: Optional[str] = typer.Option(None, "--coordinator", help=_COORDINATOR_HELP),
        runs: int = typer.Option(200, "--runs", help="Timed runs."),
        warmup: int = typer.Option(10, "--warmup", help="Untimed runs first."),
        baud: Optional[int] = typer.Option(None, "--baud", help="Baud rate (default: the board's)."),
        emulate: bool = typer.Option(False, "--emulate", help=_EMULATE_HELP),
        tflm_src: Optional[Path] = typer.Option(None, "--tflm-src", help=_TFLM_SRC_HELP),
        no_baseline: bool = typer.Option(False, "--no-float-baseline",
                                         help="Do not profile model_float.tflite next to the model."),
        out_file: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the JSON here."),
        json_out: bool = typer.Option(False, "--json", help="Print one JSON document (edgekit.profile/1)."),
        host: Optional[str] = typer.Option(None, "--host", help="ssh boards (Raspberry Pi): [user@]host."),
        remote_python: Optional[str] = typer.Option(None, "--remote-python",
                                                    help="ssh boards: python on the board (default python3)."),
        threads: Optional[int] = typer.Option(None, "--threads", help="ssh/adb boards: LiteRT CPU threads."),
        xnnpack: Optional[bool] = typer.Option(None, "--xnnpack/--no-xnnpack",
                                               help="ssh/adb boards: XNNPACK delegate (default on)."),
        device: Optional[str] = typer.Option(None, "--device", help="adb boards: device serial (adb -s)."),
        benchmark_binary: Optional[Path] = typer.Option(None, "--benchmark-binary",
                                                        help="adb boards: LiteRT benchmark_model for the device; ssh "
                                                             "boards: use it (per-op times) instead of the agent."),
        opt: Optional[list[str]] = typer.Option(None, "--opt", help=_OPT_HELP),
        force: bool = typer.Option(False, "--force", help=_FORCE_HELP),
    ) -> None:
        """Measure a model on a board: latency (or instruction counts when emulated), per op, arena."""
        from edgekit.cli.output import dumps
        from edgekit.fileio import write_text
        from edgekit.profiling import profile

        out = Output(json_mode=json_out)
        options = runner_options(opt, host=host, remote_python=remote_python, threads=threads, xnnpack=xnnpack,
                                 serial=device, benchmark_binary=str(benchmark_binary) if benchmark_binary else None,
                                 tflm_src=str(tflm_src) if tflm_src else None, force=force or None)
        with out.progress() as report:
            result = profile(model, board=board, port=port, runs=runs, warmup=warmup, progress=report,
                             baud=baud, float_baseline=not no_baseline, emulate=emulate, options=options,
                             log=out.log_line, place=place, coordinator=coordinator)
        data = result.to_dict()
        if out_file is not None:
            write_text(out_file, dumps(data) + "\n", skip_if_same=False)
            out.info(f"wrote {out_file}")
        out.result(data, human=_print_profile, schema=schemas.PROFILE)

    @app.command("validate")
    def validate_cmd(
        model: Path = typer.Argument(..., help="The .tflite model (the one on the device)."),
        data: Path = typer.Option(..., "--data", "-d", help="Samples: .npz (x, optional y) or .npy."),
        board: Optional[str] = typer.Option(None, "--board", "-b", help=_BOARD_HELP),
        port: Optional[str] = typer.Option(None, "--port", "-p", help=_PORT_HELP),
        place: Optional[str] = typer.Option(None, "--place", help=_PLACE_HELP),
        coordinator: Optional[str] = typer.Option(None, "--coordinator", help=_COORDINATOR_HELP),
        n: int = typer.Option(100, "-n", "--samples", help="How many samples to run (from the start)."),
        max_lsb: int = typer.Option(1, "--max-lsb", help="Largest allowed output difference in LSBs."),
        min_agreement: float = typer.Option(0.99, "--min-agreement",
                                            help="Smallest allowed argmax agreement (0..1)."),
        baud: Optional[int] = typer.Option(None, "--baud", help="Baud rate (default: the board's)."),
        emulate: bool = typer.Option(False, "--emulate", help=_EMULATE_HELP),
        tflm_src: Optional[Path] = typer.Option(None, "--tflm-src", help=_TFLM_SRC_HELP),
        host: Optional[str] = typer.Option(None, "--host", help="ssh boards (Raspberry Pi): [user@]host."),
        opt: Optional[list[str]] = typer.Option(None, "--opt", help=_OPT_HELP),
        force: bool = typer.Option(False, "--force", help=_FORCE_HELP),
        json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
    ) -> None:
        """Run real samples on the device and on the host; fail (exit 10) past the thresholds."""
        from edgekit.validation import validate

        out = Output(json_mode=json_out)
        options = runner_options(opt, host=host, tflm_src=str(tflm_src) if tflm_src else None, force=force or None)
        with out.progress() as report:
            result = validate(model, data, board=board, port=port, n=n, max_lsb=max_lsb,
                              min_agreement=min_agreement, progress=report, baud=baud, raise_on_fail=False,
                              emulate=emulate, options=options, log=out.log_line, place=place,
                              coordinator=coordinator)
        out.result(result.to_dict(), human=_print_validation, schema=schemas.VALIDATE)
        result.raise_if_failed()
