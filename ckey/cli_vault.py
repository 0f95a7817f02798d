"""``ckey vault`` and ``ckey key``: the Key Vault kinds from the command line, as the seed's cmdlets read.

``ckey vault health`` checks the Customer Keys, ``ckey vault access`` shows who holds an access policy
(Get-AzKeyVault), ``ckey vault revoke`` removes a user's (Remove-AzKeyVaultAccessPolicy), and
``ckey key restore --input-file`` brings back a lost key (Restore-AzKeyVaultKey -InputFile). Each starts or reads
through the API, like every other command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ckey.models import Workload

# ckey.cli imports this module to register its apps, so the helpers are taken from it when a command runs
# (an import here at the top would be circular, and under ``python -m ckey.cli`` would load a second copy early).
KeyOption = Annotated[str | None, typer.Option("--idempotency-key", help="Retry-safe key: the same key, the same run.")]
WatchOption = Annotated[bool, typer.Option("--watch/--no-watch", help="Follow the operation with a progress bar.")]

vault_app = typer.Typer(help="Key vaults: check the keys' health, show and revoke access.", no_args_is_help=True)
key_app = typer.Typer(help="Customer Keys: roll a key onto a new version, restore a lost key.", no_args_is_help=True)


@vault_app.command("health")
def vault_health(
    workload: Annotated[Workload, typer.Option(help="The workload whose service principal the keys must serve.")] = (
        Workload.EXCHANGE
    ),
    key: Annotated[
        list[str] | None,
        typer.Option("--key", help="A key URI to check (repeatable); default: the workload's CKEY_DEP_KEYS."),
    ] = None,
    idempotency_key: KeyOption = None,
    watch: WatchOption = True,
) -> None:
    """Check Customer Keys: soft delete, purge protection, no expiry, RSA, two regions, the service's permissions."""
    params: dict[str, Any] = {"workload": workload.value}
    if key:
        params["keys"] = key
    from ckey.cli import _start

    _start("keyvault.health", params, key=idempotency_key, watch=watch)


@vault_app.command("access")
def vault_access(vault: Annotated[str, typer.Argument(help="The vault's name.")]) -> None:
    """Who holds an access policy on the vault and with which key permissions (Get-AzKeyVault)."""
    from ckey.cli import _call, console

    view = _call("GET", f"/api/vaults/{vault}/access")
    console.print(f"{view['vault']}: permission model {view['permission_model']}")
    table = Table("principal", "type", "object id", "key permissions", "protected")
    for policy in view["access_policies"]:
        protected = "Microsoft 365" if policy.get("microsoft_365") else "ckey" if policy.get("ckey") else ""
        table.add_row(
            policy.get("principal") or "(unknown)",
            policy.get("principal_type") or "",
            policy["object_id"],
            ", ".join(policy.get("keys", [])),
            protected,
        )
    console.print(table)


@vault_app.command("revoke")
def vault_revoke(
    vault: Annotated[str, typer.Argument(help="The vault's name.")],
    upn: Annotated[str, typer.Option("--upn", help="The user whose access policy is removed.")],
    idempotency_key: KeyOption = None,
    watch: WatchOption = True,
) -> None:
    """Remove a user's access policy from a vault (never a Microsoft 365 service principal's nor ckey's own)."""
    from ckey.cli import _start

    _start("keyvault.access.revoke", {"vault": vault, "user_principal_name": upn}, key=idempotency_key, watch=watch)


def restore_key(key_uri: str, backup: Path | None, *, idempotency_key: str | None, watch: bool) -> None:
    """Start ``keyvault.key.restore``, uploading ``backup`` first (once, named by the id the API answers)."""
    from ckey.cli import _call, _start, console

    params: dict[str, Any] = {"key_uri": key_uri}
    if backup is not None:
        uploaded = _call(
            "POST",
            "/api/uploads/key-backups",
            content=backup.read_bytes(),
            headers={"Content-Type": "application/octet-stream"},
        )
        size, digest = uploaded["size"], uploaded["sha256"]
        console.print(f"uploaded {backup.name} ({size:,} bytes, SHA-256 {digest}) as {uploaded['id']}")
        params["backup"] = uploaded["id"]
    _start("keyvault.key.restore", params, key=idempotency_key, watch=watch)


BackupFile = Annotated[
    Path | None,
    typer.Option(
        "--input-file",
        "--backup-file",
        help="The key's backup (Backup-AzKeyVaultKey -OutputFile), restored only if soft-delete recovery is "
        "impossible.",
        exists=True,
        dir_okay=False,
        readable=True,
    ),
]
KeyUri = Annotated[str, typer.Argument(help="The key, https://<vault>.vault.azure.net/keys/<name>.")]


@key_app.command("restore")
def key_restore(
    key_uri: KeyUri, input_file: BackupFile = None, idempotency_key: KeyOption = None, watch: WatchOption = True
) -> None:
    """Bring back a lost key (Restore-AzKeyVaultKey -InputFile): recover it from soft delete, else restore the backup.

    Then verify it (get, wrapKey, unwrapKey).
    """
    restore_key(key_uri, input_file, idempotency_key=idempotency_key, watch=watch)


@vault_app.command("restore-key")
def vault_restore_key(
    key_uri: KeyUri, backup_file: BackupFile = None, idempotency_key: KeyOption = None, watch: WatchOption = True
) -> None:
    """The same as `ckey key restore` (kept for scripts written before it)."""
    restore_key(key_uri, backup_file, idempotency_key=idempotency_key, watch=watch)


@key_app.command("roll")
def key_roll(
    vault: Annotated[str, typer.Argument(help="The key's vault.")],
    key: Annotated[str, typer.Argument(help="The key's name.")],
    dep: Annotated[
        list[str] | None, typer.Option("--dep", help="A mailbox DEP that uses the key (repeatable).")
    ] = None,
    m365_dep: Annotated[
        list[str] | None, typer.Option("--m365-dep", help="A multi-workload DEP that uses the key (repeatable).")
    ] = None,
    geo: Annotated[
        list[str] | None, typer.Option("--geo", help="A SharePoint geo (NAM, EUR ...) whose DEP uses it (repeatable).")
    ] = None,
    adopt: Annotated[
        str | None,
        typer.Option(
            "--adopt", help="Refresh onto this existing version (a rotation policy made it) instead of a new one."
        ),
    ] = None,
    idempotency_key: KeyOption = None,
    watch: WatchOption = True,
) -> None:
    """Roll a Customer Key: a new version in its vault, then every workload that uses it refreshed onto it.

    None of --dep, --m365-dep, --geo: ckey finds the DEPs and geos that use the key (its inventory and the tenant).
    Old versions are never disabled or deleted.
    """
    params: dict[str, Any] = {"vault": vault, "key": key}
    if dep:
        params["deps"] = dep
    if m365_dep:
        params["m365_deps"] = m365_dep
    if geo:
        params["geos"] = [g.upper() for g in geo]
    if adopt:
        params["adopt_version"] = adopt
    from ckey.cli import _start

    _start("key.roll", params, key=idempotency_key, watch=watch)
