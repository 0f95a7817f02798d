"""Benchmark: assign a DEP to N mailboxes on the dev server against the sandbox tenant, and count Temporal's cost.

Prints figures (wall time, history events, activities scheduled, status rounds, per mailbox); asserts nothing.
``python -m bench.exchange_assign [mailboxes] [speed]`` (default 10,000 mailboxes; the sandbox tenant's simulated
seconds per real second, default 5,000,000: lower it to spread the moves over several status rounds).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import SecretStr
from temporalio.api.enums.v1 import EventType
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities import Gateways, build_activities
from ckey.azure import AzureConnection
from ckey.config import load_settings
from ckey.keyvault import KeyVaultGateway
from ckey.m365 import M365Gateway, build_transport
from ckey.store import Store
from ckey.store.migrate import upgrade
from ckey.store.targets import TargetStore
from ckey.support import HttpSupportDesk
from contracts.exchange import ExchangeDepAssignInput
from sandbox.bootstrap import bootstrap
from sandbox.keyvault import SandboxKeyVaultServer
from sandbox.m365.control import SandboxM365Control
from sandbox.m365.server import SandboxM365Server
from sandbox.m365.tenant import TenantSpec
from workflows import all_workflows
from workflows.exchange import ExchangeDepAssignWorkflow

KEYS = [
    "https://contoso-eastus-kv1.vault.azure.net/keys/exo-key-01",
    "https://contoso-westus-kv1.vault.azure.net/keys/exo-key-02",
]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def main(count: int, speed: float = 5_000_000.0) -> None:
    """Seed a tenant of ``count`` mailboxes, assign a DEP to all of them, follow to the end, count."""
    tmp = Path(tempfile.mkdtemp(prefix="ckey-bench-"))
    settings = load_settings(
        data_dir=tmp,
        sandbox=True,
        sandbox_keyvault_port=_port(),
        sandbox_m365_port=_port(),
        temporal_task_queue=f"bench-{uuid.uuid4()}",
        _env_file=None,
    )
    # Signed in as `ckey up` signs its children in: the sandbox tenant's app registration for ckey.
    sign_in = bootstrap(settings)
    settings = settings.model_copy(
        update={
            "azure_client_id": sign_in["CKEY_AZURE_CLIENT_ID"],
            "azure_client_secret": SecretStr(sign_in["CKEY_AZURE_CLIENT_SECRET"]),
        }
    )
    store = Store.from_url(settings.resolved_database_url)
    await upgrade(store.engine)
    spec = TenantSpec(mailboxes=count, mail_users=0, sites_per_geo=0, cloud_pcs=0, stuck_mailboxes=0)
    seeding = time.perf_counter()
    with SandboxKeyVaultServer(settings), SandboxM365Server(settings, seed=spec, speed=speed):
        print(f"sandbox tenant of {count} mailboxes seeded in {time.perf_counter() - seeding:.1f} s")
        async with (
            AzureConnection(settings) as azure,
            await WorkflowEnvironment.start_local(
                dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
                data_converter=pydantic_data_converter,
            ) as env,
        ):
            m365 = M365Gateway(build_transport(settings, azure))
            keyvault = KeyVaultGateway(azure)
            await m365.new_data_encryption_policy("BENCH_DEP", KEYS, "benchmark")
            boxes = [b.identity for b in await m365.get_mailbox(result_size="Unlimited")]
            targets = TargetStore(store)
            target = await targets.create_set("mailboxes", "bench", boxes, "bench", datetime.now(UTC))
            gateways = Gateways(
                store=store,
                keyvault=keyvault,
                m365=m365,
                support=HttpSupportDesk(azure, settings.support_url),
            )
            async with Worker(
                env.client,
                task_queue=settings.temporal_task_queue,
                workflows=all_workflows(),
                activities=build_activities(gateways),
                max_concurrent_activities=20,
            ):
                started = time.perf_counter()
                handle = await env.client.start_workflow(
                    ExchangeDepAssignWorkflow.run,
                    ExchangeDepAssignInput(dep="BENCH_DEP", mailbox_file=target.id, poll_interval=timedelta(seconds=2)),
                    id=f"op-bench-{uuid.uuid4()}",
                    task_queue=settings.temporal_task_queue,
                )
                result = await handle.result()
                elapsed = time.perf_counter() - started
            events = scheduled = timers = runs = 0
            async for wf in env.client.list_workflows(f'WorkflowId = "{handle.id}"'):
                runs += 1
                history = await env.client.get_workflow_handle(handle.id, run_id=wf.run_id).fetch_history()
                for event in history.events:
                    events += 1
                    scheduled += event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
                    timers += event.event_type == EventType.EVENT_TYPE_TIMER_STARTED
            rounds = sum(
                1
                for e in await store.list_audit(operation_id=handle.id, limit=1_000_000)
                if e.action == "m365.Get-MailboxStatistics"
            )
            await keyvault.close()
        async with SandboxM365Control.from_settings(settings) as control:
            status = await control.status()
    await store.close()
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"mailboxes: {result.total}, encrypted: {result.encrypted}, wall time {elapsed:.1f} s")
    print(f"workflow runs: {runs}, history events: {events} ({events / count:.4f} per mailbox)")
    print(f"activities scheduled: {scheduled} ({scheduled / count:.4f} per mailbox), timers: {timers}")
    print(f"status rounds (activity attempts, no history each): {rounds} ({rounds / count:.4f} per mailbox)")
    print(f"sandbox clock speed: {status.get('clock', {}).get('speed', status.get('speed'))}")


if __name__ == "__main__":
    asyncio.run(
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000, float(sys.argv[2]) if len(sys.argv) > 2 else 5e6)
    )
