"""Temporal wiring: the client factory and ckey's custom search attributes."""

from __future__ import annotations

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter

from ckey.config import Settings

KIND = SearchAttributeKey.for_keyword("CkeyKind")
"""The operation kind (``exchange.dep.assign``)."""
DEP = SearchAttributeKey.for_keyword("CkeyDep")
"""The DEP the operation concerns, when it concerns one."""
STATE = SearchAttributeKey.for_keyword("CkeyState")
"""The operation's :class:`~ckey.operations.OperationState`."""
STARTED_BY = SearchAttributeKey.for_keyword("CkeyStartedBy")
"""Who started the operation."""

SEARCH_ATTRIBUTES: tuple[SearchAttributeKey[str], ...] = (KIND, DEP, STATE, STARTED_BY)


def dev_server_search_attribute_args() -> list[str]:
    """``--search-attribute`` arguments that register ckey's attributes on ``temporal server start-dev``."""
    args: list[str] = []
    for key in SEARCH_ATTRIBUTES:
        args += ["--search-attribute", f"{key.name}=Keyword"]
    return args


async def connect(settings: Settings) -> Client:
    """A Temporal client for the configured server, with the pydantic data converter."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        tls=settings.temporal_tls,
        api_key=settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None,
    )


async def ensure_search_attributes(client: Client) -> list[str]:
    """Register any of ckey's search attributes the namespace lacks (a cluster, not only the dev server).

    Returns:
        The names that were added.
    """
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    missing = {
        key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
        for key in SEARCH_ATTRIBUTES
        if key.name not in listed.custom_attributes
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )
    return sorted(missing)
