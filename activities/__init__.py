"""Activities, one module per gateway family: the only code that does I/O.

Each family is a class that receives its gateways in ``__init__``; :func:`build_activities` wires them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ckey.keyvault import KeyVaultGateway
from ckey.m365 import M365Gateway
from ckey.models import Workload
from ckey.store import Store
from ckey.support import SupportDesk


@dataclass
class Gateways:
    """The clients activities talk through; tests pass real sandbox clients or deliberately failing ones.

    A family whose gateway is ``None`` is left out (tests of one family need not build the others).
    """

    store: Store
    keyvault: KeyVaultGateway | None = None
    dep_keys: dict[Workload, list[str]] = field(default_factory=dict)
    m365: M365Gateway | None = None
    support: SupportDesk | None = None


def build_activities(gateways: Gateways) -> list[Callable[..., Any]]:
    """Every activity of the product, bound to ``gateways``."""
    from activities.exchange import ExchangeActivities
    from activities.keyvault import KeyVaultActivities
    from activities.operation import OperationActivities

    operation = OperationActivities(gateways.store)
    found: list[Callable[..., Any]] = [operation.record_operation]
    if gateways.keyvault is not None:
        keyvault = KeyVaultActivities(gateways.keyvault, gateways.store, gateways.dep_keys)
        found += [
            keyvault.configured_dep_keys,
            keyvault.check_key_health,
            keyvault.inspect_key,
            keyvault.recover_deleted_key,
            keyvault.restore_key_backup,
            keyvault.verify_key_crypto,
            keyvault.show_vault_access,
            keyvault.remove_access_policy,
        ]
    if gateways.m365 is not None and gateways.support is not None:
        exchange = ExchangeActivities(gateways.m365, gateways.store, gateways.support)
        found += [
            exchange.find_dep,
            exchange.new_dep,
            exchange.check_dep_assignable,
            exchange.count_targets,
            exchange.assign_dep_batch,
            exchange.failed_mailboxes,
            exchange.register_dep_mailboxes,
            exchange.follow_encryption,
            exchange.escalate_unencrypted,
        ]
    return found
