"""The real Debian guest that ``scripts/guest-image`` builds: where its files are, how a managed
VM boots it, and whether this host's KVM can run its kernel (else plain emulation, TCG).

Used by ``VPSNAP_DEMO_GUEST=true ./scripts/demo`` (demo-web on the guest), the guest tests
(tests/guest) and ``bench/guest_snapshot.py``. docs/vms.md, "A real guest", has the recipe and
the boot timings.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from vpsnap.domain.model import LaunchSpec

READY_MARKER = "VPSNAP-GUEST-READY"
"""Printed on the guest's serial console once its guest agent runs (then its uptime)."""
GUEST_MEMORY_MIB = 256
_KVM_PROBE_SECONDS = 15.0
_KERNEL_LINE = re.compile(rb"^\[\s*\d+\.\d+\] ", re.MULTILINE)


class GuestImageMissing(Exception):
    """The qcow2 or one of its boot files is not there (run ``scripts/guest-image``)."""


@dataclass(frozen=True, slots=True)
class GuestImage:
    """A built guest: its disk and the kernel, initrd and command line QEMU boots it with."""

    disk: Path
    kernel: Path
    initrd: Path
    cmdline: str

    @classmethod
    def at(cls, disk: Path) -> GuestImage:
        """The guest whose qcow2 is ``disk`` (its boot files lie next to it, same stem).

        Raises ``GuestImageMissing`` when a file is missing.
        """
        disk = disk.expanduser().resolve()
        stem = disk.with_suffix("")
        kernel, initrd, cmdline = (Path(f"{stem}.{s}") for s in ("vmlinuz", "initrd", "cmdline"))
        missing = [p.name for p in (disk, kernel, initrd, cmdline) if not p.is_file()]
        if missing:
            raise GuestImageMissing(
                f"guest image files missing next to {disk}: {', '.join(missing)} "
                "(build it with scripts/guest-image)"
            )
        return cls(disk, kernel, initrd, cmdline.read_text().strip())

    def boot_args(self, serial_log: Path | None = None, *, kvm: bool = True) -> tuple[str, ...]:
        """QEMU arguments (for ``LaunchSpec.extra_args``) that boot this guest's kernel.

        ``serial_log``: the serial console is appended to this file (kept across reboots, so
        a shutdown and the next boot both show). ``kvm=False`` forces plain emulation (TCG) for
        hosts whose KVM cannot run the kernel (``kvm_unusable_reason``).
        """
        args = ["-kernel", str(self.kernel), "-initrd", str(self.initrd)]
        args += ["-append", self.cmdline]
        if serial_log is not None:
            # QEMU option syntax: a literal comma in a value is written twice.
            path = str(serial_log).replace(",", ",,")
            args += ["-chardev", f"file,id=console0,path={path},append=on"]
            args += ["-serial", "chardev:console0"]
        if not kvm:
            # A later -machine option overrides vpsnap's accel=kvm:tcg.
            args += ["-machine", "accel=tcg"]
        return tuple(args)

    def launch_spec(
        self,
        serial_log: Path | None = None,
        *,
        kvm: bool = True,
        memory_mib: int = GUEST_MEMORY_MIB,
    ) -> LaunchSpec:
        """A managed VM of this guest: one vCPU, ``memory_mib`` MiB, no network."""
        return LaunchSpec(
            memory_mib=memory_mib, cpus=1, extra_args=self.boot_args(serial_log, kvm=kvm)
        )


def kvm_unusable_reason(
    image: GuestImage, qemu_system: str = "qemu-system-x86_64", cache_dir: Path | None = None
) -> str | None:
    """None when KVM boots the guest's kernel on this host, else why not.

    ``accel=kvm:tcg`` only falls back to TCG when KVM cannot be opened at all; a KVM that opens
    but cannot run a stock kernel (seen: a PVM host, ``kvm_pvm``, which runs only PVM-enabled
    guest kernels) would hang the guest silently. So the kernel is started once under KVM with
    early console output: a kernel that has not printed its banner within 15 s does not run
    there. The
    verdict depends only on the host kernel, QEMU and guest kernel, and is cached per those in
    ``cache_dir`` (default ``~/.cache/vpsnap``). Blocking (up to 15 s the first time).
    """
    kvm = Path("/dev/kvm")
    if not os.access(kvm, os.R_OK | os.W_OK):
        return "/dev/kvm is missing or not usable by this user"
    version = subprocess.run(  # noqa: S603 - our configured qemu-system, no shell
        [qemu_system, "--version"], capture_output=True, text=True, check=False, timeout=30
    ).stdout.split("\n", 1)[0]
    kernel = hashlib.sha256(image.kernel.read_bytes()).hexdigest()
    key = hashlib.sha256(f"{platform.release()}|{version}|{kernel}".encode()).hexdigest()[:16]
    cache = (cache_dir or Path.home() / ".cache" / "vpsnap") / f"kvm-probe-{key}.json"
    with contextlib.suppress(OSError, ValueError):
        return json.loads(cache.read_text())["reason"]  # type: ignore[no-any-return]
    reason = _probe_kvm(image, qemu_system)
    with contextlib.suppress(OSError):
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(
            json.dumps({"reason": reason, "host": platform.release(), "qemu": version})
        )
    return reason


def _probe_kvm(image: GuestImage, qemu_system: str) -> str | None:
    with tempfile.TemporaryDirectory(prefix="vpsnap-kvm-probe-") as tmp:
        serial = Path(tmp) / "serial"
        serial.touch()
        # No disk: the kernel prints, fails to find its root and reboots (-no-reboot: exits).
        argv = [
            qemu_system,
            "-machine",
            "accel=kvm",
            "-m",
            str(GUEST_MEMORY_MIB),
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-kernel",
            str(image.kernel),
            "-initrd",
            str(image.initrd),
            "-append",
            f"{image.cmdline} earlyprintk=serial,ttyS0,115200 loglevel=7",
            "-serial",
            f"file:{serial}",
        ]
        process = subprocess.Popen(  # noqa: S603 - fixed argv of our own
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            deadline = time.monotonic() + _KVM_PROBE_SECONDS
            while time.monotonic() < deadline:
                # A line of the kernel proper (timestamped); the real-mode setup code prints
                # before it, so any output is not enough: on a PVM host that is all there is.
                if _KERNEL_LINE.search(serial.read_bytes()):
                    return None
                if process.poll() is not None:
                    stderr = (
                        process.stderr.read().decode(errors="replace") if process.stderr else ""
                    )
                    return f"QEMU with KVM exited at once: {stderr.strip()[:300] or 'no output'}"
                time.sleep(0.1)
        finally:
            process.kill()
            process.wait()
            if process.stderr is not None:
                process.stderr.close()
    what = "PVM (kvm_pvm, runs only PVM-enabled guest kernels)"
    kind = what if Path("/sys/module/kvm_pvm").exists() else "KVM"
    return (
        f"the guest kernel did not start within {_KVM_PROBE_SECONDS:g} s under this host's "
        f"{kind}; the guest runs under TCG instead"
    )
