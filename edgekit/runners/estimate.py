"""The estimate runner: ``profile --emulate`` on a board the emulator cannot run (ESP32-S3's Xtensa,
RP2040's Cortex-M0+). Nothing runs: the profile document holds a MAC-based estimate of the board's
time and energy (:func:`edgekit.estimate.mac_estimate`), labelled so, and the model's floor (the
roofline bound); latency and instruction counts are null. It only profiles.
"""
from __future__ import annotations

from pathlib import Path

from edgekit.errors import UsageError
from edgekit.runners.base import Capabilities, Runner

ESTIMATE_TIMING = {"unit": None, "source": "estimate",
                   "label": "not run: the emulator cannot run this board's CPU; MAC-based estimate only"}


class EstimateRunner(Runner):
    name = "estimate"
    description = "no device: a MAC-based time and energy estimate for boards the emulator cannot run"
    capabilities = Capabilities(profile=True)

    @classmethod
    def check(cls, commands, *, port: str | None = None, board_id: str = "") -> None:
        for command in commands:
            if command != "profile":
                raise UsageError(f"board {board_id} cannot be emulated: edgekit emulates Cortex-M4 boards only, "
                                 f"so there is nothing to {command} on",
                                 hint="`edgekit profile MODEL --board B --emulate` gives its MAC-based estimate; "
                                      "run on the board itself with --port")
        super().check(commands, port=port, board_id=board_id)

    def do_profile(self, *, model_path, runs: int = 0, warmup: int = 0, **_):
        import datetime as _dt

        from edgekit._version import __version__
        from edgekit.estimate import energy_from_time, mac_estimate
        from edgekit.fileio import read_input
        from edgekit.model.inspect import roofline_bound
        from edgekit.profiling import ProfileResult, board_doc, model_doc, model_facts

        b = self.board
        path = Path(model_path)
        facts = model_facts(read_input(path, "model"), str(path))
        est = mac_estimate(facts.macs or 0, b)
        notes = [f"{b.id} ({b.cpu}) cannot be emulated; nothing ran on it or on an emulator"]
        energy = None
        if est is None:
            notes.append("no MAC-based estimate: the model has no MACs, or no core carries a cycles-per-MAC "
                         "calibration (targets/cores/)")
        else:
            notes.append(est["label"])
            energy = energy_from_time(b, est["latency_us"], est["latency_us_low"], est["latency_us_high"],
                                      method="board active_power_mw x MAC-based time estimate")
            energy["latency_statistic"] = "estimate"
        roof = roofline_bound(facts.macs or 0, b)
        return ProfileResult(
            model=model_doc(facts, path), board=board_doc(b), device={"port": None, "board_id": None},
            runs=0, warmup=0, latency_us=None, latency_samples_us=None, cycles=None, per_op=None,
            per_op_note="nothing ran: no per-op figures", memory={"arena_used_bytes": None, "arena_bytes": None,
                                                                   "model_bytes": facts.size_bytes},
            roofline={"macs": roof["macs"], "clock_hz": roof["clock_hz"],
                      "peak_macs_per_cycle": roof["peak_int8_macs_per_cycle"],
                      "compute_bound_us": roof["latency_bound_us"], "achieved_macs_per_cycle": None,
                      "utilization": None},
            energy=energy, upload=None, runner=self.name,
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), edgekit_version=__version__,
            timing=dict(ESTIMATE_TIMING), notes=notes, estimate=est)
