"""``ckey spo``: SharePoint/OneDrive geos from the command line.

``ckey spo register`` registers a geo's DEP (Register-SPODataEncryptionPolicy through its admin site) and follows it
to Registered, ``ckey spo status`` shows the geos (Get-SPODataEncryptionPolicy, from the inventory; ``--refresh``
reads the tenant now), ``ckey spo restore`` gives a geo in recovery mode two new keys (Restore-SPODataEncryptionPolicy).
Keys are named ``<vault>/<key>/<version>`` or by their versioned key URI.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from ckey.models import KeyUri, SpoKeyRef

spo_app = typer.Typer(help="SharePoint/OneDrive geos: register, status, restore.", no_args_is_help=True)

KeyOption = Annotated[str | None, typer.Option("--idempotency-key", help="Retry-safe key: the same key, the same run.")]
WatchOption = Annotated[bool, typer.Option("--watch/--no-watch", help="Follow the operation with a progress bar.")]
Geo = Annotated[str, typer.Option("--geo", help="The geo's code (NAM, EUR ...), one of CKEY_SPO_GEO_ADMIN_URLS.")]
Primary = Annotated[str, typer.Option("--primary", help="<vault>/<key>/<version>, or the key's versioned URI.")]
Secondary = Annotated[str, typer.Option("--secondary", help="<vault>/<key>/<version>, or the key's versioned URI.")]


def key_ref(text: str) -> dict[str, str]:
    """``vault/key/version`` or ``https://<vault>.vault.azure.net/keys/<key>/<version>`` as SpoKeyRef's fields.

    Raises:
        typer.BadParameter: neither, or no version.
    """
    text = text.strip()
    try:
        if text.lower().startswith("https://"):
            ref = SpoKeyRef.of(KeyUri.parse(text))
        else:
            vault, key, version = text.split("/")
            ref = SpoKeyRef(vault=vault, key=key, version=version)
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r}: a key is <vault>/<key>/<version> or its versioned URI ({exc})") from None
    return ref.model_dump()


def _params(geo: str, primary: str, secondary: str) -> dict[str, Any]:
    return {"geo": geo, "primary": key_ref(primary), "secondary": key_ref(secondary)}


@spo_app.command("register")
def spo_register(
    geo: Geo, primary: Primary, secondary: Secondary, idempotency_key: KeyOption = None, watch: WatchOption = True
) -> None:
    """Register a geo's DEP after checking both keys for SharePoint Online, and follow it to Registered."""
    from ckey.cli import _start

    _start("spo.dep.register", _params(geo, primary, secondary), key=idempotency_key, watch=watch)


@spo_app.command("restore")
def spo_restore(
    geo: Geo, primary: Primary, secondary: Secondary, idempotency_key: KeyOption = None, watch: WatchOption = True
) -> None:
    """Give a geo in recovery mode two new keys (Restore-SPODataEncryptionPolicy) and follow it to Registered."""
    from ckey.cli import _start

    _start("spo.dep.restore", _params(geo, primary, secondary), key=idempotency_key, watch=watch)


@spo_app.command("status")
def spo_status(
    geo: Annotated[str | None, typer.Argument(help="One geo (default: every geo).")] = None,
    refresh: Annotated[bool, typer.Option("--refresh", help="Read the tenant now.")] = False,
) -> None:
    """Each geo's state, percent of sites, keys and the operation that moved it last."""
    from ckey.cli import _call, console

    query = "?refresh=true" if refresh else ""
    found = _call("GET", f"/api/spo/geos/{geo}{query}") if geo else _call("GET", f"/api/spo/geos{query}")
    table = Table("geo", "state", "percent", "keys", "last operation", "read at")
    for view in [found] if geo else found:
        percent = "" if view.get("percent") is None else f"{view['percent']} %"
        table.add_row(
            view["geo"],
            view["state"],
            percent,
            "\n".join(view.get("key_uris") or []),
            view.get("operation_id") or "",
            str(view.get("seen_at") or ""),
        )
    console.print(table)
