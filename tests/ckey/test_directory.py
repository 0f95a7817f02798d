"""The production Graph lookup of object ids: a UPN is one quoted path segment, or refused before any call."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast
from urllib.parse import unquote

import httpx
import pytest

from ckey.azure import AzureConnection
from ckey.keyvault import Directory, KeyVaultError

BOB_ID = "6f1b2c3d-0000-4000-8000-00000000b0b0"


class Graph:
    """Microsoft Graph as far as the lookup goes: records each requested raw path; knows bob and one app."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.tokens = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        raw = request.url.raw_path.decode("ascii")
        self.paths.append(raw)
        path, _, query = raw.partition("?")
        assert request.url.host == "graph.microsoft.com" and query == "%24select=id"
        known = {
            "/v1.0/users/bob%40contoso.com": BOB_ID,
            "/v1.0/servicePrincipals(appId='00000002-0000-0ff1-ce00-000000000000')": "exo-object-id",
        }
        if path in known:
            return httpx.Response(200, json={"id": known[path]})
        if path.startswith("/v1.0/users"):
            return httpx.Response(200, json={"id": "object-id-of:" + path})
        return httpx.Response(404, json={"error": {"code": "Request_ResourceNotFound"}})

    async def get_token(self, *scopes: str) -> Any:
        self.tokens += 1
        assert scopes == ("https://graph.microsoft.com/.default",)
        return SimpleNamespace(token="t")


@pytest.fixture
def graph() -> Graph:
    return Graph()


@pytest.fixture
def directory(graph: Graph) -> Directory:
    connection = SimpleNamespace(
        settings=SimpleNamespace(sandbox=False, azure_tenant_id="contoso"), credential=lambda: graph
    )
    return Directory(cast(AzureConnection, connection), transport=httpx.MockTransport(graph.handle))


async def test_a_normal_upn_and_an_application_id_are_looked_up(directory: Directory, graph: Graph) -> None:
    assert await directory.object_id("bob@contoso.com") == BOB_ID
    # uuid.UUID accepts braces; the path holds the normalised GUID only.
    assert await directory.object_id("{00000002-0000-0FF1-CE00-000000000000}") == "exo-object-id"
    assert graph.paths == [
        "/v1.0/users/bob%40contoso.com?%24select=id",
        "/v1.0/servicePrincipals(appId='00000002-0000-0ff1-ce00-000000000000')?%24select=id",
    ]


@pytest.mark.parametrize(
    "upn",
    [
        "x/../bob%40contoso.com#@contoso.com",
        "bob@contoso.com/manager",
        "bob@contoso.com?$select=passwordProfile",
        "bob@contoso.com#",
        "%2e%2e/bob@contoso.com",
        "bob%40contoso.com",
        "x\\..\\bob@contoso.com",
        "bob\x00@contoso.com",
        "bob\n@contoso.com",
        "bob @contoso.com",
        "bob\u2028@contoso.com",
        "..",
        ".",
        "",
    ],
)
async def test_a_hostile_upn_is_refused_before_any_call(directory: Directory, graph: Graph, upn: str) -> None:
    with pytest.raises(KeyVaultError) as refused:
        await directory.object_id(upn)
    assert (refused.value.status, refused.value.code) == (400, "upn-invalid")
    assert graph.paths == [] and graph.tokens == 0


@pytest.mark.parametrize(
    "upn",
    ["o'brien+tag@contoso.com", "a&b=c;d,e@contoso.com", "zoë.ñ@contoso.com", "(x)@contoso.com", "bob@contoso.com:8"],
)
async def test_any_other_upn_arrives_as_exactly_one_encoded_segment(
    directory: Directory, graph: Graph, upn: str
) -> None:
    await directory.object_id(upn)
    (raw,) = graph.paths
    path = raw.partition("?")[0]
    segments = path.split("/")
    assert segments[:3] == ["", "v1.0", "users"] and len(segments) == 4
    assert unquote(segments[3]) == upn
    assert all(c.isalnum() or c in "%-._~" for c in segments[3]), segments[3]


async def test_a_upn_starting_with_a_dollar_is_addressed_in_parentheses(directory: Directory, graph: Graph) -> None:
    await directory.object_id("$o'neil@contoso.com")
    assert graph.paths == ["/v1.0/users('%24o%27%27neil%40contoso.com')?%24select=id"]
