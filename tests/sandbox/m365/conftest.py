"""The sandbox tenant and the sandbox Key Vault in this process, reached over HTTPS under the real names.

One Key Vault for the session (its demo vaults, plus vaults each test creates for its own keys); one small tenant per
test module on its own database. Requests go through ckey's own transport (``AzureConnection``: the sandbox resolver
and CA) with sandbox identity tokens, exactly as ckey's gateway sends them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ckey.azure import AzureConnection
from ckey.config import Settings, load_settings
from ckey.models import ServicePrincipal
from sandbox.identity import SandboxIdentity
from sandbox.keyvault import SandboxKeyVaultControl, SandboxKeyVaultServer
from sandbox.m365.control import SandboxM365Control
from sandbox.m365.server import SandboxM365Server
from sandbox.m365.tenant import SMALL_TENANT, TenantSpec
from tests.conftest import signed_in_to_sandbox
from tests.sandbox.conftest import free_port

EXO = "https://outlook.office365.com"
SPO_ADMIN = "contoso-admin.sharepoint.com"
SPO_EUR_ADMIN = "contosoeur-admin.sharepoint.com"
GRAPH = "https://graph.microsoft.com"
SUPPORT = "https://support.ckey.test"
SERVICE_PERMISSIONS = ["get", "wrapKey", "unwrapKey"]


@dataclass
class Answer:
    """One HTTP answer."""

    status: int
    body: Any
    headers: dict[str, str]

    @property
    def value(self) -> list[dict[str, Any]]:
        assert self.status == 200, f"{self.status}: {self.body}"
        value: list[dict[str, Any]] = self.body["value"]
        return value

    @property
    def message(self) -> str:
        """The cmdlet's error text (without the ``|Exception|`` prefix)."""
        assert self.status >= 400, (self.status, self.body)
        text: str = self.body["error"]["message"]
        return text.split("|", 2)[-1] if text.startswith("|") else text

    @property
    def exception(self) -> str:
        text: str = self.body["error"]["message"]
        return text.split("|")[1] if text.startswith("|") else ""


class M365:
    """Talks to the sandbox tenant as an administrator (or anyone) would, over ckey's transport."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.connection = AzureConnection(settings)
        self.identity = SandboxIdentity(settings.sandbox_identity_key_path, settings.azure_tenant_id)

    def headers(self, resource: str, principal: str | None = None) -> dict[str, str]:
        token = self.identity.mint(principal or self.settings.azure_principal, resource).token
        return {"Authorization": f"Bearer {token}"}

    async def request(
        self, method: str, url: str, *, resource: str, principal: str | None = None, json: Any = None, **kw: Any
    ) -> Answer:
        headers = {**self.headers(resource, principal), **kw.pop("headers", {})}
        session = self.connection.http_session()
        async with session.request(method, url, json=json, headers=headers, **kw) as response:
            body = await response.json(content_type=None) if (await response.read()) else None
            return Answer(response.status, body, dict(response.headers))

    async def exo(self, cmdlet: str, principal: str | None = None, **params: Any) -> Answer:
        url = f"{EXO}/adminapi/beta/{self.settings.azure_tenant_id}/InvokeCommand"
        body = {"CmdletInput": {"CmdletName": cmdlet, "Parameters": params}}
        return await self.request("POST", url, resource=EXO, principal=principal, json=body)

    async def ok(self, cmdlet: str, **params: Any) -> list[dict[str, Any]]:
        """The cmdlet's output, every page (``@odata.nextLink`` is posted the same body, as ckey's gateway does)."""
        answer = await self.exo(cmdlet, **params)
        out = list(answer.value)
        body = {"CmdletInput": {"CmdletName": cmdlet, "Parameters": params}}
        while next_link := answer.body.get("@odata.nextLink"):
            answer = await self.request("POST", next_link, resource=EXO, json=body)
            out += answer.value
        return out

    async def spo(self, cmdlet: str, host: str = SPO_ADMIN, principal: str | None = None, **params: Any) -> Answer:
        body = {"CmdletInput": {"CmdletName": cmdlet, "Parameters": params}}
        url = f"https://{host}/adminapi/InvokeCommand"
        return await self.request("POST", url, resource=f"https://{host}", principal=principal, json=body)

    async def graph(self, method: str, path: str, json: Any = None, principal: str | None = None) -> Answer:
        url = f"{GRAPH}/beta/deviceManagement/virtualEndpoint/{path}"
        return await self.request(method, url, resource=GRAPH, principal=principal, json=json)

    async def support(self, method: str, path: str, json: Any = None, principal: str | None = None) -> Answer:
        url = f"{SUPPORT}/providers/Microsoft.Support/supportTickets{path}"
        return await self.request(
            method, url, resource=SUPPORT, principal=principal, json=json, params={"api-version": "2024-04-01"}
        )

    async def close(self) -> None:
        await self.connection.close()


def tenant_settings(data_dir: Path, kv_port: int) -> Settings:
    return signed_in_to_sandbox(
        load_settings(data_dir=data_dir, sandbox_keyvault_port=kv_port, sandbox_m365_port=free_port(), _env_file=None)
    )


@pytest.fixture(scope="session")
def m365_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sandbox-m365") / "data"


@pytest.fixture(scope="session")
def m365_kv(m365_data: Path) -> Iterator[SandboxKeyVaultServer]:
    """The sandbox Key Vault with its demo vaults, shared by every tenant of the session."""
    settings = signed_in_to_sandbox(
        load_settings(data_dir=m365_data, sandbox_keyvault_port=free_port(), _env_file=None)
    )
    with SandboxKeyVaultServer(settings) as server:
        yield server


@pytest.fixture(scope="module")
def settings_m365(m365_data: Path, m365_kv: SandboxKeyVaultServer) -> Settings:
    return tenant_settings(m365_data, m365_kv.settings.sandbox_keyvault_port)


def start_tenant(settings: Settings, db: Path, seed: TenantSpec | None = SMALL_TENANT) -> SandboxM365Server:
    # No Key Vault retries: a vault that is down fails at once, and the fault tests stay fast.
    return SandboxM365Server(settings, seed=seed, database_url=f"sqlite+aiosqlite:///{db}", keyvault_retries=0).start()


@pytest.fixture(scope="module")
def tenant(settings_m365: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxM365Server]:
    server = start_tenant(settings_m365, tmp_path_factory.mktemp("tenant") / "sandbox-m365.db")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
async def m365(settings_m365: Settings, tenant: SandboxM365Server) -> AsyncIterator[M365]:
    client = M365(settings_m365)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture(scope="module")
async def control(settings_m365: Settings, tenant: SandboxM365Server) -> AsyncIterator[SandboxM365Control]:
    async with SandboxM365Control.from_settings(settings_m365) as client:
        yield client


@pytest.fixture(scope="module")
async def kv(settings_m365: Settings, m365_kv: SandboxKeyVaultServer) -> AsyncIterator[SandboxKeyVaultControl]:
    async with SandboxKeyVaultControl.from_settings(settings_m365) as client:
        yield client


@pytest.fixture(autouse=True)
async def _no_faults(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Every test starts and ends without injected faults."""
    yield
    if "control" in request.fixturenames:
        control: SandboxM365Control = request.getfixturevalue("control")
        await control.set_faults()


@dataclass
class DepKeys:
    """Two customer keys in two new vaults (two regions), for one test."""

    vaults: tuple[str, str]
    names: tuple[str, str]
    kids: tuple[str, str]
    """Versioned key ids."""

    @property
    def uris(self) -> list[str]:
        """Versionless key URIs, as an administrator names them in a DEP."""
        return [kid.rsplit("/", 1)[0] for kid in self.kids]

    @property
    def versions(self) -> tuple[str, str]:
        return self.kids[0].rsplit("/", 1)[1], self.kids[1].rsplit("/", 1)[1]


async def new_keys(
    kv: SandboxKeyVaultControl,
    principals: list[ServicePrincipal],
    *,
    purge_protection: bool = True,
    permissions: list[str] | None = None,
) -> DepKeys:
    """Two vaults with one key each, ``principals`` granted ``permissions`` (get/wrapKey/unwrapKey) on both."""
    tag = uuid.uuid4().hex[:10]
    vaults = (f"ck1-{tag}", f"ck2-{tag}")
    kids = []
    for vault, location in zip(vaults, ("eastus", "westus"), strict=True):
        await kv.create_vault(vault, location=location, purge_protection=purge_protection)
        for principal in principals:
            await kv.grant(vault, principal.value, permissions or SERVICE_PERMISSIONS)
        kids.append(str((await kv.create_key(vault, f"key-{tag}"))["kid"]))
    return DepKeys(vaults=vaults, names=(f"key-{tag}", f"key-{tag}"), kids=(kids[0], kids[1]))


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"
