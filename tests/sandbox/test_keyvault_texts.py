"""The sandbox Key Vault answers in Azure's own words where they are known (callers and people match on them)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from azure.core.exceptions import HttpResponseError
from azure.keyvault.keys.aio import KeyClient

from sandbox.keyvault import SandboxKeyVaultControl
from tests.sandbox.conftest import MakeVault, code, inner_code, message

Keys = Callable[..., KeyClient]


async def test_rbac_refusal_names_the_decision_reason_as_azure_does(keys: Keys, make_vault: MakeVault) -> None:
    vault = await make_vault(rbac=True)  # nobody holds a role on it
    async with keys(vault) as client:
        with pytest.raises(HttpResponseError) as denied:
            await client.get_key("anything")
    assert denied.value.status_code == 403 and code(denied.value) == "Forbidden"
    assert inner_code(denied.value) == "ForbiddenByRbac"
    assert "\r\nDenyAssignmentId: null\r\nDecisionReason: 'DeniedWithNoValidRBAC' \r\nVault: " in message(denied.value)


async def test_throttling_gives_azures_reason(keys: Keys, vault: str, control: SandboxKeyVaultControl) -> None:
    await control.set_limits(vault, other=1, window_seconds=60, retry_after_seconds=1)
    async with keys(vault, retry_total=0) as strict:
        results = await asyncio.gather(*(strict.get_key("busy") for _ in range(3)), return_exceptions=True)
    throttled = [r for r in results if isinstance(r, HttpResponseError) and r.status_code == 429]
    assert throttled
    assert message(throttled[0]) == (
        "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached"
    )
    await control.set_limits(vault)


@pytest.mark.parametrize("name", ["bad_name", "dots.in.name", "x" * 128])
async def test_an_invalid_key_name_is_a_bad_parameter(keys: Keys, vault: str, name: str) -> None:
    async with keys(vault) as client:
        with pytest.raises(HttpResponseError) as get:
            await client.get_key(name)
        with pytest.raises(HttpResponseError) as create:
            await client.create_rsa_key(name)
    for refused in (get.value, create.value):
        assert refused.status_code == 400 and code(refused) == "BadParameter"
        assert message(refused) == f"The request URI contains an invalid name: {name}"
