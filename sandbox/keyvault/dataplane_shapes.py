"""What the data plane's routes share: the request :class:`Context` and the service's JSON shapes.

Bodies are the service's JSON (the field names of ``azure.keyvault.keys._generated.models``).
"""

from __future__ import annotations

import binascii
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from starlette.requests import Request
from starlette.responses import Response

from sandbox.identity import Caller
from sandbox.keyvault import crypto, errors
from sandbox.keyvault.db import VaultRow
from sandbox.keyvault.keys import KeyView


@dataclass
class Context:
    """One authenticated, authorized data-plane request."""

    request: Request
    vault: VaultRow
    caller: Caller
    api_version: str

    @property
    def host(self) -> str:
        """The host the caller addressed (key ids use it, so that they lead back here)."""
        host = self.request.headers.get("host", f"{self.vault.name}.vault.azure.net").lower()
        return host.removesuffix(":443")

    @property
    def name(self) -> str:
        """The key name in the path."""
        return str(self.request.path_params.get("name", ""))

    @property
    def version(self) -> str | None:
        """The key version in the path (None: the current one)."""
        return str(self.request.path_params.get("version") or "") or None

    async def body(self) -> dict[str, Any]:
        """The JSON body (an empty object when there is none)."""
        raw = await self.request.body()
        if not raw.strip():
            return {}
        try:
            data = await self.request.json()
        except ValueError:
            raise errors.bad_parameter("The request body is not valid JSON.") from None
        if not isinstance(data, dict):
            raise errors.bad_parameter("The request body must be a JSON object.")
        return data


Handler = Callable[[Context], Awaitable[Response]]


class KeyRoute(NamedTuple):
    """A data-plane route: path, method, the operation it is (:data:`~sandbox.keyvault.authz.OPERATIONS`), handler."""

    path: str
    method: str
    operation: str
    handler: Handler


# JSON shapes --------------------------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    """base64url without padding, as Key Vault writes binary values."""
    return crypto.b64url_encode(data)


def unb64(value: Any, field: str) -> bytes:
    """The bytes of a base64url body property.

    Raises:
        ServiceError: BadParameter when missing or not base64url.
    """
    if not isinstance(value, str):
        raise errors.bad_parameter(f"Property {field} is required and must be base64url.")
    try:
        return crypto.b64url_decode(value)
    except (ValueError, binascii.Error):
        raise errors.bad_parameter(f"Property {field} is not valid base64url.") from None


def attributes_json(view: KeyView) -> dict[str, Any]:
    """``attributes`` of a key bundle or item."""
    v = view.version
    out: dict[str, Any] = {"enabled": v.enabled}
    if v.not_before is not None:
        out["nbf"] = v.not_before
    if v.expires is not None:
        out["exp"] = v.expires
    out |= {
        "created": v.created,
        "updated": v.updated,
        "recoveryLevel": view.vault.recovery_level,
        "recoverableDays": view.vault.soft_delete_retention_days,
        "exportable": v.exportable,
    }
    if v.hsm:
        out["hsmPlatform"] = "2"
    return out


def key_id(host: str, view: KeyView, *, versioned: bool = True) -> str:
    """``https://<host>/keys/<name>[/<version>]``."""
    base = f"https://{host}/keys/{view.key.name}"
    return f"{base}/{view.version.version}" if versioned else base


def key_bundle(host: str, view: KeyView) -> dict[str, Any]:
    """A KeyBundle: public JWK, attributes, tags."""
    v = view.version
    jwk: dict[str, Any] = {"kid": key_id(host, view), "kty": v.kty, "key_ops": list(v.key_ops)}
    if v.n:
        jwk |= {"n": v.n, "e": v.e}
    elif v.crv:
        jwk |= {"crv": v.crv, "x": v.x, "y": v.y}
    # An oct key's JWK carries no key material: the secret never leaves the service.
    bundle: dict[str, Any] = {"key": jwk, "attributes": attributes_json(view)}
    if v.tags:
        bundle["tags"] = dict(v.tags)
    return bundle


def deleted_fields(host: str, view: KeyView) -> dict[str, Any]:
    """What a deleted key adds to its bundle or item."""
    return {
        "recoveryId": f"https://{host}/deletedkeys/{view.key.name}",
        "deletedDate": view.key.deleted_at,
        "scheduledPurgeDate": view.key.scheduled_purge_at,
    }


def deleted_bundle(host: str, view: KeyView) -> dict[str, Any]:
    """A DeletedKeyBundle."""
    return {**key_bundle(host, view), **deleted_fields(host, view)}


def key_item(host: str, view: KeyView, *, versioned: bool) -> dict[str, Any]:
    """A KeyItem of a list (versionless in ``/keys``, versioned in ``/keys/<name>/versions``)."""
    item: dict[str, Any] = {"kid": key_id(host, view, versioned=versioned), "attributes": attributes_json(view)}
    if view.version.tags:
        item["tags"] = dict(view.version.tags)
    return item


def parse_unix(value: Any, field: str) -> int | None:
    """An ``attributes`` time (Unix seconds) of a request body, or None.

    Raises:
        ServiceError: BadParameter for anything but a number.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise errors.bad_parameter(f"Property attributes.{field} must be a Unix time in seconds.")
    return int(value)


def parse_tags(value: Any) -> dict[str, str] | None:
    """The ``tags`` of a request body, or None.

    Raises:
        ServiceError: BadParameter for anything but an object of at most 15 tags.
    """
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > 15:
        raise errors.bad_parameter("Property tags must be an object of at most 15 string values.")
    return {str(k): str(v) for k, v in value.items()}
