from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ckey.config import AuthMode, SettingsError, load_settings


def test_defaults_are_the_local_stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert (settings.temporal_address, settings.temporal_ui_port, settings.api_port) == ("localhost:7233", 8233, 8080)
    assert settings.auth_mode is AuthMode.LOCAL
    # Production unless said otherwise: a deployment that forgets CKEY_SANDBOX never talks to the stand-ins.
    assert settings.sandbox is False
    assert settings.resolved_database_url == f"sqlite+aiosqlite:///{tmp_path / '.ckey' / 'ckey.db'}"
    assert settings.resolved_api_url == "http://127.0.0.1:8080"


def test_environment_and_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("CKEY_API_PORT=9090\nCKEY_TEMPORAL_ADDRESS=temporal:7233\n")
    monkeypatch.setenv("CKEY_API_PORT", "9191")
    settings = load_settings()
    assert (settings.api_port, settings.temporal_address) == (9191, "temporal:7233")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"CKEY_API_PORT": "http"}, "CKEY_API_PORT"),
        ({"CKEY_API_PORT": "70000"}, "CKEY_API_PORT"),
        ({"CKEY_AUTH_MODE": "ldap"}, "CKEY_AUTH_MODE"),
        ({"CKEY_AUTH_MODE": "oidc"}, "CKEY_OIDC_ISSUER"),
        ({"CKEY_DEP_KEYS": "exo-key-01,exo-key-02"}, "CKEY_DEP_KEYS: the value is not valid JSON"),
        ({"CKEY_DEP_KEYS": '{"exchange": "k1"}'}, r"CKEY_DEP_KEYS \(at exchange\): Input should be a valid list"),
        ({"CKEY_DEP_KEYS": '{"teams": []}'}, r"CKEY_DEP_KEYS \(at teams\): Input should be"),
    ],
)
def test_invalid_values_name_the_setting(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError, match=named):
        load_settings(_env_file=None)


def test_invalid_setting_stops_the_cli(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ckey.cli", "token", "--user", "u", "--role", "operator"],
        env={"CKEY_API_PORT": "not-a-port", "CKEY_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "CKEY_API_PORT" in done.stderr


def test_a_dep_keys_variable_that_is_not_json_stops_the_cli_with_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ckey.cli", "token", "--user", "u", "--role", "operator"],
        env={
            "CKEY_DEP_KEYS": "https://kv1.vault.azure.net/keys/k1",
            "CKEY_DATA_DIR": str(tmp_path),
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("invalid setting CKEY_DEP_KEYS: the value is not valid JSON"), done.stderr


def test_escalation_is_never_under_the_seeds_week_without_the_admin_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import timedelta

    assert load_settings(_env_file=None).exchange_escalate_after == timedelta(days=7)
    monkeypatch.setenv("CKEY_EXCHANGE_ESCALATE_AFTER", "PT1S")
    with pytest.raises(SettingsError, match=r"CKEY_EXCHANGE_ESCALATE_AFTER.*CKEY_ALLOW_SHORT_ESCALATION=true"):
        load_settings(_env_file=None)
    monkeypatch.setenv("CKEY_ALLOW_SHORT_ESCALATION", "true")
    assert load_settings(_env_file=None).exchange_escalate_after == timedelta(seconds=1)
    monkeypatch.setenv("CKEY_EXCHANGE_ESCALATE_AFTER", "PT0S")
    with pytest.raises(SettingsError, match="CKEY_EXCHANGE_ESCALATE_AFTER"):
        load_settings(_env_file=None)
    monkeypatch.setenv("CKEY_EXCHANGE_ESCALATE_AFTER", "P8D")
    monkeypatch.delenv("CKEY_ALLOW_SHORT_ESCALATION")
    assert load_settings(_env_file=None).exchange_escalate_after == timedelta(days=8)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CKEY_EXCHANGE_POLL_INTERVAL", "PT0.000001S"),
        ("CKEY_EXCHANGE_POLL_INTERVAL", "P2D"),
        ("CKEY_EXCHANGE_ASSIGN_BATCH_SIZE", "0"),
        ("CKEY_EXCHANGE_ASSIGN_BATCH_SIZE", "5000"),
    ],
)
def test_operation_timings_are_bounded(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings(_env_file=None)


def test_sandbox_mode_is_off_unless_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CKEY_SANDBOX", raising=False)
    assert not load_settings().sandbox
    monkeypatch.setenv("CKEY_SANDBOX", "true")
    assert load_settings().sandbox


@pytest.mark.parametrize(
    ("written", "seconds"), [("7d", 7 * 86400), ("P7D", 7 * 86400), ("1w1d", 8 * 86400), ("P1W1DT1H", 8 * 86400 + 3600)]
)
def test_duration_settings_take_the_short_form_and_iso_8601(
    monkeypatch: pytest.MonkeyPatch, written: str, seconds: int
) -> None:
    monkeypatch.setenv("CKEY_EXCHANGE_ESCALATE_AFTER", written)
    monkeypatch.setenv("CKEY_HEALTH_CHECK_INTERVAL", "12h")
    monkeypatch.setenv("CKEY_EXCHANGE_POLL_INTERVAL", "15m")
    settings = load_settings(_env_file=None)
    assert settings.exchange_escalate_after.total_seconds() == seconds
    assert settings.health_check_interval.total_seconds() == 12 * 3600
    assert settings.exchange_poll_interval.total_seconds() == 900
    monkeypatch.setenv("CKEY_EXCHANGE_POLL_INTERVAL", "00:15:00")
    assert load_settings(_env_file=None).exchange_poll_interval.total_seconds() == 900
    monkeypatch.setenv("CKEY_EXCHANGE_POLL_INTERVAL", "soon")
    with pytest.raises(SettingsError, match="CKEY_EXCHANGE_POLL_INTERVAL"):
        load_settings(_env_file=None)


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ('{"exchange": ["https://kv1.vault.azure.net/keys/k1", "not a uri"]}', "exchange: a key URI looks like"),
        ('{"sharepoint": ["https://kv1.example.com/keys/k1"]}', "sharepoint: the host of a key URI"),
        ('{"exchange": ["https://kv1.vault.azure.net/keys/k 1"]}', "exchange: a key URI looks like"),
    ],
)
def test_dep_keys_are_key_uris(monkeypatch: pytest.MonkeyPatch, value: str, named: str) -> None:
    monkeypatch.setenv("CKEY_DEP_KEYS", value)
    with pytest.raises(SettingsError, match=named):
        load_settings(_env_file=None)
