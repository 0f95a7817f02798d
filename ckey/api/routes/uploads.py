"""``/api/uploads``: lists of mailboxes uploaded once and referred to by id (claim checks for large operations)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic_core import PydanticCustomError

from ckey.api.deps import Operator, StoreDep
from ckey.api.problems import Problem
from ckey.models import check_identity, located
from ckey.store.targets import TargetSet, TargetStore

router = APIRouter(prefix="/api/uploads", tags=["uploads"])

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
IDENTITY_COLUMNS = ("identity", "userprincipalname", "primarysmtpaddress", "mailbox", "upn")


def parse_mailbox_csv(text: str) -> list[str]:
    """Identities from a CSV: the ``Identity`` (or UPN, SMTP address) column when there is a header, else column 1.

    Blank cells are skipped; every other cell must be a valid identity (:func:`ckey.models.check_identity`).

    Raises:
        csv.Error: the text is not CSV.
        PydanticCustomError: a cell breaks the identity rule; its type is the rule id (``mailbox-identity-length``,
            ``no-control-characters``) and its message names the row (``row 3: ...``, rows counted from 1 as a
            spreadsheet shows them, the header included). Answer it with ``Problem(422, exc.type, exc.message())``.
    """
    rows = [(number, row) for number, row in enumerate(csv.reader(io.StringIO(text)), start=1)]
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
