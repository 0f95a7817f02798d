"""``KeyVaultGateway.key_versions``: oldest first, and the version Key Vault serves last even within one second."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from ckey.keyvault import KeyVaultGateway
from ckey.models import KeyUri

SECOND = datetime(2026, 12, 1, 7, 0, 0, tzinfo=UTC)
EARLIER = datetime(2026, 11, 1, tzinfo=UTC)


class FakeKeyClient:
    """Lists three versions; two were made in the same second, and the versionless GET serves ``current``."""

    def __init__(self, current: str) -> None:
        self.current = current

    async def get_key(self, name: str, version: str | None = None) -> Any:
        return SimpleNamespace(properties=SimpleNamespace(version=self.current))

    async def list_properties_of_key_versions(self, name: str) -> AsyncIterator[Any]:
        for version, created in (("f" * 32, SECOND), ("0" * 32, SECOND), ("a" * 32, EARLIER)):
            yield SimpleNamespace(
                id=f"https://contoso-kv1.vault.azure.net/keys/{name}/{version}",
                version=version,
                enabled=True,
                created_on=created,
                expires_on=None,
                tags=None,
            )


async def test_versions_made_in_one_second_end_with_the_one_key_vault_serves() -> None:
    uri = KeyUri.parse("https://contoso-kv1.vault.azure.net/keys/cmk")
    for current in ("0" * 32, "f" * 32):
        gateway = KeyVaultGateway.__new__(KeyVaultGateway)
        setattr(gateway, "key_client", lambda _url, current=current: FakeKeyClient(current))  # noqa: B010
        versions = [v.version for v in await gateway.key_versions(uri)]
        assert versions[0] == "a" * 32 and versions[-1] == current
