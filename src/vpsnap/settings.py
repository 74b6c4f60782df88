"""Runtime settings: CLI flags, then ``VPSNAP_*`` environment variables, then the TOML
configuration file (``load_settings``), then the defaults below."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any

from pydantic import ByteSize, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from vpsnap.domain.errors import ConfigurationError


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VPSNAP_", extra="ignore")

    data_dir: Path = Path("./var")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy async URL; default: SQLite (WAL) at <data_dir>/vpsnap.db",
    )
    sqlite_busy_timeout_seconds: float = Field(
        # Below the SDK's and CLI's 30 s request timeout, so that a client gets the 503 and its
        # Retry-After instead of giving up on an answer that is still coming.
        default=15.0,
        gt=0,
        le=600,
        description="SQLite: how long a write waits for another writer's lock before it gives "
        "up (the API then answers 503 database_unavailable)",
    )
    host: str = "127.0.0.1"
    port: int = 8080
    http_keepalive_seconds: int = Field(
        # Longer than the idle timeout of every client pool in front (nginx's upstream
        # keepalive_timeout 60 s, httpx 5 s): cli/processes.http_server says why.
        default=75,
        ge=1,
        le=3600,
        description="Seconds an idle HTTP keep-alive connection stays open; keep it above the "
        "idle timeout of the proxy's upstream pool (nginx: keepalive_timeout, 60 s)",
    )
    public_base_url: str | None = Field(
        default=None,
        description="Base URL used in problem `type` links; default: the request's own base URL",
    )
    node: str = Field(default="local", description="The hypervisor node this process serves")
    health_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="`vpsnap agent` and `vpsnap scheduler`: serve /healthz and /readyz on "
        "host:this port (default: none)",
    )

    retention_hours: float = 24.0

    rate_limit_per_key: str = "600/minute"
    rate_limit_snapshot_mutations_per_vps: str = "30/minute"
    rate_limit_storage: str = Field(
        default="async+memory://",
        description="a `limits` storage URI: async+memory:// (this process) or "
        "async+redis://HOST:6379/DB, shared by every API process (docs/scale-out.md)",
    )
    rate_limit_storage_timeout_seconds: float = Field(
        default=0.25,
        gt=0,
        description="Longest a call on a shared rate-limit storage (Redis) may take; past it the "
        "request is counted in this process's memory",
    )
    rate_limit_storage_retry_seconds: float = Field(
        default=5.0,
        gt=0,
        description="After a failure of the shared storage, how long to count in memory before "
        "trying it again",
    )

    max_body_bytes: int = 64 * 1024
    auth_cache_seconds: float = Field(
        default=5.0, description="How long a checked API key is trusted without a lookup"
    )

    job_lease_seconds: float = 30.0
    worker_concurrency: int = Field(
        default=4, description="Quick jobs run at once (snapshots, deletes, disk restores)"
    )
    worker_slow_concurrency: int = Field(
        default=2,
        description="Slow jobs run at once (graceful shutdowns, snapshots and restores with RAM)",
    )
    shutdown_grace_seconds: float = Field(
        default=30.0,
        description="On SIGTERM running jobs get this long to finish, then go back to the queue",
    )
    max_jobs_per_vps: int = Field(
        default=20,
        description="Unfinished jobs one VPS may have; more answer 429 vps_queue_full",
    )
    job_max_attempts: int = Field(
        default=5, description="A job whose worker died this often is failed, not re-run"
    )
    job_retention_days: int = 7

    node_heartbeat_seconds: float = Field(
        default=5.0, description="How often an agent reports that its node is alive"
    )
    node_offline_after_seconds: float = Field(
        default=30.0,
        description="A node not heard from this long is offline: powerState unknown, no new work",
    )
    power_refresh_seconds: float = Field(
        default=10.0, description="How often an agent reads and publishes its VMs' power states"
    )
    queued_job_timeout_seconds: float = Field(
        default=900.0,
        description="A job not started this long while its node is offline fails",
    )
    scheduler_standby_poll_seconds: float = Field(
        default=2.0, description="How often a standby scheduler tries to become the active one"
    )
    scheduler_interval_seconds: float = Field(
        default=30.0, description="How often expiry, schedules and reconciliation run"
    )
    reconcile_interval_seconds: float = 300.0
    reconcile_start_delay_seconds: float = Field(
        default=10.0,
        ge=0,
        description="How long after start the first reconciliation pass waits, so that the "
        "API serves first (the first pass reads every disk of the node)",
    )
    node_scan_start_delay_seconds: float = Field(
        default=3.0,
        ge=0,
        description="How long after start the node's first power-state and data-store passes "
        "wait, so that the API serves first (each reads every VPS of the node)",
    )
    scheduler_busy_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Share of the time a long scheduler run (a pass over every VPS) may work; "
        "it pauses between pages for the rest, so API requests are not kept waiting (1: no "
        "pauses)",
    )
    capacity_file: Path | None = Field(
        default=None, description="Operator capacity configuration (TOML): plans, slot prices"
    )
    billing_webhook_url: str | None = Field(
        default=None, description="Called (HMAC-signed POST) before a capacity change commits"
    )
    billing_webhook_secret: str | None = None
    billing_webhook_timeout_seconds: float = 10.0

    qemu_img: str = "qemu-img"
    qemu_io: str = "qemu-io"
    qemu_img_timeout_seconds: float = 120.0
    qemu_system: str = Field(
        default="qemu-system-x86_64", description="Runs the VMs vpsnap starts itself (managed)"
    )
    qmp_timeout_seconds: float = Field(
        default=10.0, description="Connecting to a VM's QMP monitor and each ordinary command"
    )
    power_state_timeout_seconds: float = Field(
        default=1.0, description="A power-state read; past it the API reports `unknown`"
    )
    guest_agent_timeout_seconds: float = Field(
        default=3.0, description="Each guest-agent exchange; no answer: crash-consistent snapshot"
    )
    # -- real guests (issue 14) --
    guest_freeze_timeout_seconds: float = Field(
        default=10.0,
        description="The guest-agent freeze itself (the guest writes out its dirty data first)",
    )
    guest_agent_recovery_seconds: float = Field(
        default=30.0,
        description="How long vpsnap keeps trying to thaw a guest whose agent stopped answering",
    )
    demo_guest: bool = Field(
        default=False,
        description="`serve --demo` runs demo-web on the real Debian guest (scripts/guest-image)",
    )
    demo_guest_image: Path | None = Field(
        default=None,
        description="The guest qcow2 for demo_guest; scripts/demo builds it and sets this",
    )
    # -- end real guests --
    shutdown_timeout_seconds: float = Field(
        default=60.0, description="How long a graceful shutdown may take before `use stop`"
    )
    vm_snapshot_timeout_seconds: float = Field(
        default=600.0, description="Saving or loading a running VM's RAM state"
    )
    demo_vm: bool = Field(
        default=True,
        description="`serve --demo` runs demo-web as a managed VM (when qemu-system exists)",
    )

    log_level: str = "info"
    log_format: str = Field(
        default="auto", description="`json`, `console`, or `auto`: console on a terminal"
    )

    # -- dashboard sessions (issue 11) --
    session_idle_timeout_seconds: float = Field(
        default=30 * 60.0, gt=0, description="A dashboard session ends this long after its last use"
    )
    session_lifetime_seconds: float = Field(
        default=12 * 3600.0, gt=0, description="A dashboard session ends this long after sign-in"
    )
    login_failures_per_ip: str = Field(
        default="30/15minutes", description="Failed sign-ins allowed per client IP (`limits` rate)"
    )
    # argon2id cost of dashboard passwords; the defaults are argon2-cffi's (RFC 9106's second
    # recommended profile). A hash made with other costs is upgraded at the next sign-in.
    password_hash_time_cost: int = Field(default=3, ge=1)
    password_hash_memory_kib: int = Field(default=64 * 1024, ge=8 * 1024)
    password_hash_parallelism: int = Field(default=4, ge=1)
    login_failures_per_account: str = Field(
        default="5/15minutes", description="Failed sign-ins allowed per email address"
    )

    # -- the edge: who is calling, from where, for which host (issue 9, kinds 7 and 13) -----
    rate_limit_per_ip: str = Field(
        default="600/minute",
        description="Requests without a valid credential, per client address (docs/api.md)",
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host names served (comma-separated; `*.example.com`, `*`); default: "
        "127.0.0.1, localhost, ::1, the listen host and the public base URL's host",
    )
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Proxy addresses or networks whose X-Forwarded-For/-Proto are believed "
        "(comma-separated); default none",
    )

    def with_proxy_headers(self, enabled: bool | None) -> Settings:
        """These settings with ``vpsnap serve --proxy-headers/--no-proxy-headers`` applied, as
        uvicorn's flags mean them: on without a list trusts a proxy on this host (127.0.0.1);
        off trusts nobody, whatever the list says; None changes nothing."""
        if enabled is None:
            return self
        if not enabled:
            return self.model_copy(update={"forwarded_allow_ips": []})
        return self.model_copy(
            update={"forwarded_allow_ips": self.forwarded_allow_ips or ["127.0.0.1"]}
        )

    @field_validator("allowed_hosts", "forwarded_allow_ips", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    # -- operations (issue 12): audit, webhooks, disk space (docs/operations.md) -------------
    audit_retention_days: int = Field(
        default=400, ge=1, description="Audit events are kept this long (independent of jobs)"
    )
    webhook_allowed_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Networks webhooks may reach although not public (comma-separated CIDRs, "
        "e.g. 10.0.0.0/8); default none",
    )
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    webhook_delivery_interval_seconds: float = Field(
        default=2.0, gt=0, description="How often the outbox is checked for due messages"
    )
    webhook_retry_base_seconds: float = Field(default=5.0, gt=0)
    webhook_retry_max_seconds: float = Field(default=3600.0, gt=0)
    webhook_retry_window_hours: float = Field(
        default=24.0, gt=0, description="A message undelivered this long is given up"
    )
    webhook_retention_days: int = Field(default=30, ge=1)
    storage_free_floor: ByteSize = Field(
        default=ByteSize(1024**3),
        description="Free space a snapshot must leave on the disks' filesystem (1GiB, 500MB…)",
    )
    storage_snapshot_margin: ByteSize = Field(
        default=ByteSize(256 * 1024**2),
        description="Added to the worst-case size of a snapshot (RAM for one with memory)",
    )
    data_store_interval_seconds: float = Field(
        default=60.0, gt=0, description="How often a node publishes its disks' free space"
    )

    @field_validator("webhook_allowed_networks", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags (init), then the environment, then the configuration file (if one is being
        loaded by ``load_settings``): the first that sets a value wins."""
        sources = [init_settings, env_settings, dotenv_settings, file_secret_settings]
        config_file = _config_file.get()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'vpsnap.db').resolve()}"


# -- the configuration file (issue 12) ------------------------------------------------------------

DEFAULT_CONFIG_FILE = Path("/etc/vpsnap/vpsnap.toml")
CONFIG_ENV = "VPSNAP_SETTINGS_FILE"
_config_file: ContextVar[Path | None] = ContextVar("vpsnap_config_file", default=None)


class ConfigFileError(ConfigurationError):
    """The configuration file is missing, not TOML, or sets something wrong (the CLI prints it
    and exits, as for every ``ConfigurationError``)."""


def config_file(explicit: Path | None = None) -> Path | None:
    """The file to read: ``--config``, else ``VPSNAP_SETTINGS_FILE``, else
    ``/etc/vpsnap/vpsnap.toml`` when it exists. A file named explicitly must exist.
    (``VPSNAP_CONFIG`` is the client command's own file of contexts, docs/cli.md.)"""
    named = explicit or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    if named is not None:
        if not named.is_file():
            raise ConfigFileError(f"{named}: the configuration file does not exist")
        return named
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def _check_keys(path: Path) -> None:
    """Unknown keys are errors: a typo must never silently leave a default in place."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigFileError(
            f"{path}: cannot read the configuration file: {exc.strerror}"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{path}: not valid TOML: {exc}") from exc
    known = Settings.model_fields
    for key in data:
        if key not in known:
            hint = " (keys are the setting names without VPSNAP_, in lower case)"
            raise ConfigFileError(f"{path}: {key}: unknown setting{hint}")


@contextmanager
def _reading(path: Path | None) -> Iterator[None]:
    token = _config_file.set(path)
    try:
        yield
    finally:
        _config_file.reset(token)


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Settings from the flags given (``overrides``; None values are not given), the
    environment and the configuration file (``config_file``), in that order of precedence.

    Raises ``ConfigFileError`` for a missing or unreadable file, an unknown key, or a value
    that does not validate (naming the file and the key).
    """
    path = config_file(config)
    if path is not None:
        _check_keys(path)
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        with _reading(path):
            return Settings(**given)
    except ValidationError as exc:
        where = f"{path} or the environment" if path is not None else "the environment"
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        raise ConfigFileError(f"{where}: {key}: {first['msg']}") from None
