"""`edgekit report FOLDER [-o report.html] [--board B] [--json]`: one report for an artifact folder."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgekit import schemas


def _cell(v) -> str:
    from edgekit.report import _fmt

    return _fmt(v)


def _human(out, data) -> None:
    from edgekit.report import tables, text_notes

    c = out.console
    conv = data.convert
    head = f"{conv.get('source')}  recipe: {conv.get('recipe_summary')}  sha256 {str(conv.get('model_sha256'))[:16]}..."
    if out.interactive:
        from rich.markup import escape
        from rich.table import Table

        c.print(f"[bold]{escape(head)}[/bold]")
        for title, header, rows in tables(data):
            t = Table(title=escape(title), title_justify="left")
            for k, h in enumerate(header):
                t.add_column(escape(h), justify="left" if k == 0 else "right")
            for r in rows:
                t.add_row(*(escape(_cell(v)) for v in r))
            c.print(t)
        for n in text_notes(data):
            c.print(f"[dim]note: {escape(n)}[/dim]")
        return
    # plain text when stdout is a pipe or a file: aligned columns, no colour, no box drawing
    lines = [head]
    for title, header, rows in tables(data):
        cells = [list(header)] + [[_cell(v) for v in r] for r in rows]
        widths = [max(len(row[k]) for row in cells) for k in range(len(header))]
        lines.append("")
        lines.append(title)
        for row in cells:
            lines.append("  ".join(v.ljust(widths[k]) if k == 0 else v.rjust(widths[k])
                                   for k, v in enumerate(row)).rstrip())
    notes = text_notes(data)
    if notes:
        lines.append("")
        lines.extend(f"note: {n}" for n in notes)
    typer.echo("\n".join(lines))


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report_cmd(
        folder: Path = typer.Argument(..., help="An artifact folder written by `edgekit convert`."),
        out: Optional[Path] = typer.Option(None, "--out", "-o",
                                           help="Write a self-contained HTML report (charts embedded) here."),
        board: Optional[str] = typer.Option(None, "--board", "-b",
                                            help="Board id from targets/ for the flash/RAM budget "
                                                 "(default: the board of the first profile result)."),
        json_out: bool = typer.Option(False, "--json", help="Print the collected facts as one JSON document."),
    ) -> None:
        """Sizes, sparsity, accuracy, latency and memory budget of a converted model, as tables or HTML."""
        from edgekit.cli.output import Output
        from edgekit.fileio import write_text
        from edgekit.report import collect, render_html

        o = Output(json_mode=json_out)
        data = collect(folder, board=board)
        if out is not None:
            write_text(out, render_html(data))
            o.info(f"wrote {out}")
        o.result(data, _human, schema=schemas.REPORT)
