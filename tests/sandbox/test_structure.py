"""The sandboxes' shape: modules split by resource stay small, route modules get parts not the app, light packages.

The size limit is one helper over a list of packages: the Microsoft 365 tenant joins by adding ``"sandbox/m365"`` to
:data:`SPLIT_PACKAGES`.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 400
"""docs/architecture.md: each sandbox module is under about 400 lines."""
SPLIT_PACKAGES = [
    "sandbox/keyvault",
    "sandbox/m365",
]
"""Packages already split by resource, whose every module must stay within :data:`MAX_LINES`."""
WIRING = {"sandbox.keyvault.app", "sandbox.keyvault.server", "sandbox.keyvault.__main__"}
"""The only Key Vault modules that may know the whole app object (they build it or serve it)."""


def oversized(package: Path, limit: int = MAX_LINES) -> dict[str, int]:
    """The modules under ``package`` (recursively) longer than ``limit`` lines, with their line counts."""
    counts = {str(path.relative_to(ROOT)): len(path.read_text().splitlines()) for path in package.rglob("*.py")}
    return {path: lines for path, lines in sorted(counts.items()) if lines > limit}


@pytest.mark.parametrize("package", SPLIT_PACKAGES)
def test_every_module_of_a_split_sandbox_stays_within_the_limit(package: str) -> None:
    assert (ROOT / package).is_dir()
    assert oversized(ROOT / package) == {}


def test_the_limit_check_sees_a_long_module(tmp_path: Path) -> None:
    package = ROOT / "sandbox" / "keyvault"
    longest = max(len(path.read_text().splitlines()) for path in package.glob("*.py"))
    assert longest > 100  # the check reads real modules
    assert oversized(package, limit=longest - 1) != {}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_keyvault_route_modules_get_parts_not_the_app_object() -> None:
    package = ROOT / "sandbox" / "keyvault"
    reaching = {
        f"sandbox.keyvault.{path.stem}"
        for path in package.glob("*.py")
        if path.stem != "__init__" and {"sandbox.keyvault.app", "sandbox.keyvault.app.SandboxKeyVault"} & _imports(path)
    }
    assert reaching <= WIRING, reaching - WIRING
    assert "sandbox.keyvault.server" in reaching  # the check reads the imports it means to forbid


def _loaded(statement: str) -> list[str]:
    """Which of fastapi, sqlalchemy are in ``sys.modules`` after ``statement`` runs in a fresh interpreter."""
    script = (
        f"import sys\n{statement}\nimport json\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'fastapi', 'sqlalchemy'})))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    found: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


@pytest.mark.parametrize(
    "statement",
    [
        "import sandbox",
        "import sandbox.keyvault",
        "import sandbox.keyvault.errors",
        "from sandbox.keyvault.errors import ServiceError",
        "from sandbox.keyvault import errors",
    ],
)
def test_the_keyvault_package_and_its_errors_load_neither_fastapi_nor_sqlalchemy(statement: str) -> None:
    assert _loaded(statement) == []


def test_the_package_still_hands_out_its_servers_on_demand() -> None:
    # The lazy names load their modules (and with them the web framework and the database), so the check above
    # can fail; and callers that import from the package root keep working.
    assert _loaded("from sandbox.keyvault import SandboxKeyVaultServer") == ["fastapi", "sqlalchemy"]
    assert _loaded("import sandbox.keyvault as kv; kv.create_app") == ["fastapi", "sqlalchemy"]
