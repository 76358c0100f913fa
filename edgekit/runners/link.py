"""LinkRunner: the base of every runner whose device speaks protocol v1 (docs/protocol.md).

A subclass says only how its device is reached — :meth:`LinkRunner.device_port` yields a port (the
virtual board starts in this process, the emulated board builds its firmware and boots QEMU, a
serial board finds its USB port or takes ``port=``) — and how its times are to be read
(:meth:`LinkRunner.timing`). Profile, validate and run are the same for all of them and live in
:mod:`edgekit.profiling` and :mod:`edgekit.validation`.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from edgekit.errors import DeviceError
from edgekit.runners.base import Runner, RunnerOption

DEVICE_CLOCK = {"unit": "ns", "source": "device",
                "label": "measured on the board (its own clock, over the serial link)"}


class LinkRunner(Runner):
    """A runner whose device is reached over a serial-like link speaking protocol v1."""

    progress = None      # the command's progress callback (builds report through it too)
    # resets the board from outside (a labgrid place's reset output or power switch) and says what it did,
    # or None when it cannot; a device that does not answer its first HELLO is reset this way once
    recover = None

    @classmethod
    def options_spec(cls):
        return [RunnerOption("force", "use a device whose HELLO names another board than --board (its numbers "
                             "are then reported as that device's; --force on the CLI)", False, bool)]

    def timing(self) -> dict[str, Any]:
        """How the device's INVOKE / PROFILE times are to be read (copied into profile documents)."""
        return dict(DEVICE_CLOCK)

    @contextmanager
    def device_port(self, *, port: str | None = None,
                    models: Sequence[bytes] = ()) -> Iterator[tuple[str, bool, dict | None]]:
        """Yield ``(port, started_here, firmware_facts)`` for the device; stop what was started."""
        if port is None:
            from edgekit.ports import resolve_port

            port = resolve_port(self.board, None, interactive=False)
        yield port, False, None

    def takes_uploads(self) -> bool | None:
        """Whether this device takes models at run time (None: the board file says)."""
        return None

    @contextmanager
    def open_link(self, *, port: str | None = None, baud: int | None = None,
                  models: Sequence[bytes] = ()) -> Iterator[Any]:
        """A :class:`~edgekit.link.device.Connection` to the device, for the duration of the block.

        ``models``: the models the command will run, so that a runner that builds firmware can
        include their ops.
        """
        from edgekit.link.device import Connection, check_identity
        from edgekit.link.session import DeviceSession

        with self.device_port(port=port, models=models) as (where, started, firmware):
            session = DeviceSession.open(where, baud or self.board.baud)
            try:
                hello = self._first_hello(session, where)
                mismatch = check_identity(hello, self.board, where, force=bool(self.options.get("force")))
                timing, uploads = self.timing(), self.takes_uploads()
                if mismatch:
                    from edgekit.link.frames import Capability

                    uploads = hello.has(Capability.UPLOAD)     # the device's own word, not the board file's
                    if self.log:
                        self.log(f"# warning: {mismatch}")
                    timing["label"] = f"{timing.get('label', '')}; {mismatch}".lstrip("; ")
                    timing["board_mismatch"] = hello.board_id
                yield Connection(self.board, session, hello, where, started, timing=timing,
                                 firmware=firmware, takes_uploads=uploads)
            except DeviceError as e:
                # a device that faulted or hangs often said why just before: quote it
                if session.last_log and "last log line" not in e.message:
                    e.message = f"{e.message} (the device's last log line: {session.last_log!r})"
                    e.args = (e.message,)
                raise
            finally:
                session.close()

    def _first_hello(self, session, where: str):
        from edgekit.errors import NoAnswer

        try:
            return session.hello()
        except NoAnswer as e:
            if self.recover is None:
                raise
            done = self.recover()
            if done is None:
                raise
            if self.log:
                self.log(f"# {where} did not answer HELLO ({e.message}); {done}, asking again")
            return session.hello()

    # -- verbs -------------------------------------------------------------------------------------
    def do_profile(self, *, model_path, port: str | None = None, baud: int | None = None, runs: int = 200,
                   warmup: int = 10, progress=None, float_baseline=True, **_):
        from edgekit.profiling import profile_link

        self.progress = progress
        return profile_link(self, model_path, port=port, baud=baud, runs=runs, warmup=warmup,
                            progress=progress, float_baseline=float_baseline)

    def do_validate(self, *, model_path, data, port: str | None = None, baud: int | None = None, **kwargs):
        from edgekit.validation import validate_link

        self.progress = kwargs.get("progress")
        return validate_link(self, model_path, data, port=port, baud=baud, **kwargs)

    def do_run(self, *, model: bytes, inputs: list[bytes], port: str | None = None, baud: int | None = None,
               **_) -> list[bytes]:
        """Put ``model`` on the device and return the raw output bytes for each input's bytes."""
        from edgekit.link.device import ensure_model

        with self.open_link(port=port, baud=baud, models=[model]) as conn:
            ensure_model(conn, model)
            return [conn.session.invoke(x).output for x in inputs]

    def do_reset(self, *, port: str | None = None, baud: int | None = None, **_):
        with self.open_link(port=port, baud=baud) as conn:
            return conn.session.reset().to_dict()
