"""Test transports and a TCP proxy that put real traffic where a test can see or break it."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import httpx


@dataclass
class Exchange:
    request: httpx.Request
    response: httpx.Response
    sent_at: float
    answered_at: float  # when the answer's head arrived (a long-poll holds it back)


class Recording(httpx.HTTPTransport):
    """The real network, with every exchange kept. With ``ignore_long_poll`` the server acts as
    one without long-poll: it never sees ``Prefer`` and never answers ``Preference-Applied``."""

    def __init__(self, *, ignore_long_poll: bool = False) -> None:
        super().__init__()
        self.exchanges: list[Exchange] = []
        self.attempts = 0  # every request, answered or not
        self.ignore_long_poll = ignore_long_poll

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        sent_at = time.monotonic()
        prefer = request.headers.get("Prefer")
        if self.ignore_long_poll:
            # The server never sees the preference, so it answers at once and says nothing.
            request.headers.pop("Prefer", None)
        response = super().handle_request(request)
        if prefer is not None:
            request.headers["Prefer"] = prefer  # recorded as the SDK sent it
        self.exchanges.append(Exchange(request, response, sent_at, time.monotonic()))
        return response

    def to(self, path_prefix: str) -> list[Exchange]:
        return [e for e in self.exchanges if e.request.url.path.startswith(path_prefix)]


class DroppingProxy:
    """A TCP proxy on 127.0.0.1 that forwards everything, except that it closes the client's
    connection instead of passing on the answer to the first request of ``method`` whose
    request line contains ``path_part``: the server did the work, the client never hears of it.
    """

    def __init__(self, upstream_port: int, path_part: bytes, method: bytes = b"POST") -> None:
        self.upstream_port = upstream_port
        self.path_part = path_part
        self.method = method
        self.dropped = 0
        self.heads: list[bytes] = []  # the head of every request of that method, as received
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []

    def __enter__(self) -> Self:
        self._spawn(self._accept)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=30)
            with self._lock:
                self._sockets += [client, upstream]
            state = {"drop_next_answer": False}
            self._spawn(self._client_to_server, client, upstream, state)
            self._spawn(self._server_to_client, upstream, client, state)

    def _client_to_server(
        self, client: socket.socket, upstream: socket.socket, state: dict[str, bool]
    ) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if data.startswith(self.method + b" "):
                    self.heads.append(data.split(b"\r\n\r\n", 1)[0])
                    request_line = data.split(b"\r\n", 1)[0]
                    with self._lock:
                        if self.dropped == 0 and self.path_part in request_line:
                            state["drop_next_answer"] = True
                            self.dropped += 1
                upstream.sendall(data)
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_WR)

    def _server_to_client(
        self, upstream: socket.socket, client: socket.socket, state: dict[str, bool]
    ) -> None:
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                if state["drop_next_answer"]:
                    # The answer exists (the server finished the request): lose it. shutdown,
                    # not close: it ends the connection even while the other pump reads it.
                    for sock in (client, upstream):
                        sock.shutdown(socket.SHUT_RDWR)
                    return
                client.sendall(data)
        with contextlib.suppress(OSError):
            client.close()

    def idempotency_keys(self) -> list[str]:
        keys = []
        for head in self.heads:
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"idempotency-key":
                    keys.append(value.strip().decode())
        return keys
