"""The CLI shows what the API sends as written: never read as Rich markup."""

from __future__ import annotations

import httpx
import pytest
from typer.testing import CliRunner

from ckey import cli

HOSTILE = "a key URI looks like https://<vault>.vault.azure.net/keys/<name>[/<version>]: '[red]x[/red] [/bold]'"


def test_an_api_message_with_markup_is_printed_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/operations":
            return httpx.Response(
                200,
                json={
                    "total": 1,
                    "offset": 0,
                    "limit": 50,
                    "items": [
                        {
                            "id": "op-[/x]",
                            "kind": "[bold]k",
                            "state": "running",
                            "phase": "[/]",
                            "progress": {"done": 0, "total": None, "unit": "steps", "percent": None},
                            "started_by": "[red]mallory",
                            "started_at": "2026-12-01T00:00:00Z",
                        }
                    ],
                },
            )
        return httpx.Response(
            422, json={"status": 422, "rule": "key-uri-format", "detail": HOSTILE}, headers={"Content-Type": "x"}
        )

    monkeypatch.setattr(
        cli,
        "api_client",
        lambda settings=None: httpx.Client(transport=httpx.MockTransport(answer), base_url="http://t"),
    )
    runner = CliRunner()
    refused = runner.invoke(cli.app, ["ops", "show", "op-00000000-0000-4000-8000-000000000001"])
    assert refused.exit_code == 1, refused.output
    assert "[/<version>]" in refused.output and "[red]x[/red] [/bold]" in refused.output
    listed = runner.invoke(cli.app, ["ops", "list"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    assert "[red]mallory" in listed.output and "op-[/x]" in listed.output
