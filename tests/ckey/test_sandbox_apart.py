"""ckey's Azure sign-in, gateways and stack neither import the sandbox nor load it while they run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
