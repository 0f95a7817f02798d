"""Data encryption policies shared by Exchange (mailbox DEPs) and the multi-workload cmdlets.

Creation follows the seed's rules, all checked before anything is stored: a name without spaces, unique in its
kind; exactly two key URIs in two different vaults; at most :data:`~sandbox.m365.durations.MAX_DEPS` DEPs; both keys
reachable by the workload's service principal with get, wrapKey and unwrapKey, enabled, RSA 2048+, with soft delete
and purge protection (checked through Key Vault, where the DEP key is wrapped for real).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from sandbox.m365.clock import iso
from sandbox.m365.core import Core
from sandbox.m365.db import DepRow
from sandbox.m365.durations import MAX_DEPS
from sandbox.m365.errors import ALREADY_EXISTS, VALIDATION, CmdletFailure, not_found
from sandbox.vocabulary import KeyUri, KeyUriError, Workload

_NAME_MAX = 64
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def check_name(name: str, exception_type: str = VALIDATION) -> str:
    """The seed's rule: names can't contain spaces.

    Raises:
        CmdletFailure: the name is empty, has white space, or is too long.
    """
    if not name.strip():
        raise CmdletFailure("A data encryption policy needs a name.", exception_type)
    if re.search(r"\s", name):
        raise CmdletFailure(
            f"The name '{name}' isn't valid: data encryption policy names can't contain spaces (for example, "
            f"USA_mailboxes).",
            exception_type,
        )
    if len(name) > _NAME_MAX:
        raise CmdletFailure(f"Data encryption policy names are at most {_NAME_MAX} characters.", exception_type)
    return name


async def find(session: AsyncSession, kind: Workload, identity: str) -> DepRow | None:
    """A live customer DEP of ``kind`` by name (case-insensitive) or GUID."""
    ident = identity.strip()
    query = select(DepRow).where(DepRow.kind == kind.value, DepRow.is_default.is_(False), DepRow.deleted_at.is_(None))
    if _GUID.match(ident):
        query = query.where(DepRow.guid == ident.lower())
    else:
        query = query.where(DepRow.name_lower == ident.lower())
    return (await session.scalars(query)).first()


async def require(session: AsyncSession, core: Core, kind: Workload, identity: str) -> DepRow:
    """:func:`find`, or Exchange's "couldn't be found".

    Raises:
        CmdletFailure: no such DEP.
    """
    dep = await find(session, kind, identity)
    if dep is None:
        raise not_found(identity, core.server)
    return dep


async def live(session: AsyncSession, kind: Workload) -> list[DepRow]:
    """The live customer DEPs of ``kind``, oldest first."""
    query = (
        select(DepRow)
        .where(DepRow.kind == kind.value, DepRow.is_default.is_(False), DepRow.deleted_at.is_(None))
        .order_by(DepRow.created_at, DepRow.name_lower)
    )
    return list((await session.scalars(query)).all())


async def create(core: Core, kind: Workload, name: str, key_ids: list[str] | None, description: str | None) -> DepRow:
    """Create a DEP after every rule holds (nothing is stored otherwise).

    Raises:
        CmdletFailure: a rule is broken.
    """
    check_name(name)
    uris = check_two_keys(key_ids, VALIDATION)
    async with core.db.session() as s:
        if await find(s, kind, name) is not None:
            raise CmdletFailure(f"A data encryption policy named '{name}' already exists.", ALREADY_EXISTS)
        count = await s.scalar(
            select(func.count())
            .select_from(DepRow)
            .where(DepRow.kind == kind.value, DepRow.is_default.is_(False), DepRow.deleted_at.is_(None))
        )
        if (count or 0) >= MAX_DEPS:
            raise CmdletFailure(
                f"The tenant already has the maximum of {MAX_DEPS} data encryption policies. Remove one before you "
                f"create another.",
                VALIDATION,
            )
    material = await core.new_dep_key(uris, kind, VALIDATION)
    now = core.now()
    dep = DepRow(
        guid=str(uuid.uuid4()),
        kind=kind.value,
        name=name,
        name_lower=name.lower(),
        description=description,
        azure_key_ids=[str(u) for u in uris],
        created_at=now,
        changed_at=now,
    )
    core.store_new_dep_key(dep, material)
    async with core.db.session() as s, s.begin():
        # Checked again after the Key Vault round trips: two identical requests must never both create.
        if await find(s, kind, name) is not None:
            raise CmdletFailure(f"A data encryption policy named '{name}' already exists.", ALREADY_EXISTS)
        s.add(dep)
    return dep


def to_object(dep: DepRow) -> dict[str, Any]:
    """Get-DataEncryptionPolicy's (and Get-M365DataAtRestEncryptionPolicy's) output object."""
    return {
        "Name": dep.name,
        "Identity": dep.name,
        "Id": dep.name,
        "Guid": dep.guid,
        "ExchangeObjectId": dep.guid,
        "Description": dep.description,
        "AzureKeyIDs": list(dep.azure_key_ids),
        "Enabled": dep.enabled,
        "State": "Enabled" if dep.enabled else "Disabled",
        "IsDefault": False,
        "PermanentDataPurgeRequested": dep.purge_requested,
        "PermanentDataPurgeReason": dep.purge_reason,
        "PermanentDataPurgeContact": dep.purge_contact,
        "LastRefreshedDateTime": iso(dep.refreshed_at),
        "WhenCreated": iso(dep.created_at),
        "WhenCreatedUTC": iso(dep.created_at),
        "WhenChanged": iso(dep.changed_at),
        "WhenChangedUTC": iso(dep.changed_at),
        "IsValid": True,
        "ObjectState": "Unchanged",
    }


def parse_key_uri(text: str, exception_type: str) -> KeyUri:
    """A key URI from a cmdlet's parameter.

    Raises:
        CmdletFailure: not a Key Vault key URI.
    """
    try:
        return KeyUri.parse(text)
    except KeyUriError:
        raise CmdletFailure(
            f"'{text}' isn't a valid Azure Key Vault key URI. A key URI looks like "
            f"https://<vault>.vault.azure.net/keys/<key name>[/<key version>].",
            exception_type,
        ) from None


def check_two_keys(texts: Sequence[str] | None, exception_type: str) -> list[KeyUri]:
    """The seed's rule: exactly two keys, in two different vaults.

    Raises:
        CmdletFailure: not two keys, or both in one vault.
    """
    texts = list(texts or [])
    if len(texts) != 2:
        raise CmdletFailure(
            f"AzureKeyIDs must name exactly two Azure Key Vault keys, in two different key vaults; {len(texts)} given.",
            exception_type,
        )
    uris = [parse_key_uri(t, exception_type) for t in texts]
    if uris[0].vault.lower() == uris[1].vault.lower():
        raise CmdletFailure(
            f"The two keys of a data encryption policy must be in two different Azure Key Vaults; both are in "
            f"'{uris[0].vault}'.",
            exception_type,
        )
    return uris
