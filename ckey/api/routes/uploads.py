"""``/api/uploads``: lists of mailboxes uploaded once and referred to by id (claim checks for large operations)."""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic_core import PydanticCustomError

from ckey.api.deps import Operator, SettingsDep, StoreDep
from ckey.api.limits import too_large
from ckey.api.problems import Problem
from ckey.models import check_identity, located
from ckey.store.targets import TargetSet, TargetStore

router = APIRouter(prefix="/api/uploads", tags=["uploads"])

IDENTITY_COLUMNS = ("identity", "userprincipalname", "primarysmtpaddress", "mailbox", "upn")


def parse_mailbox_csv(text: str | Iterable[str]) -> list[str]:
    """Identities from a CSV: the ``Identity`` (or UPN, SMTP address) column when there is a header, else column 1.

    ``text`` is the whole file, or its lines as a stream (a text file object). Blank cells are skipped; every other
    cell must be a valid identity (:func:`ckey.models.check_identity`).

    Raises:
        csv.Error: the text is not CSV.
        PydanticCustomError: a cell breaks the identity rule; its type is the rule id (``mailbox-identity-length``,
            ``no-control-characters``) and its message names the row (``row 3: ...``, rows counted from 1 as a
            spreadsheet shows them, the header included). Answer it with ``Problem(422, exc.type, exc.message())``.
    """
    lines = io.StringIO(text) if isinstance(text, str) else text
    rows = [(number, row) for number, row in enumerate(csv.reader(lines), start=1)]
    rows = [(number, row) for number, row in rows if any(cell.strip() for cell in row)]
    if not rows:
        return []
    header = [cell.strip().lower() for cell in rows[0][1]]
    column = next((header.index(name) for name in IDENTITY_COLUMNS if name in header), None)
    cells = (
        [(n, row[0]) for n, row in rows]
        if column is None
        else [(n, row[column]) for n, row in rows[1:] if len(row) > column]
    )
    identities = []
    for number, cell in cells:
        if not cell.strip():
            continue
        try:
            identities.append(check_identity(cell))
        except PydanticCustomError as exc:
            raise located(exc, f"row {number}") from None
    return identities


UPLOAD_NAME = r"^[^\x00-\x1f\x7f-\x9f/\\]{1,200}$"
"""A file name for the record: no control characters, no path separators."""
SPOOL_IN_MEMORY = 1024 * 1024
"""Bytes of an upload kept in memory before the rest spools to a temporary file."""


@router.post("/mailboxes", status_code=201, response_model=TargetSet)
async def upload_mailboxes(
    request: Request,
    principal: Operator,
    store: StoreDep,
    settings: SettingsDep,
    name: Annotated[
        str, Query(pattern=UPLOAD_NAME, description="The file's name, kept for the audit trail.")
    ] = "upload.csv",
) -> TargetSet:
    """Store a CSV of mailboxes (body ``text/csv``); pass the returned id as ``mailbox_file`` to an operation.

    The body streams to a temporary file as it arrives and is refused with 413 as soon as it passes the upload
    limit (``CKEY_UPLOAD_MAX_BYTES``); it is never held whole in memory.
    """
    limit = settings.upload_max_bytes
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large(limit, "the upload")
            spool.write(chunk)
        spool.seek(0)
        try:
            with io.TextIOWrapper(spool, encoding="utf-8-sig", newline="") as text:
                identities = parse_mailbox_csv(text)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise Problem(422, "mailbox-file-format", f"the file is not a UTF-8 CSV of mailboxes: {exc}") from None
        except PydanticCustomError as exc:
            message = exc.message()
            raise Problem(
                422, exc.type, message, errors=[{"loc": ["body"], "rule": exc.type, "msg": message}]
            ) from None
    if not identities:
        raise Problem(422, "mailbox-file-format", "the file names no mailboxes")
    return await TargetStore(store).create_set("mailboxes", name, identities, principal.user, datetime.now(UTC))
