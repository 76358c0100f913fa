"""Operations shared by profile and validate: reach a board's device and put the model on it.

``connect(board, port)`` opens a :class:`DeviceSession` on ``port``; for a board whose runner is the
virtual board and no port, it starts a :class:`VirtualBoard` in this process first and stops it at
the end. ``ensure_model`` uploads the model to boards that take models at run time, or checks the
hash of the flashed model through HELLO.
"""
from __future__ import annotations

import hashlib
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from edgekit.boards import Board, load_board
from edgekit.errors import BoardError, UsageError
from edgekit.link.frames import Capability, Hello
from edgekit.link.session import DeviceSession, UploadResult
from edgekit.progress import ProgressFn

log = logging.getLogger("edgekit.link")

QEMU_RUNNER = "qemu"
VIRTUAL_RUNNER = "virtual"


@dataclass
class Connection:
    board: Board
    session: DeviceSession
    hello: Hello
    port: str
    started_virtual_board: bool


@contextmanager
def connect(board: str | Board = "virtual", port: str | None = None, *, baud: int | None = None,
            virtual_options: dict | None = None) -> Iterator[Connection]:
    board_obj = board if isinstance(board, Board) else load_board(board)
    vboard = None
    if port is None:
        if board_obj.runner == VIRTUAL_RUNNER:
            from edgekit.link.virtual_board import VirtualBoard

            vboard = VirtualBoard(board_id=board_obj.id, **(virtual_options or {}))
            port = vboard.start()
        elif board_obj.runner == QEMU_RUNNER:
            # the emulated board: build the firmware (cached), boot QEMU, talk over its pty
            from edgekit.runners import get_runner

            vboard = get_runner(QEMU_RUNNER)(board_obj).run("run")
            vboard.boot()
            port = vboard.port
        else:
            raise UsageError(f"board '{board_obj.id}' needs --port (a serial port or pyserial URL)",
                             hint="e.g. --port /dev/ttyACM0, or --port rfc2217://host:2217")
    try:
        session = DeviceSession.open(port, baud or board_obj.baud)
        try:
            hello = session.hello()
            if hello.board_id != board_obj.id and hello.board_id not in board_obj.aliases:
                log.warning("the device on %s says it is '%s', not '%s'", port, hello.board_id,
                            board_obj.id)
            yield Connection(board_obj, session, hello, port, vboard is not None)
        finally:
            session.close()
    finally:
        if vboard is not None:
            vboard.stop()


def ensure_model(conn: Connection, model: bytes, progress: ProgressFn | None = None) -> UploadResult | None:
    """Make ``model`` the device's active model. Returns the upload result, or None if it already was."""
    digest = hashlib.sha256(model).digest()
    hello = conn.session.hello()
    if hello.model_sha256 == digest:
        return None
    if conn.board.runtime_model_upload and hello.has(Capability.UPLOAD):
        return conn.session.upload(model, progress)
    have = hello.model_sha256.hex()[:12] if hello.has_model else "no model"
    raise BoardError(
        f"the device on {conn.port} runs a different model ({have}, this one is "
        f"{digest.hex()[:12]}) and takes no models at run time",
        hint="flash this model first (edgekit flash), then run again")
