"""The sandbox's own words for Customer Key: workloads, service principals, SharePoint states, key URIs.

Written from Microsoft's documentation, not taken from ckey: a stand-in that parsed key URIs with ckey's model would
agree with ckey's mistakes instead of catching them. The values are the ones on the wire (the workload names ckey
sends to the support desk and that the tenant's database holds, the first-party application ids, the states
``Get-SPODataEncryptionPolicy`` reports), so they match ckey's by the documentation, not by import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit


class Workload(StrEnum):
    """The Microsoft 365 workloads whose data at rest a customer key protects ("Manage Customer Key")."""

    EXCHANGE = "exchange"
    """Mailbox DEPs (``New-DataEncryptionPolicy``)."""
    SHAREPOINT = "sharepoint"
    """SharePoint and OneDrive, one DEP per geo (``Register-SPODataEncryptionPolicy``)."""
    MULTI_WORKLOAD = "multi_workload"
    """The tenant-wide DEP of the other workloads (``New-M365DataAtRestEncryptionPolicy``), Windows 365 included."""


class ServicePrincipal(StrEnum):
    """Application ids of the first-party principals that reach the customer keys (get, wrapKey, unwrapKey)."""

    MICROSOFT_365 = "c066d759-24ae-40e7-a56f-027002b5d3e4"
    """Microsoft 365 Data At Rest Encryption: the multi-workload DEP's keys."""
    EXCHANGE_ONLINE = "00000002-0000-0ff1-ce00-000000000000"
    """Office 365 Exchange Online: mailbox DEPs' keys."""
    SHAREPOINT_ONLINE = "00000003-0000-0ff1-ce00-000000000000"
    """Office 365 SharePoint Online: the geos' DEP keys."""

    @property
    def display_name(self) -> str:
        """The principal's name as Entra ID and the service's error messages show it."""
        return _DISPLAY_NAMES[self]

    @classmethod
    def of(cls, workload: Workload) -> ServicePrincipal:
        """The principal that wraps and unwraps a workload's DEP keys."""
        return _PRINCIPAL_OF[workload]


_DISPLAY_NAMES = {
    ServicePrincipal.MICROSOFT_365: "Microsoft 365 Data At Rest Encryption",
    ServicePrincipal.EXCHANGE_ONLINE: "Office 365 Exchange Online",
    ServicePrincipal.SHAREPOINT_ONLINE: "Office 365 SharePoint Online",
}
_PRINCIPAL_OF = {
    Workload.EXCHANGE: ServicePrincipal.EXCHANGE_ONLINE,
    Workload.SHAREPOINT: ServicePrincipal.SHAREPOINT_ONLINE,
    Workload.MULTI_WORKLOAD: ServicePrincipal.MICROSOFT_365,
}


class SpoState(StrEnum):
    """A SharePoint/OneDrive geo's encryption state, as ``Get-SPODataEncryptionPolicy`` reports it."""

    UNREGISTERED = "Unregistered"
    REGISTERING = "Registering"
    REGISTERED = "Registered"
    ROLLING = "Rolling"
    RECOVERY = "Recovery"
    """In recovery mode (the sandbox's name: Microsoft documents the mode, not the state's text): Microsoft serves
    the geo through its availability key until Restore-SPODataEncryptionPolicy gives it new keys."""


# Key URIs ------------------------------------------------------------------------------------------------------------
#
# Key Vault's object identifiers are https://{vault-name}.{dns-suffix}/{object-type}/{object-name}[/{object-version}]
# ("About keys, secrets, and certificates"): a vault name is 3-24 characters, letters, digits and hyphens, begins with
# a letter, ends with a letter or digit and has no two hyphens in a row; an object name is 1-127 letters, digits and
# hyphens; a version is a 32-character identifier the service generates. The DNS suffix is the cloud's.

VAULT_DNS_SUFFIXES = ("vault.azure.net", "vault.azure.cn", "vault.usgovcloudapi.net", "vault.microsoftazure.de")
"""Key Vault's DNS suffixes in the public, China, US Government and Germany clouds."""
_VAULT = re.compile(r"[a-z][a-z0-9-]{1,22}[a-z0-9]")
_OBJECT_NAME = re.compile(r"[A-Za-z0-9-]{1,127}")
_VERSION = re.compile(r"[A-Za-z0-9]{32}")
_PRINTABLE = re.compile(r"[!-~]+")
"""Printable ASCII without spaces: ``urlsplit`` silently drops tabs and line breaks, so they are refused first."""


class KeyUriError(ValueError):
    """Not the identifier of a Key Vault key."""


@dataclass(frozen=True, slots=True)
class KeyUri:
    """A Key Vault key's identifier, with or without its version."""

    vault: str
    """The vault's name, in lower case (DNS names are case-insensitive)."""
    host: str
    """``<vault>.<dns suffix>``, in lower case."""
    name: str
    """The key's name, as written."""
    version: str | None = None

    @property
    def vault_url(self) -> str:
        """The vault's URL, as the Key Vault SDK clients take it."""
        return f"https://{self.host}"

    @property
    def versionless(self) -> KeyUri:
        """The same key without a version (its latest version)."""
        return KeyUri(self.vault, self.host, self.name)

    def __str__(self) -> str:
        return f"{self.vault_url}/keys/{self.name}" + (f"/{self.version}" if self.version else "")

    @classmethod
    def parse(cls, text: str) -> KeyUri:
        """Read ``https://{vault}.vault.azure.net/keys/{name}[/{version}]`` (a trailing slash is accepted).

        Raises:
            KeyUriError: anything else: another scheme or host, a port, user info, a query or fragment, another
                object type, or a vault name, key name or version outside Key Vault's rules.
        """
        text = text.strip()
        if not _PRINTABLE.fullmatch(text):
            raise KeyUriError(f"{text!r}: spaces or characters outside printable ASCII")
        parts = urlsplit(text)
        if parts.scheme != "https" or parts.query or parts.fragment or "@" in parts.netloc or ":" in parts.netloc:
            raise KeyUriError(f"{text!r}: not https://<vault>.<dns suffix>/keys/...")
        host = parts.netloc.lower()
        vault, _, suffix = host.partition(".")
        if suffix not in VAULT_DNS_SUFFIXES or not _VAULT.fullmatch(vault) or "--" in vault:
            raise KeyUriError(f"{text!r}: the host is not <vault name>.<a Key Vault DNS suffix>")
        segments = parts.path.split("/")[1:]
        if segments and segments[-1] == "" and len(segments) > 2:
            segments.pop()
        if len(segments) not in (2, 3) or segments[0] != "keys" or not _OBJECT_NAME.fullmatch(segments[1]):
            raise KeyUriError(f"{text!r}: the path is not /keys/<key name>[/<version>]")
        version = segments[2] if len(segments) == 3 else None
        if version is not None and not _VERSION.fullmatch(version):
            raise KeyUriError(f"{text!r}: a key version is a 32-character identifier")
        return cls(vault=vault, host=host, name=segments[1], version=version)
