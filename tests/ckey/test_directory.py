"""The production Graph lookup of object ids: a UPN is one quoted path segment, or refused before any call."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace
from typing import Any, cast
from urllib.parse import unquote

import httpx
import pytest

from ckey.azure import AzureConnection
from ckey.keyvault import Directory, KeyVaultError, token_object_id

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


def _token(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2ln"


def test_the_object_id_ckey_acts_as_is_its_tokens_oid() -> None:
    assert token_object_id(_token({"oid": "0b0e-ckey", "appid": "x"})) == "0b0e-ckey"
    assert token_object_id(_token({"appid": "x"})) is None
    assert token_object_id("not-a-jwt") is None
    assert token_object_id("a.!!!.c") is None


async def test_describe_asks_graph_once_for_every_object_and_own_ids_come_from_the_token() -> None:
    calls: list[tuple[str, Any]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        body: Any = json.loads(request.content) if request.content else None
        calls.append((request.url.path, body))
        if request.url.path == "/v1.0/directoryObjects/getByIds":
            assert request.method == "POST" and body["types"] == ["user", "servicePrincipal", "group"]
            return httpx.Response(
                200,
                json={
                    "value": [
                        {"@odata.type": "#microsoft.graph.user", "id": "u1", "userPrincipalName": "bob@contoso.com"},
                        {
                            "@odata.type": "#microsoft.graph.servicePrincipal",
                            "id": "s1",
                            "appId": "00000002-0000-0ff1-ce00-000000000000",
                            "displayName": "Office 365 Exchange Online",
                        },
                    ]
                },
            )
        return httpx.Response(200, json={"id": "sp-of-client-id"})

    token = _token({"oid": "ckey-oid"})
    connection = SimpleNamespace(
        settings=SimpleNamespace(sandbox=False, azure_client_id="5a5a5a5a-0000-4000-8000-000000000001"),
        credential=lambda: SimpleNamespace(get_token=_async(SimpleNamespace(token=token))),
    )
    directory = Directory(cast(AzureConnection, connection), transport=httpx.MockTransport(handle))
    found = await directory.describe(["u1", "s1", "gone", "u1"])
    assert [call[0] for call in calls] == ["/v1.0/directoryObjects/getByIds"]
    assert sorted(calls[0][1]["ids"]) == ["gone", "s1", "u1"]
    assert (found["u1"].type, found["u1"].user_principal_name) == ("user", "bob@contoso.com")
    assert (found["s1"].type, found["s1"].app_id) == ("servicePrincipal", "00000002-0000-0ff1-ce00-000000000000")
    assert "gone" not in found
    assert await directory.own_object_ids() == {"ckey-oid", "sp-of-client-id"}
    assert await directory.own_object_ids() == {"ckey-oid", "sp-of-client-id"}
    assert len(calls) == 2  # computed once


def _async(value: Any) -> Any:
    async def get(*_: Any) -> Any:
        return value

    return get


async def test_a_graph_that_cannot_answer_leaves_the_access_view_readable() -> None:
    from ckey.keyvault import AccessPolicy, KeyVaultGateway

    class DownGraph:
        async def describe(self, ids: Any) -> Any:
            raise httpx.ConnectError("graph.microsoft.com unreachable")

        async def known_names(self) -> dict[str, str]:
            return {"exo-oid": "Office 365 Exchange Online"}

        async def own_object_ids(self) -> frozenset[str]:
            return frozenset({"ckey-oid"})

    gateway = cast(Any, KeyVaultGateway.__new__(KeyVaultGateway))
    gateway.directory = DownGraph()
    policies = [AccessPolicy(object_id=oid) for oid in ("exo-oid", "ckey-oid", "bob-oid")]
    await KeyVaultGateway._name_principals(gateway, policies)
    assert [(p.principal, p.microsoft_365, p.ckey) for p in policies] == [
        ("Office 365 Exchange Online", True, False),
        (None, False, True),
        (None, False, False),
    ]
