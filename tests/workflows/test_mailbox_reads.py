"""The mailbox read models over the sandbox's demo tenant, whose mail users (``adele.braun`` among them) have no
mailbox statistics: after a sync, every page answers from SQL, mail users shown with their DEP and a note.

The demo tenant here is this module's own (the session's tenant has its mail users migrated by other tests).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import httpx
import pytest
from temporalio.testing import ActivityEnvironment

from activities.inventory import InventoryActivities
from ckey.api.app import create_app
from ckey.api.routes.exchange import MAIL_USER_NOTE
from ckey.auth import mint_local_token
from ckey.azure import AzureConnection
from ckey.config import Settings
from ckey.m365 import M365Gateway, build_transport
from ckey.models import Role
from ckey.store import Store
from contracts.inventory import SyncStatusesInput, SyncStepInput
from sandbox.keyvault import SandboxKeyVaultServer
from sandbox.m365.server import SandboxM365Server
from sandbox.m365.tenant import DEMO_TENANT
from tests.conftest import free_port
from tests.workflows.test_exchange import DEMO_KEYS


@pytest.fixture(scope="module")
def demo_settings(
    stack_settings: Settings, keyvault_server: SandboxKeyVaultServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    settings = stack_settings.model_copy(update={"sandbox_m365_port": free_port()})
    database = tmp_path_factory.mktemp("demo-tenant") / "sandbox-m365.db"
    with SandboxM365Server(settings, seed=DEMO_TENANT, database_url=f"sqlite+aiosqlite:///{database}"):
        yield settings


async def sync(m365: M365Gateway, store: Store) -> None:
    """What ``inventory.sync`` does, by its own activities."""
    activities = InventoryActivities(m365, store)
    step = SyncStepInput(operation_id="op-sync", started_at=datetime.now(UTC))
    env = ActivityEnvironment()
    await env.run(activities.sync_deps, step)
    await env.run(activities.sync_recipients, step)
    await env.run(activities.sync_statuses, SyncStatusesInput(operation_id="op-sync", limit=10_000))


@pytest.fixture
async def demo_api(demo_settings: Settings, store: Store) -> AsyncIterator[tuple[httpx.AsyncClient, M365Gateway]]:
    async with AzureConnection(demo_settings) as azure:
        m365 = M365Gateway(build_transport(demo_settings, azure))
        app = create_app(demo_settings, m365=m365, store=store)
        await sync(m365, store)
        token = mint_local_token(demo_settings, "vera.viewer@contoso.com", [Role.VIEWER])
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://ckey.test",
            headers={"Authorization": f"Bearer {token}"},
            timeout=120,
        ) as http:
            yield http, m365


async def test_every_page_of_the_demo_tenant_answers_with_its_mail_users(
    demo_api: tuple[httpx.AsyncClient, M365Gateway], store: Store
) -> None:
    api, m365 = demo_api
    mail_users = {u.identity for u in await m365.get_mail_user(result_size="Unlimited")}
    assert "adele.braun" in mail_users and len(mail_users) == 100

    seen: dict[str, dict[str, object]] = {}
    offset = 0
    while True:
        answer = await api.get("/api/mailboxes", params={"offset": offset, "limit": 250})
        assert answer.status_code == 200, answer.text
        page = answer.json()
        seen |= {item["identity"]: item for item in page["items"]}
        offset += 250
        if offset >= page["total"]:
            break
    assert len(seen) == page["total"] == 1000
    assert [i for i in seen.values() if i["error"]] == []
    shown_users = {name for name, item in seen.items() if item["recipient_type"] == "MailUser"}
    assert shown_users == mail_users
    assert all(seen[u]["is_encrypted"] is None and seen[u]["note"] == MAIL_USER_NOTE for u in mail_users)
    assert all(
        item["is_encrypted"] is not None for name, item in seen.items() if item["dep"] and name not in mail_users
    )

    # Filtered pages answer too: by DEP (name or GUID), by encrypted or not, and both.
    name = f"READS_{uuid.uuid4().hex[:8]}"
    await m365.new_data_encryption_policy(name, DEMO_KEYS, "filtered pages")
    for identity in sorted(seen)[:5]:
        await (m365.set_mail_user if identity in mail_users else m365.set_mailbox)(identity, name)
    await sync(m365, store)
    deps = [d for d in (await api.get("/api/deps")).json() if d["name"] == name]
    assert deps and (await api.get("/api/mailboxes", params={"dep": name})).json()["total"] == 5
    for dep in (deps[0]["name"], deps[0]["guid"]):
        for encrypted in (None, True, False):
            params: dict[str, str | int | bool] = {"dep": dep, "limit": 500}
            if encrypted is not None:
                params["encrypted"] = encrypted
            filtered = await api.get("/api/mailboxes", params=params)
            assert filtered.status_code == 200, filtered.text
            items = filtered.json()["items"]
            assert all(i["dep"] == deps[0]["name"] for i in items)
            if encrypted is not None:
                assert all(i["is_encrypted"] is encrypted for i in items)
    for encrypted in (True, False):
        assert (await api.get("/api/mailboxes", params={"encrypted": encrypted})).status_code == 200
    unknown = await api.get("/api/mailboxes", params={"dep": "Nope"})
    assert unknown.status_code == 404, unknown.text

    shown = await api.get("/api/mailboxes/adele.braun")
    assert shown.status_code == 200, shown.text
    assert (shown.json()["recipient_type"], shown.json()["is_encrypted"]) == ("MailUser", None)
