"""`edgekit inspect MODEL [--board B] [--json]`: what a .tflite holds and whether it fits a board."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgekit import schemas


def _kib(n) -> str:
    return "-" if n is None else f"{n:,} B ({n / 1024:.1f} KiB)"


def _human(out, r) -> None:
    from rich.table import Table

    c = out.console
    c.print(f"[bold]{r.source}[/bold]  {r.model_bytes:,} bytes  sha256 {r.sha256[:16]}...  "
            f"quantization: {r.quantization}" + ("  (TFLM LUT-compressed)" if r.compressed else ""))
    io = Table(title="Inputs and outputs", show_lines=False)
    for col in ("", "name", "shape", "dtype", "scale", "zero point"):
        io.add_column(col)
    for kind, items in (("in", r.inputs), ("out", r.outputs)):
        for t in items:
            io.add_row(kind, t.name, str(t.shape), t.dtype,
                       "-" if t.scale is None else f"{t.scale:.6g}",
                       "-" if t.zero_point is None else str(t.zero_point))
    c.print(io)
    ops = Table(title="Operators")
    for col, just in (("#", "right"), ("op", "left"), ("output shape", "left"), ("params", "right"),
                      ("MACs", "right")):
        ops.add_column(col, justify=just)
    for o in r.ops:
        ops.add_row(str(o.index), o.op, str(o.output_shape), f"{o.params:,}", f"{o.macs:,}")
    ops.add_row("", "[bold]total[/bold]", "", f"{r.total_params:,}", f"{r.total_macs:,}")
    c.print(ops)
    c.print("op histogram: " + ", ".join(f"{k} x{v}" for k, v in r.op_histogram.items()))
    w = Table(title="Largest weight tensors")
    for col in ("name", "shape", "dtype", "bytes", "zeros"):
        w.add_column(col)
    for t in r.weights[:10]:
        w.add_row(t.name, str(t.shape), t.dtype, f"{t.bytes:,}",
                  "-" if t.sparsity is None else f"{t.sparsity:.1%}")
    c.print(w)
    sp = "-" if r.sparsity is None else f"{r.sparsity:.1%}"
    c.print(f"weights: {r.weight_bytes:,} bytes, sparsity {sp}")
    a = r.arena
    if a.arena_bytes is not None:
        c.print(f"tensor arena, exact minimum (host TFLM): {_kib(a.arena_bytes)}"
                + (f" [dim](TFLM's recording allocator counts {a.recorded_bytes:,} B; not a size that "
                   f"allocates)[/dim]" if a.recorded_bytes else ""))
        if a.alt_decompression_bytes:
            c.print(f"  with a {a.alt_decompression_bytes:,} B alternate decompression buffer: "
                    f"{_kib(a.arena_with_alt_bytes)} (the generated firmware sets none up)")
    else:
        c.print(f"tensor arena: not measured ({a.error})")
    if r.tflm_unsupported_ops:
        c.print("[red]ops TFLM cannot run:[/red] " + ", ".join(r.tflm_unsupported_ops))
    if r.float_tensors:
        c.print("[yellow]float tensors in an integer model:[/yellow] " + ", ".join(r.float_tensors))
    f = r.board_fit
    if f is not None:
        t = Table(title=f"Fit on {f.board}")
        for col in ("", "needed", "available", "margin"):
            t.add_column(col, justify="right")
        t.add_row("flash (model + firmware)", _kib(f.flash_needed_bytes), _kib(f.flash_bytes),
                  _kib(f.flash_margin_bytes))
        ram_what = "RAM (arena + firmware)" if f.runtime == "tflm" else "RAM (model + OS)"
        t.add_row(ram_what, _kib(f.ram_needed_bytes), _kib(f.ram_bytes), _kib(f.ram_margin_bytes))
        c.print(t)
        if f.arena_bytes is not None:
            c.print(f"arena {_kib(f.arena_bytes)}: {f.arena_source}")
        c.print(f"[dim]firmware: {f.firmware_source}[/dim]")
        verdict = {True: "[green]fits[/green]", False: "[red]does not fit[/red]", None: "unknown"}[f.fits]
        c.print(verdict + "".join(f"\n  {p}" for p in f.problems))
    roof, est = r.roofline, r.estimate
    if roof and roof.get("latency_bound_us") is not None:
        c.print(f"roofline floor {roof['latency_bound_us']:,.1f} us ({r.total_macs:,} MACs / "
                f"({roof['peak_int8_macs_per_cycle']:g} MAC/cycle x {roof['clock_hz'] / 1e6:g} MHz)); "
                "a lower bound, not a time")
    if est:
        c.print(f"estimated time {est['latency_us'] / 1000:,.2f} ms per inference "
                f"({est['latency_us_low'] / 1000:,.2f}–{est['latency_us_high'] / 1000:,.2f} ms)"
                + (f", {est['energy_uj']:,.1f} µJ" if est.get("energy_uj") is not None else ""))
        c.print(f"[dim]{est['label']}[/dim]")

def register(app: typer.Typer) -> None:
    @app.command("inspect")
    def inspect_cmd(
        model: Path = typer.Argument(..., help="A .tflite model file."),
        board: Optional[str] = typer.Option(None, "--board", "-b",
                                            help="Board id: check flash/RAM fit and a latency bound."),
        no_arena: bool = typer.Option(False, "--no-arena", help="Skip the arena measurement on host TFLM."),
        json_out: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
    ) -> None:
        """Ops, MACs, weights, sparsity, the exact TFLM tensor arena, and board fit of a .tflite."""
        from edgekit.cli.output import Output
        from edgekit.model.inspect import inspect

        out = Output(json_mode=json_out)
        result = inspect(model, board=board, measure_arena_bytes=not no_arena)
        for w in result.warnings:
            out.warn(w)
        out.result(result, _human, schema=schemas.INSPECT)
