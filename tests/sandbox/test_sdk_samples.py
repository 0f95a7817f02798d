"""Microsoft's own azure-keyvault-keys samples run unmodified against the sandbox Key Vault and exit 0.

Each sample runs in a subprocess with only its way in supplied from outside (``tests/sandbox/keyvault_samples``'s
README): ``VAULT_URL``, ``DefaultAzureCredential``'s environment credential (ckey's app registration in the sandbox
tenant), and a ``sitecustomize.py`` that resolves Azure's host names to the sandbox port and trusts the sandbox CA.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ckey.config import Settings
from sandbox.keyvault import SandboxKeyVaultServer
from tests.sandbox.conftest import MakeVault, vault_url

SAMPLES = Path(__file__).parent / "keyvault_samples"
NAMES = [
    "hello_world",
    "list_operations",
    "backup_restore_operations",
    "recover_purge_operations",
    "key_rotation",
]
SITECUSTOMIZE = '''
"""Reach the sandbox Key Vault under Azure's own host names (test harness; the samples stay unmodified)."""
import asyncio
import os
import socket
import time

_PORT = int(os.environ["CKEY_SANDBOX_KEYVAULT_PORT"])
_SUFFIXES = (".vault.azure.net",)
_HOSTS = ("login.microsoftonline.com",)
_getaddrinfo = socket.getaddrinfo


def _sandbox_getaddrinfo(host, port, *args, **kwargs):
    name = (host.decode() if isinstance(host, bytes) else str(host or "")).lower().rstrip(".")
    if name in _HOSTS or name.endswith(_SUFFIXES):
        return _getaddrinfo("127.0.0.1", _PORT, *args, **kwargs)
    return _getaddrinfo(host, port, *args, **kwargs)


socket.getaddrinfo = _sandbox_getaddrinfo

if not os.environ.get("CKEY_SAMPLES_REAL_SLEEP"):
    # The samples' one fixed wait (60 s after a purge) waits for Azure's asynchronous purge; the sandbox has
    # purged when it answers. Shorter sleeps (SDK retries, pollers) are left alone.
    _sleep, _asleep = time.sleep, asyncio.sleep

    def _short_sleep(seconds):
        return _sleep(0 if seconds >= 30 else seconds)

    async def _short_asleep(delay, *args, **kwargs):
        return await _asleep(0 if delay >= 30 else delay, *args, **kwargs)

    time.sleep = _short_sleep
    asyncio.sleep = _short_asleep
'''


def sample_env(settings: Settings, vault: str, site: Path) -> dict[str, str]:
    assert settings.azure_client_id and settings.azure_client_secret is not None
    ca = str(settings.resolved_ca_file)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "CKEY_", "PYTHON"))}
    return env | {
        "VAULT_URL": vault_url(vault),
        "AZURE_TENANT_ID": settings.azure_tenant_id,
        "AZURE_CLIENT_ID": settings.azure_client_id,
        "AZURE_CLIENT_SECRET": settings.azure_client_secret.get_secret_value(),
        "REQUESTS_CA_BUNDLE": ca,
        "SSL_CERT_FILE": ca,
        "PYTHONPATH": str(site),
        "CKEY_SANDBOX_KEYVAULT_PORT": str(settings.sandbox_keyvault_port),
    }


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("samples-site")
    (directory / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return directory


def test_the_samples_are_microsofts_unmodified() -> None:
    for name in NAMES:
        for path in (SAMPLES / f"{name}.py", SAMPLES / f"{name}_async.py"):
            assert "# Copyright (c) Microsoft Corporation." in path.read_text()
    assert "MIT License" in (SAMPLES / "LICENSE").read_text()


@pytest.mark.parametrize("flavour", ["", "_async"])
@pytest.mark.parametrize("name", NAMES)
async def test_microsofts_sample_runs_against_the_sandbox(
    kv_settings: Settings,
    kv_server: SandboxKeyVaultServer,
    make_vault: MakeVault,
    site: Path,
    name: str,
    flavour: str,
) -> None:
    vault = await make_vault()
    script = SAMPLES / f"{name}{flavour}.py"
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(script)],
        env=sample_env(kv_settings, vault, site),
        cwd=site,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    print(done.stdout[-1500:])
    assert done.returncode == 0, f"{script.name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
