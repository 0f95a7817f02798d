"""Infrastructure both sandboxes (Key Vault and the Microsoft 365 tenant) share.

Each sandbox subclasses these and adds its specifics (its port, its database file, its tables, its seeds):

* :class:`SandboxControlClient`: the async client of a sandbox's control endpoint (``/sandbox/...``).
* :func:`require_admin` and :data:`Admin`: the control endpoint's admin-only dependency.
* :class:`SandboxDatabase`: the engine and session factory of a sandbox's own database.
* :func:`uvicorn_config` and :class:`ThreadedServer`: serving a sandbox over TLS, in a thread for tests.
* :func:`sandbox_app`: the host-routed ASGI app whose lifespan starts and stops a sandbox.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, ClassVar, Protocol, Self

import httpx
import uvicorn
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from ckey.auth import AuthError, Principal, TokenVerifier, mint_local_token
from ckey.config import Settings
from ckey.models import Role
from ckey.store import create_engine
from sandbox.tls import client_ssl_context, ensure_server_cert, server_ssl_context

# Control endpoint: client -----------------------------------------------------------------------------------------


class SandboxControlError(Exception):
    """The control endpoint refused a request; ``status`` and ``body`` say why.

    Args:
        status: the HTTP status of the answer.
        body: the answer's JSON body (or its text when it was not JSON).
        label: what refused, at the start of the message.
    """

    def __init__(self, status: int, body: Any, label: str = "sandbox control") -> None:
        super().__init__(f"{label}: HTTP {status}: {body}")
        self.status = status
        self.body = body


class SandboxControlClient:
    """Async client of a sandbox's control endpoint (an async context manager).

    Subclasses name their sandbox's port (:meth:`port`) and add the endpoint's calls on top of :meth:`_call`.

    Args:
        base_url: ``https://localhost:<port>``.
        token: a bearer token of ckey's auth with the ``admin`` role.
        verify: the TLS context (or CA file) that trusts the local CA.
    """

    error_label: ClassVar[str] = "sandbox control"
    """The start of :class:`SandboxControlError` messages."""

    def __init__(self, base_url: str, token: str, verify: ssl.SSLContext | str) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/sandbox",
            headers={"Authorization": f"Bearer {token}"},
            verify=verify,
            timeout=60.0,
        )

    @classmethod
    def port(cls, settings: Settings) -> int:
        """The port the sandbox of ``settings`` listens on."""
        raise NotImplementedError

    @classmethod
    def from_settings(cls, settings: Settings, user: str = "sandbox-admin") -> Self:
        """A client for the sandbox of ``settings``, with a freshly minted local admin token."""
        token = mint_local_token(settings, user, [Role.ADMIN])
        return cls(f"https://localhost:{cls.port(settings)}", token, client_ssl_context(settings.resolved_ca_file))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._http.aclose()

    async def _call(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None) -> Any:
        response = await self._http.request(method, path, json=body, params=params)
        if response.status_code >= 400:
            try:
                detail: Any = response.json()
            except ValueError:
                detail = response.text
            raise SandboxControlError(response.status_code, detail, self.error_label)
        return response.json() if response.content else None

    async def health(self) -> bool:
        """Whether the sandbox answers its readiness probe."""
        return (await self._http.get("/health")).status_code == 200


# Control endpoint: server side --------------------------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False)


def require_admin(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    """The caller, who must present a valid token of ckey's auth with the ``admin`` role.

    The control app keeps its :class:`ckey.auth.TokenVerifier` in ``app.state.verifier``.

    Raises:
        HTTPException: 401 without a valid token, 403 without the ``admin`` role.
    """
    if credentials is None:
        raise HTTPException(401, "a bearer token of ckey's auth is required", {"WWW-Authenticate": "Bearer"})
    verifier: TokenVerifier = request.app.state.verifier
    try:
        principal = verifier.verify(credentials.credentials)
    except AuthError as exc:
        raise HTTPException(401, f"invalid token: {exc}", {"WWW-Authenticate": "Bearer"}) from None
    if not principal.has(Role.ADMIN):
        raise HTTPException(403, f"{principal.user} is not an admin")
    return principal


Admin = Annotated[Principal, Depends(require_admin)]
"""An endpoint parameter that requires an admin caller."""


# Database ---------------------------------------------------------------------------------------------------------


class SandboxDatabase:
    """The engine and session factory of a sandbox's database; subclasses name their tables (:attr:`metadata`).

    Args:
        url: SQLAlchemy async URL.
    """

    metadata: ClassVar[MetaData]
    """The sandbox's tables (its declarative base's ``metadata``)."""

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite") and ":memory:" not in url:
            Path(url.split("///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
        # ckey's engine factory: WAL and a busy timeout on SQLite, pre-ping elsewhere.
        self.engine: AsyncEngine = create_engine(url)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    async def create_all(self) -> None:
        """Create the tables that do not exist yet."""
        async with self.engine.begin() as conn:
            await conn.run_sync(self.metadata.create_all)

    async def drop_all(self) -> None:
        """Drop every table (a re-seed starts from nothing)."""
        async with self.engine.begin() as conn:
            await conn.run_sync(self.metadata.drop_all)

    def session(self) -> AsyncSession:
        """A new session (use as ``async with db.session() as s, s.begin(): ...``)."""
        return self.sessions()

    async def close(self) -> None:
        """Dispose of the engine."""
        await self.engine.dispose()


# Serving ----------------------------------------------------------------------------------------------------------


class Lifecycle(Protocol):
    """What :func:`sandbox_app` needs of a sandbox: starting (open the database, seed) and stopping."""

    async def start(self) -> None:
        """Get ready to serve."""

    async def stop(self) -> None:
        """Release what :meth:`start` took."""


def sandbox_app(sandbox: Lifecycle, routes: Sequence[BaseRoute]) -> Starlette:
    """The ASGI app serving ``routes``, whose lifespan starts and stops ``sandbox`` (kept in ``app.state.sandbox``)."""

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await sandbox.start()
        try:
            yield
        finally:
            await sandbox.stop()

    app = Starlette(routes=list(routes), lifespan=lifespan)
    app.state.sandbox = sandbox
    return app


def uvicorn_config(
    app: Starlette, settings: Settings, *, port: int, host: str = "127.0.0.1", log_level: str = "warning"
) -> uvicorn.Config:
    """A uvicorn configuration that serves ``app`` over TLS with the sandbox's server certificate."""
    cert = ensure_server_cert(settings.tls_dir)

    def tls(_config: uvicorn.Config, _default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        return server_ssl_context(cert)

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_context_factory=tls,
        lifespan="on",
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
    )


class ThreadedServer:
    """A sandbox app served in a background thread (its own event loop), for tests and embedding.

    Subclasses build the app and name the sandbox (:attr:`thread_name`, :attr:`title`).

    Args:
        settings: ckey's settings.
        app: the sandbox's ASGI app.
        port: the port to bind on ``127.0.0.1``.
    """

    thread_name: ClassVar[str] = "sandbox"
    """The serving thread's name."""
    title: ClassVar[str] = "the sandbox"
    """The sandbox in error messages (``the sandbox Key Vault``)."""
    start_hint: ClassVar[str] = ""
    """Appended to the message when the server thread died while starting (``; see its log``)."""

    def __init__(self, settings: Settings, app: Starlette, port: int) -> None:
        self.settings = settings
        self.app = app
        self.port = port
        self._server = uvicorn.Server(uvicorn_config(app, settings, port=port))
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The control endpoint's base URL."""
        return f"https://localhost:{self.port}"

    def start(self, timeout: float = 30.0) -> Self:
        """Start serving and wait until the server accepts connections.

        Raises:
            RuntimeError: the server did not start (port taken, database unreadable ...).
        """
        self._thread = threading.Thread(target=self._server.run, name=self.thread_name, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"{self.title} did not start on port {self.port}{self.start_hint}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.title} did not start within {timeout:g} s")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop serving and wait for the thread."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.stop()
