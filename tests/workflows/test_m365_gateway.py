"""The gateway's multi-workload and SharePoint reads against the sandbox tenant: each geo through its admin site."""

from __future__ import annotations

from ckey.azure import AzureConnection
from ckey.config import Settings
from ckey.m365 import M365Gateway
from ckey.windows365 import Windows365Gateway
from sandbox.m365.server import SandboxM365Server
from tests.workflows.conftest import TENANT


async def test_each_geo_answers_through_its_own_admin_site(stack_settings: Settings, m365: M365Gateway) -> None:
    seen = {
        geo: await m365.get_spo_data_encryption_policy(url) for geo, url in stack_settings.spo_geo_admin_urls.items()
    }
    assert {geo: policy.geo for geo, policy in seen.items()} == {"NAM": "NAM", "EUR": "EUR"}
    assert all(policy.state for policy in seen.values())


async def test_multi_workload_reads(m365: M365Gateway) -> None:
    assert isinstance(await m365.get_m365_data_at_rest_encryption_policy(), list)
    assignment = await m365.get_m365_data_at_rest_encryption_policy_assignment()
    assert assignment is not None


async def test_cloud_pcs_are_read_from_graph(azure: AzureConnection, tenant_server: SandboxM365Server) -> None:
    pcs = await Windows365Gateway(azure).cloud_pcs()
    assert len(pcs) == TENANT.cloud_pcs
