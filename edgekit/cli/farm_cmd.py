"""`edgekit farm places`, `edgekit farm profile`: boards on a labgrid farm (docs/farm.md)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from edgekit import schemas

_COORDINATOR_HELP = "labgrid coordinator HOST:PORT (default: $LG_COORDINATOR, else 127.0.0.1:20408)."


def _fmt_us(v) -> str:
    if v is None:
        return "-"
    return f"{v / 1000:.3f} ms" if v >= 1000 else f"{v:.1f} µs"


def register(app: typer.Typer) -> None:
    farm = typer.Typer(help="Boards on a labgrid farm: places on a coordinator (docs/farm.md).",
                       no_args_is_help=True, rich_markup_mode=None)
    app.add_typer(farm, name="farm")

    @farm.command("places")
    def places_cmd(
        coordinator: Optional[str] = typer.Option(None, "--coordinator", help=_COORDINATOR_HELP),
        match: Optional[str] = typer.Option(None, "--match", help="Only places whose name or alias matches this glob."),
        json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
    ) -> None:
        """List the coordinator's places: the board each names (board= tag) and who holds it."""
        from edgekit.cli.output import Output
        from edgekit.farm import Labgrid, select_places

        out = Output(json_mode=json_out)
        lg = Labgrid(coordinator, log=out.log_line)
        found = lg.places()
        if match:
            found = select_places(found, match=match)
        data = {"coordinator": lg.coordinator, "places": [p.to_dict() for p in found]}

        def human(o: Output, d) -> None:
            from rich.table import Table

            if not d["places"]:
                o.console.print(f"no places on {d['coordinator']}")
                return
            t = Table(show_edge=False, pad_edge=False)
            for col in ("place", "board", "acquired by", "comment"):
                t.add_column(col)
            for p in d["places"]:
                t.add_row(p["name"], p["board"] or "- (no board= tag)", p["acquired"] or "-", p["comment"] or "")
            o.console.print(t)

        out.result(data, human, schema=schemas.FARM_PLACES)

    @farm.command("profile")
    def profile_cmd(
        model: Path = typer.Argument(..., help="The .tflite model to profile on every place."),
        places: Optional[str] = typer.Option(None, "--places", help="Places, comma-separated (each must be free)."),
        match: Optional[str] = typer.Option(None, "--match",
                                            help="Places whose name or alias matches this glob ('nano33*'); "
                                                 "places held by someone else are skipped."),
        out_dir: Path = typer.Option(Path("farm-profile"), "--out", "-o",
                                     help="Folder for <place>.json (one profile per board) and comparison.json."),
        coordinator: Optional[str] = typer.Option(None, "--coordinator", help=_COORDINATOR_HELP),
        runs: int = typer.Option(200, "--runs", help="Timed runs on each board."),
        warmup: int = typer.Option(10, "--warmup", help="Untimed runs first."),
        jobs: Optional[int] = typer.Option(None, "--jobs", "-j",
                                           help="Places profiled at once (default: all; 1: one after another)."),
        no_baseline: bool = typer.Option(False, "--no-float-baseline",
                                         help="Do not profile model_float.tflite next to the model."),
        timeout: float = typer.Option(1800.0, "--timeout", help="Seconds one place may take (build included)."),
        opt: Optional[List[str]] = typer.Option(None, "--opt", help="A runner option name=value for every place."),
        json_out: bool = typer.Option(False, "--json", help="Print one JSON document (edgekit.farm-profile/1)."),
    ) -> None:
        """Profile a model on several places in parallel: one profile per board plus a comparison table."""
        from edgekit.cli.device_cmds import runner_options
        from edgekit.cli.output import Output
        from edgekit.errors import FarmIncomplete, UsageError
        from edgekit.farm import farm_profile

        out = Output(json_mode=json_out)
        if bool(places) == bool(match):
            raise UsageError("name the places with --places a,b,c or --match 'GLOB' (one of them)")
        if jobs is not None and jobs < 1:
            raise UsageError("--jobs must be at least 1")
        names = [n.strip() for n in places.split(",") if n.strip()] if places else None

        def each(row: dict) -> None:
            state = "ok" if row["exit_code"] == 0 else f"failed (exit {row['exit_code']}): {row['error']}"
            out.info(f"{row['place']} ({row['board']}): {state}")

        try:
            doc = farm_profile(model, places=names, match=match, out_dir=out_dir, coordinator=coordinator, runs=runs,
                               warmup=warmup, jobs=jobs, options=runner_options(opt), float_baseline=not no_baseline,
                               timeout_s=timeout, log=out.log_line, on_done=each)
            failure = None
        except FarmIncomplete as e:
            doc, failure = e.document, e

        def human(o: Output, d) -> None:
            from rich.table import Table

            t = Table(title=f"{Path(d['model']['path']).name} on {len(d['places'])} places "
                            f"({d['jobs']} at a time, {d['wall_s']:.1f} s host time in all)")
            for col in ("place", "board", "median", "mean", "instructions", "arena used", "numbers", "status"):
                t.add_column(col, justify="right" if col in ("median", "mean", "instructions", "arena used") else "left")
            for r in d["places"]:
                ok = r["exit_code"] == 0
                t.add_row(r["place"], r["board"] or "-", _fmt_us(r.get("latency_us_median")),
                          _fmt_us(r.get("latency_us_mean")),
                          f"{r['instructions_median']:,.0f}" if r.get("instructions_median") is not None else "-",
                          f"{r['arena_used_bytes']:,} B" if r.get("arena_used_bytes") else "-",
                          r.get("timing_source") or "-", "ok" if ok else f"exit {r['exit_code']}: {r['error']}")
            o.console.print(t)
            for s in d["skipped"]:
                o.console.print(f"skipped {s['place']}: acquired by {s['acquired_by']}")
            o.console.print(f"[dim]numbers: device = measured on the board; host = this computer's time (virtual "
                            f"board); emulated = instruction counts. Profiles: {d['out_dir']}[/dim]")

        out.result(doc, human, schema=schemas.FARM_PROFILE)
        if failure is not None:
            raise failure
