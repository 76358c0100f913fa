"""The `edgekit` command. Parses flags, calls the SDK, prints; no logic lives here.

Each command group is a module in this package with ``register(app)``. Nothing heavy (TensorFlow,
LiteRT, TFLM) is imported at start-up: commands import the SDK inside their function bodies.
"""
from __future__ import annotations

import importlib
import os
import sys

import typer

from edgekit import schemas
from edgekit._version import __version__
from edgekit.errors import EXIT_CODE_NAMES

# One line per command module; each defines register(app).
COMMAND_MODULES = (
    "edgekit.cli.convert_cmd",
    "edgekit.cli.diagnose_cmd",
    "edgekit.cli.finetune_cmd",
    "edgekit.cli.sweep_cmd",
    "edgekit.cli.device_cmds",
    "edgekit.cli.inspect_cmd",
    "edgekit.cli.export_cmd",
    "edgekit.cli.board_cmds",
    "edgekit.cli.report_cmd",
    "edgekit.cli.farm_cmd",
)

app = typer.Typer(
    name="edgekit",
    help="Shrink Keras models and put them on phones, Raspberry Pis and microcontrollers.",
    epilog="Exit codes: " + ", ".join(f"{code} {name}" for code, name in EXIT_CODE_NAMES.items())
           + ". EDGEKIT_DEBUG=1 shows tracebacks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,   # plain help: no rich import at start-up, --help stays instant
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"edgekit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                 help="Print the version and exit."),
    quiet: bool = typer.Option(False, "-q", "--quiet",
                               help="Print no results, steps or progress (warnings, errors and --json stay)."),
    verbose: bool = typer.Option(False, "-v", "--verbose",
                                 help="Also print every external command run ($ lines) and the link's log."),
) -> None:
    """edgekit: prune, cluster, quantize, convert, export, flash and profile models for the edge."""
    from edgekit.cli import output

    output.set_global(quiet=quiet, verbose=verbose)


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def _debug() -> bool:
    return os.environ.get("EDGEKIT_DEBUG", "") not in ("", "0")


def report_error(exc: BaseException) -> int:
    """Print one line (plus a hint) for an exception and return the exit code. Shared by the CLI."""
    from edgekit.errors import EdgekitError

    if isinstance(exc, EdgekitError):
        sys.stderr.write(f"edgekit: error: {exc.message}\n")
        if exc.hint:
            sys.stderr.write(f"  hint: {exc.hint}\n")
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        sys.stderr.write("edgekit: interrupted; finished outputs were kept, none were half-written\n")
        return 130
    if isinstance(exc, MemoryError):
        sys.stderr.write("edgekit: error: out of memory\n")
        return 1
    sys.stderr.write(f"edgekit: internal error: {type(exc).__name__}: {exc}\n"
                     "  hint: run again with EDGEKIT_DEBUG=1 for the traceback and report it\n")
    return 1


ERROR_SCHEMA = schemas.ERROR


def error_document(exc: BaseException, code: int) -> dict:
    """The JSON document a --json command prints on stdout when it fails (next to the line on stderr)."""
    from edgekit.errors import EdgekitError

    if isinstance(exc, EdgekitError):
        return {"schema": ERROR_SCHEMA, "code": code, "error": type(exc).__name__, "message": exc.message,
                "hint": exc.hint}
    if isinstance(exc, KeyboardInterrupt):
        return {"schema": ERROR_SCHEMA, "code": code, "error": "Interrupted", "message": "interrupted", "hint": None}
    return {"schema": ERROR_SCHEMA, "code": code, "error": type(exc).__name__, "message": str(exc),
            "hint": "run again with EDGEKIT_DEBUG=1 for the traceback and report it"}


def main(argv: list[str] | None = None) -> None:
    """Console entry. Typer handles usage errors (exit 2) and --help; edgekit errors become one line
    on stderr (and, for a command run with --json, one error document on stdout)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        app(args=argv, prog_name="edgekit")
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 - the one place that turns exceptions into exit codes
        if _debug():
            import traceback

            traceback.print_exc()
        code = report_error(e)
        from edgekit.cli import output

        if "--json" in args and not output.json_document_written:
            import json

            sys.stdout.write(json.dumps(error_document(e, code), default=str) + "\n")
            sys.stdout.flush()
        sys.exit(code)


if __name__ == "__main__":
    main()
