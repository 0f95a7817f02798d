"""``/api/uploads``: lists of mailboxes uploaded once and referred to by id (claim checks for large operations)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request

from ckey.api.deps import Operator, StoreDep
from ckey.api.problems import Problem
from ckey.store.targets import TargetSet, TargetStore

router = APIRouter(prefix="/api/uploads", tags=["uploads"])

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
IDENTITY_COLUMNS = ("identity", "userprincipalname", "primarysmtpaddress", "mailbox", "upn")


def parse_mailbox_csv(text: str) -> list[str]:
    """Identities from a CSV: the ``Identity`` (or UPN, SMTP address) column when there is a header, else column 1."""
    rows = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    if not rows:
        return []
    header = [cell.strip().lower() for cell in rows[0]]
    column = next((header.index(name) for name in IDENTITY_COLUMNS if name in header), None)
    if column is None:
        return [row[0].strip() for row in rows if row and row[0].strip()]
    return [row[column].strip() for row in rows[1:] if len(row) > column and row[column].strip()]


@router.post("/mailboxes", status_code=201, response_model=TargetSet)
async def upload_mailboxes(
    request: Request,
    principal: Operator,
    store: StoreDep,
    name: Annotated[
        str, Query(max_length=200, description="The file's name, kept for the audit trail.")
    ] = "upload.csv",
) -> TargetSet:
    """Store a CSV of mailboxes (body ``text/csv``); pass the returned id as ``mailbox_file`` to an operation."""
    body = await request.body()
    if len(body) > MAX_UPLOAD_BYTES:
        raise Problem(413, "upload-size", f"uploads are at most {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB")
    try:
        identities = parse_mailbox_csv(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise Problem(422, "mailbox-file-format", f"the file is not a UTF-8 CSV of mailboxes: {exc}") from None
    if not identities:
        raise Problem(422, "mailbox-file-format", "the file names no mailboxes")
    return await TargetStore(store).create_set("mailboxes", name, identities, principal.user, datetime.now(UTC))
