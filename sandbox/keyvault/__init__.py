"""A stand-in for Azure Key Vault that answers the real REST API over HTTPS, as Azurite does for Storage.

The official SDKs (``azure-keyvault-keys``, ``azure-mgmt-keyvault``, ``azure-mgmt-authorization``) work against it
unmodified under Azure's own host names: in sandbox mode ckey's transport (:class:`ckey.azure.AzureConnection`)
resolves ``*.vault.azure.net`` and ``management.azure.com`` to this server and trusts the local CA.

- :mod:`~sandbox.keyvault.dataplane`: keys (create, rotate, wrap/unwrap, soft delete, recover, purge, backup,
  restore ...), challenge authentication, access policies and Azure RBAC, service limits.
- :mod:`~sandbox.keyvault.arm`: vaults, access policies, role assignments and role definitions on Resource Manager.
- :mod:`~sandbox.keyvault.admin`: the sandbox's control endpoint (clock, limits, faults, shortcuts);
  :mod:`~sandbox.keyvault.control` is its client.
- :mod:`~sandbox.keyvault.server`: ``python -m sandbox.keyvault`` and an in-process server for tests.
"""

from sandbox.keyvault.app import SandboxKeyVault, create_app
from sandbox.keyvault.control import SandboxKeyVaultControl
from sandbox.keyvault.seed import seed_demo
from sandbox.keyvault.server import SandboxKeyVaultServer, serve

__all__ = ["SandboxKeyVault", "SandboxKeyVaultControl", "SandboxKeyVaultServer", "create_app", "seed_demo", "serve"]
