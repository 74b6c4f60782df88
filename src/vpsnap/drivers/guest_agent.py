"""Freeze and thaw guest filesystems through the QEMU guest agent (QGA) around a snapshot.

QGA speaks QMP-style JSON over the VM's virtio-serial channel, but without a greeting, and a
reply can be left in the channel by an earlier client that gave up waiting. The protocol's
answer is ``guest-sync-delimited``: the agent replies after a 0xFF byte, so a client can skip
whatever stale bytes came before. ``qemu.qmp`` cannot parse that delimiter, hence this small
client. Every request also carries an ``id``, which the agent echoes, so a late reply to one
command is never taken for the answer to the next.

No agent (no guest OS, agent not installed) is normal: every wait is short, and the caller
learns whether the filesystems really were frozen, and if not, why (``Quiesce.reason``, shown
to the VPS's owner as the snapshot's ``consistencyReason``; it names no host path).

What a real guest showed (tests/guest, docs/how-snapshots-work.md): an agent killed while the
filesystems are frozen leaves them frozen, and systemd starts a new agent that knows it
(``guest-fsfreeze-status`` answers ``frozen``) but waits for someone to send the thaw. So the
freeze state is read before a freeze (a freeze left in place by a crashed vpsnap or a dead
agent is thawed first, and recorded) and after the thaw, and an agent that stops answering
after a freeze is waited for (``recovery`` seconds) and told to thaw when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import structlog

from vpsnap.drivers.unix_sockets import socket_address

_log = structlog.get_logger(__name__)

_DELIMITER = b"\xff"
_MAX_LINE = 1024 * 1024
_MAX_REASON_CHARS = 300
_RETRY_SECONDS = 0.5


class AgentSilent(Exception):
    """The agent did not answer (in time, or sensibly)."""


class AgentRefused(Exception):
    """The agent answered with an error; ``desc`` is its own words (about the guest)."""

    def __init__(self, command: str, desc: str) -> None:
        super().__init__(f"{command} failed: {desc}")
        self.command = command
        self.desc = desc


@dataclass(slots=True)
class Quiesce:
    """What the freeze around one snapshot achieved. Filled in as it goes; complete once the
    ``frozen_filesystems`` block has exited."""

    frozen: bool = False
    """The agent confirmed that the guest's filesystems were frozen before the snapshot."""
    reason: str | None = None
    """Why they were not (tenant-facing: guest facts only, never a host path)."""
    window_ms: float | None = None
    """From sending the freeze until the thaw was answered (ms): the longest time the guest's
    writes can have waited. None when no freeze was sent."""
    leftover_thawed: bool = False
    """A freeze was already in place before ours (a dead agent's or a crashed vpsnap's) and
    was thawed."""
    thaw_confirmed: bool | None = None
    """After a freeze was sent: the agent said the filesystems are thawed again. False means
    vpsnap could not make sure within ``recovery`` seconds (logged as an error)."""


class _Session:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(secrets.randbelow(2**30))

    async def sync(self, timeout: float) -> None:
        token = secrets.randbelow(2**31)
        # A leading 0xFF makes the agent drop any half-received command from an earlier client.
        await self._send({"execute": "guest-sync-delimited", "arguments": {"id": token}}, b"\xff")
        try:
            async with asyncio.timeout(timeout):
                while True:
                    await self._reader.readuntil(_DELIMITER)
                    reply = _parse(await self._reader.readline())
                    if reply is not None and reply.get("return") == token:
                        return
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise AgentSilent(f"no answer to guest-sync-delimited: {exc!r}") from None

    async def call(self, command: str, timeout: float) -> Any:
        """Send ``command`` and return its ``return`` value.

        Raises ``AgentRefused`` for an error reply, ``AgentSilent`` for none within
        ``timeout`` seconds (or a closed channel), ``OSError`` for a broken socket.
        """
        request_id = next(self._ids)
        await self._send({"execute": command, "id": request_id})
        try:
            async with asyncio.timeout(timeout):
                while True:
                    line = await self._reader.readline()
                    if not line:
                        raise AgentSilent(f"the agent hung up during {command}")
                    reply = _parse(line)
                    # An agent that echoes no ids (not QEMU's) is taken at its word.
                    if reply is None or reply.get("id", request_id) != request_id:
                        continue
                    if "error" in reply:
                        raise AgentRefused(command, _error_text(reply["error"]))
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
    """The guest agent of one VM, reached through the unix socket of its channel.

    ``timeout`` bounds each ordinary exchange (handshake, status, thaw); ``freeze_timeout``
    the freeze itself, which first writes out the guest's dirty data and so takes seconds
    under write load; ``recovery`` how long vpsnap keeps trying to thaw a guest whose agent
    stopped answering after a freeze (it is restarted by the guest's init, frozen state known).
    """

    def __init__(
        self,
        socket_path: str,
        timeout: float,
        *,
        freeze_timeout: float | None = None,
        recovery: float = 30.0,
    ) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self.freeze_timeout = freeze_timeout if freeze_timeout is not None else timeout
        self.recovery = recovery

    @contextlib.asynccontextmanager
    async def frozen_filesystems(self) -> AsyncIterator[Quiesce]:
        """Freeze guest filesystems for the block; yields a ``Quiesce`` saying whether they
        really are frozen (and why not).

        Once a freeze has been sent, a thaw is always sent at the end, also when the freeze
        seemed to fail or the block raised: a freeze the agent carried out after we stopped
        waiting must not leave the guest's disks frozen.
        """
        quiesce = Quiesce()
        session = await self._connect()
        if session is None:
            quiesce.reason = "the guest agent's channel could not be opened"
            yield quiesce
            return
        loop = asyncio.get_running_loop()
        freeze_sent_at: float | None = None
        try:
            try:
                await session.sync(self.timeout)
                quiesce.leftover_thawed = await self._thaw_leftover(session)
                freeze_sent_at = loop.time()
                await session.call("guest-fsfreeze-freeze", self.freeze_timeout)
            except AgentRefused as exc:
                quiesce.reason = _refused_reason(exc)
            except (AgentSilent, OSError) as exc:
                quiesce.reason = self._silent_reason(freeze_sent=freeze_sent_at is not None)
                _log.info("guest_agent_freeze_skipped", socket=self.socket_path, error=str(exc))
            else:
                quiesce.frozen = True
            yield quiesce
        finally:
            if freeze_sent_at is not None:
                quiesce.thaw_confirmed = await self._thaw(session)
                quiesce.window_ms = round((loop.time() - freeze_sent_at) * 1000, 1)
            await session.close()

    def _silent_reason(self, *, freeze_sent: bool) -> str:
        if freeze_sent:
            return (
                "the guest agent did not finish freezing the guest's filesystems within "
                f"{self.freeze_timeout:g} s"
            )
        return f"the guest agent did not answer within {self.timeout:g} s"

    async def _connect(self) -> _Session | None:
        try:
            async with asyncio.timeout(self.timeout):
                with socket_address(self.socket_path) as address:
                    reader, writer = await asyncio.open_unix_connection(address, limit=_MAX_LINE)
        except (TimeoutError, OSError) as exc:
            _log.info("guest_agent_unreachable", socket=self.socket_path, reason=repr(exc))
            return None
        return _Session(reader, writer)

    async def _thaw_leftover(self, session: _Session) -> bool:
        """Thaw a freeze that is already in place before ours; True if there was one."""
        try:
            state = await session.call("guest-fsfreeze-status", self.timeout)
        except AgentRefused:
            return False  # an agent without the command (or with it disabled): nothing known
        if state != "frozen":
            return False
        # Nobody waits for this freeze any more (vpsnap thaws its own before it lets go), so it
        # is a dead agent's or a crashed vpsnap's: the guest's writes have hung since then.
        await session.call("guest-fsfreeze-thaw", self.timeout)
        _log.warning("guest_agent_leftover_freeze_thawed", socket=self.socket_path)
        return True

    async def _thaw(self, session: _Session) -> bool:
        """Thaw, then read the state back; keep trying while the agent is away (restarting)
        until ``recovery`` seconds have passed. True once the agent says ``thawed``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.recovery
        first = True
        while True:
            try:
                if not first:
                    # The channel may hold replies to what the previous agent never answered.
                    await session.sync(min(self.timeout, max(deadline - loop.time(), 0.1)))
                try:
                    await session.call("guest-fsfreeze-thaw", self.timeout)
                except AgentRefused as exc:
                    # Seen: an agent that cannot run its fsfreeze hook refuses the thaw too,
                    # frozen or not. What counts is the state it reports.
                    _log.info("guest_agent_thaw_refused", socket=self.socket_path, error=str(exc))
                state = await session.call("guest-fsfreeze-status", self.timeout)
                if state == "thawed":
                    if not first:
                        _log.warning("guest_agent_thawed_after_recovery", socket=self.socket_path)
                    return True
                error = f"guest-fsfreeze-status says {state!r} after the thaw"
            except (AgentSilent, AgentRefused) as exc:
                error = str(exc)
            except OSError as exc:
                # The channel itself is gone (QEMU ended): no agent can be reached through it.
                _log.error("guest_agent_thaw_failed", socket=self.socket_path, error=repr(exc))
                return False
            first = False
            if loop.time() >= deadline:
                # Nothing more can be done from here; an operator must see it.
                _log.error(
                    "guest_agent_thaw_failed",
                    socket=self.socket_path,
                    error=error,
                    waited_seconds=self.recovery,
                )
                return False
            _log.info("guest_agent_thaw_retry", socket=self.socket_path, error=error)
            await asyncio.sleep(min(_RETRY_SECONDS, max(deadline - loop.time(), 0)))


def _refused_reason(exc: AgentRefused) -> str:
    what = "freeze" if exc.command == "guest-fsfreeze-freeze" else "prepare the freeze"
    return f"the guest agent could not {what}: {exc.desc}"[:_MAX_REASON_CHARS]


def _error_text(error: object) -> str:
    if isinstance(error, dict):
        desc = error.get("desc") or error.get("class")
        if desc:
            return str(desc)
    return str(error)


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line.strip(b"\xff \r\n") or b"null")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
