"""The virtual board: protocol v1 (docs/protocol.md) served on a pty, running models with the real
TFLM kernels (tflite-micro) in a child process.

    board = VirtualBoard()            # or VirtualBoard(model=bytes) to start with an active model
    port = board.start()              # a thread serves the pty; ``port`` is the path to open
    ...
    board.stop()

``edgekit virtual-board model.tflite`` runs one in the foreground. The board keeps its active model and
a partial upload across a (simulated) reset, like a model store in flash; the request cache, staged
input and outputs are RAM and are lost. :class:`BoardFaults` makes it misbehave on purpose for tests.

What it does not have: PER_OP (the TFLM Python runtime exposes no per-op profiler) and CYCLES (no cycle
counter on a host); INVOKE_RESULT reports ``cycles`` 0 and times from ``time.perf_counter_ns``.
"""
from __future__ import annotations

import hashlib
import logging
import os
import pty
import secrets
import select
import threading
import time
import tty
from dataclasses import dataclass, field

from edgekit._version import __version__
from edgekit.link import frames as fr
from edgekit.link.frames import Capability, ErrCode, MsgType

log = logging.getLogger("edgekit.virtual_board")

DEFAULT_MAX_PAYLOAD = 4100         # 4096-byte upload chunks + the 4-byte offset
DEFAULT_ARENA_BYTES = 200 * 1024
DEFAULT_MODEL_CAPACITY = 1024 * 1024
WRITE_STALL_S = 2.0                # a host that does not read for this long loses bytes, like a UART


@dataclass
class BoardFaults:
    """Misbehaviour on purpose (each fires once unless noted)."""
    reset_after_chunks: int | None = None      # reboot after applying this many UPLOAD_CHUNKs
    reset_during_profile: bool = False         # reboot after running a PROFILE, before its frames
    boot_noise: bytes = b""                    # bytes sent before every boot HELLO
    mute: bool = False                         # answer nothing (stays on until cleared)
    output_offset: int = 0                     # add this to every output byte (a "wrong kernel")
    fired: list[str] = field(default_factory=list)


def _framed(msg_type: int, seq: int, payload: bytes) -> bytes:
    """A frame with a leading 0x00 too: a frame cut on the way cannot swallow this one (spec §1)."""
    return fr.DELIMITER + fr.encode_frame(msg_type, seq, payload)


class _Reboot(Exception):
    """Raised inside a handler to simulate a reset at that point."""


class VirtualBoard:
    def __init__(self, model: bytes | None = None, *, board_id: str = "virtual",
                 max_payload: int = DEFAULT_MAX_PAYLOAD, chunk_size: int | None = None,
                 arena_bytes: int = DEFAULT_ARENA_BYTES, model_capacity: int = DEFAULT_MODEL_CAPACITY,
                 faults: BoardFaults | None = None, keep_model_on_reset: bool = True,
                 worker_timeout_s: float | None = None):
        if max_payload < fr.MIN_MAX_PAYLOAD or max_payload > 0xFFFF:
            raise ValueError(f"max_payload must be {fr.MIN_MAX_PAYLOAD}..65535")
        self.board_id = board_id
        self.max_payload = max_payload
        self.chunk_size = min(chunk_size or max_payload - 4, max_payload - 4)
        self.arena_bytes = arena_bytes
        self.model_capacity = model_capacity
        self.faults = faults or BoardFaults()
        self.keep_model_on_reset = keep_model_on_reset
        self.worker_timeout_s = worker_timeout_s       # None: scaled with the model's bytes and MACs
        self._model_macs: int | None = None
        self.capabilities = (Capability.UPLOAD | Capability.INVOKE | Capability.PROFILE
                             | Capability.RESET | Capability.LOG)
        self._initial_model = model
        self._worker = None
        self._master: int | None = None
        self._slave: int | None = None
        self.port: str | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.boots = 0
        self.requests_handled = 0
        self.replays = 0
        # "flash"
        self.model: bytes | None = None
        self.model_sha: bytes = fr.ZERO_HASH
        self.arena_used = 0
        self.io: dict | None = None
        self._upload: dict | None = None        # {"total": int, "sha": bytes, "buf": bytearray}
        self._chunks_applied = 0
        # "RAM"
        self._reset_ram()
        self.decoder = fr.FrameDecoder(max_body=fr.cobs.max_encoded_len(max_payload + fr.OVERHEAD))

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> str:
        """Open the pty, boot (load the initial model, send HELLO) and serve in a thread."""
        self.open()
        self._thread = threading.Thread(target=self._serve, name="virtual-board", daemon=True)
        self._thread.start()
        return self.port

    def open(self) -> str:
        """Open the pty and boot, without serving yet (see :meth:`serve_forever`)."""
        from edgekit.model.tflm_worker import TflmWorker

        self._worker = TflmWorker()
        self._master, self._slave = pty.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        if self._initial_model is not None:
            self._activate(self._initial_model)
        self._boot()
        return self.port

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`stop` (or Ctrl-C)."""
        self._serve()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self._thread = None
        for fd in (self._master, self._slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = None
        if self._worker is not None:
            self._worker.close()
            self._worker = None

    def __enter__(self) -> "VirtualBoard":
        if self.port is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- device behaviour ------------------------------------------------------------------------
    def _reset_ram(self) -> None:
        self._last_key: tuple[int, int] | None = None
        self._last_reply: list[bytes] = []
        self.staged = bytearray()
        self.output = b""
        self.boot_nonce = secrets.randbits(32) or 1

    def reboot(self) -> None:
        """Simulate a reset: new boot nonce, RAM cleared, HELLO sent (model store kept if configured)."""
        with self._lock:
            self._reboot_locked()

    def _reboot_locked(self) -> None:
        self._reset_ram()
        if not self.keep_model_on_reset:
            self.model, self.model_sha, self.io, self.arena_used = None, fr.ZERO_HASH, None, 0
            self._upload = None
        elif self.model is not None and self.io is not None:
            self.staged = bytearray(self.io["input_bytes"])
        self.decoder.reset()
        self._boot()

    def _boot(self) -> None:
        self.boots += 1
        if self.faults.boot_noise:
            self._write(self.faults.boot_noise)
        self._write(_framed(MsgType.HELLO, 0, self._hello().pack()))

    def _hello(self) -> fr.Hello:
        return fr.Hello(capabilities=int(self.capabilities), max_payload=self.max_payload,
                        boot_nonce=self.boot_nonce, arena_bytes=self.arena_bytes,
                        model_len=len(self.model) if self.model else 0, model_sha256=self.model_sha,
                        board_id=self.board_id, firmware_version=f"edgekit-virtual {__version__}")

    def _log(self, level: int, text: str) -> None:
        self._write(_framed(MsgType.LOG, 0, fr.Log(level, text).pack()))

    def _worker_bound(self, model: bytes, *, builds: int, invokes: int = 1) -> float:
        """How long the TFLM worker may take: ``worker_timeout_s`` per 100 invokes when given, else a
        bound from the model's bytes and MACs (seconds for a small model), so a worker spinning on a
        malformed model is stopped soon."""
        if self.worker_timeout_s is not None:
            return self.worker_timeout_s * (1 + max(invokes - 1, 0) / 100)
        from edgekit.model.tflm_host import child_timeout_s

        return child_timeout_s(model, builds=builds, invokes=invokes, macs=self._model_macs)

    def _activate(self, model: bytes) -> None:
        """Load ``model`` into the TFLM worker; raises _Refused(MODEL_INVALID) if it is refused."""
        from edgekit.errors import EdgekitError
        from edgekit.model.tflm_host import model_macs

        self.model, self.model_sha, self.io, self.arena_used = None, fr.ZERO_HASH, None, 0
        # Uploaded bytes are unverified until the worker's verifier accepted them: bound the load by
        # the model's size, and read its MACs (for invoke / profile bounds) only afterwards.
        self._model_macs = 64 * len(model)
        try:
            info = self._worker.load(model, self.arena_bytes, timeout_s=self._worker_bound(model, builds=2))
        except EdgekitError as e:
            raise _Refused(ErrCode.MODEL_INVALID, str(e)[:200]) from e
        self._model_macs = model_macs(model)
        in_bytes = sum(d["nbytes"] for d in info["inputs"])
        out_bytes = sum(d["nbytes"] for d in info["outputs"])
        self.model, self.model_sha = bytes(model), hashlib.sha256(model).digest()
        self.io = {"input_bytes": in_bytes, "output_bytes": out_bytes, "inputs": info["inputs"],
                   "outputs": info["outputs"]}
        self.arena_used = int(info["arena_used"])
        self.staged = bytearray(in_bytes)

    # -- I/O ------------------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        fd = self._master
        if fd is None:
            return
        view = memoryview(data)
        deadline = time.monotonic() + WRITE_STALL_S
        while view:
            try:
                _, ready, _ = select.select([], [fd], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    log.debug("host does not read; %d bytes lost", len(view))
                    return
                n = os.write(fd, view)
            except OSError:
                return
            view = view[n:]

    def _serve(self) -> None:
        while not self._stop.is_set():
            fd = self._master
            if fd is None:
                return
            try:
                ready, _, _ = select.select([fd], [], [], 0.1)
                if not ready:
                    continue
                data = os.read(fd, 65536)
            except OSError:
                time.sleep(0.05)    # no host has the pty open: nothing to read
                continue
            if not data:
                continue
            for frame in self.decoder.feed(data):
                with self._lock:
                    self._dispatch(frame)

    def _dispatch(self, frame: fr.Frame) -> None:
        if self.faults.mute:
            return
        key = (frame.seq, frame.type)
        if key == self._last_key and self._last_reply:
            self.replays += 1
            for wire in self._last_reply:
                self._write(wire)
            return
        self.requests_handled += 1
        replies: list[bytes] = []

        def reply(msg_type: MsgType, payload: bytes = b"") -> None:
            replies.append(_framed(msg_type, frame.seq, payload))

        try:
            self._handle(frame, reply)
        except _Refused as r:
            replies.append(_framed(MsgType.ERROR, frame.seq, fr.Error(int(r.code), r.text).pack()))
        except fr.PayloadError as e:
            replies.append(_framed(MsgType.ERROR, frame.seq,
                                           fr.Error(int(ErrCode.BAD_FRAME), str(e)[:200]).pack()))
        except _Reboot:
            self._reboot_locked()
            return
        self._last_key, self._last_reply = key, replies
        for wire in replies:
            self._write(wire)
        if frame.type == MsgType.RESET:
            self._reboot_locked()

    def _handle(self, frame: fr.Frame, reply) -> None:
        t = frame.type
        p = frame.payload
        if t == MsgType.HELLO_REQ:
            reply(MsgType.HELLO, self._hello().pack())
        elif t == MsgType.UPLOAD_BEGIN:
            self._upload_begin(fr.UploadBegin.unpack(p), reply)
        elif t == MsgType.UPLOAD_CHUNK:
            self._upload_chunk(fr.OffsetData.unpack(p), reply)
        elif t == MsgType.UPLOAD_END:
            self._upload_end(reply)
        elif t == MsgType.INVOKE:
            self._invoke(p, reply)
        elif t == MsgType.TENSOR_WRITE:
            self._tensor_write(fr.OffsetData.unpack(p), reply)
        elif t == MsgType.TENSOR_READ:
            self._tensor_read(fr.TensorRead.unpack(p), reply)
        elif t == MsgType.PROFILE:
            self._profile(fr.ProfileRequest.unpack(p), reply)
        elif t == MsgType.RESET:
            reply(MsgType.ACK)
        else:
            raise _Refused(ErrCode.UNKNOWN_TYPE, f"type 0x{t:02x} is not a request")

    def _upload_begin(self, req: fr.UploadBegin, reply) -> None:
        if req.total_len > self.model_capacity:
            raise _Refused(ErrCode.TOO_LARGE, f"{req.total_len} bytes > model buffer {self.model_capacity}")
        if req.total_len == 0:
            raise _Refused(ErrCode.BAD_LENGTH, "empty model")
        up = self._upload
        if not (up and up["sha"] == req.sha256 and up["total"] == req.total_len):
            self._upload = up = {"total": req.total_len, "sha": req.sha256, "buf": bytearray()}
        reply(MsgType.UPLOAD_STATUS, fr.UploadStatus(len(up["buf"]), self.chunk_size).pack())

    def _upload_chunk(self, req: fr.OffsetData, reply) -> None:
        up = self._upload
        if up is None:
            raise _Refused(ErrCode.BAD_STATE, "UPLOAD_CHUNK without UPLOAD_BEGIN")
        buf = up["buf"]
        if req.offset == len(buf) and len(buf) + len(req.data) <= up["total"]:
            buf += req.data
            self._chunks_applied += 1
            n = self.faults.reset_after_chunks
            if n is not None and self._chunks_applied >= n and "reset_after_chunks" not in self.faults.fired:
                self.faults.fired.append("reset_after_chunks")
                raise _Reboot()
        reply(MsgType.UPLOAD_STATUS, fr.UploadStatus(len(buf), self.chunk_size).pack())

    def _upload_end(self, reply) -> None:
        up = self._upload
        if up is None:
            raise _Refused(ErrCode.BAD_STATE, "UPLOAD_END without UPLOAD_BEGIN")
        self._upload = None
        if len(up["buf"]) != up["total"]:
            raise _Refused(ErrCode.BAD_STATE, f"only {len(up['buf'])} of {up['total']} bytes received")
        if hashlib.sha256(up["buf"]).digest() != up["sha"]:
            self._log(3, "upload discarded: SHA-256 mismatch")
            raise _Refused(ErrCode.HASH_MISMATCH, "SHA-256 of the received bytes differs")
        try:   # a model the runtime refuses leaves no model active (spec §2.2)
            self._activate(bytes(up["buf"]))
        except _Refused:
            self._log(3, "uploaded model refused by the runtime")
            raise
        self._log(1, f"model active: {len(self.model)} bytes, arena {self.arena_used} bytes")
        reply(MsgType.UPLOAD_DONE, fr.UploadDone(self.model_sha, self.arena_used).pack())

    def _need_model(self) -> dict:
        if self.model is None or self.io is None:
            raise _Refused(ErrCode.NO_MODEL, "no active model")
        return self.io

    def _run(self, request) -> dict:
        from edgekit.errors import EdgekitError

        try:
            return request()
        except EdgekitError as e:
            if self._worker is not None and self.model is not None:
                # the worker may have died: bring the model back for the next request
                try:
                    self._activate(self.model)
                except _Refused:
                    pass
            raise _Refused(ErrCode.INVOKE_FAILED, str(e)[:200]) from e

    def _invoke(self, payload: bytes, reply) -> None:
        io = self._need_model()
        if payload:
            if len(payload) != io["input_bytes"]:
                raise _Refused(ErrCode.BAD_LENGTH,
                               f"input is {len(payload)} bytes, the model takes {io['input_bytes']}")
            self.staged = bytearray(payload)
        res = self._run(lambda: self._worker.invoke(bytes(self.staged),
                                                    timeout_s=self._worker_bound(self.model, builds=0)))
        self.output = res["output"]
        if self.faults.output_offset:
            self.output = bytes((b + self.faults.output_offset) & 0xFF for b in self.output)
        first = self.output[:self.max_payload - fr.InvokeResult.HEADER_LEN]
        reply(MsgType.INVOKE_RESULT, fr.InvokeResult(int(res["time_ns"]), 0, len(self.output), first).pack())

    def _tensor_write(self, req: fr.OffsetData, reply) -> None:
        io = self._need_model()
        end = req.offset + len(req.data)
        if end > io["input_bytes"]:
            raise _Refused(ErrCode.BAD_LENGTH, f"bytes up to {end} past the input's {io['input_bytes']}")
        self.staged[req.offset:end] = req.data
        reply(MsgType.TENSOR_ACK, fr.TensorAck(end).pack())

    def _tensor_read(self, req: fr.TensorRead, reply) -> None:
        if not self.output:
            raise _Refused(ErrCode.BAD_STATE, "no output yet: INVOKE first")
        if req.offset > len(self.output):
            raise _Refused(ErrCode.BAD_LENGTH, f"offset {req.offset} past the output's {len(self.output)}")
        n = min(req.length, self.max_payload - 4)
        reply(MsgType.TENSOR_DATA, fr.OffsetData(req.offset, self.output[req.offset:req.offset + n]).pack())

    def _profile(self, req: fr.ProfileRequest, reply) -> None:
        self._need_model()
        if req.runs == 0:
            raise _Refused(ErrCode.BAD_LENGTH, "runs must be at least 1")
        timeout = self._worker_bound(self.model, builds=0, invokes=req.warmup + req.runs)
        res = self._run(lambda: self._worker.profile(req.warmup, req.runs, bytes(self.staged),
                                                     timeout_s=timeout))
        if self.faults.reset_during_profile and "reset_during_profile" not in self.faults.fired:
            self.faults.fired.append("reset_during_profile")
            raise _Reboot()
        times = res["times_ns"]
        per = fr.ProfileRuns.per_frame(self.max_payload)
        for first in range(0, len(times), per):
            recs = [(int(t), 0) for t in times[first:first + per]]
            reply(MsgType.PROFILE_RUNS, fr.ProfileRuns(len(times), first, recs).pack())
        reply(MsgType.PROFILE_END, fr.ProfileEnd(len(times), self.arena_used).pack())


class _Refused(Exception):
    def __init__(self, code: ErrCode, text: str):
        super().__init__(text)
        self.code = code
        self.text = text
