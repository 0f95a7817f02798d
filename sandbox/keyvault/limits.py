"""Service limits (throttling), injected faults and request counters, per vault.

The limits are those of "Azure Key Vault service limits" (learn.microsoft.com/azure/key-vault/general/service-limits,
resource type vault), maximum transactions in 10 seconds per vault:

=================  ===========  ==========  ================  ===============
key type           HSM CREATE   HSM other   software CREATE   software other
=================  ===========  ==========  ================  ===============
RSA 2,048-bit      10           2,000       20                4,000
RSA 3,072-bit      10           500         20                1,000
RSA 4,096-bit      10           250         20                500
=================  ===========  ==========  ================  ===============

The page says the thresholds are weighted and enforced on their sum (a 4,096-bit HSM GET costs as much as eight
2,048-bit HSM GETs, 2,000 / 250). The sandbox keeps two budgets per vault, CREATE and other, counted in RSA 2,048-bit
software-key units (20 and 4,000), and charges every transaction the software-2,048 limit divided by the limit of
its own key type: an HSM-2,048 GET costs 2, a software-4,096 GET 8, an HSM CREATE 2. Operations on no particular key
(list, restore) cost 1. A throttled request is not counted (the page: "Failed requests that return a 429 do not
count towards the throttle limits"). ``Retry-After`` is the time until enough of the window has drained, rounded up.
The control endpoint lowers the budgets, the window and ``Retry-After`` per vault so a test can hit them.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

WINDOW_SECONDS = 10.0
SOFTWARE_2048_CREATE = 20
SOFTWARE_2048_OTHER = 4000

CREATE_LIMITS = {False: {2048: 20, 3072: 20, 4096: 20}, True: {2048: 10, 3072: 10, 4096: 10}}
"""CREATE key transactions per 10 s, by HSM-protection and key size."""
OTHER_LIMITS = {False: {2048: 4000, 3072: 1000, 4096: 500}, True: {2048: 2000, 3072: 500, 4096: 250}}
"""All other key transactions per 10 s, by HSM-protection and key size."""


def cost(*, hsm: bool, size: int, creates: bool) -> int:
    """What one transaction costs, in RSA 2,048-bit software-key units of its budget."""
    table, unit = (CREATE_LIMITS, SOFTWARE_2048_CREATE) if creates else (OTHER_LIMITS, SOFTWARE_2048_OTHER)
    limit = table[hsm].get(size, table[hsm][2048])
    return max(1, round(unit / limit))


@dataclass
class Budget:
    """A sliding window of charged transactions."""

    events: deque[tuple[float, int]] = field(default_factory=deque)

    def used(self, now: float, window: float) -> int:
        """Units charged within the window ending ``now``."""
        while self.events and self.events[0][0] <= now - window:
            self.events.popleft()
        return sum(units for _, units in self.events)

    def seconds_until(self, units: int, limit: int, now: float, window: float) -> float:
        """How long until ``units`` more fit under ``limit``."""
        used = self.used(now, window)
        if used + units <= limit:
            return 0.0
        for at, charged in self.events:  # oldest first: each one leaves the window at ``at + window``
            used -= charged
            if used + units <= limit:
                return at + window - now
        return window


@dataclass
class VaultLimits:
    """The limits in force for one vault."""

    create: int = SOFTWARE_2048_CREATE
    other: int = SOFTWARE_2048_OTHER
    window: float = WINDOW_SECONDS
    retry_after: int | None = None
    """A fixed ``Retry-After`` (tests lower it to 1 s); None: computed from the window."""


@dataclass
class VaultFaults:
    """Faults injected into one vault's data plane."""

    error_rate: float = 0.0
    """Probability of a 503 ServiceUnavailable for each authenticated request."""
    latency_ms: int = 0
    down: bool = False
    """Every request answers 503, the challenge included."""


@dataclass
class VaultCounters:
    """What one vault's data plane answered since the service started."""

    requests: int = 0
    throttled: int = 0
    faults: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    operations: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "requests": self.requests,
            "throttled": self.throttled,
            "faults": self.faults,
            "statuses": {str(code): n for code, n in sorted(self.statuses.items())},
            "operations": dict(sorted(self.operations.items())),
        }


class Throttle:
    """Per-vault budgets (in memory: a restart forgets the window, as a new front end would)."""

    def __init__(self) -> None:
        self._budgets: dict[tuple[str, bool], Budget] = {}
        self._random = random.Random()

    def charge(self, vault: str, limits: VaultLimits, units: int, *, creates: bool) -> int | None:
        """Charge ``units``; None if they fit, else the ``Retry-After`` in whole seconds."""
        now = time.monotonic()
        budget = self._budgets.setdefault((vault, creates), Budget())
        limit = limits.create if creates else limits.other
        if budget.used(now, limits.window) + units <= limit:
            budget.events.append((now, units))
            return None
        if limits.retry_after is not None:
            return limits.retry_after
        return max(1, math.ceil(budget.seconds_until(units, limit, now, limits.window)))

    def reset(self, vault: str) -> None:
        """Forget a vault's windows (after its limits change)."""
        for creates in (False, True):
            self._budgets.pop((vault, creates), None)

    def fails(self, rate: float) -> bool:
        """Whether an injected fault strikes this request."""
        return rate > 0 and self._random.random() < rate
