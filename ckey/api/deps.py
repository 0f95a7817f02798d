"""Dependencies of the API routes: the Temporal client, the store, the settings, the gateways, and the caller.

Every dependency is declared here, none in a route module: a test (or another app) overrides one in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from temporalio.client import Client

from ckey.api.guard import PRINCIPAL_SCOPE_KEY
from ckey.api.problems import Problem
from ckey.auth import AuthError, Principal, TokenVerifier
from ckey.config import Settings
from ckey.keyvault import KeyVaultGateway
from ckey.m365 import M365Gateway
from ckey.models import Role
from ckey.store import Store
from ckey.windows365 import Windows365Gateway

_bearer = HTTPBearer(auto_error=False, description="A JWT with a ckey role (`ckey token` on the local stack).")


def get_settings(request: Request) -> Settings:
    """The API's settings."""
    settings: Settings = request.app.state.settings
    return settings


def get_store(request: Request) -> Store:
    """The SQL store."""
    store: Store = request.app.state.store
    return store


def get_client(request: Request) -> Client:
    """The Temporal client."""
    client: Client = request.app.state.client
    return client


def get_keyvault(request: Request) -> KeyVaultGateway:
    """The Key Vault gateway (the vault reads of ``/api/vaults``)."""
    gateway: KeyVaultGateway = request.app.state.keyvault
    return gateway


def get_m365(request: Request) -> M365Gateway:
    """The Microsoft 365 gateway (the read-only Exchange views)."""
    gateway: M365Gateway = request.app.state.m365
    return gateway


def get_m365_if_any(request: Request) -> M365Gateway | None:
    """The Microsoft 365 gateway, or ``None`` for an API embedded without one (checks that need it are skipped)."""
    gateway: M365Gateway | None = getattr(request.app.state, "m365", None)
    return gateway


def get_windows365_if_any(request: Request) -> Windows365Gateway | None:
    """The Windows 365 (Graph) gateway, or ``None`` for an API embedded without one."""
    gateway: Windows365Gateway | None = getattr(request.app.state, "windows365", None)
    return gateway


def get_principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    """The authenticated caller; 401 without a valid bearer token."""
    verified = request.scope.get(PRINCIPAL_SCOPE_KEY)
    if isinstance(verified, Principal):  # the guard checked the token before the body was read
        return verified
    challenge = {"WWW-Authenticate": 'Bearer realm="ckey"'}
    if credentials is None:
        raise Problem(401, "bearer-token-required", "this API needs a bearer token", headers=challenge)
    verifier: TokenVerifier = request.app.state.verifier
    try:
        return verifier.verify(credentials.credentials)
    except AuthError as exc:
        raise Problem(401, "bearer-token-invalid", f"the bearer token is not valid: {exc}", headers=challenge) from None


def require(role: Role) -> Callable[[Principal], Principal]:
    """A dependency that lets only callers holding ``role`` (or ``admin``) through; 403 otherwise."""

    def _check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        ensure_role(principal, role)
        return principal

    return _check


def ensure_role(principal: Principal, role: Role, what: str = "this") -> None:
    """Raise 403 unless ``principal`` holds ``role``."""
    if not principal.has(role):
        held = ", ".join(sorted(r.value for r in principal.roles)) or "none"
        raise Problem(403, "role-required", f"{what} needs the {role.value} role; {principal.user} holds: {held}")


StoreDep = Annotated[Store, Depends(get_store)]
ClientDep = Annotated[Client, Depends(get_client)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
KeyVaultDep = Annotated[KeyVaultGateway, Depends(get_keyvault)]
M365Dep = Annotated[M365Gateway, Depends(get_m365)]
OptionalM365Dep = Annotated[M365Gateway | None, Depends(get_m365_if_any)]
OptionalWindows365Dep = Annotated[Windows365Gateway | None, Depends(get_windows365_if_any)]
Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]
Caller = Annotated[Principal, Depends(get_principal)]
