"""How long the service's processes take, in simulated seconds, and the service's limits.

Every duration the seed mentions (or that an administrator lives through when following it) is a named default
here, never a literal deep in the code. They are seconds of the sandbox clock (:mod:`sandbox.m365.clock`), which runs
``speed`` simulated seconds per real second, so the same values serve a faithful rehearsal (speed 1) and a demo
(speed 3600: an hour a second).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

MINUTE = 60.0
HOUR = 3600.0
DAY = 24 * HOUR
GB = 1024**3

MAX_DEPS = 50
"""Data encryption policies per tenant and kind (mailbox DEPs; multi-workload DEPs)."""
DEFAULT_RESULT_SIZE = 1000
"""Objects Get-Mailbox and Get-MailUser return without ``-ResultSize`` (Exchange's default)."""
PAGE_SIZE = 1000
"""Objects per InvokeCommand page; more follow through ``@odata.nextLink``."""


@dataclass(frozen=True)
class Durations:
    """The service's process durations (simulated seconds)."""

    move_base: float = 2 * HOUR
    """First-time mailbox encryption: the mailbox moves to another database first (seed: "hours or possibly days")."""
    move_per_gb: float = 1 * HOUR
    """Added to ``move_base`` per GB of mailbox."""
    move_lanes: int = 20
    """Concurrent first-time moves per tenant: the more mailboxes get their first DEP at once, the longer the queue
    (seed: "depends on the number of mailboxes to which you assign a DEP for the first time, and the size")."""
    reencrypt_base: float = 20 * MINUTE
    """Re-encryption of a mailbox already on a Customer Key DEP (a refresh after a key roll, another DEP, back to
    Microsoft-managed keys): no move."""
    reencrypt_per_gb: float = 5 * MINUTE
    spo_site_register: float = 15 * MINUTE
    """Per site while a geo is Registering (sites are encrypted one after the other)."""
    spo_site_roll: float = 5 * MINUTE
    """Per site while a geo is Rolling."""
    multi_workload_effect_min: float = 1 * HOUR
    multi_workload_effect_max: float = 24 * HOUR
    """A multi-workload assignment takes effect within up to 24 hours."""
    intune_ready_min: float = 3 * HOUR
    intune_ready_max: float = 4 * HOUR
    """Seed: "within 3 to 4 hours of completing this step, the Intune admin center updates"."""
    cloud_pc_encrypt_min: float = 30 * MINUTE
    cloud_pc_encrypt_max: float = 2 * HOUR
    """Re-encrypting one existing Cloud PC's disk with the customer-managed key."""
    escalation_after: float = 7 * DAY
    """Seed: "If the mailboxes are not encrypted after a week from the time you assigned the DEP, contact Microsoft"."""
    escalation_resolve: float = 2 * DAY
    """Microsoft's support engineers restart the stuck moves of an escalation this long after the case opens."""
    rollback_complete: float = 3 * DAY
    """Microsoft re-wraps the multi-workload data with Microsoft-managed keys this long after the request."""
    rollback_retry: float = 1 * DAY
    """When the customer's keys cannot be reached for the re-wrap, Microsoft tries again after this long."""
    edocument_issue: float = 1 * DAY
    """Microsoft sends the Data Purge eDocument this long after the request."""
    purge_delete_policy: float = 1 * DAY
    """After the signed eDocument arrives, Microsoft deletes the policy ..."""
    purge_mark_mailboxes: float = 1 * HOUR
    """... then marks its mailboxes for permanent deletion ..."""
    purge_delete_availability_key: float = 1 * DAY
    """... then deletes the availability key; the data is gone."""

    def first_move(self, size_bytes: int) -> float:
        """How long a first-time move (with its encryption) of a mailbox of ``size_bytes`` takes."""
        return self.move_base + self.move_per_gb * size_bytes / GB

    def reencrypt(self, size_bytes: int) -> float:
        """How long re-encrypting a mailbox of ``size_bytes`` takes."""
        return self.reencrypt_base + self.reencrypt_per_gb * size_bytes / GB


def spread(low: float, high: float, token: str) -> float:
    """A duration between ``low`` and ``high``, fixed for ``token``: varied like the service, repeatable in tests."""
    fraction = int.from_bytes(hashlib.sha256(token.encode()).digest()[:8], "big") / 2**64
    return low + (high - low) * fraction
