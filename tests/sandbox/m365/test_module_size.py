"""The sandbox tenant's shape: modules by resource under ~400 lines, a package that imports nothing heavy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = ROOT / "sandbox" / "m365"
MAX_LINES = 400
HEAVY = ("fastapi", "sqlalchemy", "uvicorn")


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _loaded_heavy(statement: str) -> list[str]:
    """The heavy top-level packages in ``sys.modules`` after ``statement`` runs in a fresh interpreter."""
    script = (
        f"import sys\n{statement}\nimport json\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    found: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def test_the_package_has_its_modules() -> None:
    # The size check below means something only if it sees the package's modules, the routes' included.
    names = {path.relative_to(PACKAGE).as_posix() for path in _modules()}
    assert {"app.py", "gate.py", "lifecycle.py", "exchange.py", "routes/exchange.py"} <= names


@pytest.mark.parametrize("path", _modules(), ids=lambda path: path.relative_to(PACKAGE).as_posix())
def test_every_module_is_at_most_400_lines(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines; split it by resource or concern"


@pytest.mark.parametrize(
    "statement",
    [
        "import sandbox.m365",
        "import sandbox.m365.errors",
        "import sandbox.m365.params",
        "import sandbox.m365.faults",
        "import sandbox.m365.routes",
        "from sandbox.m365 import errors, durations, clock",
    ],
)
def test_light_modules_load_neither_the_web_framework_nor_the_database(statement: str) -> None:
    assert _loaded_heavy(statement) == []


def test_the_check_sees_a_heavy_import() -> None:
    # The app does load both: an empty answer above means something.
    assert {"fastapi", "sqlalchemy"} <= set(_loaded_heavy("import sandbox.m365.app"))


def test_the_package_names_still_resolve_lazily() -> None:
    import sandbox.m365 as package
    from sandbox.m365.control import SandboxM365Control
    from sandbox.m365.server import SandboxM365Server
    from sandbox.m365.tenant import TenantSpec

    assert package.SandboxM365Control is SandboxM365Control
    assert package.SandboxM365Server is SandboxM365Server
    assert package.TenantSpec is TenantSpec
    with pytest.raises(AttributeError):
        _ = package.NoSuchThing
