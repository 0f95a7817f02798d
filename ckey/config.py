"""Settings: one pydantic-settings model for every endpoint, port, path and credential.

Every field reads from an environment variable with the ``CKEY_`` prefix (``CKEY_API_PORT`` for ``api_port``) or
from a ``.env`` file in the working directory. The defaults describe the embedded local stack that ``ckey up``
starts, except sandbox mode: that is off by default (production), and ``ckey up`` turns it on for its children.
Production overrides the rest (see ``docker-compose.yml``).
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated

import pydantic_settings
from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from ckey.models import KeyUri, Role, Workload, parse_duration

Port = Annotated[int, Field(ge=1, le=65535)]

DEP_KEYS_MAX = 16
"""Keys ``CKEY_DEP_KEYS`` may name per workload (a DEP has two; SharePoint has two per geo)."""
SPO_GEO = re.compile(r"^[A-Z]{3}\Z")
"""A SharePoint geo's code (``NAM``, ``EUR``, ``APC`` ...)."""
SPO_ADMIN_URL = re.compile(r"^https://[a-z0-9][a-z0-9-]{0,62}-admin\.sharepoint\.(com|us|de|cn)/?\Z", re.IGNORECASE)
"""A SharePoint admin site's URL: the host and nothing else (Microsoft's clouds' suffixes)."""

SEED_ESCALATION = timedelta(days=7)
"""Seed: "If the mailboxes are not encrypted after a week from the time you assigned the DEP, contact Microsoft"."""
DEFAULT_POLL_INTERVAL = timedelta(minutes=15)
"""ckey's own cadence for checking mailboxes' encryption (not the seed's: it names no cadence)."""


class AuthMode(StrEnum):
    """How the API validates bearer tokens."""

    LOCAL = "local"
    """Tokens signed by the key in the data dir, minted with ``ckey token``."""
    OIDC = "oidc"
    """Tokens of an OpenID Connect provider (issuer, audience, JWKS)."""


class M365Transport(StrEnum):
    """How cmdlets reach Microsoft 365."""

    INVOKE_COMMAND = "invoke_command"
    """The Exchange Online admin REST endpoint (``InvokeCommand``) that ExchangeOnlineManagement v3 uses."""
    PWSH = "pwsh"
    """PowerShell: the exact cmdlet line, its output through ``ConvertTo-Json``."""


def default_role_names() -> dict[Role, list[str]]:
    """Each role's default claim values: ``operator``, ``ckey.operator`` and ``ckey.Operator`` for ``operator``."""
    return {role: [role.value, f"ckey.{role.value}", f"ckey.{role.value.capitalize()}"] for role in Role}


class SettingsError(Exception):
    """A setting is invalid; the message names the environment variable."""


class Settings(BaseSettings):
    """All of ckey's configuration."""

    model_config = SettingsConfigDict(env_prefix="CKEY_", env_file=".env", extra="ignore")

    data_dir: Path = Path(".ckey")
    """Where the local stack keeps its state: Temporal's SQLite file, ckey's database, keys, logs."""

    sandbox: bool = False
    """Talk to the sandbox Key Vault and tenant of the local stack instead of Azure and Microsoft 365.

    Off unless set: a deployment that forgets ``CKEY_SANDBOX`` talks to Azure and Microsoft 365, never to stand-ins.
    ``ckey up`` turns it on for its children (unless ``CKEY_SANDBOX=false`` says otherwise), and so do the sandbox
    servers' own ``python -m sandbox.*`` entry points."""

    # Temporal
    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    temporal_task_queue: str = "ckey"
    temporal_tls: bool = False
    temporal_api_key: SecretStr | None = None
    temporal_port: Port = 7233
    """gRPC port of the dev server that ``ckey up`` starts."""
    temporal_ui_port: Port = 8233
    """Web UI port of the dev server that ``ckey up`` starts."""
    temporal_search_attributes: bool = True
    """Set ckey's custom search attributes on workflows (off only for servers that cannot hold them)."""

    # Azure (Key Vault data plane and ARM); in sandbox mode the same names resolve to the sandbox Key Vault
    azure_subscription_id: str = "00000000-0000-4000-8000-00000000c0de"
    azure_resource_group: str = "customer-key"
    azure_tenant_id: str = "72f988bf-0000-4000-8000-00000000c0de"
    azure_principal: str = "ckey-automation@contoso.com"
    """The sandbox's name for ckey's automation principal: its seed grants it, and its app registration (whose
    client id and secret ``ckey up`` passes as ``CKEY_AZURE_CLIENT_ID`` / ``_SECRET``) signs in as it."""
    azure_client_id: str | None = None
    """Application (client) id of ckey's app registration; with ``azure_client_secret`` ckey signs in with
    ``ClientSecretCredential``, without them with ``DefaultAzureCredential`` (managed identity, workload identity,
    ``AZURE_*`` variables, Azure CLI)."""
    azure_client_secret: SecretStr | None = None
    """The app registration's client secret."""
    azure_client_certificate_path: Path | None = None
    """Or its certificate: one PEM file with the private key and the certificate (``CertificateCredential``)."""
    azure_authority_host: str = "login.microsoftonline.com"
    """Microsoft Entra ID's authority host (``login.microsoftonline.us``, ``login.chinacloudapi.cn`` in other
    clouds)."""
    vault_dns_suffix: str = "vault.azure.net"
    """DNS suffix of the Key Vault data plane (``vault.azure.cn``, ``vault.usgovcloudapi.net`` in other clouds)."""
    dep_keys: dict[Workload, list[str]] = Field(
        default_factory=lambda: {
            Workload.EXCHANGE: [
                "https://contoso-eastus-kv1.vault.azure.net/keys/exo-key-01",
                "https://contoso-westus-kv1.vault.azure.net/keys/exo-key-02",
            ],
            Workload.SHAREPOINT: [
                "https://contoso-eastus-kv1.vault.azure.net/keys/spo-key-01",
                "https://contoso-westus-kv1.vault.azure.net/keys/spo-key-02",
            ],
            Workload.MULTI_WORKLOAD: [
                "https://contoso-eastus-kv1.vault.azure.net/keys/m365-key-01",
                "https://contoso-westus-kv1.vault.azure.net/keys/m365-key-02",
            ],
        }
    )
    """The Customer Keys per workload that ``keyvault.health`` checks when no keys are named (JSON)."""
    # Microsoft 365 (the cmdlets of the seed)
    m365_transport: M365Transport = M365Transport.INVOKE_COMMAND
    m365_organization: str = "contoso.onmicrosoft.com"
    """The tenant's initial domain (``Connect-ExchangeOnline -Organization``)."""
    m365_exchange_url: str = "https://outlook.office365.com"
    m365_spo_admin_url: str = "https://contoso-admin.sharepoint.com"
    """The default geo's SharePoint admin site (``Connect-SPOService -Url``)."""
    spo_geo_admin_urls: dict[str, str] = Field(
        default_factory=lambda: {
            "NAM": "https://contoso-admin.sharepoint.com",
            "EUR": "https://contosoeur-admin.sharepoint.com",
        }
    )
    """Each SharePoint geo (its code: ``NAM``, ``EUR`` ...) → its admin site, through which its DEP is registered,
    rolled and read (JSON). A single-geo tenant names one."""
    m365_spo_transport: M365Transport | None = None
    """How the SharePoint cmdlets are sent; unset: ``pwsh`` in production (SharePoint has no InvokeCommand endpoint;
    the SharePoint Online Management Shell speaks CSOM) and the sandbox's InvokeCommand stand-in in sandbox mode."""
    m365_app_id: str | None = None
    """App registration for app-only access with ``pwsh`` (``Connect-ExchangeOnline -AppId``)."""
    m365_certificate_path: Path | None = None
    """Its certificate (``-CertificateFilePath``)."""
    pwsh_path: str = "pwsh"
    support_url: str = "https://support.ckey.test"
    """Where support cases are filed (the sandbox's desk, in the Azure Support API's shape)."""
    support_contact: str = "customer-key-admins@contoso.com"
    """Who Microsoft's support answers."""
    m365_max_attempts: Annotated[int, Field(ge=1, le=20)] = 5
    """Calls per cmdlet before a throttled or failing call is handed to Temporal's retry."""
    sandbox_keyvault_port: Port = 8443
    """HTTPS port of the sandbox Key Vault (data plane and ARM, chosen by Host header)."""
    sandbox_m365_port: Port = 8444
    """HTTPS port of the sandbox tenant."""
    sandbox_m365_speed: Annotated[float, Field(gt=0, le=10_000_000)] | None = None
    """Simulated seconds per real second of the sandbox tenant's clock: unset is 1.0 (faithful durations) for
    ``python -m sandbox.m365``, and the demo speed 3600 (an hour a second) under ``ckey up``."""
    ca_file: Path | None = None
    """CA bundle that signs the sandbox's certificates; default ``<data_dir>/tls/ca.pem``."""

    # Operations: ckey's own deadlines and cadence (internal to each operation's input, recorded on it; never
    # settable by a caller of the API)
    allow_short_escalation: bool = False
    """Admin setting: allow ``exchange_escalate_after`` under the seed's week (rehearsals on the sandbox clock)."""
    exchange_escalate_after: timedelta = SEED_ESCALATION
    """How long after assignment unencrypted mailboxes are escalated to Microsoft (ISO 8601 ``P7D`` or seconds)."""
    exchange_poll_interval: Annotated[timedelta, Field(ge=timedelta(seconds=1), le=timedelta(days=1))] = (
        DEFAULT_POLL_INTERVAL
    )
    """How often the mailboxes of an assignment or verification are checked (1 s .. 1 day)."""
    exchange_assign_batch_size: Annotated[int, Field(ge=1, le=1000)] = 200
    """Mailboxes per assignment activity (each activity call assigns up to this many)."""
    # SharePoint/OneDrive (spo.dep.register, spo.dep.restore)
    spo_poll_interval: Annotated[timedelta, Field(ge=timedelta(seconds=1), le=timedelta(days=1))] = timedelta(
        minutes=15
    )
    """How often a geo is read while it registers (Get-SPODataEncryptionPolicy; 1 s .. 1 day)."""
    spo_stall_deadline: Annotated[timedelta, Field(ge=timedelta(seconds=1), le=timedelta(days=30))] = timedelta(
        hours=24
    )
    """How long a geo's percent of sites may stay unchanged before the operation escalates it (once)."""
    spo_follow_limit: Annotated[timedelta, Field(ge=timedelta(minutes=1), le=timedelta(days=365))] = timedelta(days=30)
    """How long ckey follows a geo to Registered before the operation ends failed, saying where the geo stood."""

    # Windows 365 (windows365.encrypt; m365.dep.assign passes the first three to it)
    windows365_ready_deadline: Annotated[timedelta, Field(gt=timedelta(0), le=timedelta(days=30))] = timedelta(hours=6)
    """How long after the multi-workload assignment the Intune admin center may take to be ready (the seed: 3 to 4
    hours) before ``windows365.encrypt`` escalates (once)."""
    windows365_poll_interval: Annotated[timedelta, Field(ge=timedelta(seconds=1), le=timedelta(days=1))] = timedelta(
        minutes=15
    )
    """How often ``windows365.encrypt`` reads the tenant's Cloud PC encryption setting and its bulk actions."""
    windows365_batch_size: Annotated[int, Field(ge=1, le=1000)] = 50
    """Cloud PCs per bulk action (``cloudPcBulkModifyDiskEncryptionType``)."""
    windows365_ready_limit: Annotated[timedelta, Field(gt=timedelta(0), le=timedelta(days=90))] = timedelta(days=3)
    """How long after the assignment ``windows365.encrypt`` keeps waiting for the Intune admin center after it
    escalated; then the operation fails with its reason."""

    # Multi-workload DEPs (m365.dep.assign): the assignment's window, deadline and cadence
    m365_assignment_window: Annotated[timedelta, Field(ge=timedelta(seconds=1), le=timedelta(days=7))] = timedelta(
        hours=24
    )
    """How long after Set-M365DataAtRestEncryptionPolicyAssignment ckey waits before it verifies the assignment:
    Microsoft documents no in-effect state, and up to 24 hours for it to take effect."""
    m365_assignment_deadline: Annotated[timedelta, Field(ge=timedelta(seconds=1), le=timedelta(days=14))] = timedelta(
        hours=26
    )
    """An assignment not verified in effect this long after it was made is escalated (once)."""
    m365_assignment_poll_interval: Annotated[timedelta, Field(ge=timedelta(seconds=1), le=timedelta(days=1))] = (
        timedelta(minutes=15)
    )
    """How often an assignment past its window is verified again."""

    # The inventory and the schedules that keep it (Temporal Schedules, created by the worker)
    inventory_sync_interval: Annotated[timedelta, Field(ge=timedelta(seconds=1), le=timedelta(days=7))] = timedelta(
        hours=1
    )
    """How often the ``ckey-inventory-sync`` schedule runs ``inventory.sync`` (``ckey up``: seconds)."""
    inventory_status_batch: Annotated[int, Field(ge=0, le=100_000)] = 2000
    """Mailboxes whose encryption status one ``inventory.sync`` reads at most (least recently read first)."""
    health_check_interval: Annotated[timedelta, Field(ge=timedelta(seconds=1), le=timedelta(days=7))] = timedelta(
        days=1
    )
    """How often the ``ckey-keyvault-health`` schedule checks every key in use."""
    schedules: bool = True
    """Whether the worker creates (or updates) ckey's Temporal Schedules when it starts."""
    alert_webhook_url: str | None = None
    """Where alerts (a broken key rule, an escalation) are also POSTed as JSON; unset: the log and the record."""

    # Key rolls and the rotation watcher (the key-roll family: key.roll, key.rotation.watch)
    key_rotation_watch_interval: Annotated[timedelta, Field(ge=timedelta(seconds=1), le=timedelta(days=7))] = timedelta(
        hours=1
    )
    """How often the ``ckey-key-rotation-watch`` schedule looks for key versions the workloads do not use yet."""
    key_rotation_adopt: bool = False
    """Whether the rotation watcher refreshes the workloads onto a new version by itself (``true``) or raises an
    alert and waits for a person to run ``ckey key roll VAULT KEY --adopt VERSION`` (``false``, the default: a
    refresh touches every mailbox, the tenant-wide DEP and SharePoint's geos, so a person decides when)."""
    key_roll_poll_interval: Annotated[timedelta, Field(ge=timedelta(seconds=1), le=timedelta(days=1))] = timedelta(
        minutes=5
    )
    """How often a key roll reads a SharePoint geo (Rolling to Registered) and the multi-workload DEP."""
    key_roll_spo_stall_after: Annotated[timedelta, Field(ge=timedelta(seconds=1), le=timedelta(days=30))] = timedelta(
        hours=24
    )
    """A geo whose percent of sites has not moved for this long during a roll is escalated (once)."""
    key_roll_m365_window: Annotated[timedelta, Field(ge=timedelta(0), le=timedelta(days=7))] = timedelta(hours=24)
    """How long a multi-workload DEP's refresh may take to show (``LastRefreshedDateTime``) before it is escalated;
    also the wait, then verify, where the tenant shows no refresh time (the seed's "up to 24 hours")."""

    # SQL
    database_url: str | None = None
    """SQLAlchemy URL; default a SQLite file in the data dir. PostgreSQL: ``postgresql+psycopg://...``."""

    key_backup_max_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024
    """Largest key backup (``Backup-AzKeyVaultKey``'s blob) that ``POST /api/uploads/key-backups`` accepts; real
    backups are a few KiB to about 100 KiB."""

    # API
    api_host: str = "127.0.0.1"
    api_port: Port = 8080
    api_url: str | None = None
    """Where the CLI finds the API; default ``http://{api_host}:{api_port}``."""
    api_max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024
    """Largest request body the API reads (JSON requests); larger ones get 413 while they stream."""
    upload_max_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024 * 1024)] = 20 * 1024 * 1024
    """Largest upload (``/api/uploads/...``: mailbox lists, key backups)."""
    token: SecretStr | None = None
    """Bearer token the CLI sends; ``ckey token`` mints one for the local stack."""

    # Auth
    auth_mode: AuthMode = AuthMode.LOCAL
    local_issuer: str = "ckey-local"
    audience: str = "ckey"
    oidc_issuer: str | None = None
    oidc_jwks_url: str | None = None
    roles_claim: str = "roles"
    """Claim holding the caller's roles (a list, or one string)."""
    user_claim: str = "preferred_username"
    """Claim naming the caller; ``sub`` is used when it is absent."""
    token_ttl_minutes: Annotated[int, Field(ge=1, le=60 * 24 * 30)] = 60 * 12
    role_names: dict[Role, list[str]] = Field(default_factory=lambda: default_role_names())
    """Role → the exact values of the roles claim that grant it (JSON; case-sensitive, as Entra app role values
    are). A role left out keeps its defaults (its plain name, ``ckey.<role>`` and ``ckey.<Role>``); ``[]`` grants
    it to no one. Nothing else grants a role: ``Evil.Admin`` is not ``admin``."""

    @field_validator("role_names", mode="after")
    @classmethod
    def _role_names_complete_and_distinct(cls, value: dict[Role, list[str]]) -> dict[Role, list[str]]:
        merged = default_role_names() | value
        owner: dict[str, Role] = {}
        for role, names in merged.items():
            for name in names:
                if not name or name != name.strip():
                    raise ValueError(f"role names are non-empty and unpadded: {name!r} ({role.value})")
                if owner.setdefault(name, role) is not role:
                    raise ValueError(f"{name!r} names two roles: {owner[name].value} and {role.value}")
        return merged

    @field_validator("dep_keys", mode="after")
    @classmethod
    def _dep_keys_are_key_uris(cls, value: dict[Workload, list[str]]) -> dict[Workload, list[str]]:
        for workload, uris in value.items():
            if len(uris) > DEP_KEYS_MAX:
                raise ValueError(f"{workload.value}: at most {DEP_KEYS_MAX} keys per workload, got {len(uris)}")
            for uri in uris:
                try:
                    KeyUri.parse(uri)
                except PydanticCustomError as exc:
                    raise ValueError(f"{workload.value}: {exc.message()}") from None
        return value

    @field_validator("spo_geo_admin_urls", mode="after")
    @classmethod
    def _spo_geos_are_admin_sites(cls, value: dict[str, str]) -> dict[str, str]:
        checked: dict[str, str] = {}
        for geo, url in value.items():
            if not SPO_GEO.match(geo):
                raise ValueError(f"a geo is named by its code, three capital letters (NAM, EUR, APC ...): {geo!r}")
            if not SPO_ADMIN_URL.match(url):
                raise ValueError(
                    f"the admin site of geo {geo} is https://<tenant>[<geo>]-admin.sharepoint.<cloud suffix>, "
                    f"nothing more: {url!r}"
                )
            checked[geo] = url.rstrip("/").lower()
        return checked

    # Audit trail
    audit_checkpoint_key: Path | None = None
    """Ed25519 private key (PEM) that signs the audit trail's checkpoints; default
    ``<data_dir>/keys/audit-checkpoint.pem``, created (mode 0600) on first use. Keep it out of the database's reach:
    whoever can write the database must not be able to read this file."""
    audit_checkpoint_every: Annotated[int, Field(ge=1, le=1_000_000)] = 100
    """Sign a checkpoint every this many audit events (and at the end of every operation)."""
    db_app_role: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$")] = "ckey_app"
    """PostgreSQL role the API and the worker connect as: the migrations grant it rights (append-only on the audit
    trail) and create it ``NOLOGIN`` if it does not exist."""

    @field_validator(
        "exchange_escalate_after",
        "exchange_poll_interval",
        "windows365_ready_deadline",
        "windows365_poll_interval",
        "windows365_ready_limit",
        "inventory_sync_interval",
        "health_check_interval",
        "m365_assignment_window",
        "m365_assignment_deadline",
        "m365_assignment_poll_interval",
        "key_rotation_watch_interval",
        "key_roll_poll_interval",
        "key_roll_spo_stall_after",
        "key_roll_m365_window",
        mode="before",
    )
    @classmethod
    def _durations_as_operators_write_them(cls, value: object) -> object:
        # 7d and 15m as well as ISO 8601 (P7D, PT15M), as the CLI takes them; any other text is left to pydantic's
        # own reading (HH:MM:SS, seconds) and its message.
        if isinstance(value, str):
            try:
                return parse_duration(value)
            except ValueError:
                return value
        return value

    @field_validator("exchange_escalate_after")
    @classmethod
    def _escalation_not_before_the_seeds_week(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be positive")
        if value < SEED_ESCALATION and not info.data.get("allow_short_escalation", False):
            raise ValueError(
                f"{value} is shorter than the seed's week (escalate unencrypted mailboxes a week after assignment); "
                "only an admin may shorten it, with CKEY_ALLOW_SHORT_ESCALATION=true"
            )
        return value

    @model_validator(mode="after")
    def _m365_deadline_after_window(self) -> Settings:
        if self.m365_assignment_deadline < self.m365_assignment_window:
            raise ValueError("m365_assignment_deadline can't come before m365_assignment_window has passed")
        return self

    @model_validator(mode="after")
    def _oidc_needs_issuer_and_jwks(self) -> Settings:
        if self.auth_mode is AuthMode.OIDC and not (self.oidc_issuer and self.oidc_jwks_url):
            raise ValueError("auth_mode=oidc needs CKEY_OIDC_ISSUER and CKEY_OIDC_JWKS_URL")
        return self

    @property
    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL in use."""
        return self.database_url or f"sqlite+aiosqlite:///{(self.data_dir / 'ckey.db').resolve()}"

    @property
    def resolved_spo_transport(self) -> M365Transport:
        """How the SharePoint cmdlets travel (see :attr:`m365_spo_transport`)."""
        if self.m365_spo_transport is not None:
            return self.m365_spo_transport
        return M365Transport.INVOKE_COMMAND if self.sandbox else M365Transport.PWSH

    @property
    def resolved_api_url(self) -> str:
        """The base URL of the API."""
        return (self.api_url or f"http://{self.api_host}:{self.api_port}").rstrip("/")

    @property
    def tls_dir(self) -> Path:
        """The local CA and the sandbox's server certificates."""
        return self.data_dir / "tls"

    @property
    def resolved_ca_file(self) -> Path:
        """The CA the Azure clients trust in sandbox mode."""
        return self.ca_file or self.tls_dir / "ca.pem"

    @property
    def sandbox_identity_key_path(self) -> Path:
        """Signing key of the sandbox's stand-in for Entra ID."""
        return self.data_dir / "keys" / "sandbox-identity.pem"

    @property
    def audit_checkpoint_key_path(self) -> Path:
        """The key that signs audit checkpoints (Ed25519, PEM)."""
        return self.audit_checkpoint_key or self.data_dir / "keys" / "audit-checkpoint.pem"

    @property
    def signing_key_path(self) -> Path:
        """The local stack's token-signing key (Ed25519, PEM)."""
        return self.data_dir / "keys" / "token-signing.pem"


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` and its missing parents with mode 0700 (``Path.mkdir(parents=True)`` would not).

    Folders that exist already keep their mode: they may be shared ones such as a temporary directory.
    """
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            continue  # created meanwhile by another process
        # mkdir's mode is filtered by the umask; 0700 is what is meant whatever the umask.
        os.chmod(folder, 0o700)
    return path


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning a validation error into one that names the environment variables.

    Raises:
        SettingsError: a setting has an invalid value.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            parts = [str(part) for part in err["loc"]]
            field, inside = (parts[0], parts[1:]) if parts else ("", [])
            name = f"CKEY_{field.upper()}" if field else "settings"
            # A complex setting (JSON) is one variable: the rest of the location is a place inside its value.
            where = f" (at {'.'.join(p for p in inside if p != '[key]')})" if inside else ""
            lines.append(f"invalid setting {name}{where}: {_one_line(err['msg'])}")
        raise SettingsError("; ".join(lines)) from None
    except pydantic_settings.SettingsError as exc:
        # A complex setting whose value is not JSON: pydantic-settings names the field and its source only.
        named = re.search(r'field "([^"]+)"', str(exc))
        name = f"CKEY_{named.group(1).upper()}" if named else "a setting"
        cause = f": {_one_line(str(exc.__cause__))}" if exc.__cause__ else ""
        raise SettingsError(f"invalid setting {name}: the value is not valid JSON{cause}") from None


def _one_line(text: str) -> str:
    return " ".join(text.split())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
