"""Runners: one class per way of building, flashing or running a model on a board.

A board file names its runner (``runner: arduino-cli``); :func:`get_runner` returns the class and
:func:`runner_for` an instance for a board — the one dispatch behind ``edgekit.profile``,
``edgekit.validate`` and ``edgekit.flash`` for every kind of board (``emulate=True`` picks the
emulated board's runner with the board's own firmware). The registry is a table of names to
``module`` strings, so listing names (``RUNNER_NAMES``) and validating board files imports no
runner code. A module is searched for the :class:`~edgekit.runners.base.Runner` subclass whose
``name`` matches.
"""
from __future__ import annotations

import importlib

# runner name -> module that defines it
_REGISTRY = {
    "arduino-cli": "edgekit.runners.arduino",
    "esptool": "edgekit.runners.esp",
    "picotool": "edgekit.runners.rp2040",
    "ssh": "edgekit.runners.ssh",
    "adb": "edgekit.runners.adb",
    "virtual": "edgekit.runners.virtual",
    "qemu": "edgekit.runners.qemu",
    "estimate": "edgekit.runners.estimate",
}

RUNNER_NAMES = tuple(_REGISTRY)


def _find_in(module_name: str, name: str):
    from edgekit.runners.base import Runner

    try:
        mod = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:  # the module exists but one of its imports is missing
            raise
        return None
    for obj in vars(mod).values():
        if isinstance(obj, type) and issubclass(obj, Runner) and getattr(obj, "name", None) == name:
            return obj
    return None


def get_runner(name: str):
    """The Runner class registered under ``name``."""
    from edgekit.errors import BoardError

    if name not in _REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, RUNNER_NAMES, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise BoardError(f"unknown runner '{name}'", hint=f"{hint}runners: {', '.join(RUNNER_NAMES)}")
    cls = _find_in(_REGISTRY[name], name)
    if cls is None:   # a registry entry without its class is a packaging bug, not a user error
        raise ImportError(f"runner '{name}' is registered but {_REGISTRY[name]} does not define it")
    return cls


def all_runners() -> dict:
    """name -> Runner class, for every registered runner."""
    return {name: get_runner(name) for name in RUNNER_NAMES}


EMULATOR_RUNNER = "qemu"
ESTIMATE_RUNNER = "estimate"      # --emulate on a board the emulator cannot run (profile: an estimate only)


def runner_for(board, *, emulate: bool = False, options: dict | None = None, dry_run: bool = False,
               log=None, tool=None):
    """The runner instance that serves ``board`` (an id, alias or Board).

    ``emulate``: run the board's own firmware on the emulated core its board file names
    (``emulator:``) instead of on the board. ``options`` are the runner's declared options
    (``edgekit boards B`` lists them); unknown ones are refused.
    """
    from edgekit.boards import Board, load_board
    from edgekit.errors import UsageError

    board = board if isinstance(board, Board) else load_board(str(board))
    name = board.runner
    opts = dict(options or {})
    if emulate:
        if not board.emulator:
            if board.runtime != "tflm":
                raise UsageError(f"board {board.id} ({board.cpu}) cannot be emulated: edgekit emulates Cortex-M4 "
                                 "boards only", hint="boards with an emulator: `edgekit boards` (column emulated)")
            # a microcontroller the emulator cannot run: profile gives a labelled MAC-based estimate
            return get_runner(ESTIMATE_RUNNER)(board, options=opts, dry_run=dry_run, log=log, tool=tool)
        name = EMULATOR_RUNNER
        if board.runner != EMULATOR_RUNNER:
            opts["emulate"] = True
    cls = get_runner(name)
    return cls(board, options=opts, dry_run=dry_run, log=log, tool=tool)
