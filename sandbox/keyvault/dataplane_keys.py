"""The data plane's key management routes, behind the gate of :mod:`~sandbox.keyvault.dataplane`.

Create, import, read, update, delete, recover, purge, rotate, backup, restore, rotation policies and the paged lists.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from starlette.responses import JSONResponse, Response

from sandbox.keyvault import errors
from sandbox.keyvault.backup import Backups
from sandbox.keyvault.base import UNSET
from sandbox.keyvault.dataplane_shapes import (
    Context,
    KeyRoute,
    b64,
    deleted_bundle,
    deleted_fields,
    key_bundle,
    key_item,
    parse_tags,
    parse_unix,
    unb64,
)
from sandbox.keyvault.deleted import DeletedKeys
from sandbox.keyvault.keys import KeyAttributes, Keys, KeyView
from sandbox.keyvault.rotation import Rotation

MAX_RESULTS = 25
DEFAULT_ROTATION_POLICY = {"lifetimeActions": [{"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Notify"}}]}


def _attributes(body: dict[str, Any]) -> KeyAttributes:
    attrs = body.get("attributes") or {}
    return KeyAttributes(
        enabled=bool(attrs.get("enabled", True)),
        not_before=parse_unix(attrs.get("nbf"), "nbf"),
        expires=parse_unix(attrs.get("exp"), "exp"),
        exportable=bool(attrs.get("exportable", False)),
    )


class KeyRoutes:
    """Handlers of ``/keys`` and ``/deletedkeys`` (the gate has authenticated, authorized and charged the request).

    Args:
        keys: active keys and their versions.
        deleted: soft delete, recover and purge.
        backups: backup and restore.
        rotation: rotate and rotation policies.
    """

    def __init__(self, keys: Keys, deleted: DeletedKeys, backups: Backups, rotation: Rotation) -> None:
        self.keys = keys
        self.deleted = deleted
        self.backups = backups
        self.rotation = rotation

    def routes(self) -> list[KeyRoute]:
        """The routes, in matching order (fixed paths before ``/keys/{name}/{version}``)."""
        r = [
            KeyRoute("/keys", "GET", "list", self.list_keys),
            KeyRoute("/keys/", "GET", "list", self.list_keys),
            KeyRoute("/keys/restore", "POST", "restore", self.restore),
            KeyRoute("/deletedkeys", "GET", "list_deleted", self.list_deleted),
            KeyRoute("/deletedkeys/", "GET", "list_deleted", self.list_deleted),
            KeyRoute("/deletedkeys/{name}", "GET", "get_deleted", self.get_deleted),
            KeyRoute("/deletedkeys/{name}", "DELETE", "purge", self.purge),
            KeyRoute("/deletedkeys/{name}/recover", "POST", "recover", self.recover),
            KeyRoute("/keys/{name}/create", "POST", "create", self.create),
            KeyRoute("/keys/{name}/rotate", "POST", "rotate", self.rotate),
            KeyRoute("/keys/{name}/backup", "POST", "backup", self.backup),
            KeyRoute("/keys/{name}/versions", "GET", "list_versions", self.list_versions),
            KeyRoute("/keys/{name}/rotationpolicy", "GET", "get_rotation_policy", self.get_rotation_policy),
            KeyRoute("/keys/{name}/rotationpolicy", "PUT", "set_rotation_policy", self.set_rotation_policy),
        ]
        for path in ("/keys/{name}", "/keys/{name}/"):
            r += [KeyRoute(path, "GET", "get", self.get), KeyRoute(path, "PATCH", "update", self.update)]
        r += [
            KeyRoute("/keys/{name}", "PUT", "import", self.import_key),
            KeyRoute("/keys/{name}", "DELETE", "delete", self.delete),
            KeyRoute("/keys/{name}/{version}", "GET", "get", self.get),
            KeyRoute("/keys/{name}/{version}", "PATCH", "update", self.update),
        ]
        return r

    async def create(self, ctx: Context) -> Response:
        """``POST /keys/{name}/create``."""
        body = await ctx.body()
        size = body.get("key_size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int)):
            raise errors.bad_parameter("Property key_size must be an integer.")
        view = await self.keys.create_key(
            ctx.vault.name,
            ctx.name,
            kty=str(body.get("kty", "")),
            size=size,
            curve=str(body["crv"]) if body.get("crv") else None,
            public_exponent=body.get("public_exponent"),
            key_ops=body.get("key_ops"),
            attributes=_attributes(body),
            tags=parse_tags(body.get("tags")),
        )
        return JSONResponse(key_bundle(ctx.host, view))

    async def import_key(self, ctx: Context) -> Response:
        """``PUT /keys/{name}``."""
        body = await ctx.body()
        jwk = body.get("key")
        if not isinstance(jwk, dict):
            raise errors.bad_parameter("Property key is required.")
        attributes = _attributes(body)
        view = await self.keys.import_key(
            ctx.vault.name,
            ctx.name,
            jwk,
            hsm=bool(body.get("Hsm", False)),
            attributes=attributes,
            tags=parse_tags(body.get("tags")),
        )
        return JSONResponse(key_bundle(ctx.host, view))

    async def get(self, ctx: Context) -> Response:
        """``GET /keys/{name}[/{version}]``."""
        return JSONResponse(key_bundle(ctx.host, await self.keys.get_key(ctx.vault.name, ctx.name, ctx.version)))

    async def update(self, ctx: Context) -> Response:
        """``PATCH /keys/{name}/{version}``."""
        body = await ctx.body()
        attrs = body.get("attributes") or {}
        view = await self.keys.update_key(
            ctx.vault.name,
            ctx.name,
            ctx.version,
            key_ops=body.get("key_ops"),
            enabled=attrs.get("enabled"),
            not_before=parse_unix(attrs["nbf"], "nbf") if "nbf" in attrs else UNSET,
            expires=parse_unix(attrs["exp"], "exp") if "exp" in attrs else UNSET,
            tags=parse_tags(body.get("tags")),
        )
        return JSONResponse(key_bundle(ctx.host, view))

    async def delete(self, ctx: Context) -> Response:
        """``DELETE /keys/{name}``: soft delete."""
        return JSONResponse(deleted_bundle(ctx.host, await self.deleted.delete_key(ctx.vault.name, ctx.name)))

    async def get_deleted(self, ctx: Context) -> Response:
        """``GET /deletedkeys/{name}``."""
        return JSONResponse(deleted_bundle(ctx.host, await self.deleted.get_deleted(ctx.vault.name, ctx.name)))

    async def recover(self, ctx: Context) -> Response:
        """``POST /deletedkeys/{name}/recover``."""
        return JSONResponse(key_bundle(ctx.host, await self.deleted.recover(ctx.vault.name, ctx.name)))

    async def purge(self, ctx: Context) -> Response:
        """``DELETE /deletedkeys/{name}``: 204, or 403 under purge protection."""
        await self.deleted.purge(ctx.vault.name, ctx.name)
        return Response(status_code=204)

    async def rotate(self, ctx: Context) -> Response:
        """``POST /keys/{name}/rotate``."""
        return JSONResponse(key_bundle(ctx.host, await self.rotation.rotate(ctx.vault.name, ctx.name)))

    async def backup(self, ctx: Context) -> Response:
        """``POST /keys/{name}/backup``: ``{"value": <opaque blob, base64url>}``."""
        blob = await self.backups.backup(ctx.vault.name, ctx.name)
        return JSONResponse({"value": b64(blob)})

    async def restore(self, ctx: Context) -> Response:
        """``POST /keys/restore``."""
        body = await ctx.body()
        blob = unb64(body.get("value"), "value")
        return JSONResponse(key_bundle(ctx.host, await self.backups.restore(ctx.vault.name, blob)))

    @staticmethod
    def _rotation_policy_json(ctx: Context, view: KeyView) -> dict[str, Any]:
        policy = view.key.rotation_policy or DEFAULT_ROTATION_POLICY
        return {
            "id": f"https://{ctx.host}/keys/{view.key.name}/rotationpolicy",
            "lifetimeActions": policy.get("lifetimeActions") or [],
            "attributes": policy.get("attributes") or {},
        }

    async def get_rotation_policy(self, ctx: Context) -> Response:
        """``GET /keys/{name}/rotationpolicy``."""
        view = await self.keys.get_key(ctx.vault.name, ctx.name)
        return JSONResponse(self._rotation_policy_json(ctx, view))

    async def set_rotation_policy(self, ctx: Context) -> Response:
        """``PUT /keys/{name}/rotationpolicy``."""
        view = await self.rotation.set_rotation_policy(ctx.vault.name, ctx.name, await ctx.body())
        return JSONResponse(self._rotation_policy_json(ctx, view))

    # Lists --------------------------------------------------------------------------------------------------------

    @staticmethod
    def _page(ctx: Context, items: list[dict[str, Any]]) -> Response:
        """One page of ``items`` with the ``nextLink`` of the rest (``maxresults`` at most 25, as in Azure)."""
        raw = ctx.request.query_params.get("maxresults")
        try:
            size = int(raw) if raw else MAX_RESULTS
        except ValueError:
            raise errors.bad_parameter("maxresults must be an integer between 1 and 25.") from None
        if not 1 <= size <= MAX_RESULTS:
            raise errors.bad_parameter("maxresults must be an integer between 1 and 25.")
        token = ctx.request.query_params.get("$skiptoken")
        try:
            start = int(base64.urlsafe_b64decode(token.encode()).decode()) if token else 0
        except (ValueError, binascii.Error):
            raise errors.bad_parameter("The $skiptoken is invalid.") from None
        page = items[start : start + size]
        next_link = None
        if start + size < len(items):
            skip = base64.urlsafe_b64encode(str(start + size).encode()).decode()
            next_link = (
                f"https://{ctx.host}{ctx.request.url.path}?api-version={ctx.api_version}"
                f"&$skiptoken={skip}&maxresults={size}"
            )
        return JSONResponse({"value": page, "nextLink": next_link})

    async def list_keys(self, ctx: Context) -> Response:
        """``GET /keys``: the keys, versionless ids."""
        views = await self.keys.list_keys(ctx.vault.name)
        return self._page(ctx, [key_item(ctx.host, v, versioned=False) for v in views])

    async def list_versions(self, ctx: Context) -> Response:
        """``GET /keys/{name}/versions``."""
        views = await self.keys.list_versions(ctx.vault.name, ctx.name)
        return self._page(ctx, [key_item(ctx.host, v, versioned=True) for v in views])

    async def list_deleted(self, ctx: Context) -> Response:
        """``GET /deletedkeys``."""
        views = await self.keys.list_keys(ctx.vault.name, deleted=True)
        items = [{**key_item(ctx.host, v, versioned=False), **deleted_fields(ctx.host, v)} for v in views]
        return self._page(ctx, items)
