"""The sandbox tenant's clock: simulated time, ``speed`` simulated seconds per real second, shiftable forward.

The clock is a pure function of real time, ``base_sim + (real_now - base_real) * speed``, persisted as its three
numbers, so it keeps running while the server is stopped (Microsoft's service does not stop when a laptop does) and a
restart continues where the function says. Changing the speed at start re-bases it at the current simulated time;
a shift moves ``base_sim`` forward. Simulated instants are Unix seconds (floats): at speed 1 and no shift they are the
real ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any


class SimClock:
    """Simulated time.

    Args:
        speed: simulated seconds per real second.
        base_real: the real instant at which the simulated time was ``base_sim``.
        base_sim: the simulated instant at ``base_real``.
        real: the real clock (tests may pass a fake).
    """

    def __init__(
        self,
        speed: float = 1.0,
        base_real: float | None = None,
        base_sim: float | None = None,
        real: Callable[[], float] = time.time,
    ) -> None:
        if speed <= 0:
            raise ValueError("the clock's speed must be positive")
        self._real = real
        self.speed = speed
        self.base_real = real() if base_real is None else base_real
        self.base_sim = self.base_real if base_sim is None else base_sim
        self.shifted = 0.0
        """Seconds moved forward by :meth:`shift` since the clock was first created (shown in the status)."""

    def now(self) -> float:
        """The simulated instant (Unix seconds)."""
        return self.base_sim + (self._real() - self.base_real) * self.speed

    def shift(self, seconds: float) -> float:
        """Move the clock forward by ``seconds``; the new simulated instant.

        Raises:
            ValueError: ``seconds`` is negative (time never runs backwards).
        """
        if seconds < 0:
            raise ValueError("the sandbox clock only moves forward")
        self.base_sim += seconds
        self.shifted += seconds
        return self.now()

    def set_speed(self, speed: float) -> None:
        """Run at ``speed`` from now on, continuing from the current simulated instant."""
        if speed <= 0:
            raise ValueError("the clock's speed must be positive")
        now_real = self._real()
        self.base_sim = self.base_sim + (now_real - self.base_real) * self.speed
        self.base_real = now_real
        self.speed = speed

    def real_seconds(self, simulated: float) -> float:
        """How many real seconds ``simulated`` seconds take at the current speed."""
        return simulated / self.speed

    def state(self) -> dict[str, Any]:
        """The numbers to persist."""
        return {"speed": self.speed, "base_real": self.base_real, "base_sim": self.base_sim, "shifted": self.shifted}

    @classmethod
    def from_state(cls, state: dict[str, Any], real: Callable[[], float] = time.time) -> SimClock:
        """The clock persisted by :meth:`state`."""
        clock = cls(float(state["speed"]), float(state["base_real"]), float(state["base_sim"]), real)
        clock.shifted = float(state.get("shifted", 0.0))
        return clock


def iso(instant: float | None) -> str | None:
    """An instant as ISO 8601 UTC with a ``Z`` (as Exchange's REST API and Graph write dates)."""
    if instant is None:
        return None
    return datetime.fromtimestamp(instant, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
