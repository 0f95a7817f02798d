"""Key Vault's data plane (``https://<vault>.vault.azure.net/keys/...``): the gate every request goes through.

Every request goes through the same gate, in the order the service applies it: injected latency and a vault that is
down, ``api-version``, bearer challenge and token (401), injected 5xx, authorization by access policy or Azure RBAC
(403), service limits (429), then the operation: :mod:`~sandbox.keyvault.dataplane_keys` (key management) or
:mod:`~sandbox.keyvault.dataplane_crypto` (cryptography). Errors are ``{"error": {"code", "message", "innererror"}}``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence

import jwt
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

from sandbox.identity import Caller, SandboxIdentity
from sandbox.keyvault import errors
from sandbox.keyvault.access import AccessPolicies, RoleAssignments
from sandbox.keyvault.authz import OPERATIONS, Operation, caller_text, policy_permissions, rbac_allows
from sandbox.keyvault.dataplane_shapes import Context, Handler, KeyRoute
from sandbox.keyvault.db import VaultRow
from sandbox.keyvault.deleted import DeletedKeys
from sandbox.keyvault.errors import ServiceError
from sandbox.keyvault.keys import Keys, check_key_name
from sandbox.keyvault.limits import Throttle, VaultCounters, VaultLimits, cost
from sandbox.keyvault.rotation import Rotation
from sandbox.keyvault.vaults import Vaults

log = logging.getLogger(__name__)

RESOURCE = "https://vault.azure.net"
LATEST_API_VERSION = "2025-07-01"
_API_VERSION = re.compile(r"^(?:7\.[0-6](?:-preview(?:\.\d+)?)?|20\d\d-\d\d-\d\d(?:-preview)?)$")


class DataPlane:
    """The data-plane routes of every vault (the vault comes from the ``Host`` header) behind the gate.

    Args:
        routes: the operations' handlers, in matching order.
        vaults: finds the vault of the ``Host`` header.
        access: access policies (vaults not on Azure RBAC).
        roles: role assignments (vaults on Azure RBAC).
        keys: key profiles (size, HSM) that weigh a request against the limits.
        deleted: purges what is due before a request on deleted keys.
        rotation: makes the versions that rotation policies have made due before any request.
        identity: verifies bearer tokens.
        throttle: service limits and injected errors.
        counters: per-vault request counters (the control endpoint shows them).
    """

    def __init__(
        self,
        routes: Sequence[KeyRoute],
        *,
        vaults: Vaults,
        access: AccessPolicies,
        roles: RoleAssignments,
        keys: Keys,
        deleted: DeletedKeys,
        rotation: Rotation,
        identity: SandboxIdentity,
        throttle: Throttle,
        counters: defaultdict[str, VaultCounters],
    ) -> None:
        self.vaults = vaults
        self.access = access
        self.roles = roles
        self.keys = keys
        self.deleted = deleted
        self.rotation = rotation
        self.identity = identity
        self.throttle = throttle
        self.counters = counters
        self.router = Router(routes=self._routes(routes), default=self._not_found, redirect_slashes=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        await self.router(scope, receive, send)

    @staticmethod
    async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
        response = ServiceError(404, "NotFound", f"The sandbox Key Vault does not serve {scope.get('path')}.")
        await response.response()(scope, receive, send)

    def _routes(self, routes: Sequence[KeyRoute]) -> list[Route]:
        return [Route(r.path, self._endpoint(OPERATIONS[r.operation], r.handler), methods=[r.method]) for r in routes]

    def _endpoint(self, op: Operation, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            vault_name = str(request.path_params["vault"]).lower()
            counters = self.counters[vault_name]
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
        vault = await self.vaults.get_vault(vault_name)
        if vault is None:
            # In Azure the name would not resolve; the sandbox answers, so the mistake is plain.
            raise ServiceError(404, "VaultNotFound", f"The vault '{vault_name}' does not exist in the sandbox.")
        if vault.latency_ms:
            await asyncio.sleep(vault.latency_ms / 1000)
        if vault.down:
            self.counters[vault_name].faults += 1
            raise errors.service_unavailable(f"The vault '{vault.name}' is down (sandbox fault injection).")
        api_version = self._api_version(request)
        caller = self._authenticate(request, vault)
        if self.throttle.fails(vault.error_rate):
            self.counters[vault_name].faults += 1
            raise errors.service_unavailable()
        context = Context(request, vault, caller, api_version)
        await self._authorize(context, op)
        await self._charge(context, op)
        if op.on_key and context.name:
            check_key_name(context.name)
        if op.name in ("get_deleted", "list_deleted", "purge", "recover"):
            await self.deleted.purge_expired(vault.name)
        # Time passes in real seconds too: what a policy made due since the last look exists before the answer.
        await self.rotation.rotate_due(vault.name)
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
            caller = self.identity.verify(token.strip(), RESOURCE)
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
        who = caller_text(caller, self.identity.issuer)
        if vault.rbac_authorization:
            resource = vault.scope + (f"/keys/{ctx.name}" if op.on_key and ctx.name else "")
            roles = await self.roles.roles_at(caller.object_id, resource)
            if not rbac_allows(roles, op.data_action, data=True):
                raise ServiceError(
                    403,
                    "Forbidden",
                    "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny "
                    "assignments or role definitions were changed recently, please observe propagation time.\r\n"
                    f"Caller: {who}\r\nAction: '{op.data_action}'\r\nResource: '{resource.lower()}'\r\n"
                    "Assignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: 'DeniedWithNoValidRBAC' \r\n"
                    f"Vault: {vault.name};location={vault.location}\r\n",
                    inner="ForbiddenByRbac",
                )
            return
        granted: set[str] = set()
        for policy in await self.access.access_policies(vault.name):
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
            profile = await self.keys.key_profile(vault.name, ctx.name)
            if profile is not None:
                hsm, size = profile
        limits = VaultLimits(
            create=vault.create_limit if vault.create_limit is not None else VaultLimits.create,
            other=vault.other_limit if vault.other_limit is not None else VaultLimits.other,
            window=vault.limit_window_seconds or VaultLimits.window,
            retry_after=vault.retry_after_seconds,
        )
        units = cost(hsm=hsm, size=size, creates=op.creates)
        retry_after = self.throttle.charge(vault.name, limits, units, creates=op.creates)
        if retry_after is not None:
            raise errors.throttled("VaultRequestTypeLimitReached", retry_after)


def _unverified_claim(token: str, claim: str) -> str:
    try:
        return str(jwt.decode(token, options={"verify_signature": False}).get(claim, ""))
    except jwt.PyJWTError:
        return ""
