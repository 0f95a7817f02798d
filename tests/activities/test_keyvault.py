"""Key Vault activities run on their own (ActivityEnvironment) against the sandbox Key Vault."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.keyvault import KeyVaultActivities
from ckey.keyvault import KeyVaultGateway
from ckey.store import Store
from ckey.store.backups import KeyBackupStore
from contracts.keyvault import RestoreKeyBackupInput
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
    blob = await keyvault.key_client(keyvault.vault_url(vault)).backup_key("exo-key")
    backup = await KeyBackupStore(store).create(blob, "alice@contoso.com")

    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=attempt)
    activities = KeyVaultActivities(keyvault, store, {})
    request = RestoreKeyBackupInput(vault=vault, backup=backup.id, name="exo-key")
    if restored:
        key = await env.run(activities.restore_key_backup, request)
        assert key.name == "exo-key"
    else:
        with pytest.raises(ApplicationError) as conflict:
            await env.run(activities.restore_key_backup, request)
        assert conflict.value.type == "ObjectAlreadyExists"


async def test_a_restore_of_an_unknown_backup_is_refused_without_retry(
    keyvault: KeyVaultGateway, kv_control: SandboxKeyVaultControl, store: Store
) -> None:
    vault = unique("ra")
    await kv_control.create_vault(vault)
    activities = KeyVaultActivities(keyvault, store, {})
    request = RestoreKeyBackupInput(vault=vault, backup=f"kb-{uuid.uuid4()}", name="exo-key")
    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(activities.restore_key_backup, request)
    assert (refused.value.type, refused.value.non_retryable) == ("key-backup-exists", True)
