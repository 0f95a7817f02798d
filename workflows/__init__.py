"""Operation workflows, one module per operation family.

Importing this package registers every product operation kind in :data:`ckey.operations.registry`.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

WORKFLOW_MODULES = tuple(
    f"{__name__}.{info.name}" for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_")
)


def all_workflows() -> list[type]:
    """Every ``@workflow.defn`` class defined in this package's modules."""
    found: list[type] = []
    for module_name in WORKFLOW_MODULES:
        module = importlib.import_module(module_name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            defined_here = obj.__module__ == module.__name__
            if defined_here and hasattr(obj, "__temporal_workflow_definition") and obj not in found:
                found.append(obj)
    return found
