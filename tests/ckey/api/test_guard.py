"""The front door: authentication before any body is read, body limits enforced while the body streams."""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

import httpx
from fastapi import FastAPI
from temporalio.client import Client

from ckey.api.app import create_app
from ckey.config import Settings
from ckey.models import Role
from ckey.store import Store
from ckey.store.schema import TargetSetRow

Headers = Callable[..., dict[str, str]]
MiB = 1024 * 1024


class EndlessBody:
    """An ASGI ``receive`` that would stream ``total`` bytes in 1 MiB chunks, counting what the app pulls."""

    def __init__(self, total: int) -> None:
        self.total, self.pulled = total, 0

    async def __call__(self) -> dict[str, Any]:
        if self.pulled >= self.total:
            return {"type": "http.disconnect"}
        self.pulled += MiB
        return {"type": "http.request", "body": b"x" * MiB, "more_body": self.pulled < self.total}


async def _call(
    app: FastAPI,
    path: str,
    headers: dict[str, str],
    body: EndlessBody,
    declare: bool,
    content_type: str = "application/json",
) -> tuple[int, dict[str, str], bytes]:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    raw.append((b"content-type", content_type.encode()))
    if declare:
        raw.append((b"content-length", str(body.total).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": raw,
        "client": ("127.0.0.1", 1),
        "server": ("ckey.test", 80),
    }
    status, response_headers, chunks = 0, {}, []

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal status, response_headers
        if message["type"] == "http.response.start":
            status = message["status"]
            response_headers = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, body, send)
    return status, response_headers, b"".join(chunks)


async def test_unauthenticated_600_mb_body_is_refused_before_a_byte_is_read(
    client: Client, settings: Settings, store: Store
) -> None:
    app = create_app(settings, client=client, store=store)
    for path in ("/api/operations", "/api/uploads/mailboxes", "/api/operations/op-1/cancel"):
        for declare in (True, False):
            body = EndlessBody(600 * MiB)
            status, headers, content = await _call(app, path, {}, body, declare)
            assert status == 401 and headers["content-type"] == "application/problem+json"
            assert b"bearer-token-required" in content
            assert body.pulled == 0, f"{path} read {body.pulled} bytes before refusing"
        body = EndlessBody(600 * MiB)
        status, _, content = await _call(app, path, {"Authorization": "Bearer forged"}, body, False)
        assert (status, body.pulled) == (401, 0) and b"bearer-token-invalid" in content


async def test_a_body_over_the_limit_is_refused_while_it_streams(
    client: Client, settings: Settings, store: Store, token_for: Headers
) -> None:
    app = create_app(settings, client=client, store=store)
    operator = token_for("olga@contoso.com", Role.OPERATOR)
    limit = settings.api_max_body_bytes
    declared = EndlessBody(600 * MiB)
    status, _, content = await _call(app, "/api/operations", operator, declared, True)
    assert (status, declared.pulled) == (413, 0) and b'"body-size"' in content
    streamed = EndlessBody(600 * MiB)
    status, headers, content = await _call(app, "/api/operations", operator, streamed, False)
    assert status == 413 and headers["content-type"] == "application/problem+json" and b'"body-size"' in content
    assert streamed.pulled <= limit + MiB
    assert await store.list_operations() == []


async def test_an_upload_over_the_limit_is_refused_while_it_streams_and_stores_nothing(
    client: Client, settings: Settings, store: Store, token_for: Headers
) -> None:
    small = settings.model_copy(update={"upload_max_bytes": 4 * MiB})
    app = create_app(small, client=client, store=store)
    operator = token_for("olga@contoso.com", Role.OPERATOR)
    body = EndlessBody(400 * MiB)
    status, _, content = await _call(app, "/api/uploads/mailboxes", operator, body, False, "text/csv")
    assert status == 413 and b'"body-size"' in content
    assert body.pulled <= 4 * MiB + MiB
    async with store.session() as session:
        assert (await session.get(TargetSetRow, "any")) is None
        assert (await session.execute(TargetSetRow.__table__.select())).first() is None


async def test_an_upload_within_the_limit_is_stored(
    client: Client, settings: Settings, store: Store, token_for: Headers
) -> None:
    app = create_app(settings, client=client, store=store)
    rows = "Identity\n" + "".join(f"user{n}@contoso.com\n" for n in range(5000))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ckey.test") as http:
        response = await http.post(
            "/api/uploads/mailboxes",
            params={"name": "big.csv"},
            content=rows.encode(),
            headers={**token_for("olga@contoso.com", Role.OPERATOR), "Content-Type": "text/csv"},
        )
        assert response.status_code == 201, response.text
        assert response.json()["count"] == 5000
        for name in ("a\nb.csv", "../etc/passwd", "x" * 201):
            refused = await http.post(
                "/api/uploads/mailboxes",
                params={"name": name},
                content=b"Identity\na@contoso.com\n",
                headers={**token_for("olga@contoso.com", Role.OPERATOR), "Content-Type": "text/csv"},
            )
            assert refused.status_code == 422, (name, refused.text)
