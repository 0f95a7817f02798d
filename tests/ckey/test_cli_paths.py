"""The CLI as operators use it: one-line errors, durations in both forms, the seed's key list, short ids."""

from __future__ import annotations

import socket
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from typer.testing import CliRunner

from ckey import cli
from ckey.config import Settings
from ckey.models import parse_duration

KEYS = [
    "https://contoso-eastus-kv1.vault.azure.net/keys/exo-key-01",
    "https://contoso-westus-kv1.vault.azure.net/keys/exo-key-02",
]
IDS = [
    "op-1a2b3c4d-0000-4000-8000-000000000001",
    "op-1a2b3c4d-0000-4000-8000-000000000002",
    "op-9f8e7d6c-5b4a-4000-8000-000000000003",
]


def _op(op_id: str, state: str = "succeeded") -> dict[str, Any]:
    return {
        "id": op_id,
        "kind": "exchange.encryption.verify",
        "state": state,
        "phase": "following",
        "progress": {"done": 3, "total": 4, "unit": "mailboxes", "percent": 75.0},
        "started_by": "olga.operator@contoso.com",
        "started_at": "2026-12-01T04:19:36.123456Z",
        "error": None,
    }


class FakeApi:
    """``cli._call`` answered from a list of operations; records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, method: str, path: str, **kwargs: Any) -> Any:
        self.calls.append((method, path, kwargs))
        params = kwargs.get("params") or {}
        if (method, path) == ("GET", "/api/operations"):
            prefix = params.get("id_prefix")
            prefix = prefix if prefix is None or prefix.startswith("op-") else f"op-{prefix}"
            found = [_op(i) for i in IDS if prefix is None or i.startswith(prefix)]
            limit, offset = params.get("limit", 100), params.get("offset", 0)
            return {"items": found[offset : offset + limit], "total": len(found), "offset": offset, "limit": limit}
        if method == "GET" and path.startswith("/api/operations/op-"):
            if path.endswith("/events"):
                return []
            return _op(path.removeprefix("/api/operations/"))
        if (method, path) == ("POST", "/api/uploads/mailboxes"):
            kwargs["content"].read()
            return {"id": "ts-00000000-0000-4000-8000-000000000000", "count": 2}
        if method == "POST":
            return {"id": IDS[0], "state": "succeeded"}
        raise AssertionError(f"unexpected {method} {path}")


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    fake = FakeApi()
    monkeypatch.setattr(cli, "_call", fake)
    return fake


def _run(*args: str, columns: int = 80) -> Any:
    return CliRunner().invoke(cli.app, list(args), env={"COLUMNS": str(columns)})


def _one_line_error(result: Any, code: int) -> str:
    assert result.exit_code == code, (result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return str(lines[0])


# --file and --mailbox -----------------------------------------------------------------------------------------------


def test_a_missing_file_is_a_one_line_error(api: FakeApi, tmp_path: Path) -> None:
    missing = tmp_path / "nobody.csv"
    line = _one_line_error(_run("mailbox", "assign", "--dep", "USA_mailboxes", "--file", str(missing)), 2)
    assert line.startswith(f"cannot read --file {missing}") and "No such file" in line
    assert api.calls == []


def test_mailbox_with_file_is_refused_never_dropped(api: FakeApi, tmp_path: Path) -> None:
    listed = tmp_path / "m.csv"
    listed.write_text("alice@contoso.com\n")
    args = ("--dep", "USA_mailboxes", "--file", str(listed), "--mailbox", "bob@contoso.com", "--no-watch")
    for command in ("assign", "verify"):
        line = _one_line_error(_run("mailbox", command, *args), 2)
        assert "--mailbox or --file, not both" in line
    assert api.calls == []


def test_a_file_is_uploaded_and_named_by_id(api: FakeApi, tmp_path: Path) -> None:
    listed = tmp_path / "m.csv"
    listed.write_text("Identity;Name\nalice@contoso.com;A\nbob@contoso.com;B\n")
    result = _run("mailbox", "assign", "--dep", "USA_mailboxes", "--file", str(listed), "--no-watch")
    assert result.exit_code == 0, result.output
    (_, _, upload), (_, _, start) = api.calls
    assert upload["headers"] == {"Content-Type": "text/csv"} and upload["params"] == {"name": "m.csv"}
    assert start["json"]["params"]["mailbox_file"] == "ts-00000000-0000-4000-8000-000000000000"


# Durations and key lists --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", timedelta(days=7)),
        ("P7D", timedelta(days=7)),
        ("PT15M", timedelta(minutes=15)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("P1DT12H", timedelta(days=1, hours=12)),
        ("90s", timedelta(seconds=90)),
        ("500ms", timedelta(milliseconds=500)),
        ("1.5", timedelta(seconds=1.5)),
    ],
)
def test_durations_read_both_forms(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "P", "PT", "P1Y", "P1M", "7x", "-1d", "-1", "nan", "1d-2h", "P1DT"])
def test_durations_refuse_what_they_cannot_read(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|negative"):
        parse_duration(text)


@pytest.mark.parametrize("ttl", ["P7D", "7d"])
def test_token_lifetimes_take_iso_8601_and_the_short_form(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, ttl: str
) -> None:
    monkeypatch.setattr(cli, "_settings", lambda: settings)
    result = _run("token", "--user", "olga@contoso.com", "--role", "operator", "--ttl", ttl)
    assert result.exit_code == 0, result.output
    claims = jwt.decode(result.output.strip(), options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 7 * 86400
    bad = _run("token", "--user", "olga@contoso.com", "--role", "operator", "--ttl", "a week")
    assert "--ttl: 'a week' is not a duration" in _one_line_error(bad, 2)


def test_duration_params_are_sent_in_iso_8601() -> None:
    schema = {
        "properties": {
            "after": {"type": "string", "format": "duration"},
            "every": {"anyOf": [{"type": "string", "format": "duration"}, {"type": "null"}]},
        }
    }
    assert cli.typed_params(["after=7d", "every=PT15M"], schema) == {"after": "P7D", "every": "PT15M"}
    with pytest.raises(ValueError, match="after: 'soon' is not a duration"):
        cli.typed_params(["after=soon"], schema)


def test_watch_takes_a_duration(api: FakeApi) -> None:
    for interval in ("PT0.5S", "500ms", "0.5"):
        result = _run("ops", "watch", IDS[2], "--interval", interval)
        assert result.exit_code == 0, result.output


def test_two_key_uris_in_the_seeds_comma_form(api: FakeApi) -> None:
    for args in (
        ["--azure-key-ids", f"{KEYS[0]}, {KEYS[1]}"],
        ["--azure-key-ids", f"{KEYS[0]},{KEYS[1]}"],
        ["--key", KEYS[0], "--key", KEYS[1]],
    ):
        api.calls.clear()
        result = _run("dep", "new", "USA_mailboxes", *args, "--no-watch")
        assert result.exit_code == 0, result.output
        assert api.calls[-1][2]["json"]["params"]["azure_key_ids"] == KEYS


def test_array_params_take_the_comma_form(api: FakeApi) -> None:
    schema = {"properties": {"azure_key_ids": {"type": "array", "items": {"type": "string"}}}}
    assert cli.typed_params([f"azure_key_ids={KEYS[0]}, {KEYS[1]}"], schema) == {"azure_key_ids": KEYS}


# Short ids ----------------------------------------------------------------------------------------------------------


def test_ops_list_fits_80_columns_with_short_ids(api: FakeApi) -> None:
    result = _run("ops", "list", "--limit", "2", columns=80)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80, result.output
    assert sum("1a2b3c4d" in line for line in lines) == 2 and IDS[0] not in result.output
    assert "1-2 of 3" in result.output


def test_a_unique_prefix_names_the_operation(api: FakeApi) -> None:
    for given in ("9f8e7d6c", "op-9f8e", "9F8E7D6C"):
        api.calls.clear()
        result = _run("ops", "show", given, columns=200)
        assert result.exit_code == 0, result.output
        assert ("GET", f"/api/operations/{IDS[2]}") in [(m, p) for m, p, _ in api.calls]
    api.calls.clear()
    assert _run("ops", "show", IDS[2]).exit_code == 0
    assert [p for _, p, _ in api.calls] == [f"/api/operations/{IDS[2]}", f"/api/operations/{IDS[2]}/events"]


def test_an_ambiguous_or_unknown_prefix_is_a_clear_error(api: FakeApi) -> None:
    for command in (["show"], ["watch"], ["cancel"], ["close", "--reason", "r"]):
        ambiguous = _one_line_error(_run("ops", command[0], "1a2b3c4d", *command[1:], columns=300), 2)
        assert "1a2b3c4d is ambiguous" in ambiguous and IDS[0] in ambiguous and IDS[1] in ambiguous
        unknown = _one_line_error(_run("ops", command[0], "0123abcd", *command[1:]), 1)
        assert unknown == "no operation 0123abcd"
    assert "not an operation id" in _one_line_error(_run("ops", "show", "op_[x]"), 2)


def test_op_start_is_ops_start(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, str]] = []

    def fake(method: str, path: str, **kwargs: Any) -> Any:
        seen.append((method, path))
        if path == "/api/operations/kinds":
            return [{"kind": "keyvault.health", "params_schema": {"properties": {}}}]
        return {"id": IDS[0]}

    monkeypatch.setattr(cli, "_call", fake)
    result = _run("op", "start", "keyvault.health", "--no-watch")
    assert result.exit_code == 0, result.output
    assert seen == [("GET", "/api/operations/kinds"), ("POST", "/api/operations")]


# Server messages ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "shown"),
    [
        (httpx.Response(502, text="<html>\n<h1>Bad Gateway</h1>\n</html>"), "502: <html> <h1>Bad Gateway</h1> </html>"),
        (httpx.Response(500, json=["boom", {"x": 1}]), '500: ["boom",{"x":1}]'),
        (httpx.Response(422, json={"detail": [{"loc": ["a"], "msg": "m"}]}), '422: [{"loc": ["a"], "msg": "m"}]'),
        (httpx.Response(403, json={"title": "Forbidden [/x]"}), "403: Forbidden [/x]"),
        (httpx.Response(404, text=""), "404: Not Found"),
        (httpx.Response(200, text="<html>proxy login</html>"), "not JSON: '<html>proxy login</html>'"),
    ],
)
def test_any_server_answer_is_one_line(monkeypatch: pytest.MonkeyPatch, response: httpx.Response, shown: str) -> None:
    monkeypatch.setattr(
        cli,
        "api_client",
        lambda settings=None: httpx.Client(
            transport=httpx.MockTransport(lambda request: response), base_url="http://ckey.test"
        ),
    )
    line = _one_line_error(_run("ops", "show", IDS[0], columns=300), 1)
    assert shown in line


def test_connection_refused_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(cli, "api_client", lambda settings=None: httpx.Client(base_url=f"http://127.0.0.1:{port}"))
    line = _one_line_error(_run("ops", "list"), 1)
    assert line.startswith(f"cannot reach the API at http://127.0.0.1:{port}")


def test_watch_shows_assigned_beside_the_bar(api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    answered = _op(IDS[2])
    answered["progress"] = {"done": 0, "total": 4, "unit": "mailboxes encrypted", "assigned": 3, "percent": 0.0}
    monkeypatch.setattr(cli, "_call", lambda method, path, **kwargs: answered)
    result = _run("ops", "watch", IDS[2], "--interval", "0.1", columns=120)
    assert result.exit_code == 0, result.output
    assert "following · 3 assigned (mailboxes encrypted)" in result.output
