"""``python -m sandbox.keyvault``: serve the sandbox Key Vault with ckey's settings (``CKEY_*``, ``.env``)."""

from __future__ import annotations

import logging
import sys

from ckey.config import SettingsError, load_settings
from sandbox.keyvault.server import serve


def main() -> int:
    """Ensure the CA and certificate, open (or create and seed) the database, serve HTTPS until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        # The sandbox is in sandbox mode whatever CKEY_SANDBOX says (off by default, for production): its own SDK
        # clients, the tenant's acting as Microsoft 365 towards the customer's Key Vault, reach the sandbox Key Vault.
        settings = load_settings(sandbox=True)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    port = settings.sandbox_keyvault_port
    logging.getLogger("sandbox.keyvault").info(
        "sandbox Key Vault on https://127.0.0.1:%d: *.vault.azure.net, management.azure.com and "
        "login.microsoftonline.com (ckey resolves them here in sandbox mode), control at "
        "https://localhost:%d/sandbox/, data in %s",
        port,
        port,
        settings.data_dir,
    )
    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
