"""The demo tenant generator: recipients of mixed kinds and sizes, SharePoint geos with sites, Cloud PCs.

Deterministic for a given :class:`TenantSpec` (its ``seed``), so that a demo and a test see the same tenant. Every
mailbox and site gets its own key, wrapped by the Microsoft-managed DEP's key, and a few sample items encrypted under
it; nothing here calls Key Vault.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sandbox.m365 import keys
from sandbox.m365.core import Core
from sandbox.m365.db import CloudPcRow, GeoRow, MailboxRow, SiteRow
from sandbox.m365.durations import GB

_FIRST = (
    "adele", "alex", "allan", "bianca", "christie", "debra", "diego", "emily", "enrico", "grady", "henrietta", "isaiah",
    "johanna", "joni", "lee", "lidia", "lynne", "megan", "miriam", "nestor", "patti", "pradeep", "raul", "sanjay",
)  # fmt: skip
_LAST = (
    "vance", "wilber", "brown", "cline", "berg", "zrinski", "langer", "braun", "gibson", "lamb", "steiner", "sherman",
    "fernandez", "gonzalez", "holt", "kulkarni", "patel", "rivera", "schmidt", "tanaka", "varga", "wood", "young",
)  # fmt: skip
_SHARED = ("sales", "support", "finance", "hr", "legal", "marketing", "procurement", "facilities", "it", "press")
_SUBJECTS = ("Quarterly results", "Board minutes", "Customer contract", "Travel plans", "Salary review")
_REGION = {"NAM": "NAM", "EUR": "EUR", "APC": "APC", "GBR": "GBR", "CAN": "CAN", "AUS": "AUS", "JPN": "JPN"}


class TenantSpec(BaseModel):
    """What to generate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fqdn: str = "contoso.onmicrosoft.com"
    """The tenant's initial domain; its first label names the SharePoint hosts (``contoso-admin.sharepoint.com``)."""
    domain: str | None = None
    """The users' e-mail domain; default ``<first label>.com``."""
    geos: list[str] = Field(default_factory=lambda: ["NAM", "EUR"])
    """SharePoint geos; the first is the default geo (``<tenant>-admin.sharepoint.com``)."""
    mailboxes: int = Field(900, ge=0, le=100_000)
    """User and shared mailboxes."""
    shared_share: float = Field(0.05, ge=0, le=1)
    """Share of ``mailboxes`` that are shared mailboxes."""
    mail_users: int = Field(100, ge=0, le=100_000)
    """Mail users: on-premises mailboxes of a hybrid tenant, not migrated yet."""
    sites_per_geo: int = Field(40, ge=0, le=10_000)
    cloud_pcs: int = Field(8, ge=0, le=10_000)
    stuck_mailboxes: int = Field(3, ge=0)
    """Mailboxes whose moves never finish (to exercise the one-week escalation)."""
    items_per_mailbox: int = Field(3, ge=1, le=5)
    seed: int = 365

    @field_validator("geos")
    @classmethod
    def _geos(cls, value: list[str]) -> list[str]:
        geos = [g.strip().upper() for g in value if g.strip()]
        if not geos or len(set(geos)) != len(geos):
            raise ValueError("name one or more distinct geos (NAM, EUR ...)")
        return geos

    @property
    def tenant_name(self) -> str:
        """``contoso`` for ``contoso.onmicrosoft.com``."""
        return self.fqdn.split(".", 1)[0].lower()

    @property
    def mail_domain(self) -> str:
        """The users' e-mail domain."""
        return self.domain or f"{self.tenant_name}.com"


SMALL_TENANT = TenantSpec(mailboxes=12, mail_users=3, sites_per_geo=4, cloud_pcs=3, stuck_mailboxes=0)
"""A tenant small enough for a test."""
DEMO_TENANT = TenantSpec()
"""The tenant ``python -m sandbox.m365`` seeds into a new database: 1,000 recipients, 2 geos, 8 Cloud PCs."""
EMPTY_TENANT = TenantSpec(mailboxes=0, mail_users=0, sites_per_geo=0, cloud_pcs=0, stuck_mailboxes=0)
"""What a sandbox told to seed nothing starts with."""


def _size(rng: random.Random) -> int:
    # Most mailboxes are small, some medium, a few large: a first-time move takes from two hours to days.
    roll = rng.random()
    if roll < 0.6:
        gb = rng.uniform(0.05, 1.0)
    elif roll < 0.9:
        gb = rng.uniform(1.0, 10.0)
    else:
        gb = rng.uniform(10.0, 50.0)
    return int(gb * GB)


def _database(rng: random.Random, region: str) -> str:
    return f"{region}PR{rng.randint(1, 9):02d}DG{rng.randint(1, 999):03d}-db{rng.randint(1, 300):03d}"


def _names(count: int, rng: random.Random) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for _ in range(count):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        base = f"{first}.{last}"
        seen[base] = seen.get(base, 0) + 1
        alias = base if seen[base] == 1 else f"{base}{seen[base]}"
        out.append((alias, f"{first.title()} {last.title()}" + ("" if seen[base] == 1 else f" {seen[base]}")))
    return out


def generate(core: Core, spec: TenantSpec, now: float) -> tuple[dict[str, Any], list[Any]]:
    """The tenant's description and its rows (Microsoft-managed DEP, recipients, geos, sites, Cloud PCs).

    Args:
        core: for the key hierarchy.
        spec: what to generate.
        now: the sandbox clock.
    """
    rng = random.Random(spec.seed)
    default = core.new_default_dep(now)
    rows: list[Any] = [default]
    default_key = core.default_key(default)
    region = _REGION.get(spec.geos[0], spec.geos[0][:3])
    domain = spec.mail_domain

    def unit(guid: str, subjects: list[str]) -> tuple[bytes, list[dict[str, Any]]]:
        unit_key = keys.new_key()
        return core.wrap_unit_key(default_key, unit_key, guid, default.guid), keys.encrypt_items(
            unit_key, guid, subjects
        )

    shared = round(spec.mailboxes * spec.shared_share)
    users = spec.mailboxes - shared
    people = _names(users + spec.mail_users, rng)
    recipients: list[tuple[str, str, str]] = [(alias, display, "UserMailbox") for alias, display in people[:users]]
    recipients += [
        (f"{_SHARED[i % len(_SHARED)]}{'' if i < len(_SHARED) else i // len(_SHARED) + 1}", "", "SharedMailbox")
        for i in range(shared)
    ]
    recipients += [(alias, display, "MailUser") for alias, display in people[users:]]
    user_rows: list[MailboxRow] = []
    stuck_every = max(1, users // spec.stuck_mailboxes) if spec.stuck_mailboxes else 0
    for index, (alias, display, kind) in enumerate(recipients):
        guid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        subjects = rng.sample(_SUBJECTS, spec.items_per_mailbox)
        wrapped, items = unit(guid, subjects)
        row = MailboxRow(
            guid=guid,
            exchange_guid=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            name=alias,
            name_lower=alias.lower(),
            display_name=display or alias.title(),
            upn=f"{alias}@{domain}",
            upn_lower=f"{alias}@{domain}".lower(),
            recipient_type_details=kind,
            size_bytes=_size(rng),
            item_count=rng.randint(50, 40_000),
            database=_database(rng, region),
            created_at=now,
            stuck=bool(stuck_every) and kind == "UserMailbox" and index % stuck_every == stuck_every - 1,
            key_current=wrapped,
            key_current_dep=default.guid,
            items=items,
        )
        rows.append(row)
        if kind == "UserMailbox":
            user_rows.append(row)

    geos = []
    for position, geo in enumerate(spec.geos):
        suffix = "" if position == 0 else geo.lower()
        root = f"{spec.tenant_name}{suffix}.sharepoint.com"
        admin = f"{spec.tenant_name}{suffix}-admin.sharepoint.com"
        geos.append({"geo": geo, "admin_host": admin, "root_host": root, "default": position == 0})
        rows.append(
            GeoRow(geo=geo, admin_host=admin, root_host=root, is_default=position == 0, site_count=spec.sites_per_geo)
        )
        for idx in range(spec.sites_per_geo):
            url = f"https://{root}/sites/site-{idx + 1:03d}"
            wrapped, items = unit(url, [f"Document {idx + 1} of {geo}"])
            rows.append(
                SiteRow(geo=geo, idx=idx, url=url, key_current=wrapped, key_current_dep=default.guid, items=items)
            )

    for index in range(min(spec.cloud_pcs, len(user_rows)) if user_rows else spec.cloud_pcs):
        upn = user_rows[index].upn if user_rows else f"user{index}@{domain}"
        rows.append(
            CloudPcRow(
                id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                display_name=f"Cloud PC {index + 1} - {upn.split('@')[0]}",
                upn=upn,
                managed_device_name=f"CPC-{upn.split('@')[0][:5]}-{rng.randint(0, 0xFFFF):04X}",
                provisioned_at=now,
            )
        )
    tenant = {
        "fqdn": spec.fqdn,
        "name": spec.tenant_name,
        "domain": domain,
        "geos": geos,
        "default_dep": default.guid,
        "server": f"{region}PR01A001DC01.{region}PR01A001.PROD.OUTLOOK.COM",
        "spec": spec.model_dump(),
    }
    return tenant, rows
