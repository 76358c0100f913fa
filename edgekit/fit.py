"""One fit: does a model fit a board? The one function inspect, export, flash, sweep and report use.

    from edgekit.fit import fit
    report = fit(board, model_bytes=26_240, arena_min_bytes=19_968, quantization="int8")
    report.fits, report.problems, report.to_dict()

Pure: numbers in, a :class:`FitReport` out (no model is read, nothing is measured here).

- **Flash** = model + firmware. The firmware size is the linked ELF's where one was built for this
  board (``firmware=``), else the board file's ``firmware_flash_bytes`` (an estimate; its ``sources``
  entry says how it was obtained).
- **RAM** on a TFLM board = the tensor arena *as the firmware reserves it* + firmware RAM. For a board
  whose firmware is generated with the model built in (``edgekit export`` / ``flash``), that is the
  header's ``<name>_tensor_arena_size``: the exact minimum measured on host TFLM plus the export's
  margin for 32-bit kernels (:func:`edgekit.exporters.c_arrays.arena_with_margin`). Boards that take
  models at run time (virtual, qemu-m4) have a fixed arena in their firmware; the model's exact minimum
  is what must fit there. No alternate decompression buffer is counted: the firmware sets none up
  (compressed models decode into the arena, and the exact minimum is measured that way).
- **RAM** on a LiteRT board = the model (LiteRT maps it) + the OS's share; activations are not counted.
- ``arena_min_bytes`` is the only arena figure: the smallest arena in which host TFLM allocated and ran
  the model. TFLM's recording allocator's total is not a fit figure (it is smaller than what
  allocates); inspect shows it as ``recorded_bytes``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class FitReport:
    board: str
    runtime: str                          # "tflm" | "litert"
    model_bytes: int
    quantization: str | None
    arena_min_bytes: int | None           # exact minimum on host TFLM (None: not measured / LiteRT)
    arena_bytes: int | None               # what the firmware reserves (the minimum + the export's margin)
    arena_source: str
    flash_bytes: int
    firmware_flash_bytes: int
    flash_needed_bytes: int
    ram_bytes: int
    firmware_ram_bytes: int
    ram_needed_bytes: int | None
    firmware_source: str                  # "linked ELF (...)" or the board file's estimate and its source
    fits: bool | None                     # None: unknown (the arena could not be measured)
    problems: list[str] = field(default_factory=list)
    tflm_runtime: str | None = None       # the board's TFLM runtime the model was checked against
    runtime_problems: list[dict] = field(default_factory=list)   # edgekit.tflm.compat problems
    forced: bool = False

    @property
    def flash_margin_bytes(self) -> int:
        return self.flash_bytes - self.flash_needed_bytes

    @property
    def ram_margin_bytes(self) -> int | None:
        return None if self.ram_needed_bytes is None else self.ram_bytes - self.ram_needed_bytes

    @property
    def flash_available_bytes(self) -> int:
        return self.flash_bytes - self.firmware_flash_bytes

    @property
    def ram_available_bytes(self) -> int:
        return self.ram_bytes - self.firmware_ram_bytes

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(flash_margin_bytes=self.flash_margin_bytes, ram_margin_bytes=self.ram_margin_bytes,
                   flash_available_bytes=self.flash_available_bytes, ram_available_bytes=self.ram_available_bytes)
        return out


def _kib(n: int | None) -> str:
    return "?" if n is None else f"{n / 1024:,.1f} KiB"


def reserved_arena(board, arena_min_bytes: int | None) -> int | None:
    """The arena the board's firmware reserves for a model whose exact minimum is ``arena_min_bytes``."""
    if arena_min_bytes is None:
        return None
    if board.runtime_model_upload:
        return int(arena_min_bytes)
    from edgekit.exporters.c_arrays import arena_with_margin

    return arena_with_margin(int(arena_min_bytes))


def arena_budget(board, *, firmware_ram_bytes: int | None = None) -> int | None:
    """The largest exact-minimum arena whose reserved arena (:func:`reserved_arena`) plus the firmware's
    RAM fits the board's RAM (None on a LiteRT board, 0 when not even an empty arena fits)."""
    if board.runtime != "tflm":
        return None
    room = int(board.ram_bytes) - int(board.firmware_ram_bytes if firmware_ram_bytes is None else firmware_ram_bytes)
    lo, hi = 0, max(0, room)
    if room <= 0 or reserved_arena(board, 0) > room:
        return 0
    while lo < hi:                       # reserved_arena grows with its argument: bisect the largest that fits
        mid = (lo + hi + 1) // 2
        if reserved_arena(board, mid) <= room:
            lo = mid
        else:
            hi = mid - 1
    return lo


def fit(board, *, model_bytes: int, arena_min_bytes: int | None = None, quantization: str | None = None,
        arena_error: str | None = None, unsupported_ops: list[str] | tuple = (),
        runtime_problems: list | tuple = (), tflm_runtime: str | None = None,
        firmware: dict | None = None) -> FitReport:
    """The fit of one model on ``board`` (an :class:`edgekit.boards.Board`).

    ``arena_min_bytes``: the exact minimal arena (host TFLM) or None with ``arena_error`` saying why.
    ``runtime_problems``: what the board's TFLM runtime cannot run correctly (``edgekit.tflm.compat``
    problems, objects with ``to_dict()`` or dicts); any makes the model not fit. ``firmware``: sizes of a
    firmware linked for this board without the model, ``{"flash_bytes", "ram_bytes", "source"}``.
    """
    tflm = board.runtime == "tflm"
    if firmware:
        fw_flash, fw_ram = int(firmware["flash_bytes"]), int(firmware["ram_bytes"])
        fw_source = f"linked ELF ({firmware.get('source', 'this build')})"
    else:
        fw_flash, fw_ram = int(board.firmware_flash_bytes), int(board.firmware_ram_bytes)
        src = (board.sources or {}).get("firmware_flash_bytes")
        fw_source = "board file estimate" + (f" ({src})" if src else "")
    problems: list[str] = []
    definite = False
    if tflm:
        arena = reserved_arena(board, arena_min_bytes)
        if arena_min_bytes is None:
            arena_source = f"not measured ({arena_error or 'no arena given'})"
        elif board.runtime_model_upload:
            arena_source = ("exact minimum on host TFLM (the upload firmware's arena is fixed; the model "
                            "needs this much of it)")
        else:
            arena_source = (f"exact minimum on host TFLM ({int(arena_min_bytes):,} B) + the export's "
                            "margin for 32-bit kernels, as the generated firmware reserves it")
        ram_needed = None if arena is None else arena + fw_ram
        if unsupported_ops:
            problems.append(f"TFLM cannot run ops {', '.join(unsupported_ops)}")
            definite = True
        elif arena is None:
            problems.append(f"the tensor arena could not be measured ({arena_error or 'not measured'})")
    else:
        arena, arena_source = None, "not used (LiteRT allocates at run time)"
        ram_needed = model_bytes + fw_ram
    flash_needed = model_bytes + fw_flash
    if flash_needed > board.flash_bytes:
        problems.insert(0, f"flash: model {model_bytes:,} + firmware {fw_flash:,} = {flash_needed:,} bytes > "
                           f"{board.flash_bytes:,} ({_kib(flash_needed)} > {_kib(board.flash_bytes)})")
        definite = True
    if ram_needed is not None and ram_needed > board.ram_bytes:
        what = f"arena {arena:,}" if tflm else f"model {model_bytes:,}"
        problems.insert(1 if problems and problems[0].startswith("flash:") else 0,
                        f"RAM: {what} + firmware {fw_ram:,} = {ram_needed:,} bytes > {board.ram_bytes:,} "
                        f"({_kib(ram_needed)} > {_kib(board.ram_bytes)})")
        definite = True
    if board.int8_only and quantization in ("float", "mixed"):
        problems.append(f"a {quantization} model on an int8-only runtime "
                        f"({board.id}: {(board.sources or {}).get('int8_only', 'no FPU')})")
        definite = True
    rp = [p.to_dict() if hasattr(p, "to_dict") else dict(p) for p in runtime_problems]
    for p in rp:
        problems.append(f"{board.id}'s TFLM runtime cannot run this model correctly: {p['message']}")
        definite = True
    fits = False if definite else (None if problems else True)
    return FitReport(board=board.id, runtime=board.runtime, model_bytes=int(model_bytes), quantization=quantization,
                     arena_min_bytes=None if arena_min_bytes is None else int(arena_min_bytes),
                     arena_bytes=arena, arena_source=arena_source, flash_bytes=board.flash_bytes,
                     firmware_flash_bytes=fw_flash, flash_needed_bytes=flash_needed, ram_bytes=board.ram_bytes,
                     firmware_ram_bytes=fw_ram, ram_needed_bytes=ram_needed, firmware_source=fw_source,
                     fits=fits, problems=problems, tflm_runtime=tflm_runtime, runtime_problems=rp)


def fit_model(model, board, *, inspect_result=None) -> FitReport:
    """:func:`fit` for a model (path, bytes or VerifiedModel): what ``edgekit.inspect(model, board)``
    reports as its ``board_fit`` (host TFLM measures the arena on TFLM boards; the board's TFLM runtime
    facts are checked). ``inspect_result``: an inspect result for this board, to reuse."""
    from edgekit.model.inspect import inspect

    r = inspect_result
    if r is None or r.board_fit is None or r.board_fit.board != board.id:
        r = inspect(model, board, measure_arena_bytes=board.runtime == "tflm")
    return r.board_fit
