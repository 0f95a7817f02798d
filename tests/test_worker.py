from __future__ import annotations

import ssl

import aiohttp
import azure.core.exceptions as azure_errors
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
from ckey.operations import registry
from ckey.store import Store
from ckey.support import HttpSupportDesk
from worker import WORKFLOW_FAILURE_TYPES, build_worker
from workflows import all_workflows
from workflows.operation import GATEWAY_RETRY, NON_RETRYABLE_ERROR_TYPES, RECORD_RETRY, incurable_not_retried


def test_every_registered_kind_has_its_workflow_in_the_worker() -> None:
    workflows = all_workflows()
    names = [_Definition.must_from_class(w).name for w in workflows]
    assert len(names) == len(set(names))
    # By name: the workflow sandbox re-imports the workflow modules, whose registrations then hold its copies.
    registered = {_Definition.must_from_class(k.workflow).name for k in registry if not k.name.startswith("test.")}
    assert registered <= set(names)
    assert {k.name for k in registry} >= {
        "keyvault.health",
        "keyvault.key.restore",
        "keyvault.access.revoke",
        "exchange.dep.create",
        "exchange.dep.assign",
        "exchange.encryption.verify",
    }


async def test_every_activity_is_registered_once(settings: Settings, store: Store) -> None:
    async with AzureConnection(settings) as azure:
        gateways = Gateways(
            store=store,
            keyvault=KeyVaultGateway(azure),
            m365=M365Gateway(build_transport(settings, azure)),
            support=HttpSupportDesk(azure),
        )
        names = [getattr(fn, "__temporal_activity_definition").name for fn in build_activities(gateways)]
    assert len(names) == len(set(names)) >= 17


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
