"""QMP sessions under timeouts, hang-ups and cancellation (issue 9, kind 11d).

``qemu.qmp`` asserts its own state while it sets a session up and tears it down; cancelled in
the middle of that it can raise ``AssertionError`` (which once made ``GET /api/v2/vps/{id}`` a
500) or leave a session nobody ends. Against a stand-in QMP server that is late or hangs up at
every step, and with timeouts and outside cancellations swept across each step: only vpsnap's
own errors come out, the event loop reports nothing left unhandled, and no task is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest

from vpsnap.domain.errors import DomainError
from vpsnap.drivers.qmp import open_monitor
from vpsnap.drivers.unix_sockets import listening_socket

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

GREETING = {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": []}}
STEP = 0.02
MODES = (
    "answers",
    "late-greeting",
    "late-capabilities",
    "late-reply",
    "hangs-up-after-greeting",
    "hangs-up-after-capabilities",
    "hangs-up-on-command",
)


class _Requests:
    """JSON objects as a QMP client sends them: one after the other, no newline needed."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._buffer = ""
        self._decoder = json.JSONDecoder()

    async def next(self) -> dict[str, Any] | None:
        while True:
            text = self._buffer.lstrip()
            if text:
                try:
                    request, end = self._decoder.raw_decode(text)
                except ValueError:
                    pass
                else:
                    self._buffer = text[end:]
                    return dict(request)
            chunk = await self._reader.read(4096)
            if not chunk:
                return None
            self._buffer += chunk.decode()


async def _serve(mode: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """QEMU's side of a session, late or hanging up at the step ``mode`` names."""
    requests = _Requests(reader)
    try:
        if mode == "late-greeting":
            await asyncio.sleep(STEP)
        writer.write(json.dumps(GREETING).encode() + b"\r\n")
        await writer.drain()
        if mode == "hangs-up-after-greeting":
            return
        await requests.next()
        if mode == "late-capabilities":
            await asyncio.sleep(STEP)
        if mode == "hangs-up-after-capabilities":
            return
        writer.write(b'{"return": {}}\r\n')
        await writer.drain()
        while (request := await requests.next()) is not None:
            if mode == "hangs-up-on-command":
                return
            if mode == "late-reply":
                await asyncio.sleep(STEP)
            reply = {"return": {"status": "running", "running": True}, "id": request.get("id")}
            writer.write(json.dumps(reply).encode() + b"\r\n")
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def qmp_server(path: Path, mode: str) -> AsyncIterator[str]:
    server = await asyncio.start_unix_server(
        lambda r, w: _serve(mode, r, w), sock=listening_socket(path / f"{mode}.sock")
    )
    try:
        yield str(path / f"{mode}.sock")
    finally:
        server.close()


def _library_eof(context: dict[str, Any]) -> bool:
    # qemu.qmp's own reader/writer gather, when the peer hangs up in the last step of a session
    # set-up: the library ends the session and raises ConnectError, but leaves that gather's
    # EOFError to the garbage collector. Nothing of vpsnap's is lost; QEMU quitting at that
    # moment does the same.
    return "_GatheringFuture" in str(context.get("message")) and isinstance(
        context.get("exception"), EOFError
    )


@contextlib.contextmanager
def loop_complaints() -> Any:
    """What the event loop would log as unhandled (e.g. "exception was never retrieved")."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(
        lambda _loop, context: None if _library_eof(context) else seen.append(context)
    )
    try:
        yield seen
    finally:
        loop.set_exception_handler(previous)


async def query(socket: str, timeout: float) -> str:
    async with open_monitor(socket, timeout) as monitor:
        status = await monitor.execute("query-status")
    return str(status["status"])


async def settle() -> None:
    """Let background tear-downs end, then collect what the garbage collector reports."""
    import gc

    for _ in range(50):
        if len(asyncio.all_tasks()) <= 1:
            break
        await asyncio.sleep(0.02)
    gc.collect()
    await asyncio.sleep(0)


@pytest.mark.parametrize("mode", MODES)
async def test_timeouts_at_every_step_give_only_vpsnaps_errors(mode: str, tmp_path: Path) -> None:
    outcomes: Counter[str] = Counter()
    async with qmp_server(tmp_path, mode) as socket:
        with loop_complaints() as complaints:
            for i in range(24):
                timeout = STEP * (0.25 + i / 8)  # around every step's delay
                try:
                    outcomes[await query(socket, timeout)] += 1
                except DomainError as exc:
                    outcomes[type(exc).__name__] += 1
            await settle()
    assert set(outcomes) <= {"running", "MonitorBusy", "MonitorGone", "HypervisorError"}, outcomes
    assert complaints == []
    assert len(asyncio.all_tasks()) == 1  # this test's own
    if mode == "answers":
        # The shortest timeouts may pass before even a prompt greeting on a busy machine.
        assert outcomes["running"] >= 12, outcomes


@pytest.mark.parametrize("mode", MODES)
async def test_a_caller_cancelled_at_every_step_leaves_nothing_behind(
    mode: str, tmp_path: Path
) -> None:
    outcomes: Counter[str] = Counter()
    async with qmp_server(tmp_path, mode) as socket:
        with loop_complaints() as complaints:
            for i in range(40):
                try:
                    # The caller goes away (a request cancelled, a shutdown) at any moment.
                    async with asyncio.timeout(STEP * i / 10):
                        outcomes[await query(socket, 1.0)] += 1
                except TimeoutError:
                    outcomes["cancelled"] += 1
                except DomainError as exc:
                    outcomes[type(exc).__name__] += 1
            await settle()
    assert set(outcomes) <= {
        "running",
        "cancelled",
        "MonitorBusy",
        "MonitorGone",
        "HypervisorError",
    }, outcomes
    assert complaints == []
    assert len(asyncio.all_tasks()) == 1


async def test_one_monitor_shared_by_two_coroutines_runs_one_command_at_a_time(
    tmp_path: Path,
) -> None:
    async with qmp_server(tmp_path, "late-reply") as socket, open_monitor(socket, 5) as monitor:
        results = await asyncio.gather(*(monitor.execute("query-status") for _ in range(5)))
    assert [r["status"] for r in results] == ["running"] * 5
