"""``python -m sandbox.m365``: serve the sandbox tenant with ckey's settings (``CKEY_*``, ``.env``)."""

from __future__ import annotations

import logging
import sys

from ckey.config import SettingsError, load_settings
from sandbox.m365.server import serve


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
    port = settings.sandbox_m365_port
    logging.getLogger("sandbox.m365").info(
        "sandbox tenant on https://127.0.0.1:%d: outlook.office365.com, *.sharepoint.com, graph.microsoft.com and "
        "support.ckey.test (ckey resolves them here in sandbox mode), control at https://localhost:%d/sandbox/, "
        "clock at %g simulated seconds per second, data in %s",
        port,
        port,
        settings.sandbox_m365_speed or 1.0,
        settings.data_dir,
    )
    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
