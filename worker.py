"""The ckey Temporal worker: settings → Temporal client → one worker with every workflow and activity.

Run ``python -m worker`` (``ckey up`` does); scale out by running more of them on the same task queue.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor

from temporalio.client import Client
from temporalio.worker import Worker

from activities import Gateways, build_activities
from ckey.azure import AzureConnection
from ckey.config import Settings, get_settings
from ckey.keyvault import KeyVaultGateway
from ckey.m365 import M365Gateway, build_transport
from ckey.schedules import ensure_schedules
from ckey.store import Store
from ckey.support import HttpSupportDesk
from ckey.temporal import connect, ensure_search_attributes
from ckey.windows365 import Windows365Gateway
from workflows import all_activity_stubs, all_workflows
from workflows.operation import WORKFLOW_FAILURE_TYPES

__all__ = ["WORKFLOW_FAILURE_TYPES", "build_worker", "main", "run_worker", "start_schedules"]

log = logging.getLogger("ckey.worker")


def build_worker(client: Client, settings: Settings, gateways: Gateways, task_queue: str | None = None) -> Worker:
    """A worker on the configured task queue running the workflow of every kind and the activities they call."""
    return Worker(
        client,
        task_queue=task_queue or settings.temporal_task_queue,
        workflows=all_workflows(),
        activities=build_activities(gateways, all_activity_stubs()),
        # Sync activities (none yet) would run here; async ones run on the event loop.
        activity_executor=ThreadPoolExecutor(max_workers=16),
        # These fail the workflow, not its task, which would be retried without end: a bad input (the data
        # converter's validation of a workflow's input) or a programming error. A nondeterminism error is none of
        # them and stays a task failure, so that rolling a bad deploy back lets week-long runs go on.
        workflow_failure_exception_types=WORKFLOW_FAILURE_TYPES,
    )


async def start_schedules(client: Client, settings: Settings) -> None:
    """Create or update ckey's Temporal Schedules (``CKEY_SCHEDULES``); a refusal is logged, the worker still runs."""
    if not settings.schedules:
        log.info("schedules off (CKEY_SCHEDULES=false): the inventory sync and the health check run only by hand")
        return
    try:
        for line in await ensure_schedules(client, settings):
            log.info("schedule %s", line)
    except Exception as exc:  # the worker's operations do not depend on the schedules; an operator must see it
        log.error("could not create or update ckey's schedules: %s", exc)


async def run_worker(settings: Settings) -> None:
    """Run the worker until SIGINT or SIGTERM."""
    client = await connect(settings)
    try:
        added = await ensure_search_attributes(client)
        if added:
            log.info("registered search attributes %s", ", ".join(added))
    except Exception as exc:  # a cloud namespace may refuse operator calls; attributes are then managed there
        log.warning("could not check search attributes: %s", exc)
    await start_schedules(client, settings)
    store = Store.from_settings(settings)
    azure = AzureConnection(settings)
    keyvault = KeyVaultGateway(azure)
    gateways = Gateways(
        store=store,
        keyvault=keyvault,
        dep_keys=settings.dep_keys,
        m365=M365Gateway(build_transport(settings, azure)),
        support=HttpSupportDesk(azure, settings.support_url, settings.support_contact),
        windows365=Windows365Gateway(azure),
        alert_webhook_url=settings.alert_webhook_url,
        spo_geo_admin_urls=settings.spo_geo_admin_urls,
    )
    if settings.sandbox:
        log.warning("SANDBOX MODE: Azure and Microsoft 365 names resolve to the local sandbox (CKEY_SANDBOX=true)")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with build_worker(client, settings, gateways):
            log.info("ckey worker ready on task queue %s", settings.temporal_task_queue)
            await stop.wait()
    finally:
        await keyvault.close()
        await azure.close()
        await store.close()


def main() -> None:
    """Entry point of ``python -m worker``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run_worker(get_settings()))


if __name__ == "__main__":
    main()
