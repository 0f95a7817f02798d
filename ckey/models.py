"""Domain types of Customer Key, with the seed's rules as validators.

Every validation error carries a rule id as its pydantic error type (``dep-name-no-spaces``,
``key-uri-format``, ``two-keys-two-vaults`` ...), so the API can name the rule an input broke.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetPydanticSchema,
    StringConstraints,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError, core_schema


class Role(StrEnum):
    """What a caller may do. ``admin`` may do everything."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    APPROVER = "approver"
    ADMIN = "admin"


class Workload(StrEnum):
    """The Microsoft 365 workloads whose data at rest Customer Key protects."""

    EXCHANGE = "exchange"
    """Mailbox DEPs (New-DataEncryptionPolicy)."""
    SHAREPOINT = "sharepoint"
    """SharePoint and OneDrive, one DEP per geo (Register-SPODataEncryptionPolicy)."""
    MULTI_WORKLOAD = "multi_workload"
    """The tenant-wide multi-workload DEP (New-M365DataAtRestEncryptionPolicy), Windows 365 included."""


class ServicePrincipal(StrEnum):
    """Application ids of the Microsoft 365 service principals that need get/wrapKey/unwrapKey on the keys."""

    MICROSOFT_365 = "c066d759-24ae-40e7-a56f-027002b5d3e4"
    EXCHANGE_ONLINE = "00000002-0000-0ff1-ce00-000000000000"
    SHAREPOINT_ONLINE = "00000003-0000-0ff1-ce00-000000000000"

    @classmethod
    def for_workload(cls, workload: Workload) -> ServicePrincipal:
        """The principal that unwraps a workload's keys."""
        return _PRINCIPAL_OF[workload]


_PRINCIPAL_OF = {
    Workload.EXCHANGE: ServicePrincipal.EXCHANGE_ONLINE,
    Workload.SHAREPOINT: ServicePrincipal.SHAREPOINT_ONLINE,
    Workload.MULTI_WORKLOAD: ServicePrincipal.MICROSOFT_365,
}


class SpoState(StrEnum):
    """Encryption state of a SharePoint/OneDrive geo, as Get-SPODataEncryptionPolicy reports it."""

    UNREGISTERED = "Unregistered"
    REGISTERING = "Registering"
    REGISTERED = "Registered"
    ROLLING = "Rolling"
    RECOVERY = "Recovery"
    """Recovery mode: Microsoft recovered the geo with its availability key after the customer lost access to its
    keys; Restore-SPODataEncryptionPolicy gives it new keys (the text is the sandbox's: Microsoft does not publish
    it)."""


def rule_error(rule: str, message: str, **context: Any) -> PydanticCustomError:
    """A validation error whose type is the rule id, so callers can name the broken rule."""
    return PydanticCustomError(rule, f"{message} [rule: {rule}]", context or None)


# Identities and free text ------------------------------------------------------------------------------------------

IDENTITY_MAX = 320
"""Longest mailbox identity accepted: an SMTP address is at most 320 characters (RFC 3696)."""
CONTROL_CLASS = r"\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
"""The refused characters as the body of a regex character class (Python and ECMA-262 read it alike)."""
_CONTROL = re.compile(f"[{CONTROL_CLASS}]")
"""NUL, C0 and C1 control characters, the Unicode line and paragraph separators, and the bidirectional embedding,
override and isolate controls (which make an audit line read differently from what it holds)."""


def has_control_characters(value: str) -> bool:
    """Whether ``value`` holds NUL, a control character or a line break of any kind."""
    return _CONTROL.search(value) is not None


def _refuse_control_characters(what: str, value: str) -> None:
    """Raise ``no-control-characters`` when ``value`` holds one (``what`` names the field in the message)."""
    if has_control_characters(value):
        raise rule_error(
            "no-control-characters",
            f"{what} can't contain NUL, control characters or line breaks: {{value}}",
            value=repr(value),
        )


_ADDRESS_LOCAL = f'[^\\s@"(),:;<>\\[\\]\\\\{CONTROL_CLASS}]+'
"""The part of an SMTP address or UPN before the ``@``: no space, no separator or quoting character of RFC 5322."""
_ADDRESS_DOMAIN = r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
"""A DNS domain of two labels or more (Microsoft 365 accepted domains are ASCII)."""
_ALIAS_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_ALIAS = rf"{_ALIAS_ATOM}(?:\.{_ALIAS_ATOM})*"
"""An Exchange alias (mailNickname): letters, digits, the characters RFC 5322 allows in an atom, inner dots.

A GUID (ExchangeGuid, ExternalDirectoryObjectId) has this shape too."""
IDENTITY_SHAPE = f"(?:{_ADDRESS_LOCAL}@{_ADDRESS_DOMAIN}|{_ALIAS})"
"""What a mailbox identity looks like: an SMTP address or UPN (``local@domain``), an alias, or a GUID."""
_IDENTITY = re.compile(rf"{IDENTITY_SHAPE}\Z")


def check_identity(value: str, *, rule: str = "mailbox-identity", what: str = "a mailbox identity") -> str:
    """The identity rule: an SMTP address, a UPN, an alias or a GUID, stripped, bounded, one clean line.

    Stripped, not empty, at most :data:`IDENTITY_MAX` characters, no control characters, and of the shape of
    :data:`IDENTITY_SHAPE`.
    A display name (``Alice Smith``) or any text with spaces, brackets or quotes is refused: Exchange would look it
    up as a name, and a CSV of garbage (a JSON array, a multipart boundary) must not become mailbox names.

    Args:
        value: the identity as given.
        rule: the rule id of an empty identity; ``<rule>-length`` is the id of a too long one.
        what: how the message names the value.

    Returns:
        The stripped identity.

    Raises:
        PydanticCustomError: ``<rule>``, ``<rule>-length``, ``no-control-characters`` or ``<rule>-format``.
    """
    value = value.strip()
    if not value:
        raise rule_error(rule, f"{what} can't be empty")
    if len(value) > IDENTITY_MAX:
        raise rule_error(
            f"{rule}-length", f"{what} is at most {IDENTITY_MAX} characters, got {{length}}", length=len(value)
        )
    _refuse_control_characters(what, value)
    if not _IDENTITY.match(value):
        raise rule_error(
            f"{rule}-format",
            f"{what} is an SMTP address, a UPN, an alias or a GUID (no spaces, quotes or brackets), got {{value}}",
            value=repr(value),
        )
    return value


def located(error: PydanticCustomError, where: str) -> PydanticCustomError:
    """The same rule error, its message prefixed with where the value was (``row 3``, ``mailbox 12``)."""
    # One context key only: pydantic-core substitutes keys one after the other, so a second key's placeholder
    # written inside the first value (user text) would be substituted too.
    return PydanticCustomError(error.type, f"{where}: {{detail}}", {"detail": error.message()})


def _check_recipient_identity(value: str) -> str:
    return check_identity(value)


RecipientIdentity = Annotated[
    str,
    AfterValidator(_check_recipient_identity),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": IDENTITY_MAX,
            "pattern": f"^{IDENTITY_SHAPE}$",
        }
    ),
]
"""A mailbox or mail user identity (SMTP address, UPN, alias or GUID): stripped, 1-320 characters, no control
characters."""

DESCRIPTION_MAX = 1024
"""Longest description (New-DataEncryptionPolicy's -Description)."""


def _check_description(value: str) -> str:
    # PowerShell and Exchange take tabs and line breaks in a description, but the audit trail renders the cmdlet on
    # one line and a line break there could forge a second line: every control character is refused, tab included.
    _refuse_control_characters("a description", value)
    if len(value) > DESCRIPTION_MAX:
        raise rule_error(
            "description-length",
            f"a description is at most {DESCRIPTION_MAX} characters, got {{length}}",
            length=len(value),
        )
    return value


Description = Annotated[
    str,
    AfterValidator(_check_description),
    WithJsonSchema({"type": "string", "maxLength": DESCRIPTION_MAX, "pattern": f"^[^{CONTROL_CLASS}]*$"}),
]
"""Free text shown next to an object (a DEP's description): at most 1024 characters, one line, no control characters."""


# DEP names -------------------------------------------------------------------------------------------------------

_DEP_NAME_MAX = 64


def _check_dep_name(value: str) -> str:
    if not value:
        raise rule_error("dep-name-required", "a DEP needs a name")
    _refuse_control_characters("a DEP name", value)
    if re.search(r"\s", value):
        raise rule_error("dep-name-no-spaces", "DEP names can't contain spaces: {name}", name=repr(value))
    if len(value) > _DEP_NAME_MAX:
        raise rule_error("dep-name-length", f"DEP names are at most {_DEP_NAME_MAX} characters")
    return value


DepName = Annotated[
    str,
    AfterValidator(_check_dep_name),
    WithJsonSchema(
        {"type": "string", "minLength": 1, "maxLength": _DEP_NAME_MAX, "pattern": f"^[^\\s{CONTROL_CLASS}]+$"}
    ),
]
"""A DEP name: no spaces (seed: "Names can't contain spaces")."""


# Key Vault key URIs ----------------------------------------------------------------------------------------------

AZURE_VAULT_SUFFIXES = (
    "vault.azure.net",
    "vault.azure.cn",
    "vault.usgovcloudapi.net",
    "vault.microsoftazure.de",
)
KEY_URI_MAX = 256
"""Longest key URI: ``https://`` + a 24-character vault + the longest suffix + ``/keys/`` + 127 + ``/`` + 32 is 223."""

# The sandbox is addressed under Azure's own names (NOTES.md): no other host form and no port is a key URI, since
# the SDK's challenge check refuses any host outside the vault's resource and an operation would retry forever.
_VAULT_NAME = re.compile(r"[A-Za-z](?!.*--)[A-Za-z0-9-]{1,22}[A-Za-z0-9]\Z")
_KEY_NAME = re.compile(r"[A-Za-z0-9-]{1,127}\Z")
_KEY_VERSION = re.compile(r"[A-Za-z0-9]{32}\Z")
_URI = re.compile(r"https://(?P<host>[^/:\s]+)/keys/(?P<name>[^/\s]+)(?:/(?P<version>[^/\s]*))?/?\Z")
# ``re.match`` anchors at the start; every pattern ends with ``\Z`` because ``$`` also matches before a final "\n".


@dataclass(frozen=True, slots=True)
class KeyUri:
    """A parsed Key Vault key identifier."""

    vault: str
    """The vault's name (case-insensitive in Azure; kept as written)."""
    host: str
    name: str
    version: str | None = None
    port: int | None = None
    """Never set by :meth:`parse` (key URIs carry no port); kept for callers that build a ``KeyUri`` themselves."""

    @property
    def vault_url(self) -> str:
        """The vault's base URL, as the Key Vault SDK takes it."""
        return f"https://{self.host}" + (f":{self.port}" if self.port else "")

    @property
    def versionless(self) -> str:
        """The URI without a version."""
        return f"{self.vault_url}/keys/{self.name}"

    def __str__(self) -> str:
        return self.versionless + (f"/{self.version}" if self.version else "")

    @classmethod
    def parse(cls, text: str) -> KeyUri:
        """Parse ``https://<vault>.vault.azure.net/keys/<name>[/<version>]`` (or another Azure cloud's suffix).

        Raises:
            PydanticCustomError: the text breaks the ``key-uri-format`` rule (or ``no-control-characters``,
                ``key-vault-name``, ``key-name``, ``key-version``).
        """
        stripped = text.strip()
        if len(stripped) > KEY_URI_MAX:
            raise rule_error(
                "key-uri-format", f"a key URI is at most {KEY_URI_MAX} characters, got {{length}}", length=len(stripped)
            )
        _refuse_control_characters("a key URI", stripped)
        m = _URI.match(stripped)
        if not m:
            raise rule_error(
                "key-uri-format",
                "a key URI looks like https://<vault>.vault.azure.net/keys/<name>[/<version>]: {uri}",
                uri=repr(text),
            )
        host = m["host"].lower()
        vault, _, suffix = host.partition(".")
        if suffix not in AZURE_VAULT_SUFFIXES:
            raise rule_error(
                "key-uri-format",
                "the host of a key URI is <vault>.vault.azure.net (or another Azure cloud's vault suffix): {uri}",
                uri=repr(text),
            )
        _check_vault_name(vault)
        if not _KEY_NAME.match(m["name"]):
            raise rule_error(
                "key-name", "key names are 1-127 letters, digits and hyphens: {name}", name=repr(m["name"])
            )
        version = m["version"] or None
        if version is not None and not _KEY_VERSION.match(version):
            raise rule_error(
                "key-version", "a key version is 32 hexadecimal characters: {version}", version=repr(version)
            )
        return cls(vault=vault, host=host, name=m["name"], version=version)


def _check_vault_name(value: str) -> str:
    if not _VAULT_NAME.match(value):
        raise rule_error(
            "key-vault-name",
            "vault names are 3-24 letters, digits and single hyphens, starting with a letter: {vault}",
            vault=repr(value),
        )
    return value


VaultName = Annotated[
    str,
    AfterValidator(_check_vault_name),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 3,
            "maxLength": 24,
            "pattern": "^(?!.*--)[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]$",
        }
    ),
]
"""An Azure Key Vault name."""

_UPN_PART = r"[^@\s/\\?%" + CONTROL_CLASS + "]+"
_UPN = re.compile(rf"{_UPN_PART}@{_UPN_PART}\.{_UPN_PART}\Z")
"""One ``@``, a dot in the domain, and none of the characters that would leave a URL path segment (``/ \\ ? %``):
Entra refuses them in UPNs, and a UPN becomes one path segment of a Graph URL."""


def _check_user_principal_name(value: str) -> str:
    if len(value) > IDENTITY_MAX:
        raise rule_error(
            "user-principal-name-length",
            f"a user principal name is at most {IDENTITY_MAX} characters, got {{length}}",
            length=len(value),
        )
    _refuse_control_characters("a user principal name", value)
    if value.lower() in {sp.value for sp in ServicePrincipal}:
        raise rule_error(
            "m365-principal-protected",
            "the Microsoft 365 service principals' access is removed only by the data purge path: {principal}",
            principal=value,
        )
    if not _UPN.match(value):
        raise rule_error(
            "user-principal-name", "a user principal name looks like alice@contoso.com: {upn}", upn=repr(value)
        )
    return value


UserPrincipalName = Annotated[
    str,
    AfterValidator(_check_user_principal_name),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 3,
            "maxLength": IDENTITY_MAX,
            "pattern": f"^{_UPN_PART}@{_UPN_PART}\\.{_UPN_PART}$",
        }
    ),
]
"""A person's UPN; never one of the Microsoft 365 service principals."""


def _parse_key_uri(value: Any) -> KeyUri:
    if isinstance(value, KeyUri):
        return value
    if not isinstance(value, str):
        raise rule_error("key-uri-format", "a key URI is a string")
    return KeyUri.parse(value)


KeyUriField = Annotated[
    KeyUri,
    GetPydanticSchema(
        lambda _t, _h: core_schema.no_info_plain_validator_function(
            _parse_key_uri,
            json_schema_input_schema=core_schema.str_schema(max_length=KEY_URI_MAX),
            serialization=core_schema.to_string_ser_schema(),
        )
    ),
]
"""A key URI in a pydantic model: validated on input, a string on output."""


def check_two_keys(uris: Sequence[KeyUri], regions: Mapping[str, str] | None = None) -> tuple[KeyUri, KeyUri]:
    """The two-keys rule: exactly two keys, in two different vaults, in two different regions where known.

    Args:
        uris: the DEP's key URIs.
        regions: vault name (lower case) to Azure region, for the vaults whose region is known.

    Raises:
        PydanticCustomError: ``two-keys`` / ``two-keys-two-vaults`` / ``two-keys-two-regions``.
    """
    if len(uris) != 2:
        raise rule_error("two-keys", "a DEP names exactly two keys, got {count}", count=len(uris))
    first, second = uris
    if first.vault.lower() == second.vault.lower():
        raise rule_error(
            "two-keys-two-vaults",
            "the two keys must be in two different vaults; both are in {vault}",
            vault=repr(first.vault),
        )
    if regions:
        r1, r2 = regions.get(first.vault.lower()), regions.get(second.vault.lower())
        if r1 and r2 and r1.lower() == r2.lower():
            raise rule_error(
                "two-keys-two-regions",
                "the two vaults must be in two different Azure regions; both are in {region}",
                region=repr(r1),
            )
    return first, second


def _split_uris(value: Any) -> Any:
    # The seed writes the two URIs as one argument separated by a comma and a space.
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list) and len(value) > 2:
        # Counted before each URI is parsed, so a list of a million URIs costs nothing.
        raise rule_error("two-keys", "a DEP names exactly two keys, got {count}", count=len(value))
    return value


def _two_keys(value: list[KeyUri]) -> list[KeyUri]:
    return list(check_two_keys(value))


TwoKeyUris = Annotated[
    list[KeyUriField],
    BeforeValidator(_split_uris),
    AfterValidator(_two_keys),
    WithJsonSchema(
        {"type": "array", "items": {"type": "string", "maxLength": KEY_URI_MAX}, "minItems": 2, "maxItems": 2}
    ),
]
"""A DEP's ``AzureKeyIDs``: two key URIs in two different vaults (regions are checked against the vaults)."""


def _check_key_name(value: str) -> str:
    if not _KEY_NAME.match(value):
        raise rule_error("key-name", "key names are 1-127 letters, digits and hyphens: {name}", name=repr(value))
    return value


def _check_key_version(value: str) -> str:
    if not _KEY_VERSION.match(value):
        raise rule_error("key-version", "a key version is 32 hexadecimal characters: {version}", version=repr(value))
    return value


KeyName = Annotated[
    str,
    AfterValidator(_check_key_name),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 127, "pattern": "^[A-Za-z0-9-]{1,127}$"}),
]
"""A Key Vault key's name."""
KeyVersion = Annotated[
    str,
    AfterValidator(_check_key_version),
    WithJsonSchema({"type": "string", "minLength": 32, "maxLength": 32, "pattern": "^[A-Za-z0-9]{32}$"}),
]
"""A Key Vault key version (32 characters)."""


class SpoKeyRef(BaseModel):
    """One key of a geo's DEP as Register- and Update-SPODataEncryptionPolicy name it: vault, key, version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vault: VaultName
    key: KeyName
    version: KeyVersion

    def uri(self, vault_dns_suffix: str = "vault.azure.net") -> KeyUri:
        """The key URI (``https://<vault>.<suffix>/keys/<key>/<version>``)."""
        return KeyUri(
            vault=self.vault, host=f"{self.vault.lower()}.{vault_dns_suffix}", name=self.key, version=self.version
        )

    @classmethod
    def of(cls, uri: KeyUri) -> SpoKeyRef:
        """The reference to a versioned key URI.

        Raises:
            PydanticCustomError: ``key-version``: the URI names no version (SharePoint's cmdlets need one).
        """
        if uri.version is None:
            raise rule_error("key-version", "SharePoint names a key with its version: {uri}", uri=str(uri))
        return cls(vault=uri.vault, key=uri.name, version=uri.version)


# Key backups ------------------------------------------------------------------------------------------------------


KEY_BACKUP_ID_PATTERN = r"^kb-[0-9a-f-]{36}$"
KEY_BACKUP_ID = re.compile(r"kb-[0-9a-f-]{36}\Z")
r"""``KEY_BACKUP_ID_PATTERN`` for ``re.match``: ``\Z``, as ``$`` would let a final line break through."""


def _check_key_backup_id(value: str) -> str:
    if not KEY_BACKUP_ID.match(value):
        raise rule_error(
            "key-backup-id",
            "a key backup is named by the id its upload answered, kb-<uuid>: {value}",
            value=repr(value[:60]),
        )
    return value


KeyBackupId = Annotated[
    str,
    StringConstraints(max_length=39),
    AfterValidator(_check_key_backup_id),
    WithJsonSchema({"type": "string", "pattern": KEY_BACKUP_ID_PATTERN, "maxLength": 39}),
]
"""The id of an uploaded key backup, ``kb-<uuid>`` (``^kb-[0-9a-f-]{36}$``)."""


# What the gateways report (the activities' results carry them) ------------------------------------------------


class AccessPolicy(BaseModel):
    """One access policy entry of a vault (legacy permission model)."""

    object_id: str
    principal: str | None = None
    """Who holds it: a user's UPN, else the principal's display name (Microsoft Graph); ``None`` when unknown."""
    principal_type: str | None = None
    """``user``, ``servicePrincipal`` or ``group`` (Microsoft Graph); ``None`` when the directory was not asked."""
    display_name: str | None = None
    user_principal_name: str | None = None
    application_id: str | None = None
    """A service principal's application id (the policy's own, else Microsoft Graph's ``appId``)."""
    microsoft_365: bool = False
    """One of the Microsoft 365 service principals Customer Key grants: ckey never revokes it."""
    ckey: bool = False
    """ckey's own principal: ckey never revokes it (it would lock itself out)."""
    keys: list[str] = Field(default_factory=list)


class VaultInfo(BaseModel):
    """A vault's properties as the ARM control plane reports them (Get-AzKeyVault)."""

    name: str
    resource_id: str
    resource_group: str
    region: str
    tenant_id: str
    vault_uri: str
    soft_delete: bool
    retention_days: int | None = None
    purge_protection: bool
    rbac: bool
    access_policies: list[AccessPolicy] = Field(default_factory=list)


class KeyInfo(BaseModel):
    """A key's current version and attributes."""

    uri: str
    """The versioned key identifier."""
    vault: str
    name: str
    version: str
    kty: str
    key_size: int | None = None
    enabled: bool
    expires_on: datetime | None = None
    created_on: datetime | None = None
    recovery_level: str | None = None


class VaultSummary(BaseModel):
    """A vault as the read side shows it: region, permission model, soft delete, purge protection, its keys."""

    name: str
    region: str
    permission_model: str
    """``access_policy`` (legacy) or ``rbac``."""
    soft_delete: bool
    retention_days: int | None
    purge_protection: bool
    vault_uri: str
    keys: list[KeyInfo] = Field(default_factory=list)
    keys_error: str | None = None
    """Why its keys could not be listed (Key Vault's refusal: ckey lacks ``list``/``get`` there); the other vaults
    are still shown."""
    seen_at: datetime | None = None
    """When ckey last read it from Azure (the inventory's time for it)."""


class DeletedKeyInfo(BaseModel):
    """A soft-deleted key."""

    name: str
    vault: str
    deleted_on: datetime | None = None
    scheduled_purge_date: datetime | None = None
    recovery_id: str | None = None


class FollowCounts(BaseModel):
    """How far the mailboxes of one operation are."""

    total: int = 0
    assigned: int = 0
    encrypted: int = 0
    failed: int = 0
    escalated: int = 0
    assigned_encrypts_on_migration: int = 0
    """Mail users (hybrid, not yet migrated) that show the DEP: done, they encrypt when they migrate."""

    @property
    def done(self) -> int:
        """Recipients at the end of their follow-up: mailboxes encrypted, mail users assigned."""
        return self.encrypted + self.assigned_encrypts_on_migration

    @property
    def pending(self) -> int:
        """Recipients not yet done (failed ones excluded)."""
        return self.total - self.done - self.failed


class SupportCase(BaseModel):
    """A support case as the desk reports it."""

    id: str
    key: str
    kind: str
    status: str = "open"
    title: str = ""
    details: dict[str, Any] = Field(default_factory=dict)


# Durations ---------------------------------------------------------------------------------------------------------

_SHORT_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)(ms|w|d|h|m|s))+\Z", re.IGNORECASE)
_SHORT_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|w|d|h|m|s)", re.IGNORECASE)
_ISO_DURATION = re.compile(
    r"P(?:(\d+(?:\.\d+)?)W)?(?:(\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?\Z",
    re.IGNORECASE,
)
_UNIT_SECONDS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> timedelta:
    """A duration as operators write it: short (``7d``), ISO 8601 (``P7D``) or seconds (``30``).

    Short forms: ``7d``, ``36h``, ``1d12h``, ``90s``, ``2.5m``, ``500ms``, ``2w``. ISO 8601: ``P7D``, ``PT15M``,
    ``P1DT12H``, ``P2W``. Years and months (``P1Y``, ``P1M``) are refused: they have no fixed length.

    Raises:
        ValueError: the text is none of these, or the duration is negative; the message quotes it and the forms.
    """
    value = text.strip()
    seconds: float | None = None
    try:
        seconds = float(value)
    except ValueError:
        iso = _ISO_DURATION.match(value)
        if iso and any(iso.groups()) and not value.upper().endswith("T"):
            weeks, days, hours, minutes, secs = (float(g) if g else 0.0 for g in iso.groups())
            seconds = weeks * 604800 + days * 86400 + hours * 3600 + minutes * 60 + secs
        elif _SHORT_DURATION.match(value):
            seconds = sum(float(n) * _UNIT_SECONDS[u.lower()] for n, u in _SHORT_PART.findall(value))
    if seconds is None or seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise ValueError(f"{text!r} is not a duration: write 7d, 36h, 15m, 30s, 1d12h, or ISO 8601 such as P7D, PT15M")
    if seconds < 0:
        raise ValueError(f"{text!r} is negative: a duration is 0 or more")
    return timedelta(seconds=seconds)


def iso_duration(value: timedelta) -> str:
    """``value`` in ISO 8601 (``P7D``, ``PT15M``, ``P1DT0.5S``), the form pydantic and JSON Schema read."""
    days, rest = divmod(value.total_seconds(), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    time = "".join(
        f"{int(n) if float(n).is_integer() else round(n, 6)}{u}"
        for n, u in ((hours, "H"), (minutes, "M"), (seconds, "S"))
        if n
    )
    day = f"{int(days)}D" if days else ""
    return "P" + day + (f"T{time}" if time else "") if day or time else "PT0S"


def human_duration(delay: timedelta) -> str:
    """``7 days``, ``36 hours``, ``90 seconds``: a delay from the settings, in words (escalation texts)."""
    seconds = int(delay.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


class KeyVersionInfo(BaseModel):
    """One version of a key (``list_properties_of_key_versions``): what a key roll and the rotation watcher read."""

    uri: str
    """The versioned key identifier."""
    version: str
    enabled: bool
    created_on: datetime | None = None
    expires_on: datetime | None = None
    tags: dict[str, str] = Field(default_factory=dict)


class RotationPolicyInfo(BaseModel):
    """A key's rotation policy (``GET /keys/{name}/rotationpolicy``): whether it rotates, and the expiry it sets."""

    rotates: bool = False
    """Whether a lifetime action of type ``Rotate`` is set (Key Vault makes new versions by itself)."""
    expires_in: str | None = None
    """``attributes.expiryTime`` (ISO 8601): every version the policy makes expires that long after its creation."""
