"""Errors in the shapes Azure answers them: ``{"error": {"code", "message", "innererror"}}``.

Key Vault's data plane and Azure Resource Manager share the envelope; Key Vault adds ``innererror``
(``ForbiddenByRbac``, ``ObjectIsDeletedButRecoverable`` ...). Messages follow the real service's wording where it is
known, because callers (and people reading logs) match on them.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

NOT_FOUND_HELP = "https://go.microsoft.com/fwlink/?linkid=2125182"
FORBIDDEN_HELP = "https://go.microsoft.com/fwlink/?linkid=2125287"


class ServiceError(Exception):
    """An error answer: HTTP status, Azure error code, message, optional inner code and headers.

    Args:
        status: HTTP status code.
        code: the ``error.code`` (``KeyNotFound``, ``Forbidden``, ``AuthorizationFailed`` ...).
        message: the ``error.message``.
        inner: the ``error.innererror.code``, if the service sends one.
        headers: extra response headers (``WWW-Authenticate``, ``Retry-After``).
    """

    def __init__(
        self, status: int, code: str, message: str, *, inner: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.inner = inner
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.inner:
            error["innererror"] = {"code": self.inner}
        return {"error": error}

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        """The HTTP response."""
        return JSONResponse(self.body(), status_code=self.status, headers={**self.headers, **(headers or {})})


# Key Vault data plane ---------------------------------------------------------------------------------------------


def bad_parameter(message: str) -> ServiceError:
    """400 BadParameter."""
    return ServiceError(400, "BadParameter", message)


def key_not_found(name: str, version: str | None = None) -> ServiceError:
    """404 KeyNotFound for an active key (or one of its versions)."""
    ident = f"{name}/{version}" if version else name
    return ServiceError(
        404,
        "KeyNotFound",
        f"A key with (name/id) {ident} was not found in this key vault. If you recently deleted this key you may be "
        f"able to recover it using the correct recovery command. For help resolving this issue, please see "
        f"{NOT_FOUND_HELP}",
    )


def deleted_key_not_found(name: str) -> ServiceError:
    """404 KeyNotFound for ``/deletedkeys/{name}``."""
    return ServiceError(404, "KeyNotFound", f"Deleted Key not found: {name}")


def deleted_but_recoverable(name: str) -> ServiceError:
    """409 Conflict: the name belongs to a soft-deleted key."""
    return ServiceError(
        409,
        "Conflict",
        f"Key {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, "
        f"the key can only be recovered or purged.",
        inner="ObjectIsDeletedButRecoverable",
    )


def key_exists(name: str) -> ServiceError:
    """409 Conflict: restoring a backup over a key that exists."""
    return ServiceError(
        409,
        "Conflict",
        f"There was a conflict restoring the key '{name}'. A key with that name already exists in this key vault; "
        f"a backup can only be restored under an unused name.",
        inner="ObjectAlreadyExists",
    )


def purge_protected(vault: str, location: str) -> ServiceError:
    """403 Forbidden: purge refused under purge protection."""
    return ServiceError(
        403,
        "Forbidden",
        f'Operation "purge" is not allowed because purge protection is enabled for this vault. Key Vault service '
        f"will automatically purge it after the retention period has passed.\r\nVault: {vault};location={location}",
    )


def key_operation_forbidden(operation: str, reason: str, inner: str) -> ServiceError:
    """403 Forbidden for an operation the key itself refuses (disabled, expired, not in ``key_ops``)."""
    return ServiceError(403, "Forbidden", f"Operation {operation} is not allowed {reason}.", inner=inner)


def unauthorized(message: str, challenge: str) -> ServiceError:
    """401 Unauthorized with the bearer challenge."""
    return ServiceError(401, "Unauthorized", message, headers={"WWW-Authenticate": challenge})


def throttled(reason: str, retry_after: int) -> ServiceError:
    """429 Throttled with ``Retry-After`` (seconds)."""
    return ServiceError(
        429,
        "Throttled",
        f"Request was not processed because too many requests were received. Reason: {reason}",
        headers={"Retry-After": str(retry_after)},
    )


def service_unavailable(message: str = "The service is temporarily unavailable. Please retry later.") -> ServiceError:
    """503 ServiceUnavailable (injected faults, a vault that is down)."""
    return ServiceError(503, "ServiceUnavailable", message, headers={"Retry-After": "1"})


# Azure Resource Manager -------------------------------------------------------------------------------------------


def arm_not_found(resource_type: str, name: str, resource_group: str) -> ServiceError:
    """404 ResourceNotFound in ARM's wording."""
    return ServiceError(
        404,
        "ResourceNotFound",
        f"The Resource '{resource_type}/{name}' under resource group '{resource_group}' was not found. For more "
        f"details please go to https://aka.ms/ARMResourceNotFoundFix",
    )


def arm_bad_request(message: str, code: str = "BadRequest") -> ServiceError:
    """400 in ARM's shape."""
    return ServiceError(400, code, message)
