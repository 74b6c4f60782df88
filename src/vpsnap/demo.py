"""Demo data for ``vpsnap serve --demo``: two accounts, four VPSes on real qcow2 disks, keys,
and ``demo-web`` as a running VM that vpsnap manages (when qemu-system-x86_64 is installed).

By default demo-web's VM has no operating system (it starts in a second and sits in the
firmware). With ``VPSNAP_DEMO_GUEST=true`` (``./scripts/demo`` builds the image and sets
``VPSNAP_DEMO_GUEST_IMAGE``) it runs the real Debian guest of ``scripts/guest-image`` with its
guest agent, so a quiesced snapshot of demo-web is ``filesystem``-consistent (docs/vms.md).

Idempotent: a second start reuses the accounts, VPSes, disks and keys that exist, and finds
demo-web's VM again if it still runs. ``reset_demo`` (``vpsnap admin demo reset``) brings the
demo VPSes back to their first state: no snapshots, no schedules, their first slot counts.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from vpsnap.demo_guest import GuestImage, kvm_unusable_reason
from vpsnap.domain.auth import Principal, Scope
from vpsnap.domain.errors import Conflict, DomainError, Unauthorized
from vpsnap.domain.model import (
    Billing,
    Job,
    JobStatus,
    LaunchSpec,
    OperatingSystem,
    PowerAction,
    PowerState,
    Resources,
    SnapshotStatus,
    Vps,
)
from vpsnap.domain.users import Role
from vpsnap.drivers.qemu_img import QemuImg
from vpsnap.private_files import private_dir, private_file, write_private
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


# Dashboard users (issue 11); their passwords are generated and kept in demo-tokens.json.
DEMO_USERS = (
    ("demo@example.com", "demo", Role.OWNER),
    ("viewer@example.com", "demo", Role.VIEWER),
    ("other@example.com", "other", Role.OWNER),
)

DEMO_VPSES = (
    DemoVps("demo", "demo-web", 3, "203.0.113.10"),
    DemoVps("demo", "demo-db", 1, "203.0.113.11"),
    DemoVps("demo", "demo-nosnap", 0, "203.0.113.12"),
    DemoVps("other", "other-web", 2, "198.51.100.20"),
)


async def _ensure_disk(qemu_img: QemuImg, path: Path, disk_bytes: int, data_bytes: int) -> None:
    # A tenant's disk: 0600 in a 0700 directory. qemu-img keeps the mode of a file that exists,
    # so the file is made here first (private_files.py).
    existed = path.exists()  # noqa: ASYNC240 - one stat of a local file, at start-up only
    private_dir(path.parent)
    private_file(path)
    if existed:
        return
    await qemu_img.create_image(path, disk_bytes)
    # Some data, so that snapshots and restores have something to keep and roll back.
    await qemu_img.write_pattern(path, 0, data_bytes, DEMO_PATTERN)


async def _guest_machine(runtime: Runtime, disk: Path) -> LaunchSpec:
    """demo-web on the real guest: its disk (and boot files) copied into the data dir once, so
    the demo does not depend on the build cache; KVM when it can run the kernel, else TCG."""
    source = runtime.settings.demo_guest_image
    if source is None:
        raise SystemExit(
            "VPSNAP_DEMO_GUEST=true needs VPSNAP_DEMO_GUEST_IMAGE, the qcow2 that "
            "scripts/guest-image prints (./scripts/demo sets both)"
        )
    image = await asyncio.to_thread(GuestImage.at, source)
    if not disk.exists():  # noqa: ASYNC240 - one stat of a local file, at start-up only
        private_dir(disk.parent)
        for src, suffix in ((image.kernel, ".vmlinuz"), (image.initrd, ".initrd")):
            await asyncio.to_thread(shutil.copyfile, src, disk.with_suffix(suffix))
        disk.with_suffix(".cmdline").write_text(image.cmdline + "\n")
        # Last: the disk's presence says the copy is complete. A tenant's disk: 0600.
        partial = disk.with_suffix(".tmp")
        private_file(partial)
        await asyncio.to_thread(shutil.copyfile, image.disk, partial)
        partial.rename(disk)
    copy = await asyncio.to_thread(GuestImage.at, disk)
    reason = await asyncio.to_thread(kvm_unusable_reason, copy, runtime.settings.qemu_system)
    if reason is not None:
        _log.info("demo_guest_without_kvm", vps=DEMO_VM_NAME, reason=reason)
    console = runtime.settings.data_dir.resolve() / f"{DEMO_VM_NAME}-console.log"
    return copy.launch_spec(console, kvm=reason is None)


async def _key_still_valid(runtime: Runtime, secret: object) -> bool:
    if not isinstance(secret, str):
        return False
    try:
        await runtime.services.credentials.authenticate(secret)
    except Unauthorized:
        return False
    return True


async def _seed_users(runtime: Runtime, known: object) -> dict[str, str]:
    """The demo's dashboard users with a password each: a password from the last start is
    kept while it still works, anything else gets a new one."""
    users = runtime.services.users
    known_passwords = known if isinstance(known, dict) else {}
    existing = {row.user.email for row in await users.list()}
    passwords: dict[str, str] = {}
    for email, account, role in DEMO_USERS:
        password = known_passwords.get(email)
        if email in existing:
            if not (isinstance(password, str) and await users.password_matches(email, password)):
                password = secrets.token_urlsafe(12)
                await users.set_password(email, password)
        else:
            password = secrets.token_urlsafe(12)
            await users.create(account, email, role, password)
        assert isinstance(password, str)
        passwords[email] = password
    return passwords


async def seed_demo(
    runtime: Runtime,
    qemu_img: QemuImg,
    *,
    disk_bytes: int = DEMO_DISK_BYTES,
    data_bytes: int = DEMO_DATA_BYTES,
) -> dict[str, Any]:
    """Create what is missing of the demo; returns what is written to demo-tokens.json: the
    keys by label (``full``, ``readonly``, ``other``) and ``users``, email → password."""
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
    guest: LaunchSpec | None = None
    for item in DEMO_VPSES:
        disk = (runtime.settings.data_dir / "disks" / f"{item.name}.qcow2").resolve()
        if item.name == DEMO_VM_NAME and runtime.settings.demo_guest and qemu_system:
            guest = await _guest_machine(runtime, disk)
        else:
            await _ensure_disk(qemu_img, disk, disk_bytes, data_bytes)
        existing = await accounts.find_vps(item.account, item.name)
        if (
            existing is not None
            and guest is not None
            and item.name == DEMO_VM_NAME
            and existing.machine != guest
        ):
            _log.warning(
                "demo_guest_not_used",
                vps=DEMO_VM_NAME,
                reason="this data dir was seeded without the guest; start the guest demo "
                "on a fresh data dir (./scripts/demo uses var/demo-guest)",
            )
        if existing is None:
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
                    machine=(guest or DEMO_VM)
                    if item.name == DEMO_VM_NAME and qemu_system
                    else None,
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
    result: dict[str, Any] = {}
    for label, (account, scopes) in wanted.items():
        secret = tokens.get(label)
        if isinstance(secret, str) and await _key_still_valid(runtime, secret):
            result[label] = secret
        else:
            result[label] = (await runtime.services.credentials.issue(account, scopes)).secret
    result["users"] = await _seed_users(runtime, tokens.get("users"))
    write_private(tokens_path, (json.dumps(result, indent=2) + "\n").encode())
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
    if runtime.settings.demo_guest and vps.machine != DEMO_VM:
        _log.info(
            "demo_guest_booting",
            vps=DEMO_VM_NAME,
            console=str(runtime.settings.data_dir.resolve() / f"{DEMO_VM_NAME}-console.log"),
            hint="quiesced snapshots are filesystem-consistent once the console shows "
            "VPSNAP-GUEST-READY (seconds with KVM, about a minute under TCG)",
        )
    return PowerState(job.result["powerStateAfter"])


@dataclass(frozen=True, slots=True)
class DemoReset:
    """What ``reset_demo`` did: the delete jobs it queued (they remove the snapshots from the
    disks), and the VPSes whose slots or schedule it put back."""

    deletions: tuple[Job, ...]
    slots_restored: tuple[str, ...]
    schedules_removed: tuple[str, ...]


async def reset_demo(runtime: Runtime) -> DemoReset:
    """Bring the demo VPSes back to their first state: queue the deletion of every snapshot
    (the worker removes them from the disks, as any delete), remove their schedules, and set
    their slots back to the demo's. Disk contents are left as they are.

    ``Conflict`` before changing anything when a demo VPS has jobs queued or running (wait
    for them), or when there is no demo data (start ``vpsnap serve --demo`` once).
    """
    accounts = runtime.services.accounts
    targets: list[tuple[DemoVps, Vps]] = []
    for item in DEMO_VPSES:
        vps = await accounts.find_vps(item.account, item.name)
        if vps is not None:
            targets.append((item, vps))
    if not targets:
        raise Conflict("there is no demo data here: start `vpsnap serve --demo` once first")
    async with runtime.store.transaction(read_only=True) as tx:
        for _, vps in targets:
            if await tx.has_active_job(vps.id):
                raise Conflict(
                    f"{vps.name} has jobs queued or running: wait for them, then reset again"
                )
    deletions: list[Job] = []
    slots_restored: list[str] = []
    schedules_removed: list[str] = []
    for item, vps in targets:
        # The operator acts as the account, with every scope: the same checks and jobs as an
        # API delete, so what is on disk is removed by the worker that owns the disks.
        principal = Principal(account_id=vps.account_id, scopes=frozenset(Scope))
        async with runtime.store.transaction(read_only=True) as tx:
            snapshots = await tx.list_snapshots(vps.id)
        deletions.extend(
            [
                await runtime.services.snapshots.delete(principal, vps.id, snapshot.name)
                for snapshot in snapshots
                if snapshot.status is not SnapshotStatus.DELETING
            ]
        )
        async with runtime.store.transaction() as tx:
            if await tx.delete_schedule(vps.id):
                schedules_removed.append(vps.name)
            if vps.snapshot_slots != item.slots:
                # Deleting snapshots hold no slot, so the first count always fits.
                await tx.set_snapshot_slots(vps.id, item.slots)
                slots_restored.append(vps.name)
    return DemoReset(tuple(deletions), tuple(slots_restored), tuple(schedules_removed))
