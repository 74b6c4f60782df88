"""A short-lived QMP session with a running QEMU, on top of the ``qemu.qmp`` library.

Every call connects, does its work and disconnects: QEMU serves one client per monitor socket,
so holding a session open would lock out everyone else (an operator's ``socat``, another vpsnap
process). Every wait is bounded, and every failure becomes a domain error whose ``detail`` says
what the VM could not do (the socket path and QEMU's own words go to ``log_detail``).

One owner per connection. A ``Monitor`` runs one command at a time (its own lock), and the
library's session set-up and tear-down are never cancelled half-way: ``qemu.qmp`` checks its
own state with assertions there, so a cancellation landing in them (a timeout, a request that
went away) can surface as an ``AssertionError`` instead of an error vpsnap understands. A peer
that does not answer in time is made to fail by shutting the socket down under the library;
a tear-down always runs to its end, even when its caller is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Mapping
from typing import Any

import structlog
from qemu.qmp import ConnectError, EventListener, ExecuteError, Message, QMPClient, QMPError

from vpsnap.domain.errors import HypervisorError
from vpsnap.drivers.unix_sockets import socket_address

_log = structlog.get_logger(__name__)

_JOB_EVENT = "JOB_STATUS_CHANGE"
# A job has nothing more to do in these states; "concluded" is where a job waits for dismiss.
_JOB_FINISHED = frozenset({"concluded", "null"})
_CANCEL_GRACE_SECONDS = 5.0
# How long an aborted set-up or a tear-down may take once its socket is shut down.
_SETTLE_SECONDS = 5.0

# What a command asks of the VM, in the customer's words (QMP command names stay in the log).
_DOING = {
    "transaction": "take the disk snapshot",
    "snapshot-save": "save the VM's RAM state",
    "snapshot-load": "load the VM's RAM state",
    "snapshot-delete": "delete the snapshot",
    "blockdev-snapshot-delete-internal-sync": "delete the snapshot",
    "cont": "resume the VM",
    "stop": "pause the VM",
    "system_reset": "reset the VM",
    "system_powerdown": "press the VM's power button",
    "system_wakeup": "wake the VM up",
    "quit": "power the VM off",
}

# Close tasks whose caller was cancelled: kept referenced until they end (asyncio keeps only
# weak references to tasks).
_CLOSING: set[asyncio.Task[None]] = set()


def doing(command: str) -> str:
    """What ``command`` asks of the VM, for an error the customer reads."""
    if command.startswith("query-") or command in ("qom-get", "qom-list"):
        return "report its state"
    return _DOING.get(command, "carry out the operation")


class MonitorGone(HypervisorError):
    """Nothing listens on the monitor socket: the QEMU process is not running."""


class MonitorBusy(HypervisorError):
    """The monitor did not answer in time (another client holds it, or QEMU is stuck)."""


class QemuRefused(HypervisorError):
    """QEMU answered a command with an error (``qemu_error`` is its message)."""

    def __init__(self, detail: str, *, qemu_error: str, log_detail: str) -> None:
        super().__init__(detail, log_detail=log_detail)
        self.qemu_error = qemu_error


class Monitor:
    """One connected QMP session. Obtain it from ``open_monitor``."""

    def __init__(self, client: QMPClient, socket_path: str, timeout: float) -> None:
        self._client = client
        self.socket_path = socket_path
        self.timeout = timeout
        # One command at a time: the session has one owner even if a caller shares it.
        self._turn = asyncio.Lock()

    async def execute(
        self,
        command: str,
        arguments: Mapping[str, object] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Run one command and return its ``return`` value.

        Raises ``QemuRefused`` (QEMU's error), ``MonitorBusy`` (no answer within the timeout)
        or ``HypervisorError`` (the connection broke).
        """
        limit = self.timeout if timeout is None else timeout
        where = f"{command} on {self.socket_path}"
        try:
            async with asyncio.timeout(limit):
                async with self._turn:
                    # Cancelling a pending execute is safe in qemu.qmp: the reply is dropped.
                    return await self._client.execute(command, arguments)
        except ExecuteError as exc:
            raise QemuRefused(
                f"The VM's hypervisor refused to {doing(command)}.",
                qemu_error=str(exc),
                log_detail=f"QEMU refused {where}: {exc}",
            ) from exc
        except TimeoutError:
            raise MonitorBusy(
                f"The VM's hypervisor did not answer within {limit:g}s when asked to "
                f"{doing(command)} (it is busy or stuck).",
                log_detail=f"QEMU did not answer {where} within {limit:g}s",
            ) from None
        except (QMPError, EOFError, OSError) as exc:
            raise HypervisorError(
                f"The connection to the VM's hypervisor broke while it was asked to "
                f"{doing(command)}.",
                log_detail=f"the QMP connection broke during {where}: {exc!r}",
            ) from exc

    async def execute_until(self, command: str, event: str, *, timeout: float) -> None:
        """Run ``command`` and wait for QEMU's ``event`` that says it took effect (QMP's
        ``system_reset`` only *requests* a reset; QEMU's main loop carries it out later and
        then sends ``RESET``)."""
        listener = EventListener(event)
        with self._client.listen(listener):
            await self.execute(command)
            try:
                async with asyncio.timeout(timeout):
                    await listener.get()
            except TimeoutError:
                raise MonitorBusy(
                    f"The VM's hypervisor did not {doing(command)} within {timeout:g}s.",
                    log_detail=f"no {event} event within {timeout:g}s after {command} on "
                    f"{self.socket_path}",
                ) from None

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
        QEMU keeps no trace and the id can be used again by a re-run. A failed job raises
        ``QemuRefused`` with the job's error.
        """
        listener = EventListener(_JOB_EVENT, event_filter=lambda event: _job_id(event) == job_id)
        with self._client.listen(listener):
            await self.execute(command, {"job-id": job_id, **arguments})
            try:
                await _wait_finished(listener, timeout)
            except TimeoutError:
                await self._cancel(job_id, listener)
                raise HypervisorError(
                    f"The VM's hypervisor did not {doing(command)} within {timeout:g}s; the "
                    "attempt was cancelled.",
                    log_detail=f"QEMU {command} on {self.socket_path} did not finish within "
                    f"{timeout:g}s; it was cancelled",
                ) from None
            error = await self._job_error(job_id)
            await self._dismiss(job_id)
        if error is not None:
            raise QemuRefused(
                f"The VM's hypervisor could not {doing(command)}.",
                qemu_error=error,
                log_detail=f"QEMU {command} on {self.socket_path} failed: {error}",
            )

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
            _log.warning("qmp_job_cancel_failed", job_id=job_id, error=_log_text(exc))

    async def _dismiss(self, job_id: str) -> None:
        try:
            await self.execute("job-dismiss", {"id": job_id})
        except HypervisorError as exc:
            # Already gone (auto-dismissed, or QEMU dropped it): nothing is left behind.
            _log.debug("qmp_job_dismiss_failed", job_id=job_id, error=_log_text(exc))


@contextlib.asynccontextmanager
async def open_monitor(socket_path: str, timeout: float) -> AsyncIterator[Monitor]:
    """Connect (greeting and capability negotiation included) within ``timeout``.

    Raises ``MonitorGone`` when nothing listens on the socket, ``MonitorBusy`` when QEMU does
    not complete the greeting in time, ``HypervisorError`` for anything else; never an
    exception of the QMP library itself.
    """
    client = QMPClient(f"vpsnap:{socket_path}")
    sock = await _connect_socket(socket_path, timeout)
    try:
        await _open_session(client, sock, socket_path, timeout)
    except BaseException:
        sock.close()
        raise
    try:
        yield Monitor(client, socket_path, timeout)
    finally:
        await _close(client, sock)


async def _connect_socket(socket_path: str, timeout: float) -> socket.socket:
    # Our own code: cancelling it at any point leaves nothing behind but a closed socket.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)  # noqa: FBT003 - the socket API
    try:
        async with asyncio.timeout(timeout):
            with socket_address(socket_path) as address:
                await asyncio.get_running_loop().sock_connect(sock, address)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        sock.close()
        raise MonitorGone(
            "The VM is not running (nothing answers on its monitor).",
            log_detail=f"no QEMU is listening on {socket_path}: {exc!r}",
        ) from exc
    except TimeoutError:
        sock.close()
        raise _busy(socket_path, timeout) from None
    except OSError as exc:
        sock.close()
        raise HypervisorError(
            "The VM's monitor cannot be reached.",
            log_detail=f"cannot connect to the QMP socket {socket_path}: {exc!r}",
        ) from exc
    except BaseException:
        sock.close()
        raise
    return sock


async def _open_session(
    client: QMPClient, sock: socket.socket, socket_path: str, timeout: float
) -> None:
    """Greeting and negotiation in a task of its own, which is never cancelled from outside:
    on a timeout (or when our caller is cancelled) the socket is shut down, the library fails
    by itself, and its clean-up runs to the end."""
    session = asyncio.ensure_future(client.connect(sock))
    try:
        done, _ = await asyncio.wait({session}, timeout=timeout)
    except BaseException:
        await _abort(client, session, sock)
        raise
    if not done:
        await _abort(client, session, sock)
        raise _busy(socket_path, timeout)
    failure = session.exception()
    if failure is None:
        return
    if isinstance(failure, ConnectError) and isinstance(
        failure.exc, EOFError | ConnectionResetError | BrokenPipeError
    ):
        # QEMU hung up during the greeting: it is quitting (a restart, a stop).
        raise MonitorGone(
            "The VM is not running (its hypervisor hung up).",
            log_detail=f"QEMU on {socket_path} hung up during the greeting: {failure}",
        ) from failure
    raise HypervisorError(
        "The VM's monitor cannot be reached.",
        log_detail=f"cannot open a QMP session on {socket_path}: {failure!r}",
    ) from failure


async def _abort(client: QMPClient, session: asyncio.Future[None], sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    await _settle(session)
    if not session.cancelled() and session.exception() is None:
        # The greeting completed just as we gave up: end that session like any other, or its
        # reader's EOF would be left for the garbage collector to report.
        await asyncio.shield(_disconnect(client, sock))


async def _settle(task: asyncio.Future[None]) -> None:
    """Wait for ``task`` to end on its own; cancel it only if it outlives the grace period."""
    done, _ = await asyncio.shield(asyncio.wait({task}, timeout=_SETTLE_SECONDS))
    if not done:
        task.cancel()
        await asyncio.wait({task})
    if not task.cancelled() and task.exception() is not None:
        _log.debug("qmp_session_abandoned", error=repr(task.exception()))


async def _close(client: QMPClient, sock: socket.socket) -> None:
    # After `quit` QEMU hangs up first and the library reports that EOF from disconnect();
    # the session is over either way. The tear-down is shielded: a caller cancelled meanwhile
    # does not cut it in half (which is when the library's state assertions fire).
    closing = asyncio.ensure_future(_disconnect(client, sock))
    try:
        await asyncio.shield(closing)
    except asyncio.CancelledError:
        _CLOSING.add(closing)
        closing.add_done_callback(_CLOSING.discard)
        raise


async def _disconnect(client: QMPClient, sock: socket.socket) -> None:
    try:
        done, _ = await asyncio.wait(
            {asyncio.ensure_future(client.disconnect())}, timeout=_SETTLE_SECONDS
        )
        if done:
            done.pop().result()
        else:
            # QEMU does not take the goodbye: make the library's streams end.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
    except (QMPError, EOFError, OSError) as exc:
        _log.debug("qmp_disconnect", error=repr(exc))
    except Exception as exc:  # a library bug must not become the caller's error
        _log.warning("qmp_disconnect_failed", error=repr(exc))
    finally:
        sock.close()


def _busy(socket_path: str, timeout: float) -> MonitorBusy:
    return MonitorBusy(
        f"The VM's monitor did not answer within {timeout:g}s (it is busy with another "
        "operation, or stuck).",
        log_detail=f"the QMP socket {socket_path} did not answer within {timeout:g}s "
        "(another client may be connected to it)",
    )


def _log_text(exc: BaseException) -> str:
    return getattr(exc, "log_detail", None) or str(exc)


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
