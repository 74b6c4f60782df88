"""The tests' own way into a real guest: its QEMU guest agent (guest-exec, guest-file-*).

Each call connects, talks and disconnects: QEMU serves one client per agent socket, and vpsnap
itself needs the socket during a quiesced snapshot. Replies are matched by ``id`` (the agent
echoes it) after a ``guest-sync-delimited`` handshake, so stale replies are never mistaken.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from vpsnap.drivers.unix_sockets import socket_address


class AgentError(Exception):
    pass


@dataclass(frozen=True)
class Exec:
    exitcode: int | None
    out: str
    err: str


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.ids = itertools.count(secrets.randbelow(2**30))

    async def sync(self, timeout: float) -> None:
        token = secrets.randbelow(2**31)
        message = {"execute": "guest-sync-delimited", "arguments": {"id": token}}
        self.writer.write(b"\xff" + json.dumps(message).encode() + b"\n")
        await self.writer.drain()
        async with asyncio.timeout(timeout):
            while True:
                await self.reader.readuntil(b"\xff")
                line = (await self.reader.readline()).strip(b"\xff \r\n")
                with contextlib.suppress(ValueError):
                    if json.loads(line).get("return") == token:
                        return

    async def call(self, command: str, arguments: dict[str, Any] | None, timeout: float) -> Any:
        rid = next(self.ids)
        message: dict[str, Any] = {"execute": command, "id": rid}
        if arguments:
            message["arguments"] = arguments
        self.writer.write(json.dumps(message).encode() + b"\n")
        await self.writer.drain()
        async with asyncio.timeout(timeout):
            while True:
                line = await self.reader.readline()
                if not line:
                    raise AgentError(f"agent channel closed during {command}")
                try:
                    reply = json.loads(line.strip(b"\xff \r\n"))
                except ValueError:
                    continue
                if not isinstance(reply, dict) or reply.get("id") != rid:
                    continue
                if "error" in reply:
                    raise AgentError(f"{command}: {reply['error'].get('desc', reply['error'])}")
                return reply["return"]


@dataclass
class GuestAgentClient:
    """A real guest's agent, reached through the unix socket of its channel."""

    socket_path: str
    timeout: float = 20.0

    @contextlib.asynccontextmanager
    async def _connect(self) -> AsyncIterator[_Conn]:
        with socket_address(self.socket_path) as address:
            reader, writer = await asyncio.open_unix_connection(address, limit=2**24)
        conn = _Conn(reader, writer)
        try:
            await conn.sync(self.timeout)
            yield conn
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def call(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        async with self._connect() as conn:
            return await conn.call(command, arguments, self.timeout)

    async def wait_ready(self, timeout: float) -> float:
        """Wait until the agent answers (the guest booted or resumed); returns the seconds it
        took. Raises TimeoutError."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            try:
                async with asyncio.timeout(min(5.0, max(deadline - time.monotonic(), 0.1))):
                    async with self._connect() as conn:
                        await conn.call("guest-ping", None, self.timeout)
                return time.monotonic() - started
            except (OSError, TimeoutError, AgentError, asyncio.IncompleteReadError):
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"the guest agent did not answer within {timeout:g}s"
                    ) from None
                await asyncio.sleep(0.5)

    async def sh(self, script: str, *, timeout: float = 60.0) -> Exec:
        """Run ``script`` with /bin/sh in the guest (guest-exec) and wait for it."""
        async with self._connect() as conn:
            pid = (
                await conn.call(
                    "guest-exec",
                    {"path": "/bin/sh", "arg": ["-c", script], "capture-output": True},
                    self.timeout,
                )
            )["pid"]
            deadline = time.monotonic() + timeout
            while True:
                status = await conn.call("guest-exec-status", {"pid": pid}, self.timeout)
                if status["exited"]:
                    return Exec(
                        status.get("exitcode"),
                        base64.b64decode(status.get("out-data", "")).decode(),
                        base64.b64decode(status.get("err-data", "")).decode(),
                    )
                if time.monotonic() > deadline:
                    raise TimeoutError(f"guest command did not end within {timeout:g}s: {script}")
                await asyncio.sleep(0.1)

    async def ok(self, script: str, *, timeout: float = 60.0) -> str:
        """``sh`` that must exit 0; returns its stdout."""
        result = await self.sh(script, timeout=timeout)
        assert result.exitcode == 0, f"{script!r} failed ({result.exitcode}): {result.err}"
        return result.out

    async def read_file(self, path: str) -> bytes | None:
        """A file's content through guest-file-open/read, or None if it does not exist."""
        async with self._connect() as conn:
            try:
                handle = await conn.call(
                    "guest-file-open", {"path": path, "mode": "r"}, self.timeout
                )
            except AgentError as exc:
                if "No such file" in str(exc):
                    return None
                raise
            data = b""
            try:
                while True:
                    chunk = await conn.call(
                        "guest-file-read", {"handle": handle, "count": 65536}, self.timeout
                    )
                    data += base64.b64decode(chunk["buf-b64"])
                    if chunk["eof"]:
                        return data
            finally:
                await conn.call("guest-file-close", {"handle": handle}, self.timeout)

    async def write_file(self, path: str, data: bytes) -> None:
        async with self._connect() as conn:
            handle = await conn.call("guest-file-open", {"path": path, "mode": "w"}, self.timeout)
            try:
                await conn.call(
                    "guest-file-write",
                    {"handle": handle, "buf-b64": base64.b64encode(data).decode()},
                    self.timeout,
                )
                await conn.call("guest-file-flush", {"handle": handle}, self.timeout)
            finally:
                await conn.call("guest-file-close", {"handle": handle}, self.timeout)
