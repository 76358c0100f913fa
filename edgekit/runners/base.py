"""The Runner base class: a name, a capabilities record, options, and one ``run(command, ...)``.

Every way of building, flashing or running a model on a board is a subclass. It declares what it can
do (:class:`Capabilities`) and the base class refuses what it cannot do before anything runs, so a
bad request never half-happens. External programs are run only through ``self.tool`` (the seam,
:func:`edgekit.runners.seam.run_tool` unless a test passes another), with the runner's ``dry_run``
and ``log``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from edgekit.errors import UsageError
from edgekit.runners import seam

COMMANDS = ("build", "flash", "reset", "run", "profile", "validate")


@dataclass(frozen=True)
class Capabilities:
    """What a runner can do. ``needs_port``: flash/reset need a serial port (``port=``)."""

    build: bool = False        # compile a firmware project into binaries
    flash: bool = False        # put binaries on the board
    reset: bool = False        # reset the board (or enter its bootloader)
    run: bool = False          # run a model on the device (outputs for given inputs)
    profile: bool = False      # time a model on the device
    validate: bool = False     # compare the device's outputs with the host's on real data
    needs_port: bool = False
    model_upload: bool = False  # takes a model at run time, without re-flashing
    link: bool = False         # its device speaks protocol v1 (open_link gives a DeviceSession)
    tools: tuple[str, ...] = ()  # external programs it calls

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["tools"] = list(self.tools)
        return out


@dataclass(frozen=True)
class RunnerOption:
    """An option a runner accepts (``--runner-opt name=value`` on the CLI, ``options=`` in the SDK)."""

    name: str
    help: str
    default: Any = None
    type: Any = str            # a converter (str, int, float, bool) or None: taken as given (SDK only)


@dataclass
class BuildResult:
    """What a build produced: file role (e.g. ``firmware.bin``) -> path."""

    project_dir: Path
    artifacts: dict[str, Path] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"project_dir": str(self.project_dir),
                "artifacts": {k: str(v) for k, v in self.artifacts.items()}}


class Runner:
    """Base class. Subclasses set ``name``, ``capabilities`` and implement ``do_<command>``."""

    name: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities] = Capabilities()
    project_format: ClassVar[str | None] = None   # firmware project it builds ("arduino", "platformio")
    description: ClassVar[str] = ""
    # True when the external tool does the board's bootloader entry itself (arduino-cli reads
    # use_1200bps_touch from the core); the caller then skips the reset strategy's before_upload.
    enters_bootloader_itself: ClassVar[bool] = False
    # True when the upload tool opens pyserial URLs (rfc2217://...), so a board behind ser2net (a labgrid
    # place on another machine) can be flashed from here
    upload_takes_url: ClassVar[bool] = False

    def __init__(self, board, *, dry_run: bool = False, log: Callable[[str], None] | None = None,
                 options: dict[str, Any] | None = None, tool: Callable[..., seam.ToolResult] | None = None):
        self.board = board
        self.dry_run = dry_run
        self.log = log or (lambda message: None)
        self.tool_fn = tool or seam.run_tool
        self.options = self._parse_options(options or {})

    # -- options -------------------------------------------------------------------------------
    @classmethod
    def options_spec(cls) -> list[RunnerOption]:
        """The options this runner accepts; subclasses extend the list."""
        return []

    @classmethod
    def _parse_options(cls, given: dict[str, Any]) -> dict[str, Any]:
        spec = {o.name: o for o in cls.options_spec()}
        out = {name: o.default for name, o in spec.items()}
        for key, value in given.items():
            if key not in spec:
                known = ", ".join(spec) or "none"
                raise UsageError(f"runner {cls.name} has no option '{key}'", hint=f"its options: {known}")
            conv = spec[key].type
            try:
                if value is None or conv is None:
                    out[key] = value
                elif conv is bool and isinstance(value, str):
                    out[key] = _parse_bool(value)
                else:
                    out[key] = conv(value)
            except (TypeError, ValueError) as e:
                raise UsageError(f"runner {cls.name}: option '{key}' must be "
                                 f"{getattr(conv, '__name__', 'valid')}, got {value!r}") from e
        return out

    # -- the one entry point -----------------------------------------------------------------------
    @classmethod
    def can(cls, command: str) -> bool:
        return command in COMMANDS and bool(getattr(cls.capabilities, command))

    @classmethod
    def check(cls, commands, *, port: str | None = None, board_id: str = "") -> None:
        """Refuse, before anything runs, commands this runner cannot do (or that lack a port)."""
        for command in commands:
            if command not in COMMANDS:
                raise UsageError(f"unknown runner command '{command}'", hint=f"one of: {', '.join(COMMANDS)}")
            if not cls.can(command):
                able = [c for c in COMMANDS if cls.can(c)]
                on = f" (board {board_id})" if board_id else ""
                raise UsageError(f"runner {cls.name}{on} cannot {command}",
                                 hint=f"it can: {', '.join(able) or 'nothing yet'}")
            if command in ("flash", "reset") and cls.capabilities.needs_port and not port:
                raise UsageError(f"runner {cls.name} needs a serial port to {command}",
                                 hint="pass --port (see `edgekit devices`)")

    def run(self, command: str, **kwargs) -> Any:
        """Run one command (``build``, ``flash``, ``reset``, ``run``, ``profile``, ``validate``)."""
        self.check([command], port=kwargs.get("port"), board_id=getattr(self.board, "id", ""))
        return getattr(self, f"do_{command}")(**kwargs)

    # -- helpers for subclasses --------------------------------------------------------------------
    def tool(self, argv, *, timeout: float = seam.DEFAULT_TIMEOUT_S, cwd=None, env=None) -> seam.ToolResult:
        return self.tool_fn(argv, dry_run=self.dry_run, timeout=timeout, cwd=cwd, log=self.log, env=env)

    def do_build(self, **kwargs) -> BuildResult:  # pragma: no cover - guarded by check()
        raise NotImplementedError

    def do_flash(self, **kwargs) -> Any:  # pragma: no cover
        raise NotImplementedError

    def do_reset(self, **kwargs) -> Any:  # pragma: no cover
        raise NotImplementedError

    def do_run(self, **kwargs) -> Any:  # pragma: no cover
        raise NotImplementedError

    def do_profile(self, **kwargs) -> Any:  # pragma: no cover
        raise NotImplementedError

    def do_validate(self, **kwargs) -> Any:  # pragma: no cover
        raise NotImplementedError

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {"name": cls.name, "description": cls.description, "project_format": cls.project_format,
                "capabilities": cls.capabilities.to_dict(),
                "options": [{"name": o.name, "help": o.help, "default": o.default if _plain(o.default) else None}
                            for o in cls.options_spec()]}


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)
