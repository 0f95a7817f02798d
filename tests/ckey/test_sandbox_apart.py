"""ckey's Azure sign-in, gateways and stack neither import the sandbox nor load it while they run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sys
import ckey.azure, ckey.keyvault, ckey.stack
from ckey.config import load_settings
settings = load_settings(data_dir={data!r}, sandbox=True, _env_file=None)
assert [s.module for s in ckey.stack.sandbox_services(settings)] == ["sandbox.keyvault", "sandbox.m365"]
ckey.stack.prepare_shared_files(settings)  # runs python -m sandbox.bootstrap in a child
loaded = sorted(name for name in sys.modules if name == "sandbox" or name.startswith("sandbox."))
print(",".join(loaded))
"""


def test_ckey_runs_the_sandbox_by_module_name_only(tmp_path: Path) -> None:
    probe = PROBE.format(data=str(tmp_path / "data"))
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
    # The bootstrap child created the sandbox's app registration for ckey.
    assert (tmp_path / "data" / "keys" / "sandbox-entra-apps.json").is_file()


def test_the_installed_ckey_script_finds_the_sandbox_servers(tmp_path: Path) -> None:
    # The `ckey` console script runs with neither the checkout nor the working directory on sys.path: the editable
    # install's own finder is what locates the packages. ckey up must still find (and not import) the sandbox.
    probe = (
        "import sys; from ckey.config import load_settings; import ckey.stack as s; "
        f"st = load_settings(data_dir={str(tmp_path)!r}, sandbox=True, _env_file=None); "
        "print([x.module for x in s.sandbox_services(st)], [m for m in sys.modules if m.split('.')[0] == 'sandbox'])"
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-I", "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env
    )
    if "No module named 'ckey'" in done.stderr:
        pytest.skip("ckey is not installed in this interpreter (pip install -e .)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['sandbox.keyvault', 'sandbox.m365'] []"
