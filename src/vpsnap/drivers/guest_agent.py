"""Freeze and thaw guest filesystems through the QEMU guest agent (QGA) around a snapshot.

QGA speaks QMP-style JSON over the VM's virtio-serial channel, but without a greeting, and a
reply can be left in the channel by an earlier client that gave up waiting. The protocol's
answer is ``guest-sync-delimited``: the agent replies after a 0xFF byte, so a client can skip
whatever stale bytes came before. ``qemu.qmp`` cannot parse that delimiter, hence this small
client. No agent (no guest OS, agent not installed) is normal: every wait is short, and the
caller learns whether the filesystems really were frozen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import structlog

_log = structlog.get_logger(__name__)

_DELIMITER = b"\xff"
_MAX_LINE = 1024 * 1024


class AgentSilent(Exception):
    """The agent did not answer (in time, or sensibly)."""


class _Session:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def sync(self, timeout: float) -> None:
        token = secrets.randbelow(2**31)
        # A leading 0xFF makes the agent drop any half-received command from an earlier client.
        await self._send({"execute": "guest-sync-delimited", "arguments": {"id": token}}, b"\xff")
        try:
            async with asyncio.timeout(timeout):
                await self._reader.readuntil(_DELIMITER)
                while True:
                    reply = _parse(await self._reader.readline())
                    if reply is not None and reply.get("return") == token:
                        return
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise AgentSilent(f"no answer to guest-sync-delimited: {exc!r}") from None

    async def call(self, command: str, timeout: float) -> Any:
        await self._send({"execute": command})
        try:
            async with asyncio.timeout(timeout):
                while True:
                    line = await self._reader.readline()
                    if not line:
                        raise AgentSilent(f"the agent hung up during {command}")
                    reply = _parse(line)
                    if reply is None:
                        continue
                    if "error" in reply:
                        raise AgentSilent(f"{command} failed: {reply['error']}")
                    if "return" in reply:
                        return reply["return"]
        except TimeoutError:
            raise AgentSilent(f"no answer to {command} within {timeout:g}s") from None

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    async def _send(self, message: dict[str, Any], prefix: bytes = b"") -> None:
        self._writer.write(prefix + json.dumps(message).encode() + b"\n")
        await self._writer.drain()


class GuestAgent:
    """The guest agent of one VM, reached through the unix socket of its channel."""

    def __init__(self, socket_path: str, timeout: float) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    @contextlib.asynccontextmanager
    async def frozen_filesystems(self) -> AsyncIterator[bool]:
        """Freeze guest filesystems for the block; yields whether they really are frozen.

        Once a freeze has been sent, a thaw is always sent at the end, also when the freeze
        seemed to fail or the block raised: a freeze the agent carried out after we stopped
        waiting must not leave the guest's disks frozen.
        """
        session = await self._connect()
        if session is None:
            yield False
            return
        freeze_sent = False
        try:
            try:
                await session.sync(self.timeout)
                freeze_sent = True
                await session.call("guest-fsfreeze-freeze", self.timeout)
            except (AgentSilent, OSError) as exc:
                _log.info("guest_agent_freeze_skipped", socket=self.socket_path, reason=str(exc))
                frozen = False
            else:
                frozen = True
            yield frozen
        finally:
            if freeze_sent:
                await self._thaw(session)
            await session.close()

    async def _connect(self) -> _Session | None:
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_unix_connection(
                    self.socket_path, limit=_MAX_LINE
                )
        except (TimeoutError, OSError) as exc:
            _log.info("guest_agent_unreachable", socket=self.socket_path, reason=repr(exc))
            return None
        return _Session(reader, writer)

    async def _thaw(self, session: _Session) -> None:
        try:
            await session.call("guest-fsfreeze-thaw", self.timeout)
        except (AgentSilent, OSError) as exc:
            # Nothing more can be done from here; an operator must see it.
            _log.error("guest_agent_thaw_failed", socket=self.socket_path, error=str(exc))


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line.strip(b"\xff \r\n") or b"null")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
