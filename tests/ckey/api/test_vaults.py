"""The vault read models answer a refused or failing gateway as problem+json, never a bare 500."""

from __future__ import annotations

import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from ckey.api import deps
from ckey.api.app import create_app
from ckey.auth import mint_local_token
from ckey.config import Settings
from ckey.keyvault import KeyInfo, KeyVaultError, KeyVaultGateway, VaultInfo
from ckey.models import Role
from ckey.store import Store
from ckey.store.migrate import upgrade

VAULT = VaultInfo(
    name="contoso-eastus-kv1",
    resource_id="/subscriptions/s/resourceGroups/g/providers/Microsoft.KeyVault/vaults/contoso-eastus-kv1",
    resource_group="g",
    region="eastus",
    tenant_id="t",
    vault_uri="https://contoso-eastus-kv1.vault.azure.net/",
    soft_delete=True,
    purge_protection=True,
    rbac=False,
)


OTHER = VAULT.model_copy(
    update={
        "name": "contoso-westus-kv1",
        "region": "westus",
        "vault_uri": "https://contoso-westus-kv1.vault.azure.net/",
        "resource_id": VAULT.resource_id.replace("eastus", "westus"),
    }
)


class LockedOutVaults:
    """A gateway whose principal lost ``list`` on the keys of :data:`VAULT` (ckey's own access policy removed).

    Args:
        keys_error: what listing :data:`VAULT`'s keys raises.
        open_vault: a second vault whose keys list (none).
    """

    def __init__(self, keys_error: Exception, open_vault: VaultInfo | None = None) -> None:
        self.keys_error = keys_error
        self.open_vault = open_vault

    async def vaults(self) -> list[VaultInfo]:
        return [VAULT] + ([self.open_vault] if self.open_vault else [])

    async def keys(self, vault: str) -> list[KeyInfo]:
        if vault == VAULT.name:
            raise self.keys_error
        return []

    async def close(self) -> None:
        pass


@pytest.fixture
async def viewer(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_local_token(settings, 'victor@contoso.com', [Role.VIEWER])}"}


async def _store(settings: Settings) -> Store:
    """A migrated store of its own: the vault list answers from the inventory, and reads Azure when it is empty."""
    store = Store.from_url(f"sqlite+aiosqlite:///{settings.data_dir / f'vaults-{uuid.uuid4().hex}.db'}")
    await upgrade(store.engine)
    return store


async def _get(settings: Settings, keyvault: Any, path: str, headers: dict[str, str]) -> httpx.Response:
    store = await _store(settings)
    app = create_app(settings, client=cast(Any, object()), store=store, keyvault=cast(KeyVaultGateway, keyvault))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://ckey.test") as http:
            return await http.get(path, headers=headers)
    finally:
        await store.close()


async def test_a_vault_whose_keys_are_refused_is_shown_with_its_refusal_beside_the_others(
    settings: Settings, viewer: dict[str, str]
) -> None:
    refused = KeyVaultError(403, "ForbiddenByPolicy", "ckey-automation@contoso.com does not have keys list permission")
    response = await _get(settings, LockedOutVaults(refused, open_vault=OTHER), "/api/vaults", viewer)
    assert response.status_code == 200, response.text
    shown = {v["name"]: v for v in response.json()}
    assert set(shown) == {VAULT.name, OTHER.name}
    locked = shown[VAULT.name]
    assert (
        locked["keys"] == []
        and locked["keys_error"].startswith("ForbiddenByPolicy: ")
        and "keys list" in locked["keys_error"]
    )
    assert shown[OTHER.name]["keys_error"] is None


async def test_a_key_listing_that_fails_is_a_problem_not_a_500(settings: Settings, viewer: dict[str, str]) -> None:
    throttled = KeyVaultError(429, "Throttled", "Rate limit exceeded")
    response = await _get(settings, LockedOutVaults(throttled), "/api/vaults", viewer)
    assert response.status_code == 502, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["rule"] == "vault-reachable" and "Rate limit" in response.json()["detail"]


async def test_an_unexpected_error_is_a_problem_with_nothing_leaked(settings: Settings, viewer: dict[str, str]) -> None:
    response = await _get(settings, LockedOutVaults(RuntimeError("secret internals")), "/api/vaults", viewer)
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["rule"] == "internal-error" and "secret internals" not in response.text


async def test_the_gateway_maps_a_refused_key_listing_to_a_key_vault_error() -> None:
    from azure.core.exceptions import HttpResponseError

    class Refusing:
        def list_properties_of_keys(self) -> Any:
            raise HttpResponseError(message="Forbidden", response=None)

    gateway = cast(Any, KeyVaultGateway.__new__(KeyVaultGateway))
    gateway.key_client = lambda url: Refusing()
    gateway.vault_url = lambda vault: f"https://{vault}.vault.azure.net"
    with pytest.raises(KeyVaultError):
        await KeyVaultGateway.keys(gateway, "contoso-eastus-kv1")


async def test_the_gateway_dependencies_are_declared_once_in_deps(settings: Settings, viewer: dict[str, str]) -> None:
    # Declared in ckey.api.deps, not in the route modules: overriding it there reaches every route that reads vaults.
    routes = Path(deps.__file__).parent / "routes"
    assert [m.name for m in routes.glob("*.py") if "app.state" in m.read_text()] == []

    store = await _store(settings)
    app = create_app(settings, client=cast(Any, object()), store=store)
    app.dependency_overrides[deps.get_keyvault] = lambda: LockedOutVaults(KeyVaultError(503, "Unavailable", "down"))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://ckey.test") as http:
        answer = await http.get("/api/vaults", headers=viewer)
    await store.close()
    assert answer.status_code == 502, answer.text


class FailingGateway:
    """A gateway whose every read raises ``error`` (ARM, Key Vault, Entra sign-in or Graph failing)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def vaults(self) -> list[VaultInfo]:
        raise self.error

    async def vault(self, name: str) -> VaultInfo:
        raise self.error

    async def close(self) -> None:
        pass


def _http_error(status: int, message: str) -> HttpResponseError:
    request = httpx.Request("GET", "https://management.azure.com/subscriptions/s/providers/Microsoft.KeyVault/vaults")
    error = HttpResponseError(message=message)
    error.status_code = status
    error.response = cast(Any, SimpleNamespace(status_code=status, request=request, headers={}, reason=message))
    return error


GATEWAY_ERRORS = [
    pytest.param(
        ClientAuthenticationError(message="AADSTS7000215: Invalid client secret provided."),
        502,
        "azure-sign-in",
        "Invalid client secret",
        id="sign-in-refused",
    ),
    pytest.param(
        ServiceRequestError("Cannot connect to host management.azure.com"),
        503,
        "vault-reachable",
        "Cannot connect",
        id="unreachable",
    ),
    pytest.param(ServiceResponseError("Connection reset by peer"), 502, "vault-reachable", "reset", id="dropped"),
    pytest.param(_http_error(500, "Internal server error"), 502, "vault-reachable", "500", id="azure-500"),
    pytest.param(_http_error(429, "Too many requests"), 503, "vault-available", "try again", id="throttled"),
    pytest.param(
        _http_error(403, "The client does not have authorization to perform action"),
        403,
        "azure-permission",
        "authorization",
        id="arm-forbidden",
    ),
    pytest.param(
        httpx.ConnectError("graph.microsoft.com unreachable"), 503, "graph-reachable", "Graph", id="graph-unreachable"
    ),
]


@pytest.mark.parametrize(("error", "status", "rule", "said"), GATEWAY_ERRORS)
@pytest.mark.parametrize("path", ["/api/vaults", "/api/vaults/contoso-eastus-kv1/access"])
async def test_every_gateway_error_of_a_vault_route_is_a_problem_with_a_rule(
    settings: Settings, viewer: dict[str, str], error: Exception, status: int, rule: str, said: str, path: str
) -> None:
    response = await _get(settings, FailingGateway(error), path, viewer)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["rule"] == rule and said in body["detail"], body
