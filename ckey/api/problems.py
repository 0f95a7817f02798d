"""Errors as ``application/problem+json`` (RFC 9457), each naming the rule that was broken."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("ckey.api")

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://ckey.dev/problems/"


class Problem(Exception):
    """An error answered as problem+json.

    Args:
        status: the HTTP status.
        rule: the rule that was broken; also the last segment of the problem ``type``.
        detail: a sentence an operator can act on.
        errors: per-field errors (``loc``, ``rule``, ``msg``), for validation problems.
        headers: extra response headers (``WWW-Authenticate`` on 401).
        **extensions: more members of the problem (RFC 9457 extension members), e.g. ``holders``.
    """

    def __init__(
        self,
        status: int,
        rule: str,
        detail: str,
        *,
        title: str | None = None,
        errors: Sequence[dict[str, Any]] = (),
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status, self.rule, self.detail = status, rule, detail
        self.title = title or rule.replace("-", " ").capitalize()
        self.errors, self.headers = list(errors), headers
        self.extensions = extensions

    def response(self, instance: str | None = None) -> JSONResponse:
        """The problem+json response."""
        body: dict[str, Any] = {
            "type": PROBLEM_BASE + self.rule,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "rule": self.rule,
        }
        if instance:
            body["instance"] = instance
        if self.errors:
            body["errors"] = self.errors
        body.update(self.extensions)
        return JSONResponse(body, status_code=self.status, media_type=PROBLEM_JSON, headers=self.headers)


def validation_problem(exc: ValidationError | RequestValidationError, prefix: Sequence[str | int] = ()) -> Problem:
    """A 422 problem listing each field error with the rule it broke (the pydantic error type)."""
    errors = [
        {
            "loc": [*prefix, *err["loc"]],
            "rule": err["type"].replace("_", "-"),
            "msg": err["msg"],
        }
        for err in exc.errors()
    ]
    rules: list[str] = sorted({str(e["rule"]) for e in errors})
    detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
    return Problem(
        422, rules[0] if len(rules) == 1 else "invalid-request", detail, title="Invalid request", errors=errors
    )


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` as problem+json."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return exc.response(request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_problem(exc).response(request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Still a 500, but problem+json like every other answer; the traceback goes to the log, not the caller.
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return Problem(
            500, "internal-error", "ckey failed to answer this request; the API log has the details"
        ).response(request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        rule = {404: "not-found", 405: "method-not-allowed", 413: "body-size"}.get(exc.status_code, "http-error")
        return Problem(exc.status_code, rule, str(exc.detail), headers=dict(exc.headers or {})).response(
            request.url.path
        )
