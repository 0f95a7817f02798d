"""``ckey m365 dep new|assign|disable|show``: the multi-workload DEP from the command line, as the seed reads.

``new`` starts ``m365.dep.create`` (New-M365DataAtRestEncryptionPolicy), ``assign`` starts ``m365.dep.assign``
(Set-M365DataAtRestEncryptionPolicyAssignment, then follows until in effect), ``disable`` starts ``m365.dep.disable``
(Set-M365DataAtRestEncryptionPolicy -Enabled $false), and ``show`` reads the DEPs and the tenant's assignment
(Get-M365DataAtRestEncryptionPolicy, Get-M365DataAtRestEncryptionPolicyAssignment). Everything goes through the
API, like every other command.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

# ckey.cli imports this module to register its app, so its helpers are taken from it when a command runs.
KeyOption = Annotated[str | None, typer.Option("--idempotency-key", help="Retry-safe key: the same key, the same run.")]
WatchOption = Annotated[bool, typer.Option("--watch/--no-watch", help="Follow the operation with a progress bar.")]
RefreshOption = Annotated[bool, typer.Option("--refresh", help="Read the tenant now rather than the inventory.")]

app = typer.Typer(help="Multi-workload (tenant-wide) Customer Key: DEPs and the assignment.", no_args_is_help=True)
dep_app = typer.Typer(help="Multi-workload DEPs: new, assign, disable, show.", no_args_is_help=True)
app.add_typer(dep_app, name="dep")


@dep_app.command("new")
def dep_new(
    name: str,
    key: Annotated[
        list[str],
        typer.Option(
            "--key",
            "--azure-key-ids",
            help='The two key URIs, in two vaults in two regions: --key URI1 --key URI2, or "URI1, URI2" as in '
            "New-M365DataAtRestEncryptionPolicy -AzureKeyIDs.",
        ),
    ],
    description: Annotated[str | None, typer.Option(help="What the DEP is for.")] = None,
    idempotency_key: KeyOption = None,
    watch: WatchOption = True,
) -> None:
    """Create a multi-workload DEP (New-M365DataAtRestEncryptionPolicy) after checking both keys."""
    from ckey.cli import _start

    # Key URIs hold no comma: "uri1, uri2" is the seed's comma-separated list, split here as PowerShell would.
    keys = [part.strip() for value in key for part in value.split(",") if part.strip()]
    params: dict[str, Any] = {"name": name, "azure_key_ids": keys}
    if description:
        params["description"] = description
    _start("m365.dep.create", params, key=idempotency_key, watch=watch)


@dep_app.command("assign")
def dep_assign(name: str, idempotency_key: KeyOption = None, watch: WatchOption = True) -> None:
    """Assign a multi-workload DEP to the tenant and follow until in effect (up to 24 hours)."""
    from ckey.cli import _start

    _start("m365.dep.assign", {"dep": name}, key=idempotency_key, watch=watch)


@dep_app.command("disable")
def dep_disable(name: str, idempotency_key: KeyOption = None, watch: WatchOption = True) -> None:
    """Disable a multi-workload DEP (refused while it is the tenant's assignment)."""
    from ckey.cli import _start

    _start("m365.dep.disable", {"dep": name}, key=idempotency_key, watch=watch)


@dep_app.command("show")
def dep_show(
    name: Annotated[str | None, typer.Argument(help="One DEP by name or GUID; none: every one.")] = None,
    refresh: RefreshOption = False,
) -> None:
    """The multi-workload DEPs and which one the tenant is assigned."""
    from ckey.cli import _call, console

    query = "?refresh=true" if refresh else ""
    if name is not None:
        console.print_json(json.dumps(_call("GET", f"/api/m365/deps/{name}{query}")))
        return
    table = Table("name", "guid", "enabled", "assigned", "keys")
    for dep in _call("GET", f"/api/m365/deps{query}"):
        table.add_row(
            dep["name"],
            dep.get("guid") or "",
            str(dep["enabled"]),
            "yes" if dep["assigned"] else "",
            "\n".join(dep["azure_key_ids"]),
        )
    console.print(table)
    assignment = _call("GET", "/api/m365/assignment")
    console.print(f"assigned to the tenant: {assignment.get('dep') or '(none)'} (read {assignment['seen_at']})")
