"""Child-process side of edgekit.model.load.litert_build: LiteRT verifier + interpreter build.

Serves requests until stdin closes: each request is an 8-byte little-endian length and the model
bytes; each reply a 4-byte little-endian length and a JSON object
{"status": "ok"} | {"status": "invalid" | "objection" | "missing", "message": "..."}.
LiteRT's interpreter build can crash the process on some crafted flatbuffers, so it never runs in
edgekit's own process; the parent starts a fresh child after a crash. Imports nothing from edgekit.
"""
from __future__ import annotations

import json
import os
import struct
import sys

_VERIFIER_MESSAGE = "not a valid Flatbuffer"


def _check(data: bytes) -> dict:
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError as e:
        return {"status": "missing", "message": str(e)}
    try:
        Interpreter(model_content=data,
                    experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    except (ValueError, RuntimeError) as e:
        text = " ".join(str(e).split())
        status = "invalid" if _VERIFIER_MESSAGE in text else "objection"
        return {"status": status, "message": text[:300] or type(e).__name__}
    return {"status": "ok"}


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def main() -> None:
    reply_fd = os.dup(1)
    os.dup2(2, 1)                       # native prints must not reach the reply channel
    in_fd = sys.stdin.fileno()
    while True:
        head = _read_exact(in_fd, 8)
        if head is None:
            return
        data = _read_exact(in_fd, struct.unpack("<Q", head)[0])
        if data is None:
            return
        reply = json.dumps(_check(data)).encode("utf-8")
        sys.stdout.flush()
        os.write(reply_fd, struct.pack("<I", len(reply)) + reply)


if __name__ == "__main__":
    main()
