"""Child-process side of edgekit.model.load.litert_build: LiteRT verifier + interpreter build.

Serves requests through edgekit.childproc until stdin closes: each request is
{"op": "verify", "model": bytes}, each reply {"status": "ok"} | {"status": "invalid" | "objection",
"message": "..."} (without ai-edge-litert: the ImportError, which the parent reports as missing).
LiteRT's interpreter build can crash the process on some crafted flatbuffers, so it never runs in
edgekit's own process; the parent starts a fresh child after a crash. Imports nothing else from edgekit.
"""
from __future__ import annotations

from edgekit.childproc import serve

_VERIFIER_MESSAGE = "not a valid Flatbuffer"


def _check(request: dict) -> dict:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    data = request["model"]
    try:
        Interpreter(model_content=data,
                    experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    except (ValueError, RuntimeError) as e:
        text = " ".join(str(e).split())
        status = "invalid" if _VERIFIER_MESSAGE in text else "objection"
        return {"status": status, "message": text[:300] or type(e).__name__}
    return {"status": "ok"}


def main() -> None:
    serve(_check)


if __name__ == "__main__":
    main()
