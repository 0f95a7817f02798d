"""Refusals, in the shapes the real services answer them.

A cmdlet's refusal is a :class:`CmdletFailure`: the exception type PowerShell would show, the text an administrator
would read, and an HTTP status. The Exchange Online admin REST API (``InvokeCommand``) answers it as::

    400 {"error": {"code": "BadRequest",
                   "message": "|Microsoft.Exchange.Data.DataValidationException|<the cmdlet's text>",
                   "details": [{"code": "Context", "target": "",
                                "message": "Ex2D8D1A|Microsoft.Exchange.Data.DataValidationException|<text>"}],
                   "innererror": {"message": "Error executing cmdlet",
                                  "type": "Microsoft.Exchange.Admin.OData.Core.ODataServiceException"}}}

The real service puts "Error executing cmdlet" in ``message`` and the text only in ``details``; the sandbox also puts
the text in ``message`` (prefixed with the exception type between bars, as PowerShell's ``Write-ErrorMessage`` prints
it) so that a client reading only ``message`` shows what PowerShell would. Throttling is 429 with ``Retry-After``;
faults are 5xx with the same envelope. Graph and the support desk (an Azure Resource Manager provider) use their own
envelopes: :func:`graph_error`, :func:`arm_error`.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from starlette.responses import JSONResponse, Response

NOT_FOUND = "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException"
ALREADY_EXISTS = "Microsoft.Exchange.Configuration.Tasks.ManagementObjectAlreadyExistsException"
VALIDATION = "Microsoft.Exchange.Data.DataValidationException"
INVALID_OPERATION = "Microsoft.Exchange.Configuration.Tasks.TaskInvalidOperationException"
ACCESS_DENIED = "Microsoft.Exchange.Configuration.Tasks.AccessDeniedException"
PARAMETER_BINDING = "System.Management.Automation.ParameterBindingException"
COMMAND_NOT_FOUND = "System.Management.Automation.CommandNotFoundException"
KEY_VAULT = "Microsoft.Exchange.Security.Compliance.AzureKeyVaultException"
AD_TRANSIENT = "Microsoft.Exchange.Data.Directory.ADTransientException"
THROTTLED = "Microsoft.Exchange.Configuration.Tasks.ThrottlingException"
SPO_SERVER = "Microsoft.SharePoint.Client.ServerException"
SPO_INVALID_OPERATION = "System.InvalidOperationException"
SPO_ARGUMENT = "System.ArgumentException"


class Family(StrEnum):
    """Which service's error shapes a host answers with."""

    EXCHANGE = "exchange"
    SHAREPOINT = "sharepoint"
    GRAPH = "graph"
    SUPPORT = "support"


class Reject(Exception):
    """A request answered before its handler ran (401, 403, an injected fault, throttling, an unreadable body).

    Args:
        response: the answer, in the shape of the host's service.
    """

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


_CODES = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict"}
_CODES |= {429: "TooManyRequests", 500: "InternalServerError", 503: "ServiceUnavailable"}


class CmdletFailure(Exception):
    """A cmdlet refused or failed; nothing was changed.

    Args:
        message: the text PowerShell shows.
        exception_type: the .NET exception type PowerShell names.
        status: the HTTP status of the REST answer.
        headers: extra headers (``Retry-After``).
        code: the ``error.code``; default the status's name (``BadRequest``, ``NotFound`` ...).
    """

    def __init__(
        self,
        message: str,
        exception_type: str = VALIDATION,
        status: int = 400,
        headers: dict[str, str] | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.exception_type = exception_type
        self.status = status
        self.headers = headers or {}
        self._code = code

    @property
    def code(self) -> str:
        """The ``error.code`` of the REST answer."""
        if self._code:
            return self._code
        return _CODES.get(self.status, "BadRequest" if self.status < 500 else "InternalServerError")

    def body(self) -> dict[str, Any]:
        """The InvokeCommand error envelope."""
        error_id = "Ex" + hashlib.sha256(self.exception_type.encode()).hexdigest()[:6].upper()
        return {
            "error": {
                "code": self.code,
                "message": f"|{self.exception_type}|{self.message}",
                "details": [
                    {"code": "Context", "target": "", "message": f"{error_id}|{self.exception_type}|{self.message}"}
                ],
                "innererror": {
                    "message": "Error executing cmdlet",
                    "type": "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
                },
            }
        }

    def response(self) -> JSONResponse:
        """The HTTP answer."""
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def not_found(identity: str, server: str) -> CmdletFailure:
    """Exchange's "couldn't be found" refusal."""
    return CmdletFailure(
        f"The operation couldn't be performed because object '{identity}' couldn't be found on '{server}'.",
        NOT_FOUND,
        404,
    )


def graph_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """Microsoft Graph's error envelope."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    inner = {"date": now, "request-id": str(uuid.uuid4()), "client-request-id": str(uuid.uuid4())}
    body = {"error": {"code": code, "message": message, "innerError": inner}}
    return JSONResponse(body, status_code=status, headers=headers or {})


def arm_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """Azure Resource Manager's error envelope (the support desk is modelled on Microsoft.Support)."""
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers or {})


class DeskError(Exception):
    """The support desk refused a request.

    Args:
        status: HTTP status.
        code: ARM error code.
        message: why.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self) -> JSONResponse:
        """The HTTP answer."""
        return arm_error(self.status, self.code, self.message)


class GraphError(Exception):
    """A Graph request was refused.

    Args:
        status: HTTP status.
        code: Graph error code.
        message: why.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self) -> JSONResponse:
        """The HTTP answer."""
        return graph_error(self.status, self.code, self.message)
