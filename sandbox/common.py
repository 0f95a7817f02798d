"""Infrastructure both sandboxes (Key Vault and the Microsoft 365 tenant) share.

Each sandbox subclasses these and adds its specifics (its port, its database file, its tables, its seeds):

* :class:`SandboxControlClient`: the async client of a sandbox's control endpoint (``/sandbox/...``).
* :func:`require_admin` and :data:`Admin`: the control endpoint's admin-only dependency.
* :class:`SandboxDatabase`: the engine and session factory of a sandbox's own database.
* :func:`uvicorn_config` and :class:`ThreadedServer`: serving a sandbox over TLS, in a thread for tests.
* :func:`sandbox_app`: the host-routed ASGI app whose lifespan starts and stops a sandbox.
"""

from __future__ import annotations

import os
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Protocol, Self

import httpx
import jwt
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import MetaData, event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from ckey.config import Settings
from sandbox.tls import client_ssl_context, ensure_server_cert, server_ssl_context

ADMIN_ROLE = "admin"
"""The role claim value the control endpoint requires (the local stack's tokens carry plain role names)."""

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


SERVER_KEEP_ALIVE = 120
"""Seconds a sandbox server keeps an idle client connection open."""


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
            # Idle connections are dropped well before the server would close them, so that none is reused as it
            # closes (the race answers "Server disconnected without sending a response").
            limits=httpx.Limits(keepalive_expiry=SERVER_KEEP_ALIVE / 4),
        )

    @classmethod
    def port(cls, settings: Settings) -> int:
        """The port the sandbox of ``settings`` listens on."""
        raise NotImplementedError

    @classmethod
    def from_settings(cls, settings: Settings, user: str = "sandbox-admin") -> Self:
        """A client for the sandbox of ``settings``, with a freshly minted local admin token."""
        token = admin_token(settings, user)
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
#
# The control endpoint takes the local stack's bearer tokens (Ed25519, the key in the data dir that `ckey token`
# signs with). It checks them with its own few lines of PyJWT rather than with ckey's auth module: a stand-in that
# borrowed the product's code could not catch the product's bugs.


def _signing_key(settings: Settings) -> Ed25519PrivateKey:
    """The local stack's token-signing key (created 0600 if nobody has yet, as ``ckey token`` would)."""
    path = settings.signing_key_path
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
                out.write(pem)
            return key
        except FileExistsError:  # another process made it first: use that one
            pass
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return loaded


def admin_token(settings: Settings, user: str = "sandbox-admin", ttl: timedelta = timedelta(hours=12)) -> str:
    """A bearer token with the ``admin`` role for a sandbox's control endpoint, signed with the local stack's key."""
    now = datetime.now(UTC)
    claims = {
        "iss": settings.local_issuer,
        "aud": settings.audience,
        "sub": user,
        settings.user_claim: user,
        settings.roles_claim: [ADMIN_ROLE],
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
    }
    return jwt.encode(claims, _signing_key(settings), algorithm="EdDSA")


class AdminTokens:
    """Checks control-endpoint tokens: the local stack's signature, issuer, audience, expiry, the ``admin`` role."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.public_key = _signing_key(settings).public_key()

    def user(self, token: str) -> str:
        """The admin behind ``token``.

        Raises:
            HTTPException: 401 for a token that is not valid, 403 for one without the ``admin`` role.
        """
        s = self.settings
        try:
            claims = jwt.decode(
                token,
                self.public_key,
                algorithms=["EdDSA"],
                audience=s.audience,
                issuer=s.local_issuer,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise HTTPException(401, f"invalid token: {exc}", {"WWW-Authenticate": "Bearer"}) from None
        user = str(claims.get(s.user_claim) or claims["sub"])
        roles = claims.get(s.roles_claim, [])
        if ADMIN_ROLE not in (roles if isinstance(roles, list) else [roles]):
            raise HTTPException(403, f"{user} is not an admin")
        return user


_bearer = HTTPBearer(auto_error=False)


def require_admin(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> str:
    """The caller, who must present a valid local-stack token with the ``admin`` role.

    The control app keeps its :class:`AdminTokens` in ``app.state.verifier``.

    Raises:
        HTTPException: 401 without a valid token, 403 without the ``admin`` role.
    """
    if credentials is None:
        raise HTTPException(401, "a bearer token of the local stack is required", {"WWW-Authenticate": "Bearer"})
    verifier: AdminTokens = request.app.state.verifier
    return verifier.user(credentials.credentials)


Admin = Annotated[str, Depends(require_admin)]
"""An endpoint parameter that requires an admin caller (the caller's name)."""


# Database ---------------------------------------------------------------------------------------------------------


def _engine(url: str) -> AsyncEngine:
    """An async engine; on SQLite with WAL and a busy timeout, as several threads and processes write."""
    is_sqlite = url.startswith("sqlite")
    engine = create_async_engine(url, connect_args={"timeout": 30} if is_sqlite else {}, pool_pre_ping=not is_sqlite)
    if is_sqlite and ":memory:" not in url:

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

    return engine


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
        self.engine: AsyncEngine = _engine(url)
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
        # Azure's and Microsoft 365's front ends keep an idle connection for minutes; uvicorn's default of 5 s would
        # close it just as a client (15 s for aiohttp's pool) sends its next request on it.
        timeout_keep_alive=SERVER_KEEP_ALIVE,
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
