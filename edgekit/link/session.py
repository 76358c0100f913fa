"""A session with one device speaking protocol v1 (docs/protocol.md §4 is the contract here).

Every request waits a bounded time that grows with the bytes on the wire, is re-sent with the same
``seq`` at most :data:`RETRIES` times, and then fails with one clear error. A HELLO carrying a new
boot nonce ends the operation with :class:`~edgekit.errors.DeviceReset`; :meth:`DeviceSession.upload`
then resumes from the offset the device reports. LOG frames go to the log handler.
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from edgekit.errors import DeviceReset, NoAnswer, ProtocolError
from edgekit.link import frames as fr
from edgekit.link.frames import Capability, ErrCode, MsgType
from edgekit.link.transport import Transport, open_port
from edgekit.progress import ProgressFn

RETRIES = 3                      # re-sends of one request before NoAnswer
RESET_RESUMES = 3                # device resets an upload survives (resuming each time)
BASE_TIMEOUT_S = 0.5
COMPUTE_ALLOWANCE_S = 2.0        # device-side work (hashing, loading a model, a first invoke)
MIN_UPLOAD_CHUNK = 128           # upload chunks shrink after failures, down to this many bytes
UPLOAD_RECOVERIES = 8            # chunks that got no answer an upload survives (shrinking, then resuming)
CLEAN_CHUNKS_TO_GROW = 8         # clean chunks in a row before the chunk size doubles again
PROFILE_BATCH_S = 0.5            # device time one PROFILE request may take; longer runs go in batches

log = logging.getLogger("edgekit.link")
device_log = logging.getLogger("edgekit.device")

_ERROR_HINTS = {
    ErrCode.NO_MODEL: "upload a model first (a board with runtime upload) or flash one",
    ErrCode.BAD_LENGTH: "the input size does not match the model on the device; is it the same model?",
    ErrCode.HASH_MISMATCH: "the model was corrupted on the way; run again (the old model stays active)",
    ErrCode.MODEL_INVALID: "the device runtime refused the model (ops, schema or arena too small)",
    ErrCode.TOO_LARGE: "the model, or its input or output, is larger than the device's buffers; shrink it",
    ErrCode.UNSUPPORTED: "the firmware on this board lacks this capability",
    ErrCode.BAD_STATE: "the device lost track of the transfer; run again",
}


def _log_handler_default(level: int, text: str) -> None:
    py_level = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR)[min(level, 3)]
    device_log.log(py_level, "%s", text)


@dataclass
class SessionStats:
    requests: int = 0
    resends: int = 0
    replies_ignored: int = 0
    logs: int = 0
    resets_seen: int = 0
    bytes_written: int = 0
    bytes_read: int = 0


@dataclass
class UploadResult:
    sha256: str
    total_bytes: int
    chunk_size: int
    arena_used: int
    resumed_from: int            # offset the device reported at the first UPLOAD_BEGIN
    resumes_after_reset: int
    seconds: float
    wire_bytes: int              # bytes written to the port during this upload
    chunk_shrinks: int = 0       # times the chunk size was halved after a failed or retried chunk
    recoveries: int = 0          # chunks that got no answer, after which the upload resumed by offset

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class InvokeOutput:
    time_ns: int
    cycles: int
    output: bytes


@dataclass
class ProfileTrain:
    runs: list[tuple[int, int]]                      # (time_ns, cycles) per timed run
    ops: list[tuple[str, int, int]] = field(default_factory=list)   # (name, count, total_ns)
    arena_used: int = 0


class _ResumeUpload(Exception):
    """Internal: a chunk got no answer; ask the device for its offset and go on from there."""


class DeviceSession:
    """Requests and replies with one device over a :class:`Transport`."""

    def __init__(self, transport: Transport, *, log_handler: Callable[[int, str], None] | None = None,
                 retries: int = RETRIES):
        self.transport = transport
        self.log_handler = log_handler or _log_handler_default
        self.retries = retries
        self.decoder = fr.FrameDecoder()
        self.stats = SessionStats()
        self.info: fr.Hello | None = None
        self.boot_nonce: int | None = None
        self._seq = 0
        self._pending: list[fr.Frame] = []
        self._need_resync = True
        self._invoke_s = 0.0         # round trip of the last INVOKE's answered try (for later waits)
        self.last_try_s = 0.0        # send-to-reply time of the last request's answered try
        self.last_attempts = 0       # tries the last request took (1: answered at once)
        self.last_log: str | None = None   # the device's last LOG line (errors quote it)

    # -- opening / closing -------------------------------------------------------------------
    @classmethod
    def open(cls, port: str, baud: int = 115200, **kwargs) -> "DeviceSession":
        return cls(open_port(port, baud), **kwargs)

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> "DeviceSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the request/reply engine ------------------------------------------------------------
    def _next_seq(self) -> int:
        self._seq = self._seq % 0xFFFF + 1      # 1..65535, never 0
        return self._seq

    def timeout_for(self, request_payload: int, reply_payload: int, extra_s: float = 0.0) -> float:
        wire = fr.wire_len(request_payload) + fr.wire_len(reply_payload)
        return BASE_TIMEOUT_S + 4.0 * wire / self.transport.bytes_per_s + extra_s

    def _send(self, data: bytes) -> None:
        if self._need_resync:
            data = fr.DELIMITER + data     # end whatever partial frame the device holds
            self._need_resync = False
        self.transport.write(data)
        self.stats.bytes_written += len(data)

    def _frames(self, deadline: float):
        """Yield frames until ``deadline``; LOG and boot HELLOs are handled here."""
        while True:
            while self._pending:
                frame = self._pending.pop(0)
                if self._handle_unsolicited(frame):
                    continue
                yield frame
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            data = self.transport.read(min(remaining, 0.25))
            if data:
                self.stats.bytes_read += len(data)
                self._pending.extend(self.decoder.feed(data))

    def _handle_unsolicited(self, frame: fr.Frame) -> bool:
        if frame.type == MsgType.LOG:
            self.stats.logs += 1
            try:
                entry = fr.Log.unpack(frame.payload)
                self.last_log = entry.text
                self.log_handler(entry.level, entry.text)
            except fr.PayloadError:
                pass
            return True
        if frame.type == MsgType.HELLO:
            try:
                hello = fr.Hello.unpack(frame.payload)
            except fr.PayloadError:
                return True
            self._check_version(hello)
            if self.boot_nonce is not None and hello.boot_nonce != self.boot_nonce:
                self.stats.resets_seen += 1
                self.info = hello
                self.boot_nonce = hello.boot_nonce
                self._need_resync = True
                raise DeviceReset(
                    f"the device on {self.transport.port} was reset during the operation "
                    f"(boot nonce changed)",
                    hint="check its power supply and that nothing else resets it; run again")
            if frame.seq == 0:
                if self.boot_nonce is None:
                    self.info, self.boot_nonce = hello, hello.boot_nonce
                return True
        return False

    def _check_version(self, hello: fr.Hello) -> None:
        if hello.proto_version != fr.VERSION:
            raise ProtocolError(
                f"the device speaks protocol version {hello.proto_version}; this edgekit speaks "
                f"version {fr.VERSION}",
                hint="update the firmware on the board or edgekit so both use the same version")

    def request(self, msg_type: MsgType, payload: bytes = b"", *, reply_types: tuple[int, ...],
                reply_payload: int = 64, extra_s: float = 0.0, probe_on_silence: bool = False) -> fr.Frame:
        """Send one request and return its reply; re-send on silence; raise on ERROR.

        ``probe_on_silence``: when the first try's wait (sized from the device's measured work) ends
        without a single byte back, one HELLO tells a lost reply from a device that is gone, instead of
        three more long waits. Only for work whose time is known: a device still busy would miss the
        probe, and the probe's reply replaces the request's in the device's reply cache.
        """
        seq = self._next_seq()
        wire = fr.encode_frame(msg_type, seq, payload)
        timeout = self.timeout_for(len(payload), reply_payload, extra_s)
        self.stats.requests += 1
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats.resends += 1
                self._need_resync = True
                log.debug("no reply to %s seq %d within %.2f s; re-sending (%d/%d)",
                          msg_type.name, seq, timeout, attempt, self.retries)
            self._send(wire)
            sent = time.monotonic()
            read_before = self.stats.bytes_read
            for frame in self._frames(sent + timeout):
                if frame.seq != seq:
                    self.stats.replies_ignored += 1
                    continue
                if frame.type == MsgType.ERROR:
                    self._raise_device_error(msg_type, frame)
                if frame.type in reply_types:
                    # only the answered try counts: waits never grow with earlier timeouts and retries
                    self.last_try_s = time.monotonic() - sent
                    self.last_attempts = attempt + 1
                    return frame
                self.stats.replies_ignored += 1
            if attempt == 0 and probe_on_silence and self.stats.bytes_read == read_before:
                self._probe_after_silence(msg_type, timeout)
        self._raise_no_answer(msg_type, timeout)
        raise AssertionError("unreachable")

    def _raise_no_answer(self, msg_type: MsgType, timeout: float) -> None:
        st = self.decoder.stats
        if st.last_foreign_version is not None:
            raise ProtocolError(
                f"the device sends protocol version {st.last_foreign_version} frames; this edgekit "
                f"speaks version {fr.VERSION}", hint="update the firmware or edgekit")
        heard = (f"; {st.dropped} damaged frames were dropped" if st.dropped else
                 "; nothing valid was received" if not self.stats.bytes_read else "")
        raise NoAnswer(
            f"no answer from {self.transport.port} to {msg_type.name} after {self.retries + 1} tries "
            f"({timeout:.1f} s each){heard}",
            hint="check the port, the baud rate and that the board runs edgekit firmware "
                 "(press reset, then try again)")

    def _raise_device_error(self, msg_type: MsgType, frame: fr.Frame) -> None:
        try:
            err = fr.Error.unpack(frame.payload)
        except fr.PayloadError:
            err = fr.Error(0, "unreadable error payload")
        detail = f": {err.message}" if err.message else ""
        try:
            hint = _ERROR_HINTS.get(ErrCode(err.code))
        except ValueError:
            hint = None
        raise ProtocolError(f"the device refused {msg_type.name}: {err.name}{detail}",
                            hint=hint, code=err.code)

    # -- operations ----------------------------------------------------------------------------
    def hello(self) -> fr.Hello:
        frame = self.request(MsgType.HELLO_REQ, reply_types=(MsgType.HELLO,), reply_payload=128)
        hello = self._unpack(fr.Hello, frame)
        self._check_version(hello)
        if hello.max_payload < fr.MIN_MAX_PAYLOAD:
            raise ProtocolError(f"the device takes frames of only {hello.max_payload} bytes; "
                                f"protocol v1 needs at least {fr.MIN_MAX_PAYLOAD}",
                                hint="fix max_payload in the firmware")
        self.info = hello
        if self.boot_nonce is None:
            self.boot_nonce = hello.boot_nonce
        return hello

    def _ensure_hello(self) -> fr.Hello:
        return self.info if self.info is not None else self.hello()

    def _require(self, cap: Capability, what: str) -> fr.Hello:
        info = self._ensure_hello()
        if not info.has(cap):
            raise ProtocolError(f"the device ({info.board_id}) cannot {what}: it lacks the "
                                f"{cap.name} capability", hint=_ERROR_HINTS[ErrCode.UNSUPPORTED],
                                code=int(ErrCode.UNSUPPORTED))
        return info

    @staticmethod
    def _unpack(cls, frame: fr.Frame):
        try:
            return cls.unpack(frame.payload)
        except fr.PayloadError as e:
            raise ProtocolError(f"unreadable {frame.name} from the device: {e}") from e

    def upload(self, model: bytes, progress: ProgressFn | None = None) -> UploadResult:
        """Upload ``model``; resumes from the device's offset (also after a device reset).

        Chunks start at the size the device asks for. A chunk that needed re-sends halves the size
        (down to :data:`MIN_UPLOAD_CHUNK`), :data:`CLEAN_CHUNKS_TO_GROW` clean ones in a row double it
        again; a chunk that got no answer at all halves it and the upload resumes from the offset the
        device reports (at most :data:`UPLOAD_RECOVERIES` times; a device that does not answer that
        UPLOAD_BEGIN either is gone: NoAnswer).
        """
        info = self._require(Capability.UPLOAD, "take a model at run time")
        digest = hashlib.sha256(model).digest()
        total = len(model)
        t0 = time.monotonic()
        written0 = self.stats.bytes_written
        resumes = recoveries = shrinks = 0
        first_offset: int | None = None
        cap: int | None = None            # host-side limit on the chunk size after failures
        while True:
            try:
                status = self._unpack(fr.UploadStatus, self.request(
                    MsgType.UPLOAD_BEGIN, fr.UploadBegin(total, digest).pack(),
                    reply_types=(MsgType.UPLOAD_STATUS,)))
                if first_offset is None:
                    first_offset = status.next_offset
                chunk = status.chunk_size
                if not 0 < chunk <= info.max_payload - 4:
                    raise ProtocolError(f"the device asked for chunks of {chunk} bytes "
                                        f"(max_payload {info.max_payload})")
                size = min(chunk, cap or chunk)
                floor = min(chunk, MIN_UPLOAD_CHUNK)
                offset = status.next_offset
                stalls = clean = 0
                while offset < total:
                    if progress:
                        progress("upload", offset, total)
                    data = model[offset:offset + size]
                    try:
                        status = self._unpack(fr.UploadStatus, self.request(
                            MsgType.UPLOAD_CHUNK, fr.OffsetData(offset, data).pack(),
                            reply_types=(MsgType.UPLOAD_STATUS,), reply_payload=6))
                    except NoAnswer:
                        recoveries += 1
                        if recoveries > UPLOAD_RECOVERIES:
                            raise
                        if size > floor:
                            size, shrinks = max(floor, size // 2), shrinks + 1
                        cap = size
                        log.warning("no answer to a %d-byte chunk at offset %d; resuming with %d-byte chunks "
                                    "(%d/%d)", len(data), offset, size, recoveries, UPLOAD_RECOVERIES)
                        self._need_resync = True
                        raise _ResumeUpload() from None
                    if status.next_offset > total:
                        raise ProtocolError(f"the device reports offset {status.next_offset} past "
                                            f"the end of a {total}-byte upload")
                    stalls = stalls + 1 if status.next_offset <= offset else 0
                    if stalls > self.retries:
                        raise ProtocolError(f"the upload makes no progress at offset {offset}",
                                            hint="run again; if it repeats, reset the board")
                    offset = status.next_offset
                    if self.last_attempts > 1 and size > floor:
                        size, clean, shrinks = max(floor, size // 2), 0, shrinks + 1
                        cap = size
                    elif self.last_attempts == 1:
                        clean += 1
                        if clean >= CLEAN_CHUNKS_TO_GROW and size < chunk:
                            size, clean = min(chunk, size * 2), 0
                            cap = size
                if progress:
                    progress("upload", total, total)
                done = self._unpack(fr.UploadDone, self.request(
                    MsgType.UPLOAD_END, reply_types=(MsgType.UPLOAD_DONE,), reply_payload=36,
                    extra_s=COMPUTE_ALLOWANCE_S + total / 2e6))
                break
            except _ResumeUpload:
                continue
            except DeviceReset:
                resumes += 1
                if resumes > RESET_RESUMES:
                    raise
                log.warning("device reset during upload; resuming (%d/%d)", resumes, RESET_RESUMES)
                self.info = None
                info = self._require(Capability.UPLOAD, "take a model at run time")
        if done.sha256 != digest:
            raise ProtocolError("the device activated a model whose SHA-256 differs from the upload",
                                hint="the firmware's hash check is broken; do not trust this board")
        self.info = None   # model changed: the next HELLO tells the new state
        return UploadResult(sha256=digest.hex(), total_bytes=total, chunk_size=chunk,
                            arena_used=done.arena_used, resumed_from=first_offset or 0,
                            resumes_after_reset=resumes, seconds=time.monotonic() - t0,
                            wire_bytes=self.stats.bytes_written - written0, chunk_shrinks=shrinks,
                            recoveries=recoveries)

    def invoke(self, input_bytes: bytes) -> InvokeOutput:
        """One invoke on ``input_bytes`` (staged in chunks if it does not fit one frame)."""
        info = self._require(Capability.INVOKE, "run a model")
        extra = COMPUTE_ALLOWANCE_S + 4 * self._invoke_s
        if len(input_bytes) <= info.max_payload:
            payload = bytes(input_bytes)
        else:
            self.stage_input(input_bytes)
            payload = b""
        res = self._unpack(fr.InvokeResult, self.request(
            MsgType.INVOKE, payload, reply_types=(MsgType.INVOKE_RESULT,),
            reply_payload=info.max_payload, extra_s=extra, probe_on_silence=self._invoke_s > 0))
        # A first-try answer measures the device's work; a re-sent one was answered from the reply
        # cache, so it only bounds the link: keep the earlier estimate (never the timeouts in between).
        device_s = res.time_ns / 1e9
        if self.last_attempts == 1:
            self._invoke_s = max(self.last_try_s, device_s)
        else:
            self._invoke_s = max(self._invoke_s, device_s)
        out = bytearray(res.output)
        while len(out) < res.output_len:
            want = min(res.output_len - len(out), info.max_payload - 4)
            data = self._unpack(fr.OffsetData, self.request(
                MsgType.TENSOR_READ, fr.TensorRead(len(out), want).pack(),
                reply_types=(MsgType.TENSOR_DATA,), reply_payload=want + 4))
            if data.offset != len(out) or not data.data:
                raise ProtocolError(f"TENSOR_DATA at offset {data.offset}, expected {len(out)}")
            out += data.data
        return InvokeOutput(res.time_ns, res.cycles, bytes(out[:res.output_len]))

    def stage_input(self, input_bytes: bytes) -> None:
        """Stage input bytes with TENSOR_WRITE chunks (used by PROFILE and large inputs)."""
        info = self._ensure_hello()
        step = info.max_payload - 4
        offset = 0
        while offset < len(input_bytes):
            ack = self._unpack(fr.TensorAck, self.request(
                MsgType.TENSOR_WRITE, fr.OffsetData(offset, input_bytes[offset:offset + step]).pack(),
                reply_types=(MsgType.TENSOR_ACK,), reply_payload=4))
            if ack.next_offset <= offset or ack.next_offset > len(input_bytes):
                raise ProtocolError(f"the device did not take input bytes at offset {offset} "
                                    f"(it reports {ack.next_offset})")
            offset = ack.next_offset

    def profile(self, warmup: int, runs: int, progress: ProgressFn | None = None,
                latency_hint_s: float | None = None) -> ProfileTrain:
        """Run PROFILE(warmup, runs) on the staged input; collect the frame train.

        Long profiles go in batches of about :data:`PROFILE_BATCH_S` of device time each (the first
        sized from the last invoke's round trip or ``latency_hint_s``, the next ones from the batch
        before), so every wait stays short whatever ``runs`` is, and a device that stops answering is
        noticed after one batch's wait and a HELLO probe. Per-op records are summed over the batches;
        the warmup runs once, before the first batch.
        """
        self._require(Capability.PROFILE, "profile")
        if not (0 <= warmup <= 0xFFFF and 1 <= runs <= 0xFFFF):
            raise ValueError("warmup must be 0..65535 and runs 1..65535")
        per_run = latency_hint_s if latency_hint_s is not None else self._invoke_s
        all_runs: list[tuple[int, int]] = []
        ops: list[list] = []
        arena = 0
        while len(all_runs) < runs:
            left = runs - len(all_runs)
            w = warmup if not all_runs else 0
            batch = max(1, min(left, int(PROFILE_BATCH_S / per_run) - w)) if per_run > 0 else min(left, 8)
            t0 = time.monotonic()
            train = self._profile_batch(w, batch, per_run, progress, len(all_runs), runs)
            per_run = (time.monotonic() - t0) / (w + batch)        # wall time per run, round trip included
            all_runs += train.runs
            arena = train.arena_used
            if not ops:
                ops = [list(rec) for rec in train.ops]
            elif len(ops) == len(train.ops):
                for acc, (name, count, t) in zip(ops, train.ops):
                    acc[1] += count
                    acc[2] += t
            else:
                raise ProtocolError(f"the device reported {len(train.ops)} ops in one PROFILE batch and "
                                    f"{len(ops)} in another")
        if progress:
            progress("profile", runs, runs)
        return ProfileTrain(runs=all_runs, ops=[tuple(o) for o in ops], arena_used=arena)

    def _profile_batch(self, warmup: int, runs: int, per_run: float, progress: ProgressFn | None,
                       done_before: int, runs_total: int) -> ProfileTrain:
        compute_s = (warmup + runs) * per_run
        reply_bytes = fr.wire_len(runs * fr.RUN_RECORD.size) + 2048
        timeout = self.timeout_for(4, reply_bytes, COMPUTE_ALLOWANCE_S + 4.0 * compute_s)
        seq = self._next_seq()
        wire = fr.encode_frame(MsgType.PROFILE, seq, fr.ProfileRequest(warmup, runs).pack())
        self.stats.requests += 1
        got_runs: dict[int, tuple[int, int]] = {}
        got_ops: dict[int, tuple[str, int, int]] = {}
        ops_total = 0
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats.resends += 1
                self._need_resync = True
            self._send(wire)
            t_start = time.monotonic()
            deadline = t_start + timeout
            end: fr.ProfileEnd | None = None
            heard = False
            while end is None and time.monotonic() < deadline:
                if progress and compute_s > 0 and not got_runs:
                    done = min(runs, int((time.monotonic() - t_start) / max(per_run, 1e-9)) - warmup)
                    progress("profile", done_before + max(0, done), runs_total)
                for frame in self._frames(min(deadline, time.monotonic() + 0.2)):
                    if frame.seq != seq:
                        self.stats.replies_ignored += 1
                        continue
                    heard = True
                    if frame.type == MsgType.ERROR:
                        self._raise_device_error(MsgType.PROFILE, frame)
                    elif frame.type == MsgType.PROFILE_RUNS:
                        part = self._unpack(fr.ProfileRuns, frame)
                        for i, rec in enumerate(part.records):
                            got_runs[part.first + i] = rec
                    elif frame.type == MsgType.PROFILE_OPS:
                        part_ops = self._unpack(fr.ProfileOps, frame)
                        ops_total = part_ops.total
                        for i, rec in enumerate(part_ops.records):
                            got_ops[part_ops.first + i] = rec
                    elif frame.type == MsgType.PROFILE_END:
                        end = self._unpack(fr.ProfileEnd, frame)
                        break
            if end is None:
                if not heard:
                    self._probe_after_silence(MsgType.PROFILE, timeout)
                continue
            if end.runs != runs:
                raise ProtocolError(f"the device ran {end.runs} runs, {runs} were asked")
            if len(got_runs) == runs and len(got_ops) == ops_total:
                return ProfileTrain(runs=[got_runs[i] for i in range(runs)],
                                    ops=[got_ops[i] for i in range(ops_total)], arena_used=end.arena_used)
            # frames of the train were lost: ask again with the same seq; the device replays it
            log.debug("profile train incomplete (%d/%d runs); asking for a replay", len(got_runs), runs)
        self._raise_no_answer(MsgType.PROFILE, timeout)
        raise AssertionError("unreachable")

    def _probe_after_silence(self, msg_type: MsgType, waited_s: float) -> None:
        """Nothing came back to ``msg_type`` within its wait (sized from the device's own latency, so it
        should have finished): one HELLO tells a lost reply from a device that is gone."""
        dropped = self.decoder.stats.dropped
        try:
            self.hello()
        except NoAnswer as e:
            damaged = self.decoder.stats.dropped - dropped
            if damaged:
                raise NoAnswer(f"the link to {self.transport.port} damages frames: no valid answer to "
                               f"{msg_type.name} within {waited_s:.1f} s, nor to HELLO after {self.retries + 1} "
                               f"tries ({damaged} damaged frames dropped)",
                               hint="check the cable, the baud rate and the ground; a shorter or shielded "
                                    "cable, or a lower baud rate, helps") from e
            raise NoAnswer(f"the device on {self.transport.port} went silent during {msg_type.name}: nothing "
                           f"within {waited_s:.1f} s, and no answer to HELLO after {self.retries + 1} tries",
                           hint="check the cable and that the board is powered; press reset, then run again"
                           ) from e
        self._need_resync = True

    def reset(self, wait_s: float = 10.0) -> fr.Hello:
        """Ask the device to reboot; return its new HELLO (the session adopts the new nonce)."""
        self._require(Capability.RESET, "reset on request")
        old = self.boot_nonce
        try:
            self.request(MsgType.RESET, reply_types=(MsgType.ACK,))
        except DeviceReset:
            # the ACK was lost but the boot HELLO arrived: the session already adopted the new boot
            self._need_resync = True
            return self.info
        self.boot_nonce = None     # the next HELLO (unsolicited or asked) starts a new session
        self.info = None
        deadline = time.monotonic() + wait_s
        boot_wait = min(deadline, time.monotonic() + 1.0)
        while self.info is None and time.monotonic() < boot_wait:
            for _ in self._frames(time.monotonic() + 0.05):
                pass               # the unsolicited boot HELLO sets info and nonce
        while self.info is None and time.monotonic() < deadline:
            try:
                self.hello()
            except NoAnswer:
                continue
        if self.info is None:
            raise NoAnswer(f"the device on {self.transport.port} did not come back after RESET",
                           hint="power-cycle the board")
        if self.info.boot_nonce == old:
            log.warning("the device kept its boot nonce across RESET")
        self._need_resync = True
        return self.info
