"""``ckey w365``: Windows 365 Cloud PCs and their encryption with the customer-managed key, through the API."""

from __future__ import annotations

from typing import Annotated, Any

import typer

app = typer.Typer(help="Windows 365 Cloud PCs and their customer-managed key encryption.", no_args_is_help=True)


def _call(method: str, path: str) -> Any:
    # Imported here: ckey.cli registers this app, so it is fully loaded by the time a command runs.
    from ckey import cli

    return cli._call(method, path)


@app.command("status")
def status(
    refresh: Annotated[
        bool, typer.Option("--refresh", help="Read Microsoft Graph now (and update ckey's inventory).")
    ] = False,
) -> None:
    """The tenant's Cloud PC encryption setting, Cloud PCs counted by disk encryption state, and the failed ones."""
    from ckey.cli import console

    view = _call("GET", "/api/windows365/cloud-pcs?limit=1" + ("&refresh=true" if refresh else ""))
    setting = view.get("tenant_disk_encryption_type") or "not read yet"
    seen = view.get("tenant_seen_at")
    console.print(f"tenant setting: {setting}" + (f" (read {seen})" if seen else ""))
    counts: dict[str, int] = view.get("counts") or {}
    console.print(f"cloud PCs: {sum(counts.values())}")
    for state, n in sorted(counts.items()):
        console.print(f"  {state}: {n}")
    failed = view.get("failed") or []
    if failed:
        console.print(f"failed: {len(failed)}")
        for pc in failed:
            name = pc.get("display_name") or pc["id"]
            console.print(
                f"  {name} ({pc['id']}) {pc.get('disk_encryption_state') or ''} op {pc.get('operation_id') or ''}"
            )
