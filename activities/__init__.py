"""Activities, one module per gateway family: the only code that does I/O.

Each family is a class that receives its gateways in ``__init__``; :func:`build_activities` wires them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ckey.store import Store


@dataclass
class Gateways:
    """The clients activities talk through; tests pass real sandbox clients or deliberately failing ones."""

    store: Store


def build_activities(gateways: Gateways) -> list[Callable[..., Any]]:
    """Every activity of the product, bound to ``gateways``."""
    from activities.operation import OperationActivities

    operation = OperationActivities(gateways.store)
    return [operation.record_operation]
