"""Authorization as Key Vault and ARM decide it: access policies, Azure RBAC role assignments, built-in roles.

A vault uses one permission model at a time (``enableRbacAuthorization``). Access policies grant key permissions
(``get``, ``wrapKey`` ...) to an object id; RBAC grants roles whose data actions (``Microsoft.KeyVault/vaults/keys/
unwrap/action`` ...) cover the operation, at the key, the vault, or any scope above it (resource group, subscription).
ARM itself is always RBAC: the same role assignments, with the roles' control-plane actions.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, field

from sandbox.identity import Caller

KEY_PERMISSIONS = (
    "get",
    "list",
    "create",
    "update",
    "import",
    "delete",
    "recover",
    "backup",
    "restore",
    "purge",
    "encrypt",
    "decrypt",
    "wrapKey",
    "unwrapKey",
    "sign",
    "verify",
    "release",
    "rotate",
    "getrotationpolicy",
    "setrotationpolicy",
)
"""Every key permission an access policy can grant (``all`` grants them all)."""


@dataclass(frozen=True)
class Operation:
    """A data-plane operation: the access-policy permission and the RBAC data action it needs."""

    name: str
    permission: str
    data_action: str
    creates: bool = False
    """Counts against the CREATE limit instead of the "all other transactions" limit."""
    on_key: bool = True
    """Authorized at the key's scope (``.../vaults/<v>/keys/<k>``); list operations are at the vault's."""


def _key_op(name: str, permission: str, action: str, *, creates: bool = False, on_key: bool = True) -> Operation:
    return Operation(name, permission, f"Microsoft.KeyVault/vaults/{action}", creates=creates, on_key=on_key)


OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in (
        _key_op("create", "create", "keys/create/action", creates=True),
        _key_op("import", "import", "keys/import/action", creates=True),
        _key_op("get", "get", "keys/read"),
        _key_op("list", "list", "keys/read", on_key=False),
        _key_op("list_versions", "list", "keys/read"),
        _key_op("update", "update", "keys/update/action"),
        _key_op("delete", "delete", "keys/delete"),
        _key_op("get_deleted", "get", "keys/read"),
        _key_op("list_deleted", "list", "keys/read", on_key=False),
        _key_op("recover", "recover", "keys/recover/action"),
        _key_op("purge", "purge", "keys/purge/action"),
        _key_op("backup", "backup", "keys/backup/action"),
        _key_op("restore", "restore", "keys/restore/action", on_key=False),
        _key_op("rotate", "rotate", "keys/rotate/action", creates=True),
        _key_op("get_rotation_policy", "getrotationpolicy", "keyrotationpolicies/read"),
        _key_op("set_rotation_policy", "setrotationpolicy", "keyrotationpolicies/write"),
        _key_op("encrypt", "encrypt", "keys/encrypt/action"),
        _key_op("decrypt", "decrypt", "keys/decrypt/action"),
        _key_op("wrapkey", "wrapKey", "keys/wrap/action"),
        _key_op("unwrapkey", "unwrapKey", "keys/unwrap/action"),
        _key_op("sign", "sign", "keys/sign/action"),
        _key_op("verify", "verify", "keys/verify/action"),
    )
}


# Built-in role definitions ----------------------------------------------------------------------------------------

_KV_CONTROL_READ = (
    "Microsoft.Authorization/*/read",
    "Microsoft.Insights/alertRules/*",
    "Microsoft.Resources/deployments/*",
    "Microsoft.Resources/subscriptions/resourceGroups/read",
    "Microsoft.Support/*",
    "Microsoft.KeyVault/checkNameAvailability/read",
    "Microsoft.KeyVault/deletedVaults/read",
    "Microsoft.KeyVault/locations/*/read",
    "Microsoft.KeyVault/vaults/*/read",
    "Microsoft.KeyVault/operations/read",
)


@dataclass(frozen=True)
class RoleDefinition:
    """A built-in Azure role: control-plane actions and data actions, each with exclusions."""

    id: str
    role_name: str
    description: str
    actions: tuple[str, ...] = ()
    not_actions: tuple[str, ...] = ()
    data_actions: tuple[str, ...] = ()
    not_data_actions: tuple[str, ...] = field(default=())

    def allows(self, action: str, *, data: bool) -> bool:
        """Whether the role grants ``action`` (a data action when ``data``)."""
        granted, excluded = (self.data_actions, self.not_data_actions) if data else (self.actions, self.not_actions)
        return _matches_any(action, granted) and not _matches_any(action, excluded)


def _matches_any(action: str, patterns: Iterable[str]) -> bool:
    # Azure's wildcard "*" matches any run of characters, slashes included; actions compare case-insensitively.
    return any(fnmatch.fnmatchcase(action.lower(), pattern.lower()) for pattern in patterns)


BUILT_IN_ROLES: dict[str, RoleDefinition] = {
    role.id: role
    for role in (
        RoleDefinition(
            "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
            "Owner",
            "Grants full access to manage all resources, including the ability to assign roles in Azure RBAC.",
            actions=("*",),
        ),
        RoleDefinition(
            "b24988ac-6180-42a0-ab88-20f7388d85c7",
            "Contributor",
            "Grants full access to manage all resources, but does not allow you to assign roles in Azure RBAC.",
            actions=("*",),
            not_actions=(
                "Microsoft.Authorization/*/Delete",
                "Microsoft.Authorization/*/Write",
                "Microsoft.Authorization/elevateAccess/Action",
            ),
        ),
        RoleDefinition(
            "acdd72a7-3385-48ef-bd42-f606fba81ae7",
            "Reader",
            "View all resources, but does not allow you to make any changes.",
            actions=("*/read",),
        ),
        RoleDefinition(
            "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
            "User Access Administrator",
            "Lets you manage user access to Azure resources.",
            actions=("*/read", "Microsoft.Authorization/*", "Microsoft.Support/*"),
        ),
        RoleDefinition(
            "00482a5a-887f-4fb3-b363-3b7fe8e74483",
            "Key Vault Administrator",
            "Perform all data plane operations on a key vault and all objects in it, including certificates, keys, "
            "and secrets. Cannot manage key vault resources or manage role assignments.",
            actions=_KV_CONTROL_READ,
            data_actions=("Microsoft.KeyVault/vaults/*",),
        ),
        RoleDefinition(
            "14b46e9e-c2b7-41b4-b07b-48a6ebf60603",
            "Key Vault Crypto Officer",
            "Perform any action on the keys of a key vault, except manage permissions.",
            actions=_KV_CONTROL_READ,
            data_actions=("Microsoft.KeyVault/vaults/keys/*", "Microsoft.KeyVault/vaults/keyrotationpolicies/*"),
        ),
        RoleDefinition(
            "e147488a-f6f5-4113-8e2d-b22465e65bf6",
            "Key Vault Crypto Service Encryption User",
            "Read metadata of keys and perform wrap/unwrap operations.",
            actions=(
                "Microsoft.EventGrid/eventSubscriptions/write",
                "Microsoft.EventGrid/eventSubscriptions/read",
                "Microsoft.EventGrid/eventSubscriptions/delete",
            ),
            data_actions=(
                "Microsoft.KeyVault/vaults/keys/read",
                "Microsoft.KeyVault/vaults/keys/wrap/action",
                "Microsoft.KeyVault/vaults/keys/unwrap/action",
            ),
        ),
        RoleDefinition(
            "12338af0-0e69-4776-bea7-57ae8d297424",
            "Key Vault Crypto User",
            "Perform cryptographic operations using keys.",
            data_actions=(
                "Microsoft.KeyVault/vaults/keys/read",
                "Microsoft.KeyVault/vaults/keys/update/action",
                "Microsoft.KeyVault/vaults/keys/backup/action",
                "Microsoft.KeyVault/vaults/keys/encrypt/action",
                "Microsoft.KeyVault/vaults/keys/decrypt/action",
                "Microsoft.KeyVault/vaults/keys/wrap/action",
                "Microsoft.KeyVault/vaults/keys/unwrap/action",
                "Microsoft.KeyVault/vaults/keys/sign/action",
                "Microsoft.KeyVault/vaults/keys/verify/action",
            ),
        ),
        RoleDefinition(
            "21090545-7ca7-4776-b22c-e363652d74d2",
            "Key Vault Reader",
            "Read metadata of key vaults and its certificates, keys, and secrets.",
            actions=_KV_CONTROL_READ,
            data_actions=("Microsoft.KeyVault/vaults/*/read", "Microsoft.KeyVault/vaults/secrets/readMetadata/action"),
        ),
    )
}
ROLES_BY_NAME = {role.role_name.lower(): role for role in BUILT_IN_ROLES.values()}


def find_role(name_or_id: str) -> RoleDefinition | None:
    """A built-in role by name (``Key Vault Crypto User``), GUID, or full role definition id."""
    key = name_or_id.strip().lower()
    return ROLES_BY_NAME.get(key) or BUILT_IN_ROLES.get(key.rsplit("/", 1)[-1])


def role_definition_resource_id(subscription_id: str, role_id: str) -> str:
    """``/subscriptions/<sub>/providers/Microsoft.Authorization/roleDefinitions/<id>``."""
    return f"/subscriptions/{subscription_id}/providers/Microsoft.Authorization/roleDefinitions/{role_id}"


# Evaluation -------------------------------------------------------------------------------------------------------


def normalize_scope(scope: str) -> str:
    """A scope for comparison: lower case, one leading slash, no trailing slash."""
    return "/" + "/".join(part for part in scope.lower().split("/") if part)


def scope_covers(assigned: str, target: str) -> bool:
    """Whether an assignment at ``assigned`` applies to ``target`` (the same scope or one below it)."""
    a, t = normalize_scope(assigned), normalize_scope(target)
    return a == "/" or t == a or t.startswith(a + "/")


def policy_permissions(keys: Iterable[str]) -> set[str]:
    """The lower-cased key permissions an access policy's ``keys`` list grants (``all`` expands)."""
    granted = {permission.lower() for permission in keys}
    if "all" in granted:
        granted |= {permission.lower() for permission in KEY_PERMISSIONS}
    return granted


def caller_text(caller: Caller, issuer: str) -> str:
    """How Key Vault names a caller in its 403 messages."""
    who = f"appid={caller.principal}" if caller.is_application else f"upn={caller.principal}"
    return f"{who};oid={caller.object_id};iss={issuer}"


def rbac_allows(role_ids: Iterable[str], action: str, *, data: bool) -> bool:
    """Whether any of the (built-in) roles grants ``action``."""
    return any(role.allows(action, data=data) for rid in role_ids if (role := BUILT_IN_ROLES.get(rid)) is not None)
