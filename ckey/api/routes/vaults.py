"""``/api/vaults``: read models of the Key Vaults that hold the Customer Keys (Get-AzKeyVault, Get-AzKeyVaultKey)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from ckey.api.deps import KeyVaultDep, Viewer
from ckey.api.problems import Problem
from ckey.keyvault import AccessPolicy, KeyInfo, KeyVaultError, VaultInfo
from ckey.models import VaultName

router = APIRouter(prefix="/api/vaults", tags=["vaults"])


class VaultView(BaseModel):
    """A vault with its settings and its keys' current versioned URIs."""

    name: str
    region: str
    permission_model: str
    """``access_policy`` (legacy) or ``rbac``."""
    soft_delete: bool
    retention_days: int | None
    purge_protection: bool
    vault_uri: str
    keys: list[KeyInfo] = Field(default_factory=list)


class VaultAccessView(BaseModel):
    """Who has access to a vault (Get-AzKeyVault)."""

    vault: str
    permission_model: str
    access_policies: list[AccessPolicy]


def _model(vault: VaultInfo) -> str:
    return "rbac" if vault.rbac else "access_policy"


def _problem(exc: KeyVaultError) -> Problem:
    status = exc.status if exc.status in (403, 404) else 502
    return Problem(status, "vault-reachable" if status == 502 else exc.code, exc.message)


@router.get("", response_model=list[VaultView])
async def list_vaults(_: Viewer, keyvault: KeyVaultDep) -> list[VaultView]:
    """Every vault of the subscription: region, permission model, soft delete, purge protection, keys."""
    try:
        vaults = await keyvault.vaults()
        return [
            VaultView(
                name=v.name,
                region=v.region,
                permission_model=_model(v),
                soft_delete=v.soft_delete,
                retention_days=v.retention_days,
                purge_protection=v.purge_protection,
                vault_uri=v.vault_uri,
                keys=await keyvault.keys(v.name),
            )
            for v in vaults
        ]
    except KeyVaultError as exc:
        raise _problem(exc) from None


@router.get("/{name}/access", response_model=VaultAccessView)
async def vault_access(name: VaultName, _: Viewer, keyvault: KeyVaultDep) -> VaultAccessView:
    """The vault's permission model and access policies."""
    try:
        vault = await keyvault.vault(name)
    except KeyVaultError as exc:
        raise _problem(exc) from None
    return VaultAccessView(vault=vault.name, permission_model=_model(vault), access_policies=vault.access_policies)
