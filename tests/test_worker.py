from __future__ import annotations

import inspect
import ssl
from typing import get_type_hints

import aiohttp
import azure.core.exceptions as azure_errors
import pytest
from pydantic import ValidationError
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.worker.workflow_sandbox import RestrictedWorkflowAccessError
from temporalio.workflow import NondeterminismError, _Definition

from activities import Gateways, build_activities
from ckey.azure import AzureConnection
from ckey.config import Settings
from ckey.keyvault import KeyVaultGateway
from ckey.m365 import M365Gateway, build_transport
from ckey.operations import lazy
from ckey.store import Store
from ckey.support import HttpSupportDesk
from ckey.windows365 import Windows365Gateway
from contracts.operation import OperationActivityStub
from worker import WORKFLOW_FAILURE_TYPES, build_worker
from workflows import product_kinds
from workflows.operation import GATEWAY_RETRY, NON_RETRYABLE_ERROR_TYPES, RECORD_RETRY, incurable_not_retried


def test_the_registry_declares_each_kind_once_with_its_models() -> None:
    kinds = product_kinds()
    assert len({k.name for k in kinds}) == len(kinds)
    assert {k.name for k in kinds} >= {
        "keyvault.health",
        "keyvault.key.restore",
        "keyvault.access.revoke",
        "exchange.dep.create",
        "exchange.dep.assign",
        "exchange.encryption.verify",
    }
    for kind in kinds:
        assert kind.result_model is not None and kind.activities, kind.name
        hints = get_type_hints(vars(kind.workflow)["run"])
        assert hints["return"] is kind.result_model, kind.name
        if isinstance(kind.claim_check, lazy):  # named lazily: the name must resolve to a function
            assert callable(kind.claim_check.resolve()), kind.name


def _activity_names(stub: type) -> set[str]:
    return {
        getattr(member, "__temporal_activity_definition").name
        for _, member in inspect.getmembers(stub, inspect.isfunction)
        if hasattr(member, "__temporal_activity_definition")
    }


async def test_the_worker_runs_every_registered_kind_and_the_activities_it_calls(
    client: Client, settings: Settings, store: Store
) -> None:
    async with AzureConnection(settings) as azure:
        gateways = Gateways(
            store=store,
            keyvault=KeyVaultGateway(azure),
            m365=M365Gateway(build_transport(settings, azure)),
            support=HttpSupportDesk(azure),
            windows365=Windows365Gateway(azure),
        )
        config = build_worker(client, settings, gateways)._config
    workflows = [_Definition.must_from_class(w).name for w in config["workflows"]]
    assert len(workflows) == len(set(workflows))
    # Compared by name: the kinds declare the workflow classes the worker was given.
    assert set(workflows) == {_Definition.must_from_class(k.workflow).name for k in product_kinds()}
    activities = [getattr(fn, "__temporal_activity_definition").name for fn in config["activities"]]
    assert len(activities) == len(set(activities)) >= 17
    stubs = {OperationActivityStub, *(s for k in product_kinds() for s in k.activities)}
    assert set(activities) == set().union(*(_activity_names(s) for s in stubs))


def test_build_activities_refuses_a_stub_without_implementation(store: Store) -> None:
    class Orphan:
        pass

    with pytest.raises(LookupError, match="Orphan"):
        build_activities(Gateways(store=store), [Orphan])


def test_workflow_failure_types_are_explicit_and_leave_nondeterminism_a_task_failure() -> None:
    assert Exception not in WORKFLOW_FAILURE_TYPES and RuntimeError not in WORKFLOW_FAILURE_TYPES
    assert {ValueError, TypeError, KeyError, AttributeError, ValidationError} <= set(WORKFLOW_FAILURE_TYPES)
    for error in (
        NondeterminismError("history mismatch"),
        RestrictedWorkflowAccessError("datetime.datetime.now"),
        RuntimeError("not in workflow event loop"),
    ):
        assert not isinstance(error, WORKFLOW_FAILURE_TYPES), error


def test_incurable_errors_are_not_retried_by_any_policy_and_transient_ones_are() -> None:
    names = set(NON_RETRYABLE_ERROR_TYPES)
    assert {"ValueError", "TypeError", "KeyError", "AttributeError", "ValidationError"} <= names
    for policy in (GATEWAY_RETRY, RECORD_RETRY, incurable_not_retried(RetryPolicy(backoff_coefficient=1.0))):
        assert names <= set(policy.non_retryable_error_types or [])
    # Temporal matches a failure's type by the exception class's own name: these transient errors subclass
    # ValueError, but keep their names, which are not listed, so they stay retried.
    transient: list[type[BaseException]] = [
        aiohttp.ClientConnectorCertificateError,
        aiohttp.ClientConnectionError,
        aiohttp.ServerDisconnectedError,
        ssl.SSLCertVerificationError,
        azure_errors.DeserializationError,
        azure_errors.ServiceRequestError,
        azure_errors.ServiceResponseError,
        azure_errors.HttpResponseError,
        TimeoutError,
        ConnectionResetError,
    ]
    assert not {t.__name__ for t in transient} & names


async def test_the_worker_fails_workflows_on_the_listed_types(client: Client, settings: Settings, store: Store) -> None:
    worker = build_worker(client, settings, Gateways(store=store))
    assert worker._config["workflow_failure_exception_types"] == WORKFLOW_FAILURE_TYPES
