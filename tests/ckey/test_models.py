from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticCustomError

from ckey import models
from ckey.models import (
    DepName,
    Description,
    KeyUri,
    KeyUriField,
    RecipientIdentity,
    ServicePrincipal,
    SpoState,
    TwoKeyUris,
    UserPrincipalName,
    VaultName,
    Workload,
    check_identity,
    check_two_keys,
    located,
)

SEED_MULTI_WORKLOAD_KEYS = (
    "https://contosoWestUSvault1.vault.azure.net/keys/Key_01",
    "https://contosoCentralUSvault1.vault.azure.net/keys/Key_02",
)


class Dep(BaseModel):
    name: DepName
    azure_key_ids: TwoKeyUris


class OneKey(BaseModel):
    uri: KeyUriField


def _rules(exc: ValidationError) -> list[str]:
    return [err["type"] for err in exc.errors()]


def test_dep_names_cannot_contain_spaces() -> None:
    keys = ["https://contosowestus1.vault.azure.net/keys/k1", "https://contosocentralus1.vault.azure.net/keys/k2"]
    assert Dep(name="USA_mailboxes", azure_key_ids=keys).name == "USA_mailboxes"
    with pytest.raises(ValidationError) as exc:
        Dep(name="USA mailboxes", azure_key_ids=keys)
    assert _rules(exc.value) == ["dep-name-no-spaces"]
    assert "can't contain spaces" in str(exc.value) and "[rule: dep-name-no-spaces]" in str(exc.value)


@pytest.mark.parametrize(
    ("text", "vault", "name", "version"),
    [
        ("https://contosoWestUSvault1.vault.azure.net/keys/Key-01", "contosowestusvault1", "Key-01", None),
        (
            "https://contoso-eastus-kv1.vault.azure.net/keys/USA-key-01/f635a23bd4a44b9996ff6aadd88d42ba",
            "contoso-eastus-kv1",
            "USA-key-01",
            "f635a23bd4a44b9996ff6aadd88d42ba",
        ),
        ("https://kv1.vault.usgovcloudapi.net/keys/k1/", "kv1", "k1", None),
    ],
)
def test_key_uris_parse(text: str, vault: str, name: str, version: str | None) -> None:
    uri = OneKey(uri=text).uri
    assert (uri.vault, uri.name, uri.version) == (vault, name, version)
    assert OneKey(uri=text).model_dump(mode="json")["uri"] == str(uri)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("http://kv1.vault.azure.net/keys/k1", "key-uri-format"),
        ("https://kv1.vault.azure.net/secrets/k1", "key-uri-format"),
        ("https://kv1.example.com/keys/k1", "key-uri-format"),
        ("https://kv1.vault.azure.net:443/keys/k1", "key-uri-format"),
        ("https://kv1.vault.azure.net/keys/", "key-uri-format"),
        ("https://1kv.vault.azure.net/keys/k1", "key-vault-name"),
        ("https://kv--1.vault.azure.net/keys/k1", "key-vault-name"),
        # The seed's example vault names with underscores are not valid Azure vault names.
        ("https://contoso_EastUSvault01.vault.azure.net/keys/USA_key_01", "key-vault-name"),
        ("https://kv1.vault.azure.net/keys/key_1", "key-name"),
        ("https://kv1.vault.azure.net/keys/k1/not-a-version", "key-version"),
        # The sandbox is addressed under Azure's names: its own host form and a port are not key URIs.
        ("https://kv1.vault.ckey.test/keys/k1", "key-uri-format"),
        ("https://kv1.vault.ckey.test:8443/keys/k1", "key-uri-format"),
        ("https://kv1.vault.azure.net:8443/keys/k1", "key-uri-format"),
        # "$" matched before a final newline; "\Z" does not, and a newline is a control character anyway.
        ("https://kv1.vault.azure.net/keys/k1\n/0123456789abcdef0123456789abcdef", "no-control-characters"),
        ("https://kv1.vault.azure.net/keys/k1/0123456789abcdef0123456789abcdef\n/", "no-control-characters"),
    ],
)
def test_malformed_key_uris_name_the_rule(text: str, rule: str) -> None:
    with pytest.raises(ValidationError) as exc:
        OneKey(uri=text)
    assert _rules(exc.value) == [rule]


def test_two_keys_rule() -> None:
    k1 = KeyUri.parse("https://contosowestus1.vault.azure.net/keys/k1")
    k2 = KeyUri.parse("https://contosocentralus1.vault.azure.net/keys/k2")
    same_vault = KeyUri.parse("https://contosowestus1.vault.azure.net/keys/k2")
    assert check_two_keys([k1, k2]) == (k1, k2)
    assert check_two_keys([k1, k2], {"contosowestus1": "westus", "contosocentralus1": "centralus"}) == (k1, k2)
    with pytest.raises(Exception, match=r"rule: two-keys\]"):
        check_two_keys([k1])
    with pytest.raises(Exception, match="two-keys-two-vaults"):
        check_two_keys([k1, same_vault])
    with pytest.raises(Exception, match="two-keys-two-regions"):
        check_two_keys([k1, k2], {"contosowestus1": "eastus", "contosocentralus1": "EastUS"})


def test_two_keys_field_takes_the_seeds_comma_separated_form() -> None:
    keys = "https://contosowestus1.vault.azure.net/keys/k1, https://contosocentralus1.vault.azure.net/keys/k2"
    dep = Dep(name="USA_mailboxes", azure_key_ids=keys)
    assert [k.vault for k in dep.azure_key_ids] == ["contosowestus1", "contosocentralus1"]
    with pytest.raises(ValidationError) as exc:
        Dep(name="USA_mailboxes", azure_key_ids=["https://contosowestus1.vault.azure.net/keys/k1"])
    assert _rules(exc.value) == ["two-keys"]
    with pytest.raises(ValidationError) as exc:
        Dep(
            name="USA_mailboxes",
            azure_key_ids=["https://kv1.vault.azure.net/keys/k1", "https://KV1.vault.azure.net/keys/k2"],
        )
    assert _rules(exc.value) == ["two-keys-two-vaults"]


def test_service_principals_and_states() -> None:
    assert ServicePrincipal.for_workload(Workload.EXCHANGE) == "00000002-0000-0ff1-ce00-000000000000"
    assert ServicePrincipal.for_workload(Workload.SHAREPOINT) == "00000003-0000-0ff1-ce00-000000000000"
    assert ServicePrincipal.for_workload(Workload.MULTI_WORKLOAD) == "c066d759-24ae-40e7-a56f-027002b5d3e4"
    assert [s.value for s in SpoState] == ["Unregistered", "Registering", "Registered", "Rolling", "Recovery"]
    assert SEED_MULTI_WORKLOAD_KEYS[0].startswith("https://")


# Hostile input (issue 8, finding 10) -------------------------------------------------------------------------------

VALID_VERSION = "0123456789abcdef0123456789abcdef"


class Names(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dep: DepName | None = None
    vault: VaultName | None = None
    upn: UserPrincipalName | None = None
    identity: RecipientIdentity | None = None
    description: Description | None = None
    key: KeyUriField | None = None


@pytest.mark.parametrize(
    ("pattern", "value"),
    [
        (models._VAULT_NAME, "contosokv1\n"),
        (models._KEY_NAME, "key-01\n"),
        (models._KEY_VERSION, VALID_VERSION + "\n"),
        (models._UPN, "alice@contoso.com\n"),
        (models._URI, "https://kv1.vault.azure.net/keys/k1/\n"),
        (models.KEY_BACKUP_ID, "kb-0f0e0d0c-0b0a-4908-8706-050403020100\n"),
    ],
)
def test_patterns_do_not_match_before_a_final_newline(pattern: re.Pattern[str], value: str) -> None:
    assert pattern.match(value.rstrip("\n"))
    assert pattern.match(value) is None


def test_no_pattern_of_the_models_ends_with_a_dollar() -> None:
    patterns = [v for v in vars(models).values() if isinstance(v, re.Pattern)]
    assert len(patterns) >= 5
    for pattern in patterns:
        assert not pattern.pattern.endswith("$"), pattern.pattern
        assert not pattern.pattern.startswith("^"), f"{pattern.pattern}: re.match anchors the start already"


def test_vault_name_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(ValidationError) as exc:
        Names(vault="contosokv1\n")
    assert _rules(exc.value) == ["key-vault-name"]


@pytest.mark.parametrize("bad", ["\x00", "\n", "\r", "\t", "\x1b", "\x7f", "\x85", "\u2028", "\u2029", "\u202e"])
@pytest.mark.parametrize(
    ("field", "template"),
    [
        ("dep", "USA{}mailboxes"),
        ("upn", "alice{}@contoso.com"),
        ("upn", "alice@contoso.com{}"),
        ("identity", "alice{}@contoso.com"),
        ("description", "keys of the{}USA"),
        ("key", "https://kv1.vault.azure.net/keys/k{}1"),
        ("key", "https://kv1.vault.azure.net/keys/k1/" + VALID_VERSION + "{}/"),
    ],
)
def test_control_characters_are_refused_everywhere(field: str, template: str, bad: str) -> None:
    # Key URIs and identities are stripped of surrounding whitespace (a pasted value), so the templates put the
    # character inside them; DEP names and UPNs are never stripped.
    value = template.format(bad)
    with pytest.raises(ValidationError) as exc:
        Names.model_validate({field: value})
    assert _rules(exc.value) == ["no-control-characters"], (field, value)
    assert repr(value) in exc.value.errors()[0]["msg"]


def test_vault_and_key_names_refuse_nul() -> None:
    for field, value, rule in [
        ("vault", "contoso\x00kv1", "key-vault-name"),
        ("key", "https://kv1.vault.azure.net/keys/k\x001", "no-control-characters"),
    ]:
        with pytest.raises(ValidationError) as exc:
            Names.model_validate({field: value})
        assert _rules(exc.value) == [rule]


def test_identities_are_at_most_320_characters() -> None:
    longest = "a" * (320 - len("@contoso.com")) + "@contoso.com"
    assert Names(identity=longest, upn=longest).identity == longest
    with pytest.raises(ValidationError) as exc:
        Names(identity="b" + longest, upn="b" + longest)
    assert _rules(exc.value) == ["user-principal-name-length", "mailbox-identity-length"]
    assert "got 321" in str(exc.value)


def test_upns_stay_one_url_path_segment() -> None:
    assert Names(upn="alice_contoso.com#EXT#@fabrikam.onmicrosoft.com").upn
    for upn in ["alice/../admin@contoso.com", "alice@contoso.com/x", "al?ice@contoso.com", "al%2Fice@contoso.com"]:
        with pytest.raises(ValidationError) as exc:
            Names(upn=upn)
        assert _rules(exc.value) == ["user-principal-name"], upn


def test_descriptions_are_bounded_and_one_line() -> None:
    assert Names(description="Mailboxes of the USA \u2014 \u201cquoted\u201d \u2019").description
    assert Names(description="d" * 1024).description
    with pytest.raises(ValidationError) as exc:
        Names(description="d" * 1025)
    assert _rules(exc.value) == ["description-length"]


def test_two_key_lists_are_counted_before_parsing() -> None:
    with pytest.raises(ValidationError) as exc:
        Dep(name="USA_mailboxes", azure_key_ids=["not a uri"] * 100_000)
    assert _rules(exc.value) == ["two-keys"]
    assert "got 100000" in str(exc.value)


RULE_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("dep-name-no-spaces", {"dep": "USA mailboxes"}, "'USA mailboxes'"),
    ("key-uri-format", {"key": "http://kv1.vault.azure.net/keys/k1"}, "'http://kv1.vault.azure.net/keys/k1'"),
    ("key-uri-format", {"key": "https://kv1.example.com/keys/k1"}, "'https://kv1.example.com/keys/k1'"),
    ("key-name", {"key": "https://kv1.vault.azure.net/keys/key_1"}, "'key_1'"),
    ("key-version", {"key": "https://kv1.vault.azure.net/keys/k1/v1"}, "'v1'"),
    ("key-vault-name", {"vault": "1kv"}, "'1kv'"),
    ("user-principal-name", {"upn": "alice"}, "'alice'"),
    ("m365-principal-protected", {"upn": ServicePrincipal.MICROSOFT_365.value}, ServicePrincipal.MICROSOFT_365.value),
    ("no-control-characters", {"dep": "a\x00b"}, "'a\\x00b'"),
    ("mailbox-identity-length", {"identity": "a" * 321}, "321"),
    ("description-length", {"description": "a" * 1025}, "1025"),
]


@pytest.mark.parametrize(("rule", "data", "shown"), RULE_CASES)
def test_rule_messages_print_the_value(rule: str, data: dict[str, Any], shown: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Names.model_validate(data)
    (error,) = exc.value.errors()
    assert error["type"] == rule
    assert shown in error["msg"]
    assert "{" not in error["msg"] and f"[rule: {rule}]" in error["msg"]


def test_two_keys_messages_print_the_value() -> None:
    k1 = KeyUri.parse("https://contosowestus1.vault.azure.net/keys/k1")
    k2 = KeyUri.parse("https://contosocentralus1.vault.azure.net/keys/k2")
    same = KeyUri.parse("https://contosowestus1.vault.azure.net/keys/k2")
    cases: list[tuple[list[KeyUri], dict[str, str] | None, str]] = [
        ([k1, same], None, "'contosowestus1'"),
        ([k1, k2], {"contosowestus1": "eastus", "contosocentralus1": "eastus"}, "'eastus'"),
        ([k1], None, "got 1"),
    ]
    for uris, regions, shown in cases:
        with pytest.raises(PydanticCustomError) as exc:
            check_two_keys(uris, regions)
        assert shown in exc.value.message() and "{" not in exc.value.message()


def _rule_error_templates() -> list[tuple[str, int, str]]:
    """Every literal message template passed to ``rule_error`` in ckey/, workflows/ and activities/."""
    root = Path(__file__).resolve().parents[2]
    found = []
    for folder in ("ckey", "workflows", "activities"):
        for path in sorted((root / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not (isinstance(node, ast.Call) and len(node.args) >= 2):
                    continue
                name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
                if name != "rule_error":
                    continue
                message = node.args[1]
                parts = (
                    [message]
                    if isinstance(message, ast.Constant)
                    else [v for v in message.values if isinstance(v, ast.Constant)]
                    if isinstance(message, ast.JoinedStr)
                    else []
                )
                text = "".join(str(p.value) for p in parts)
                found.append((f"{path.relative_to(root)}", node.lineno, text))
    return found


def test_no_rule_message_template_uses_a_conversion_or_format_spec() -> None:
    """pydantic-core substitutes ``{name}`` only: ``{name!r}`` or ``{name:>5}`` would be printed as written."""
    templates = _rule_error_templates()
    assert len(templates) > 15
    bad = [(where, line, text) for where, line, text in templates if re.search(r"\{\w+[!:][^}]*\}", text)]
    assert bad == []


def test_located_errors_name_where_and_keep_the_rule() -> None:
    error = located(models.rule_error("no-control-characters", "bad: {value}", value=repr("{detail}")), "row 3")
    assert error.type == "no-control-characters"
    assert error.message() == "row 3: bad: '{detail}' [rule: no-control-characters]"
    assert check_identity("  alice@contoso.com \t") == "alice@contoso.com"
