"""The Key Vault gateway: everything ckey asks of Azure Key Vault, through the official SDKs only.

Data plane through ``azure-keyvault-keys``, vault properties and access policies through ``azure-mgmt-keyvault``,
role assignments through ``azure-mgmt-authorization``. The same code talks to a real vault or to the sandbox; only
:class:`ckey.azure.AzureConnection` differs. Retries of throttling (429 with Retry-After) and 5xx follow the SDK's
own retry policy; what still fails reaches the activity, which lets Temporal retry it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.keyvault.keys import KeyVaultKey
from azure.keyvault.keys.aio import KeyClient
from azure.keyvault.keys.crypto import KeyWrapAlgorithm
from azure.keyvault.keys.crypto.aio import CryptographyClient
from azure.mgmt.authorization.aio import AuthorizationManagementClient
from azure.mgmt.keyvault.aio import KeyVaultManagementClient
from azure.mgmt.keyvault.models import (
    AccessPolicyEntry,
    Permissions,
    VaultAccessPolicyParameters,
    VaultAccessPolicyProperties,
)
from pydantic import BaseModel

from ckey.azure import AzureConnection
from ckey.models import AccessPolicy as AccessPolicy
from ckey.models import DeletedKeyInfo as DeletedKeyInfo
from ckey.models import KeyInfo as KeyInfo
from ckey.models import KeyUri, KeyVersionInfo, RotationPolicyInfo, ServicePrincipal, VaultSummary
from ckey.models import VaultInfo as VaultInfo

log = logging.getLogger(__name__)

KEY_PERMISSIONS_FOR_SERVICE = ("get", "wrapKey", "unwrapKey")
"""What a Microsoft 365 service principal needs on each Customer Key (seed: "get, wrapKey, unwrapKey")."""

# Built-in Azure RBAC roles and the key permissions each grants at vault scope.
RBAC_ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "00482a5a-887f-4fb3-b363-3b7fe8e74483": frozenset({"*"}),  # Key Vault Administrator
    "14b46e9e-c2b7-41b4-b07b-48a6ebf60603": frozenset({"*"}),  # Key Vault Crypto Officer
    "e147488a-f6f5-4113-8e2d-b22465e65bf6": frozenset({"get", "wrapKey", "unwrapKey"}),  # Crypto Service Encryption
    "12338af0-0e69-4776-bea7-57ae8d297424": frozenset(  # Key Vault Crypto User
        {"get", "list", "wrapKey", "unwrapKey", "encrypt", "decrypt", "sign", "verify"}
    ),
    "21090545-7ca7-4776-b22c-e363652d74d2": frozenset({"get", "list"}),  # Key Vault Reader
}

SERVICE_PRINCIPAL_NAMES = {
    ServicePrincipal.MICROSOFT_365.value: "Microsoft 365 Data At Rest Encryption",
    ServicePrincipal.EXCHANGE_ONLINE.value: "Office 365 Exchange Online",
    ServicePrincipal.SHAREPOINT_ONLINE.value: "Office 365 SharePoint Online",
}


OWN_NAME = "ckey"
"""How vault listings name ckey's own principal (the app registration of ``CKEY_AZURE_CLIENT_ID``)."""


class KeyVaultError(Exception):
    """A refusal of the Key Vault service that retrying will not change (403, 409, 400).

    Args:
        status: the HTTP status.
        code: the service's error code (``Conflict``, ``Forbidden``, ``ForbiddenByRbac`` ...).
        message: the service's message.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message


def service_error(exc: HttpResponseError) -> KeyVaultError:
    """The service's code and message from an SDK error; the inner code wins (``ForbiddenByRbac``)."""
    code, message = "Error", exc.message or str(exc)
    error = getattr(exc, "error", None)
    if error is not None:
        code = error.code or code
        message = error.message or message
        inner = getattr(error, "innererror", None) or {}
        inner_code = inner.get("code") if isinstance(inner, dict) else getattr(inner, "code", None)
        if inner_code and inner_code != "AccessDenied":
            code = inner_code
    return KeyVaultError(exc.status_code or 0, code, message)


def is_business_refusal(exc: HttpResponseError) -> bool:
    """Whether retrying cannot help (bad request, forbidden, conflict); 429 and 5xx are transient."""
    return (exc.status_code or 0) in (400, 401, 403, 404, 409)


def _key_info(key: KeyVaultKey) -> KeyInfo:
    uri = KeyUri.parse(key.id)
    jwk = key.key
    # JsonWebKey sets its fields dynamically.
    modulus = vars(jwk).get("n") if jwk is not None else None
    size = len(modulus) * 8 if modulus else None
    return KeyInfo(
        uri=key.id,
        vault=uri.vault,
        name=key.name,
        version=key.properties.version or "",
        kty=str(getattr(key.key_type, "value", key.key_type)),
        key_size=size,
        enabled=bool(key.properties.enabled),
        expires_on=key.properties.expires_on,
        created_on=key.properties.created_on,
        recovery_level=key.properties.recovery_level,
    )


class Directory:
    """Object ids of users and service principals, from Microsoft Graph (the sandbox's, in sandbox mode).

    Args:
        connection: credentials and settings.
        transport: the HTTP transport for Microsoft Graph (tests pass a mock); default, httpx's own.
    """

    def __init__(self, connection: AzureConnection, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.connection = connection
        self.transport = transport
        self._own: frozenset[str] | None = None

    async def _token(self) -> str:
        token = await self.connection.credential().get_token(GRAPH_SCOPE)
        return str(token.token)

    def _http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=GRAPH_URL, timeout=30, transport=self.transport or self.connection.httpx_transport()
        )

    async def object_id(self, principal: str) -> str:
        """The object id of a user (UPN) or a service principal (application id).

        Raises:
            KeyVaultError: the principal is not a valid UPN or GUID (400, before any call), or the directory does not
                know it (404).
        """
        path = graph_principal_path(principal)
        token = await self._token()
        async with self._http() as http:
            response = await http.get(path, params={"$select": "id"}, headers={"Authorization": f"Bearer {token}"})
        if response.status_code == 404:
            raise KeyVaultError(404, "PrincipalNotFound", f"{principal} is not in the directory")
        response.raise_for_status()
        return str(response.json()["id"])

    async def own_object_ids(self) -> frozenset[str]:
        """The object ids ckey acts as: its access token's ``oid`` and its app registration's service principal.

        The token's ``oid`` names the identity ckey authenticates as whatever the credential (client secret,
        certificate, managed identity, Azure CLI); ``CKEY_AZURE_CLIENT_ID``'s service principal is added when it
        resolves. Computed once per process.
        """
        if self._own is None:
            own = {oid} if (oid := token_object_id(await self._token())) else set()
            client_id = getattr(self.connection.settings, "azure_client_id", None)
            if client_id:
                with contextlib.suppress(KeyVaultError, httpx.HTTPError):
                    own.add(await self.object_id(client_id))
            self._own = frozenset(own)
        return self._own

    async def describe(self, object_ids: Iterable[str]) -> dict[str, DirectoryObject]:
        """Users, service principals and groups by object id (``POST /v1.0/directoryObjects/getByIds``).

        Objects the directory does not know are left out, as Graph leaves them out.

        Raises:
            httpx.HTTPError: Microsoft Graph refused (403 without ``Directory.Read.All``) or failed.
        """
        ids = sorted({i for i in object_ids if i})
        found: dict[str, DirectoryObject] = {}
        if not ids:
            return found
        headers = {"Authorization": f"Bearer {await self._token()}"}
        async with self._http() as http:
            for start in range(0, len(ids), GET_BY_IDS_MAX):
                response = await http.post(
                    "/v1.0/directoryObjects/getByIds",
                    json={"ids": ids[start : start + GET_BY_IDS_MAX], "types": ["user", "servicePrincipal", "group"]},
                    headers=headers,
                )
                response.raise_for_status()
                for item in response.json().get("value", []):
                    kind = str(item.get("@odata.type", "")).removeprefix("#microsoft.graph.")
                    found[str(item["id"])] = DirectoryObject(
                        object_id=str(item["id"]),
                        type=kind or "directoryObject",
                        display_name=item.get("displayName"),
                        user_principal_name=item.get("userPrincipalName"),
                        app_id=item.get("appId"),
                    )
        return found

    async def known_names(self) -> dict[str, str]:
        """Object id → name for the principals ckey knows: the Microsoft 365 service principals and itself."""
        names = dict(SERVICE_PRINCIPAL_NAMES)
        if self.connection.settings.azure_client_id:
            names[self.connection.settings.azure_client_id] = OWN_NAME
        out: dict[str, str] = {}
        for principal, name in names.items():
            try:
                out[await self.object_id(principal)] = name
            except (KeyVaultError, httpx.HTTPError):
                continue
        return out


class DirectoryObject(BaseModel):
    """A directory object as Microsoft Graph describes it (``getByIds``)."""

    object_id: str
    type: str
    """``user``, ``servicePrincipal`` or ``group``."""
    display_name: str | None = None
    user_principal_name: str | None = None
    app_id: str | None = None


def token_object_id(token: str) -> str | None:
    """The ``oid`` claim of an Entra access token (who ckey is), read without verifying: ckey's own token."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    oid = claims.get("oid") if isinstance(claims, dict) else None
    return str(oid) if oid else None


def _is_guid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


GRAPH_URL = "https://graph.microsoft.com"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
GET_BY_IDS_MAX = 1000
"""Ids one ``directoryObjects/getByIds`` call takes at most (Graph's limit)."""
_UPN_REFUSED = re.compile(r"[/\\#?%\s\x00-\x1f\x7f-\x9f]")
"""Characters a UPN never holds that would change a Graph URL: path, fragment and query delimiters, percent
escapes, whitespace and control characters."""


def graph_principal_path(principal: str) -> str:
    """The Microsoft Graph path of a service principal (by application id) or a user (by UPN).

    The UPN is checked, then quoted as exactly one path segment, so it can only ever name a user: never another path
    (``x/../bob``), a fragment (``#``), a query (``?``) or pre-encoded text (``%40``).

    Raises:
        KeyVaultError: 400 ``upn-invalid``, for a UPN that holds such characters or is empty, ``.`` or ``..``.
    """
    if _is_guid(principal):
        # Normalised: uuid.UUID also accepts braces and a urn: prefix.
        return f"/v1.0/servicePrincipals(appId='{uuid.UUID(principal)}')"
    if not principal or principal in {".", ".."} or _UPN_REFUSED.search(principal):
        raise KeyVaultError(
            400,
            "upn-invalid",
            f"{principal!r} is not a user principal name: a UPN can't be empty or hold '/', a backslash, '#', '?', "
            "'%', whitespace or control characters",
        )
    if principal.startswith("$"):
        # Graph reads /users/$... as a system query; a UPN starting with $ is addressed as users('...').
        return "/v1.0/users('" + quote(principal.replace("'", "''"), safe="") + "')"
    return "/v1.0/users/" + quote(principal, safe="")


class KeyVaultGateway:
    """Async access to vaults and keys. One instance per process; SDK clients are cached per vault.

    Args:
        connection: credentials and transport (real Azure or the sandbox).
    """

    def __init__(self, connection: AzureConnection) -> None:
        self.connection = connection
        self.directory = Directory(connection)
        self._key_clients: dict[str, KeyClient] = {}
        self._arm: KeyVaultManagementClient | None = None
        self._authz: AuthorizationManagementClient | None = None
        self._resource_groups: dict[str, str] = {}

    async def close(self) -> None:
        """Close every SDK client this gateway opened."""
        for client in self._key_clients.values():
            await client.close()
        self._key_clients.clear()
        for mgmt in (self._arm, self._authz):
            if mgmt is not None:
                await mgmt.close()
        self._arm = self._authz = None

    # Clients ----------------------------------------------------------------------------------------------------

    def key_client(self, vault_url: str) -> KeyClient:
        """The data-plane client of one vault."""
        client = self._key_clients.get(vault_url)
        if client is None:
            client = KeyClient(vault_url, self.connection.credential(), **self.connection.client_kwargs())
            self._key_clients[vault_url] = client
        return client

    def vault_url(self, vault: str) -> str:
        """``https://<vault>.vault.azure.net`` (the host form of the configured cloud)."""
        return f"https://{vault.lower()}.{self.connection.settings.vault_dns_suffix}"

    @property
    def arm(self) -> KeyVaultManagementClient:
        """The ARM client for Microsoft.KeyVault."""
        if self._arm is None:
            self._arm = KeyVaultManagementClient(
                self.connection.credential(),
                self.connection.settings.azure_subscription_id,
                **self.connection.client_kwargs(),
            )
        return self._arm

    @property
    def authz(self) -> AuthorizationManagementClient:
        """The ARM client for role assignments."""
        if self._authz is None:
            self._authz = AuthorizationManagementClient(
                self.connection.credential(),
                self.connection.settings.azure_subscription_id,
                **self.connection.client_kwargs(),
            )
        return self._authz

    # Control plane ----------------------------------------------------------------------------------------------

    async def vaults(self) -> list[VaultInfo]:
        """Every vault of the subscription."""
        found = [self._vault_info(v) async for v in self.arm.vaults.list_by_subscription()]
        for info in found:
            self._resource_groups[info.name.lower()] = info.resource_group
        await self._name_principals([p for info in found for p in info.access_policies])
        return sorted(found, key=lambda v: v.name)

    async def vault(self, name: str) -> VaultInfo:
        """One vault's properties and access policies (Get-AzKeyVault).

        Raises:
            KeyVaultError: no such vault in the subscription (404).
        """
        group = self._resource_groups.get(name.lower())
        if group is None:
            for info in await self.vaults():
                if info.name.lower() == name.lower():
                    return info
            raise KeyVaultError(404, "ResourceNotFound", f"no vault named {name} in the subscription")
        try:
            vault = await self.arm.vaults.get(group, name)
        except ResourceNotFoundError:
            raise KeyVaultError(404, "ResourceNotFound", f"no vault named {name} in the subscription") from None
        info = self._vault_info(vault)
        await self._name_principals(info.access_policies)
        return info

    async def _name_principals(self, policies: list[AccessPolicy]) -> None:
        """Name who holds each policy (UPN or display name, application id), and mark Microsoft 365's and ckey's.

        One ``getByIds`` call for all of them. The names are a courtesy to the reader: when Microsoft Graph cannot
        answer (no ``Directory.Read.All``, an outage) the policies keep their object ids, and only ckey's own
        principal and the Microsoft 365 ones are named, from lookups ckey makes anyway.
        """
        if not policies:
            return
        m365 = {sp.value for sp in ServicePrincipal}
        names: dict[str, str] = {}
        try:
            found = await self.directory.describe(p.object_id for p in policies)
        except (httpx.HTTPError, KeyVaultError, AzureError) as exc:
            log.warning("Microsoft Graph could not name the vaults' principals: %s", exc)
            found = {}
            try:
                names = await self.directory.known_names()
            except (httpx.HTTPError, KeyVaultError, AzureError):
                names = {}
        try:
            own = await self.directory.own_object_ids()
        except (httpx.HTTPError, KeyVaultError, AzureError):
            own = frozenset()
        for policy in policies:
            obj = found.get(policy.object_id)
            if obj is not None:
                policy.principal_type = obj.type
                policy.display_name = obj.display_name
                policy.user_principal_name = obj.user_principal_name
                policy.application_id = policy.application_id or obj.app_id
                policy.principal = obj.user_principal_name or obj.display_name
            else:
                policy.principal = names.get(policy.object_id)
            policy.microsoft_365 = (obj is not None and obj.app_id in m365) or (
                names.get(policy.object_id) in SERVICE_PRINCIPAL_NAMES.values()
            )
            policy.ckey = policy.object_id in own

    def _vault_info(self, vault: Any) -> VaultInfo:
        props = vault.properties
        group = vault.id.split("/resourceGroups/")[1].split("/")[0]
        policies = [
            AccessPolicy(
                object_id=p.object_id,
                application_id=p.application_id,
                # The SDK's models are mappings too: ``.keys`` is the mapping method, the field is ["keys"].
                keys=sorted(str(k) for k in (p.permissions.get("keys") or [])),
            )
            for p in (props.access_policies or [])
        ]
        return VaultInfo(
            name=vault.name,
            resource_id=vault.id,
            resource_group=group,
            region=vault.location,
            tenant_id=props.tenant_id,
            vault_uri=props.vault_uri or "",
            soft_delete=props.enable_soft_delete is not False,
            retention_days=props.soft_delete_retention_in_days,
            purge_protection=bool(props.enable_purge_protection),
            rbac=bool(props.enable_rbac_authorization),
            access_policies=policies,
        )

    async def key_permissions(self, vault: VaultInfo, object_id: str) -> set[str]:
        """The key permissions ``object_id`` holds on ``vault``, from access policies or RBAC role assignments."""
        if not vault.rbac:
            granted: set[str] = set()
            for policy in vault.access_policies:
                if policy.object_id == object_id:
                    granted |= {p.lower() for p in policy.keys}
            return _expand(granted)
        granted = set()
        assignments = self.authz.role_assignments.list_for_scope(
            vault.resource_id, filter=f"principalId eq '{object_id}'"
        )
        async for assignment in assignments:
            if assignment.principal_id != object_id:
                continue
            role = assignment.role_definition_id.rsplit("/", 1)[-1]
            granted |= RBAC_ROLE_PERMISSIONS.get(role, frozenset())
        return _expand({p.lower() for p in granted})

    async def remove_access_policy(self, vault: VaultInfo, object_id: str) -> list[str]:
        """Remove ``object_id``'s access policy (Remove-AzKeyVaultAccessPolicy); returns the permissions it had."""
        held = next((p for p in vault.access_policies if p.object_id == object_id), None)
        if held is None:
            return []
        entry = AccessPolicyEntry(
            tenant_id=vault.tenant_id,
            object_id=object_id,
            permissions=Permissions({"keys": list(held.keys)}),
        )
        try:
            await self.arm.vaults.update_access_policy(
                vault.resource_group,
                vault.name,
                "remove",
                VaultAccessPolicyParameters(properties=VaultAccessPolicyProperties(access_policies=[entry])),
            )
        except HttpResponseError as exc:
            raise service_error(exc) from None
        return held.keys

    # Data plane -------------------------------------------------------------------------------------------------

    async def key(self, uri: KeyUri) -> KeyInfo | None:
        """The key (its latest version unless ``uri`` names one), or ``None`` when there is none."""
        try:
            key = await self.key_client(uri.vault_url).get_key(uri.name, uri.version)
        except ResourceNotFoundError:
            return None
        except HttpResponseError as exc:
            raise service_error(exc) from None
        return _key_info(key)

    async def keys(self, vault: str) -> list[KeyInfo]:
        """Every enabled or disabled key of a vault, each with its current versioned URI.

        Raises:
            KeyVaultError: the service refused (403 without ``list``/``get``, 404) or failed.
        """
        client = self.key_client(self.vault_url(vault))
        out = []
        try:
            async for props in client.list_properties_of_keys():
                out.append(_key_info(await client.get_key(props.name)))
        except HttpResponseError as exc:
            raise service_error(exc) from None
        return sorted(out, key=lambda k: k.name)

    async def deleted_key(self, uri: KeyUri) -> DeletedKeyInfo | None:
        """The soft-deleted key of that name, or ``None``."""
        try:
            deleted = await self.key_client(uri.vault_url).get_deleted_key(uri.name)
        except ResourceNotFoundError:
            return None
        except HttpResponseError as exc:
            raise service_error(exc) from None
        return DeletedKeyInfo(
            name=deleted.name,
            vault=uri.vault,
            deleted_on=deleted.deleted_date,
            scheduled_purge_date=deleted.scheduled_purge_date,
            recovery_id=deleted.recovery_id,
        )

    async def recover(self, uri: KeyUri) -> KeyInfo:
        """Recover a soft-deleted key (Undo-AzKeyVaultKeyRemoval)."""
        try:
            return _key_info(await self.key_client(uri.vault_url).recover_deleted_key(uri.name))
        except HttpResponseError as exc:
            raise service_error(exc) from None

    async def restore(self, vault: str, backup: bytes) -> KeyInfo:
        """Restore a key backup into ``vault`` (Restore-AzKeyVaultKey); 409 when a key of that name exists."""
        try:
            return _key_info(await self.key_client(self.vault_url(vault)).restore_key_backup(backup))
        except HttpResponseError as exc:
            raise service_error(exc) from None

    async def key_versions(self, uri: KeyUri) -> list[KeyVersionInfo]:
        """Every version of the key, oldest first, the current one last (Get-AzKeyVaultKey -IncludeVersions).

        Raises:
            KeyVaultError: the service refused (403 without ``list``, 404 no such key) or failed.
        """
        client = self.key_client(uri.vault_url)
        out: list[KeyVersionInfo] = []
        try:
            # Creation times are whole seconds: two versions made in one second are ordered by which one the
            # versionless URI serves (Key Vault's current version), never by their random version ids.
            current = (await client.get_key(uri.name)).properties.version
            async for props in client.list_properties_of_key_versions(uri.name):
                out.append(
                    KeyVersionInfo(
                        uri=str(props.id),
                        version=props.version or "",
                        enabled=bool(props.enabled),
                        created_on=props.created_on,
                        expires_on=props.expires_on,
                        tags=dict(props.tags or {}),
                    )
                )
        except HttpResponseError as exc:
            raise service_error(exc) from None
        epoch = datetime.min.replace(tzinfo=UTC)
        return sorted(out, key=lambda v: (v.created_on or epoch, v.version == current))

    async def create_key_version(self, uri: KeyUri, tags: dict[str, str]) -> KeyInfo:
        """A new version of the key like its current one (type, size, operations, tags), with no expiry.

        ``create_rsa_key`` under the same name rather than ``rotate_key``: a rotation takes its expiry from the key's
        rotation policy (an ``expiryTime`` there would give a Customer Key an expiry, which Microsoft 365 refuses),
        and it takes no tags, so the operation that made a version could not be told from it in one atomic step.

        Raises:
            KeyVaultError: the service refused (403 without ``create``, 404 no such key) or failed.
        """
        client = self.key_client(uri.vault_url)
        try:
            current = await client.get_key(uri.name)
            kty = str(getattr(current.key_type, "value", current.key_type))
            modulus = vars(current.key).get("n") if current.key is not None else None
            ops = [str(getattr(op, "value", op)) for op in (current.key_operations or [])]
            created = await client.create_rsa_key(
                uri.name,
                size=len(modulus) * 8 if modulus else None,
                hardware_protected=kty.endswith("-HSM"),
                key_operations=ops or None,
                enabled=True,
                tags={**(current.properties.tags or {}), **tags},
            )
        except HttpResponseError as exc:
            raise service_error(exc) from None
        return _key_info(created)

    async def rotation_policy(self, uri: KeyUri) -> RotationPolicyInfo | None:
        """The key's rotation policy; ``None`` when the vault has none to show (404) or ckey may not read it (403).

        Raises:
            KeyVaultError: another refusal or failure of the service.
        """
        try:
            policy = await self.key_client(uri.vault_url).get_key_rotation_policy(uri.name)
        except HttpResponseError as exc:
            if exc.status_code in (403, 404):
                return None
            raise service_error(exc) from None
        actions = policy.lifetime_actions or []
        rotates = any(str(getattr(a.action, "value", a.action)).lower() == "rotate" for a in actions)
        return RotationPolicyInfo(rotates=rotates, expires_in=policy.expires_in or None)

    async def crypto_round_trip(self, uri: KeyUri) -> None:
        """Prove the key answers get, wrapKey and unwrapKey: wrap 32 random bytes, unwrap them, compare.

        Raises:
            KeyVaultError: a step was refused, or the unwrapped bytes differ.
        """
        secret = os.urandom(32)
        client = self.key_client(uri.vault_url)
        try:
            key = await client.get_key(uri.name, uri.version)
            crypto = CryptographyClient(key, self.connection.credential(), **self.connection.client_kwargs())
            async with crypto:
                wrapped = await crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, secret)
                unwrapped = await crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key)
        except HttpResponseError as exc:
            raise service_error(exc) from None
        if unwrapped.key != secret:
            raise KeyVaultError(500, "RoundTripMismatch", f"{uri} unwrapped other bytes than it wrapped")


def _expand(permissions: Iterable[str]) -> set[str]:
    granted = {p.lower() for p in permissions}
    if "*" in granted or "all" in granted:
        return {"*"}
    return granted


def holds(permissions: set[str], needed: Iterable[str]) -> list[str]:
    """The permissions of ``needed`` missing from ``permissions`` (case-insensitive, ``*`` holds all)."""
    if "*" in permissions:
        return []
    return [p for p in needed if p.lower() not in permissions]


async def vault_summaries(gateway: KeyVaultGateway) -> list[VaultSummary]:
    """Every vault of the subscription with its keys (Get-AzKeyVault, then Get-AzKeyVaultKey per vault).

    A vault whose keys Key Vault refuses to list (401, 403, 404: ckey lacks ``list`` or ``get`` there) is shown
    with ``keys_error`` and no keys, so that one locked vault does not hide the others; a failure that a retry may
    cure (throttling, 5xx) is raised.
    """
    summaries = []
    for v in await gateway.vaults():
        keys: list[KeyInfo] = []
        keys_error = None
        try:
            keys = await gateway.keys(v.name)
        except KeyVaultError as exc:
            if exc.status not in (401, 403, 404):
                raise
            keys_error = f"{exc.code}: {exc.message}"
        summaries.append(
            VaultSummary(
                name=v.name,
                region=v.region,
                permission_model="rbac" if v.rbac else "access_policy",
                soft_delete=v.soft_delete,
                retention_days=v.retention_days,
                purge_protection=v.purge_protection,
                vault_uri=v.vault_uri,
                keys=keys,
                keys_error=keys_error,
            )
        )
    return summaries
