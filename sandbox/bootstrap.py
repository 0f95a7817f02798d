"""``python -m sandbox.bootstrap``: create the sandbox's shared files once, and print how ckey signs in to it.

``ckey up`` runs this before any child starts (two children creating the CA at once could each write their own),
then reads the one JSON object it prints: the environment that gives ckey's processes the client credentials of
their app registration in the sandbox tenant (``CKEY_AZURE_CLIENT_ID``, ``CKEY_AZURE_CLIENT_SECRET``). ckey imports
nothing of the sandbox; it only runs this module by name.
"""

from __future__ import annotations

import json
import sys

from ckey.config import Settings, SettingsError, get_settings
from sandbox.entra import automation_app
from sandbox.identity import load_or_create_issuer_key
from sandbox.tls import ensure_ca


def bootstrap(settings: Settings) -> dict[str, str]:
    """Create the CA (unless ``CKEY_CA_FILE`` names one), the identity key and the app registrations.

    Returns:
        The environment ckey's processes need to sign in to the sandbox tenant.
    """
    if settings.ca_file is None:
        ensure_ca(settings.tls_dir)
    load_or_create_issuer_key(settings.sandbox_identity_key_path)
    app = automation_app(settings.data_dir, settings.azure_principal)
    return {"CKEY_AZURE_CLIENT_ID": app.client_id, "CKEY_AZURE_CLIENT_SECRET": app.client_secret}


def main() -> int:
    """Bootstrap with ckey's settings (``CKEY_*``) and print the environment as one JSON object."""
    try:
        settings = get_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(json.dumps(bootstrap(settings)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
