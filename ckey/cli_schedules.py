"""``ckey schedules``: list, pause, unpause and trigger ckey's Temporal Schedules through the API."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import typer
from rich import box
from rich.table import Table

app = typer.Typer(
    help="ckey's Temporal Schedules (inventory sync, key health): list, pause, unpause, trigger.", no_args_is_help=True
)


def _call(method: str, path: str) -> Any:
    # Imported here: ckey.cli registers this app, so it is fully loaded by the time a command runs.
    from ckey import cli

    return cli._call(method, path)


def _print(view: dict[str, Any], verb: str) -> None:
    from ckey.cli import console

    if view.get("paused"):
        console.print(f"{view['id']}: {verb}; paused" + (f" ({view['note']})" if view.get("note") else ""))
        return
    next_runs = view.get("next_runs") or []
    console.print(f"{view['id']}: {verb}; active" + (f", next run {next_runs[0]}" if next_runs else ""))
    if verb == "triggered":
        console.print(f"the run is an operation: ckey ops list --kind {view['kind']}")


@app.command("list")
def schedules_list() -> None:
    """Every schedule: interval, paused or not, the next run and the last run's operation id."""
    from ckey.cli import console

    listed = _call("GET", "/api/schedules")
    # Fits 80 columns and never cuts an id (pause, unpause and trigger take it): no borders, times as HH:MM:SS.
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 1), collapse_padding=True)
    table.add_column("id", no_wrap=True)
    table.add_column("kind", no_wrap=True, overflow="ellipsis")
    table.add_column("every", no_wrap=True, justify="right")
    table.add_column("state", no_wrap=True)
    table.add_column("next (UTC)", no_wrap=True)
    table.add_column("last run", no_wrap=True, overflow="ellipsis")
    for s in listed["items"]:
        state = "not created" if not s["exists"] else ("paused" if s["paused"] else "active")
        recent = s.get("recent_runs") or []
        next_runs = s.get("next_runs") or []
        table.add_row(
            s["id"],
            s["kind"],
            f"{s['interval_seconds']:g}s",
            state,
            _clock(str(next_runs[0])) if next_runs and not s["paused"] else "",
            _clock(str(recent[-1].get("started_at") or "")) if recent else "",
        )
    console.print(table)
    console.print("their runs: ckey ops list --scheduled")


def _clock(at: str) -> str:
    # "2026-12-01T05:28:30.123Z" -> "05:28:30"; anything else as it came.
    time = at.partition("T")[2]
    return time[:8] if len(time) >= 8 else at


@app.command("pause")
def schedules_pause(schedule_id: str) -> None:
    """Pause a schedule (a run already going continues)."""
    _print(_call("POST", f"/api/schedules/{quote(schedule_id, safe='')}/pause"), "paused")


@app.command("unpause")
def schedules_unpause(schedule_id: str) -> None:
    """Resume a paused schedule."""
    _print(_call("POST", f"/api/schedules/{quote(schedule_id, safe='')}/unpause"), "unpaused")


@app.command("trigger")
def schedules_trigger(schedule_id: str) -> None:
    """Run a schedule's operation now (skipped while a run of it is still going)."""
    _print(_call("POST", f"/api/schedules/{quote(schedule_id, safe='')}/trigger"), "triggered")
