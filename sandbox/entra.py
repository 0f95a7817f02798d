"""The sandbox's Microsoft Entra ID: app registrations, the token endpoint, its discovery documents, the directory.

ckey signs in to the sandbox exactly as to Azure: ``azure-identity``'s ``ClientSecretCredential`` posts client
credentials to ``https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token``, which ckey's resolver sends to the
sandbox Key Vault's port; the access tokens it gets back are the ones :class:`sandbox.identity.SandboxIdentity`
signs and every sandbox service verifies. The client id and secret of ckey's app registration live in the sandbox's
data (:func:`ensure_app_registrations`); ``ckey up`` hands them to ckey as ``CKEY_AZURE_CLIENT_ID`` and
``CKEY_AZURE_CLIENT_SECRET`` (see ``python -m sandbox.bootstrap``).

What Entra answers and the sandbox mirrors (v2.0 endpoints, ``AADSTS`` codes in ``error_codes``):

* ``POST /{tenant}/oauth2/v2.0/token``: ``grant_type=client_credentials`` with a ``client_secret`` or a
  ``client_assertion`` (a JWT signed with a registered certificate's key, named by its ``x5t#S256`` or ``x5t``
  thumbprint, for the token endpoint's URL); a ``scope`` of ``<resource>/.default``.
* ``GET /{tenant}/v2.0/.well-known/openid-configuration``, ``GET /{tenant}/discovery/v2.0/keys`` and
  ``GET /common/discovery/instance`` (MSAL's instance discovery): what MSAL-based clients read before the token call.

The directory (:class:`SandboxDirectory`) answers the Microsoft Graph lookups ckey makes (a user by UPN, a service
principal by application id) with the object ids the sandbox's tokens carry.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import secrets
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, Router

from sandbox.identity import SandboxIdentity, object_id, scope_to_resource
from sandbox.vocabulary import ServicePrincipal

AUTHORITY = "https://login.microsoftonline.com"

FIRST_PARTY_APPS: dict[str, str] = {sp.value: sp.display_name for sp in ServicePrincipal}
"""Service principals every tenant has (application id → display name): the ones Customer Key grants."""


@dataclass(frozen=True)
class AppRegistration:
    """An application registered in the sandbox tenant, with its client secret.

    ``principal`` is who its tokens name: the sandbox's seed grants ckey's automation principal by that name
    (``settings.azure_principal``), so ckey's app signs in as it.
    """

    client_id: str
    client_secret: str
    principal: str
    display_name: str
    certificates: list[str] = field(default_factory=list)
    """Its registered certificates (PEM): a client assertion signed with one's key signs it in too."""


def registrations_path(data_dir: Path) -> Path:
    """Where the sandbox keeps its app registrations (mode 0600: it holds client secrets)."""
    return data_dir / "keys" / "sandbox-entra-apps.json"


def certificate_path(data_dir: Path, client_id: str) -> Path:
    """An app's private key and certificate, one PEM file as ``CertificateCredential`` reads it (mode 0600)."""
    return data_dir / "keys" / f"sandbox-app-{client_id}.pem"


def _write_private(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return tmp


def create_app_certificate(path: Path, client_id: str) -> str:
    """A self-signed certificate for an app's client assertions: its key and certificate go to ``path``.

    Returns:
        The certificate (PEM), for the registration.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"ckey app {client_id}")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=730))
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_private(path, key_pem + cert_pem).replace(path)
    return cert_pem.decode()


def ensure_app_registrations(data_dir: Path, automation_principal: str) -> list[AppRegistration]:
    """The sandbox tenant's app registrations.

    On first use: ckey's automation app, with a fresh client secret and certificate (:func:`certificate_path`).
    """
    path = registrations_path(data_dir)
    if not path.exists():
        client_id = str(uuid.uuid4())
        app = AppRegistration(
            client_id=client_id,
            client_secret=secrets.token_urlsafe(32),
            principal=automation_principal,
            display_name="ckey automation",
            certificates=[create_app_certificate(certificate_path(data_dir, client_id), client_id)],
        )
        tmp = _write_private(path, json.dumps({"apps": [asdict(app)]}, indent=2).encode())
        try:
            # Two processes creating it at once: the first link wins, and both read the winner's afterwards.
            os.link(tmp, path)
        except FileExistsError:
            certificate_path(data_dir, client_id).unlink(missing_ok=True)
        finally:
            tmp.unlink()
    return [AppRegistration(**entry) for entry in json.loads(path.read_text())["apps"]]


def automation_app(data_dir: Path, automation_principal: str) -> AppRegistration:
    """The app registration ckey signs in with (its automation principal's) in the sandbox tenant."""
    apps = ensure_app_registrations(data_dir, automation_principal)
    for app in apps:
        if app.principal.lower() == automation_principal.lower():
            return app
    raise LookupError(f"no app registration signs in as {automation_principal}")


JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _thumbprint(certificate: x509.Certificate, algorithm: hashes.HashAlgorithm) -> str:
    return base64.urlsafe_b64encode(certificate.fingerprint(algorithm)).rstrip(b"=").decode()


def _certificate_named(app: AppRegistration, header: dict[str, Any]) -> x509.Certificate | None:
    """The registered certificate the assertion's header names (``x5t#S256``, else the SHA-1 ``x5t``)."""
    for pem in app.certificates:
        certificate = x509.load_pem_x509_certificate(pem.encode())
        if "x5t#S256" in header:
            if str(header["x5t#S256"]).rstrip("=") == _thumbprint(certificate, hashes.SHA256()):
                return certificate
        elif str(header.get("x5t", "")).rstrip("=") == _thumbprint(certificate, hashes.SHA1()):
            return certificate
    return None


def entra_error(status: int, error: str, code: int, description: str) -> JSONResponse:
    """An Entra OAuth error body (``error``, ``error_description`` with the AADSTS code, ``error_codes``)."""
    return JSONResponse(
        {
            "error": error,
            "error_description": f"AADSTS{code}: {description}",
            "error_codes": [code],
            "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
            "trace_id": str(uuid.uuid4()),
            "correlation_id": str(uuid.uuid4()),
        },
        status_code=status,
    )


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Entra:
    """The token endpoint and discovery documents of the sandbox tenant.

    Args:
        identity: signs the access tokens.
        apps: the tenant's app registrations.
        tenant_names: the tenant's id and domains, as they may appear in the authority's path.
    """

    def __init__(self, identity: SandboxIdentity, apps: list[AppRegistration], tenant_names: set[str]) -> None:
        self.identity = identity
        self.apps = {app.client_id.lower(): app for app in apps}
        self.tenant_names = {name.lower() for name in tenant_names}

    def _tenant(self, request: Request) -> str | None:
        tenant = str(request.path_params["tenant"]).lower()
        return self.identity.tenant_id if tenant in self.tenant_names else None

    async def token(self, request: Request) -> Response:
        """``POST /{tenant}/oauth2/v2.0/token``: client credentials → an access token for one resource."""
        tenant = self._tenant(request)
        if tenant is None:
            return entra_error(400, "invalid_request", 90002, f"Tenant '{request.path_params['tenant']}' not found.")
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        if form.get("grant_type") != "client_credentials":
            return entra_error(
                400,
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type (sandbox: only client_credentials).",
            )
        client_id = form.get("client_id", "").lower()
        app = self.apps.get(client_id)
        if app is None:
            return entra_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory '{tenant}'.",
            )
        secret = form.get("client_secret")
        assertion = form.get("client_assertion")
        if assertion is not None:
            refused = self._check_assertion(request, app, form, assertion)
            if refused is not None:
                return refused
        elif secret is None:
            return entra_error(
                401, "invalid_client", 7000218, "The request body must contain 'client_assertion' or 'client_secret'."
            )
        elif not hmac.compare_digest(secret.encode(), app.client_secret.encode()):
            return entra_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret "
                f"value, not the client secret ID, for a secret added to app '{client_id}'.",
            )
        scopes = form.get("scope", "").split()
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            return entra_error(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {form.get('scope', '')} is not valid. "
                "Client credential flows must have a scope value with /.default suffixed to the resource identifier.",
            )
        token = self.identity.mint(app.principal, scope_to_resource(scopes[0]))
        lifetime = token.expires_on - int(time.time())
        return JSONResponse(
            {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token.token},
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )

    def _check_assertion(
        self, request: Request, app: AppRegistration, form: dict[str, str], assertion: str
    ) -> Response | None:
        """None when ``assertion`` signs ``app`` in, else Entra's refusal.

        It must be signed with a registered certificate's key, name the client id as ``iss`` and ``sub`` and this
        token endpoint as ``aud``, and be within its time range.
        """
        if form.get("client_assertion_type") != JWT_BEARER:
            return entra_error(
                400, "invalid_request", 700023, f"client_assertion_type must be '{JWT_BEARER}' with a client_assertion."
            )
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            return entra_error(401, "invalid_client", 50027, "Invalid JWT token: the client assertion is malformed.")
        certificate = _certificate_named(app, header)
        if certificate is None:
            return entra_error(
                401,
                "invalid_client",
                700027,
                f"The certificate with identifier used to sign the client assertion is not registered on application "
                f"'{app.client_id}'.",
            )
        token_url = f"{AUTHORITY}/{request.path_params['tenant']}/oauth2/v2.0/token"
        try:
            claims = jwt.decode(
                assertion,
                certificate.public_key(),  # type: ignore[arg-type]
                algorithms=["RS256", "PS256"],
                audience=[token_url, f"{AUTHORITY}/{self.identity.tenant_id}/oauth2/v2.0/token"],
                issuer=app.client_id,
                options={"require": ["exp", "aud", "iss", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            return entra_error(401, "invalid_client", 700024, "Client assertion is not within its valid time range.")
        except jwt.PyJWTError as exc:
            return entra_error(401, "invalid_client", 700027, f"Client assertion failed signature validation: {exc}.")
        if str(claims["sub"]).lower() != app.client_id.lower():
            return entra_error(401, "invalid_client", 700021, "Client assertion's subject is not the application.")
        return None

    async def openid_configuration(self, request: Request) -> Response:
        """``GET /{tenant}/v2.0/.well-known/openid-configuration``."""
        tenant = self._tenant(request)
        if tenant is None:
            return entra_error(400, "invalid_tenant", 90002, f"Tenant '{request.path_params['tenant']}' not found.")
        base = f"{AUTHORITY}/{tenant}"
        return JSONResponse(
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": f"{base}/v2.0",
                "request_uri_parameter_supported": False,
                "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                "tenant_region_scope": "NA",
                "cloud_instance_name": "microsoftonline.com",
                "msgraph_host": "graph.microsoft.com",
            }
        )

    async def keys(self, request: Request) -> Response:
        """``GET /{tenant}/discovery/v2.0/keys``: the public key that verifies the sandbox's tokens."""
        numbers = self.identity.public_key.public_numbers()
        return JSONResponse(
            {
                "keys": [
                    {
                        "kty": "RSA",
                        "use": "sig",
                        "kid": self.identity.key_id,
                        "n": _b64url_uint(numbers.n),
                        "e": _b64url_uint(numbers.e),
                    }
                ]
            }
        )

    async def instance_discovery(self, request: Request) -> Response:
        """``GET /common/discovery/instance``: MSAL's check that the authority is a known cloud."""
        return JSONResponse(
            {
                "tenant_discovery_endpoint": f"{AUTHORITY}/{{tenant}}/v2.0/.well-known/openid-configuration",
                "api-version": "1.1",
                "metadata": [
                    {
                        "preferred_network": "login.microsoftonline.com",
                        "preferred_cache": "login.windows.net",
                        "aliases": ["login.microsoftonline.com", "login.windows.net", "login.microsoft.com"],
                    }
                ],
            }
        )

    def router(self) -> Router:
        """The ASGI routes of ``login.microsoftonline.com``."""
        return Router(
            [
                Route("/common/discovery/instance", self.instance_discovery, methods=["GET"]),
                Route("/{tenant}/oauth2/v2.0/token", self.token, methods=["POST"]),
                Route("/{tenant}/v2.0/.well-known/openid-configuration", self.openid_configuration, methods=["GET"]),
                Route("/{tenant}/discovery/v2.0/keys", self.keys, methods=["GET"]),
            ]
        )


REMEMBERED_USERS_MAX = 10_000
"""UPNs the sandbox directory remembers at most (lookups are of administrators: a bound, not a working limit)."""

KNOWN_USERS: tuple[str, ...] = ("alice@contoso.com",)
"""Users the sandbox directory can name by object id from the start: the sandbox vaults' seeded administrator."""


def _without_context(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k != "@odata.context"}


class SandboxDirectory:
    """The directory objects Microsoft Graph returns for the lookups ckey makes, with the tokens' object ids.

    Every user principal name of the tenant resolves (the sandbox does not keep a user list: any ``name@domain``
    is a member); service principals are the first-party apps every tenant has and the tenant's app registrations.

    Args:
        tenant_id: the sandbox tenant.
        apps: its app registrations.
    """

    def __init__(self, tenant_id: str, apps: list[AppRegistration], users: tuple[str, ...] = KNOWN_USERS) -> None:
        self.tenant_id = tenant_id
        self.apps = {app.client_id.lower(): app for app in apps}
        # Object ids are hashes of the UPN: the directory can name an object id only for a UPN it has seen.
        self._users: dict[str, str] = {}
        for upn in (*users, *(app.principal for app in apps if "@" in app.principal)):
            self.user(upn)

    def user(self, upn: str) -> dict[str, Any] | None:
        """``/v1.0/users/{upn}``, or None (404) for a name that is no UPN."""
        name, at, domain = upn.partition("@")
        if not (name and at and domain):
            return None
        oid = object_id(self.tenant_id, upn)
        if len(self._users) < REMEMBERED_USERS_MAX:
            self._users.setdefault(oid, upn)
        return {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users/$entity",
            "id": oid,
            "userPrincipalName": upn,
            "displayName": name,
        }

    def by_ids(self, ids: list[str], types: list[str] | None = None) -> list[dict[str, Any]]:
        """``POST /v1.0/directoryObjects/getByIds``: the objects among ``ids`` the directory knows, of ``types``.

        Graph answers each as its own type (``@odata.type``) and leaves unknown ids out.
        """
        wanted = {t.lower() for t in types} if types else {"user", "serviceprincipal", "group"}
        principals = {object_id(self.tenant_id, app_id): app_id for app_id in FIRST_PARTY_APPS} | {
            object_id(self.tenant_id, app.principal): app.client_id for app in self.apps.values()
        }
        found: list[dict[str, Any]] = []
        for oid in ids:
            key = oid.lower()
            if key in self._users and "user" in wanted:
                entry = self.user(self._users[key]) or {}
                found.append({"@odata.type": "#microsoft.graph.user"} | _without_context(entry))
            elif key in principals and "serviceprincipal" in wanted:
                entry = self.service_principal(principals[key]) or {}
                found.append({"@odata.type": "#microsoft.graph.servicePrincipal"} | _without_context(entry))
        return found

    def service_principal(self, app_id: str) -> dict[str, Any] | None:
        """``/v1.0/servicePrincipals(appId='{app_id}')``, or None (404)."""
        try:
            app_id = str(uuid.UUID(app_id))
        except ValueError:
            return None
        if app_id in FIRST_PARTY_APPS:
            principal, name = app_id, FIRST_PARTY_APPS[app_id]
        elif app_id in self.apps:
            principal, name = self.apps[app_id].principal, self.apps[app_id].display_name
        else:
            return None
        return {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#servicePrincipals/$entity",
            "id": object_id(self.tenant_id, principal),
            "appId": app_id,
            "displayName": name,
            "servicePrincipalType": "Application",
        }
