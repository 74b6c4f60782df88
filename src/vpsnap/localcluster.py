"""A local scale-out cluster in one command (``scripts/cluster``, docs/cluster.md): on this
machine, a PostgreSQL database and Redis, ``vpsnap migrate`` once, two ``vpsnap api`` behind
nginx, three agents ``hv-1..3`` with their own data dirs and demo VPSes on real qcow2 disks, and
two schedulers. The system tests (tests/system/test_cluster.py) and bench/scale_out.py drive
the same ``LocalCluster``: they kill, restart and inspect its processes one by one.

Every process runs in a session (process group) of its own, so one can be stopped or killed
with the ``qemu-img`` children it may have; a process that outlives a killed launcher gets
SIGTERM from the kernel (``PR_SET_PDEATHSIG``; not PostgreSQL, which runs as another user).
Stopping the cluster stops everything it started: nginx, then the vpsnap processes together,
then Redis and PostgreSQL, each with its clean-stop signal first and SIGKILL after a grace.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import asyncpg
import httpx

VPSNAP = str(Path(sys.executable).with_name("vpsnap"))
PG_BIN = Path("/usr/lib/postgresql/15/bin")
NGINX = "/usr/sbin/nginx"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/7"
# The redis db number is the cluster's own; PostgreSQL gets a database of its own.
DEFAULT_DATABASE = "vpsnap_cluster"
_PR_SET_PDEATHSIG = 1


class ClusterError(Exception):
    """The cluster could not be started (the message names the process and its log)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child, before exec: its own session, and SIGTERM when the launcher dies (a
    launcher killed with SIGKILL must not leave the cluster running)."""
    os.setsid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass
class Member:
    """One process of the cluster: how to start it, its log, and its process group."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: Path
    stop_signal: signal.Signals = signal.SIGTERM
    health_url: str | None = None
    """Its ``/readyz`` (an API's port, an agent's or scheduler's ``--health-port``)."""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        if self.alive:
            raise ClusterError(f"{self.name} runs already (pid {self.pid})")
        # Appended: a restarted process keeps its first life's log above its own.
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - our own argv, never a shell
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - the launcher starts no threads
        )

    def kill(self) -> None:
        """SIGKILL to the whole process group (``kill -9``), then reap it."""
        self.signal(signal.SIGKILL)
        self._reap(STOP_TIMEOUT_S)

    def signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """``stop_signal`` (SIGTERM, or what the program wants for a clean stop), SIGKILL to
        the group after ``timeout`` seconds."""
        if self.process is None:
            return
        self.signal(self.stop_signal)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
        self._reap(STOP_TIMEOUT_S)

    def _reap(self, timeout: float) -> None:
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
            # Children of the group (qemu-img) may outlive the leader by a moment.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_events(self, event: str) -> list[dict[str, Any]]:
        """The JSON log lines whose ``event`` is ``event``, oldest first."""
        found = []
        for line in self.log_text().splitlines():
            if f'"{event}"' not in line:
                continue
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and record.get("event") == event:
                    found.append(record)
        return found

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


def _as_postgres_user(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the ``postgres`` user."""
    if os.geteuid() != 0:
        return argv
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", *argv]


class OwnPostgres:
    """A PostgreSQL instance of the cluster's own (initdb in a temp dir, another port), so a
    test can stop and restart it under the running cluster. Fast and unsafe on power loss
    (``fsync=off``): it holds test data only."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        # Not under the launcher's (maybe 0700, root-owned) directory: the postgres user
        # must reach it.
        self.directory = Path(tempfile.mkdtemp(prefix="vpsnap-pg-"))
        self.data = self.directory / "data"
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.directory, user.pw_uid, user.pw_gid)
        self.member = Member(
            "postgres",
            _as_postgres_user(
                [
                    str(PG_BIN / "postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    # TCP only: a unix socket in a temp dir may not fit a unix address
                    # (107 bytes), and every member connects over 127.0.0.1.
                    "-k",
                    "",
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=300",
                ]
            ),
            dict(os.environ),
            self.directory / "postgres.log",
            self.directory,
            # SIGINT is PostgreSQL's "fast shutdown": clients are disconnected at once.
            stop_signal=signal.SIGINT,
        )

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        subprocess.run(  # noqa: S603
            _as_postgres_user(
                [
                    str(PG_BIN / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-sync",
                    "-E",
                    "UTF8",
                ]
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self, timeout: float = 30.0) -> None:
        self.member.start()
        _wait_for(
            lambda: _pg_ready(self.port), timeout, self.member, "PostgreSQL accepting connections"
        )

    def stop(self) -> None:
        self.member.stop()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def _pg_ready(port: int) -> bool:
    result = subprocess.run(  # noqa: S603
        [str(PG_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)],
        check=False,
        timeout=10,
    )
    return result.returncode == 0


def _redis_ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _redis_storage_usable(uri: str) -> bool:
    """Whether ``limits`` can use Redis here (its client library is installed)."""
    from limits.errors import ConfigurationError  # noqa: PLC0415
    from limits.storage import storage_from_string  # noqa: PLC0415

    try:
        storage_from_string(uri)
    except ConfigurationError:
        return False
    return True


def _wait_for(check: Callable[[], bool], timeout: float, member: Member | None, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if member is not None and member.process is not None and not member.alive:
            raise ClusterError(
                f"{member.name} exited ({member.process.returncode}) before {what}; "
                f"its log {member.log_path}:\n{member.tail()}"
            )
        with contextlib.suppress(Exception):
            if check():
                return
        if time.monotonic() > deadline:
            where = f"; its log {member.log_path}:\n{member.tail()}" if member else ""
            raise ClusterError(f"no {what} after {timeout:.0f} s{where}")
        time.sleep(0.05)


def _http_ok(url: str) -> bool:
    return httpx.get(url, timeout=2).status_code == 200


@dataclass(frozen=True)
class ClusterPlan:
    """What to start. ``postgres_url`` is an administrator's URL of an existing server (the
    cluster creates ``database`` there, dropping an older one); ``own_postgres`` starts an
    instance of its own instead. Likewise ``redis_url`` or ``own_redis``."""

    root: Path
    nodes: tuple[str, ...] = ("hv-1", "hv-2", "hv-3")
    apis: int = 2
    schedulers: int = 2
    port: int = 0
    postgres_url: str = DEFAULT_POSTGRES
    own_postgres: bool = False
    database: str = DEFAULT_DATABASE
    redis_url: str = DEFAULT_REDIS
    own_redis: bool = False
    vpses: tuple[str, ...] = ("web", "db")
    disk_mib: int = 256
    data_mib: int = 4
    settings: Mapping[str, str] = field(default_factory=dict)
    """Extra ``VPSNAP_*`` settings for every process (tests: short heartbeats, retention)."""


@dataclass
class LocalCluster:
    """The running cluster: ``url`` (the load balancer), ``api_urls``, ``keys`` and every
    process by name (``api-1``, ``agent-hv-1``, ``scheduler-1``, ``nginx``, …)."""

    plan: ClusterPlan
    members: dict[str, Member] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    api_ports: list[int] = field(default_factory=list)
    port: int = 0
    postgres: OwnPostgres | None = None
    redis: Member | None = None
    database_url: str = ""
    rate_limit_storage: str = "async+memory://"
    _started: list[Member] = field(default_factory=list)

    # -- addresses and inspection --------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.api_ports]

    @property
    def pg_dsn(self) -> str:
        """The cluster's database for asyncpg/psql (``database_url`` is SQLAlchemy's)."""
        return self.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)

    def agent(self, node: str) -> Member:
        return self.members[f"agent-{node}"]

    def data_dir(self, node: str) -> Path:
        return self.plan.root / node

    def disk(self, node: str, vps: str, index: int = 0) -> Path:
        suffix = f"-{index}" if index else ""
        return self.data_dir(node) / "disks" / f"{vps}{suffix}.qcow2"

    def query(self, sql: str, *args: object) -> list[asyncpg.Record]:
        """Run one statement on the cluster's database (tests and the benchmark look behind
        the API with it)."""

        async def run() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(self.pg_dsn, timeout=10)
            try:
                return list(await conn.fetch(sql, *args))
            finally:
                await conn.close()

        return asyncio.run(run())

    def active_scheduler(self) -> Member | None:
        """The scheduler whose ``/readyz`` says ``"role": "active"``."""
        for member in self.members.values():
            if not member.name.startswith("scheduler-") or not member.alive:
                continue
            assert member.health_url is not None
            with contextlib.suppress(httpx.HTTPError, ValueError):
                if httpx.get(member.health_url, timeout=5).json().get("role") == "active":
                    return member
        return None

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start everything and wait until it is ready; on failure stop what was started."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _env(self, name: str, extra: Mapping[str, str] = {}) -> dict[str, str]:
        # Inherited VPSNAP_* settings could point a process at another database: dropped.
        env = {k: v for k, v in os.environ.items() if not k.startswith("VPSNAP_")}
        data_dir = self.plan.root / name
        data_dir.mkdir(parents=True, exist_ok=True)
        env.update(
            VPSNAP_DATABASE_URL=self.database_url,
            VPSNAP_RATE_LIMIT_STORAGE=self.rate_limit_storage,
            VPSNAP_LOG_FORMAT="json",
            VPSNAP_DATA_DIR=str(data_dir),
        )
        env.update(self.plan.settings)
        env.update(extra)
        return env

    def _member(self, name: str, argv: list[str], **extra: str) -> Member:
        logs = self.plan.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        member = Member(name, argv, self._env(name, extra), logs / f"{name}.log", self.plan.root)
        self.members[name] = member
        return member

    def _with_health(self, name: str, argv: list[str]) -> Member:
        port = free_port()
        member = self._member(name, [*argv, "--health-port", str(port)])
        member.health_url = f"http://127.0.0.1:{port}/readyz"
        return member

    def _start(self) -> None:
        plan = self.plan
        plan.root.mkdir(parents=True, exist_ok=True)
        admin_url = plan.postgres_url
        if plan.own_postgres:
            self.postgres = OwnPostgres()
            self.postgres.init()
            self.postgres.start()
            self._started.append(self.postgres.member)
            admin_url = self.postgres.admin_url
        asyncio.run(_recreate_database(admin_url, plan.database))
        parts = urlsplit(admin_url)
        self.database_url = (
            f"postgresql+asyncpg://{parts.username or 'postgres'}@{parts.hostname}:"
            f"{parts.port or 5432}/{plan.database}"
        )
        self._start_redis()
        migrate = self._member("migrate", [VPSNAP, "migrate"])
        migrate.start()
        assert migrate.process is not None
        if migrate.process.wait(120) != 0:
            raise ClusterError(f"vpsnap migrate failed:\n{migrate.tail()}")
        migrate.stop()
        self.keys = asyncio.run(self._seed())

        self.port = plan.port or free_port()
        self.api_ports = [free_port() for _ in range(plan.apis)]
        for index, port in enumerate(self.api_ports, 1):
            api = self._member(
                f"api-{index}",
                [VPSNAP, "api", "--port", str(port)],
                # nginx is the only proxy whose X-Forwarded-* headers are believed.
                VPSNAP_FORWARDED_ALLOW_IPS="127.0.0.1",
            )
            api.health_url = f"http://127.0.0.1:{port}/readyz"
        for node in plan.nodes:
            self._with_health(
                f"agent-{node}",
                [VPSNAP, "agent", "--node", node, "--data-dir", str(self.data_dir(node))],
            )
        for index in range(1, plan.schedulers + 1):
            self._with_health(f"scheduler-{index}", [VPSNAP, "scheduler"])
        # Started together: each imports vpsnap (a second or two of CPU), in parallel.
        for name, member in self.members.items():
            if name.startswith(("api-", "agent-", "scheduler-")):
                member.start()
                self._started.append(member)
        for name, member in self.members.items():
            if member.health_url is not None:
                self.wait_ready(name)
        _wait_for(
            lambda: self.active_scheduler() is not None,
            START_TIMEOUT_S,
            self.members["scheduler-1"],
            "active scheduler",
        )
        self._start_nginx()

    def wait_ready(self, name: str, timeout: float = START_TIMEOUT_S) -> None:
        """Until the process's ``/readyz`` answers 200: an API reaches PostgreSQL, an agent
        holds its node's lock, a scheduler is active or standing by."""
        member = self.members[name]
        if member.health_url is not None:
            url = member.health_url
            _wait_for(lambda: _http_ok(url), timeout, member, f"200 from {url}")

    def restart(self, name: str) -> None:
        """Start a stopped or killed process again and wait until it is ready."""
        member = self.members[name]
        member.start()
        self.wait_ready(name)

    def _start_redis(self) -> None:
        plan = self.plan
        redis_url = plan.redis_url
        if plan.own_redis:
            port = free_port()
            self.redis = self._member(
                "redis",
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no"],
            )  # fmt: skip
            self.redis.start()
            self._started.append(self.redis)
            _wait_for(lambda: _redis_ping("127.0.0.1", port), 30, self.redis, "redis PONG")
            redis_url = f"redis://127.0.0.1:{port}/0"
        storage = "async+" + redis_url
        if _redis_storage_usable(storage):
            self.rate_limit_storage = storage

    def _start_nginx(self) -> None:
        conf = self.plan.root / "nginx"
        conf.mkdir(parents=True, exist_ok=True)
        servers = "\n".join(
            # One refused connection takes an API out for 2 s (then nginx tries it again).
            f"        server 127.0.0.1:{port} max_fails=1 fail_timeout=2s;"
            for port in self.api_ports
        )
        (conf / "nginx.conf").write_text(
            f"""
daemon off;
worker_processes 1;
pid {conf}/nginx.pid;
error_log {conf}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {conf}/body;
    proxy_temp_path {conf}/proxy;
    fastcgi_temp_path {conf}/fastcgi;
    uwsgi_temp_path {conf}/uwsgi;
    scgi_temp_path {conf}/scgi;
    upstream vpsnap_api {{
{servers}
        keepalive 32;
        # Below the APIs' own idle timeout (http_keepalive_seconds, 75 s): cli/processes.py.
        keepalive_timeout 60s;
    }}
    server {{
        listen 127.0.0.1:{self.port};
        location / {{
            proxy_pass http://vpsnap_api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            # A refused or broken connection goes to the other API. nginx never resends a
            # POST that reached an API (non_idempotent is off): the client retries it with
            # its Idempotency-Key instead, and vpsnap answers the retry once.
            proxy_next_upstream error timeout;
            proxy_connect_timeout 2s;
            # Long-polls wait up to 60 s (Prefer: wait=60).
            proxy_read_timeout 90s;
            proxy_buffering off;
        }}
    }}
}}
"""
        )
        nginx = self._member("nginx", [NGINX, "-c", str(conf / "nginx.conf"), "-p", str(conf)])
        nginx.env = dict(os.environ)
        nginx.stop_signal = signal.SIGQUIT  # nginx's graceful stop
        nginx.start()
        self._started.append(nginx)
        _wait_for(lambda: _http_ok(f"{self.url}/readyz"), 30, nginx, "/readyz through nginx")

    async def _seed(self) -> dict[str, str]:
        """Accounts ``demo`` and ``other``; on each node the plan's VPSes (``web-1``,
        ``db-1`` on hv-1, …) on real qcow2 disks in that node's data dir; three keys."""
        from vpsnap.domain.auth import Scope  # noqa: PLC0415

        runtime = self._admin_runtime()
        try:
            for account in ("demo", "other"):
                await runtime.services.accounts.ensure_account(account)
            for number, node in enumerate(self.plan.nodes, 1):
                for vps in self.plan.vpses:
                    await self._add_vps(runtime, node, f"{vps}-{number}", disks=1, slots=3)
                await self._add_vps(runtime, node, f"other-{number}", 1, 2, account="other")
            credentials = runtime.services.credentials
            return {
                "full": (await credentials.issue("demo", frozenset({Scope.WRITE_ALL}))).secret,
                "readonly": (await credentials.issue("demo", frozenset({Scope.READ_VM}))).secret,
                "other": (await credentials.issue("other", frozenset({Scope.WRITE_ALL}))).secret,
            }
        finally:
            await runtime.close()

    def _admin_runtime(self) -> Any:
        from vpsnap.runtime import Role, Runtime  # noqa: PLC0415
        from vpsnap.settings import Settings  # noqa: PLC0415

        settings = Settings(data_dir=self.plan.root / "admin", database_url=self.database_url)
        return Runtime.build(settings, role=Role.ADMIN)

    async def _add_vps(
        self,
        runtime: Any,
        node: str,
        name: str,
        disks: int,
        slots: int,
        *,
        account: str = "demo",
        data_mib: int | None = None,
    ) -> str:
        from vpsnap.runtime import qemu_img_for  # noqa: PLC0415
        from vpsnap.services.accounts import NewVps  # noqa: PLC0415

        qemu_img = qemu_img_for(runtime.settings)
        paths = []
        for index in range(disks):
            disk = self.disk(node, name, index)
            disk.parent.mkdir(parents=True, exist_ok=True)
            await qemu_img.create_image(disk, self.plan.disk_mib * 1024**2)
            # Some data, so that restores have something to roll back.
            await qemu_img.write_pattern(
                disk, 0, (self.plan.data_mib if data_mib is None else data_mib) * 1024**2, 0x5A
            )
            paths.append(str(disk))
        vps = await runtime.services.accounts.add_vps(
            NewVps(account_name=account, name=name, disks=tuple(paths), snapshot_slots=slots,
                   node=node)
        )  # fmt: skip
        return str(vps.id)

    def add_vps(self, node: str, name: str, *, disks: int = 1, slots: int = 10) -> str:
        """Register one more VPS of account ``demo`` on ``node`` (its disks made in the node's
        data dir); returns its id."""
        return self.add_vpses([(node, name)], disks=disks, slots=slots)[0]

    def add_vpses(
        self, placed: Sequence[tuple[str, str]], *, disks: int = 1, slots: int = 10
    ) -> list[str]:
        """``add_vps`` for each (node, name), in one go; their ids in the same order."""

        async def run() -> list[str]:
            runtime = self._admin_runtime()
            try:
                return [
                    await self._add_vps(runtime, node, name, disks, slots, data_mib=1)
                    for node, name in placed
                ]
            finally:
                await runtime.close()

        return asyncio.run(run())

    def stop(self) -> None:
        """Stop everything this cluster started, newest first (nginx, schedulers, agents,
        APIs, then Redis and PostgreSQL of its own)."""
        # nginx first (no new requests), then the vpsnap processes together (each has its
        # own grace), then the servers they need.
        tiers = [
            [m for m in self._started if m.name == "nginx"],
            [m for m in self._started if m.name not in ("nginx", "redis", "postgres")],
            [m for m in self._started if m.name == "redis"],
        ]
        for tier in tiers:
            _stop_together(tier)
        self._started.clear()
        if self.postgres is not None:
            self.postgres.remove()

    def heal(self) -> list[str]:
        """Start again every process of the cluster that is not running (after a test killed
        it); returns their names."""
        healed = []
        for member in self._started:
            if member.alive:
                continue
            if self.postgres is not None and member is self.postgres.member:
                self.postgres.start()
            else:
                self.restart(member.name)
            healed.append(member.name)
        return healed

    def running(self) -> list[Member]:
        """The processes started and not stopped by the cluster (dead ones included)."""
        return list(self._started)

    def summary(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "apis": self.api_urls,
            "database": self.database_url,
            "rateLimitStorage": self.rate_limit_storage,
            "keys": self.keys,
            "processes": {
                name: {"pid": member.pid, "log": str(member.log_path)}
                for name, member in self.members.items()
                if name != "migrate"
            },
        }


def _stop_together(members: Sequence[Member], timeout: float = STOP_TIMEOUT_S) -> None:
    for member in members:
        member.signal(member.stop_signal)
    deadline = time.monotonic() + timeout
    for member in members:
        with contextlib.suppress(Exception):
            member.stop(max(deadline - time.monotonic(), 0.1))


async def _recreate_database(admin_url: str, database: str) -> None:
    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        # FORCE: a cluster left running by an earlier launcher must not block this one.
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()


@contextlib.contextmanager
def running_cluster(plan: ClusterPlan) -> Iterator[LocalCluster]:
    cluster = LocalCluster(plan)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/cluster",
        description="A local vpsnap scale-out cluster: PostgreSQL, Redis, 2 APIs behind nginx, "
        "3 agents with demo VPSes, 2 schedulers. Ctrl-C stops everything it started.",
    )
    parser.add_argument("--port", type=int, default=8080, help="nginx's port (0: a free one)")
    parser.add_argument("--dir", type=Path, help="where data, disks and logs go (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir at the end")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="an administrator's URL")
    parser.add_argument("--own-postgres", action="store_true", help="initdb an own instance")
    parser.add_argument("--database", default=DEFAULT_DATABASE, help="recreated at each start")
    parser.add_argument("--redis", default=DEFAULT_REDIS, help="redis://host:port/db")
    parser.add_argument("--own-redis", action="store_true", help="start an own redis-server")
    parser.add_argument("--nodes", type=int, default=3, help="agents hv-1..hv-N")
    parser.add_argument("--apis", type=int, default=2)
    parser.add_argument("--schedulers", type=int, default=2)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    root = args.dir or Path(tempfile.mkdtemp(prefix="vpsnap-cluster-"))
    plan = ClusterPlan(
        root=root.resolve(),
        nodes=tuple(f"hv-{n}" for n in range(1, args.nodes + 1)),
        apis=args.apis,
        schedulers=args.schedulers,
        port=args.port,
        postgres_url=args.postgres,
        own_postgres=args.own_postgres,
        database=args.database,
        redis_url=args.redis,
        own_redis=args.own_redis,
    )
    stopping = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    # Ctrl-C reaches the whole foreground process group; the processes of the cluster sit in
    # sessions of their own, so only this launcher sees it and stops them in order.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    cluster = LocalCluster(plan)
    try:
        _say(f"starting the cluster in {root} …")
        cluster.start()
        (root / "cluster.json").write_text(json.dumps(cluster.summary(), indent=2) + "\n")
        _print_summary(cluster)
        reported: set[str] = set()
        while not stopping:
            time.sleep(0.5)
            for name, member in cluster.members.items():
                if member in cluster.running() and not member.alive and name not in reported:
                    reported.add(name)
                    _say(f"!! {name} exited; its log: {member.log_path}")
    except ClusterError as exc:
        sys.stderr.write(f"the cluster did not start: {exc}\n")
        return 1
    finally:
        _say("stopping the cluster …")
        cluster.stop()
        if args.dir is None and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _print_summary(cluster: LocalCluster) -> None:
    redis = (
        cluster.rate_limit_storage
        if cluster.rate_limit_storage != "async+memory://"
        else "not used: the installed `limits` has no Redis client (rate limits per API process)"
    )
    _say(
        f"""
vpsnap cluster ready
  URL (nginx)     {cluster.url}
  APIs            {", ".join(cluster.api_urls)}
  database        {cluster.database_url}
  rate limits     {redis}
  full key        {cluster.keys["full"]}
  read-only key   {cluster.keys["readonly"]}
  other account   {cluster.keys["other"]}
  logs            {cluster.plan.root / "logs"}

  export VPSNAP_URL={cluster.url} VPSNAP_API_KEY={cluster.keys["full"]}
  vpsnap vps list
Ctrl-C stops everything."""
    )


if __name__ == "__main__":
    raise SystemExit(main())
