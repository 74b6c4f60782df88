"""A short-lived QMP session with a running QEMU, on top of the ``qemu.qmp`` library.

Every call connects, does its work and disconnects: QEMU serves one client per monitor socket,
so holding a session open would lock out everyone else (an operator's ``socat``, another vpsnap
process). Every wait is bounded, and every failure becomes a domain error.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import structlog
from qemu.qmp import ConnectError, EventListener, ExecuteError, Message, QMPClient, QMPError

from vpsnap.domain.errors import HypervisorError

_log = structlog.get_logger(__name__)

_JOB_EVENT = "JOB_STATUS_CHANGE"
# A job has nothing more to do in these states; "concluded" is where a job waits for dismiss.
_JOB_FINISHED = frozenset({"concluded", "null"})
_CANCEL_GRACE_SECONDS = 5.0


class MonitorGone(HypervisorError):
    """Nothing listens on the monitor socket: the QEMU process is not running."""


class MonitorBusy(HypervisorError):
    """The monitor did not answer in time (another client holds it, or QEMU is stuck)."""


class Monitor:
    """One connected QMP session. Obtain it from ``open_monitor``."""

    def __init__(self, client: QMPClient, socket_path: str, timeout: float) -> None:
        self._client = client
        self.socket_path = socket_path
        self.timeout = timeout

    async def execute(
        self,
        command: str,
        arguments: Mapping[str, object] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Run one command and return its ``return`` value."""
        limit = self.timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                return await self._client.execute(command, arguments)
        except ExecuteError as exc:
            raise HypervisorError(f"QEMU refused {command}: {exc}") from exc
        except TimeoutError:
            raise MonitorBusy(
                f"QEMU did not answer {command} within {limit:g}s on {self.socket_path}"
            ) from None
        except (QMPError, EOFError, OSError) as exc:
            raise HypervisorError(
                f"the QMP connection to {self.socket_path} broke during {command}: {exc}"
            ) from exc

    async def human(self, command_line: str) -> str:
        """A human-monitor (HMP) command, for things QMP has no command for (tests' qemu-io)."""
        output = await self.execute("human-monitor-command", {"command-line": command_line})
        return str(output)

    async def run_job(
        self,
        command: str,
        arguments: Mapping[str, object],
        *,
        job_id: str,
        timeout: float,
    ) -> None:
        """Start a QEMU job (``snapshot-save`` and friends), wait for it, dismiss it.

        The listener is registered before the command is sent, so a job that finishes at once
        cannot slip past. A job that fails or times out is still dismissed (after a cancel), so
        QEMU keeps no trace and the id can be used again by a re-run.
        """
        listener = EventListener(_JOB_EVENT, event_filter=lambda event: _job_id(event) == job_id)
        with self._client.listen(listener):
            await self.execute(command, {"job-id": job_id, **arguments})
            try:
                await _wait_finished(listener, timeout)
            except TimeoutError:
                await self._cancel(job_id, listener)
                raise HypervisorError(
                    f"QEMU {command} did not finish within {timeout:g}s; it was cancelled"
                ) from None
            error = await self._job_error(job_id)
            await self._dismiss(job_id)
        if error is not None:
            raise HypervisorError(f"QEMU {command} failed: {error}")

    async def _job_error(self, job_id: str) -> str | None:
        jobs = await self.execute("query-jobs")
        for job in jobs:
            if job.get("id") == job_id:
                error = job.get("error")
                return str(error) if error is not None else None
        return None

    async def _cancel(self, job_id: str, listener: EventListener) -> None:
        # Best effort: the caller reports the timeout whatever happens here.
        try:
            await self.execute("job-cancel", {"id": job_id})
            await _wait_finished(listener, _CANCEL_GRACE_SECONDS)
            await self._dismiss(job_id)
        except (HypervisorError, TimeoutError) as exc:
            _log.warning("qmp_job_cancel_failed", job_id=job_id, error=str(exc))

    async def _dismiss(self, job_id: str) -> None:
        try:
            await self.execute("job-dismiss", {"id": job_id})
        except HypervisorError as exc:
            # Already gone (auto-dismissed, or QEMU dropped it): nothing is left behind.
            _log.debug("qmp_job_dismiss_failed", job_id=job_id, error=str(exc))


@contextlib.asynccontextmanager
async def open_monitor(socket_path: str, timeout: float) -> AsyncIterator[Monitor]:
    """Connect (greeting and capability negotiation included) within ``timeout``."""
    client = QMPClient(f"vpsnap:{socket_path}")
    try:
        async with asyncio.timeout(timeout):
            await client.connect(socket_path)
    except TimeoutError:
        await _close(client)
        raise MonitorBusy(
            f"the QMP socket {socket_path} did not answer within {timeout:g}s "
            "(another client may be connected to it)"
        ) from None
    except ConnectError as exc:
        await _close(client)
        if isinstance(exc.exc, FileNotFoundError | ConnectionRefusedError):
            raise MonitorGone(f"no QEMU is listening on {socket_path}") from exc
        raise HypervisorError(f"cannot connect to the QMP socket {socket_path}: {exc}") from exc
    try:
        yield Monitor(client, socket_path, timeout)
    finally:
        await _close(client)


async def _close(client: QMPClient) -> None:
    # After `quit` QEMU hangs up first and the library reports that EOF from disconnect();
    # the session is over either way.
    try:
        await client.disconnect()
    except (QMPError, EOFError, OSError) as exc:
        _log.debug("qmp_disconnect", error=str(exc))


async def _wait_finished(listener: EventListener, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while True:
            event = await listener.get()
            if _job_status(event) in _JOB_FINISHED:
                return


def _job_id(event: Message) -> str | None:
    data = event.get("data")
    return data.get("id") if isinstance(data, dict) else None


def _job_status(event: Message) -> str | None:
    data = event.get("data")
    return data.get("status") if isinstance(data, dict) else None
