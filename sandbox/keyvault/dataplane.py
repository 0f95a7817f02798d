"""Key Vault's data plane (``https://<vault>.vault.azure.net/keys/...``) as the real service answers it.

Every request goes through the same gate, in the order the service applies it: injected latency and a vault that is
down, ``api-version``, bearer challenge and token (401), injected 5xx, authorization by access policy or Azure RBAC
(403), service limits (429), then the operation. Bodies are the service's JSON (the field names of
``azure.keyvault.keys._generated.models``); errors are ``{"error": {"code", "message", "innererror"}}``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jwt
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

from sandbox.identity import Caller
from sandbox.keyvault import crypto, errors
from sandbox.keyvault.authz import OPERATIONS, Operation, caller_text, policy_permissions, rbac_allows
from sandbox.keyvault.db import VaultRow
from sandbox.keyvault.errors import ServiceError
from sandbox.keyvault.limits import VaultLimits, cost
from sandbox.keyvault.service import UNSET, KeyAttributes, KeyView

if TYPE_CHECKING:
    from sandbox.keyvault.app import SandboxKeyVault

log = logging.getLogger(__name__)

RESOURCE = "https://vault.azure.net"
LATEST_API_VERSION = "2025-07-01"
_API_VERSION = re.compile(r"^(?:7\.[0-6](?:-preview(?:\.\d+)?)?|20\d\d-\d\d-\d\d(?:-preview)?)$")
MAX_RESULTS = 25
DEFAULT_ROTATION_POLICY = {"lifetimeActions": [{"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Notify"}}]}


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


# JSON shapes --------------------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return crypto.b64url_encode(data)


def _unb64(value: Any, field: str) -> bytes:
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
    bundle: dict[str, Any] = {
        "key": {"kid": key_id(host, view), "kty": v.kty, "key_ops": list(v.key_ops), "n": v.n, "e": v.e},
        "attributes": attributes_json(view),
    }
    if v.tags:
        bundle["tags"] = dict(v.tags)
    return bundle


def _deleted_fields(host: str, view: KeyView) -> dict[str, Any]:
    return {
        "recoveryId": f"https://{host}/deletedkeys/{view.key.name}",
        "deletedDate": view.key.deleted_at,
        "scheduledPurgeDate": view.key.scheduled_purge_at,
    }


def deleted_bundle(host: str, view: KeyView) -> dict[str, Any]:
    """A DeletedKeyBundle."""
    return {**key_bundle(host, view), **_deleted_fields(host, view)}


def key_item(host: str, view: KeyView, *, versioned: bool) -> dict[str, Any]:
    """A KeyItem of a list (versionless in ``/keys``, versioned in ``/keys/<name>/versions``)."""
    item: dict[str, Any] = {"kid": key_id(host, view, versioned=versioned), "attributes": attributes_json(view)}
    if view.version.tags:
        item["tags"] = dict(view.version.tags)
    return item


def _unix(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise errors.bad_parameter(f"Property attributes.{field} must be a Unix time in seconds.")
    return int(value)


def _tags(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > 15:
        raise errors.bad_parameter("Property tags must be an object of at most 15 string values.")
    return {str(k): str(v) for k, v in value.items()}


# The gate -----------------------------------------------------------------------------------------------------


class DataPlane:
    """The data-plane routes of every vault (the vault comes from the ``Host`` header).

    Args:
        sandbox: the running sandbox (service, identity, limits, counters).
    """

    def __init__(self, sandbox: SandboxKeyVault) -> None:
        self.sandbox = sandbox
        self.service = sandbox.service
        self.router = Router(routes=self._routes(), default=self._not_found, redirect_slashes=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        await self.router(scope, receive, send)

    @staticmethod
    async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
        response = ServiceError(404, "NotFound", f"The sandbox Key Vault does not serve {scope.get('path')}.")
        await response.response()(scope, receive, send)

    def _routes(self) -> list[Route]:
        r: list[Route] = []

        def add(path: str, method: str, op: str, handler: Handler) -> None:
            r.append(Route(path, self._endpoint(OPERATIONS[op], handler), methods=[method]))

        add("/keys", "GET", "list", self.list_keys)
        add("/keys/", "GET", "list", self.list_keys)
        add("/keys/restore", "POST", "restore", self.restore)
        add("/deletedkeys", "GET", "list_deleted", self.list_deleted)
        add("/deletedkeys/", "GET", "list_deleted", self.list_deleted)
        add("/deletedkeys/{name}", "GET", "get_deleted", self.get_deleted)
        add("/deletedkeys/{name}", "DELETE", "purge", self.purge)
        add("/deletedkeys/{name}/recover", "POST", "recover", self.recover)
        add("/keys/{name}/create", "POST", "create", self.create)
        add("/keys/{name}/rotate", "POST", "rotate", self.rotate)
        add("/keys/{name}/backup", "POST", "backup", self.backup)
        add("/keys/{name}/versions", "GET", "list_versions", self.list_versions)
        add("/keys/{name}/rotationpolicy", "GET", "get_rotation_policy", self.get_rotation_policy)
        add("/keys/{name}/rotationpolicy", "PUT", "set_rotation_policy", self.set_rotation_policy)
        for path in ("/keys/{name}", "/keys/{name}/"):
            add(path, "GET", "get", self.get)
            add(path, "PATCH", "update", self.update)
        add("/keys/{name}", "PUT", "import", self.import_key)
        add("/keys/{name}", "DELETE", "delete", self.delete)
        add("/keys/{name}/{version}", "GET", "get", self.get)
        add("/keys/{name}/{version}", "PATCH", "update", self.update)
        for op in ("encrypt", "decrypt", "wrapkey", "unwrapkey", "sign", "verify"):
            handler = self._crypto_handler(op)
            add(f"/keys/{{name}}/{{version}}/{op}", "POST", op, handler)
            add(f"/keys/{{name}}//{op}", "POST", op, handler)  # a versionless key id
        return r

    def _endpoint(self, op: Operation, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            vault_name = str(request.path_params["vault"]).lower()
            counters = self.sandbox.counters[vault_name]
            counters.requests += 1
            counters.operations[op.name] += 1
            try:
                response = await self._run(request, vault_name, op, handler)
            except ServiceError as exc:
                response = exc.response()
                if exc.status == 429:
                    counters.throttled += 1
            except Exception:
                log.exception("sandbox Key Vault: %s %s failed", request.method, request.url.path)
                response = ServiceError(500, "InternalServerError", "The sandbox failed; see its log.").response()
            counters.statuses[response.status_code] += 1
            response.headers["x-ms-request-id"] = str(uuid.uuid4())
            response.headers["x-ms-keyvault-service-version"] = "1.9.0.0-sandbox"
            return response

        return endpoint

    async def _run(self, request: Request, vault_name: str, op: Operation, handler: Handler) -> Response:
        vault = await self.service.get_vault(vault_name)
        if vault is None:
            # In Azure the name would not resolve; the sandbox answers, so the mistake is plain.
            raise ServiceError(404, "VaultNotFound", f"The vault '{vault_name}' does not exist in the sandbox.")
        if vault.latency_ms:
            await asyncio.sleep(vault.latency_ms / 1000)
        if vault.down:
            self.sandbox.counters[vault_name].faults += 1
            raise errors.service_unavailable(f"The vault '{vault.name}' is down (sandbox fault injection).")
        api_version = self._api_version(request)
        caller = self._authenticate(request, vault)
        if self.sandbox.throttle.fails(vault.error_rate):
            self.sandbox.counters[vault_name].faults += 1
            raise errors.service_unavailable()
        context = Context(request, vault, caller, api_version)
        await self._authorize(context, op)
        await self._charge(context, op)
        if op.name in ("get_deleted", "list_deleted", "purge", "recover"):
            await self.service.purge_expired(vault.name)
        return await handler(context)

    @staticmethod
    def _api_version(request: Request) -> str:
        version = request.query_params.get("api-version")
        if not version:
            raise errors.bad_parameter("The 'api-version' query parameter is missing; it is required for all requests.")
        if not _API_VERSION.match(version):
            raise errors.bad_parameter(
                f"The specified version ({version}) is not recognized. Consider using the latest supported version "
                f"({LATEST_API_VERSION})."
            )
        return version

    def _challenge(self, vault: VaultRow) -> str:
        return f'Bearer authorization="https://login.microsoftonline.com/{vault.tenant_id}", resource="{RESOURCE}"'

    def _authenticate(self, request: Request, vault: VaultRow) -> Caller:
        challenge = self._challenge(vault)
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() not in ("bearer", "pop") or not token.strip():
            raise errors.unauthorized("AKV10000: Request is missing a Bearer or PoP token.", challenge)
        try:
            caller = self.sandbox.identity.verify(token.strip(), RESOURCE)
        except jwt.InvalidAudienceError:
            found = _unverified_claim(token, "aud")
            raise errors.unauthorized(
                f"AKV10022: Invalid audience. Expected {RESOURCE}, found: {found}.", challenge
            ) from None
        except jwt.InvalidIssuerError:
            found = _unverified_claim(token, "iss")
            raise errors.unauthorized(
                f"AKV10032: Invalid issuer. Expected one of https://sts.windows.net/{vault.tenant_id}/, "
                f"https://login.microsoftonline.com/{vault.tenant_id}/v2.0, found: {found}.",
                challenge,
            ) from None
        except jwt.PyJWTError as exc:
            raise errors.unauthorized(f"Error validating token: {exc}", challenge) from None
        if caller.tenant_id.lower() != vault.tenant_id.lower():
            raise errors.unauthorized(
                f"AKV10032: Invalid issuer. Expected one of https://sts.windows.net/{vault.tenant_id}/, found: "
                f"https://sts.windows.net/{caller.tenant_id}/.",
                challenge,
            )
        return caller

    async def _authorize(self, ctx: Context, op: Operation) -> None:
        vault, caller = ctx.vault, ctx.caller
        who = caller_text(caller, self.sandbox.identity.issuer)
        if vault.rbac_authorization:
            resource = vault.scope + (f"/keys/{ctx.name}" if op.on_key and ctx.name else "")
            roles = await self.service.roles_at(caller.object_id, resource)
            if not rbac_allows(roles, op.data_action, data=True):
                raise ServiceError(
                    403,
                    "Forbidden",
                    "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny "
                    "assignments or role definitions were changed recently, please observe propagation time.\r\n"
                    f"Caller: {who}\r\nAction: '{op.data_action}'\r\nResource: '{resource.lower()}'\r\n"
                    "Assignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: null \r\n"
                    f"Vault: {vault.name};location={vault.location}\r\n",
                    inner="ForbiddenByRbac",
                )
            return
        granted: set[str] = set()
        for policy in await self.service.access_policies(vault.name):
            if policy.tenant_id.lower() != caller.tenant_id.lower():
                continue
            if policy.object_id.lower() != caller.object_id.lower():
                continue
            # A compound entry (user + application) applies only to that application acting for the user.
            if policy.application_id and policy.application_id.lower() != caller.principal.lower():
                continue
            granted |= policy_permissions(policy.keys)
        if op.permission.lower() not in granted:
            raise ServiceError(
                403,
                "Forbidden",
                f"The user, group or application '{who}' does not have keys {op.permission} permission on key vault "
                f"'{vault.name};location={vault.location}'. For help resolving this issue, please see "
                f"{errors.FORBIDDEN_HELP}",
                inner="ForbiddenByPolicy",
            )

    async def _charge(self, ctx: Context, op: Operation) -> None:
        vault = ctx.vault
        hsm, size = False, 2048
        if op.name == "create":
            body = await ctx.body()
            hsm = str(body.get("kty", "RSA")).endswith("-HSM")
            requested = body.get("key_size")
            size = requested if isinstance(requested, int) and not isinstance(requested, bool) else 2048
        elif op.name != "import" and op.on_key and ctx.name:
            profile = await self.service.key_profile(vault.name, ctx.name)
            if profile is not None:
                hsm, size = profile
        limits = VaultLimits(
            create=vault.create_limit if vault.create_limit is not None else VaultLimits.create,
            other=vault.other_limit if vault.other_limit is not None else VaultLimits.other,
            window=vault.limit_window_seconds or VaultLimits.window,
            retry_after=vault.retry_after_seconds,
        )
        units = cost(hsm=hsm, size=size, creates=op.creates)
        retry_after = self.sandbox.throttle.charge(vault.name, limits, units, creates=op.creates)
        if retry_after is not None:
            kind = "CREATE" if op.creates else "other"
            limit = limits.create if op.creates else limits.other
            raise errors.throttled(
                f"The vault '{vault.name}' reached its limit of {limit} {kind} key transactions per "
                f"{limits.window:g} seconds (weighted in RSA 2,048-bit software-key units; see Azure Key Vault "
                f"service limits).",
                retry_after,
            )

    # Key management ---------------------------------------------------------------------------------------------

    async def create(self, ctx: Context) -> Response:
        """``POST /keys/{name}/create``."""
        body = await ctx.body()
        attrs = body.get("attributes") or {}
        size = body.get("key_size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int)):
            raise errors.bad_parameter("Property key_size must be an integer.")
        view = await self.service.create_key(
            ctx.vault.name,
            ctx.name,
            kty=str(body.get("kty", "")),
            size=size,
            public_exponent=body.get("public_exponent"),
            key_ops=body.get("key_ops"),
            attributes=KeyAttributes(
                enabled=bool(attrs.get("enabled", True)),
                not_before=_unix(attrs.get("nbf"), "nbf"),
                expires=_unix(attrs.get("exp"), "exp"),
                exportable=bool(attrs.get("exportable", False)),
            ),
            tags=_tags(body.get("tags")),
        )
        return JSONResponse(key_bundle(ctx.host, view))

    async def import_key(self, ctx: Context) -> Response:
        """``PUT /keys/{name}``."""
        body = await ctx.body()
        jwk = body.get("key")
        if not isinstance(jwk, dict):
            raise errors.bad_parameter("Property key is required.")
        attrs = body.get("attributes") or {}
        view = await self.service.import_key(
            ctx.vault.name,
            ctx.name,
            jwk,
            hsm=bool(body.get("Hsm", False)),
            attributes=KeyAttributes(
                enabled=bool(attrs.get("enabled", True)),
                not_before=_unix(attrs.get("nbf"), "nbf"),
                expires=_unix(attrs.get("exp"), "exp"),
                exportable=bool(attrs.get("exportable", False)),
            ),
            tags=_tags(body.get("tags")),
        )
        return JSONResponse(key_bundle(ctx.host, view))

    async def get(self, ctx: Context) -> Response:
        """``GET /keys/{name}[/{version}]``."""
        return JSONResponse(key_bundle(ctx.host, await self.service.get_key(ctx.vault.name, ctx.name, ctx.version)))

    async def update(self, ctx: Context) -> Response:
        """``PATCH /keys/{name}/{version}``."""
        body = await ctx.body()
        attrs = body.get("attributes") or {}
        view = await self.service.update_key(
            ctx.vault.name,
            ctx.name,
            ctx.version,
            key_ops=body.get("key_ops"),
            enabled=attrs.get("enabled"),
            not_before=_unix(attrs["nbf"], "nbf") if "nbf" in attrs else UNSET,
            expires=_unix(attrs["exp"], "exp") if "exp" in attrs else UNSET,
            tags=_tags(body.get("tags")),
        )
        return JSONResponse(key_bundle(ctx.host, view))

    async def delete(self, ctx: Context) -> Response:
        """``DELETE /keys/{name}``: soft delete."""
        return JSONResponse(deleted_bundle(ctx.host, await self.service.delete_key(ctx.vault.name, ctx.name)))

    async def get_deleted(self, ctx: Context) -> Response:
        """``GET /deletedkeys/{name}``."""
        return JSONResponse(deleted_bundle(ctx.host, await self.service.get_deleted(ctx.vault.name, ctx.name)))

    async def recover(self, ctx: Context) -> Response:
        """``POST /deletedkeys/{name}/recover``."""
        return JSONResponse(key_bundle(ctx.host, await self.service.recover(ctx.vault.name, ctx.name)))

    async def purge(self, ctx: Context) -> Response:
        """``DELETE /deletedkeys/{name}``: 204, or 403 under purge protection."""
        await self.service.purge(ctx.vault.name, ctx.name)
        return Response(status_code=204)

    async def rotate(self, ctx: Context) -> Response:
        """``POST /keys/{name}/rotate``."""
        return JSONResponse(key_bundle(ctx.host, await self.service.rotate(ctx.vault.name, ctx.name)))

    async def backup(self, ctx: Context) -> Response:
        """``POST /keys/{name}/backup``: ``{"value": <opaque blob, base64url>}``."""
        blob = await self.service.backup(ctx.vault.name, ctx.name)
        return JSONResponse({"value": _b64(blob)})

    async def restore(self, ctx: Context) -> Response:
        """``POST /keys/restore``."""
        body = await ctx.body()
        blob = _unb64(body.get("value"), "value")
        return JSONResponse(key_bundle(ctx.host, await self.service.restore(ctx.vault.name, blob)))

    def _rotation_policy_json(self, ctx: Context, view: KeyView) -> dict[str, Any]:
        policy = view.key.rotation_policy or DEFAULT_ROTATION_POLICY
        return {
            "id": f"https://{ctx.host}/keys/{view.key.name}/rotationpolicy",
            "lifetimeActions": policy.get("lifetimeActions") or [],
            "attributes": policy.get("attributes") or {},
        }

    async def get_rotation_policy(self, ctx: Context) -> Response:
        """``GET /keys/{name}/rotationpolicy``."""
        view = await self.service.get_key(ctx.vault.name, ctx.name)
        return JSONResponse(self._rotation_policy_json(ctx, view))

    async def set_rotation_policy(self, ctx: Context) -> Response:
        """``PUT /keys/{name}/rotationpolicy``."""
        view = await self.service.set_rotation_policy(ctx.vault.name, ctx.name, await ctx.body())
        return JSONResponse(self._rotation_policy_json(ctx, view))

    # Lists --------------------------------------------------------------------------------------------------------

    def _page(self, ctx: Context, items: list[dict[str, Any]]) -> Response:
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
        views = await self.service.list_keys(ctx.vault.name)
        return self._page(ctx, [key_item(ctx.host, v, versioned=False) for v in views])

    async def list_versions(self, ctx: Context) -> Response:
        """``GET /keys/{name}/versions``."""
        views = await self.service.list_versions(ctx.vault.name, ctx.name)
        return self._page(ctx, [key_item(ctx.host, v, versioned=True) for v in views])

    async def list_deleted(self, ctx: Context) -> Response:
        """``GET /deletedkeys``."""
        views = await self.service.list_keys(ctx.vault.name, deleted=True)
        items = [{**key_item(ctx.host, v, versioned=False), **_deleted_fields(ctx.host, v)} for v in views]
        return self._page(ctx, items)

    # Cryptography -------------------------------------------------------------------------------------------------

    def _crypto_handler(self, op: str) -> Handler:
        async def handler(ctx: Context) -> Response:
            return await self._crypto(ctx, op)

        return handler

    async def _crypto(self, ctx: Context, op: str) -> Response:
        view = await self.service.get_key(ctx.vault.name, ctx.name, ctx.version)
        key_op = {"wrapkey": "wrapKey", "unwrapkey": "unwrapKey"}.get(op, op)
        self._check_usable(view, key_op)
        body = await ctx.body()
        alg = body.get("alg")
        if not isinstance(alg, str):
            raise errors.bad_parameter("Property alg is required.")
        value = _unb64(body.get("value"), "value")
        kid = key_id(ctx.host, view)
        try:
            if op in ("encrypt", "wrapkey"):
                public = crypto.public_key_from_parts(view.version.n, view.version.e)
                return JSONResponse({"kid": kid, "value": _b64(crypto.encrypt(public, alg, value))})
            if op in ("decrypt", "unwrapkey"):
                plain = crypto.decrypt(self.service.private_key(view), alg, value)
                return JSONResponse({"kid": kid, "value": _b64(plain)})
            if op == "sign":
                return JSONResponse(
                    {"kid": kid, "value": _b64(crypto.sign_digest(self.service.private_key(view), alg, value))}
                )
            digest = _unb64(body.get("digest"), "digest")
            public = crypto.public_key_from_parts(view.version.n, view.version.e)
            return JSONResponse({"value": crypto.verify_digest(public, alg, digest, value)})
        except crypto.CryptoError as exc:
            raise errors.bad_parameter(str(exc)) from None

    def _check_usable(self, view: KeyView, key_op: str) -> None:
        v, now = view.version, self.service.now()
        if not v.enabled:
            raise errors.key_operation_forbidden(key_op, "on a disabled key", "KeyDisabled")
        if v.not_before is not None and now < v.not_before:
            raise errors.key_operation_forbidden(key_op, "on a key that is not yet valid", "KeyNotYetValid")
        if v.expires is not None and now >= v.expires:
            raise errors.key_operation_forbidden(key_op, "on an expired key", "KeyExpired")
        if key_op not in v.key_ops:
            raise errors.key_operation_forbidden(key_op, "by this key's key_ops", "KeyOperationForbidden")


def _unverified_claim(token: str, claim: str) -> str:
    try:
        return str(jwt.decode(token, options={"verify_signature": False}).get(claim, ""))
    except jwt.PyJWTError:
        return ""
