"""Activities, one module per gateway family: the only code that does I/O.

Each family is a class that implements its contract's stub (``contracts.<family>``) and receives its gateways in
``__init__``; :func:`build_activities` finds and wires them.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ckey.keyvault import KeyVaultGateway
from ckey.m365 import M365Gateway
from ckey.models import Workload
from ckey.store import Store
from ckey.support import SupportDesk
from ckey.windows365 import Windows365Gateway


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
    windows365: Windows365Gateway | None = None
    alert_webhook_url: str | None = None
    """Where alerts are POSTed as JSON (``CKEY_ALERT_WEBHOOK_URL``); ``None``: the log and the record only."""
    spo_geo_admin_urls: dict[str, str] = field(default_factory=dict)
    """Each SharePoint geo's admin site (``CKEY_SPO_GEO_ADMIN_URLS``), for reading every geo into the inventory."""


def build_activities(gateways: Gateways, stubs: Iterable[type] | None = None) -> list[Callable[..., Any]]:
    """The activities implementing ``stubs`` (default: every family's), bound to ``gateways``.

    Each family's class in this package subclasses its stub (``contracts.<family>``) and builds itself from the
    gateways (``from_gateways``; ``None`` when its gateways are missing, as in tests of one family). Nothing here
    lists activities: a family's activities are the ``@activity.defn`` methods of its class.

    Raises:
        LookupError: a stub that no class of this package implements.
    """
    families = implementations()
    wanted = list(families) if stubs is None else list(dict.fromkeys(stubs))
    found: list[Callable[..., Any]] = []
    for stub in wanted:
        implementation = families.get(stub)
        if implementation is None:
            raise LookupError(f"no activities implement {stub.__qualname__}")
        instance = implementation.from_gateways(gateways)
        if instance is None:
            continue
        for name, member in inspect.getmembers(implementation, inspect.isfunction):
            if hasattr(member, "__temporal_activity_definition") and not name.startswith("_"):
                found.append(getattr(instance, name))
    return found


def implementations() -> dict[type, Any]:
    """Stub class → the class of this package implementing it (importing every module of the package)."""
    found: dict[type, Any] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__ or not hasattr(cls, "from_gateways"):
                continue
            for stub in cls.__mro__[1:]:
                if stub.__module__.startswith("contracts."):
                    found[stub] = cls
    return found
