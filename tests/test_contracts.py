"""Each family's activity stub (the contract the workflows call) is implemented, name for name, by its activities."""

from __future__ import annotations

import inspect

import pytest
from temporalio.activity import _Definition

from activities.exchange import ExchangeActivities
from activities.keyvault import KeyVaultActivities
from activities.operation import OperationActivities
from activities.windows365 import Windows365Activities
from contracts.exchange import ExchangeActivityStub
from contracts.keyvault import KeyVaultActivityStub
from contracts.operation import OperationActivityStub
from contracts.windows365 import Windows365ActivityStub


def activity_methods(cls: type) -> dict[str, str]:
    """Method name → activity name of every ``@activity.defn`` method of ``cls`` (inherited ones included)."""
    found: dict[str, str] = {}
    for name, member in inspect.getmembers(cls, inspect.isfunction):
        definition = _Definition.from_callable(member)
        if definition is not None and definition.name is not None:
            found[name] = definition.name
    return found


@pytest.mark.parametrize(
    ("stub", "implementation"),
    [
        (OperationActivityStub, OperationActivities),
        (KeyVaultActivityStub, KeyVaultActivities),
        (ExchangeActivityStub, ExchangeActivities),
        (Windows365ActivityStub, Windows365Activities),
    ],
)
def test_every_stub_activity_is_implemented_under_its_name(stub: type, implementation: type) -> None:
    assert issubclass(implementation, stub)
    declared = activity_methods(stub)
    assert declared, stub
    assert activity_methods(implementation) == declared
    for name in declared:
        # Overridden, and decorated again: the worker registers the implementation's bound methods.
        assert getattr(implementation, name) is not getattr(stub, name), name
        assert name in implementation.__dict__, name
        assert _Definition.from_callable(implementation.__dict__[name]) is not None, name
