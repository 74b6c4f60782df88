"""Helpers for tests with real running VMs: guest-visible data, process checks, a QGA stand-in."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vpsnap.drivers import live
from vpsnap.drivers.qmp import open_monitor
from vpsnap.drivers.unix_sockets import listening_socket

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from vpsnap.drivers.qemu_img import QemuImg

# Data lands at different places on each disk so a restore of only one disk cannot pass.
REGIONS = ((0, 64 * 1024), (1024 * 1024, 128 * 1024))


async def write_running(qmp_socket: str, disk: str, offset: int, length: int, pattern: int) -> None:
    """Write a pattern through the running VM's own block layer (HMP ``qemu-io``), flushed.

    The VM holds the image's write lock, so no other process may write it; QEMU itself can.
    """
    async with open_monitor(qmp_socket, 10) as monitor:
        [node] = await live.disk_nodes(monitor, [disk])
        qdev = await live.qdev_of(monitor, node)
        for command in (f"write -P 0x{pattern:02x} {offset} {length}", "flush"):
            output = await monitor.human(f'qemu-io -d {qdev} "{command}"')
            # HMP qemu-io prints its report to QEMU's stdout; only errors come back here.
            assert output == "", output


async def flush_running(qmp_socket: str, disk: str) -> None:
    async with open_monitor(qmp_socket, 10) as monitor:
        [node] = await live.disk_nodes(monitor, [disk])
        qdev = await live.qdev_of(monitor, node)
        assert await monitor.human(f'qemu-io -d {qdev} "flush"') == ""


async def read_shared(disk: str, offset: int, length: int, pattern: int) -> bool:
    """Check a pattern with a read-only, lock-sharing qemu-io next to the running VM."""
    proc = await asyncio.create_subprocess_exec(
        "qemu-io",
        "-U",
        "-r",
        "-f",
        "qcow2",
        "-c",
        f"read -P 0x{pattern:02x} {offset} {length}",
        disk,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    text = out.decode()
    if "Pattern verification failed" in text:
        return False
    assert f"read {length}/{length} bytes" in text, text
    return True


@dataclass
class VmData:
    """The guest-visible data of a VPS's disks, whether its VM runs or not."""

    qemu_img: QemuImg
    disks: tuple[str, ...]
    qmp_socket: str
    is_running: Any  # () -> bool

    async def write(self, pattern: int) -> None:
        for disk, (offset, length) in zip(self.disks, REGIONS, strict=True):
            if self.is_running():
                await write_running(self.qmp_socket, disk, offset, length, pattern)
            else:
                await self.qemu_img.write_pattern(disk, offset, length, pattern)

    async def holds(self, pattern: int) -> bool:
        results = []
        for disk, (offset, length) in zip(self.disks, REGIONS, strict=True):
            if self.is_running():
                await flush_running(self.qmp_socket, disk)
                results.append(await read_shared(disk, offset, length, pattern))
            else:
                results.append(await self.qemu_img.read_matches(disk, offset, length, pattern))
        return all(results)


@dataclass
class GuestAgentStandIn:
    """A unix-socket server speaking the guest agent's protocol, recording what it was asked.

    ``freeze_delay`` makes the freeze answer late (after the client's timeout); ``silent``
    accepts connections and reads, but never answers (an agent channel with no agent behind);
    ``frozen`` is the guest's freeze state (True at the start: a freeze left in place);
    ``refuse_freeze`` answers the freeze with that error; ``dies_on_freeze`` freezes and then
    answers nothing more until ``restart()`` (an agent killed while frozen, then restarted by
    the guest's init: it knows the guest is frozen). Replies echo the request's ``id`` as QEMU's
    agent does.
    """

    path: str
    freeze_delay: float = 0.0
    silent: bool = False
    frozen: bool = False
    refuse_freeze: str | None = None
    dies_on_freeze: bool = False
    calls: list[str] = field(default_factory=list)
    _dead: bool = False

    def restart(self) -> None:
        self._dead = False

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[GuestAgentStandIn]:
        # Bound like vpsnap binds its own: the test's tmp dir may be too long for an address.
        server = await asyncio.start_unix_server(self._client, sock=listening_socket(self.path))
        try:
            yield self
        finally:
            server.close()
            await server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                text = line.strip(b"\xff \r\n")
                if not text:
                    continue
                request = json.loads(text)
                command = request["execute"]
                self.calls.append(command)
                if self.silent or self._dead:
                    continue
                rid = request.get("id")
                if command == "guest-sync-delimited":
                    writer.write(b"\xff" + _reply(request["arguments"]["id"], rid))
                elif command == "guest-sync":
                    writer.write(_reply(request["arguments"]["id"], rid))
                elif command == "guest-fsfreeze-status":
                    writer.write(_reply("frozen" if self.frozen else "thawed", rid))
                elif command == "guest-fsfreeze-freeze" and self.refuse_freeze:
                    writer.write(_error(self.refuse_freeze, rid))
                elif command == "guest-fsfreeze-freeze":
                    await asyncio.sleep(self.freeze_delay)
                    self.frozen = True
                    if self.dies_on_freeze:
                        self._dead = True
                        continue
                    writer.write(_reply(2, rid))  # number of filesystems frozen
                elif command == "guest-fsfreeze-thaw":
                    writer.write(_reply(2 if self.frozen else 0, rid))
                    self.frozen = False
                else:
                    writer.write(_error("CommandNotFound", rid))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def _reply(value: object, rid: object = None) -> bytes:
    message: dict[str, object] = {"return": value}
    if rid is not None:
        message["id"] = rid
    return json.dumps(message).encode() + b"\n"


def _error(desc: str, rid: object = None) -> bytes:
    message: dict[str, object] = {"error": {"class": "GenericError", "desc": desc}}
    if rid is not None:
        message["id"] = rid
    return json.dumps(message).encode() + b"\n"
