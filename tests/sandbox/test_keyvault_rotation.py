"""Rotation policies act in the sandbox Key Vault as in Azure: a due Rotate trigger makes a new key version."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from azure.core.exceptions import HttpResponseError
from azure.keyvault.keys import KeyRotationLifetimeAction, KeyRotationPolicy, KeyRotationPolicyAction
from azure.keyvault.keys.aio import KeyClient

from sandbox.keyvault import SandboxKeyVaultControl
from tests.sandbox.conftest import code

Keys = Callable[..., KeyClient]
DAY = 86400


def rotate_policy(expires_in: str | None = "P90D", **trigger: str) -> KeyRotationPolicy:
    return KeyRotationPolicy(
        expires_in=expires_in,
        lifetime_actions=[KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, **trigger)],
    )


async def versions(client: KeyClient, name: str) -> list[str]:
    return [v.version or "" async for v in client.list_properties_of_key_versions(name)]


async def test_time_after_create_rotates_when_the_clock_moves(
    keys: Keys, vault: str, control: SandboxKeyVaultControl
) -> None:
    async with keys(vault) as client:
        first = await client.create_ec_key("auto")
        await client.update_key_rotation_policy("auto", rotate_policy(time_after_create="P30D"))
        await control.advance_clock(days=29)
        assert await versions(client, "auto") == [first.properties.version]

        moved = await control.advance_clock(days=2)
        assert moved["rotated"] >= 1
        current = await client.get_key("auto")
        assert await versions(client, "auto") == [first.properties.version, current.properties.version]
        assert current.key_type == "EC"
        created, expires = current.properties.created_on, current.properties.expires_on
        assert first.properties.created_on is not None and created is not None and expires is not None
        # Made at the instant the trigger fell due, with the policy's expiry (what Customer Key must not have).
        assert created - first.properties.created_on == timedelta(days=30)
        assert expires - created == timedelta(days=90)


async def test_a_long_clock_jump_leaves_every_version_azure_would_have_made(
    keys: Keys, vault: str, control: SandboxKeyVaultControl
) -> None:
    async with keys(vault) as client:
        await client.create_rsa_key("often")
        await client.update_key_rotation_policy("often", rotate_policy(expires_in=None, time_after_create="P30D"))
        await control.advance_clock(days=95)
        made = [v async for v in client.list_properties_of_key_versions("often")]
    assert len(made) == 4  # the original, then days 30, 60 and 90
    assert all(v.expires_on is None for v in made)  # the policy sets no expiryTime


async def test_time_before_expiry_counts_back_from_the_versions_expiry(
    keys: Keys, vault: str, control: SandboxKeyVaultControl
) -> None:
    async with keys(vault) as client:
        first = await client.create_rsa_key("expiring")
        assert first.properties.created_on is not None
        await client.update_key_properties("expiring", expires_on=first.properties.created_on + timedelta(days=60))
        await client.update_key_rotation_policy("expiring", rotate_policy(time_before_expiry="P30D"))
        await control.advance_clock(days=29)
        assert len(await versions(client, "expiring")) == 1
        await control.advance_clock(days=2)
        current = await client.get_key("expiring")
        assert current.properties.version != first.properties.version
        assert current.properties.created_on == first.properties.created_on + timedelta(days=30)


async def test_a_rotation_that_fell_due_appears_on_the_next_request(
    keys: Keys, vault: str, control: SandboxKeyVaultControl
) -> None:
    # Time passing without the control endpoint: a version already 40 days old when the policy arrives is due at
    # once, and the next request sees the new version (the check runs before every data-plane request).
    async with keys(vault) as client:
        first = await client.create_rsa_key("overdue")
        await control.advance_clock(days=40)
        await client.update_key_rotation_policy("overdue", rotate_policy(time_after_create="P30D"))
        current = await client.get_key("overdue")
        assert current.properties.version != first.properties.version
        assert len(await versions(client, "overdue")) == 2


@pytest.mark.parametrize("expires_in", ["P27D", "P7D", "PT48H"])
async def test_a_policy_expiring_in_under_28_days_is_refused(keys: Keys, vault: str, expires_in: str) -> None:
    async with keys(vault) as client:
        await client.create_rsa_key("short")
        with pytest.raises(HttpResponseError) as refused:
            await client.update_key_rotation_policy("short", rotate_policy(expires_in, time_after_create="P7D"))
        assert refused.value.status_code == 400 and code(refused.value) == "BadParameter"
        assert "28 days" in str(refused.value)
        assert await client.update_key_rotation_policy("short", rotate_policy("P28D", time_after_create="P7D"))
