"""The Microsoft 365 gateway: the cmdlets of the seed, as typed methods, over two transports.

- :class:`InvokeCommandTransport` posts ``{"CmdletInput": {"CmdletName", "Parameters"}}`` to the Exchange Online
  admin REST endpoint that the ExchangeOnlineManagement v3 module itself uses (and to the sandbox's equivalent for
  the SharePoint cmdlets), with an app-only token from azure-identity (or the sandbox's identity).
- :class:`PwshTransport` runs PowerShell with a script that is fixed text per allow-listed cmdlet name
  (:data:`ALLOWED_CMDLETS`); the parameters travel as JSON on standard input, which the script turns into a hashtable
  and splats, so no value supplied by anyone is ever part of the script text. Output is read through
  ``ConvertTo-Json``.

Every call is rendered as the PowerShell line an administrator would type (:meth:`Cmdlet.render`) and handed to
an ``on_call`` hook, which the activities use to write the audit trail. That line is only ever displayed; no
transport executes it. Throttling (429) and 5xx are retried here with backoff honouring Retry-After, then raised
as :class:`TransientError` for Temporal to retry; a cmdlet's refusal is a :class:`CmdletError` carrying its text.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Protocol

import aiohttp
from pydantic import BaseModel, ConfigDict, Field

from ckey.azure import AzureConnection
from ckey.config import M365Transport, Settings
from ckey.models import SpoKeyRef


class Endpoint(StrEnum):
    """Which service a cmdlet belongs to."""

    EXCHANGE = "exchange"
    SHAREPOINT = "sharepoint"


NULL = object()
"""A parameter value rendered as ``$null`` (Set-Mailbox -DataEncryptionPolicy $null)."""
SWITCH = object()
"""A switch parameter (``-Refresh``), present without a value."""


@dataclass(frozen=True)
class Cmdlet:
    """One cmdlet call: its name, its parameters in the order they are written, an optional positional identity."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    positional: str | None = None
    endpoint: Endpoint = Endpoint.EXCHANGE
    admin_url: str | None = None
    """SharePoint: the geo's admin site the call goes through (``Connect-SPOService -Url``); default the
    settings' ``m365_spo_admin_url``. Chosen by ckey from its settings, never from a caller's value."""

    def render(self) -> str:
        """The PowerShell line: ``Set-Mailbox -Identity alice@contoso.com -DataEncryptionPolicy USA_mailboxes``.

        For display only (the audit trail, error messages): no transport ever executes this line. The ``pwsh``
        transport runs a fixed script per cmdlet and passes :meth:`parameters` as data (see :class:`PwshTransport`).
        """
        parts = [self.name]
        if self.positional is not None:
            parts.append(ps_quote(self.positional))
        for name, value in self.params.items():
            if value is SWITCH or (value is True and name in _SWITCHES):
                parts.append(f"-{name}")
            elif value is NULL or value is None:
                parts.append(f"-{name} $null")
            elif isinstance(value, bool):
                parts.append(f"-{name} ${str(value).lower()}")
            elif isinstance(value, (list, tuple)):
                parts.append(f"-{name} " + ", ".join(ps_quote(str(v)) for v in value))
            else:
                parts.append(f"-{name} {ps_quote(str(value))}")
        return " ".join(parts)

    def parameters(self) -> dict[str, Any]:
        """The parameters as data: the positional identity as ``Identity``, ``SWITCH`` as true, ``NULL`` as None."""
        params: dict[str, Any] = {}
        if self.positional is not None:
            params["Identity"] = self.positional
        for name, value in self.params.items():
            if value is SWITCH:
                params[name] = True
            elif value is NULL:
                params[name] = None
            elif isinstance(value, tuple):
                params[name] = list(value)
            else:
                params[name] = value
        return params

    def body(self) -> dict[str, Any]:
        """The InvokeCommand request body."""
        return {"CmdletInput": {"CmdletName": self.name, "Parameters": self.parameters()}}


_SWITCHES = {"Refresh", "PermanentDataPurgeRequested"}
_BARE = re.compile(r"^[A-Za-z0-9_.:/][A-Za-z0-9_.@:/\-]*$")
# Inside a double-quoted PowerShell string, the backtick escapes; these end the string or expand in it. PowerShell
# reads the typographic double quotes U+201C, U+201D and U+201E as ``"``.
_DQ_ESCAPES = {c: "`" + c for c in '`"$\u201c\u201d\u201e'}
_DQ_ESCAPES.update({"\0": "`0", "\a": "`a", "\b": "`b", "\f": "`f", "\n": "`n", "\r": "`r", "\t": "`t", "\v": "`v"})


def ps_quote(value: str) -> str:
    """A PowerShell argument for display: bare when it is one plain token, else double-quoted (``"a b"``).

    Used only by :meth:`Cmdlet.render`, whose line is displayed and never executed; it still escapes every
    character that would end or expand a double-quoted string (ASCII and typographic quotes, ``$``, the backtick)
    and writes control characters as escapes, so that the displayed line reads as the call that was made and stays
    on one line. A value starting with ``-`` or ``@`` is quoted (bare, PowerShell would read a parameter or a
    splat).
    """
    if _BARE.match(value):
        return value
    out = []
    for c in value:
        if c in _DQ_ESCAPES:
            out.append(_DQ_ESCAPES[c])
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"`u{{{ord(c):x}}}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


ALLOWED_CMDLETS: Mapping[str, Endpoint] = MappingProxyType(
    {
        # Exchange Online: mailbox DEPs and recipients.
        "New-DataEncryptionPolicy": Endpoint.EXCHANGE,
        "Get-DataEncryptionPolicy": Endpoint.EXCHANGE,
        "Set-DataEncryptionPolicy": Endpoint.EXCHANGE,
        "Set-Mailbox": Endpoint.EXCHANGE,
        "Set-MailUser": Endpoint.EXCHANGE,
        "Get-Mailbox": Endpoint.EXCHANGE,
        "Get-MailUser": Endpoint.EXCHANGE,
        "Get-MailboxStatistics": Endpoint.EXCHANGE,
        # Multi-workload DEPs (Exchange Online PowerShell).
        "New-M365DataAtRestEncryptionPolicy": Endpoint.EXCHANGE,
        "Set-M365DataAtRestEncryptionPolicy": Endpoint.EXCHANGE,
        "Get-M365DataAtRestEncryptionPolicy": Endpoint.EXCHANGE,
        "Set-M365DataAtRestEncryptionPolicyAssignment": Endpoint.EXCHANGE,
        "Get-M365DataAtRestEncryptionPolicyAssignment": Endpoint.EXCHANGE,
        # SharePoint Online and OneDrive.
        "Register-SPODataEncryptionPolicy": Endpoint.SHAREPOINT,
        "Get-SPODataEncryptionPolicy": Endpoint.SHAREPOINT,
        "Update-SPODataEncryptionPolicy": Endpoint.SHAREPOINT,
        "Restore-SPODataEncryptionPolicy": Endpoint.SHAREPOINT,
    }
)
"""The cmdlets the ``pwsh`` transport runs, and the service each signs in to. Any other name is refused."""


class CmdletError(Exception):
    """The service refused the cmdlet; retrying will not change that.

    Args:
        line: the rendered cmdlet line.
        message: the error text an administrator would see.
        code: the service's error code or exception type, when it gives one.
    """

    def __init__(self, line: str, message: str, code: str | None = None) -> None:
        super().__init__(f"{line}: {message}")
        self.line, self.message, self.code = line, message, code


class CmdletNotAllowed(CmdletError):
    """A cmdlet the ``pwsh`` transport will not run: not on :data:`ALLOWED_CMDLETS`, or malformed parameter names.

    Refused before any process starts; retrying will not change that (activities turn it into a non-retryable
    error like any :class:`CmdletError`).
    """

    def __init__(self, line: str, message: str) -> None:
        super().__init__(line, message, "cmdlet-not-allowed")


class TransientError(Exception):
    """Throttling or a service fault that outlasted this gateway's own retries; Temporal retries the activity.

    Args:
        line: the rendered cmdlet line.
        status: the last HTTP status (or 0 for a network error).
        retry_after: seconds the service asked to wait, if it said.
    """

    def __init__(self, line: str, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{line}: {status} {message}")
        self.line, self.status, self.retry_after = line, status, retry_after


class Transport(Protocol):
    """Sends one cmdlet and returns its output objects."""

    async def invoke(self, cmdlet: Cmdlet) -> list[dict[str, Any]]:
        """The cmdlet's output, one dict per object."""
        ...


_EXCEPTION_TEXT = re.compile(r"^(?:Ex[0-9A-F]+)?\|(?P<type>[^|]+)\|(?P<text>.*)$", re.S)


def _error_text(body: Any, fallback: str) -> tuple[str, str | None]:
    """The cmdlet's text and exception name out of an InvokeCommand error.

    Exchange Online answers ``message: "Error executing cmdlet"`` and puts the text in ``details[0].message`` as
    ``Ex1A2B3C|Microsoft.Exchange...Exception|<text>``; PowerShell prints ``|<type>|<text>``. Both are read.
    """
    if not isinstance(body, dict):
        return fallback, None
    error = body.get("error", body)
    if not isinstance(error, dict):
        return fallback, None
    candidates = [str(d.get("message", "")) for d in error.get("details") or [] if isinstance(d, dict)]
    candidates.append(str(error.get("message") or ""))
    for candidate in candidates:
        match = _EXCEPTION_TEXT.match(candidate.strip())
        if match:
            return match["text"].strip(), match["type"].rsplit(".", 1)[-1]
    message = str(error.get("message") or fallback).strip()
    code = error.get("code")
    return message, str(code) if code else None


class InvokeCommandTransport:
    """The Exchange Online admin REST shape: ``POST {base}/adminapi/beta/{tenant}/InvokeCommand``.

    Args:
        connection: credentials (app-only, or the sandbox's identity) and the HTTP session.
        settings: endpoints, tenant and retry budget.
        sleep: how to wait between attempts (tests pass a fake).
    """

    def __init__(
        self,
        connection: AzureConnection,
        settings: Settings,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.connection = connection
        self.settings = settings
        self.sleep = sleep

    def _url_and_resource(self, cmdlet: Cmdlet) -> tuple[str, str]:
        if cmdlet.endpoint is Endpoint.SHAREPOINT:
            base = (cmdlet.admin_url or self.settings.m365_spo_admin_url).rstrip("/")
            return f"{base}/adminapi/InvokeCommand", base
        base = self.settings.m365_exchange_url.rstrip("/")
        return f"{base}/adminapi/beta/{self.settings.azure_tenant_id}/InvokeCommand", base

    async def invoke(self, cmdlet: Cmdlet) -> list[dict[str, Any]]:
        """Post the cmdlet (following ``@odata.nextLink`` pages), retrying throttling and 5xx."""
        url, resource = self._url_and_resource(cmdlet)
        line = cmdlet.render()
        results: list[dict[str, Any]] = []
        next_url: str | None = url
        while next_url is not None:
            page = await self._post(next_url, resource, cmdlet, line)
            value = page.get("value", [])
            results += value if isinstance(value, list) else [value]
            next_url = page.get("@odata.nextLink")
        return results

    async def _post(self, url: str, resource: str, cmdlet: Cmdlet, line: str) -> dict[str, Any]:
        session = self.connection.http_session()
        attempts = self.settings.m365_max_attempts
        for attempt in range(1, attempts + 1):
            token = await self.connection.credential().get_token(f"{resource}/.default")
            headers = {
                "Authorization": f"Bearer {token.token}",
                "Content-Type": "application/json",
                "X-AnchorMailbox": f"UPN:SystemMailbox@{self.settings.m365_organization}",
            }
            retry_after: float | None = None
            try:
                async with session.post(url, json=cmdlet.body(), headers=headers) as response:
                    text = await response.text()
                    body = _json(text)
                    if response.status < 400:
                        return body if isinstance(body, dict) else {"value": body}
                    message, code = _error_text(body, text or response.reason or "")
                    if response.status != 429 and response.status < 500:
                        raise CmdletError(line, message, code)
                    retry_after = _retry_after(response.headers.get("Retry-After"))
                    status = response.status
            except aiohttp.ClientError as exc:
                status, message = 0, str(exc)
            if attempt == attempts:
                raise TransientError(line, status, message, retry_after)
            await self.sleep(retry_after if retry_after is not None else _backoff(attempt))
        raise AssertionError("unreachable")


def _json(text: str) -> Any:
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {"error": {"message": text}}


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _backoff(attempt: int) -> float:
    return float(min(30.0, 0.5 * 2 ** (attempt - 1) * (1 + random.random() / 2)))


_PWSH_PROLOGUE = """$ErrorActionPreference = 'Stop'
$raw = [Console]::In.ReadToEnd()
$v = $PSVersionTable.PSVersion
if ($v.Major -gt 7 -or ($v.Major -eq 7 -and $v.Minor -ge 5)) {
    $request = ConvertFrom-Json -InputObject $raw -AsHashtable -DateKind String
} else {
    $request = ConvertFrom-Json -InputObject $raw -AsHashtable
}
$connect = $request['connect']
$parameters = $request['parameters']
"""
_PWSH_CONNECT = {
    Endpoint.EXCHANGE: "Connect-ExchangeOnline -ShowBanner:$false @connect\n",
    Endpoint.SHAREPOINT: "Connect-SPOService @connect\n",
}
PWSH_SCRIPTS: Mapping[str, str] = MappingProxyType(
    {
        name: _PWSH_PROLOGUE + _PWSH_CONNECT[endpoint] + f"{name} @parameters | ConvertTo-Json -Depth 6 -Compress\n"
        for name, endpoint in ALLOWED_CMDLETS.items()
    }
)
"""The whole script ``pwsh`` runs, per allow-listed cmdlet: fixed text, which no value ever becomes part of."""

_PARAMETER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,63}$")


def check_cmdlet(cmdlet: Cmdlet) -> Endpoint:
    """The cmdlet's service, if ckey sends it: on :data:`ALLOWED_CMDLETS`, to its own service, with plain names.

    The gateway checks every call with it before anything is recorded or sent, whatever the transport.

    Raises:
        CmdletNotAllowed: the name is not on the list, belongs to the other service, or a parameter name is not a
            plain name (or appears twice).
    """
    endpoint = ALLOWED_CMDLETS.get(cmdlet.name)
    if endpoint is None:
        raise CmdletNotAllowed(cmdlet.render(), f"{cmdlet.name!r} is not a cmdlet ckey runs (see ALLOWED_CMDLETS)")
    if endpoint is not cmdlet.endpoint:
        raise CmdletNotAllowed(
            cmdlet.render(), f"{cmdlet.name} belongs to {endpoint.value}, not {cmdlet.endpoint.value}"
        )
    seen: set[str] = set()
    for name in cmdlet.parameters():
        # Names come from ckey's code, never from a caller; checked anyway, since a splat binds them as given.
        if not _PARAMETER_NAME.match(name) or name.lower() in seen:
            raise CmdletNotAllowed(cmdlet.render(), f"{name!r} is not a parameter name ckey sends")
        seen.add(name.lower())
    return endpoint


class PwshTransport:
    """PowerShell: ``pwsh -Command <fixed script>``, the parameters as JSON on standard input.

    The script (:data:`PWSH_SCRIPTS`) is chosen by the cmdlet's name from :data:`ALLOWED_CMDLETS` and never contains
    a value: it reads ``{"connect": {...}, "parameters": {...}}`` from standard input, turns it into hashtables with
    ``ConvertFrom-Json -AsHashtable`` (``-DateKind String`` on PowerShell 7.5+, so a timestamp-like value stays a
    string) and splats them (``Connect-ExchangeOnline @connect``, ``Set-Mailbox @parameters``). Quoting rules
    therefore never matter. The JSON is ASCII (every other character escaped), so NUL and any other character
    pass intact whatever the console encoding. :meth:`Cmdlet.render` is used only to label errors.

    Args:
        settings: the ``pwsh`` path and the app-only sign-in (app id, certificate, organization, SPO admin URL).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _endpoint(self, cmdlet: Cmdlet) -> Endpoint:
        return check_cmdlet(cmdlet)

    def script(self, cmdlet: Cmdlet) -> str:
        """The fixed PowerShell script for the cmdlet's name; the same text whatever its parameters.

        Raises:
            CmdletNotAllowed: the name is not on :data:`ALLOWED_CMDLETS`.
        """
        self._endpoint(cmdlet)
        return PWSH_SCRIPTS[cmdlet.name]

    def connect_parameters(self, endpoint: Endpoint, admin_url: str | None = None) -> dict[str, str]:
        """The sign-in's parameters (splatted into Connect-ExchangeOnline / Connect-SPOService).

        Args:
            endpoint: the service signed in to.
            admin_url: SharePoint: the geo's admin site (default the settings' ``m365_spo_admin_url``).
        """
        s = self.settings
        app_only = bool(s.m365_app_id and s.m365_certificate_path)
        if endpoint is Endpoint.SHAREPOINT:
            connect = {"Url": admin_url or s.m365_spo_admin_url}
            if app_only:
                connect |= {"ClientId": str(s.m365_app_id), "CertificatePath": str(s.m365_certificate_path)}
            return connect
        if app_only:
            return {
                "AppId": str(s.m365_app_id),
                "CertificateFilePath": str(s.m365_certificate_path),
                "Organization": s.m365_organization,
            }
        return {}

    def stdin(self, cmdlet: Cmdlet) -> bytes:
        """The data the script reads: ``{"connect": {...}, "parameters": {...}}`` as ASCII JSON.

        Raises:
            CmdletNotAllowed: the name is not on :data:`ALLOWED_CMDLETS`, or a parameter name is not a plain name.
        """
        endpoint = self._endpoint(cmdlet)
        request = {
            "connect": self.connect_parameters(endpoint, cmdlet.admin_url),
            "parameters": cmdlet.parameters(),
        }
        return json.dumps(request, ensure_ascii=True, allow_nan=False).encode("ascii")

    async def invoke(self, cmdlet: Cmdlet) -> list[dict[str, Any]]:
        """Run the cmdlet; a non-zero exit is the cmdlet's refusal, with its error text.

        Raises:
            CmdletNotAllowed: before any process starts, for a cmdlet outside :data:`ALLOWED_CMDLETS`.
            CmdletError: PowerShell reported an error.
        """
        script, payload = self.script(cmdlet), self.stdin(cmdlet)
        process = await asyncio.create_subprocess_exec(
            self.settings.pwsh_path,
            "-NoLogo",
            "-NoProfile",
            "-NonInteractive",
            "-Command",
            script,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate(payload)
        line = cmdlet.render()
        if process.returncode != 0:
            text = err.decode(errors="replace").strip().splitlines()
            last = next((t for t in reversed(text) if t.strip()), f"pwsh exited with {process.returncode}")
            # PowerShell writes "Write-ErrorMessage: |Microsoft.Exchange...Exception|<text>".
            message, code = _error_text(
                {"error": {"message": last.split(": ", 1)[-1] if ": |" in last else last}}, last
            )
            raise CmdletError(line, message, code)
        output = out.decode(errors="replace").strip()
        if not output:
            return []
        parsed = json.loads(output)
        return parsed if isinstance(parsed, list) else [parsed]


# Output objects ---------------------------------------------------------------------------------------------------


class _Output(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class DataEncryptionPolicy(_Output):
    """Get-DataEncryptionPolicy's output."""

    name: str = Field(alias="Name")
    guid: str = Field(alias="Guid")
    azure_key_ids: list[str] = Field(default_factory=list, alias="AzureKeyIDs")
    description: str | None = Field(default=None, alias="Description")
    enabled: bool = Field(default=True, alias="Enabled")
    permanent_data_purge_requested: bool = Field(default=False, alias="PermanentDataPurgeRequested")
    permanent_data_purge_reason: str | None = Field(default=None, alias="PermanentDataPurgeReason")
    permanent_data_purge_contact: str | None = Field(default=None, alias="PermanentDataPurgeContact")


class M365DataAtRestEncryptionPolicy(_Output):
    """Get-M365DataAtRestEncryptionPolicy's output (a multi-workload DEP)."""

    name: str = Field(alias="Name")
    guid: str | None = Field(default=None, alias="Guid")
    azure_key_ids: list[str] = Field(default_factory=list, alias="AzureKeyIDs")
    description: str | None = Field(default=None, alias="Description")
    enabled: bool = Field(default=True, alias="Enabled")
    last_refreshed: str | None = Field(default=None, alias="LastRefreshedDateTime")


class M365DataAtRestEncryptionPolicyAssignment(_Output):
    """Get-M365DataAtRestEncryptionPolicyAssignment's output: the tenant's multi-workload DEP, if one is assigned.

    Microsoft documents no output properties for the cmdlet; ``Name`` (the assigned policy) is what clients read
    (Microsoft365DSC's ``EXODataAtRestEncryptionPolicyAssignment``). Fields this model does not name are kept
    (``extra``), so that what the service adds is not lost.
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str | None = Field(default=None, alias="Name")
    """The assigned multi-workload DEP's name."""
    data_encryption_policy: str | None = Field(default=None, alias="DataEncryptionPolicy")
    data_encryption_policy_id: str | None = Field(default=None, alias="DataEncryptionPolicyId")

    @property
    def dep(self) -> str | None:
        """The assigned DEP: ``Name``, else ``DataEncryptionPolicy`` where an answer carries only that."""
        return self.name or self.data_encryption_policy


class SpoDataEncryptionPolicy(_Output):
    """Get-SPODataEncryptionPolicy's output for one geo."""

    identity: str | None = Field(default=None, alias="Identity")
    geo: str | None = Field(default=None, alias="Geo")
    state: str = Field(alias="State")
    percent_complete: int | None = Field(default=None, alias="PercentComplete")
    primary_key_uri: str | None = Field(default=None, alias="PrimaryKeyUri")
    secondary_key_uri: str | None = Field(default=None, alias="SecondaryKeyUri")
    primary_key_vault_name: str | None = Field(default=None, alias="PrimaryKeyVaultName")
    primary_key_name: str | None = Field(default=None, alias="PrimaryKeyName")
    primary_key_version: str | None = Field(default=None, alias="PrimaryKeyVersion")
    secondary_key_vault_name: str | None = Field(default=None, alias="SecondaryKeyVaultName")
    secondary_key_name: str | None = Field(default=None, alias="SecondaryKeyName")
    secondary_key_version: str | None = Field(default=None, alias="SecondaryKeyVersion")
    rolling_key_type: str | None = Field(default=None, alias="RollingKeyType")


class Mailbox(_Output):
    """Get-Mailbox / Get-MailUser's output (the fields ckey reads)."""

    identity: str = Field(alias="Identity")
    user_principal_name: str | None = Field(default=None, alias="UserPrincipalName")
    recipient_type_details: str | None = Field(default=None, alias="RecipientTypeDetails")
    data_encryption_policy: str | None = Field(default=None, alias="DataEncryptionPolicy")
    name: str | None = Field(default=None, alias="Name")
    alias: str | None = Field(default=None, alias="Alias")
    primary_smtp_address: str | None = Field(default=None, alias="PrimarySmtpAddress")
    guid: str | None = Field(default=None, alias="Guid")
    exchange_guid: str | None = Field(default=None, alias="ExchangeGuid")
    external_directory_object_id: str | None = Field(default=None, alias="ExternalDirectoryObjectId")
    email_addresses: list[str] = Field(default_factory=list, alias="EmailAddresses")

    def names(self) -> set[str]:
        """Every identity Exchange accepts for this recipient, lower-case: name, alias, UPN, addresses, GUIDs."""
        found = {
            self.identity,
            self.name,
            self.alias,
            self.user_principal_name,
            self.primary_smtp_address,
            self.guid,
            self.exchange_guid,
            self.external_directory_object_id,
        }
        # Proxy addresses read "SMTP:primary@..." / "smtp:alias@..."; other types (X500:, SIP:) are not identities.
        found |= {a.split(":", 1)[1] for a in self.email_addresses if a.lower().startswith("smtp:")}
        return {n.strip().lower() for n in found if n and n.strip()}


MAILBOX, MAIL_USER = "mailbox", "mail_user"
"""What a resolved recipient is: a mailbox (Set-Mailbox, Get-MailboxStatistics) or a mail user (Set-MailUser,
Get-MailUser; hybrid, not yet migrated)."""


class Resolution(BaseModel):
    """Identities resolved against the tenant's recipients: each known one with its kind, the unknown ones."""

    kinds: dict[str, str] = Field(default_factory=dict)
    """Identity as given → :data:`MAILBOX` or :data:`MAIL_USER`."""
    unknown: list[str] = Field(default_factory=list)
    """Identities no mailbox or mail user answers to, in the given order."""


def resolve_identities(identities: Sequence[str], recipients: Mapping[str, str]) -> Resolution:
    """Which of ``identities`` are recipients (``recipients``: lower-case name → kind, :meth:`M365Gateway.recipients`).

    Exchange compares identities case-insensitively; a mailbox wins over a mail user answering to the same name.
    """
    resolution = Resolution()
    for identity in identities:
        kind = recipients.get(identity.strip().lower())
        if kind is None:
            resolution.unknown.append(identity)
        else:
            resolution.kinds[identity] = kind
    return resolution


class MailboxStatistics(_Output):
    """Get-MailboxStatistics's output (the fields the seed reads)."""

    identity: str | None = Field(default=None, alias="Identity")
    display_name: str | None = Field(default=None, alias="DisplayName")
    is_encrypted: bool = Field(default=False, alias="IsEncrypted")
    data_encryption_policy_id: str | None = Field(default=None, alias="DataEncryptionPolicyID")


OnCall = Callable[[Cmdlet, str, str | None], Awaitable[None]]
"""``on_call(cmdlet, outcome, error)``: told of every call (``ok`` / ``refused`` / ``failed``), and of every
state-changing call before it is sent (``intent``)."""

READ_VERBS = ("Get-", "Test-")
"""Cmdlets that change nothing; every other one (Set-, New-, Register-, Update-, Restore-, Remove-, ...) is
state-changing and announced to ``on_call`` before it is sent."""


def changes_state(cmdlet: Cmdlet) -> bool:
    """Whether the cmdlet may change the tenant (anything but a read verb counts)."""
    return not cmdlet.name.startswith(READ_VERBS)


class M365Gateway:
    """The seed's cmdlets as typed methods.

    Args:
        transport: InvokeCommand REST or pwsh.
        on_call: told of every call with its rendered line and outcome (the audit trail).
    """

    def __init__(self, transport: Transport, on_call: OnCall | None = None) -> None:
        self.transport = transport
        self.on_call = on_call

    def with_on_call(self, on_call: OnCall | None) -> M365Gateway:
        """The same gateway reporting calls to ``on_call`` (activities bind their audit writer per call)."""
        return M365Gateway(self.transport, on_call)

    async def invoke(self, cmdlet: Cmdlet) -> list[dict[str, Any]]:
        """Send one cmdlet, telling ``on_call`` of a state-changing one before (``intent``) and of each after.

        The intent is awaited before anything is sent: if recording it fails, the call is not made, so no call
        reaches the tenant without its intent on record (a crash after sending leaves the intent without an
        outcome, which tells the caller to look before sending again).
        """
        try:
            check_cmdlet(cmdlet)
        except CmdletNotAllowed as exc:
            # Refused before anything is recorded as an intent or sent, whatever the transport.
            if self.on_call:
                await self.on_call(cmdlet, "refused", exc.message)
            raise
        if self.on_call and changes_state(cmdlet):
            await self.on_call(cmdlet, "intent", None)
        try:
            result = await self.transport.invoke(cmdlet)
        except CmdletError as exc:
            if self.on_call:
                await self.on_call(cmdlet, "refused", exc.message)
            raise
        except TransientError as exc:
            if self.on_call:
                await self.on_call(cmdlet, "failed", str(exc))
            raise
        if self.on_call:
            await self.on_call(cmdlet, "ok", None)
        return result

    # Exchange Online: DEPs ---------------------------------------------------------------------------------------

    async def new_data_encryption_policy(
        self, name: str, azure_key_ids: Sequence[str], description: str | None = None
    ) -> DataEncryptionPolicy:
        """New-DataEncryptionPolicy -Name -Description -AzureKeyIDs."""
        params: dict[str, Any] = {"Name": name}
        if description is not None:
            params["Description"] = description
        params["AzureKeyIDs"] = list(azure_key_ids)
        out = await self.invoke(Cmdlet("New-DataEncryptionPolicy", params))
        return DataEncryptionPolicy.model_validate(out[0])

    async def get_data_encryption_policy(self, identity: str | None = None) -> list[DataEncryptionPolicy]:
        """Get-DataEncryptionPolicy [<name or GUID>]."""
        out = await self.invoke(Cmdlet("Get-DataEncryptionPolicy", positional=identity))
        return [DataEncryptionPolicy.model_validate(o) for o in out]

    async def set_data_encryption_policy(
        self,
        identity: str,
        *,
        refresh: bool = False,
        enabled: bool | None = None,
        permanent_data_purge_reason: str | None = None,
        permanent_data_purge_contact: str | None = None,
    ) -> None:
        """Set-DataEncryptionPolicy <identity> [-Refresh] [-Enabled] [-PermanentDataPurgeRequested ...]."""
        params: dict[str, Any] = {}
        if refresh:
            params["Refresh"] = SWITCH
        if enabled is not None:
            params["Enabled"] = enabled
        if permanent_data_purge_reason is not None:
            params["PermanentDataPurgeRequested"] = SWITCH
            params["PermanentDataPurgeReason"] = permanent_data_purge_reason
            params["PermanentDataPurgeContact"] = permanent_data_purge_contact or ""
        await self.invoke(Cmdlet("Set-DataEncryptionPolicy", params, positional=identity))

    # Exchange Online: recipients ---------------------------------------------------------------------------------

    async def set_mailbox(self, identity: str, data_encryption_policy: str | None) -> None:
        """Set-Mailbox -Identity -DataEncryptionPolicy <name> (``None``: $null, back to Microsoft-managed keys)."""
        policy = NULL if data_encryption_policy is None else data_encryption_policy
        await self.invoke(Cmdlet("Set-Mailbox", {"Identity": identity, "DataEncryptionPolicy": policy}))

    async def set_mail_user(self, identity: str, data_encryption_policy: str | None) -> None:
        """Set-MailUser -Identity -DataEncryptionPolicy (hybrid and pre-migration mailboxes)."""
        policy = NULL if data_encryption_policy is None else data_encryption_policy
        await self.invoke(Cmdlet("Set-MailUser", {"Identity": identity, "DataEncryptionPolicy": policy}))

    async def get_mailbox(self, identity: str | None = None, result_size: int | str | None = None) -> list[Mailbox]:
        """Get-Mailbox [-Identity] [-ResultSize]."""
        return await self._recipients("Get-Mailbox", identity, result_size)

    async def get_mail_user(self, identity: str | None = None, result_size: int | str | None = None) -> list[Mailbox]:
        """Get-MailUser [-Identity] [-ResultSize]."""
        return await self._recipients("Get-MailUser", identity, result_size)

    async def _recipients(self, name: str, identity: str | None, result_size: int | str | None) -> list[Mailbox]:
        params: dict[str, Any] = {}
        if identity is not None:
            params["Identity"] = identity
        if result_size is not None:
            params["ResultSize"] = result_size
        return [Mailbox.model_validate(o) for o in await self.invoke(Cmdlet(name, params))]

    async def recipients(self) -> dict[str, str]:
        """Every mailbox and mail user, by each lower-case identity it answers to → :data:`MAILBOX` / :data:`MAIL_USER`.

        One bulk lookup whatever the number of identities to resolve: Get-Mailbox and Get-MailUser with
        ``-ResultSize Unlimited`` (the transport follows the pages). No identity is ever written into a filter.
        """
        return {name: kind for name, (kind, _) in (await self.recipient_index()).items()}

    async def recipient_index(self) -> dict[str, tuple[str, str | None]]:
        """As :meth:`recipients`, with each recipient's assigned DEP: lower-case name → (kind, DEP name or None)."""
        found: dict[str, tuple[str, str | None]] = {}
        for recipient in await self.get_mail_user(result_size="Unlimited"):
            found.update(dict.fromkeys(recipient.names(), (MAIL_USER, recipient.data_encryption_policy)))
        for recipient in await self.get_mailbox(result_size="Unlimited"):
            found.update(dict.fromkeys(recipient.names(), (MAILBOX, recipient.data_encryption_policy)))
        return found

    async def get_mailbox_statistics(self, identity: str) -> MailboxStatistics:
        """Get-MailboxStatistics -Identity (IsEncrypted, DataEncryptionPolicyID)."""
        out = await self.invoke(Cmdlet("Get-MailboxStatistics", {"Identity": identity}))
        return MailboxStatistics.model_validate(out[0])

    # Multi-workload DEPs (Exchange Online PowerShell) -------------------------------------------------------------

    async def new_m365_data_at_rest_encryption_policy(
        self, name: str, azure_key_ids: Sequence[str], description: str | None = None
    ) -> M365DataAtRestEncryptionPolicy:
        """New-M365DataAtRestEncryptionPolicy -Name -AzureKeyIDs [-Description]."""
        params: dict[str, Any] = {"Name": name, "AzureKeyIDs": list(azure_key_ids)}
        if description is not None:
            params["Description"] = description
        out = await self.invoke(Cmdlet("New-M365DataAtRestEncryptionPolicy", params))
        return M365DataAtRestEncryptionPolicy.model_validate(out[0])

    async def get_m365_data_at_rest_encryption_policy(
        self, identity: str | None = None
    ) -> list[M365DataAtRestEncryptionPolicy]:
        """Get-M365DataAtRestEncryptionPolicy [-Identity]."""
        params = {} if identity is None else {"Identity": identity}
        out = await self.invoke(Cmdlet("Get-M365DataAtRestEncryptionPolicy", params))
        return [M365DataAtRestEncryptionPolicy.model_validate(o) for o in out]

    async def set_m365_data_at_rest_encryption_policy(
        self, identity: str, *, enabled: bool | None = None, refresh: bool = False
    ) -> None:
        """Set-M365DataAtRestEncryptionPolicy -Identity [-Enabled $false] [-Refresh]."""
        params: dict[str, Any] = {"Identity": identity}
        if enabled is not None:
            params["Enabled"] = enabled
        if refresh:
            params["Refresh"] = SWITCH
        await self.invoke(Cmdlet("Set-M365DataAtRestEncryptionPolicy", params))

    async def set_m365_data_at_rest_encryption_policy_assignment(self, data_encryption_policy: str) -> None:
        """Set-M365DataAtRestEncryptionPolicyAssignment -DataEncryptionPolicy <name or ID>."""
        await self.invoke(
            Cmdlet("Set-M365DataAtRestEncryptionPolicyAssignment", {"DataEncryptionPolicy": data_encryption_policy})
        )

    async def get_m365_data_at_rest_encryption_policy_assignment(
        self,
    ) -> M365DataAtRestEncryptionPolicyAssignment | None:
        """Get-M365DataAtRestEncryptionPolicyAssignment (None when the answer is empty)."""
        out = await self.invoke(Cmdlet("Get-M365DataAtRestEncryptionPolicyAssignment"))
        return M365DataAtRestEncryptionPolicyAssignment.model_validate(out[0]) if out else None

    # SharePoint Online and OneDrive: one DEP per geo, through the geo's admin site --------------------------------

    async def register_spo_data_encryption_policy(
        self, admin_url: str, primary: SpoKeyRef, secondary: SpoKeyRef
    ) -> None:
        """Register-SPODataEncryptionPolicy <admin site> -Primary/SecondaryKeyVaultName -...KeyName -...KeyVersion."""
        params: dict[str, Any] = {}
        for label, key in (("Primary", primary), ("Secondary", secondary)):
            params |= {f"{label}KeyVaultName": key.vault, f"{label}KeyName": key.key, f"{label}KeyVersion": key.version}
        await self.invoke(_spo("Register-SPODataEncryptionPolicy", admin_url, params))

    async def get_spo_data_encryption_policy(self, admin_url: str) -> SpoDataEncryptionPolicy:
        """Get-SPODataEncryptionPolicy <admin site>: the geo's state, percent of sites done, key URIs."""
        out = await self.invoke(_spo("Get-SPODataEncryptionPolicy", admin_url))
        return SpoDataEncryptionPolicy.model_validate(out[0])

    async def update_spo_data_encryption_policy(self, admin_url: str, key_type: str, key: SpoKeyRef) -> None:
        """Update-SPODataEncryptionPolicy <admin site> -KeyType Primary|Secondary -KeyVaultName -KeyName -KeyVersion."""
        params = {"KeyType": key_type, "KeyVaultName": key.vault, "KeyName": key.key, "KeyVersion": key.version}
        await self.invoke(_spo("Update-SPODataEncryptionPolicy", admin_url, params))

    async def restore_spo_data_encryption_policy(
        self, admin_url: str, primary: SpoKeyRef, secondary: SpoKeyRef
    ) -> None:
        """Restore-SPODataEncryptionPolicy <admin site> -Primary/SecondaryKeyVaultName -...KeyName -...KeyVersion.

        For a geo in recovery mode only (Microsoft recovered it after access to its keys was lost): the two new keys,
        by name (the ``BYOK_MultipleParameters`` set, as Register takes them).
        """
        params: dict[str, Any] = {}
        for label, key in (("Primary", primary), ("Secondary", secondary)):
            params |= {f"{label}KeyVaultName": key.vault, f"{label}KeyName": key.key, f"{label}KeyVersion": key.version}
        await self.invoke(_spo("Restore-SPODataEncryptionPolicy", admin_url, params))


def _spo(name: str, admin_url: str, params: Mapping[str, Any] | None = None) -> Cmdlet:
    """A SharePoint cmdlet through the geo's admin site, naming it as ``-Identity`` too."""
    return Cmdlet(name, {"Identity": admin_url, **(params or {})}, endpoint=Endpoint.SHAREPOINT, admin_url=admin_url)


class RoutedTransport:
    """One transport per service: each cmdlet goes through its endpoint's.

    SharePoint has no InvokeCommand endpoint in production, so its cmdlets go through ``pwsh`` while Exchange's may
    go through InvokeCommand (:meth:`~ckey.config.Settings.resolved_spo_transport`).

    Args:
        routes: the transport of each endpoint.
    """

    def __init__(self, routes: Mapping[Endpoint, Transport]) -> None:
        self.routes = dict(routes)

    async def invoke(self, cmdlet: Cmdlet) -> list[dict[str, Any]]:
        """Send the cmdlet through its endpoint's transport."""
        return await self.routes[cmdlet.endpoint].invoke(cmdlet)


def build_transport(settings: Settings, connection: AzureConnection) -> Transport:
    """The transports the settings ask for: ``m365_transport`` for Exchange, the resolved SharePoint one for SPO."""

    def one(kind: M365Transport) -> Transport:
        if kind is M365Transport.PWSH:
            return PwshTransport(settings)
        return InvokeCommandTransport(connection, settings)

    exchange, sharepoint = settings.m365_transport, settings.resolved_spo_transport
    if exchange is sharepoint:
        return one(exchange)
    return RoutedTransport({Endpoint.EXCHANGE: one(exchange), Endpoint.SHAREPOINT: one(sharepoint)})
