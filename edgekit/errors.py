"""One exception tree for edgekit.

Every error a user can cause or meet derives from :class:`EdgekitError`. Each class carries the exit
code the CLI returns for it (documented in docs/cli.md) and an optional ``hint``: the one thing to do
about it. The CLI prints ``edgekit: error: <message>`` (plus ``hint: ...``) on stderr and never a
traceback unless ``EDGEKIT_DEBUG=1``. Causes are chained with ``raise ... from e``.
"""
from __future__ import annotations


class EdgekitError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None, **context):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.context = context

    def __str__(self) -> str:
        return self.message


class UsageError(EdgekitError):
    """Bad option values or combinations (a pruning target outside (0, 1), ...)."""

    exit_code = 2


class InputFileError(EdgekitError):
    """A file that is missing, unreadable, or not what the command needs."""

    exit_code = 3


class ModelFormatError(InputFileError):
    """A model file that is corrupt, truncated, or of the wrong kind."""


class BrokenGraph(ModelFormatError):
    """A structurally valid flatbuffer whose graph is inconsistent (edgekit.model.checks): an op reads a
    tensor before it is produced, a constant has no data, a buffer disagrees with its tensor's shape.
    ``problems``: every problem found, as edgekit.model.checks.GraphProblem."""

    def __init__(self, message: str, *, hint: str | None = None, problems=(), **context):
        super().__init__(message, hint=hint, problems=tuple(problems), **context)
        self.problems = tuple(problems)


class DataError(EdgekitError):
    """Calibration / evaluation data with the wrong shape, dtype, NaNs, missing labels, ..."""

    exit_code = 4


class UnsupportedModelError(EdgekitError):
    """A valid model that a stage cannot handle (layers TF-MOT refuses, Lambda layers, ...)."""

    exit_code = 5


class ConversionError(EdgekitError):
    """The converter, TF-MOT or the compressor failed on a model they should handle."""

    exit_code = 6


class RuntimeFailed(ConversionError):
    """A host runtime (LiteRT, TFLM) in its child process answered a request with an error: it refused
    the model or failed on it. ``kind`` says how (invalid | no_model | failed); ``stderr`` is what the
    child printed meanwhile."""

    def __init__(self, message: str, *, hint: str | None = None, kind: str = "failed", **context):
        super().__init__(message, hint=hint, kind=kind, **context)
        self.kind = kind


class AccuracyBudgetError(ConversionError):
    """No quantization setting keeps accuracy within ``--max-drop`` points of float (the quantization
    doctor). ``closest``: the setting that came nearest, with its drop."""

    def __init__(self, message: str, *, hint: str | None = None, closest: dict | None = None, **context):
        super().__init__(message, hint=hint, closest=closest, **context)
        self.closest = closest


class RecipeError(UsageError):
    """A recipe YAML file with unknown keys, wrong types or out-of-range values."""


class BoardError(EdgekitError):
    """Unknown board, invalid board file, or a model that does not fit the board."""

    exit_code = 7


class ModelTooLarge(BoardError):
    """Model + arena + firmware exceed the board's flash or RAM."""


class ToolMissing(EdgekitError):
    """An external program (arduino-cli, adb, ssh, ...) is not installed."""

    exit_code = 8


class ToolFailed(EdgekitError):
    """An external program ran and exited non-zero."""

    exit_code = 8


class DeviceError(EdgekitError):
    """Serial / SSH / adb link problems: busy, vanished, no answer, garbage, reset."""

    exit_code = 9


class ValidationFailed(EdgekitError):
    """The device's outputs disagree with the host past the threshold."""

    exit_code = 10


class OutputError(EdgekitError):
    """An output folder or file that cannot be written."""

    exit_code = 11


class RuntimeMissing(EdgekitError):
    """An optional Python dependency (tensorflow, ai-edge-litert, tflite-micro, ...) is missing."""

    exit_code = 12


class NativeCrash(EdgekitError):
    """A native runtime crashed in its child process (the model is rejected; edgekit lives on)."""

    exit_code = 13


class NativeTimeout(NativeCrash):
    """A native runtime in its child process did not answer within its deadline (it spins or hangs on
    this model); the child was killed."""


class FarmError(EdgekitError):
    """A board farm (labgrid) problem: coordinator unreachable, place unknown, held by someone else,
    without a serial port, or a place of a farm run that failed."""

    exit_code = 14


class CoordinatorUnreachable(FarmError):
    """No labgrid coordinator answers at the address (LG_COORDINATOR / --coordinator)."""


class PlaceNotFound(FarmError):
    """No place of that name (or the pattern matches several) on the coordinator."""


class PlaceBusy(FarmError):
    """The place is acquired by someone else (``owner``: labgrid's host/user)."""

    def __init__(self, message: str, *, hint: str | None = None, owner: str | None = None, **context):
        super().__init__(message, hint=hint, owner=owner, **context)
        self.owner = owner


class PlaceUnusable(FarmError):
    """The place lacks what edgekit needs: a serial resource, or a board tag."""


class FarmIncomplete(FarmError):
    """`edgekit farm profile`: at least one place failed (each place's error is in the document)."""


class ExecutorError(EdgekitError):
    """A sweep's executor failed: the Ray cluster does not answer or refuses the connection, or a Ray
    worker or node died, or a worker cannot run edgekit. Points already finished are kept."""

    exit_code = 15


class Interrupted(EdgekitError):
    exit_code = 130


# One table for docs and the CLI: exit code -> meaning.
EXIT_CODES = {
    0: "success",
    1: "unexpected internal error (run with EDGEKIT_DEBUG=1 and report it)",
    2: "usage error: bad option or recipe value",
    3: "input file missing, unreadable or of the wrong kind",
    4: "bad data (shape, dtype, NaN/inf, missing labels)",
    5: "model not supported by the requested stage",
    6: "conversion, optimization or compression failed",
    7: "board unknown, invalid, or model does not fit",
    8: "external tool missing or failed",
    9: "device link error",
    10: "validation failed (device disagrees with host)",
    11: "output cannot be written",
    12: "optional Python dependency missing",
    13: "a native runtime crashed or hung on this model",
    14: "board farm: coordinator unreachable, place unknown, busy or unusable, or a place of a farm run failed",
    15: "sweep executor failed: Ray cluster unreachable, or a Ray worker or node died",
    130: "interrupted",
}
# the same codes in a word or two, for `edgekit --help` (docs/cli.md has the long table; a test keeps
# both in step with EXIT_CODES)
EXIT_CODE_NAMES = {0: "ok", 1: "internal", 2: "usage", 3: "input file", 4: "data", 5: "unsupported model",
                   6: "conversion", 7: "board/fit", 8: "external tool", 9: "device link", 10: "validation",
                   11: "output", 12: "missing dependency", 13: "native crash", 14: "board farm", 15: "executor",
                   130: "interrupted"}


# device link
class PortPermission(DeviceError):
    """The serial port exists but this user may not open it (not in the dialout group)."""


class PortBusy(DeviceError):
    """Another program holds the serial port (a serial monitor, ModemManager, another edgekit)."""


class PortNotFound(DeviceError):
    """No port at that path or URL (not plugged in, wrong name, server not listening)."""


class PortVanished(DeviceError):
    """The port went away during a transfer (unplugged, board reset re-enumerated USB, server closed)."""


class NoAnswer(DeviceError):
    """The device did not answer a request within its timeout after the bounded retries."""


class DeviceReset(DeviceError):
    """The device sent a HELLO with a new boot nonce: it was reset during the operation."""


class ProtocolError(DeviceError):
    """The device answered with something the protocol does not allow (version, payload, error code)."""

    def __init__(self, message: str, *, hint: str | None = None, code: int | None = None, **context):
        super().__init__(message, hint=hint, code=code, **context)
        self.code = code
