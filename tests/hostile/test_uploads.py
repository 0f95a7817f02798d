"""Hostile mailbox lists: CSV uploads and inline lists go through the identity rule and case-insensitive duplicates."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic_core import PydanticCustomError

from ckey.api.routes.uploads import parse_mailbox_csv, read_mailbox_csv
from ckey.models import IDENTITY_MAX
from ckey.store import Store
from ckey.store.targets import TargetStore

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LONGEST = "a" * (IDENTITY_MAX - len("@contoso.com")) + "@contoso.com"


async def test_duplicates_differing_in_case_are_one_mailbox(any_store: Store) -> None:
    targets = TargetStore(any_store)
    identities = ["alice@contoso.com", "bob@contoso.com", "ALICE@contoso.com", " Alice@Contoso.com ", "BOB@CONTOSO.COM"]
    stored = await targets.create_set("mailboxes", "inline", identities, "op@contoso.com", T0)
    assert stored.count == 2
    assert await targets.items(stored.id, 0, 10) == ["alice@contoso.com", "bob@contoso.com"]


async def test_the_first_spelling_is_kept(store: Store) -> None:
    targets = TargetStore(store)
    stored = await targets.create_set("mailboxes", "inline", ["Carol@Contoso.com", "carol@contoso.com"], "op", T0)
    assert await targets.items(stored.id, 0, 10) == ["Carol@Contoso.com"]


async def test_target_sets_refuse_identities_breaking_the_rule(any_store: Store) -> None:
    targets = TargetStore(any_store)
    # 320 characters fit the column on every database (PostgreSQL refused longer ones with a 500 before).
    stored = await targets.create_set("mailboxes", "inline", [LONGEST], "op", T0)
    assert await targets.items(stored.id, 0, 1) == [LONGEST]
    for identities, rule, where in [
        (["alice@contoso.com", "b" + LONGEST], "mailbox-identity-length", "mailbox 2:"),
        (["  ", "alice@contoso.com", "eve\x00@contoso.com"], "no-control-characters", "mailbox 3:"),
        (["mallory@contoso.com\nSet-Mailbox x"], "no-control-characters", "mailbox 1:"),
    ]:
        with pytest.raises(PydanticCustomError) as exc:
            await targets.create_set("mailboxes", "inline", identities, "op", T0)
        assert exc.value.type == rule
        assert exc.value.message().startswith(where) and f"[rule: {rule}]" in exc.value.message()


def test_csv_rows_are_identities() -> None:
    text = "Identity,Name\r\nalice@contoso.com,Alice\r\n\r\n bob@contoso.com ,Bob\r\n,nobody\r\n"
    assert parse_mailbox_csv(text) == ["alice@contoso.com", "bob@contoso.com"]
    assert parse_mailbox_csv("alice@contoso.com\nbob@contoso.com\n") == ["alice@contoso.com", "bob@contoso.com"]
    assert parse_mailbox_csv("") == []


@pytest.mark.parametrize(
    ("text", "rule", "row"),
    [
        (f"Identity\nalice@contoso.com\n{'x' + LONGEST}\n", "mailbox-identity-length", 3),
        ('Identity\n\nalice@contoso.com\n"eve\x00@contoso.com"\n', "no-control-characters", 4),
        (
            'UPN,Name\nalice@contoso.com,A\n"mallory@contoso.com\nSet-Mailbox -Identity x",M\n',
            "no-control-characters",
            3,
        ),
        ("alice@contoso.com\nbob\x1b[2J@contoso.com\n", "no-control-characters", 2),
        ('alice@contoso.com\n"bob\u2028@contoso.com"\n', "no-control-characters", 2),
    ],
)
def test_csv_rows_breaking_the_identity_rule_name_the_row_and_the_rule(text: str, rule: str, row: int) -> None:
    with pytest.raises(PydanticCustomError) as exc:
        parse_mailbox_csv(text)
    assert exc.value.type == rule
    assert exc.value.message().startswith(f"line {row}: ")
    assert f"[rule: {rule}]" in exc.value.message() and "{" not in exc.value.message()


def test_semicolons_headers_aliases_and_guids() -> None:
    text = "Name;UserPrincipalName\r\nAlice;alice@contoso.com\r\nGuid;0f0e0d0c-0b0a-4908-8706-050403020100\r\n"
    assert parse_mailbox_csv(text) == ["alice@contoso.com", "0f0e0d0c-0b0a-4908-8706-050403020100"]
    assert parse_mailbox_csv("adele.braun;x\nbob@contoso.com;y\n") == ["adele.braun", "bob@contoso.com"]
    assert parse_mailbox_csv("Primary SMTP Address\nalice@contoso.com\n") == ["alice@contoso.com"]


def test_every_rejected_line_is_named() -> None:
    text = 'Identity\nnot an email!!\nalice@contoso.com\n"multi\nline"\nContent-Type: text/csv\r\nbob\n'
    found = read_mailbox_csv(text)
    assert found.identities == ["alice@contoso.com", "bob"]
    assert [(r.line, r.rule) for r in found.rejected] == [
        (2, "mailbox-identity-format"),
        (4, "no-control-characters"),
        (6, "mailbox-identity-format"),
    ]
    assert found.rejected[0].message.startswith("line 2: ")
