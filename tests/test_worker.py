from __future__ import annotations

from temporalio.workflow import _Definition

from activities import Gateways, build_activities
from ckey.azure import AzureConnection
from ckey.config import Settings
from ckey.keyvault import KeyVaultGateway
from ckey.m365 import M365Gateway, build_transport
from ckey.operations import registry
from ckey.store import Store
from ckey.support import HttpSupportDesk
from workflows import all_workflows


def test_every_registered_kind_has_its_workflow_in_the_worker() -> None:
    workflows = all_workflows()
    names = [_Definition.must_from_class(w).name for w in workflows]
    assert len(names) == len(set(names))
    assert {kind.workflow for kind in registry if not kind.name.startswith("test.")} <= set(workflows)
    assert {k.name for k in registry} >= {
        "keyvault.health",
        "keyvault.key.restore",
        "keyvault.access.revoke",
        "exchange.dep.create",
        "exchange.dep.assign",
        "exchange.encryption.verify",
    }


async def test_every_activity_is_registered_once(settings: Settings, store: Store) -> None:
    async with AzureConnection(settings) as azure:
        gateways = Gateways(
            store=store,
            keyvault=KeyVaultGateway(azure),
            m365=M365Gateway(build_transport(settings, azure)),
            support=HttpSupportDesk(azure),
        )
        names = [getattr(fn, "__temporal_activity_definition").name for fn in build_activities(gateways)]
    assert len(names) == len(set(names)) >= 17
