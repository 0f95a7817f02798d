"""A stand-in for the Microsoft 365 service side of Customer Key, answering the seed's cmdlets over HTTPS.

Reached under the real names (``outlook.office365.com``, ``<tenant>-admin.sharepoint.com``, ``graph.microsoft.com``)
through ckey's sandbox resolver, it plays Exchange Online, SharePoint Online, the multi-workload service and Windows
365 with the seed's rules, states and (scaled in time) durations, a real key hierarchy over the sandbox Key Vault, and
Microsoft's support desk. See ``sandbox/m365/README.md``.

The package imports nothing itself: ``import sandbox.m365.errors`` loads neither the web stack nor the database. The
names below are loaded from their modules when first asked for; import them from there.

- Serving: :mod:`~sandbox.m365.app` (the hosts), :mod:`~sandbox.m365.server` (uvicorn, a thread for tests),
  :mod:`~sandbox.m365.routes` (each host's endpoints), :mod:`~sandbox.m365.gate` (tokens and faults in front of them).
- Running: :mod:`~sandbox.m365.lifecycle` (the parts, start and stop), :mod:`~sandbox.m365.ticker` (Microsoft's
  scheduled steps), :mod:`~sandbox.m365.faults` (the fault switchboard).
- The services: :mod:`~sandbox.m365.exchange`, :mod:`~sandbox.m365.exchange_policies`,
  :mod:`~sandbox.m365.sharepoint`, :mod:`~sandbox.m365.multiworkload`, :mod:`~sandbox.m365.windows365`,
  :mod:`~sandbox.m365.support` (with :mod:`~sandbox.m365.support_cases`, :mod:`~sandbox.m365.support_purge`).
- State and keys: :mod:`~sandbox.m365.core`, :mod:`~sandbox.m365.deps`, :mod:`~sandbox.m365.keys`,
  :mod:`~sandbox.m365.vault`, :mod:`~sandbox.m365.items`, :mod:`~sandbox.m365.db`, :mod:`~sandbox.m365.tenant`.
- :mod:`~sandbox.m365.admin`: the control endpoint; :mod:`~sandbox.m365.control`: its client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandbox.m365.app import create_app
    from sandbox.m365.control import SandboxM365Control
    from sandbox.m365.durations import Durations
    from sandbox.m365.lifecycle import SandboxM365
    from sandbox.m365.server import SandboxM365Server, serve
    from sandbox.m365.tenant import SMALL_TENANT, TenantSpec

_HOMES = {
    "SMALL_TENANT": "sandbox.m365.tenant",
    "Durations": "sandbox.m365.durations",
    "SandboxM365": "sandbox.m365.lifecycle",
    "SandboxM365Control": "sandbox.m365.control",
    "SandboxM365Server": "sandbox.m365.server",
    "TenantSpec": "sandbox.m365.tenant",
    "create_app": "sandbox.m365.app",
    "serve": "sandbox.m365.server",
}

__all__ = [
    "SMALL_TENANT",
    "Durations",
    "SandboxM365",
    "SandboxM365Control",
    "SandboxM365Server",
    "TenantSpec",
    "create_app",
    "serve",
]


def __getattr__(name: str) -> Any:
    """The names of :data:`__all__`, imported from their modules on first use (older imports keep working)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
