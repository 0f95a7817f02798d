"""The API's front door: a caller is authenticated before a byte of its body is read, and every body is bounded.

FastAPI reads and parses a route's JSON body before it resolves the route's dependencies, so a dependency that
checks the bearer token runs only after the whole body is in memory: an unauthenticated 600 MB request would be read
whole before its 401. :class:`RequestGuard` is plain ASGI middleware in front of everything: under ``/api/`` it
checks the token from the headers alone and answers 401 without touching the body; it refuses a declared
``Content-Length`` over the limit with 413 at once, and counts the bytes of a streamed body as the application reads
them, ending the request with 413 as soon as they pass the limit. The principal it verified is handed to the route
through the ASGI scope, so the token is not checked twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ckey.api.problems import Problem
from ckey.auth import AuthError, TokenVerifier

PRINCIPAL_SCOPE_KEY = "ckey.principal"
"""Where the guard leaves the verified :class:`~ckey.auth.Principal` in the ASGI scope."""
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="ckey"'}


class BodyTooLarge(HTTPException):
    """A streamed body passed its limit; answered 413 ``body-size``."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than the limit of {limit:,} bytes")
        self.limit = limit


@dataclass(frozen=True)
class BodyLimits:
    """Largest request bodies, in bytes: uploads (under ``/api/uploads/``) and everything else."""

    default: int
    uploads: int

    def for_path(self, path: str) -> int:
        """The limit that applies to a request on ``path``."""
        return self.uploads if path.startswith("/api/uploads/") else self.default


class RequestGuard:
    """ASGI middleware: authentication before the body, and size limits while it streams.

    Args:
        app: the application behind the guard.
        verifier: checks bearer tokens.
        limits: the body size limits.
    """

    def __init__(self, app: ASGIApp, verifier: TokenVerifier, limits: BodyLimits) -> None:
        self.app = app
        self.verifier = verifier
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the caller and the declared size, then pass the request on with a counting ``receive``."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if path.startswith("/api/"):
            problem = self._authenticate(scope, headers.get("authorization"))
            if problem is not None:
                await problem.response(path)(scope, _no_body, send)
                return
        limit = self.limits.for_path(path)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _too_large(limit).response(path)(scope, _no_body, send)
            return
        await self.app(scope, _counting(receive, limit), send)

    def _authenticate(self, scope: Scope, authorization: str | None) -> Problem | None:
        scheme, _, credentials = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return Problem(401, "bearer-token-required", "this API needs a bearer token", headers=CHALLENGE)
        try:
            principal = self.verifier.verify(credentials.strip())
        except AuthError as exc:
            return Problem(401, "bearer-token-invalid", f"the bearer token is not valid: {exc}", headers=CHALLENGE)
        scope[PRINCIPAL_SCOPE_KEY] = principal
        return None


def _too_large(limit: int) -> Problem:
    return Problem(413, "body-size", f"the request body is larger than the limit of {limit:,} bytes")


async def _no_body() -> Message:
    # A refused request's body is never read: the response goes out and the connection is closed by the server.
    return {"type": "http.disconnect"}


def _counting(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return counted
