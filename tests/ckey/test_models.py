from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from ckey.models import (
    DepName,
    KeyUri,
    KeyUriField,
    ServicePrincipal,
    SpoState,
    TwoKeyUris,
    Workload,
    check_two_keys,
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
        ("https://kv1.vault.ckey.test:8443/keys/k1", "kv1", "k1", None),
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
    assert [s.value for s in SpoState] == ["Unregistered", "Registering", "Registered", "Rolling"]
    assert SEED_MULTI_WORKLOAD_KEYS[0].startswith("https://")
