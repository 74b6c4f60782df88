"""A real HTTP receiver on 127.0.0.1 for webhook tests: records every request and verifies its
signature with the ``standardwebhooks`` library, as a tenant's receiver would."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int

    @property
    def message_id(self) -> str:
        return self.headers["webhook-id"]

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data

    def verified(self, secret: str) -> dict[str, Any]:
        """The payload, if the signature verifies (raises ``WebhookVerificationError``)."""
        data: dict[str, Any] = Webhook(secret).verify(self.body, self.headers)
        return data

    def verifies(self, secret: str) -> bool:
        try:
            self.verified(secret)
        except WebhookVerificationError:
            return False
        return True


@dataclass
class Receiver:
    """Answers each request with the next status of ``statuses`` (then ``default``)."""

    statuses: list[int] = field(default_factory=list)
    default: int = 204
    received: list[Received] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/vpsnap"

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def delivered(self) -> list[Received]:
        """Requests answered 2xx."""
        return [r for r in self.received if 200 <= r.answered < 300]

    def types(self) -> list[str]:
        return [str(r.payload()["type"]) for r in self.delivered()]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            request_line, *lines = head.split("\r\n")
            _, path, _ = request_line.split(" ", 2)
            headers: dict[str, str] = {}
            for line in lines:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            status = self.statuses.pop(0) if self.statuses else self.default
            self.received.append(Received(path, headers, body, status))
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def running_receiver(**options: Any) -> AsyncIterator[Receiver]:
    receiver = Receiver(**options)
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()
