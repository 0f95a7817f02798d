"""A request's JSON body, parsed once and kept on the request (``request.state``) for whoever reads it next."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from sandbox.m365.errors import Family, Reject, arm_error, graph_error

_UNSET = object()


async def json_value(request: Request) -> Any:
    """The body's JSON value (an empty body reads as ``{}``).

    Raises:
        ValueError: the body is not JSON (nor UTF-8).
    """
    cached = getattr(request.state, "json_body", _UNSET)
    if cached is _UNSET:
        cached = json.loads(await request.body() or b"{}")
        request.state.json_body = cached
    return cached


async def json_object(request: Request, family: Family) -> dict[str, Any]:
    """The body's JSON object.

    Raises:
        Reject: 400 in the shape of ``family`` (Graph or the support desk): not JSON, or not an object.
    """
    try:
        body = await json_value(request)
    except ValueError:
        raise Reject(_bad_request(family, "The request body isn't valid JSON.")) from None
    if not isinstance(body, dict):
        raise Reject(_bad_request(family, "The request body must be a JSON object."))
    return body


def _bad_request(family: Family, message: str) -> JSONResponse:
    if family is Family.SUPPORT:
        return arm_error(400, "InvalidRequestContent", message)
    return graph_error(400, "BadRequest", message)
