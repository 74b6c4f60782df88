"""Tests on a real running Linux guest (the Debian image of scripts/guest-image).

Once per session, when the first guest test needs it (lazily: under pytest-xdist only the worker
that runs guest tests pays for it): the image is built (or found in ``~/.cache/vpsnap``), this host's KVM
is probed (``kvm_unusable_reason``: some KVMs cannot run a stock kernel), and one guest is
booted — KVM, else TCG — until its agent answers, then saved with its RAM by vpsnap itself
(a ``snapshot-save`` named ``booted``) into a template disk and stopped. That one boot is the
bootability check. Each test then gets its own copy of the template disk, its own vpsnap
(real app, real worker, SQLite) with a VPS whose managed VM is that disk, and the VM is
*resumed* from ``booted`` (``-loadvm``, adopted by vpsnap through its machine directory) and
the ``booted`` snapshot deleted: seconds instead of a boot per test, and no test sees another's
writes. Tests whose point is a boot (restore of a disk-only snapshot, restart) boot for real.

A guest that neither KVM nor TCG can boot within the limit skips every guest test with the
reason printed, and the session then FAILS (``pytest_sessionfinish``) unless
``VPSNAP_ALLOW_GUEST_SKIP=1`` says a skip is acceptable: CI must not pass without having run
them. A broken build (scripts/guest-image failed) fails them; it is not a reason to skip.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import api_settings
from tests.drivers.support import make_vps
from tests.guest.agent import GuestAgentClient
from vpsnap.api.app import create_app
from vpsnap.demo_guest import GuestImage, GuestImageMissing, kvm_unusable_reason
from vpsnap.domain.auth import Scope
from vpsnap.domain.errors import DomainError
from vpsnap.domain.model import LaunchSpec, PowerAction, Vps
from vpsnap.domain.ports import SnapshotRequest
from vpsnap.drivers.machines import ManagedMachines, bind_sockets, launch_arguments
from vpsnap.drivers.qemu import LiveTimeouts, QemuDriver
from vpsnap.drivers.qemu_img import QemuImg
from vpsnap.drivers.qmp import open_monitor
from vpsnap.runtime import Runtime
from vpsnap.services.accounts import NewVps

REPO = Path(__file__).resolve().parents[2]
ALLOW_SKIP_ENV = "VPSNAP_ALLOW_GUEST_SKIP"
SKIP_PREFIX = "the real guest cannot boot here"
BUILD_LIMIT_SECONDS = 1800.0
BOOT_LIMIT_SECONDS = {"kvm": 120.0, "tcg": 300.0}
# Only for the test of the skip policy itself (test_skip_policy.py): a limit no guest can meet.
BOOT_LIMIT_ENV = "VPSNAP_GUEST_BOOT_LIMIT_SECONDS"
RESUME_LIMIT_SECONDS = 120.0
TEMPLATE_SNAPSHOT = "booted"


@dataclass
class GuestSession:
    """What the session set-up found; read by the fixtures."""

    image: GuestImage | None = None
    error: str | None = None  # the image could not be built: fail
    skip: str | None = None  # no accelerator booted it in time: skip (and fail the session)
    kvm: bool = False
    kvm_reason: str | None = None
    template: Path | None = None
    workdir: Path | None = None
    template_tried: bool = False
    timings: dict[str, float] = field(default_factory=dict)


_SESSION = pytest.StashKey[GuestSession]()


def _prepare(config: pytest.Config, *, template: bool) -> GuestSession:
    """The session's guest state, made on first use: the image (built or found), the KVM probe
    and, when ``template`` is asked for, the booted template. Lazily, not at collection: under
    pytest-xdist every worker collects every test, and only the worker that runs a guest test
    may spend minutes of a core on a TCG boot."""
    state = config.stash.get(_SESSION, None)
    if state is None:
        state = GuestSession()
        config.stash[_SESSION] = state
        _build_image(config, state)
    if template and not state.template_tried and state.error is None:
        state.template_tried = True
        # A thread of its own: asyncio.run() must not replace the test's event loop.
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(_boot_template, config, state).result()
    return state


def _say(config: pytest.Config, line: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"guest: {line}")


def _build_image(config: pytest.Config, state: GuestSession) -> None:
    started = time.monotonic()
    try:
        built = subprocess.run(
            [str(REPO / "scripts" / "guest-image")],
            stdout=subprocess.PIPE,
            text=True,
            timeout=BUILD_LIMIT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        state.error = f"scripts/guest-image did not finish within {BUILD_LIMIT_SECONDS:g}s"
        _say(config, state.error)
        return
    if built.returncode != 0:
        state.error = f"scripts/guest-image failed (exit {built.returncode}); see its output above"
        _say(config, state.error)
        return
    try:
        state.image = GuestImage.at(Path(built.stdout.strip().splitlines()[-1]))
    except (GuestImageMissing, IndexError) as exc:
        state.error = f"scripts/guest-image printed no usable image: {exc}"
        _say(config, state.error)
        return
    state.timings["image"] = time.monotonic() - started

    started = time.monotonic()
    state.kvm_reason = kvm_unusable_reason(state.image)
    state.timings["kvm_probe"] = time.monotonic() - started
    state.workdir = Path(tempfile.mkdtemp(prefix="vpsnap-guest-", dir="/tmp"))
    _say(config, f"image {state.image.disk.name} ready in {state.timings['image']:.1f}s")


def _boot_template(config: pytest.Config, state: GuestSession) -> None:
    assert state.image is not None
    accels = (["kvm"] if state.kvm_reason is None else []) + ["tcg"]
    failures = [] if state.kvm_reason is None else [f"KVM: {state.kvm_reason}"]
    for accel in accels:
        started = time.monotonic()
        failure = asyncio.run(_make_template(state, kvm=accel == "kvm"))
        if failure is None:
            state.kvm = accel == "kvm"
            state.timings[f"template_{accel}"] = time.monotonic() - started
            break
        failures.append(f"{accel.upper()}: {failure}")
    else:
        state.skip = f"{SKIP_PREFIX}: " + "; ".join(failures)
    _say(config, f"skipping: {state.skip}" if state.skip else _boot_summary(state))


def _boot_summary(state: GuestSession) -> str:
    accel = "KVM" if state.kvm else "TCG"
    boot = state.timings.get("boot", 0.0)
    text = f"booted under {accel} in {boot:.1f}s (template saved: {state.timings['save']:.1f}s)"
    if state.kvm_reason:
        text += f"; not KVM: {state.kvm_reason}"
    return text


def guest_spec(image: GuestImage, serial_log: Path, *, kvm: bool) -> LaunchSpec:
    """The managed VM every guest test runs (the template's, so ``-loadvm`` matches it)."""
    return image.launch_spec(serial_log, kvm=kvm)


async def _make_template(state: GuestSession, *, kvm: bool) -> str | None:
    """Boot the guest once, save it with RAM as ``booted``; None, or why it did not boot."""
    assert state.image is not None and state.workdir is not None
    accel = "kvm" if kvm else "tcg"
    work = state.workdir / f"template-{accel}"
    work.mkdir()
    disk = work / "template.qcow2"
    qemu_img = QemuImg(timeout=60.0)
    await _run(
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        "-b",
        str(state.image.disk),
        str(disk),
    )
    machines = ManagedMachines(work, timeout=60.0)
    driver = QemuDriver(qemu_img, machines, LiveTimeouts(snapshot_job=300.0))
    vps = make_vps(
        (str(disk),), vps_id="template", machine=guest_spec(state.image, work / "serial", kvm=kvm)
    )
    agent = GuestAgentClient(str(machines.dir_for(vps.id).guest_agent_socket))
    limit = float(os.environ.get(BOOT_LIMIT_ENV, BOOT_LIMIT_SECONDS[accel]))
    try:
        started = time.monotonic()
        try:
            await driver.change_power(vps, PowerAction.START)
        except DomainError as exc:
            return f"QEMU did not start it: {exc.detail}"
        try:
            await agent.wait_ready(limit)
        except TimeoutError:
            return f"its agent did not answer within {limit:g}s of the start"
        state.timings["boot"] = time.monotonic() - started
        started = time.monotonic()
        # Let the boot's own writes and services settle, so every copy starts quiet.
        await agent.ok("sync")
        await driver.create_snapshot(
            vps, SnapshotRequest(name=TEMPLATE_SNAPSHOT, include_memory_state=True)
        )
        state.timings["save"] = time.monotonic() - started
        await driver.change_power(vps, PowerAction.STOP)
    finally:
        for vps_id, _ in list(machines.running()):
            await machines.kill(vps_id)
    state.template = disk
    return None


async def _run(*argv: str, pass_fds: tuple[int, ...] = ()) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, pass_fds=pass_fds
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "guest" in report.keywords:
        reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else ""
        if SKIP_PREFIX in reason:
            _SKIPPED.append(report.nodeid)


_SKIPPED: list[str] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash.get(_SESSION, None)
    if state is not None and state.workdir is not None:
        shutil.rmtree(state.workdir, ignore_errors=True)
    if not _SKIPPED or os.environ.get(ALLOW_SKIP_ENV) == "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(
            f"FAILED: {len(_SKIPPED)} guest test(s) skipped because the real guest could not "
            f"boot; a run that has not seen them is not a pass (set {ALLOW_SKIP_ENV}=1 to "
            "accept the skip on a machine that cannot run them)",
            red=True,
            bold=True,
        )
    if session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# -- per test ------------------------------------------------------------------------------


@dataclass
class Guest:
    """One test's running guest, its vpsnap (API over ASGI, worker) and ways to look inside."""

    client: httpx.AsyncClient
    headers: dict[str, str]
    runtime: Runtime
    vps: Vps
    agent: GuestAgentClient
    serial_log: Path
    machines: ManagedMachines
    kvm: bool
    boot_limit: float

    @property
    def vps_id(self) -> str:
        return self.vps.id

    def serial(self) -> str:
        return self.serial_log.read_text(errors="replace") if self.serial_log.exists() else ""

    async def post(self, path: str, body: dict[str, object] | None = None) -> dict[str, object]:
        """POST an operation and wait for its job to end; returns the job."""
        response = await self.client.post(
            f"/api/v2/vps/{self.vps_id}{path}", json=body or {}, headers=self.headers
        )
        assert response.status_code == 202, response.text
        return await self.wait_job(str(response.json()["operation"]["jobId"]))

    async def wait_job(self, job_id: str) -> dict[str, object]:
        for _ in range(200):
            response = await self.client.get(
                f"/api/jobs/{job_id}", headers={**self.headers, "Prefer": "wait=10"}
            )
            job: dict[str, object] = response.json()
            if job["status"] in ("completed", "failed"):
                return job
        raise AssertionError(f"job {job_id} did not finish")

    async def snapshot(self, name: str, **options: object) -> tuple[dict[str, object], dict]:
        """Create a snapshot through the API; returns (job, snapshot as listed)."""
        job = await self.post("/snapshots", {"name": name, **options})
        assert job["status"] == "completed", job
        listed = await self.client.get(f"/api/v2/vps/{self.vps_id}/snapshots", headers=self.headers)
        [snapshot] = [s for s in listed.json()["data"] if s["name"] == name]
        return job, snapshot

    async def wait_serial(self, text: str, *, after: str | tuple[str, ...], timeout: float) -> str:
        """Wait until ``text`` appears on the serial console after the line(s) ``after`` (a
        tuple: each after the one before it); returns the console output since the last of them.

        A marker not yet on the console means "not yet", never "the whole console": a line the
        guest printed before the marker must not satisfy the wait.
        """
        markers = (after,) if isinstance(after, str) else after
        deadline = time.monotonic() + timeout
        while True:
            since: str | None = self.serial()
            for marker in markers:
                parts = since.split(marker, 1) if since is not None else []
                since = parts[1] if len(parts) == 2 else None
            if since is not None and text in since:
                return since
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{text!r} not on the serial console after {markers!r} within {timeout:g}s"
                )
            await asyncio.sleep(0.2)

    async def power_state(self) -> str:
        shown = await self.client.get(f"/api/v2/vps/{self.vps_id}", headers=self.headers)
        return str(shown.json()["powerState"])


def _checked(state: GuestSession) -> GuestSession:
    if state.error is not None:
        pytest.fail(state.error)
    if state.skip is not None:
        print(f"\n{state.skip}")
        pytest.skip(state.skip)
    return state


@pytest.fixture
def guest_session(request: pytest.FixtureRequest) -> GuestSession:
    """The session's image (built or found once), for a test that boots its own guest."""
    return _checked(_prepare(request.config, template=False))


@pytest.fixture
def booted_guest_session(request: pytest.FixtureRequest) -> GuestSession:
    """As ``guest_session``, with the booted template every ``guest`` resumes from."""
    return _checked(_prepare(request.config, template=True))


@pytest.fixture
def guest_overrides() -> dict[str, object]:
    """Settings a guest test wants changed (override this fixture)."""
    return {}


@pytest.fixture
async def guest(
    booted_guest_session: GuestSession, guest_overrides: dict[str, object]
) -> AsyncIterator[Guest]:
    guest_session = booted_guest_session
    assert guest_session.image and guest_session.template and guest_session.workdir
    data_dir = Path(tempfile.mkdtemp(prefix="t", dir=guest_session.workdir))
    disk = data_dir / "disks" / "guest.qcow2"
    disk.parent.mkdir()
    shutil.copyfile(guest_session.template, disk)
    serial_log = data_dir / "serial.log"
    # A guest under TCG answers slower than a bare VM; these are still far below what a real
    # problem would take.
    overrides: dict[str, object] = {
        "qmp_timeout_seconds": 60.0,
        "vm_snapshot_timeout_seconds": 300.0,
        "shutdown_timeout_seconds": 120.0,
        "guest_agent_timeout_seconds": 10.0,
        "guest_freeze_timeout_seconds": 30.0,
    }
    settings = api_settings(data_dir, **{**overrides, **guest_overrides})
    runtime = Runtime.build(settings)
    await runtime.prepare()
    spec = guest_spec(guest_session.image, serial_log, kvm=guest_session.kvm)
    await runtime.services.accounts.ensure_account("acme")
    vps = await runtime.services.accounts.add_vps(
        NewVps(
            account_name="acme",
            name="guest",
            disks=(str(disk),),
            snapshot_slots=8,
            machine=spec,
        )
    )
    secret = (await runtime.services.credentials.issue("acme", frozenset({Scope.WRITE_ALL}))).secret
    machines = ManagedMachines(settings.data_dir, timeout=60.0)
    agent = GuestAgentClient(str(machines.dir_for(vps.id).guest_agent_socket))
    await _resume(machines, vps, spec)
    await agent.wait_ready(RESUME_LIMIT_SECONDS)

    worker = runtime.worker()
    worker_task = asyncio.create_task(worker.run())
    app = create_app(runtime.services, settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", timeout=60.0
    ) as client:
        yield Guest(
            client=client,
            headers={"Authorization": f"Bearer {secret}"},
            runtime=runtime,
            vps=vps,
            agent=agent,
            serial_log=serial_log,
            machines=machines,
            kvm=guest_session.kvm,
            boot_limit=BOOT_LIMIT_SECONDS["kvm" if guest_session.kvm else "tcg"],
        )
    worker.stop()
    await worker_task
    for vps_id, _ in list(machines.running()):
        await machines.kill(vps_id)
    await runtime.store.dispose()
    shutil.rmtree(data_dir, ignore_errors=True)


async def _resume(machines: ManagedMachines, vps: Vps, spec: LaunchSpec) -> None:
    """Start the VPS's VM from the template's ``booted`` RAM state, as the VM vpsnap manages
    (same command line plus ``-loadvm``, so vpsnap finds it through its machine directory),
    and delete ``booted`` from the disk: the test's VPS starts with no snapshot at all."""
    machine = machines.dir_for(vps.id)
    machine.path.mkdir(parents=True)
    with bind_sockets(machine) as sockets:
        argv = [
            machines.qemu_system,
            *launch_arguments(vps, spec, machine, sockets),
            "-loadvm",
            TEMPLATE_SNAPSHOT,
        ]
        await _run(*argv, pass_fds=sockets.fds)
    async with open_monitor(str(machine.qmp_socket), 60) as monitor:
        await monitor.execute(
            "blockdev-snapshot-delete-internal-sync", {"device": "vd0", "name": TEMPLATE_SNAPSHOT}
        )
