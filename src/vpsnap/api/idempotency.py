"""The ``Idempotency-Key`` middleware (pure ASGI): replays the first answer to a POST/DELETE.

It sits inside ``EdgeMiddleware``, so the request id, the per-caller rate limit and the body
size limit apply first (a replay is a request like any other for those), and the edge adds
the *current* request's ``X-Request-Id`` and rate-limit headers to whatever this sends.

For a state-changing request that carries the header and a valid credential, it reads the
whole body (the edge has capped its size), asks ``IdempotencyService.begin`` whether to run,
and then either sends the stored answer (with ``Idempotent-Replayed: true``), a problem
(``422 idempotency_key_reused``, ``409 idempotency_key_in_use``, ``400 invalid_request``), or
runs the app with the body replayed to it while buffering its response. The buffered answer is
stored *before* it is sent, so a client that has seen an answer can never retry into a
``409 idempotency_key_in_use``. Decisions live in the service; this only speaks ASGI.
"""

from __future__ import annotations

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vpsnap.api.edge import Authenticator, presented_credential
from vpsnap.api.problems import problem_response
from vpsnap.domain.auth import Principal
from vpsnap.domain.errors import DomainError, Unauthorized
from vpsnap.services.idempotency import (
    MAX_STORED_BODY_BYTES,
    Answer,
    IdempotencyService,
    IdempotentRequest,
    parse_key,
)

log = structlog.get_logger("vpsnap.idempotency")

# Every method that can change state (the API has POST and DELETE); GET, HEAD and OPTIONS are
# never touched, whatever headers they carry.
_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_HEADER = b"idempotency-key"
_REPLAYED = (b"idempotent-replayed", b"true")


class IdempotencyMiddleware:
    def __init__(
        self, app: ASGIApp, *, service: IdempotencyService, credentials: Authenticator
    ) -> None:
        self.app = app
        self.service = service
        self.credentials = credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        values = _key_headers(scope)
        # No key space without an account: an unauthenticated request goes on to its usual 401.
        principal = await self._principal(scope) if values else None
        if principal is None:
            await self.app(scope, receive, send)
            return
        try:
            key = parse_key(values)
        except DomainError as error:
            await problem_response(scope, error)(scope, receive, send)
            return
        assert key is not None  # values is not empty
        body, disconnect = await _read_body(receive)
        replay_receive = _replaying(body, disconnect, receive)
        if disconnect is not None:
            # The client left before its body arrived: nothing will be answered to anyone.
            await self.app(scope, replay_receive, send)
            return
        query = scope.get("query_string", b"").decode("latin-1")
        target = scope["path"] + (f"?{query}" if query else "")
        request = IdempotentRequest.of(principal.account_id, key, scope["method"], target, body)
        await self._handle(scope, replay_receive, send, request)

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, request: IdempotentRequest
    ) -> None:
        try:
            stored = await self.service.begin(request)
        except DomainError as error:
            await problem_response(scope, error)(scope, receive, send)
            return
        if stored is None:
            await self._run(scope, receive, send, request)
            return
        log.info(
            "idempotent_replay",
            request_id=scope.get("state", {}).get("request_id"),
            key=request.key,
            status=stored.status,
        )
        await _send_replay(stored, send)

    async def _principal(self, scope: Scope) -> Principal | None:
        state = scope.get("state", {})
        if "principal" in state:  # the edge verified the credential already
            principal: Principal | None = state["principal"]
            return principal
        credential = presented_credential(scope)
        if credential is None:
            return None
        try:
            return await self.credentials.authenticate(credential)
        except Unauthorized:
            return None

    async def _run(
        self, scope: Scope, receive: Receive, send: Send, request: IdempotentRequest
    ) -> None:
        capture = _Capture(send)
        try:
            await self.app(scope, receive, capture)
        except Exception:
            if capture.answer() is None:
                # The handler failed (the edge turns this into a 500): free the key so that a
                # retry really runs. Cancellation (a BaseException) is deliberately left out:
                # its outcome is unknown, and a key left in flight can never run twice.
                await self._abandon(request)
                raise
            # The answer was complete before the failure (something after it failed, as a
            # background task would): the client gets it, as it would without this middleware.
            await self._settle(scope, request, capture)
            raise
        await self._settle(scope, request, capture)

    async def _settle(self, scope: Scope, request: IdempotentRequest, capture: _Capture) -> None:
        """Store (or free) the key for the captured answer, then let the answer out."""
        answer = capture.answer()
        if answer is None:
            # Streamed past the buffer, or never completed: nothing replayable was captured.
            await self._abandon(request)
        else:
            try:
                await self.service.finish(request, answer)
            except Exception:
                # The handler's work is done and its answer must reach the client. The key
                # stays in flight (409 to retries until it expires) rather than risk running
                # the request twice.
                log.exception(
                    "idempotency_store_failed",
                    request_id=scope.get("state", {}).get("request_id"),
                    key=request.key,
                )
        await capture.flush()

    async def _abandon(self, request: IdempotentRequest) -> None:
        try:
            await self.service.abandon(request)
        except Exception:
            log.exception("idempotency_abandon_failed", key=request.key)


def _key_headers(scope: Scope) -> list[str]:
    """Every Idempotency-Key header of a state-changing HTTP request (none for anything else)."""
    if scope["type"] != "http" or scope["method"] not in _UNSAFE_METHODS:
        return []
    return [value.decode("latin-1") for name, value in scope["headers"] if name == _HEADER]


async def _read_body(receive: Receive) -> tuple[bytes, Message | None]:
    """The whole request body, and the disconnect message if the client left before its end."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), message
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), None


def _replaying(body: bytes, disconnect: Message | None, receive: Receive) -> Receive:
    """A receive channel that hands the app the body already read, then the real channel."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
    if disconnect is not None:
        pending.append(disconnect)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


class _Capture:
    """A ``send`` that holds the response back until the answer has been stored.

    A response over ``MAX_STORED_BODY_BYTES``, or one using a message type that cannot be
    replayed (e.g. ``http.response.pathsend``), is let through as it comes instead: it will not
    be stored, and holding it would only cost memory.
    """

    def __init__(self, send: Send) -> None:
        self._send = send
        self._held: list[Message] = []
        self._status: int | None = None
        self._headers: list[tuple[str, str]] = []
        self._body = bytearray()
        self._complete = False
        self._passing_through = False

    async def __call__(self, message: Message) -> None:
        if self._passing_through:
            await self._send(message)
            return
        self._held.append(message)
        kind = message["type"]
        if kind == "http.response.start":
            self._status = int(message["status"])
            self._headers = [
                (name.decode("latin-1").lower(), value.decode("latin-1"))
                for name, value in message.get("headers", [])
            ]
        elif kind == "http.response.body":
            self._body += message.get("body", b"")
            self._complete = not message.get("more_body", False)
        else:
            self._complete = False
            await self._pass_through()
            return
        if len(self._body) > MAX_STORED_BODY_BYTES:
            await self._pass_through()

    async def _pass_through(self) -> None:
        self._passing_through = True
        await self.flush()

    def answer(self) -> Answer | None:
        if self._passing_through or not self._complete or self._status is None:
            return None
        return Answer(self._status, tuple(self._headers), bytes(self._body))

    async def flush(self) -> None:
        held, self._held = self._held, []
        for message in held:
            await self._send(message)


async def _send_replay(answer: Answer, send: Send) -> None:
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in answer.headers]
    # Framing is recomputed, as Starlette does: no Content-Length on answers without a body.
    if answer.status >= 200 and answer.status not in {204, 304}:
        headers.append((b"content-length", str(len(answer.body)).encode("ascii")))
    headers.append(_REPLAYED)
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body, "more_body": False})
