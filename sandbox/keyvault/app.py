"""The sandbox Key Vault as one ASGI app that serves every host, chosen by the ``Host`` header.

``<vault>.vault.azure.net`` (and ``<vault>.vault.ckey.test``) is Key Vault's data plane for that vault,
``management.azure.com`` is Resource Manager, ``login.microsoftonline.com`` is the tenant's Microsoft Entra ID
(:mod:`sandbox.entra`: the token endpoint ckey's ``azure-identity`` credential signs in at), ``localhost`` /
``127.0.0.1`` is the sandbox's control endpoint.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from starlette.applications import Starlette
from starlette.routing import Host

from ckey.config import Settings
from sandbox.common import sandbox_app
from sandbox.entra import Entra, ensure_app_registrations
from sandbox.identity import SandboxIdentity
from sandbox.keyvault.access import AccessPolicies, RoleAssignments
from sandbox.keyvault.admin import build_control_app
from sandbox.keyvault.arm import Arm
from sandbox.keyvault.arm_common import ArmAuth
from sandbox.keyvault.arm_roles import ArmRoles
from sandbox.keyvault.arm_vaults import ArmVaults
from sandbox.keyvault.backup import Backups
from sandbox.keyvault.base import Store
from sandbox.keyvault.crypto import Sealer
from sandbox.keyvault.dataplane import DataPlane
from sandbox.keyvault.dataplane_crypto import CryptoRoutes
from sandbox.keyvault.dataplane_keys import KeyRoutes
from sandbox.keyvault.db import Database, default_database_url
from sandbox.keyvault.deleted import DeletedKeys
from sandbox.keyvault.keys import Keys
from sandbox.keyvault.limits import Throttle, VaultCounters
from sandbox.keyvault.rotation import Rotation
from sandbox.keyvault.seed import seed_demo
from sandbox.keyvault.vaults import Vaults

log = logging.getLogger(__name__)


class SandboxKeyVault:
    """The sandbox's moving parts: database and clock, the domain by resource, identity verifier, limits, counters.

    This is where the parts are wired together; each part and each route module gets only the parts it calls.

    Args:
        settings: ckey's settings (data dir, tenant, identity key, principal).
        database_url: SQLAlchemy async URL; default ``<data_dir>/sandbox-keyvault.db``.
        seed: create the demo vaults and keys when the database is new.
    """

    def __init__(self, settings: Settings, *, database_url: str | None = None, seed: bool = True) -> None:
        self.settings = settings
        self.database_url = database_url or default_database_url(settings.data_dir)
        self.db = Database(self.database_url)
        sealer = Sealer(settings.data_dir / "keys" / "sandbox-keyvault-kek.bin")
        self.store = Store(self.db)
        self.vaults = Vaults(self.store)
        self.access = AccessPolicies(self.store, self.vaults)
        self.roles = RoleAssignments(self.store)
        self.keys = Keys(self.store, sealer, self.vaults)
        self.deleted = DeletedKeys(self.store, self.keys)
        self.backups = Backups(self.store, sealer, self.vaults, self.keys)
        self.rotation = Rotation(self.store, self.keys)
        self.store.clock_hooks["rotated"] = self.rotation.rotate_due
        self.identity = SandboxIdentity(settings.sandbox_identity_key_path, settings.azure_tenant_id)
        self.throttle = Throttle()
        self.counters: defaultdict[str, VaultCounters] = defaultdict(VaultCounters)
        self.seed = seed

    async def start(self) -> None:
        """Open the database; on a new one, seed the demo (unless disabled)."""
        if await self.store.open():
            if self.seed:
                await seed_demo(self.vaults, self.keys, self.roles, self.settings)
                log.info("sandbox Key Vault: seeded the demo vaults in %s", self.database_url)
            await self.store.set_state("seeded", {"demo": self.seed})
        # Keys whose retention ran out while the service was stopped are gone now, and due rotations done.
        await self.deleted.purge_expired()
        await self.rotation.rotate_due()

    async def stop(self) -> None:
        """Close the database."""
        await self.db.close()


def create_app(settings: Settings, *, database_url: str | None = None, seed: bool = True) -> Starlette:
    """The ASGI app of the sandbox Key Vault (its lifespan opens the database and seeds it).

    Args:
        settings: ckey's settings.
        database_url: SQLAlchemy async URL; default ``<data_dir>/sandbox-keyvault.db``.
        seed: create the demo vaults and keys when the database is new.
    """
    sandbox = SandboxKeyVault(settings, database_url=database_url, seed=seed)
    s = sandbox
    routes = KeyRoutes(s.keys, s.deleted, s.backups, s.rotation).routes() + CryptoRoutes(s.keys, s.store).routes()
    dataplane = DataPlane(
        routes,
        vaults=s.vaults,
        access=s.access,
        roles=s.roles,
        keys=s.keys,
        deleted=s.deleted,
        rotation=s.rotation,
        identity=s.identity,
        throttle=s.throttle,
        counters=s.counters,
    )
    control = build_control_app(
        settings,
        store=s.store,
        vaults=s.vaults,
        access=s.access,
        roles=s.roles,
        keys=s.keys,
        deleted=s.deleted,
        throttle=s.throttle,
        counters=s.counters,
        backups=s.backups,
    )
    auth = ArmAuth(s.identity, s.roles, settings.azure_tenant_id)
    arm = Arm(auth, ArmVaults(auth, s.vaults, s.access), ArmRoles(auth, s.roles, settings.azure_subscription_id))
    entra = Entra(
        sandbox.identity,
        ensure_app_registrations(settings.data_dir, settings.azure_principal),
        {settings.azure_tenant_id, settings.m365_organization},
    )

    return sandbox_app(
        sandbox,
        [
            Host("{vault}.vault.azure.net", app=dataplane),
            Host("{vault}.vault.ckey.test", app=dataplane),
            Host("management.azure.com", app=arm),
            Host("login.microsoftonline.com", app=entra.router()),
            Host("localhost", app=control),
            Host("127.0.0.1", app=control),
        ],
    )
