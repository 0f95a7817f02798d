"""Key Vault activities run on their own (ActivityEnvironment) against the sandbox Key Vault."""

from __future__ import annotations

import base64
import dataclasses

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.keyvault import KeyVaultActivities, RestoreKeyBackupInput
from ckey.keyvault import KeyVaultGateway
from ckey.store import Store
from sandbox.keyvault import SandboxKeyVaultControl
from tests.workflows.conftest import unique


@pytest.mark.parametrize(("attempt", "restored"), [(1, False), (2, True)])
async def test_a_retried_restore_that_went_through_is_done_and_a_first_conflict_stands(
    keyvault: KeyVaultGateway, kv_control: SandboxKeyVaultControl, store: Store, attempt: int, restored: bool
) -> None:
    vault = unique("ra")
    await kv_control.create_vault(vault)
    await kv_control.grant(vault, "ckey-automation@contoso.com", ["all"])
    await kv_control.create_key(vault, "exo-key")
    blob = base64.b64encode(await keyvault.key_client(keyvault.vault_url(vault)).backup_key("exo-key")).decode()

    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=attempt)
    activities = KeyVaultActivities(keyvault, store, {})
    request = RestoreKeyBackupInput(vault=vault, backup_b64=blob, name="exo-key")
    if restored:
        key = await env.run(activities.restore_key_backup, request)
        assert key.name == "exo-key"
    else:
        with pytest.raises(ApplicationError) as conflict:
            await env.run(activities.restore_key_backup, request)
        assert conflict.value.type == "ObjectAlreadyExists"
