"""Operation workflows, one module per operation family, and the registry of the product's operation kinds.

Each workflow module declares its kinds once, as data: ``KINDS``, a tuple of :class:`ckey.operations.OperationKind`
(name, workflow, params, input and result models, role, claim check, the DEP it concerns, the activities it calls).
Nothing registers anything on import: :func:`product_registry` collects the declarations, and the API (its kinds,
``GET /api/operations/kinds``, OpenAPI), the worker (its workflows and activities) and the guard tests (replay,
worker) derive from it. Adding a kind touches its own modules only: its contract, its workflow module (with its
``KINDS`` entry), its activities and its replay history.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ckey.operations import OperationKind, OperationRegistry

WORKFLOW_MODULES = tuple(
    f"{__name__}.{info.name}" for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_")
)


def product_kinds() -> list[OperationKind]:
    """Every kind the workflow modules declare (their ``KINDS``), in module order."""
    found: list[OperationKind] = []
    for module_name in WORKFLOW_MODULES:
        found += getattr(importlib.import_module(module_name), "KINDS", ())
    return found


@functools.cache
def product_registry() -> OperationRegistry:
    """The product's registry of operation kinds, built on first use from :func:`product_kinds`."""
    from ckey.operations import OperationRegistry

    return OperationRegistry(product_kinds())


def all_workflows() -> list[type]:
    """The workflow of every kind the product declares, each once: the worker's workflows."""
    found: list[type] = []
    for kind in product_kinds():
        if kind.workflow not in found:
            found.append(kind.workflow)
    return found


def all_activity_stubs() -> list[type]:
    """The activity stubs the product's workflows call: the operation machinery's and every kind's, each once."""
    from contracts.operation import OperationActivityStub

    found: list[type] = [OperationActivityStub]
    for kind in product_kinds():
        found += [stub for stub in kind.activities if stub not in found]
    return found
