"""One Output object per command: human (rich, stdout), json (one document on stdout) or quiet.

Data goes to stdout, diagnostics (warnings, progress) to stderr. Progress bars and colour only when
the stream is a terminal.
"""
from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator


UNBOUNDED_WIDTH = 1000    # columns for rich output that is not going to a terminal


def _jsonable(obj: Any) -> Any:
    import numpy as np  # numpy is light and always present

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "__fspath__"):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, default=_jsonable, sort_keys=False)


def with_schema(data: Any, schema: str, key: str | None = None) -> dict:
    """``data`` as a document with ``schema`` first (a list goes under ``key``)."""
    if hasattr(data, "to_dict"):
        data = data.to_dict()
    if isinstance(data, list):
        if key is None:
            raise TypeError("a list result needs a key to go under")
        return {"schema": schema, key: data}
    if not isinstance(data, dict):
        raise TypeError(f"a JSON result must be a mapping or a list, not {type(data).__name__}")
    if data.get("schema", schema) != schema:
        raise ValueError(f"the document says schema {data['schema']!r}, the command {schema!r}")
    return {"schema": schema, **{k: v for k, v in data.items() if k != "schema"}}


# Set when a command has printed its JSON document: an error after it (validate's exit 10, say) must
# not print a second document on stdout.
json_document_written = False


# edgekit -q / -v (before the command): every Output of this process follows them
_GLOBAL = {"quiet": False, "verbose": False}


def set_global(*, quiet: bool = False, verbose: bool = False) -> None:
    """The global -q / -v: quiet for every command; verbose shows ``$`` command lines and the link log."""
    _GLOBAL.update(quiet=quiet, verbose=verbose)
    if verbose:
        import logging

        os.environ["EDGEKIT_VERBOSE"] = "1"
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("edgekit: %(name)s: %(message)s"))
        for name in ("edgekit.link", "edgekit.device"):
            logger = logging.getLogger(name)
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)


class Output:
    def __init__(self, json_mode: bool = False, quiet: bool = False):
        self.json_mode = json_mode
        self.quiet = quiet or _GLOBAL["quiet"]
        self._console = None
        self._err_console = None
        # A private copy of stderr: native libraries' fd-2 chatter can be silenced (edgekit._tf.
        # quiet_native) while edgekit's own warnings and progress bars still reach the terminal.
        try:
            self.errfile = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
        except OSError:
            self.errfile = sys.stderr

    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            # Off a terminal (a pipe, a file, CI logs) tables get the width they need: rich would
            # otherwise squeeze them into 80 columns and cut values ("350.5 …").
            wide = None if sys.stdout.isatty() else UNBOUNDED_WIDTH
            self._console = Console(highlight=False, soft_wrap=True, width=wide)
        return self._console

    @property
    def err(self):
        if self._err_console is None:
            from rich.console import Console

            wide = None if self.errfile.isatty() else UNBOUNDED_WIDTH
            self._err_console = Console(file=self.errfile, highlight=False, soft_wrap=True, width=wide)
        return self._err_console

    @property
    def interactive(self) -> bool:
        return not self.json_mode and not self.quiet and sys.stdout.isatty()

    def result(self, data: Any, human: Callable[["Output", Any], None] | None = None, *,
               schema: str, key: str | None = None) -> None:
        """Print the command's result: one JSON document carrying ``schema`` (edgekit.schemas), or the
        human rendering. A list becomes ``{"schema": ..., key: [...]}``."""
        global json_document_written
        if self.json_mode:
            sys.stdout.write(dumps(with_schema(data, schema, key)) + "\n")
            sys.stdout.flush()
            json_document_written = True
        elif not self.quiet:
            if human is not None:
                human(self, data)
            else:
                self.console.print(dumps(data))

    def info(self, message: str) -> None:
        if not self.quiet and not self.json_mode:
            self.err.print(message)

    def log_line(self, line: str) -> None:
        """A runner's log line: steps (``# ...``) to stderr; commands (``$ ...``) with EDGEKIT_VERBOSE=1."""
        if line.startswith("$ ") and os.environ.get("EDGEKIT_VERBOSE", "") in ("", "0"):
            return
        self.info(line)

    def warn(self, message: str) -> None:
        # Warnings go to stderr in every mode (stdout stays one JSON document).
        self.errfile.write(f"edgekit: warning: {message}\n")
        self.errfile.flush()

    @contextmanager
    def progress(self) -> Iterator[Callable[[str, float, float | None], None]]:
        """Yields a progress callback ``report(task, completed, total)`` (see edgekit.progress).

        Draws rich progress bars on stderr when it is a terminal; otherwise the callback does nothing.
        """
        if self.json_mode or self.quiet or not self.errfile.isatty():
            yield lambda task, completed, total=None: None
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn)

        tasks: dict[str, Any] = {}
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=self.err, transient=False) as bar:
            def report(task: str, completed: float, total: float | None = None) -> None:
                if task not in tasks:
                    tasks[task] = bar.add_task(task, total=total)
                bar.update(tasks[task], completed=completed, total=total)

            yield report
