"""``/api/uploads``: lists of mailboxes uploaded once and referred to by id (claim checks for large operations).

A list arrives as a ``text/csv`` body or as the ``file`` field of a ``multipart/form-data`` form (``curl -F
file=@mailboxes.csv``, the ``/docs`` page); anything else is refused with 415. Either way the body streams to a
spooled temporary file within ``CKEY_UPLOAD_MAX_BYTES`` and is never held whole in memory. Every identity is checked
(:func:`ckey.models.check_identity`); a file with a rejected line is refused whole with 422, naming each line, so an
operation never runs on a list that lost rows on the way in.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
import tempfile
from collections.abc import AsyncGenerator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import Field
from pydantic_core import PydanticCustomError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from ckey.api.deps import Operator, SettingsDep, StoreDep, Viewer
from ckey.api.limits import too_large
from ckey.api.problems import Problem
from ckey.models import check_identity, located
from ckey.store.targets import TargetSet, TargetStore

router = APIRouter(prefix="/api/uploads", tags=["uploads"])

IDENTITY_COLUMNS = (
    "identity",
    "primarysmtpaddress",
    "userprincipalname",
    "upn",
    "mailbox",
    "windowsemailaddress",
    "emailaddress",
    "email",
    "smtpaddress",
    "alias",
    "exchangeguid",
    "externaldirectoryobjectid",
    "guid",
)
"""Header names of the identity column, by preference, compared without case, spaces or underscores."""
HEADER_NAMES = "Identity, PrimarySmtpAddress, UserPrincipalName, UPN, Mailbox, EmailAddress, Alias or ExchangeGuid"
REJECTED_SHOWN = 100
"""Rejected lines listed in a 422 (the count names them all)."""
FORM_FIELD = "file"
"""The multipart field that carries the CSV."""
CSV_TYPES = ("text/csv",)
FORM_TYPE = "multipart/form-data"


@dataclass
class RejectedLine:
    """A line of the file that holds no valid identity."""

    line: int
    """The file line the row starts on, from 1, the header included (as an editor numbers lines)."""
    rule: str
    message: str


@dataclass
class MailboxCsv:
    """What a mailbox CSV holds: the identities of its valid rows, in order, and the rejected lines."""

    identities: list[str] = field(default_factory=list)
    rejected: list[RejectedLine] = field(default_factory=list)


def _delimiter(first_line: str) -> str:
    # Excel writes ";" where the decimal separator is ",": a header or first row with more ";" than "," is read so.
    # An identity holds neither (check_identity), so a one-column file reads the same either way.
    return ";" if first_line.count(";") > first_line.count(",") else ","


def _header_key(cell: str) -> str:
    return re.sub(r"[\s_-]", "", cell).lower()


def read_mailbox_csv(text: str | Iterable[str]) -> MailboxCsv:
    """The identities of a CSV of mailboxes and the lines that hold none.

    The separator is ``,`` or ``;`` (whichever the first line uses more). With a header row naming an identity
    column (:data:`IDENTITY_COLUMNS`: ``Identity``, ``PrimarySmtpAddress``, ``UserPrincipalName``...) that column is
    read, else column 1. Blank lines and blank cells are skipped; every other cell must be a valid identity
    (:func:`ckey.models.check_identity`), or its line is rejected with the rule it broke.

    Args:
        text: the whole file, or its lines as a stream (a text file object opened with ``newline=""``).

    Raises:
        csv.Error: the text is not CSV (a cell over the csv module's field size, a NUL outside quotes...).
    """
    lines: Iterator[str] = iter(io.StringIO(text, newline="") if isinstance(text, str) else text)
    peeked: list[str] = []
    for line in lines:
        peeked.append(line)
        if line.strip():
            break
    if not peeked or not peeked[-1].strip():
        return MailboxCsv()
    reader = csv.reader(itertools.chain(peeked, lines), delimiter=_delimiter(peeked[-1]))
    result = MailboxCsv()
    column: int | None = None
    header_seen = False
    start = 1
    for row in reader:
        number, start = start, reader.line_num + 1
        if not any(cell.strip() for cell in row):
            continue
        if not header_seen:
            header_seen = True
            keys = [_header_key(cell) for cell in row]
            column = next((keys.index(name) for name in IDENTITY_COLUMNS if name in keys), None)
            if column is not None:
                continue
        cell = row[column or 0] if len(row) > (column or 0) else ""
        if not cell.strip():
            continue
        try:
            result.identities.append(check_identity(cell))
        except PydanticCustomError as exc:
            result.rejected.append(RejectedLine(number, exc.type, located(exc, f"line {number}").message()))
    return result


def parse_mailbox_csv(text: str | Iterable[str]) -> list[str]:
    """The identities of a CSV of mailboxes (:func:`read_mailbox_csv`), refusing a file with a rejected line.

    Raises:
        csv.Error: the text is not CSV.
        PydanticCustomError: the first rejected line; its type is the rule id (``mailbox-identity-format``,
            ``mailbox-identity-length``, ``no-control-characters``) and its message names the line (``line 3: ...``).
    """
    found = read_mailbox_csv(text)
    if found.rejected:
        first = found.rejected[0]
        raise PydanticCustomError(first.rule, "{detail}", {"detail": first.message})
    return found.identities


UPLOAD_NAME = r"^[^\x00-\x1f\x7f-\x9f/\\]{1,200}$"
"""A file name for the record: no control characters, no path separators."""
_UPLOAD_NAME = re.compile(UPLOAD_NAME.removeprefix("^").removesuffix("$") + r"\Z")
DEFAULT_NAME = "upload.csv"
SPOOL_IN_MEMORY = 1024 * 1024
"""Bytes of an upload kept in memory before the rest spools to a temporary file."""

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            "A CSV of mailboxes, `,` or `;` separated, with an optional header naming the identity column "
            f"({HEADER_NAMES}); else column 1 is read. Each identity is an SMTP address, a UPN, an alias or a GUID."
        ),
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            FORM_TYPE: {
                "schema": {
                    "type": "object",
                    "properties": {
                        FORM_FIELD: {"type": "string", "format": "binary", "description": "The CSV file."},
                    },
                    "required": [FORM_FIELD],
                },
            },
        },
    }
}


async def _bounded(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit, "the upload")
        yield chunk


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _file_name(given: str | None, sent: str | None) -> str:
    if given is not None:
        return given
    # A form's file name is the client's: keep its last path segment, if it makes a clean name.
    base = re.split(r"[/\\]", sent or "")[-1]
    return base if _UPLOAD_NAME.match(base) else DEFAULT_NAME


def _read_spooled(binary: IO[bytes]) -> MailboxCsv:
    try:
        with io.TextIOWrapper(binary, encoding="utf-8-sig", newline="") as text:
            return read_mailbox_csv(text)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise Problem(422, "mailbox-file-format", f"the file is not a UTF-8 CSV of mailboxes: {exc}") from None


async def _from_csv_body(request: Request, limit: int) -> MailboxCsv:
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
        async for chunk in _bounded(request, limit):
            spool.write(chunk)
        spool.seek(0)
        return _read_spooled(spool)


async def _from_form(request: Request, limit: int) -> tuple[MailboxCsv, str | None]:
    # One file and a few small fields at most: a form is not a way around the single list it is meant to carry.
    parser = MultiPartParser(request.headers, _bounded(request, limit), max_files=1, max_fields=10)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise Problem(422, "mailbox-file-format", f"the form could not be read: {exc}") from None
    try:
        sent = form.get(FORM_FIELD)
        if sent is None:
            raise Problem(
                422, "mailbox-file-format", f"the form has no {FORM_FIELD!r} field: send the CSV as -F {FORM_FIELD}=@…"
            )
        if isinstance(sent, UploadFile):
            return _read_spooled(sent.file), sent.filename
        try:
            return read_mailbox_csv(sent), None
        except csv.Error as exc:
            raise Problem(422, "mailbox-file-format", f"the file is not a CSV of mailboxes: {exc}") from None
    finally:
        await form.close()


def _rejected_problem(rejected: list[RejectedLine]) -> Problem:
    shown = rejected[:REJECTED_SHOWN]
    rules = sorted({r.rule for r in rejected})
    listed = "; ".join(r.message for r in shown) + ("; …" if len(rejected) > len(shown) else "")
    hint = f" (a header names the identity column: {HEADER_NAMES})" if rejected[0].line == 1 else ""
    lines = "line" if len(rejected) == 1 else "lines"
    return Problem(
        422,
        rules[0] if len(rules) == 1 else "mailbox-file-rows",
        f"{len(rejected)} {lines} of the file hold no valid mailbox identity, nothing was stored{hint}: {listed}",
        errors=[{"loc": ["body", "line", r.line], "rule": r.rule, "msg": r.message} for r in shown],
        rejected_lines=[r.line for r in rejected[:REJECTED_SHOWN]],
    )


@router.post(
    "/mailboxes",
    status_code=201,
    response_model=TargetSet,
    responses={
        413: {"description": "The upload is over CKEY_UPLOAD_MAX_BYTES"},
        415: {"description": "The body is neither text/csv nor multipart/form-data"},
        422: {"description": "Lines without a valid identity (each named), or no identity at all"},
    },
    openapi_extra=_UPLOAD_BODY,
)
async def upload_mailboxes(
    request: Request,
    principal: Operator,
    store: StoreDep,
    settings: SettingsDep,
    name: Annotated[
        str | None,
        Query(
            pattern=UPLOAD_NAME,
            description="The file's name, kept for the record (default: the form's file name, or upload.csv).",
        ),
    ] = None,
) -> TargetSet:
    """Store a CSV of mailboxes; pass the returned id as ``mailbox_file`` to an operation.

    Send the file as a ``text/csv`` body (``curl --data-binary @m.csv -H 'Content-Type: text/csv'``) or as the
    ``file`` field of a form (``curl -F file=@m.csv``). The body streams to a temporary file and is refused with 413
    as soon as it passes ``CKEY_UPLOAD_MAX_BYTES``. A file with lines that hold no valid identity is refused with
    422 naming each line, and nothing is stored; duplicates (compared without case) are stored once.
    """
    limit = settings.upload_max_bytes
    media = _media_type(request)
    sent_name: str | None = None
    if media in CSV_TYPES:
        found = await _from_csv_body(request, limit)
    elif media == FORM_TYPE:
        found, sent_name = await _from_form(request, limit)
    else:
        raise Problem(
            415,
            "upload-content-type",
            f"a mailbox list is sent as text/csv or as the {FORM_FIELD!r} field of multipart/form-data, "
            f"not {media or 'a body without Content-Type'}",
        )
    if found.rejected:
        raise _rejected_problem(found.rejected)
    if not found.identities:
        raise Problem(422, "mailbox-file-format", "the file names no mailboxes")
    source = _file_name(name, sent_name)
    return await TargetStore(store).create_set("mailboxes", source, found.identities, principal.user, datetime.now(UTC))


class UploadView(TargetSet):
    """A stored list of mailboxes: what it is, who uploaded it, and its first identities."""

    identities: list[str] = Field(description="The first identities, in the order stored (see ``limit``).")
    more: bool = Field(description="Whether the list holds more identities than shown.")


UploadId = Annotated[str, Path(min_length=1, max_length=64, description="The upload's id (ts-<uuid>).")]


@router.get("/{upload_id}", response_model=UploadView, responses={404: {"description": "No such upload"}})
async def get_upload(
    upload_id: UploadId,
    _: Viewer,
    store: StoreDep,
    limit: Annotated[int, Query(ge=0, le=1000, description="How many identities to show.")] = 20,
) -> UploadView:
    """What an upload stored: its count, source file, uploader, time, and its first ``limit`` identities."""
    targets = TargetStore(store)
    stored = await targets.get_set(upload_id)
    if stored is None:
        raise Problem(404, "mailbox-file-exists", f"no uploaded mailbox list {upload_id}")
    shown = await targets.items(upload_id, 0, limit) if limit else []
    return UploadView(**stored.model_dump(), identities=shown, more=stored.count > len(shown))
