"""Benchmark of the API's front door: its memory while hostile 400 MB bodies stream at it.

Serves the real API with uvicorn in a child process (its own SQLite store; the Temporal client is never reached by
these requests), then streams 400 MB at it three ways — unauthenticated to ``POST /api/operations``, authenticated
to ``POST /api/operations``, authenticated to ``POST /api/uploads/mailboxes`` — and prints each answer and the child's
resident memory before and after. Goal: growth under 50 MB. Asserts nothing. ``python -m bench.api_body_limits``.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from ckey.auth import mint_local_token
from ckey.config import load_settings
from ckey.models import Role

MiB = 1024 * 1024
ATTEMPT = 400 * MiB

SERVER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from typing import Any, cast
    import uvicorn
    from ckey.api.app import create_app
    from ckey.config import load_settings
    from ckey.store import Store
    from ckey.store.migrate import upgrade

    settings = load_settings(data_dir=Path(sys.argv[1]), api_port=int(sys.argv[2]), sandbox=True, _env_file=None)
    store = Store.from_url(settings.resolved_database_url)
    asyncio.run(upgrade(store.engine))
    store = Store.from_url(settings.resolved_database_url)
    app = create_app(settings, client=cast(Any, object()), store=store)
    uvicorn.run(app, host="127.0.0.1", port=settings.api_port, log_level="warning")
    """
)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _chunks() -> Iterator[bytes]:
    row = b"user@contoso.com\n" * (MiB // 17)
    sent = 0
    while sent < ATTEMPT:
        yield row
        sent += len(row)


def _attempt(url: str, path: str, headers: dict[str, str]) -> str:
    try:
        response = httpx.post(url + path, content=_chunks(), headers=headers, timeout=120)
    except httpx.HTTPError as exc:  # the server answered and closed while the client was still sending
        return f"connection closed by the server ({type(exc).__name__})"
    return f"{response.status_code} {response.json().get('rule')}"


def main() -> None:
    """Run the three attempts and print the figures."""
    data_dir = Path(tempfile.mkdtemp(prefix="ckey-bench-body-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = load_settings(data_dir=data_dir, api_port=port, _env_file=None)
    token = mint_local_token(settings, "olga@contoso.com", [Role.OPERATOR])
    child = subprocess.Popen([sys.executable, "-c", SERVER, str(data_dir), str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                httpx.get(url + "/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        for label, path, headers in (
            ("unauthenticated POST /api/operations", "/api/operations", {}),
            ("operator POST /api/operations", "/api/operations", {"Authorization": f"Bearer {token}"}),
            (
                "operator POST /api/uploads/mailboxes",
                "/api/uploads/mailboxes",
                {"Authorization": f"Bearer {token}", "Content-Type": "text/csv"},
            ),
        ):
            before = _rss_mib(child.pid)
            started = time.monotonic()
            answer = _attempt(url, path, headers)
            after = _rss_mib(child.pid)
            print(
                f"{label}, {ATTEMPT // MiB} MB attempt: {answer}; API RSS {before:.1f} -> {after:.1f} MiB "
                f"(+{after - before:.1f} MiB), {time.monotonic() - started:.1f} s"
            )
    finally:
        child.terminate()
        child.wait(timeout=10)


if __name__ == "__main__":
    main()
