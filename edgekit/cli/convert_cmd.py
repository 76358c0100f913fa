"""`edgekit convert` (filled in below by the convert pipeline)."""
from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("convert")
    def convert() -> None:
        """Shrink and convert a Keras model to TFLite (work in progress)."""
        raise typer.Exit(2)
