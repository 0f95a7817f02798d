"""The Exchange read models over a small scripted tenant.

Pages answer from the inventory in SQL, filled here by the sync's own activities: a page view never asks the tenant.
One mailbox, with ``refresh=true``, reads the tenant live (mail users through Get-MailUser) and updates the inventory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from temporalio.testing import ActivityEnvironment

from activities.inventory import InventoryActivities
from ckey.api.app import create_app
from ckey.api.routes.exchange import ENCRYPTS_ON_MIGRATION, MAIL_USER_NOTE
from ckey.auth import mint_local_token
from ckey.config import Settings
from ckey.m365 import Cmdlet, CmdletError, M365Gateway, TransientError
from ckey.models import Role
from ckey.store import Store
from contracts.inventory import SyncStatusesInput, SyncStepInput

USA_GUID = "4e5f2c1a-9b7d-4c3e-8f6a-1b2c3d4e5f60"
NOT_FOUND = "ManagementObjectNotFoundException"


class Tenant:
    """Answers the read cmdlets as Exchange Online does, and records every call it receives.

    ``adele.braun`` is a mail user: Get-MailboxStatistics refuses it as not found, Get-MailUser knows it.
    ``flaky`` is a mailbox whose statistics keep failing (a transient fault that outlasted the retries).
    """

    def __init__(self) -> None:
        self.calls: list[Cmdlet] = []
        # identity -> (DataEncryptionPolicyID, IsEncrypted)
        self.mailboxes: dict[str, tuple[str | None, bool]] = {
            "alice": (USA_GUID, True),
            "bob": (None, False),
            "flaky": (None, False),
        }
        self.mail_users = {"adele.braun": "USA_mailboxes"}

    async def invoke(self, cmdlet: Cmdlet) -> list[dict[str, Any]]:
        self.calls.append(cmdlet)
        params = cmdlet.parameters()
        identity = params.get("Identity")
        line = cmdlet.render()
        if cmdlet.name == "Get-DataEncryptionPolicy":
            dep = {"Name": "USA_mailboxes", "Guid": USA_GUID, "AzureKeyIDs": []}
            if identity in (None, USA_GUID, "USA_mailboxes"):
                return [dep]
            raise CmdletError(
                line, f"The operation couldn't be performed because object '{identity}' couldn't be found.", NOT_FOUND
            )
        if cmdlet.name == "Get-Mailbox":
            return [
                {
                    "Identity": name,
                    "RecipientTypeDetails": "UserMailbox",
                    "DataEncryptionPolicy": "USA_mailboxes" if guid else None,
                }
                for name, (guid, _) in self.mailboxes.items()
            ]
        if cmdlet.name == "Get-MailUser":
            users = {identity: self.mail_users[identity]} if identity in self.mail_users else self.mail_users
            if identity is not None and identity not in self.mail_users:
                raise CmdletError(
                    line,
                    f"The operation couldn't be performed because object '{identity}' couldn't be found.",
                    NOT_FOUND,
                )
            return [
                {"Identity": name, "RecipientTypeDetails": "MailUser", "DataEncryptionPolicy": dep}
                for name, dep in users.items()
            ]
        if cmdlet.name == "Get-MailboxStatistics":
            if identity == "flaky":
                raise TransientError(line, 503, "Service Unavailable")
            if identity not in self.mailboxes:
                raise CmdletError(
                    line,
                    f"The operation couldn't be performed because object '{identity}' couldn't be found.",
                    NOT_FOUND,
                )
            guid, encrypted = self.mailboxes[identity]
            return [{"Identity": identity, "IsEncrypted": encrypted, "DataEncryptionPolicyID": guid}]
        raise AssertionError(f"unexpected cmdlet {line}")


@pytest.fixture
def tenant() -> Tenant:
    return Tenant()


@pytest.fixture
async def exchange_api(settings: Settings, tenant: Tenant, store: Store) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, m365=M365Gateway(tenant), store=store)
    token = mint_local_token(settings, "vera.viewer@contoso.com", [Role.VIEWER])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://ckey.test",
        headers={"Authorization": f"Bearer {token}"},
    ) as http:
        yield http


async def sync(tenant: Tenant, store: Store) -> dict[str, int]:
    """Run the sync's activities (as ``inventory.sync`` does) against the scripted tenant."""
    activities = InventoryActivities(M365Gateway(tenant), store)
    env = ActivityEnvironment()
    step = SyncStepInput(operation_id="op-sync", started_at=datetime.now(UTC))
    deps = await env.run(activities.sync_deps, step)
    recipients = await env.run(activities.sync_recipients, step)
    statuses = await env.run(activities.sync_statuses, SyncStatusesInput(operation_id="op-sync", limit=100))
    return {"deps": deps.deps, "recipients": recipients.recipients, "statuses": statuses.statuses}


async def test_pages_answer_from_the_inventory_without_a_call_to_the_tenant(
    exchange_api: httpx.AsyncClient, tenant: Tenant, store: Store
) -> None:
    empty = (await exchange_api.get("/api/mailboxes")).json()
    assert (empty["total"], empty["as_of"]) == (0, None)  # never synced: says so, asks nobody
    assert [c.name for c in tenant.calls] == []
    assert await sync(tenant, store) == {"deps": 1, "recipients": 4, "statuses": 1}
    # The sync read statistics only for the mailbox with a DEP (alice); never a mail user's.
    assert [c.params.get("Identity") for c in tenant.calls if c.name == "Get-MailboxStatistics"] == ["alice"]
    tenant.calls.clear()

    answer = await exchange_api.get("/api/mailboxes")
    assert answer.status_code == 200, answer.text
    page = answer.json()
    assert page["total"] == 4 and page["as_of"] is not None
    items = {i["identity"]: i for i in page["items"]}
    adele = items["adele.braun"]
    assert (adele["recipient_type"], adele["dep"], adele["dep_guid"], adele["is_encrypted"], adele["note"]) == (
        "MailUser",
        "USA_mailboxes",
        USA_GUID,
        None,
        MAIL_USER_NOTE,
    )
    assert adele["status"] == ENCRYPTS_ON_MIGRATION
    assert (items["alice"]["dep"], items["alice"]["is_encrypted"]) == ("USA_mailboxes", True)
    assert items["bob"]["dep"] is None

    encrypted = (await exchange_api.get("/api/mailboxes", params={"encrypted": True})).json()
    assert [i["identity"] for i in encrypted["items"]] == ["alice"]
    for dep in ("usa_mailboxes", USA_GUID, USA_GUID.upper()):
        by_dep = (await exchange_api.get("/api/mailboxes", params={"dep": dep})).json()
        assert [i["identity"] for i in by_dep["items"]] == ["adele.braun", "alice"], dep
    unknown = await exchange_api.get("/api/mailboxes", params={"dep": "Nope"})
    assert unknown.status_code == 404 and unknown.json()["rule"] == "dep-exists", unknown.text
    deps = (await exchange_api.get("/api/deps")).json()
    assert [(d["name"], d["guid"]) for d in deps] == [("USA_mailboxes", USA_GUID)]
    shown = (await exchange_api.get("/api/mailboxes/ADELE.BRAUN")).json()
    assert (shown["recipient_type"], shown["is_encrypted"]) == ("MailUser", None)
    assert tenant.calls == []  # every read above came from SQL


async def test_refresh_reads_a_mail_user_and_a_mailbox_live_and_updates_the_inventory(
    exchange_api: httpx.AsyncClient, tenant: Tenant, store: Store
) -> None:
    shown = await exchange_api.get("/api/mailboxes/adele.braun")
    assert shown.status_code == 404 and shown.json()["rule"] == "recipient-exists"
    assert "refresh=true" in shown.json()["detail"]
    shown = await exchange_api.get("/api/mailboxes/adele.braun", params={"refresh": True})
    assert shown.status_code == 200, shown.text
    body = shown.json()
    assert (body["recipient_type"], body["dep"], body["dep_guid"], body["is_encrypted"]) == (
        "MailUser",
        "USA_mailboxes",
        USA_GUID,
        None,
    )
    assert body["note"] == MAIL_USER_NOTE
    alice = (await exchange_api.get("/api/mailboxes/alice", params={"refresh": True})).json()
    assert (alice["dep"], alice["is_encrypted"], alice["note"]) == ("USA_mailboxes", True, None)
    tenant.calls.clear()
    stored = (await exchange_api.get("/api/mailboxes/alice")).json()
    assert (stored["dep"], stored["is_encrypted"]) == ("USA_mailboxes", True) and tenant.calls == []


async def test_show_of_an_unknown_recipient_is_a_404_and_a_gateway_fault_a_502(exchange_api: httpx.AsyncClient) -> None:
    missing = await exchange_api.get("/api/mailboxes/nobody@contoso.com", params={"refresh": True})
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["rule"] == NOT_FOUND
    flaky = await exchange_api.get("/api/mailboxes/flaky", params={"refresh": True})
    assert flaky.status_code == 502 and flaky.json()["rule"] == "tenant-reachable"


@pytest.mark.parametrize(
    ("identity", "rule"),
    [
        ("a" * 321, "mailbox-identity-length"),
        ("alice%00@contoso.com", "no-control-characters"),
        ("alice%0A@contoso.com", "no-control-characters"),
        ("a%E2%80%A8b", "no-control-characters"),
        ("%20%20", "mailbox-identity"),
    ],
    ids=["overlong", "nul", "newline", "line-separator", "blank"],
)
async def test_show_refuses_a_broken_identity_with_a_422_before_any_call(
    exchange_api: httpx.AsyncClient, tenant: Tenant, identity: str, rule: str
) -> None:
    answer = await exchange_api.get(f"/api/mailboxes/{identity}")
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["rule"] == rule
    assert tenant.calls == []


async def test_the_longest_identity_is_still_asked(exchange_api: httpx.AsyncClient, tenant: Tenant) -> None:
    answer = await exchange_api.get("/api/mailboxes/" + "a" * 320, params={"refresh": True})
    assert answer.status_code == 404
    assert tenant.calls[0].params == {"Identity": "a" * 320}
