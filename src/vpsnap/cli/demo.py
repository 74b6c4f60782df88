"""Demo data for ``vpsnap serve --demo``: two accounts, four VPSes on real qcow2 disks, keys,
and ``demo-web`` as a running VM that vpsnap manages (when qemu-system-x86_64 is installed).

Idempotent: a second start reuses the accounts, VPSes, disks and keys that exist, and finds
demo-web's VM again if it still runs.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from vpsnap.domain.auth import Principal, Scope
from vpsnap.domain.errors import DomainError, Unauthorized
from vpsnap.domain.model import (
    Billing,
    JobStatus,
    LaunchSpec,
    OperatingSystem,
    PowerAction,
    PowerState,
    Resources,
)
from vpsnap.drivers.qemu_img import QemuImg
from vpsnap.runtime import Runtime
from vpsnap.services.accounts import NewVps

DEMO_DISK_BYTES = 2 * 1024**3
DEMO_DATA_BYTES = 16 * 1024**2
DEMO_PATTERN = 0x5A
# The first thing a new user snapshots is a live VM. It needs no OS (it sits in the firmware),
# so it needs little memory either.
DEMO_VM = LaunchSpec(memory_mib=64, cpus=1)
DEMO_VM_NAME = "demo-web"

_log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class DemoVps:
    account: str
    name: str
    slots: int
    primary_ip: str


DEMO_VPSES = (
    DemoVps("demo", "demo-web", 3, "203.0.113.10"),
    DemoVps("demo", "demo-db", 1, "203.0.113.11"),
    DemoVps("demo", "demo-nosnap", 0, "203.0.113.12"),
    DemoVps("other", "other-web", 2, "198.51.100.20"),
)


async def _ensure_disk(qemu_img: QemuImg, path: Path, disk_bytes: int, data_bytes: int) -> None:
    if path.exists():  # noqa: ASYNC240 - one stat of a local file, at start-up only
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    await qemu_img.create_image(path, disk_bytes)
    # Some data, so that snapshots and restores have something to keep and roll back.
    await qemu_img.write_pattern(path, 0, data_bytes, DEMO_PATTERN)


async def _key_still_valid(runtime: Runtime, secret: object) -> bool:
    if not isinstance(secret, str):
        return False
    try:
        await runtime.services.credentials.authenticate(secret)
    except Unauthorized:
        return False
    return True


async def seed_demo(
    runtime: Runtime,
    qemu_img: QemuImg,
    *,
    disk_bytes: int = DEMO_DISK_BYTES,
    data_bytes: int = DEMO_DATA_BYTES,
) -> dict[str, str]:
    """Create what is missing of the demo; returns the tokens written to demo-tokens.json."""
    accounts = runtime.services.accounts
    for name in ("demo", "other"):
        await accounts.ensure_account(name)
    qemu_system = shutil.which(runtime.settings.qemu_system) if runtime.settings.demo_vm else None
    if runtime.settings.demo_vm and qemu_system is None:
        _log.warning(
            "demo_vm_unavailable",
            vps=DEMO_VM_NAME,
            reason=f"{runtime.settings.qemu_system} is not installed (apt install "
            "qemu-system-x86); the VPS is registered with its disk only",
        )
    for item in DEMO_VPSES:
        disk = (runtime.settings.data_dir / "disks" / f"{item.name}.qcow2").resolve()
        await _ensure_disk(qemu_img, disk, disk_bytes, data_bytes)
        if await accounts.find_vps(item.account, item.name) is None:
            await accounts.add_vps(
                NewVps(
                    account_name=item.account,
                    name=item.name,
                    disks=(str(disk),),
                    snapshot_slots=item.slots,
                    node=runtime.settings.node,
                    primary_ip=item.primary_ip,
                    operating_system=OperatingSystem("Debian 12", "linux", "12", "bookworm"),
                    resources=Resources(cpu_cores=1, memory_gb=1.0, storage_gb=2.0),
                    billing=Billing("5.00", "EUR", "monthly"),
                    machine=DEMO_VM if item.name == DEMO_VM_NAME and qemu_system else None,
                )
            )
    tokens_path = runtime.settings.data_dir / "demo-tokens.json"
    tokens: dict[str, object] = {}
    if tokens_path.exists():
        tokens = json.loads(tokens_path.read_text())
    wanted = {
        "full": ("demo", frozenset({Scope.WRITE_ALL})),
        "readonly": ("demo", frozenset({Scope.READ_VM})),
        "other": ("other", frozenset({Scope.WRITE_ALL})),
    }
    result: dict[str, str] = {}
    for label, (account, scopes) in wanted.items():
        secret = tokens.get(label)
        if isinstance(secret, str) and await _key_still_valid(runtime, secret):
            result[label] = secret
        else:
            result[label] = (await runtime.services.credentials.issue(account, scopes)).secret
    tokens_path.write_text(json.dumps(result, indent=2) + "\n")
    tokens_path.chmod(0o600)
    return result


async def start_demo_vm(runtime: Runtime, *, timeout: float = 60.0) -> PowerState | None:
    """Start demo-web's VM unless it runs already (a restarted demo finds it again).

    The start is a ``vps.power`` job like any other, so it runs after whatever the VPS's
    queue holds: a restore re-queued after a crash finishes first (and ends the VM where the
    user had it) instead of racing this start for the VM's files. Needs a running worker
    (``Runtime.embedded``); waits up to ``timeout`` seconds. Returns the VM's power state, or
    None when demo-web has no VM (no qemu-system at seeding time).
    """
    vps = await runtime.services.accounts.find_vps("demo", DEMO_VM_NAME)
    if vps is None or vps.machine is None:
        return None
    principal = Principal(vps.account_id, frozenset({Scope.WRITE_ALL}))
    jobs = runtime.services.jobs
    try:
        # Idempotent: a running VM is left as it is.
        job = await runtime.services.power.request(principal, vps.id, PowerAction.START)
        deadline = time.monotonic() + timeout
        while not job.status.is_terminal and time.monotonic() < deadline:
            job = await jobs.wait(principal, job.id, deadline - time.monotonic())
    except DomainError as exc:
        _log.warning("demo_vm_not_started", vps=DEMO_VM_NAME, error=exc.detail)
        return await runtime.hypervisor().power_state(vps)
    if job.status is not JobStatus.COMPLETED or job.result is None:
        # The demo is still useful without it: demo-web then snapshots offline.
        detail = (job.error or {}).get("detail", f"the start job is {job.status.value}")
        _log.warning("demo_vm_not_started", vps=DEMO_VM_NAME, job_id=job.id, error=detail)
        return await runtime.hypervisor().power_state(vps)
    _log.info(
        "demo_vm_ready",
        vps=DEMO_VM_NAME,
        power_state_before=job.result["powerStateBefore"],
        power_state_after=job.result["powerStateAfter"],
    )
    return PowerState(job.result["powerStateAfter"])
