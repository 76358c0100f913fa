"""A board's time and energy from instruction counts on the emulated core: estimates, labelled so.

    time   = instructions x CPI(core) / clock_hz          (CPI: cycles per instruction)
    energy = active_power_mw x time

The CPI table is data (``targets/cores/<core>.yaml``): per core one CPI calibrated against published
on-device results for the same models, the band those results span, and where the numbers come
from. Every figure made here carries ``estimate: true``, its method and its source, and a low/high
band; none is ever computed from host time.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

from edgekit.errors import BoardError

CORES_DIR = "cores"            # targets/cores/<core>.yaml
SECONDS_PER_YEAR = 365 * 24 * 3600


@dataclass(frozen=True)
class CoreModel:
    name: str
    cpi: float                 # cycles per executed instruction (the calibration's central value)
    cpi_low: float
    cpi_high: float
    source: str
    cycles_per_mac: float | None = None        # published cycles per model MAC (the MAC-based estimate)
    cycles_per_mac_low: float | None = None
    cycles_per_mac_high: float | None = None
    cycles_per_mac_source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@lru_cache(maxsize=None)
def load_cores() -> dict[str, CoreModel]:
    """Every core of targets/cores/ (the file name is the core id); a malformed one is a BoardError."""
    import yaml

    from edgekit.resources import targets_dir

    out = {}
    for path in sorted((targets_dir() / CORES_DIR).glob("*.yaml")):
        name = path.stem
        try:
            entry = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            raise BoardError(f"core file {path.name} cannot be read: {e}") from e
        try:
            cpi = float(entry["cpi"])
            low, high = (float(v) for v in entry["cpi_range"])
            source = str(entry["source"])
        except (KeyError, TypeError, ValueError) as e:
            raise BoardError(f"core file {path.name} needs cpi, cpi_range [low, high] and source") from e
        if not 0 < low <= cpi <= high:
            raise BoardError(f"core file {path.name}: cpi_range must hold cpi and be positive")
        eff = entry.get("cycles_per_mac")
        if eff is not None:
            try:
                e_low, e_high = (float(v) for v in entry["cycles_per_mac_range"])
                eff, e_source = float(eff), str(entry["cycles_per_mac_source"])
            except (KeyError, TypeError, ValueError) as e:
                raise BoardError(f"core file {path.name}: cycles_per_mac needs cycles_per_mac_range [low, high] "
                                 "and cycles_per_mac_source") from e
            if not 0 < e_low <= eff <= e_high:
                raise BoardError(f"core file {path.name}: cycles_per_mac_range must hold cycles_per_mac")
            out[name] = CoreModel(name, cpi, low, high, source, eff, e_low, e_high, e_source)
        else:
            out[name] = CoreModel(name, cpi, low, high, source)
    return out


def core_of(board) -> CoreModel | None:
    """The calibrated core model of a board's emulated CPU (``emulator.cpu``), or None."""
    cpu = (getattr(board, "emulator", None) or {}).get("cpu")
    return load_cores().get(str(cpu)) if cpu else None


def time_estimate(instructions: float, board) -> dict[str, Any] | None:
    """Estimated time per inference on ``board`` for ``instructions``; None without a CPI entry."""
    core = core_of(board)
    if core is None:
        return None
    per_us = 1e6 / float(board.clock_hz)
    return {"estimate": True, "method": "instructions on the emulated core x cycles per instruction / clock",
            "core": core.name, "cpi": core.cpi, "cpi_range": [core.cpi_low, core.cpi_high],
            "clock_hz": int(board.clock_hz), "instructions": float(instructions),
            "latency_us": instructions * core.cpi * per_us,
            "latency_us_low": instructions * core.cpi_low * per_us,
            "latency_us_high": instructions * core.cpi_high * per_us,
            "source": core.source}


def energy_from_time(board, latency_us: float, low_us: float | None = None, high_us: float | None = None,
                     *, method: str) -> dict[str, Any]:
    """Energy per inference = the board's active power x ``latency_us`` (mW x ms = µJ), with a band."""
    mw = float(board.active_power_mw)
    uj = mw * latency_us / 1000.0
    return {"estimate": True, "active_power_mw": mw, "per_inference_uj": uj,
            "per_inference_uj_low": None if low_us is None else mw * low_us / 1000.0,
            "per_inference_uj_high": None if high_us is None else mw * high_us / 1000.0,
            "per_year_at_1_hz_j": uj * 1e-6 * SECONDS_PER_YEAR,
            "method": method,
            "power_source": (getattr(board, "sources", None) or {}).get("active_power_mw"),
            "float_baseline": None}


def not_available(board) -> str:
    """One line: why no time estimate exists for ``board``."""
    cpu = (getattr(board, "emulator", None) or {}).get("cpu")
    if not cpu:
        return f"no time estimate: {board.id} has no emulated core (its MAC roofline is the only estimate)"
    return f"no time estimate: no CPI calibration for core '{cpu}' (targets/{CORES_DIR}/{cpu}.yaml)"


# the core whose published results calibrate the MAC-based estimate of cores nobody measured here
MAC_CALIBRATION_CORE = "cortex-m4"


def mac_estimate(macs: int, board) -> dict[str, Any] | None:
    """A board's time per inference from the model's MACs alone, for boards the emulator cannot run.

        time = MACs x cycles_per_mac / clock_hz

    ``cycles_per_mac`` comes from published TFLM + CMSIS-NN results on the calibrated core
    (targets/cores/cortex-m4.yaml); on any other core it is an assumption, and the result's ``label``
    says so. None when no core carries the calibration or the model has no MACs.
    """
    core = load_cores().get(MAC_CALIBRATION_CORE)
    if core is None or core.cycles_per_mac is None or not macs:
        return None
    per_us = 1e6 / float(board.clock_hz)
    own = (getattr(board, "emulator", None) or {}).get("cpu") == core.name
    label = (f"MAC-based estimate: {int(macs):,} MACs x {core.cycles_per_mac:g} cycles per MAC / "
             f"{board.clock_hz / 1e6:g} MHz, as published TFLM + CMSIS-NN runs on {core.name} took"
             + ("" if own else f"; {board.cpu} was not calibrated or emulated, so its kernels may take several "
                               "times more or fewer cycles per MAC"))
    return {"estimate": True, "method": "MACs x cycles per MAC / clock", "statistic": "model MACs",
            "macs": int(macs), "cycles_per_mac": core.cycles_per_mac,
            "cycles_per_mac_range": [core.cycles_per_mac_low, core.cycles_per_mac_high],
            "calibrated_on": core.name, "calibrated_core": own, "clock_hz": int(board.clock_hz),
            "latency_us": macs * core.cycles_per_mac * per_us,
            "latency_us_low": macs * core.cycles_per_mac_low * per_us,
            "latency_us_high": macs * core.cycles_per_mac_high * per_us,
            "label": label, "source": core.cycles_per_mac_source}
