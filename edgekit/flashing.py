"""`edgekit.flash(model, board)`: fit check, render, build, upload, and confirm the board runs it.

Order, so that nothing half-happens: the runner's capabilities are checked, the model is checked
against the board (flash, RAM, int8-only runtimes), the port is chosen (asking, if at all, only now
and only on a terminal); then the firmware project is rendered, built and uploaded, and the board
is asked over serial (protocol HELLO) which model it runs. ``dry_run`` logs every command and
changes nothing on the device. Linux boards (runner ssh) have no firmware to build: their model is
installed, hash-checked on the board and optionally served (see the ssh runner's ``do_flash``).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from edgekit.errors import BoardError, DeviceError, EdgekitError, InputFileError, ModelTooLarge
from edgekit.fit import FitReport

LogFn = Callable[[str], None]
DRY_RUN_PORT = "<port>"


@dataclass
class FlashResult:
    board: str
    runner: str
    port: str | None
    model_sha256: str
    fit: FitReport
    project_dir: str | None
    artifacts: dict[str, str]
    commands: list[str]
    dry_run: bool
    confirmed: bool | None          # None: not confirmed (dry run, or no serial link to ask)
    confirmation: str
    place: dict[str, Any] | None = None   # the labgrid place it was flashed on (edgekit.farm)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["fit"] = self.fit.to_dict()
        return out


def locate_model(path: str | os.PathLike) -> Path:
    """A .tflite file, or an artifact folder holding model.tflite."""
    p = Path(path)
    if p.is_dir():
        cand = p / "model.tflite"
        if not cand.is_file():
            raise InputFileError(f"{p} holds no model.tflite",
                                 hint="pass the .tflite file, or the folder `edgekit convert` wrote")
        return cand
    if not p.exists():
        raise InputFileError(f"model not found: {p}")
    return p


def check_fit(model, board, *, force: bool = False, inspect_result=None) -> FitReport:
    """Does ``model`` (path / bytes) fit ``board``? The one fit (:func:`edgekit.fit.fit`); raises with
    the numbers unless ``force``.

    TFLM boards: flash = model + firmware, RAM = the tensor arena as the firmware reserves it (the exact
    minimum on host TFLM + the export's margin) + firmware; the board's TFLM runtime must run the model
    correctly. LiteRT boards: storage = model + OS, RAM = model (LiteRT maps it) + OS. Boards marked
    ``int8_only`` refuse float or mixed models.
    """
    from edgekit.fit import fit_model

    report = fit_model(model, board, inspect_result=inspect_result)
    problems = report.problems
    if problems and not force:
        sizes = [p for p in problems if p.startswith(("flash:", "RAM:"))]
        others = [p for p in problems if p not in sizes]
        if sizes:
            # every problem named: the sizes first, then what else stops the model on this board
            also = f" (also: {'; '.join(others)})" if others else ""
            raise ModelTooLarge(f"the model does not fit {board.id}: " + "; ".join(sizes) + also,
                                hint="shrink it (prune / cluster / int8, `edgekit convert`), pick a larger "
                                     "board, or pass --force to try anyway", fit=report.to_dict())
        # a specific message (with its ways out) when it is the only problem; otherwise all of them
        if report.runtime_problems and len(report.runtime_problems) == len(problems):
            from edgekit.tflm.compat import facts_from_board, refuse_if_unrunnable

            refuse_if_unrunnable(model, facts_from_board(board), board.id)
        if board.int8_only and report.quantization in ("float", "mixed") and len(problems) == 1:
            raise BoardError(f"{board.id} runs int8 models only, and this model is {report.quantization}",
                             hint="convert with full-integer quantization (`edgekit convert --quantize int8`) "
                                  "or pass --force", fit=report.to_dict())
        raise BoardError(f"the model cannot run on {board.id}: " + "; ".join(problems),
                         hint="pass --force to try anyway", fit=report.to_dict())
    report.forced = bool(problems)
    return report


def flash(model, board=None, *, port: str | None = None, place: str | None = None, coordinator: str | None = None,
          **kwargs) -> FlashResult:
    """Put ``model`` (a .tflite or an artifact folder) on ``board`` (id, alias or Board), or on the board
    of a labgrid ``place`` (edgekit.farm; acquired for the flash, released on every exit path).

    With a place, its serial port is the upload port (its local device when the exporter runs on this
    machine, else its ser2net URL, which only uploaders that open pyserial URLs can use) and, after
    the upload, the board is reset through the place (reset output, else power cycle) when it has
    either. The other arguments are :func:`flash_board`'s.
    """
    from edgekit.farm import resolve

    if place is None:
        if coordinator is not None:
            from edgekit.errors import UsageError

            raise UsageError("--coordinator goes with --place")
        if board is None:
            from edgekit.errors import UsageError

            raise UsageError("flash needs --board (or --place)")
        return flash_board(model, board, port=port, **kwargs)
    with resolve(board, port, place, coordinator=coordinator, log=kwargs.get("log"), default_board="") as (board_id, place_port, lease):
        from edgekit.boards import load_board
        from edgekit.runners import get_runner

        runner_cls = get_runner(load_board(board_id).runner)
        if ("://" in place_port and runner_cls.capabilities.needs_port and not runner_cls.upload_takes_url
                and runner_cls.can("flash")):
            from edgekit.errors import UsageError

            raise UsageError(f"place {lease.name}'s serial port is {place_port} (ser2net on the exporter), and "
                             f"{runner_cls.name} uploads only to a port on this machine",
                             hint=f"run edgekit flash on the exporter's host, or export {board_id}'s USB serial "
                                  "port from an exporter on this machine")
        result = flash_board(model, board_id, port=place_port,
                             reset_after=lease.reset if lease.can_reset else None, **kwargs)
        result.place = lease.to_dict()
    return result


def flash_board(model, board, *, port: str | None = None, out_dir: str | os.PathLike | None = None,
                dry_run: bool = False, force: bool = False, runner_options: dict | None = None,
                interactive: bool = False, choose_port: Callable | None = None, log: LogFn | None = None,
                confirm: bool = True, board_folder: str | os.PathLike | None = None, tool=None,
                hello_timeout_s: float = 10.0, dest: str = "models", service: bool = False,
                service_port: int | None = None, service_bind: str = "127.0.0.1", threads: int = 1,
                reset_after: Callable[[], str | None] | None = None) -> FlashResult:
    """Put ``model`` (a .tflite or an artifact folder) on ``board`` (id, alias or Board).

    ``log`` receives every command (``$ ...``) and step (``# ...``). ``tool`` replaces the
    external-program seam (tests). Returns a FlashResult; raises an EdgekitError on any failure.

    Linux boards (runner ``ssh``; ``runner_options={"host": ...}``) have no firmware: the model is
    copied into ``dest`` and its SHA-256 checked on the board; ``service`` also runs it as a systemd
    user service on ``service_bind:service_port`` (HTTP, the agent's ``serve``) and confirms it
    through the service's /health.
    """
    from edgekit import ports as _ports
    from edgekit.boards import Board, load_board
    from edgekit.fileio import read_input, sha256
    from edgekit.runners import get_runner
    from edgekit.runners.reset import Touch1200bps, strategy_for

    commands: list[str] = []

    def _log(line: str) -> None:
        commands.append(line)
        if log is not None:
            log(line)

    if not isinstance(board, Board):
        board = load_board(str(board), Path(board_folder) if board_folder else None)
    runner_cls = get_runner(board.runner)
    if not runner_cls.can("flash"):
        from edgekit.errors import UsageError

        raise UsageError(f"board {board.id} is not flashed: its runner {runner_cls.name} takes models "
                         "at run time", hint=f"run it there directly: `edgekit profile MODEL --board {board.id}`")
    installs = not runner_cls.capabilities.build      # a Linux board: the model file is the firmware
    runner_cls.check(["flash"] if installs else ["build", "flash"], port="-", board_id=board.id)
    model_path = locate_model(model)
    data = read_input(model_path, "model")
    digest = sha256(data)
    fit = check_fit(data, board, force=force)
    for problem in fit.problems:
        _log(f"# --force: going ahead although {problem}")
    if installs:
        runner = runner_cls(board, dry_run=dry_run, log=_log, options=runner_options, tool=tool)
        extra = {} if service_port is None else {"service_port": service_port}
        done = runner.run("flash", model_path=model_path, dest=dest, service=service, service_bind=service_bind,
                          threads=threads, **extra)
        svc = done.get("service") or {}
        if dry_run:
            confirmed, note = None, "confirmation pending: dry run, nothing was installed"
        elif service and svc.get("started"):
            confirmed, note = True, (f"confirmed: {svc.get('name')} on {done['host']} serves model sha256 "
                                     f"{digest[:16]}... at {svc.get('url')}")
        else:
            confirmed, note = True, f"confirmed: {done['host']}:{done['remote_path']} has sha256 {digest[:16]}..."
        artifacts = {"host": done["host"], "path": done["remote_path"]}
        artifacts.update({f"service_{k}": str(v) for k, v in svc.items() if k != "started"})
        return FlashResult(board=board.id, runner=runner_cls.name, port=None, model_sha256=digest, fit=fit,
                           project_dir=None, artifacts=artifacts, commands=commands, dry_run=dry_run,
                           confirmed=confirmed, confirmation=note)

    # The port, chosen before any work starts.
    strategy = strategy_for(board)
    wants_port = runner_cls.capabilities.needs_port or isinstance(strategy, Touch1200bps) or confirm
    chosen = port
    if chosen and dry_run:
        pass                                   # dry run: never open the port, not even to probe it
    elif wants_port:
        try:
            chosen = _ports.resolve_port(board, port, interactive=interactive, choose=choose_port)
        except EdgekitError as e:
            if dry_run:
                _log(f"# no port found ({e.message}); commands show {DRY_RUN_PORT}")
                chosen = DRY_RUN_PORT
            elif runner_cls.capabilities.needs_port or port:
                raise
            else:
                _log(f"# no serial port found for {board.id}; uploading without a reset, no confirmation")
                chosen = None
    runner = runner_cls(board, dry_run=dry_run, log=_log, options=runner_options, tool=tool)
    if runner_cls.capabilities.needs_port:
        runner_cls.check(["flash"], port=chosen, board_id=board.id)

    from edgekit.exporters.firmware import render_project

    fmt = (board.build or {}).get("project_format") or runner_cls.project_format
    project_dir = Path(out_dir) if out_dir else model_path.parent / "firmware" / board.id
    _log(f"# render the {fmt} project for {board.id} into {project_dir}")
    if not dry_run:
        render_project(model_path, board, project_dir, fmt=fmt)
    build = runner.run("build", project_dir=project_dir)
    upload_port = chosen
    if not runner_cls.enters_bootloader_itself:
        upload_port = strategy.before_upload(board, chosen, dry_run=dry_run, log=_log)
    runner.run("flash", build=build, port=upload_port if runner_cls.capabilities.needs_port else chosen)
    if reset_after is not None:
        _log(f"# reset {board.id} through its place")
        if not dry_run:
            done = reset_after()
            if done:
                _log(f"# {done}")
    back = strategy.after_upload(board, chosen, dry_run=dry_run, log=_log) if chosen else None

    confirmed, note = None, "confirmation pending: dry run, nothing was flashed"
    if not dry_run:
        if not confirm:
            note = "not confirmed (confirmation turned off)"
        elif not back:
            note = "confirmation pending: no serial port to ask the board"
        else:
            confirmed, note = confirm_model(back, board, data, digest, timeout_s=hello_timeout_s, log=_log)
    return FlashResult(board=board.id, runner=runner_cls.name, port=back or chosen, model_sha256=digest,
                       fit=fit, project_dir=str(project_dir),
                       artifacts={k: str(v) for k, v in build.artifacts.items()}, commands=commands,
                       dry_run=dry_run, confirmed=confirmed, confirmation=note)


def confirm_model(port: str, board, data: bytes, digest: str, *, timeout_s: float = 10.0,
                  log: LogFn | None = None) -> tuple[bool | None, str]:
    """Ask the board (protocol HELLO) which model it runs; True when its SHA-256 is ``digest``.

    A board still booting gets asked again until ``timeout_s`` has passed.
    """
    import time

    log = log or (lambda line: None)
    try:
        from edgekit.link.session import DeviceSession
    except ImportError:
        return None, "confirmation pending: this edgekit has no device session yet"
    from edgekit.errors import NoAnswer
    from edgekit.ports import explain

    log(f"# ask {board.id} on {port} for its HELLO")
    try:
        session = DeviceSession.open(port, board.baud)
    except DeviceError:
        raise
    except Exception as e:  # noqa: BLE001 - serial errors are explained
        raise explain(e, port) from e
    deadline = time.monotonic() + timeout_s
    with session:
        while True:
            try:
                hello = session.hello()
                break
            except NoAnswer:
                if time.monotonic() >= deadline:
                    raise
        got = bytes(hello.model_sha256).hex()
        if hello.board_id and hello.board_id != board.id:
            raise DeviceError(f"the device on {port} says it is '{hello.board_id}', not {board.id}",
                              hint="pass the right --board or --port")
        if got == digest:
            return True, f"confirmed: {board.id} runs model sha256 {digest[:16]}..."
        if int(got, 16) == 0:
            raise DeviceError(f"{board.id} answered but runs no model after flashing",
                              hint="the firmware could not load the model; see its LOG lines or rerun "
                                   "with --force off to check the fit")
        raise DeviceError(f"{board.id} runs model sha256 {got[:16]}..., not the flashed {digest[:16]}...",
                          hint="the upload may have failed silently; flash again")

