"""`edgekit export MODEL --format c --out DIR [--name N] [--board B]`, dispatched through
edgekit.exporters.FORMATS."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgekit import schemas


def _human(out, r) -> None:
    d = r.to_dict() if hasattr(r, "to_dict") else dict(r)
    out.console.print(f"wrote {len(d.get('files', []))} files to {d.get('out_dir')}")
    for f in d.get("files", []):
        out.console.print(f"  {f}")
    if "arena_bytes" in d:
        out.console.print(f"arena: measured {d['arena_bytes']:,} B, header constant "
                          f"{d['arena_size_constant']:,} B; ops: {', '.join(d.get('ops', []))}")
    if d.get("model_bytes") and d.get("source_bytes"):
        out.console.print(f"model {d['model_bytes']:,} B -> model_data.cc {d['source_bytes']:,} B")


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export_cmd(
        model: Path = typer.Argument(..., help="A .tflite model file."),
        fmt: str = typer.Option("c", "--format", "-f", help="Output format (c, ...)."),
        out_dir: Path = typer.Option(..., "--out", "-o", help="Output folder."),
        name: Optional[str] = typer.Option(None, "--name", help="C name (default: the file name)."),
        board: Optional[str] = typer.Option(None, "--board", "-b", help="Board id (fit check, templates)."),
        package: Optional[str] = typer.Option(None, "--package", help="Kotlin package (--format android)."),
        json_out: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
    ) -> None:
        """Write the model in a device format (c: model_data.h/.cc + model_ops.h for TFLM)."""
        from edgekit.cli.output import Output
        from edgekit.exporters import export

        out = Output(json_mode=json_out)
        extra = {"package": package} if package else {}
        result = export(model, out_dir, format=fmt, name=name, board=board, **extra)
        for w in getattr(result, "warnings", []) or []:
            out.warn(w)
        out.result(result, _human, schema=schemas.EXPORT)
