"""Unreadable request bodies: each host answers in its own service's shape (the body is read once, by one helper)."""

from __future__ import annotations

from ckey.config import Settings
from tests.sandbox.m365.conftest import EXO, GRAPH, M365, SPO_ADMIN, SUPPORT

JSON = {"Content-Type": "application/json"}


async def test_invoke_command_refuses_a_body_that_is_no_cmdlet_input(m365: M365, settings_m365: Settings) -> None:
    url = f"{EXO}/adminapi/beta/{settings_m365.azure_tenant_id}/InvokeCommand"
    not_json = await m365.request("POST", url, resource=EXO, data=b"{not json", headers=JSON)
    assert not_json.status == 400 and not_json.body["error"]["code"] == "BadRequest"
    assert not_json.body["error"]["message"].startswith("The request body isn't a valid CmdletInput: Expecting")
    a_list = await m365.request("POST", url, resource=EXO, json=[1, 2])
    assert a_list.status == 400 and "isn't a valid CmdletInput" in a_list.body["error"]["message"]
    no_name = await m365.request("POST", url, resource=EXO, json={"CmdletInput": {}})
    assert no_name.status == 400 and "CmdletName" in no_name.body["error"]["message"]
    spo = f"https://{SPO_ADMIN}/adminapi/InvokeCommand"
    spo_not_json = await m365.request("POST", spo, resource=f"https://{SPO_ADMIN}", data=b"[", headers=JSON)
    assert spo_not_json.status == 400 and "isn't a valid CmdletInput" in spo_not_json.body["error"]["message"]


async def test_graph_refuses_a_body_that_is_no_json_object(m365: M365) -> None:
    base = f"{GRAPH}/beta/deviceManagement/virtualEndpoint"
    settings = f"{base}/organizationSettings"
    not_json = await m365.request("PATCH", settings, resource=GRAPH, data=b"{", headers=JSON)
    assert not_json.status == 400 and not_json.body["error"]["code"] == "BadRequest"
    assert not_json.body["error"]["message"] == "The request body isn't valid JSON."
    a_list = await m365.request("POST", f"{base}/bulkActions", resource=GRAPH, json=[])
    assert a_list.status == 400 and a_list.body["error"]["message"] == "The request body must be a JSON object."
    assert "innerError" in a_list.body["error"]  # Graph's envelope
    # Without a token the body is not even read: 401 comes first.
    session = m365.connection.http_session()
    async with session.patch(settings, data=b"{", headers=JSON) as response:
        assert response.status == 401


async def test_the_support_desk_refuses_a_body_that_is_no_json_object(m365: M365) -> None:
    url = f"{SUPPORT}/providers/Microsoft.Support/supportTickets/bad-body"
    params = {"api-version": "2024-04-01"}
    not_json = await m365.request("PUT", url, resource=SUPPORT, data=b"nope", headers=JSON, params=params)
    assert not_json.status == 400 and not_json.body["error"] == {
        "code": "InvalidRequestContent",
        "message": "The request body isn't valid JSON.",
    }
    a_string = await m365.request("PUT", url, resource=SUPPORT, json="case", params=params)
    assert a_string.status == 400 and a_string.body["error"]["code"] == "InvalidRequestContent"
    # The api-version is checked before the body is read.
    unversioned = await m365.request("PUT", url, resource=SUPPORT, data=b"nope", headers=JSON)
    assert unversioned.status == 400 and unversioned.body["error"]["code"] == "MissingApiVersionParameter"
