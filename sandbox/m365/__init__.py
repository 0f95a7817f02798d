"""A stand-in for the Microsoft 365 service side of Customer Key, answering the seed's cmdlets over HTTPS.

Reached under the real names (``outlook.office365.com``, ``<tenant>-admin.sharepoint.com``, ``graph.microsoft.com``)
through ckey's sandbox resolver, it plays Exchange Online, SharePoint Online, the multi-workload service and Windows
365 with the seed's rules, states and (scaled in time) durations, a real key hierarchy over the sandbox Key Vault, and
Microsoft's support desk. See ``sandbox/m365/README.md``.

- :mod:`~sandbox.m365.app`: hosts, the request gate, InvokeCommand; :mod:`~sandbox.m365.server`: serving.
- :mod:`~sandbox.m365.exchange`, :mod:`~sandbox.m365.multiworkload`, :mod:`~sandbox.m365.sharepoint`: the cmdlets.
- :mod:`~sandbox.m365.core`, :mod:`~sandbox.m365.keys`, :mod:`~sandbox.m365.vault`: state and key hierarchy.
- :mod:`~sandbox.m365.support`: the support desk; :mod:`~sandbox.m365.tenant`: the demo tenant generator.
- :mod:`~sandbox.m365.admin`: the control endpoint; :mod:`~sandbox.m365.control`: its client.
"""

from sandbox.m365.app import SandboxM365, create_app
from sandbox.m365.control import SandboxM365Control
from sandbox.m365.durations import Durations
from sandbox.m365.server import SandboxM365Server, serve
from sandbox.m365.tenant import SMALL_TENANT, TenantSpec

__all__ = [
    "SMALL_TENANT",
    "Durations",
    "SandboxM365",
    "SandboxM365Control",
    "SandboxM365Server",
    "TenantSpec",
    "create_app",
    "serve",
]
