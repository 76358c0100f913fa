"""A device reached over protocol v1, and putting a model on it.

:class:`Connection` is what a runner's ``open_link()`` yields (:class:`edgekit.runners.link.LinkRunner`:
the virtual board starts itself, the emulated board boots QEMU, a serial board resolves its USB port).
``ensure_model`` uploads the model to devices that take models at run time, or checks the hash of
the flashed model through HELLO. Nothing here knows one runner from another.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from edgekit.boards import Board
from edgekit.errors import BoardError, DeviceError
from edgekit.link.frames import Capability, Hello
from edgekit.link.session import DeviceSession, UploadResult
from edgekit.progress import ProgressFn


@dataclass
class Connection:
    board: Board
    session: DeviceSession
    hello: Hello
    port: str
    started_here: bool               # the runner started this device (virtual board, QEMU) for the command
    # how the device's times are to be read: {"unit": "ns" | "instructions", "source": ..., "label": ...}
    timing: dict[str, Any] = field(default_factory=dict)
    firmware: dict[str, Any] | None = None   # what the runner built for it (tree, kernels, ELF sizes)
    takes_uploads: bool | None = None        # None: the board file's runtime_model_upload decides

    @property
    def runtime_model_upload(self) -> bool:
        return self.board.runtime_model_upload if self.takes_uploads is None else self.takes_uploads


def check_identity(hello: Hello, board: Board, port: str, *, force: bool = False) -> str | None:
    """A device that says it is another board is refused (its numbers would be read as this board's).

    With ``force`` it is used anyway; the returned line says so (None when the device is ``board``).
    """
    if hello.board_id == board.id or hello.board_id in board.aliases:
        return None
    if force:
        return (f"--force: the device on {port} says it is '{hello.board_id}', not {board.id}; "
                f"its numbers are that device's")
    raise DeviceError(f"the device on {port} says it is '{hello.board_id}', not {board.id}",
                      hint=f"pass --board {hello.board_id}, or the port of a {board.id}, or --force to use it anyway")


def ensure_model(conn: Connection, model: bytes, progress: ProgressFn | None = None) -> UploadResult | None:
    """Make ``model`` the device's active model. Returns the upload result, or None if it already was."""
    digest = hashlib.sha256(model).digest()
    hello = conn.session.hello()
    if hello.model_sha256 == digest:
        return None
    if conn.runtime_model_upload and hello.has(Capability.UPLOAD):
        return conn.session.upload(model, progress)
    have = hello.model_sha256.hex()[:12] if hello.has_model else "no model"
    raise BoardError(
        f"the device on {conn.port} runs a different model ({have}, this one is "
        f"{digest.hex()[:12]}) and takes no models at run time",
        hint="flash this model first (edgekit flash), then run again")
