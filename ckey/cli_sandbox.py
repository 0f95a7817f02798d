"""``ckey sandbox``: rehearse an outage on the local stack's sandboxes without reading ckey's internals.

Lose a key and rehearse its restore, start a throttling storm, run the tenant's clock faster, keep a mailbox from
ever encrypting to rehearse the week's escalation. The commands talk to the sandboxes' control endpoints
(``https://localhost:<port>/sandbox/...``) over HTTPS with a local admin token signed by the data dir's key, as the
sandboxes' own control clients do; the product never imports the sandbox package, so neither does this module.
They refuse to run outside sandbox mode (``CKEY_SANDBOX=true``), and say so when a sandbox does not answer.
"""

from __future__ import annotations

import base64
import re
import ssl
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import httpx
import jwt
import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import TypeAdapter, ValidationError
from rich.console import Console

from ckey.config import Settings, SettingsError, get_settings

sandbox_app = typer.Typer(
    help="Rehearsals on the local sandboxes (sandbox mode only): lose a key, faults, the clock, a stuck mailbox.",
    no_args_is_help=True,
)

# Soft wrap: a command to copy (`ckey key restore ...`) must stay on one line.
console = Console(markup=False, emoji=False, highlight=False, soft_wrap=True)
err_console = Console(stderr=True, markup=False, emoji=False, highlight=False, soft_wrap=True)

MAX_LATENCY = timedelta(seconds=60)
"""The most latency the sandboxes inject per request."""
MAX_SPEED = 10_000_000.0
"""The fastest the tenant's clock runs (as ``CKEY_SANDBOX_M365_SPEED``)."""

_SHORT_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> timedelta:
    """``2s``, ``500ms``, ``1.5m``, ``3h``, ``7d``, a bare number of seconds, or ISO 8601 (``PT2S``, ``P7D``).

    Raises:
        typer.BadParameter: anything else, or a negative duration.
    """
    match = _SHORT_DURATION.match(text)
    if match:
        value = timedelta(seconds=float(match[1]) * _UNIT_SECONDS[(match[2] or "s").lower()])
    else:
        try:
            value = TypeAdapter(timedelta).validate_python(text.strip())
        except ValidationError:
            raise typer.BadParameter(f"{text!r} is not a duration (2s, 500ms, 3h, 7d or ISO 8601 like PT2S)") from None
    if value < timedelta(0):
        raise typer.BadParameter(f"{text!r} is negative")
    return value


# Reaching the sandboxes --------------------------------------------------------------------------------------------


def _settings() -> Settings:
    try:
        settings = get_settings()
    except SettingsError as exc:
        err_console.print(str(exc), style="red")
        raise typer.Exit(2) from None
    if not settings.sandbox:
        err_console.print(
            "not in sandbox mode: `ckey sandbox` only rehearses on the local stack's sandboxes, never on Azure or "
            "Microsoft 365. Set CKEY_SANDBOX=true (as `ckey up` does for its children) to use it.",
            style="red",
        )
        raise typer.Exit(2)
    return settings


def _admin_token(settings: Settings) -> str:
    """A short-lived token with the ``admin`` role, signed with the local stack's key (never creating one)."""
    path = settings.signing_key_path
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        err_console.print(
            f"no local stack in {settings.data_dir}: cannot read its signing key {path} ({exc}); start it with "
            "`ckey up` or point CKEY_DATA_DIR at its data dir",
            style="red",
        )
        raise typer.Exit(2) from None
    if not isinstance(key, Ed25519PrivateKey):
        err_console.print(f"{path} is not the local stack's Ed25519 signing key", style="red")
        raise typer.Exit(2)
    now = datetime.now(UTC)
    claims = {
        "iss": settings.local_issuer,
        "aud": settings.audience,
        "sub": "ckey-sandbox-cli",
        settings.user_claim: "ckey-sandbox-cli",
        # The sandboxes grant their control endpoints to the plain role name only.
        settings.roles_claim: ["admin"],
        "iat": now,
        "nbf": now,
        "exp": now + timedelta(minutes=5),
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, key, algorithm="EdDSA")


class Sandbox:
    """One sandbox's control endpoint: ``label`` names it in messages."""

    def __init__(self, settings: Settings, port: int, label: str) -> None:
        self.label = label
        self.base_url = f"https://localhost:{port}"
        ca = settings.resolved_ca_file
        try:
            verify: ssl.SSLContext = ssl.create_default_context(cafile=str(ca))
        except OSError as exc:
            err_console.print(f"cannot read the local CA {ca} ({exc}): is `ckey up` running on this data dir?")
            raise typer.Exit(2) from None
        self.client = httpx.Client(
            base_url=f"{self.base_url}/sandbox",
            headers={"Authorization": f"Bearer {_admin_token(settings)}"},
            verify=verify,
            timeout=60,
        )

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """The endpoint's JSON answer; a refusal or an unreachable sandbox exits with one line saying which."""
        try:
            response = self.client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            err_console.print(
                f"the {self.label} is not reachable at {self.base_url} ({type(exc).__name__}: {exc}): "
                "is `ckey up` running, with the same CKEY_SANDBOX_* ports?",
                style="red",
            )
            raise typer.Exit(1) from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            err_console.print(f"the {self.label} refused ({response.status_code}): {detail}", style="red")
            raise typer.Exit(1)
        return response.json() if response.content else None


def keyvault(settings: Settings) -> Sandbox:
    """The sandbox Key Vault's control endpoint."""
    return Sandbox(settings, settings.sandbox_keyvault_port, "sandbox Key Vault")


def tenant(settings: Settings) -> Sandbox:
    """The sandbox Microsoft 365 tenant's control endpoint."""
    return Sandbox(settings, settings.sandbox_m365_port, "sandbox tenant")


# Commands ------------------------------------------------------------------------------------------------------------


@sandbox_app.command("lose-key")
def lose_key(
    vault: Annotated[str, typer.Argument(help="The vault's name, e.g. contoso-eastus-kv1.")],
    key: Annotated[str, typer.Argument(help="The key's name, e.g. exo-key-01.")],
    purge: Annotated[
        bool, typer.Option(help="Purge it too, as if its retention ended: only its backup brings it back.")
    ] = False,
    backup_file: Annotated[
        Path | None,
        typer.Option(
            "--backup-file", help="First write its backup here (as Backup-AzKeyVaultKey -OutputFile).", dir_okay=False
        ),
    ] = None,
) -> None:
    """Delete a key (soft delete; --purge: gone), to rehearse `ckey key restore`."""
    settings = _settings()
    lost = keyvault(settings).call(
        "POST", f"/vaults/{vault}/keys/{key}/lose", {"purge": purge, "backup": bool(backup_file)}
    )
    if backup_file is not None:
        backup_file.write_bytes(base64.b64decode(lost["backup"]))
        console.print(f"backup of {lost['key_uri']} written to {backup_file}")
    if lost["purged"]:
        console.print(f"{lost['key_uri']} deleted and purged: only its backup brings it back")
        restore = f"ckey key restore {lost['key_uri']} --input-file {backup_file or '<backup file>'}"
    else:
        console.print(f"{lost['key_uri']} deleted: recoverable from soft delete until {lost['scheduled_purge']}")
        restore = f"ckey key restore {lost['key_uri']}"
    console.print(f"rehearse the restore: {restore}")


@sandbox_app.command("fault")
def fault(
    throttle: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Share of tenant requests answered 429 (0 to 1).")
    ] = None,
    errors: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Share of requests answered 503 (0 to 1).")
    ] = None,
    latency: Annotated[str | None, typer.Option(help="Added to every request: 2s, 500ms, PT2S (at most 60 s).")] = None,
    retry_after: Annotated[
        str | None, typer.Option(help="The Retry-After of a throttled answer: 5s, PT1M (at most 1 h).")
    ] = None,
    vault: Annotated[
        list[str] | None,
        typer.Option(
            "--vault",
            help="Also inject --errors and --latency into this vault's data plane (repeatable; Key Vault "
            "throttles by its limits, not by a share).",
        ),
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Turn every fault off first.")] = False,
) -> None:
    """Inject faults into the sandbox tenant (Exchange, SharePoint, Graph): a throttling storm, errors, latency.

    Options left out keep their current value; --clear turns everything off.
    """
    latency_ms = _bounded_ms(latency, MAX_LATENCY, "--latency")
    retry_ms = _bounded_ms(retry_after, timedelta(hours=1), "--retry-after")
    settings = _settings()
    m365 = tenant(settings)
    current: dict[str, Any] = {} if clear else m365.call("GET", "/faults")
    changes = {
        "throttle_rate": throttle,
        "error_rate": errors,
        "latency_ms": latency_ms,
        "retry_after_seconds": None if retry_ms is None else round(retry_ms / 1000),
    }
    faults = {**current, **{k: v for k, v in changes.items() if v is not None}}
    shown = m365.call("PUT", "/faults", faults)
    console.print(
        f"sandbox tenant: throttle {shown['throttle_rate']:g} (Retry-After {shown['retry_after_seconds']} s), "
        f"errors {shown['error_rate']:g}, latency {shown['latency_ms']} ms"
    )
    for name in vault or []:
        summary = keyvault(settings).call(
            "PUT", f"/vaults/{name}/faults", {"error_rate": errors or 0.0, "latency_ms": latency_ms or 0}
        )
        knobs = summary["faults"]
        console.print(f"vault {name}: errors {knobs['error_rate']:g}, latency {knobs['latency_ms']} ms")


def _bounded_ms(text: str | None, limit: timedelta, option: str) -> int | None:
    if text is None:
        return None
    try:
        value = parse_duration(text)
    except typer.BadParameter as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None
    if value > limit:
        raise typer.BadParameter(f"{text!r} is more than {limit.total_seconds():g} s", param_hint=option)
    return round(value.total_seconds() * 1000)


@sandbox_app.command("clock")
def clock(
    speed: Annotated[
        float | None,
        typer.Option(
            min=0.001, max=MAX_SPEED, help="Tenant seconds per real second from now on (3600: an hour a second)."
        ),
    ] = None,
    advance: Annotated[str | None, typer.Option(help="Move both sandboxes' clocks forward: 7d, 36h, P7D.")] = None,
) -> None:
    """Show the sandbox clocks; run the tenant's faster (--speed) or move both forward (--advance).

    The tenant's clock drives Microsoft's steps (mailbox moves, support cases); the Key Vault's drives retention and
    expiry and moves only with --advance. ckey's own timers (the week before an escalation) are the worker's
    settings, scaled by `ckey up` at start.
    """
    shift = None if advance is None else parse_duration(advance).total_seconds()
    settings = _settings()
    m365, kv = tenant(settings), keyvault(settings)
    if speed is not None:
        m365.call("PUT", "/clock/speed", {"speed": speed})
    if shift:
        m365.call("POST", "/clock/advance", {"seconds": shift})
        purged = kv.call("POST", "/clock/advance", {"seconds": shift}).get("purged", 0)
        if purged:
            console.print(f"sandbox Key Vault: {purged} soft-deleted key(s) reached their purge date and were purged")
    shown = m365.call("GET", "/clock")
    console.print(
        f"sandbox tenant clock: {shown['now']} at {shown['speed']:g}x (shifted {shown['shifted_seconds']:g} s)"
    )
    kv_clock = kv.call("GET", "/clock")
    console.print(f"sandbox Key Vault clock: {kv_clock['now']} (shifted {kv_clock['offset_seconds']:g} s)")


@sandbox_app.command("stuck-mailbox")
def stuck_mailbox(
    identity: Annotated[list[str], typer.Argument(help="The mailbox(es), e.g. adele.vance@contoso.com.")],
    release: Annotated[bool, typer.Option("--release", help="Let its move finish again.")] = False,
) -> None:
    """Keep a mailbox's move from ever finishing, so it never encrypts: rehearse the week's escalation."""
    answer = tenant(_settings()).call("POST", "/mailboxes/stuck", {"identities": identity, "stuck": not release})
    state = "stuck: it will not encrypt" if answer["stuck"] else "released: its move finishes again"
    for name in answer["mailboxes"]:
        console.print(f"{name} {state}")
