"""The sandbox's own vocabulary: its key-URI parser follows Key Vault's documented identifier format, and its
wire values (workloads, first-party app ids, SharePoint states) are the ones ckey sends and reads."""

from __future__ import annotations

import pytest

from ckey import models
from sandbox.vocabulary import KeyUri, KeyUriError, ServicePrincipal, SpoState, Workload

VERSION = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("text", "vault", "name", "version"),
    [
        ("https://contoso-eastus-kv1.vault.azure.net/keys/exo-key-01", "contoso-eastus-kv1", "exo-key-01", None),
        (
            f"https://contoso-eastus-kv1.vault.azure.net/keys/exo-key-01/{VERSION}",
            "contoso-eastus-kv1",
            "exo-key-01",
            VERSION,
        ),
        ("https://Contoso-KV1.Vault.Azure.NET/keys/Key-A/", "contoso-kv1", "Key-A", None),
        (f"  https://kv1.vault.azure.cn/keys/k/{VERSION}/  ", "kv1", "k", VERSION),
        ("https://gov-kv.vault.usgovcloudapi.net/keys/k", "gov-kv", "k", None),
    ],
)
def test_a_key_uri_in_the_documented_format_parses(text: str, vault: str, name: str, version: str | None) -> None:
    uri = KeyUri.parse(text)
    assert (uri.vault, uri.name, uri.version) == (vault, name, version)
    assert uri.vault_url == f"https://{uri.host}" and uri.host.startswith(vault + ".")
    assert str(uri) == f"https://{uri.host}/keys/{name}" + (f"/{version}" if version else "")
    assert KeyUri.parse(str(uri)) == uri
    assert uri.versionless == KeyUri(vault, uri.host, name)


@pytest.mark.parametrize(
    "text",
    [
        "https://example.com/keys/x",
        "http://kv1.vault.azure.net/keys/k",
        "https://kv1.vault.azure.net:8443/keys/k",
        "https://user@kv1.vault.azure.net/keys/k",
        "https://kv1.vault.azure.net/secrets/k",
        "https://kv1.vault.azure.net/keys/",
        "https://kv1.vault.azure.net/keys/k/v1",
        f"https://kv1.vault.azure.net/keys/k/{VERSION}/extra",
        f"https://kv1.vault.azure.net/keys/k/{VERSION}?api-version=7.4",
        "https://kv1.vault.azure.net/keys/k#frag",
        "https://kv1.vault.azure.net/keys/k_underscore",
        "https://kv1.vault.azure.net/keys/k//",
        "https://kv.vault.azure.net/keys/k",
        "https://1kv.vault.azure.net/keys/k",
        "https://kv--1.vault.azure.net/keys/k",
        "https://kv1-.vault.azure.net/keys/k",
        "https://" + "a" * 25 + ".vault.azure.net/keys/k",
        "https://kv1.vault.ckey.test/keys/k",
        "https://kv1.vault.azure.net/keys/k" + "x" * 127,
        "https://kv1.vault.azure.net/keys/k\nx",
        "https://kv1.vault.azure.net/ke\tys/k",
        "https://kv1.vault.azure.net/keys/k\u00e9",
        "",
    ],
)
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(KeyUriError):
        KeyUri.parse(text)


def test_the_wire_values_are_the_ones_ckey_uses() -> None:
    # Written apart from ckey on purpose; these are the values both sides read from Microsoft's documentation.
    assert {w.value for w in Workload} == {w.value for w in models.Workload}
    assert {s.value for s in SpoState} == {s.value for s in models.SpoState}
    for workload in Workload:
        ckey_principal = models.ServicePrincipal.for_workload(models.Workload(workload.value))
        assert ServicePrincipal.of(workload).value == ckey_principal.value
    assert ServicePrincipal.EXCHANGE_ONLINE.display_name == "Office 365 Exchange Online"
