"""The sandbox clock and the named durations."""

from __future__ import annotations

import pytest

from sandbox.m365.clock import SimClock, iso
from sandbox.m365.durations import DAY, GB, HOUR, Durations, spread


class FakeTime:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_speed_shift_and_rebase() -> None:
    real = FakeTime()
    clock = SimClock(3600, real=real)
    start = clock.now()
    real.now += 2
    assert clock.now() == start + 2 * HOUR  # an hour a second
    clock.shift(DAY)
    assert clock.now() == start + 2 * HOUR + DAY and clock.shifted == DAY
    clock.set_speed(1.0)  # continues from where it is, at the new speed
    real.now += 10
    assert clock.now() == start + 2 * HOUR + DAY + 10
    restored = SimClock.from_state(clock.state(), real=real)
    assert restored.now() == clock.now() and restored.shifted == DAY
    with pytest.raises(ValueError):
        clock.shift(-1)
    assert iso(0) == "1970-01-01T00:00:00.000Z"


def test_durations_follow_the_seed() -> None:
    d = Durations()
    assert d.escalation_after == 7 * DAY
    assert (d.intune_ready_min, d.intune_ready_max) == (3 * HOUR, 4 * HOUR)
    assert d.multi_workload_effect_max == 24 * HOUR
    # First-time moves take hours for small mailboxes and days for large ones; re-encryption is much faster.
    assert 2 * HOUR <= d.first_move(GB // 2) < 3 * HOUR
    assert d.first_move(50 * GB) > 2 * DAY
    assert d.reencrypt(50 * GB) < d.first_move(50 * GB) / 10
    assert spread(1, 2, "x") == spread(1, 2, "x") and 1 <= spread(1, 2, "y") < 2
