"""`edgekit boards`, `edgekit devices`, `edgekit doctor`, `edgekit flash`: parse, call the SDK, print."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from edgekit import schemas

JSON_HELP = "Print one JSON document on stdout."


def _size(n: int) -> str:
    # Memory sizes are binary (256 KB = 262,144 bytes); storage sizes may be decimal (32 GB cards).
    giga = 1024 ** 3 if n % (1024 ** 3) == 0 else 1e9
    for unit, div in (("GB", giga), ("MB", 1024 * 1024), ("KB", 1024)):
        if n >= div:
            value = n / div
            return f"{value:.0f} {unit}" if value >= 10 or value == int(value) else f"{value:.1f} {unit}"
    return f"{n} B"


def _clock(hz: int) -> str:
    return f"{hz / 1e9:.1f} GHz" if hz >= 1e9 else f"{hz / 1e6:.0f} MHz"


def _parse_runner_opts(items: list[str] | None) -> dict:
    from edgekit.errors import UsageError

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--runner-opt takes name=value, got {item!r}")
        out[key.strip().replace("-", "_")] = value
    return out


def register(app: typer.Typer) -> None:
    @app.command("boards")
    def boards(json_out: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
        """List the boards edgekit knows (targets/): memory, clock, runtime and runner."""
        from edgekit.boards import list_boards
        from edgekit.cli.output import Output

        out = Output(json_mode=json_out)
        data = [b.to_dict() for b in list_boards()]

        def human(o: Output, rows) -> None:
            from rich.table import Table

            table = Table(show_edge=False, pad_edge=False)
            for col, justify in (("id", "left"), ("name", "left"), ("flash", "right"), ("RAM", "right"),
                                 ("clock", "right"), ("runtime", "left"), ("runner", "left")):
                table.add_column(col, justify=justify, no_wrap=col != "name")
            for b in rows:
                table.add_row(b["id"], b["name"], _size(b["flash_bytes"]), _size(b["ram_bytes"]),
                              _clock(b["clock_hz"]), b["runtime"], b["runner"])
            o.console.print(table)

        out.result(data, human, schema=schemas.BOARDS, key="boards")

    @app.command("devices")
    def devices(json_out: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
        """List serial ports and the boards their USB VID:PID match."""
        from edgekit.cli.output import Output
        from edgekit.ports import find_devices

        out = Output(json_mode=json_out)
        data = [d.to_dict() for d in find_devices()]

        def human(o: Output, rows) -> None:
            if not rows:
                o.console.print("no serial ports found (is the board plugged in, and is its USB cable a "
                                "data cable?)")
                return
            from rich.table import Table

            table = Table(show_edge=False, pad_edge=False)
            for col in ("port", "USB id", "boards", "access", "description"):
                table.add_column(col)
            for d in rows:
                table.add_row(d["device"], d["usb_hwid"] or "-", ", ".join(d["boards"]) or "-",
                              d["access"], d["description"] or "")
            o.console.print(table)

        out.result(data, human, schema=schemas.DEVICES, key="devices")

    @app.command("doctor")
    def doctor(json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
               tflm_src: Optional[Path] = typer.Option(None, "--tflm-src",
                                                       help="Also describe this TFLM source tree.")) -> None:
        """Check which build/flash tools, Python runtimes, TFLM source trees and serial ports this machine has."""
        from edgekit.cli.output import Output
        from edgekit.diagnostics import doctor as run_doctor

        out = Output(json_mode=json_out)
        report = run_doctor(tflm_src=tflm_src)

        def human(o: Output, r) -> None:
            from rich.markup import escape

            c = o.console
            c.print(f"edgekit {r['edgekit']} on Python {r['python']}; {r['boards']} board files")
            c.print("\n[bold]tools[/bold]")
            for t in r["tools"]:
                if t["installed"]:
                    c.print(f"  [green]ok[/green]       {t['name']:<18} {escape(t['version'] or t['error'] or t['path'] or '')}")
                else:
                    c.print(f"  [yellow]missing[/yellow]  {t['name']:<18} {escape(t['purpose'] + '; ' + str(t['install_hint']))}")
            c.print("\n[bold]Python runtimes[/bold]")
            for rt in r["runtimes"]:
                if rt["available"]:
                    c.print(f"  [green]ok[/green]       {rt['module']:<30} {rt['version'] or ''}")
                else:
                    c.print(f"  [yellow]missing[/yellow]  {rt['module']:<30} {rt['purpose']}")
            c.print("\n[bold]TFLM source trees[/bold] (for --board qemu-m4 and --emulate)")
            if not r["tflm_trees"]:
                c.print("  none found: pass --tflm-src, set EDGEKIT_TFLM_SRC, or install the board's library "
                        "with arduino-cli")
            for t in r["tflm_trees"]:
                state = "[green]ok[/green]     " if not t["problems"] else "[yellow]broken[/yellow] "
                c.print(f"  {state}  {escape(t['label'])} ({t['layout']}, from {t['origin']}): {escape(t['root'])}")
                c.print(f"           {t['op_count']} resolver ops; DECODE {'yes' if t['decode'] else 'no'}; "
                        f"per-channel FULLY_CONNECTED {'yes' if t['per_channel_fully_connected'] else 'no'}; "
                        f"{t['kernels']} kernels; flatbuffers {t['flatbuffers_version'] or '?'}"
                        + (f"; needs -D{' -D'.join(t['defines'])}" if t["defines"] else ""))
            for ref in r["tflm_refused"]:
                c.print(f"  [yellow]refused[/yellow]  {escape(ref['folder'])} ({ref['origin']}): {escape(ref['reason'])}")
            c.print("\n[bold]serial ports[/bold]")
            if not r["ports"]:
                c.print("  none found")
            for p in r["ports"]:
                boards = ", ".join(p["boards"]) or "no known board"
                c.print(f"  {p['access']:<13} {p['device']} ({p['usb_hwid'] or 'no USB id'}; {boards})")
            for problem in r["problems"]:
                c.print(f"[yellow]problem:[/yellow] {escape(problem)}")

        out.result(report.to_dict(), human, schema=schemas.DOCTOR)

    @app.command("flash")
    def flash(
        model: Path = typer.Argument(..., help="A .tflite model, or the artifact folder holding model.tflite."),
        board: Optional[str] = typer.Option(None, "--board", "-b",
                                            help="Board id or alias (see `edgekit boards`); with --place, its "
                                                 "board= tag."),
        port: Optional[str] = typer.Option(None, "--port", "-p",
                                           help="Serial port or pyserial URL (default: found by USB id)."),
        place: Optional[str] = typer.Option(None, "--place",
                                            help="A labgrid place: acquire it, flash its board through its "
                                                 "serial port, reset it through the place, release it "
                                                 "(docs/farm.md)."),
        coordinator: Optional[str] = typer.Option(None, "--coordinator",
                                                  help="labgrid coordinator HOST:PORT for --place (default: "
                                                       "$LG_COORDINATOR, else 127.0.0.1:20408)."),
        out_dir: Optional[Path] = typer.Option(None, "--out", "-o",
                                               help="Where to render the firmware project "
                                                    "(default: <model folder>/firmware/<board>)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the exact commands; change nothing."),
        force: bool = typer.Option(False, "--force", help="Flash even when the fit check fails."),
        no_confirm: bool = typer.Option(False, "--no-confirm",
                                        help="Do not ask the board over serial which model it runs."),
        runner_opt: Optional[List[str]] = typer.Option(None, "--runner-opt",
                                                       help="Runner option name=value (repeatable)."),
        json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
        host: Optional[str] = typer.Option(None, "--host", help="ssh boards (Raspberry Pi): [user@]host."),
        dest: str = typer.Option("models", "--dest", help="ssh boards: folder on the board for the model."),
        service: bool = typer.Option(False, "--service",
                                     help="ssh boards: also serve the model over HTTP as a systemd user service."),
        service_port: Optional[int] = typer.Option(None, "--service-port",
                                                   help="ssh boards: the service's TCP port (default 8577)."),
        service_bind: str = typer.Option("127.0.0.1", "--service-bind",
                                         help="ssh boards: address the service listens on (0.0.0.0: all; "
                                              "it has no authentication)."),
        threads: int = typer.Option(1, "--threads", help="ssh boards: LiteRT CPU threads of the service."),
    ) -> None:
        """Check the fit, render, build and upload the firmware, then confirm the board runs the model."""
        from edgekit.cli.output import Output
        from edgekit.errors import ToolFailed
        from edgekit.flashing import flash as run_flash

        out = Output(json_mode=json_out)
        interactive = sys.stdin.isatty() and not json_out

        def choose(ports) -> str:
            out.err.print("several ports match this board:")
            for i, p in enumerate(ports, 1):
                out.err.print(f"  {i}. {p.device} ({p.hwid}{', ' + p.description if p.description else ''})")
            pick = typer.prompt("port number", type=int, err=True)
            if not 1 <= pick <= len(ports):
                from edgekit.errors import UsageError

                raise UsageError(f"no port number {pick}")
            return ports[pick - 1].device

        def log(line: str) -> None:
            if dry_run and not json_out:
                sys.stdout.write(line + "\n")      # the dry run's result is the command list
                sys.stdout.flush()
            else:
                out.info(f"[dim]{line}[/dim]" if line.startswith("#") else line)

        opts = {**_parse_runner_opts(runner_opt), **({"host": host} if host else {})}
        try:
            result = run_flash(model, board, port=port, place=place, coordinator=coordinator, out_dir=out_dir, dry_run=dry_run, force=force,
                               runner_options=opts, interactive=interactive,
                               choose_port=choose, log=log, confirm=not no_confirm, dest=dest, service=service,
                               service_port=service_port, service_bind=service_bind, threads=threads)
        except ToolFailed as e:
            tail = e.context.get("output_tail")
            if tail and not json_out:
                sys.stderr.write(f"edgekit: {e.context.get('tool', 'the tool')} output (last lines):\n")
                sys.stderr.write("".join(f"  | {ln}\n" for ln in tail.splitlines()))
            raise

        def human(o: Output, r) -> None:
            fit = r["fit"]
            ram = "-" if fit["ram_needed_bytes"] is None else f"{fit['ram_needed_bytes']:,} / {fit['ram_bytes']:,}"
            o.console.print(f"fit: flash {fit['flash_needed_bytes']:,} / {fit['flash_bytes']:,} bytes, "
                            f"RAM {ram} bytes (arena {fit['arena_source']})")
            if r["dry_run"]:
                o.console.print("dry run: nothing was built or flashed")
            elif r["project_dir"] is None:        # a Linux board: the model was installed
                o.console.print(f"installed on {r['artifacts']['host']}: {r['artifacts']['path']}")
            else:
                o.console.print(f"flashed {r['board']} on {r['port'] or '(no serial port)'}")
            o.console.print(r["confirmation"])

        out.result(result.to_dict(), human, schema=schemas.FLASH)
