"""The import contracts (pyproject's [tool.importlinter]) hold, and they — with the import-weight checks — catch
a layer broken on a temporary copy of the tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")
TREE = ("ckey", "workflows", "activities", "contracts", "sandbox", "worker.py", "pyproject.toml")
SANDBOX_FREE = (
    "import sys, ckey.azure, ckey.keyvault; print(','.join(m for m in sys.modules if m.split('.')[0] == 'sandbox'))"
)


def _copy(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in TREE:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, tree / name)
    return tree


def _run(tree: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True, timeout=300)


def test_the_import_contracts_hold() -> None:
    done = _run(ROOT, LINT_IMPORTS)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_contracts_and_the_import_weight_catch_a_broken_layer(tmp_path: Path) -> None:
    tree = _copy(tmp_path)
    assert _run(tree, LINT_IMPORTS).returncode == 0
    assert _run(tree, sys.executable, "-c", SANDBOX_FREE).stdout.strip() == ""

    keyvault = tree / "ckey" / "keyvault.py"
    keyvault.write_text(keyvault.read_text() + "\nimport sandbox.tls  # noqa\n")
    broken = _run(tree, LINT_IMPORTS)
    assert broken.returncode != 0 and "ckey.keyvault -> sandbox" in broken.stdout, broken.stdout
    assert "sandbox" in _run(tree, sys.executable, "-c", SANDBOX_FREE).stdout

    keyvault.write_text((ROOT / "ckey" / "keyvault.py").read_text())
    borrowed = tree / "sandbox" / "tls.py"
    borrowed.write_text(
        borrowed.read_text() + "\nimport ckey.auth  # noqa\nimport ckey.models  # noqa\nimport ckey.azure  # noqa\n"
    )
    broken = _run(tree, LINT_IMPORTS)
    assert broken.returncode != 0, broken.stdout
    for module in ("ckey.auth", "ckey.models", "ckey.azure"):
        assert f"sandbox.tls -> {module}" in broken.stdout, broken.stdout


def _ckey_modules() -> set[str]:
    """ckey's importable top-level modules and packages (``ckey/migrations`` is Alembic's folder, not a package)."""
    found = {f"ckey.{path.stem}" for path in (ROOT / "ckey").glob("*.py") if path.stem != "__init__"}
    found |= {f"ckey.{path.parent.name}" for path in (ROOT / "ckey").glob("*/__init__.py")}
    return found


def test_the_sandbox_may_borrow_only_the_shared_settings() -> None:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    [sandbox] = [c for c in contracts if c["source_modules"] == ["sandbox"]]
    forbidden = set(sandbox["forbidden_modules"])
    assert "ckey.config" not in forbidden
    # A module added to ckey is forbidden to the sandbox until someone decides otherwise here.
    assert _ckey_modules() - {"ckey.config"} <= forbidden, sorted(_ckey_modules() - {"ckey.config"} - forbidden)
    assert {"workflows", "activities", "contracts"} <= forbidden
    # The one ignored edge is the settings' own typing; the sandbox may not reach ckey.models any other way.
    assert sandbox.get("ignore_imports", []) == ["ckey.config -> ckey.models"]
