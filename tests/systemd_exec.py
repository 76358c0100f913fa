"""ExecStart= lines read the way systemd reads them (systemd.syntax(7), systemd.service(5)), for tests
that check what the Pi agent writes into a unit: words split on whitespace, double-quoted words with
C-style escapes, then the doubled ``%%`` (specifier) and ``$$`` (environment) signs undone.

Only what edgekit writes is covered: every argument double-quoted, no unquoted specifiers or
variables, no prefixes such as ``-`` or ``@``.
"""
from __future__ import annotations

_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t", "s": " "}


def exec_argv(value: str) -> list[str]:
    """The argv of one ExecStart= value."""
    argv: list[str] = []
    i, n = 0, len(value)
    while i < n:
        while i < n and value[i] in " \t":
            i += 1
        if i >= n:
            break
        word, quoted = [], value[i] == '"'
        if quoted:
            i += 1
        while i < n:
            c = value[i]
            if c == "\\":
                if i + 1 >= n or value[i + 1] not in _ESCAPES:
                    raise ValueError(f"unknown escape at {i} in {value!r}")
                word.append(_ESCAPES[value[i + 1]])
                i += 2
                continue
            if quoted and c == '"':
                i += 1
                if i < n and value[i] not in " \t":
                    raise ValueError(f"text after a closing quote at {i} in {value!r}")
                break
            if not quoted and c in " \t":
                break
            if c in "%$":
                if i + 1 >= n or value[i + 1] != c:
                    raise ValueError(f"unescaped {c!r} at {i} in {value!r} (systemd would expand it)")
                i += 1
            word.append(c)
            i += 1
        else:
            if quoted:
                raise ValueError(f"unterminated quote in {value!r}")
        argv.append("".join(word))
    return argv


def unit_exec_start(text: str) -> list[str]:
    """The argv of the (single) ExecStart= line of a unit file's text."""
    lines = [ln for ln in text.splitlines() if ln.startswith("ExecStart=")]
    if len(lines) != 1:
        raise ValueError(f"expected one ExecStart= line, found {len(lines)}")
    return exec_argv(lines[0][len("ExecStart="):])
