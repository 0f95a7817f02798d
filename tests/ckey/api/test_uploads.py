"""``/api/uploads/mailboxes`` as operators use it: CSV bodies and forms, every identity checked, lines named."""

from __future__ import annotations

from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from ckey.api.app import create_app
from ckey.auth import mint_local_token
from ckey.config import Settings
from ckey.models import Role
from ckey.store import Store
from ckey.store.schema import TargetSetRow

MiB = 1024 * 1024


@pytest.fixture
def app(settings: Settings, store: Store) -> FastAPI:
    # Uploads touch only the store: no Temporal client is needed.
    return create_app(settings, client=None, store=store)


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ckey.test") as client:
        yield client


@pytest.fixture
def olga(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_local_token(settings, 'olga@contoso.com', [Role.OPERATOR])}"}


@pytest.fixture
def victor(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_local_token(settings, 'victor@contoso.com', [Role.VIEWER])}"}


async def _stored_sets(store: Store) -> int:
    async with store.session() as session:
        return len((await session.execute(TargetSetRow.__table__.select())).all())


async def test_a_form_upload_stores_the_file_not_the_multipart_envelope(
    http: httpx.AsyncClient, olga: dict[str, str], victor: dict[str, str]
) -> None:
    # What `curl -F file=@mailboxes.csv` sends: the boundary and part headers were stored as mailbox names before.
    csv = b"Identity\r\nalice@contoso.com\r\nbob@contoso.com\r\n"
    answer = await http.post(
        "/api/uploads/mailboxes", files={"file": ("mailboxes.csv", csv, "application/octet-stream")}, headers=olga
    )
    assert answer.status_code == 201, answer.text
    stored = answer.json()
    assert (stored["count"], stored["source"], stored["created_by"]) == (2, "mailboxes.csv", "olga@contoso.com")
    shown = await http.get(f"/api/uploads/{stored['id']}", headers=victor)
    assert shown.status_code == 200, shown.text
    view = shown.json()
    assert view["identities"] == ["alice@contoso.com", "bob@contoso.com"] and view["more"] is False
    assert {k: view[k] for k in stored} == stored


async def test_semicolon_separated_rows_are_split(http: httpx.AsyncClient, olga: dict[str, str]) -> None:
    body = b"DisplayName;PrimarySmtpAddress\nAlice Smith;alice@contoso.com\nBob;bob@contoso.com\n"
    answer = await http.post("/api/uploads/mailboxes", content=body, headers=olga | {"Content-Type": "text/csv"})
    assert answer.status_code == 201, answer.text
    shown = (await http.get(f"/api/uploads/{answer.json()['id']}", headers=olga)).json()
    assert shown["identities"] == ["alice@contoso.com", "bob@contoso.com"]
    assert shown["source"] == "upload.csv"


async def test_rows_without_a_valid_identity_are_named_by_line_and_nothing_is_stored(
    http: httpx.AsyncClient, olga: dict[str, str], store: Store
) -> None:
    body = b'Identity\nalice@contoso.com\nnot an email!!\n\n"[""x@contoso.com""]"\nbob@contoso.com\n'
    answer = await http.post("/api/uploads/mailboxes", content=body, headers=olga | {"Content-Type": "text/csv"})
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert problem["rule"] == "mailbox-identity-format"
    assert problem["rejected_lines"] == [3, 5]
    assert [e["loc"] for e in problem["errors"]] == [["body", "line", 3], ["body", "line", 5]]
    assert "line 3: " in problem["detail"] and "'not an email!!'" in problem["detail"]
    assert await _stored_sets(store) == 0


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b'["alice@contoso.com", "bob@contoso.com"]'),
        ("application/x-www-form-urlencoded", b"alice@contoso.com"),
        ("text/plain", b"alice@contoso.com\n"),
        (None, b"alice@contoso.com\n"),
    ],
)
async def test_other_content_types_are_refused_with_415(
    http: httpx.AsyncClient, olga: dict[str, str], store: Store, content_type: str | None, body: bytes
) -> None:
    headers = olga | ({"Content-Type": content_type} if content_type else {})
    answer = await http.post("/api/uploads/mailboxes", content=body, headers=headers)
    assert answer.status_code == 415, answer.text
    assert answer.json()["rule"] == "upload-content-type"
    assert await _stored_sets(store) == 0


async def test_a_json_array_sent_as_csv_is_refused(http: httpx.AsyncClient, olga: dict[str, str]) -> None:
    body = b'["alice@contoso.com", "bob@contoso.com"]'
    answer = await http.post("/api/uploads/mailboxes", content=body, headers=olga | {"Content-Type": "text/csv"})
    assert answer.status_code == 422 and answer.json()["rejected_lines"] == [1], answer.text
    assert "header names the identity column" in answer.json()["detail"]


async def test_a_form_without_the_file_field_or_with_only_a_header_is_refused(
    http: httpx.AsyncClient, olga: dict[str, str]
) -> None:
    wrong = await http.post("/api/uploads/mailboxes", files={"upload": ("m.csv", b"a@contoso.com\n")}, headers=olga)
    assert wrong.status_code == 422 and "'file'" in wrong.json()["detail"], wrong.text
    empty = await http.post("/api/uploads/mailboxes", files={"file": ("m.csv", b"Identity\n\n")}, headers=olga)
    assert empty.status_code == 422 and empty.json()["detail"] == "the file names no mailboxes", empty.text


async def test_an_unknown_upload_is_404(http: httpx.AsyncClient, victor: dict[str, str]) -> None:
    answer = await http.get("/api/uploads/ts-nothing", headers=victor)
    assert answer.status_code == 404 and answer.json()["rule"] == "mailbox-file-exists"


async def test_an_upload_shows_its_first_identities_only(http: httpx.AsyncClient, olga: dict[str, str]) -> None:
    body = "".join(f"user{n}@contoso.com\n" for n in range(50)).encode()
    stored = (
        await http.post("/api/uploads/mailboxes", content=body, headers=olga | {"Content-Type": "text/csv"})
    ).json()
    view = (await http.get(f"/api/uploads/{stored['id']}", params={"limit": 3}, headers=olga)).json()
    assert view["count"] == 50 and view["more"] is True
    assert view["identities"] == ["user0@contoso.com", "user1@contoso.com", "user2@contoso.com"]


def test_the_openapi_document_describes_both_bodies(app: FastAPI) -> None:
    body = app.openapi()["paths"]["/api/uploads/mailboxes"]["post"]["requestBody"]
    form = body["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["file"]["format"] == "binary" and form["required"] == ["file"]
    assert "text/csv" in body["content"]
    assert "/api/uploads/{upload_id}" in app.openapi()["paths"]


class _EndlessForm:
    """An ASGI ``receive`` streaming one multipart file part that never ends, counting the bytes pulled."""

    def __init__(self) -> None:
        self.pulled = 0
        self.head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="m.csv"\r\n\r\n'

    async def __call__(self) -> dict[str, Any]:
        chunk = self.head if self.pulled == 0 else b"a@contoso.com\r\n" * (MiB // 15)
        self.pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": self.pulled < 400 * MiB}


async def test_a_form_over_the_limit_is_refused_while_it_streams(
    settings: Settings, store: Store, olga: dict[str, str]
) -> None:
    app = create_app(settings.model_copy(update={"upload_max_bytes": 2 * MiB}), client=None, store=store)
    headers = [(k.lower().encode(), v.encode()) for k, v in olga.items()]
    headers.append((b"content-type", b"multipart/form-data; boundary=b"))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/uploads/mailboxes",
        "raw_path": b"/api/uploads/mailboxes",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("ckey.test", 80),
    }
    status, sent = 0, b""

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal status, sent
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            sent += message.get("body", b"")

    body = _EndlessForm()
    await app(scope, body, send)
    assert status == 413 and b'"body-size"' in sent
    assert body.pulled <= 3 * MiB
    assert await _stored_sets(store) == 0
