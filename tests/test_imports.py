"""Import weight: the workflows and their contracts load no I/O library and no sandbox code.

The worker's workflow sandbox, the replay tests and the API's registry import the workflow modules; each run here
starts a fresh interpreter, so nothing another test imported counts.
"""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("aiohttp", "azure", "httpx", "jwt", "sqlalchemy", "fastapi", "sandbox")
"""Top-level packages of I/O (HTTP clients, the Azure SDKs, JWT, the database, the web framework) and the stand-ins."""


def _modules(package: str) -> list[str]:
    return [f"{package}.{info.name}" for info in pkgutil.iter_modules([str(ROOT / package)])]


def loaded_heavy(statement: str) -> list[str]:
    """The heavy top-level packages in ``sys.modules`` after ``statement`` runs in a fresh interpreter."""
    script = (
        f"import sys\n{statement}\n"
        "import json\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    found: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


LIGHT = [
    "import workflows",
    "import workflows; workflows.all_workflows()",
    "import contracts",
    "import ckey.operations",
    *(f"import {module}" for module in _modules("workflows")),
    *(f"import {module}" for module in _modules("contracts")),
]


@pytest.mark.parametrize("statement", LIGHT)
def test_workflows_and_contracts_load_no_io_library(statement: str) -> None:
    assert loaded_heavy(statement) == []


def test_the_check_sees_a_heavy_import() -> None:
    # The activities do I/O: the same check finds it there, so an empty answer above means something.
    assert {"sqlalchemy", "azure"} <= set(loaded_heavy("import activities.keyvault"))


def test_every_module_of_the_packages_is_checked() -> None:
    assert {"workflows.exchange", "workflows.keyvault", "workflows.operation"} <= set(_modules("workflows"))
    assert {"contracts.exchange", "contracts.keyvault", "contracts.operation"} <= set(_modules("contracts"))
