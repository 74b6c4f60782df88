"""Snapshots of a real running Linux guest: vpsnap's API end to end vs. the bare QMP and guest-agent
calls vs. ``virsh``, and the freeze window under write load.

Run from the repository root (as root, for libvirt's ``qemu:///system``)::

    .venv/bin/python bench/guest_snapshot.py [--iterations N] [--load-rounds N] [--no-libvirt]

The guest is the Debian image of ``scripts/guest-image`` (built once, cached). Three copies of it
boot at the same time: a VM vpsnap manages (started through the API), a twin launched with the
managed VM's own command line for the bare calls, and, when libvirt is usable, a libvirt domain
of the same kind. KVM when it can run the guest's kernel, TCG otherwise (the same for all
three). Then, round by round (interleaved, so drift hits every row alike):

- quiesced disk-only snapshot: vpsnap API (``quiesce: true``) vs. the bare floor: guest agent
  ``guest-fsfreeze-freeze``, one QMP ``transaction``, ``guest-fsfreeze-thaw`` over kept sessions;
- disk-only without freeze: vpsnap API (``quiesce: false``) vs. a bare QMP ``transaction``;
- with RAM: vpsnap API (``includeMemoryState: true``) vs. a bare QMP ``snapshot-save`` job;
- ``virsh snapshot-create-as`` on the libvirt domain (libvirt's live internal snapshot, with RAM).

Each snapshot is deleted again untimed. Then a ``dd`` loop writes in both QEMU guests and the two
quiesced rows run again: latency and freeze window (vpsnap's ``freezeWindowMs``; for the bare
row, freeze sent to thaw answered), p50 and p99. Prints tables with ratios to the baseline
measured in the same run and writes ``bench/results/guest_snapshot.json``.

Exit status: 0 when it ran (the libvirt row may be missing, the output says why), 1 when it could
not run at all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import common
import httpx
import live_snapshot as live

from vpsnap.demo_guest import GUEST_MEMORY_MIB, GuestImage, kvm_unusable_reason
from vpsnap.drivers.unix_sockets import socket_address

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

ACCOUNT = "bench"
TOOLS = ("qemu-img", "qemu-system-x86_64")
SLOTS = 10
ROOT = Path(__file__).resolve().parents[1]
BUILD_TIMEOUT_S = 1800.0
BOOT_TIMEOUT_S = 600.0  # three guests boot at once; under TCG on 2 shared cores that is slow
AGENT_TIMEOUT_S = 30.0
LOAD = (
    "touch /run/load.on; while [ -e /run/load.on ]; do "
    "dd if=/dev/zero of=/var/tmp/load bs=1M count=32 conv=notrunc status=none; done"
)


# -- the guest agent, without vpsnap ----------------------------------------------------------


class Agent:
    """A guest agent reached through its channel's unix socket: one session per use, replies
    matched by id after a ``guest-sync-delimited`` handshake (as vpsnap does it)."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = str(socket_path)
        self._ids = itertools.count(1)

    @contextlib.contextmanager
    def session(self) -> Iterator[AgentSession]:
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(AGENT_TIMEOUT_S)
        try:
            with socket_address(self.socket_path) as address:
                sock.connect(address)
            session = AgentSession(sock, self._ids)
            session.sync()
            yield session
        finally:
            sock.close()

    def call(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        with self.session() as session:
            return session.call(command, arguments)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.call("guest-ping")
            except (OSError, common.BenchError):
                if time.monotonic() > deadline:
                    raise common.BenchError(
                        f"the guest agent at {self.socket_path} did not answer within {timeout:g}s"
                    ) from None
                time.sleep(1.0)
            else:
                return

    def start(self, script: str) -> None:
        """Run ``script`` (sh) in the guest, in the background."""
        self.call("guest-exec", {"path": "/bin/sh", "arg": ["-c", f"setsid sh -c '{script}' &"]})

    def run(self, script: str) -> None:
        with self.session() as session:
            pid = session.call("guest-exec", {"path": "/bin/sh", "arg": ["-c", script]})["pid"]
            deadline = time.monotonic() + AGENT_TIMEOUT_S
            while not session.call("guest-exec-status", {"pid": pid})["exited"]:
                if time.monotonic() > deadline:
                    raise common.BenchError(f"guest command did not end: {script}")
                time.sleep(0.1)


class AgentSession:
    def __init__(self, sock: socket.socket, ids: Iterator[int]) -> None:
        self._sock = sock
        self._file = sock.makefile("rwb")
        self._ids = ids

    def sync(self) -> None:
        token = secrets.randbelow(2**31)
        message = {"execute": "guest-sync-delimited", "arguments": {"id": token}}
        self._file.write(b"\xff" + json.dumps(message).encode() + b"\n")
        self._file.flush()
        while True:
            self._read_until_delimiter()
            with contextlib.suppress(ValueError):
                if json.loads(self._file.readline().strip(b"\xff \r\n")).get("return") == token:
                    return

    def call(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        rid = next(self._ids)
        message: dict[str, Any] = {"execute": command, "id": rid}
        if arguments:
            message["arguments"] = arguments
        self._file.write(json.dumps(message).encode() + b"\n")
        self._file.flush()
        while True:
            line = self._file.readline()
            if not line:
                raise common.BenchError(f"the guest agent hung up during {command}")
            with contextlib.suppress(ValueError):
                reply = json.loads(line.strip(b"\xff \r\n"))
                if isinstance(reply, dict) and reply.get("id") == rid:
                    if "error" in reply:
                        raise common.BenchError(f"{command}: {reply['error']}")
                    return reply["return"]

    def _read_until_delimiter(self) -> None:
        while True:
            byte = self._file.read(1)
            if not byte:
                raise common.BenchError("the guest agent hung up during the handshake")
            if byte == b"\xff":
                return


# -- rows -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Quiesced:
    """What each quiesced snapshot of a row reported besides its latency."""

    windows_ms: list[float] = field(default_factory=list)
    consistencies: set[str] = field(default_factory=set)


def api_rows(
    client: httpx.Client, vps_id: str, disk: Path, quiesced: dict[str, Quiesced], tag: str = ""
) -> list[live.Row]:
    def drop(name: str) -> None:
        common.delete_snapshot(client, vps_id, name)

    def take_quiesced(name: str) -> common.VpsnapSample:
        started = time.perf_counter()
        job, polls = common.run_job(
            client, client.post(f"/api/v2/vps/{vps_id}/snapshots", json={"name": name})
        )
        elapsed = (time.perf_counter() - started) * 1000
        listing = common.expect(client.get(f"/api/v2/vps/{vps_id}/snapshots"), 200)
        record = quiesced.setdefault(f"api-q{tag}", Quiesced())
        record.consistencies.update(
            str(s["consistency"]) for s in listing["data"] if s["name"] == name
        )
        if "freezeWindowMs" in job["result"]:
            record.windows_ms.append(float(job["result"]["freezeWindowMs"]))
        return common.VpsnapSample(
            client_ms=elapsed,
            queued_ms=common.span_ms(job["createdAt"], job["startedAt"]),
            running_ms=common.span_ms(job["startedAt"], job["finishedAt"]),
            polls=polls,
        )

    def take(name: str, body: dict[str, Any]) -> common.VpsnapSample:
        return common.create_snapshot(client, vps_id, {"name": name, **body})

    rows = [
        live.Row(
            key=f"api-q{tag}",
            group="qemu",
            label="vpsnap API, quiesce=true",
            ram_requested=False,
            baseline=f"qga-q{tag}",
            take=take_quiesced,
            drop=drop,
            disk=disk,
        ),
    ]
    if tag:
        return rows
    rows += [
        live.Row(
            key="api-d",
            group="qemu",
            label="vpsnap API, quiesce=false",
            ram_requested=False,
            baseline="qmp-d",
            take=lambda n: take(n, {"quiesce": False}),
            drop=drop,
            disk=disk,
        ),
        live.Row(
            key="api-m",
            group="qemu",
            label="vpsnap API, includeMemoryState=true",
            ram_requested=True,
            baseline="qmp-m",
            take=lambda n: take(n, {"includeMemoryState": True}),
            drop=drop,
            disk=disk,
        ),
    ]
    return rows


def bare_rows(
    bare: live.BareVm, agent: Agent, disk: Path, quiesced: dict[str, Quiesced], tag: str = ""
) -> list[live.Row]:
    def take_quiesced(name: str) -> float:
        # The floor of a quiesced snapshot: freeze, the transaction, thaw; kept QMP session.
        with agent.session() as session:
            started = time.perf_counter()
            session.call("guest-fsfreeze-freeze")
            try:
                bare.snapshot(name, ram=False, per_call=False)
            finally:
                session.call("guest-fsfreeze-thaw")
            elapsed = (time.perf_counter() - started) * 1000
        record = quiesced.setdefault(f"qga-q{tag}", Quiesced())
        record.windows_ms.append(elapsed)
        record.consistencies.add("filesystem")
        return elapsed

    rows = [
        live.Row(
            key=f"qga-q{tag}",
            group="qemu",
            label="bare QGA freeze + QMP transaction + thaw",
            ram_requested=False,
            baseline=f"qga-q{tag}",
            take=take_quiesced,
            drop=lambda n: bare.delete(n, ram=False),
            disk=disk,
        ),
    ]
    if tag:
        return rows
    rows += [
        live.Row(
            key="qmp-d",
            group="qemu",
            label="bare QMP transaction, kept session",
            ram_requested=False,
            baseline="qmp-d",
            take=lambda n: bare.snapshot(n, ram=False, per_call=False),
            drop=lambda n: bare.delete(n, ram=False),
            disk=disk,
        ),
        live.Row(
            key="qmp-m",
            group="qemu",
            label="bare QMP snapshot-save, kept session",
            ram_requested=True,
            baseline="qmp-m",
            take=lambda n: bare.snapshot(n, ram=True, per_call=False),
            drop=lambda n: bare.delete(n, ram=True),
            disk=disk,
        ),
    ]
    return rows


def virsh_row(domain: live.Domain) -> live.Row:
    def take(name: str) -> float:
        return common.timed_ms(
            live.virsh("snapshot-create-as", domain.name, name), timeout=live.VIRSH_TIMEOUT_S
        )

    def drop(name: str) -> None:
        common.run(live.virsh("snapshot-delete", domain.name, name), timeout=live.VIRSH_TIMEOUT_S)

    return live.Row(
        key="virsh",
        group="libvirt",
        label="virsh snapshot-create-as",
        ram_requested=True,
        baseline="virsh",
        take=take,
        drop=drop,
        disk=domain.disk,
    )


ORDER = ("qga-q", "api-q", "qmp-d", "api-d", "qmp-m", "api-m", "virsh")


# -- set-up -----------------------------------------------------------------------------------


def guest_image() -> GuestImage:
    common.progress("building or finding the guest image (scripts/guest-image) ...")
    try:
        built = subprocess.run(
            [str(ROOT / "scripts" / "guest-image")],
            stdout=subprocess.PIPE,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise common.BenchError("scripts/guest-image did not finish") from None
    if built.returncode != 0:
        raise common.BenchError(f"scripts/guest-image failed (exit {built.returncode})")
    return GuestImage.at(Path(built.stdout.strip().splitlines()[-1]))


def domain_xml(name: str, image: GuestImage, disk: Path, *, kvm: bool) -> str:
    """A libvirt domain of the managed VM's kind: memory, one vCPU, the guest's kernel, initrd
    and command line, the disk on virtio, a guest-agent channel, accelerator; no NIC."""
    return (
        f"<domain type='{'kvm' if kvm else 'qemu'}'><name>{name}</name>"
        f"<memory unit='MiB'>{GUEST_MEMORY_MIB}</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64' machine='pc'>hvm</type>"
        f"<kernel>{image.kernel}</kernel><initrd>{image.initrd}</initrd>"
        f"<cmdline>{image.cmdline}</cmdline></os>"
        "<on_crash>destroy</on_crash><devices>"
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        f"<source file='{disk}'/><target dev='vda' bus='virtio'/></disk>"
        "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>"
        "<memballoon model='none'/></devices></domain>"
    )


@contextlib.contextmanager
def libvirt_guest(workdir: Path, image: GuestImage, *, kvm: bool) -> Iterator[live.Domain]:
    name = f"vpsnap-bench-{uuid.uuid4().hex[:8]}"
    disk = workdir / "libvirt.qcow2"
    shutil.copyfile(image.disk, disk)
    xml_path = workdir / "domain.xml"
    xml_path.write_text(domain_xml(name, image, disk, kvm=kvm))
    common.progress(f"defining and starting libvirt domain {name} ...")
    common.run(live.virsh("define", xml_path), timeout=live.VIRSH_TIMEOUT_S)
    domain = live.Domain(name, disk)
    try:
        common.run(live.virsh("start", name), timeout=live.VIRSH_TIMEOUT_S)
        yield domain
    finally:
        domain.remove()


def wait_libvirt_agent(domain: live.Domain, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    ping = json.dumps({"execute": "guest-ping"})
    while True:
        try:
            common.run(live.virsh("qemu-agent-command", domain.name, ping), timeout=30)
        except common.BenchError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2.0)
        else:
            return


@contextlib.contextmanager
def guest_twin(
    data_dir: Path, vps_id: str, disk: Path, image: GuestImage, workdir: Path
) -> Iterator[tuple[live.BareVm, Agent]]:
    """The managed VM's command line with its own directory, disk, console and name."""
    argv, machine_dir = live.managed_command_line(data_dir, vps_id)
    directory = workdir / "bare"
    directory.mkdir()
    twin_disk = workdir / "bare.qcow2"
    shutil.copyfile(image.disk, twin_disk)
    twin = [
        arg.replace(str(machine_dir), str(directory))
        .replace(str(disk.resolve()), str(twin_disk))
        .replace(str(workdir / "managed-console.log"), str(workdir / "bare-console.log"))
        .replace(f"vpsnap-{vps_id}", "vpsnap-bench-bare")
        for arg in argv
    ]
    common.progress("launching the bare twin (the managed VM's command line) ...")
    common.run(twin, timeout=live.VM_START_TIMEOUT_S)
    try:
        with asyncio.Runner() as runner:
            vm = live.BareVm(runner, directory)
            vm.open()
            try:
                yield vm, Agent(directory / "qga.sock")
            finally:
                vm.close()
    finally:
        live.end_process(directory / "pid", directory, "the bare VM")


@dataclass(slots=True)
class Setup:
    kvm: bool = False
    kvm_reason: str | None = None
    libvirt_missing: list[str] = field(default_factory=list)
    boot_s: float = 0.0


def benchmark(
    args: argparse.Namespace, workdir: Path, setup: Setup
) -> tuple[list[live.Row], list[live.Row], dict[str, Quiesced]]:
    image = guest_image()
    setup.kvm_reason = kvm_unusable_reason(image)
    setup.kvm = setup.kvm_reason is None
    if setup.kvm_reason:
        common.progress(f"TCG: {setup.kvm_reason}")
    managed_disk = workdir / "managed.qcow2"
    shutil.copyfile(image.disk, managed_disk)

    env = common.server_env(
        {
            "VPSNAP_DEMO_VM": "false",
            "VPSNAP_QMP_TIMEOUT_SECONDS": "60",
            "VPSNAP_GUEST_AGENT_TIMEOUT_SECONDS": "10",
            "VPSNAP_GUEST_FREEZE_TIMEOUT_SECONDS": "60",
            "VPSNAP_VM_SNAPSHOT_TIMEOUT_SECONDS": "300",
        }
    )
    data_dir = workdir / "data"
    quiesced: dict[str, Quiesced] = {}
    with contextlib.ExitStack() as stack:
        stack.callback(live.reap_qemus, workdir)
        domain: live.Domain | None = None
        if args.no_libvirt:
            setup.libvirt_missing.append("--no-libvirt was given")
        elif (reason := live.libvirt_unusable()) is not None:
            setup.libvirt_missing.append(reason)
        else:
            try:
                domain = stack.enter_context(libvirt_guest(workdir, image, kvm=setup.kvm))
            except common.BenchError as exc:
                setup.libvirt_missing.append(f"the libvirt domain could not be started: {exc}")

        common.progress("registering account, key and the managed guest VM ...")
        key = common.create_account_and_key(data_dir, env, ACCOUNT)
        spec = image.launch_spec(workdir / "managed-console.log", kvm=setup.kvm)
        options = ["--memory-mib", str(spec.memory_mib), "--cpus", str(spec.cpus)]
        options += [f"--qemu-arg={arg}" for arg in spec.extra_args]
        vps_id = common.add_vps(
            data_dir,
            env,
            account=ACCOUNT,
            name="bench-guest",
            disk=managed_disk,
            slots=SLOTS,
            extra=options,
        )
        common.progress("starting vpsnap serve ...")
        base_url = stack.enter_context(
            common.running_server(data_dir, common.free_port(), env, workdir / "server.log")
        )
        client = stack.enter_context(common.api_client(base_url, key))
        stack.callback(live.stop_managed, client, vps_id)
        started = time.monotonic()
        live.power(client, vps_id, "start")
        bare, bare_agent = stack.enter_context(
            guest_twin(data_dir, vps_id, managed_disk, image, workdir)
        )
        agent = Agent(data_dir / "machines" / vps_id / "qga.sock")
        common.progress("waiting for the guests to boot (their agents to answer) ...")
        agent.wait_ready(BOOT_TIMEOUT_S)
        bare_agent.wait_ready(BOOT_TIMEOUT_S)
        if domain is not None:
            try:
                wait_libvirt_agent(domain, BOOT_TIMEOUT_S)
            except common.BenchError as exc:
                setup.libvirt_missing.append(f"the libvirt guest did not boot: {exc}")
                domain = None
        setup.boot_s = time.monotonic() - started
        common.progress(f"guests up after {setup.boot_s:.0f}s")
        if setup.kvm != bare.kvm():
            raise common.BenchError("the bare twin does not use the accelerator that was chosen")

        rows = [
            *api_rows(client, vps_id, managed_disk, quiesced),
            *bare_rows(bare, bare_agent, workdir / "bare.qcow2", quiesced),
        ]
        if domain is not None:
            rows.append(virsh_row(domain))
        rows.sort(key=lambda r: ORDER.index(r.key))
        plan = live.Plan(args.iterations, args.warmup)
        common.progress(f"idle guests: {plan.warmup} warm-up + {plan.iterations} rounds")
        live.measure(plan, rows)

        common.progress(f"write load in both QEMU guests: {args.load_rounds} rounds")
        for each in (agent, bare_agent):
            each.start(LOAD)
        time.sleep(3)  # let dirty data build up
        loaded = [
            *api_rows(client, vps_id, managed_disk, quiesced, tag="-load"),
            *bare_rows(bare, bare_agent, workdir / "bare.qcow2", quiesced, tag="-load"),
        ]
        live.measure(live.Plan(args.load_rounds, 1), loaded)
        for each in (agent, bare_agent):
            each.run("rm -f /run/load.on")
    return rows, loaded, quiesced


# -- report -----------------------------------------------------------------------------------


def main_table(rows: Sequence[live.Row]) -> str:
    keyed = {row.key: row for row in rows}
    virsh = keyed.get("virsh")
    headers = ["scenario", "RAM", "median", "p90", "vs baseline", "vs virsh"]
    lines = []
    for row in rows:
        summary = common.Summary.of(row.samples)
        baseline = statistics.median(keyed[row.baseline].samples)
        lines.append(
            [
                f"{row.group:<7} {row.label}" + (" [baseline]" if row.is_baseline else ""),
                row.ram_column,
                common.fmt_ms(summary.median),
                common.fmt_ms(summary.p90),
                common.fmt_ratio(summary.median / baseline),
                common.fmt_ratio(summary.median / statistics.median(virsh.samples))
                if virsh
                else "-",
            ]
        )
    return common.render_table(headers, lines)


def load_table(rows: Sequence[live.Row], quiesced: dict[str, Quiesced]) -> str:
    keyed = {row.key: row for row in rows}
    headers = ["under write load", "p50", "p99", "vs baseline", "window p50", "window p99", "fs"]
    lines = []
    for row in rows:
        windows = quiesced.get(row.key, Quiesced())
        baseline = statistics.median(keyed[row.baseline].samples)
        lines.append(
            [
                row.label + (" [baseline]" if row.is_baseline else ""),
                common.fmt_ms(statistics.median(row.samples)),
                common.fmt_ms(common.percentile(row.samples, 99)),
                common.fmt_ratio(statistics.median(row.samples) / baseline),
                common.fmt_ms(statistics.median(windows.windows_ms)) if windows.windows_ms else "-",
                common.fmt_ms(common.percentile(windows.windows_ms, 99))
                if windows.windows_ms
                else "-",
                ",".join(sorted(windows.consistencies)) or "?",
            ]
        )
    return common.render_table(headers, lines)


def report(
    args: argparse.Namespace,
    setup: Setup,
    rows: list[live.Row],
    loaded: list[live.Row],
    quiesced: dict[str, Quiesced],
    machine: dict[str, Any],
) -> dict[str, Any]:
    accel = "KVM" if setup.kvm else f"TCG ({setup.kvm_reason})"
    print(
        f"machine: {machine['nproc']} CPUs, {machine['qemu_system']}, {machine['libvirt']}, "
        f"kernel {machine['kernel']}, load average at start {machine['loadavg_at_start']}"
    )
    print(
        f"guests: Debian 12 (scripts/guest-image), {GUEST_MEMORY_MIB} MiB, 1 vCPU, {accel}; "
        f"booted in {setup.boot_s:.0f}s (three at once)"
    )
    print(
        f"run: {args.iterations} rounds (+{args.warmup} warm-up) idle, {args.load_rounds} "
        "under write load (+1 warm-up); times in ms"
    )
    print()
    print(main_table(rows))
    print()
    api_q = quiesced.get("api-q", Quiesced())
    print(
        "idle freeze window (vpsnap freezeWindowMs): "
        + (
            f"p50 {common.fmt_ms(statistics.median(api_q.windows_ms))}, "
            f"p99 {common.fmt_ms(common.percentile(api_q.windows_ms, 99))}; "
            if api_q.windows_ms
            else "none reported; "
        )
        + f"consistency seen: {','.join(sorted(api_q.consistencies)) or '?'}"
    )
    print()
    print(load_table(loaded, quiesced))
    print()
    if setup.libvirt_missing:
        for reason in setup.libvirt_missing:
            print(f"!! VIRSH ROW MISSING: {reason}")
        print()
    config = {
        "memory_mib": GUEST_MEMORY_MIB,
        "accelerator": "KVM" if setup.kvm else "TCG",
        "kvm_unusable_reason": setup.kvm_reason,
        "load_rounds": args.load_rounds,
        "boot_seconds": round(setup.boot_s, 1),
    }
    return common.report_json(
        args,
        machine,
        config,
        [],
        libvirt_missing=setup.libvirt_missing,
        rows=[live.row_json(row, {r.key: r for r in rows}) for row in rows],
        loaded=[
            {
                "key": row.key,
                "label": row.label,
                "samples_ms": [round(v, 3) for v in row.samples],
                "freeze_windows_ms": quiesced.get(row.key, Quiesced()).windows_ms,
            }
            for row in loaded
        ],
        freeze_windows_idle_ms=api_q.windows_ms,
    )


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--iterations", type=common.positive, default=10, help="idle rounds")
    parser.add_argument(
        "--load-rounds", type=common.positive, default=10, help="rounds under write load"
    )
    parser.add_argument("--no-libvirt", action="store_true", help="leave the virsh row out")


def run_benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    setup = Setup()
    machine = live.live_machine_context(workdir)
    rows, loaded, quiesced = benchmark(args, workdir, setup)
    return report(args, setup, rows, loaded, quiesced, machine)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    note = "keep it short: unix socket paths are limited to 107 bytes"
    spec = common.BenchSpec("guest_snapshot", __doc__, TOOLS, "vpsnap-guest-", note)
    sys.exit(common.bench_main(spec, add_options, run_benchmark))
