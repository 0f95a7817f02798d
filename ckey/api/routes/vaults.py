"""``/api/vaults``: read models of the Key Vaults that hold the Customer Keys (Get-AzKeyVault, Get-AzKeyVaultKey)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated

import httpx
from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError, ServiceRequestError
from fastapi import APIRouter, Query
from pydantic import BaseModel

from ckey.api.deps import KeyVaultDep, StoreDep, Viewer
from ckey.api.problems import Problem
from ckey.keyvault import AccessPolicy, KeyVaultError, VaultInfo, service_error, vault_summaries
from ckey.models import VaultName, VaultSummary
from ckey.store.inventory import InventoryStore

router = APIRouter(prefix="/api/vaults", tags=["vaults"])


VaultView = VaultSummary
"""A vault with its settings, its keys' current versioned URIs, and when ckey read it (``seen_at``)."""


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


def gateway_problem(exc: Exception) -> Problem | None:
    """The problem+json answer for an error of Azure (ARM, Key Vault, Entra sign-in) or Microsoft Graph.

    Azure's refusals keep their status and code (403, 404); throttling and an unreachable service are 503 (try
    again), anything else from the service 502. ``None`` for an error that is not the gateway's.
    """
    if isinstance(exc, KeyVaultError):
        return _problem(exc)
    if isinstance(exc, ClientAuthenticationError):
        # Before HttpResponseError: it is one. ckey's own credential failed, not the caller's.
        return Problem(502, "azure-sign-in", f"ckey could not sign in to Azure: {_first_line(exc)}")
    if isinstance(exc, HttpResponseError):
        status = exc.status_code or 0
        if status in (403, 404):
            refused = service_error(exc)
            if refused.code == "Error":  # the service named no code: name the rule ckey holds to
                refused.code = "azure-permission" if status == 403 else "vault-exists"
            return _problem(refused)
        if status in (429, 503):
            return Problem(503, "vault-available", f"Azure is throttling or unavailable ({status}): try again later")
        return Problem(502, "vault-reachable", f"Azure answered {status or 'an error'}: {_first_line(exc)}")
    if isinstance(exc, ServiceRequestError):
        return Problem(503, "vault-reachable", f"Azure could not be reached: {_first_line(exc)}")
    if isinstance(exc, AzureError):
        return Problem(502, "vault-reachable", f"Azure failed: {_first_line(exc)}")
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        return Problem(502, "graph-reachable", f"Microsoft Graph answered {status} to {exc.request.url.path}")
    if isinstance(exc, httpx.HTTPError):
        return Problem(503, "graph-reachable", f"Microsoft Graph could not be reached: {type(exc).__name__}")
    return None


def _first_line(exc: Exception) -> str:
    text = str(getattr(exc, "message", None) or exc or type(exc).__name__)
    return text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__


@asynccontextmanager
async def _gateway_errors() -> AsyncIterator[None]:
    """Answer an error of the gateways as problem+json, never as a bare 500."""
    try:
        yield
    except Exception as exc:
        problem = gateway_problem(exc)
        if problem is None:
            raise
        raise problem from None


@router.get("", response_model=list[VaultView])
async def list_vaults(
    _: Viewer,
    keyvault: KeyVaultDep,
    store: StoreDep,
    refresh: Annotated[bool, Query(description="Read Azure now (and update the inventory).")] = False,
) -> list[VaultView]:
    """Every vault of the subscription: region, permission model, soft delete, purge protection, keys.

    From the inventory in SQL (each vault's ``seen_at``); ``refresh=true``, or an inventory that never read the
    vaults, reads Azure (Get-AzKeyVault, then Get-AzKeyVaultKey per vault) and records what it read.
    ``inventory.sync`` reads them on its schedule.
    """
    inventory = InventoryStore(store)
    if refresh or await inventory.as_of("vaults") is None:
        async with _gateway_errors():
            read = await vault_summaries(keyvault)
        await inventory.record_vaults(read, datetime.now(UTC), None)
    return await inventory.vaults()


@router.get("/{name}/access", response_model=VaultAccessView)
async def vault_access(name: VaultName, _: Viewer, keyvault: KeyVaultDep) -> VaultAccessView:
    """The vault's permission model and access policies."""
    async with _gateway_errors():
        vault = await keyvault.vault(name)
    return VaultAccessView(vault=vault.name, permission_model=_model(vault), access_policies=vault.access_policies)
