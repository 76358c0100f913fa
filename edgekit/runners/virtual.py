"""The virtual runner: the Python virtual board (real TFLM kernels on a pty), started on demand.

Nothing to build or flash: models go over the link at run time. Without a port the runner starts a
virtual board in this process for the duration of the command; with one it talks to a board
started elsewhere (``edgekit virtual-board``). Its times are this computer's: profile documents
label them host time, and no board roofline or energy is computed from them.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from edgekit.runners.base import Capabilities, RunnerOption
from edgekit.runners.link import LinkRunner

HOST_TIME = {"unit": "ns", "source": "host",
             "label": "host time: this computer running TFLM kernels behind the serial protocol, not a board's "
                      "time (use --board qemu-m4 or --emulate for counts on the target's instruction set)"}


class VirtualRunner(LinkRunner):
    name = "virtual"
    description = "the built-in virtual board: real TFLM kernels on this computer, over a pty"
    capabilities = Capabilities(run=True, profile=True, validate=True, reset=True, needs_port=False,
                                model_upload=True, link=True)

    @classmethod
    def options_spec(cls):
        return [RunnerOption("max_payload", "frame payload the board announces", 4100, int),
                RunnerOption("arena_bytes", "tensor arena of the board", 200 * 1024, int),
                RunnerOption("faults", "device-side faults to inject (edgekit.link.virtual_board.BoardFaults; "
                             "SDK only)", None, None)]

    def timing(self) -> dict[str, Any]:
        return dict(HOST_TIME)

    @contextmanager
    def device_port(self, *, port: str | None = None,
                    models: Sequence[bytes] = ()) -> Iterator[tuple[str, bool, dict | None]]:
        if port is not None:
            yield port, False, None
            return
        from edgekit.link.virtual_board import VirtualBoard

        extra = {"faults": self.options["faults"]} if self.options.get("faults") is not None else {}
        board = VirtualBoard(board_id=self.board.id, max_payload=self.options["max_payload"],
                             arena_bytes=self.options["arena_bytes"], **extra)
        where = board.start()
        try:
            yield where, True, None
        finally:
            board.stop()
