"""``ckey spo``: SharePoint/OneDrive geos from the command line.

``ckey spo register`` registers a geo's DEP (Register-SPODataEncryptionPolicy through its admin site) and follows it
to Registered, ``ckey spo status`` shows the geos (Get-SPODataEncryptionPolicy, from the inventory; ``--refresh``
reads the tenant now), ``ckey spo restore`` gives a geo in recovery mode two new keys (Restore-SPODataEncryptionPolicy).
Keys are named ``<vault>/<key>/<version>`` or by their versioned key URI; ``<vault>/<key>`` (or a URI without a
version) takes the key's current version, read from Azure through the API and printed before anything starts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.table import Table

from ckey.models import KeyUri, SpoKeyRef

spo_app = typer.Typer(help="SharePoint/OneDrive geos: register, status, restore.", no_args_is_help=True)

KeyOption = Annotated[str | None, typer.Option("--idempotency-key", help="Retry-safe key: the same key, the same run.")]
WatchOption = Annotated[bool, typer.Option("--watch/--no-watch", help="Follow the operation with a progress bar.")]
Geo = Annotated[str, typer.Option("--geo", help="The geo's code (NAM, EUR ...), one of CKEY_SPO_GEO_ADMIN_URLS.")]
_KEY_HELP = "<vault>/<key>[/<version>] or the key's URI; without a version, the key's current version."
Primary = Annotated[str, typer.Option("--primary", help=_KEY_HELP)]
Secondary = Annotated[str, typer.Option("--secondary", help=_KEY_HELP)]

CurrentVersion = Callable[[str, str], str]
"""(vault, key) → the key's current version."""


def key_ref(text: str, current: CurrentVersion | None = None) -> dict[str, str]:
    """``vault/key[/version]`` or ``https://<vault>.vault.azure.net/keys/<key>[/<version>]`` as SpoKeyRef's fields.

    Args:
        text: the key as the operator wrote it.
        current: resolves a key named without a version to its current version; None: a version is required.

    Raises:
        typer.BadParameter: neither form, or no version and nothing to resolve it with.
    """
    text = text.strip()
    try:
        if text.lower().startswith("https://"):
            uri = KeyUri.parse(text)
            vault, key, version = uri.vault, uri.name, uri.version
        else:
            parts = text.split("/")
            if len(parts) not in (2, 3):
                raise ValueError("expected <vault>/<key>[/<version>]")
            vault, key, version = parts[0], parts[1], parts[2] if len(parts) == 3 else None
        if version is None:
            if current is None:
                raise ValueError("SharePoint names a key with its version")
            version = current(vault, key)
        ref = SpoKeyRef(vault=vault, key=key, version=version)
    except ValueError as exc:
        raise typer.BadParameter(
            f"{text!r}: a key is <vault>/<key>[/<version>] or its URI ({str(exc).splitlines()[0]})"
        ) from None
    return ref.model_dump()


def current_version_from_api(vault: str, key: str) -> str:
    """The key's current version as Azure reports it now (``GET /api/vaults?refresh=true``), printed.

    Raises:
        ValueError: the vault or the key is not there, or ckey may not list the vault's keys.
    """
    from ckey.cli import _call, console

    for summary in _call("GET", "/api/vaults?refresh=true"):
        if summary["name"].lower() != vault.lower():
            continue
        if summary.get("keys_error"):
            raise ValueError(f"ckey can't list the keys of {vault}: {summary['keys_error']}")
        for found in summary["keys"]:
            if found["name"].lower() == key.lower():
                console.print(f"{vault}/{key}: current version {found['version']}")
                return str(found["version"])
        raise ValueError(f"no key {key} in vault {vault}")
    raise ValueError(f"no vault {vault} in the subscription")


def _params(geo: str, primary: str, secondary: str) -> dict[str, Any]:
    return {
        "geo": geo,
        "primary": key_ref(primary, current_version_from_api),
        "secondary": key_ref(secondary, current_version_from_api),
    }


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
