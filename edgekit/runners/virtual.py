"""The virtual runner: the Python virtual board (real TFLM kernels on a pty), started on demand.

Nothing to build or flash: models go over the link at run time. Without a port the runner starts a
virtual board in this process for the duration of the command; with one it talks to a board
started elsewhere (``edgekit virtual-board``).
"""
from __future__ import annotations

from typing import Any

from edgekit.runners.base import Capabilities, Runner, RunnerOption


class VirtualRunner(Runner):
    name = "virtual"
    description = "the built-in virtual board: real TFLM kernels on this computer, over a pty"
    capabilities = Capabilities(run=True, profile=True, reset=True, needs_port=False, model_upload=True)

    @classmethod
    def options_spec(cls):
        return [RunnerOption("max_payload", "frame payload the board announces", 4100, int),
                RunnerOption("arena_bytes", "tensor arena of the board", 200 * 1024, int)]

    def _virtual_options(self) -> dict[str, Any]:
        return {"max_payload": self.options["max_payload"], "arena_bytes": self.options["arena_bytes"]}

    def do_profile(self, *, model, port: str | None = None, runs: int = 200, warmup: int = 10,
                   progress=None, **_):
        from edgekit.profiling import profile

        return profile(model, board=self.board.id, port=port, runs=runs, warmup=warmup, progress=progress,
                       virtual_options=self._virtual_options())

    def do_run(self, *, model: bytes, inputs: list[bytes], port: str | None = None, **_) -> list[bytes]:
        """Upload ``model`` and return the raw output bytes for each input's bytes."""
        from edgekit.link.device import connect, ensure_model

        with connect(self.board, port, virtual_options=self._virtual_options()) as conn:
            ensure_model(conn, model)
            return [conn.session.invoke(x).output for x in inputs]

    def do_reset(self, *, port: str | None = None, **_):
        from edgekit.link.device import connect

        with connect(self.board, port, virtual_options=self._virtual_options()) as conn:
            return conn.session.reset().to_dict()
