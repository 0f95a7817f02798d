"""InvokeCommand: one cmdlet per request, as Exchange Online's admin REST API (and the sandbox's SharePoint) run it.

The body is ``{"CmdletInput": {"CmdletName", "Parameters"}}``; the answer is a page of the cmdlet's output objects
(:data:`~sandbox.m365.durations.PAGE_SIZE`, then ``@odata.nextLink``) with its warnings. Cmdlets that change
something run one at a time (the tenant's lock) and are recorded as they arrive, before they run, with the status
they were answered with (the control endpoint's ``/sandbox/calls``).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.m365.core import Core
from sandbox.m365.db import CallRow
from sandbox.m365.durations import PAGE_SIZE
from sandbox.m365.errors import COMMAND_NOT_FOUND, CmdletFailure
from sandbox.m365.params import Cmdlet
from sandbox.m365.routes.body import json_value


class CommandRunner:
    """Runs the cmdlet of an InvokeCommand request.

    Args:
        core: the tenant's lock and database (the call log).
        counters: the tenant's counters; each cmdlet counts under ``cmdlet.<name>``.
    """

    def __init__(self, core: Core, counters: Counter[str]) -> None:
        self.core = core
        self.counters = counters

    async def invoke(self, request: Request, cmdlets: Mapping[str, Cmdlet], context: str) -> Response:
        """Run one cmdlet from an InvokeCommand body and answer with its output page."""
        try:
            body = await json_value(request)
            cmdlet_input = body["CmdletInput"]
            name = str(cmdlet_input["CmdletName"])
            raw = cmdlet_input.get("Parameters") or {}
            if not isinstance(raw, dict):
                raise TypeError("Parameters is not an object")
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse(
                {"error": {"code": "BadRequest", "message": f"The request body isn't a valid CmdletInput: {exc}"}},
                status_code=400,
            )
        cmdlet = cmdlets.get(name.lower())
        call: int | None = None
        try:
            if cmdlet is None:
                raise CmdletFailure(
                    f"The term '{name}' is not recognized as a name of a cmdlet, function, script file, or executable "
                    f"program. Check the spelling of the name, or if a path was included, verify that the path is "
                    f"correct and try again.",
                    COMMAND_NOT_FOUND,
                )
            self.counters[f"cmdlet.{cmdlet.spec.name}"] += 1
            if cmdlet.changes:
                call = await self._log_call(cmdlet.spec.name, raw)
            params = cmdlet.spec.bind(raw)
            if cmdlet.changes:
                async with self.core.lock:
                    output = await cmdlet.handler(params)
            else:
                output = await cmdlet.handler(params)
        except CmdletFailure as exc:
            if call is not None:
                await self._answered(call, exc.status)
            return exc.response()
        if call is not None:
            await self._answered(call, 200)
        skip = _int(request.query_params.get("$skiptoken"))
        page = output.objects[skip : skip + PAGE_SIZE]
        answer: dict[str, Any] = {"@odata.context": f"{context}/$metadata#Collection(Exchange.GenericHashTable)"}
        if output.warnings:
            answer["@adminapi.warnings"] = output.warnings
        answer["value"] = page
        if skip + PAGE_SIZE < len(output.objects):
            answer["@odata.nextLink"] = f"{str(request.url).split('?', 1)[0]}?$skiptoken={skip + PAGE_SIZE}"
        return JSONResponse(answer)

    async def _log_call(self, name: str, raw: dict[str, Any]) -> int:
        """Record a state-changing call as it arrives (before it runs); its sequence number."""
        lowered = {str(k).lower(): v for k, v in raw.items()}
        identity = lowered.get("identity", lowered.get("name"))
        async with self.core.db.session() as s, s.begin():
            row = CallRow(
                received_at=time.time(),
                cmdlet=name,
                identity=None if identity is None else str(identity)[:512],
                parameters=json.loads(json.dumps(raw, default=str)),
            )
            s.add(row)
            await s.flush()
            return row.seq

    async def _answered(self, seq: int, status: int) -> None:
        async with self.core.db.session() as s, s.begin():
            row = await s.get(CallRow, seq)
            if row is not None:
                row.status = status


def _int(text: str | None) -> int:
    try:
        return max(0, int(text or 0))
    except ValueError:
        return 0
