"""``ckey up`` scales the multi-workload assignment's and Windows 365's timings to the sandbox tenant's clock."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from ckey import stack
from ckey.config import load_settings
from ckey.stack import child_environment


def test_up_scales_the_assignment_window_to_the_sandbox_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = child_environment(stack.stack_settings(load_settings(data_dir=tmp_path, _env_file=None)), tmp_path)
    names = (
        "CKEY_M365_ASSIGNMENT_WINDOW",
        "CKEY_M365_ASSIGNMENT_DEADLINE",
        "CKEY_M365_ASSIGNMENT_POLL_INTERVAL",
        "CKEY_WINDOWS365_READY_DEADLINE",
        "CKEY_WINDOWS365_POLL_INTERVAL",
    )
    assert [env[n] for n in names] == ["PT24S", "PT26S", "PT1S", "PT6S", "PT1S"]
    for name in names:
        monkeypatch.setenv(name, env[name])
    child = load_settings(_env_file=None)
    assert (child.m365_assignment_window, child.m365_assignment_deadline) == (
        timedelta(seconds=24),
        timedelta(seconds=26),
    )
    for name in names:
        monkeypatch.delenv(name)

    # The operator's window is kept, and its deadline with it (scaled alone, it would come before the window).
    monkeypatch.setenv("CKEY_M365_ASSIGNMENT_WINDOW", "PT2H")
    chosen = child_environment(stack.stack_settings(load_settings(data_dir=tmp_path, _env_file=None)), tmp_path)
    assert chosen["CKEY_M365_ASSIGNMENT_WINDOW"] == "PT2H" and "CKEY_M365_ASSIGNMENT_DEADLINE" not in chosen
    assert chosen["CKEY_WINDOWS365_POLL_INTERVAL"] == "PT1S"
    monkeypatch.delenv("CKEY_M365_ASSIGNMENT_WINDOW")
    assert stack.m365_demo_timings(load_settings(data_dir=tmp_path, sandbox=False, _env_file=None)) == {}


def test_up_scales_the_sharepoint_and_key_roll_timings_too(tmp_path: Path) -> None:
    env = child_environment(stack.stack_settings(load_settings(data_dir=tmp_path, _env_file=None)), tmp_path)
    scaled = {
        "CKEY_WINDOWS365_READY_LIMIT": "PT72S",
        "CKEY_SPO_POLL_INTERVAL": "PT1S",
        "CKEY_SPO_STALL_DEADLINE": "PT24S",
        "CKEY_SPO_FOLLOW_LIMIT": "PT720S",
        "CKEY_KEY_ROLL_POLL_INTERVAL": "PT1S",
        "CKEY_KEY_ROLL_SPO_STALL_AFTER": "PT24S",
        "CKEY_KEY_ROLL_M365_WINDOW": "PT24S",
    }
    assert {name: env.get(name) for name in scaled} == scaled
