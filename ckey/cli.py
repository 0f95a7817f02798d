"""The ``ckey`` command line: the local stack, tokens, the database, and operations through the API."""

from __future__ import annotations

import asyncio
import json
import re
import time
import typing
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich import box
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy.engine import make_url

from ckey.cli_m365 import app as m365_app
from ckey.cli_sandbox import sandbox_app
from ckey.cli_schedules import app as schedules_app
from ckey.cli_spo import spo_app
from ckey.cli_vault import key_app, vault_app
from ckey.cli_w365 import app as w365_app
from ckey.config import Settings, SettingsError, get_settings
from ckey.models import Role, iso_duration, parse_duration

app = typer.Typer(help="Microsoft Purview Customer Key operations as durable Temporal workflows.", no_args_is_help=True)
db_app = typer.Typer(help="ckey's SQL database.", no_args_is_help=True)
ops_app = typer.Typer(help="Operations: start any kind, list, show, watch, cancel.", no_args_is_help=True)
dep_app = typer.Typer(help="Exchange Online DEPs: new, list, show.", no_args_is_help=True)
mailbox_app = typer.Typer(help="Mailboxes: assign a DEP, show, verify encryption.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(ops_app, name="ops")
# `ckey op start KIND` reads as the seed's procedures do; the same commands under the singular name.
app.add_typer(ops_app, name="op", hidden=True)
app.add_typer(dep_app, name="dep")
app.add_typer(mailbox_app, name="mailbox")
app.add_typer(schedules_app, name="schedules")
app.add_typer(w365_app, name="w365")
app.add_typer(m365_app, name="m365")

# Markup off: what the CLI prints comes from the API (names, identities, messages) and is shown as written, never
# read as Rich markup ("[/x]" in a key URI must not crash the CLI, nor "[red]" in a DEP name restyle a table).
console = Console(markup=False, emoji=False, highlight=False)
# Soft wrap: an error is one line however narrow the terminal, for the operator's scrollback and for scripts.
err_console = Console(stderr=True, markup=False, emoji=False, highlight=False, soft_wrap=True)


def _settings() -> Settings:
    try:
        return get_settings()
    except SettingsError as exc:
        err_console.print(f"{exc}", style="red")
        raise typer.Exit(2) from None


@app.command()
def up() -> None:
    """Start the local stack (Temporal dev server, sandboxes, worker, API) and supervise it until Ctrl-C."""
    from ckey.stack import run_stack

    raise typer.Exit(run_stack(_settings()))


@app.command()
def token(
    user: Annotated[str, typer.Option(help="Who the token names (recorded as started_by and in the audit trail).")],
    role: Annotated[list[Role], typer.Option(help="Role(s) the token carries.")],
    ttl: Annotated[str | None, typer.Option(help="Lifetime: 8h, 1d, PT8H...; default CKEY_TOKEN_TTL_MINUTES.")] = None,
    ttl_minutes: Annotated[int | None, typer.Option(help="Lifetime in minutes (or --ttl).", hidden=True)] = None,
) -> None:
    """Mint a bearer token for the local stack, signed with the key in the data dir."""
    from ckey.auth import mint_local_token

    lifetime = _duration(ttl, "--ttl") if ttl else timedelta(minutes=ttl_minutes) if ttl_minutes else None
    if lifetime is not None and lifetime <= timedelta(0):
        _fail("--ttl must be longer than 0", 2)
    typer.echo(mint_local_token(_settings(), user, role, lifetime))


def _fail(message: str, code: int = 1) -> typing.NoReturn:
    """Print one line on standard error and exit with ``code`` (1: refused or failed, 2: wrong usage)."""
    err_console.print(message, style="red")
    raise typer.Exit(code)


def _duration(text: str, option: str) -> timedelta:
    """``text`` as a duration (``7d``, ``P7D``, ``30s``...), or a one-line usage error naming ``option``."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        _fail(f"{option}: {exc}", 2)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade ckey's tables (Alembic)."""
    from ckey.store import create_engine
    from ckey.store.migrate import upgrade

    settings = _settings()

    async def _run() -> None:
        engine = create_engine(settings.resolved_database_url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(_run())
    shown = make_url(settings.resolved_database_url).render_as_string(hide_password=True)
    console.print(f"database at {shown} is up to date")


# Operations, through the API --------------------------------------------------------------------------------------


def api_client(settings: Settings | None = None) -> httpx.Client:
    """An HTTP client for the API with the configured bearer token."""
    settings = settings or _settings()
    if settings.token is None:
        err_console.print("no token: set CKEY_TOKEN (mint one with `ckey token --user U --role R`)", style="red")
        raise typer.Exit(2)
    return httpx.Client(
        base_url=settings.resolved_api_url,
        headers={"Authorization": f"Bearer {settings.token.get_secret_value()}"},
        timeout=30,
    )


def _call(method: str, path: str, **kwargs: Any) -> Any:
    with api_client() as client:
        try:
            response = client.request(method, path, **kwargs)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            _fail(f"cannot reach the API at {client.base_url}: {_one_line(str(exc)) or type(exc).__name__}")
    if response.status_code >= 400:
        _fail(f"{response.status_code}: {_problem_message(response)}")
    try:
        return response.json()
    except ValueError:
        _fail(f"the API answered {method} {path} with a body that is not JSON: {_one_line(response.text)[:200]!r}")


def _problem_message(response: httpx.Response) -> str:
    """The sentence of an error answer: a problem's detail, else its title, else the body as text, on one line."""
    try:
        problem = response.json()
    except ValueError:
        problem = None
    message: object = None
    if isinstance(problem, dict):
        message = problem.get("detail") or problem.get("title")
    if message is None or message == "":
        message = response.text or response.reason_phrase
    text = message if isinstance(message, str) else json.dumps(message)
    return _one_line(text)[:2000]


def _one_line(text: str) -> str:
    return " ".join(text.split())


FULL_ID = re.compile(r"op-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
SHORT_ID = 8
"""Hex characters of an operation id that ``ckey ops list`` shows (``op-1a2b3c4d-…`` as ``1a2b3c4d``)."""


def short_id(operation_id: str) -> str:
    """The short form of an operation id: the first :data:`SHORT_ID` hex characters after ``op-``."""
    return operation_id.removeprefix("op-")[:SHORT_ID] if FULL_ID.match(operation_id) else operation_id


def resolve_operation(given: str) -> str:
    """The operation id that ``given`` (a full id, or the start of one, with or without ``op-``) names.

    A full id is used as it is; a prefix is looked up (``GET /api/operations?id_prefix=``) and must match exactly
    one operation, else the command stops with one line: none matches, or which ones an ambiguous prefix matches.
    """
    given = given.strip()
    if FULL_ID.match(given.lower()):
        return given.lower()
    if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", given):
        _fail(f"{given!r} is not an operation id: give it as `ckey ops list` shows it (1a2b3c4d or op-1a2b3c4d-…)", 2)
    page = _call("GET", "/api/operations", params={"id_prefix": given.lower(), "limit": 5})
    found = [op["id"] for op in page.get("items", [])]
    total = int(page.get("total", len(found)))
    if total == 0:
        _fail(f"no operation {given}")
    if total > 1:
        shown = ", ".join(found) + (", …" if total > len(found) else "")
        _fail(f"{given} is ambiguous: it starts {total} operation ids ({shown}); give more characters", 2)
    return str(found[0])


def _when(value: str, wide: bool) -> str:
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return at.strftime("%Y-%m-%d %H:%M" if wide else "%m-%d %H:%M")


@ops_app.command("list")
def ops_list(
    state: Annotated[str | None, typer.Option(help="Only operations in this state.")] = None,
    kind: Annotated[str | None, typer.Option(help="Only operations of this kind.")] = None,
    limit: Annotated[int, typer.Option(help="How many to show.", min=1, max=1000)] = 50,
    offset: Annotated[int, typer.Option(help="How many of the newest to skip.", min=0)] = 0,
    scheduled: Annotated[
        bool, typer.Option("--scheduled", help="List the runs ckey's schedules started (hidden by default).")
    ] = False,
) -> None:
    """List operations, newest first; ids in their short form, which every other ops command accepts.

    The schedules' runs (an inventory sync every few seconds on the demo stack) are left out unless asked for.
    """
    params: dict[str, Any] = {k: v for k, v in {"state": state, "kind": kind}.items() if v}
    params["scheduled"] = "true" if scheduled else "false"
    page = _call("GET", "/api/operations", params=params | {"limit": limit, "offset": offset})
    items: list[dict[str, Any]] = page["items"]
    wide = console.width >= 100
    # Fits 80 columns: short ids (`ops show` takes them), no borders, the phase left to `ops show`.
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 1), collapse_padding=True)
    table.add_column("id", no_wrap=True, min_width=SHORT_ID)
    table.add_column("kind", no_wrap=True, overflow="ellipsis")
    table.add_column("state", no_wrap=True, min_width=9)
    table.add_column("done", no_wrap=True, justify="right", min_width=4)
    table.add_column("started (UTC)" if wide else "started", no_wrap=True, min_width=16 if wide else 11)
    table.add_column("by", no_wrap=True, overflow="ellipsis")
    for op in items:
        pct = op["progress"].get("percent")
        table.add_row(
            short_id(op["id"]),
            op["kind"],
            op["state"],
            "" if pct is None else f"{pct:.0f}%",
            _when(op["started_at"], wide),
            op["started_by"] if wide else op["started_by"].split("@")[0],
        )
    console.print(table)
    total = int(page["total"])
    if total > len(items):
        first = offset + 1 if items else offset
        console.print(f"{first}-{offset + len(items)} of {total} (--offset, --limit for more)")


OperationArg = Annotated[
    str, typer.Argument(help="The operation: its id, or the start of it as `ckey ops list` shows it (1a2b3c4d).")
]


@ops_app.command("show")
def ops_show(operation_id: OperationArg) -> None:
    """Show one operation and its audit timeline."""
    operation_id = resolve_operation(operation_id)
    op = _call("GET", f"/api/operations/{operation_id}")
    events = _call("GET", f"/api/operations/{operation_id}/events")
    console.print_json(json.dumps(op))
    table = Table("seq", "at", "actor", "action", "outcome", "target")
    for ev in events:
        table.add_row(str(ev["seq"]), ev["at"], ev["actor"], ev["action"], ev["outcome"], ev.get("target") or "")
    console.print(table)


@ops_app.command("cancel")
def ops_cancel(operation_id: OperationArg) -> None:
    """Ask an operation to cancel (operations past a point of no return refuse)."""
    operation_id = resolve_operation(operation_id)
    _call("POST", f"/api/operations/{operation_id}/cancel")
    console.print(f"cancellation requested for {operation_id}")


@ops_app.command("watch")
def ops_watch(
    operation_id: OperationArg,
    interval: Annotated[str, typer.Option(help="Time between polls: 1s, 500ms, PT2S, or seconds.")] = "1s",
) -> None:
    """Follow an operation with a live progress bar (phase and ETA) until it ends."""
    operation_id = resolve_operation(operation_id)
    pause = max(_duration(interval, "--interval").total_seconds(), 0.1)
    bar = Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    task = bar.add_task("starting", total=None)
    with Live(bar, console=console, refresh_per_second=4):
        while True:
            op = _call("GET", f"/api/operations/{operation_id}")
            progress = op["progress"]
            # An assignment shows both figures: how many are assigned, and (the bar) how many are done.
            assigned = f" · {progress['assigned']} assigned" if progress.get("assigned") is not None else ""
            bar.update(
                task,
                description=f"{op['kind']} · {op['phase']}{assigned} ({progress['unit']})",
                completed=progress["done"],
                total=progress["total"],
            )
            if op["state"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(pause)
    console.print(f"{operation_id}: {op['state']}" + (f" — {op['error']}" if op.get("error") else ""))
    if op["state"] != "succeeded":
        raise typer.Exit(1)


@ops_app.command("close")
def ops_close(
    operation_id: OperationArg,
    reason: Annotated[str, typer.Option(help="Why the follow-up ends before it is complete.")],
) -> None:
    """End a follow-up (mailboxes still encrypting) with what it reached."""
    operation_id = resolve_operation(operation_id)
    result = _call("POST", f"/api/operations/{operation_id}/close", json={"reason": reason})
    console.print(f"{operation_id} closed: {result.get('encrypted')} of {result.get('total')} encrypted")


@ops_app.command("kinds")
def ops_kinds() -> None:
    """The operation kinds the API can start, the role each needs and its parameters."""
    table = Table("kind", "role", "params", "description")
    for kind in _call("GET", "/api/operations/kinds"):
        table.add_row(
            kind["kind"], kind["role"], ", ".join(kind["params_schema"].get("properties", {})), kind["description"]
        )
    console.print(table)


@ops_app.command("start")
def ops_start(
    kind: Annotated[str, typer.Argument(help="The operation kind (`ckey ops kinds` lists them).")],
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="A parameter, name=value (repeat a list's name for each item)."),
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option("--idempotency-key", help="Retry-safe key: the same key, the same run.")
    ] = None,
    watch: Annotated[bool, typer.Option("--watch/--no-watch", help="Follow the operation with a progress bar.")] = True,
) -> None:
    """Start an operation of any kind the API registers; each parameter is typed by the kind's published schema."""
    kinds = {k["kind"]: k for k in _call("GET", "/api/operations/kinds")}
    if kind not in kinds:
        err_console.print(
            f"unknown operation kind {kind!r}; known kinds: {', '.join(sorted(kinds)) or 'none'}", style="red"
        )
        raise typer.Exit(2)
    try:
        params = typed_params(param or [], kinds[kind]["params_schema"])
    except ValueError as exc:
        _fail(str(exc), 2)
    _start(kind, params, key=idempotency_key, watch=watch)


def _types(schema: dict[str, Any]) -> set[str]:
    found = {schema["type"]} if isinstance(schema.get("type"), str) else set(schema.get("type") or [])
    for option in schema.get("anyOf", []):
        found |= _types(option)
    return found


def typed_params(pairs: list[str], schema: dict[str, Any]) -> dict[str, Any]:
    """``name=value`` pairs as the JSON the kind's params schema describes.

    A list's name given again adds an item, and a list's value may hold several items separated by commas (key
    URIs and identities never hold one: ``azure_key_ids=uri1,uri2`` as New-DataEncryptionPolicy -AzureKeyIDs);
    booleans take true/false, yes/no, 1/0; integers and numbers are parsed; durations take ``7d`` as well as
    ``P7D``; anything else is a string. A name the schema does not know is sent as a string, for the API to refuse.

    Raises:
        ValueError: a pair without ``=``, or a value that is not of its parameter's type.
    """
    properties: dict[str, Any] = schema.get("properties", {})
    params: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"a parameter is name=value, got {pair!r}")
        spec = properties.get(name, {})
        types = _types(spec)
        if "array" in types:
            item = _items(spec)
            parts = [part.strip() for part in raw.split(",")]
            values = [_typed(name, part, _types(item), _formats(item)) for part in parts if part]
            params.setdefault(name, []).extend(values)
            continue
        value = _typed(name, raw, types, _formats(spec))
        if name in params:
            raise ValueError(f"{name} takes one value, given twice")
        params[name] = value
    return params


def _items(schema: dict[str, Any]) -> dict[str, Any]:
    if isinstance(schema.get("items"), dict):
        return dict(schema["items"])
    return next((_items(option) for option in schema.get("anyOf", []) if _items(option)), {})


def _formats(schema: dict[str, Any]) -> set[str]:
    found = {schema["format"]} if isinstance(schema.get("format"), str) else set()
    for option in schema.get("anyOf", []):
        found |= _formats(option)
    return found


def _typed(name: str, raw: str, types: set[str], formats: set[str]) -> Any:
    if "boolean" in types and raw.lower() in ("true", "false", "yes", "no", "1", "0"):
        return raw.lower() in ("true", "yes", "1")
    if "integer" in types or "number" in types:
        try:
            return int(raw) if "integer" in types else float(raw)
        except ValueError:
            raise ValueError(f"{name} is a number, got {raw!r}") from None
    if "duration" in formats:
        try:
            return iso_duration(parse_duration(raw))
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return raw


# Operation families ------------------------------------------------------------------------------------------------


def _start(kind: str, params: dict[str, Any], *, key: str | None, watch: bool) -> None:
    headers = {"Idempotency-Key": key} if key else {}
    accepted = _call("POST", "/api/operations", json={"kind": kind, "params": params}, headers=headers)
    console.print(
        f"{kind} started: {accepted['id']}" + (" (the same request again)" if accepted.get("replayed") else "")
    )
    if watch:
        ops_watch(accepted["id"])


KeyOption = Annotated[str | None, typer.Option("--idempotency-key", help="Retry-safe key: the same key, the same run.")]
WatchOption = Annotated[bool, typer.Option("--watch/--no-watch", help="Follow the operation with a progress bar.")]


@dep_app.command("new")
def dep_new(
    name: str,
    key: Annotated[
        list[str],
        typer.Option(
            "--key",
            "--azure-key-ids",
            help='The two key URIs, in two vaults in two regions: --key URI1 --key URI2, or "URI1, URI2" as in '
            "New-DataEncryptionPolicy -AzureKeyIDs.",
        ),
    ],
    description: Annotated[str | None, typer.Option(help="What the DEP is for.")] = None,
    idempotency_key: KeyOption = None,
    watch: WatchOption = True,
) -> None:
    """Create a mailbox DEP (New-DataEncryptionPolicy) after checking both keys."""
    # Key URIs hold no comma: "uri1, uri2" is the seed's comma-separated list, split here as PowerShell would.
    keys = [part.strip() for value in key for part in value.split(",") if part.strip()]
    params: dict[str, Any] = {"name": name, "azure_key_ids": keys}
    if description:
        params["description"] = description
    _start("exchange.dep.create", params, key=idempotency_key, watch=watch)


@dep_app.command("list")
def dep_list() -> None:
    """The tenant's mailbox DEPs (Get-DataEncryptionPolicy)."""
    table = Table("name", "guid", "enabled", "purge requested", "keys")
    for dep in _call("GET", "/api/deps"):
        table.add_row(
            dep["name"],
            dep["guid"],
            str(dep["enabled"]),
            str(dep["permanent_data_purge_requested"]),
            "\n".join(dep["azure_key_ids"]),
        )
    console.print(table)


@dep_app.command("show")
def dep_show(name: str) -> None:
    """One DEP by name or GUID."""
    deps = [d for d in _call("GET", "/api/deps") if name.lower() in (d["name"].lower(), d["guid"].lower())]
    if not deps:
        err_console.print(f"no DEP {name}", style="red")
        raise typer.Exit(1)
    console.print_json(json.dumps(deps[0]))


def _targets(mailbox: list[str] | None, file: Path | None) -> dict[str, Any]:
    if file is not None and mailbox:
        # Appending to a CSV whose identity column may not be the first would put the extra ones in the wrong
        # column; one list per operation keeps what is assigned exactly what was asked.
        _fail("give --mailbox or --file, not both: add the mailboxes to the file, or start a second operation", 2)
    if file is not None:
        try:
            body = file.open("rb")
        except OSError as exc:
            _fail(f"cannot read --file {file}: {exc.strerror or exc}", 2)
        with body:
            # The file streams to the API (which refuses it past CKEY_UPLOAD_MAX_BYTES); it is never read whole here.
            uploaded = _call(
                "POST",
                "/api/uploads/mailboxes",
                params={"name": file.name},
                content=body,
                headers={"Content-Type": "text/csv"},
            )
        console.print(f"uploaded {uploaded['count']} mailboxes from {file.name} as {uploaded['id']}")
        return {"mailbox_file": uploaded["id"]}
    return {"mailboxes": mailbox} if mailbox else {}


MailboxOption = Annotated[list[str] | None, typer.Option("--mailbox", help="A mailbox identity (repeatable).")]
FileOption = Annotated[
    Path | None,
    typer.Option(
        "--file", help="A CSV of mailboxes (, or ; separated; Identity column or column 1); not with --mailbox."
    ),
]


@mailbox_app.command("assign")
def mailbox_assign(
    dep: Annotated[str, typer.Option(help="The DEP to assign.")],
    mailbox: MailboxOption = None,
    file: FileOption = None,
    mail_user: Annotated[bool, typer.Option(help="Set-MailUser: hybrid or not yet migrated mailboxes.")] = False,
    idempotency_key: KeyOption = None,
    watch: WatchOption = True,
) -> None:
    """Assign a DEP to mailboxes and follow them until encrypted.

    When to escalate and how often to check are the deployment's settings (CKEY_EXCHANGE_ESCALATE_AFTER,
    CKEY_EXCHANGE_POLL_INTERVAL), recorded on the operation; a caller cannot set them.
    """
    params = {
        "dep": dep,
        "mail_user": mail_user,
        **_targets(mailbox, file),
    }
    _start("exchange.dep.assign", params, key=idempotency_key, watch=watch)


@mailbox_app.command("verify")
def mailbox_verify(
    dep: Annotated[str, typer.Option(help="The DEP the mailboxes should be encrypted with.")],
    mailbox: MailboxOption = None,
    file: FileOption = None,
    idempotency_key: KeyOption = None,
    watch: WatchOption = True,
) -> None:
    """Follow mailboxes (default: all of the DEP's) until encrypted, without assigning."""
    params = {
        "dep": dep,
        **_targets(mailbox, file),
    }
    _start("exchange.encryption.verify", params, key=idempotency_key, watch=watch)


@mailbox_app.command("show")
def mailbox_show(identity: str) -> None:
    """A mailbox's DEP (name and GUID) and whether it is encrypted."""
    console.print_json(json.dumps(_call("GET", f"/api/mailboxes/{identity}")))


# Audit trail, through the API --------------------------------------------------------------------------------------

audit_app = typer.Typer(help="The audit trail: verify its chain and checkpoints, export it.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")

_AUDIT_PAGE = 5000


def _download_audit() -> tuple[tuple[int, str], list[dict[str, Any]], list[Any]]:
    """The checkpoints, then the chain head, then the entries up to the head.

    In that order every checkpoint names an entry committed before the head was read, so appends running meanwhile
    cannot make a checkpoint outrun the entries. The checkpoints are never cut at the head: a rewound head with
    checkpoints past it is exactly the truncation they reveal.
    """
    from ckey.audit import Checkpoint

    checkpoints = [Checkpoint.model_validate(item) for item in _pages("/api/audit/checkpoints")]
    head_body = _call("GET", "/api/audit/head")
    head = (int(head_body["seq"]), str(head_body["hash"]))
    return head, list(_pages("/api/audit", head[0])), checkpoints


def _pages(path: str, last: int | None = None) -> Iterator[dict[str, Any]]:
    """Every item of a paged audit listing (up to sequence number ``last``, if given)."""
    after = 0
    while True:
        page: list[dict[str, Any]] = _call("GET", path, params={"after": after, "limit": _AUDIT_PAGE})
        yield from (item for item in page if last is None or item["seq"] <= last)
        if len(page) < _AUDIT_PAGE or (last is not None and page[-1]["seq"] >= last):
            return
        after = page[-1]["seq"]


def _public_key(path: Path) -> Any:
    from ckey.audit import AuditKeyError, load_public_key

    try:
        return load_public_key(path.read_bytes())
    except (OSError, AuditKeyError) as exc:
        err_console.print(f"cannot read the public key {path}: {exc}", style="red")
        raise typer.Exit(2) from None


def _report(verdict: Any) -> None:
    signed = "signatures verified" if verdict.signatures_checked else "signatures NOT verified (no public key)"
    if verdict.ok:
        console.print(
            f"audit trail intact: {verdict.events} entries, {verdict.checkpoints} checkpoints matched "
            f"(last at row {verdict.last_checkpoint}), {signed}"
        )
        return
    err_console.print(f"audit trail BROKEN at row {verdict.broken_at}: {verdict.reason}", style="red")
    err_console.print(f"{verdict.events} entries verified before it; {signed}")
    raise typer.Exit(1)


@audit_app.command("verify")
def audit_verify(
    public_key: Annotated[
        Path | None,
        typer.Option(
            "--public-key",
            help="The checkpoint public key (PEM) you hold: verify locally with it instead of asking the API.",
        ),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", help="Verify this export (`ckey audit export`) offline; needs --public-key."),
    ] = None,
) -> None:
    """Verify the audit trail's hash chain and signed checkpoints; exit 1 naming the first broken row."""
    from ckey.audit import ChainChecker, ChainVerification, ExportError, verify_export

    if file is not None:
        if public_key is None:
            err_console.print("--file needs --public-key: an export is verified with the public key alone", style="red")
            raise typer.Exit(2)
        try:
            _report(verify_export(file, _public_key(public_key)))
        except (OSError, ExportError) as exc:
            err_console.print(f"cannot verify {file}: {exc}", style="red")
            raise typer.Exit(2) from None
        return
    if public_key is None:
        _report(ChainVerification.model_validate(_call("GET", "/api/audit/verify")))
        return
    key = _public_key(public_key)
    head, events, checkpoints = _download_audit()
    checker = ChainChecker(checkpoints, key)
    for event in events:
        if not checker.feed(event):
            break
    _report(checker.finish(head))


@audit_app.command("export")
def audit_export(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of standard output.")
    ] = None,
) -> None:
    """Export the audit trail as JSON Lines: a header with the chain head, every entry, every checkpoint."""
    from datetime import UTC, datetime

    from ckey.audit import export_lines

    head, events, checkpoints = _download_audit()
    lines = export_lines(head, events, checkpoints, datetime.now(UTC))
    if output is None:
        for line in lines:
            typer.echo(line)
        return
    with output.open("w", encoding="utf-8") as out:
        for line in lines:
            out.write(line + "\n")
    err_console.print(f"exported {len(events)} entries and {len(checkpoints)} checkpoints to {output}")


# Key vaults, keys and the sandbox rehearsals: their own modules ---------------------------------------------------

app.add_typer(vault_app, name="vault")
app.add_typer(key_app, name="key")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(spo_app, name="spo")


def main() -> None:
    """Entry point of the ``ckey`` script."""
    app()


if __name__ == "__main__":
    main()
