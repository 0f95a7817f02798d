"""A stand-in for Azure Key Vault that answers the real REST API over HTTPS, as Azurite does for Storage.

The official SDKs (``azure-keyvault-keys``, ``azure-mgmt-keyvault``, ``azure-mgmt-authorization``) work against it
unmodified under Azure's own host names: in sandbox mode ckey's transport (:class:`ckey.azure.AzureConnection`)
resolves ``*.vault.azure.net`` and ``management.azure.com`` to this server and trusts the local CA.

The domain, split by resource (each part gets the store and the few parts it calls):

- :mod:`~sandbox.keyvault.base`: the database, the writer lock and the sandbox clock (:class:`Store`).
- :mod:`~sandbox.keyvault.vaults`: vaults and their sandbox knobs (limits, faults).
- :mod:`~sandbox.keyvault.access`: access policies and Azure RBAC role assignments.
- :mod:`~sandbox.keyvault.keys`: keys and versions; :mod:`~sandbox.keyvault.deleted`: soft delete, recover, purge.
- :mod:`~sandbox.keyvault.backup`: backup and restore; :mod:`~sandbox.keyvault.rotation`: rotation and its policy.

Its HTTP faces, each given only the parts it calls:

- :mod:`~sandbox.keyvault.dataplane`: the data plane's gate (challenge authentication, access policies and Azure
  RBAC, service limits) before :mod:`~sandbox.keyvault.dataplane_keys` and :mod:`~sandbox.keyvault.dataplane_crypto`.
- :mod:`~sandbox.keyvault.arm`: vaults, access policies, role assignments and role definitions on Resource Manager
  (:mod:`~sandbox.keyvault.arm_vaults`, :mod:`~sandbox.keyvault.arm_roles`).
- :mod:`~sandbox.keyvault.admin`: the sandbox's control endpoint (clock, limits, faults, shortcuts);
  :mod:`~sandbox.keyvault.control` is its client.
- :mod:`~sandbox.keyvault.app` wires the parts together; :mod:`~sandbox.keyvault.server`: ``python -m
  sandbox.keyvault`` and an in-process server for tests.

This package's ``__init__`` imports nothing: ``import sandbox.keyvault.errors`` loads neither FastAPI nor
SQLAlchemy. The names below are still importable from the package (``from sandbox.keyvault import
SandboxKeyVaultServer``); each loads its module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandbox.keyvault.app import SandboxKeyVault, create_app
    from sandbox.keyvault.control import SandboxKeyVaultControl
    from sandbox.keyvault.seed import seed_demo
    from sandbox.keyvault.server import SandboxKeyVaultServer, serve

_EXPORTS = {
    "SandboxKeyVault": "sandbox.keyvault.app",
    "create_app": "sandbox.keyvault.app",
    "SandboxKeyVaultControl": "sandbox.keyvault.control",
    "seed_demo": "sandbox.keyvault.seed",
    "SandboxKeyVaultServer": "sandbox.keyvault.server",
    "serve": "sandbox.keyvault.server",
}

__all__ = ["SandboxKeyVault", "SandboxKeyVaultControl", "SandboxKeyVaultServer", "create_app", "seed_demo", "serve"]


def __getattr__(name: str) -> Any:
    """Load an exported name's module on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
