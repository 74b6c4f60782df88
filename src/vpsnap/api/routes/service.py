"""Service endpoints: liveness, readiness, and the human pages behind problem ``type`` links."""

from __future__ import annotations

import html

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from vpsnap import __version__
from vpsnap.api.deps import ServicesDep
from vpsnap.api.openapi import problem_responses
from vpsnap.api.params import ErrorCodePath
from vpsnap.api.schemas import VersionOut
from vpsnap.domain.errors import NotFound
from vpsnap.domain.problems import CATALOGUE
from vpsnap.metrics import render

router = APIRouter(tags=["Service"])


@router.get("/healthz", operation_id="healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/api/version", operation_id="getVersion", response_model=VersionOut)
async def version() -> VersionOut:
    """The server's version, for `vpsnap version` and support requests (no key needed)."""
    return VersionOut(name="vpsnap", version=__version__, api_versions=["v2"])


@router.get(
    "/readyz",
    operation_id="readyz",
    # Not a problem document: the same report as the 200, saying which check is down.
    responses={503: {"description": "Not ready: `checks` says which dependency is down."}},
)
async def readyz(services: ServicesDep, request: Request) -> JSONResponse:
    """The database and the hypervisor (in a process that has one) are reachable: 503 when one
    is not. A shared rate-limit storage (Redis) that does not answer is reported as
    `rate_limits` with status `degraded`, still 200: the process serves, counting in its own
    memory, and a balancer must not take every API process out because Redis is down
    (docs/scale-out.md)."""
    checks = await services.readiness()
    ready = all(v == "ok" for v in checks.values())
    degraded = False
    counter = request.app.state.rate_limits.counter
    if counter.shared:
        checks["rate_limits"] = await counter.readiness()
        degraded = checks["rate_limits"] != "ok"
    status = "unavailable" if not ready else "degraded" if degraded else "ok"
    return JSONResponse({"status": status, "checks": checks}, status_code=200 if ready else 503)


@router.get("/metrics", operation_id="metrics", response_class=PlainTextResponse)
async def metrics(services: ServicesDep) -> Response:
    """Prometheus metrics: request latency, job durations, queue depth, snapshots by status,
    reconciliation actions."""
    return Response(await render(services.store), media_type=CONTENT_TYPE_LATEST)


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        f"<title>{html.escape(title)} · vpsnap</title>"
        "<body style='font-family:system-ui;max-width:42rem;margin:2rem auto'>"
        f"{body}</body></html>"
    )


_RETRY_ADVICE = {
    True: "Retrying can help: the same request may succeed later without anyone acting "
    "(the SDK retries it with backoff).",
    False: "Retrying will not help: the same request gets the same answer until the request "
    "or the state it depends on is changed.",
}


def _inline_code(text: str) -> str:
    """``text`` as HTML, its `backticked` spans (the catalogue's Markdown, as the problem
    documents' ``detail`` carries it) as ``<code>``."""
    return "".join(
        f"<code>{html.escape(part)}</code>" if i % 2 else html.escape(part)
        for i, part in enumerate(text.split("`"))
    )


@router.get("/errors", operation_id="listErrorCodes", response_class=HTMLResponse)
async def error_index() -> HTMLResponse:
    """Every problem code this API answers with."""
    items = "".join(
        f"<li><a href='/errors/{code}'><code>{code}</code></a> — {kind.status} "
        f"{html.escape(kind.title)}{' (retryable)' if kind.retryable else ''}</li>"
        for code, kind in sorted(CATALOGUE.items())
    )
    return HTMLResponse(_page("Error codes", f"<h1>Error codes</h1><ul>{items}</ul>"))


@router.get(
    "/errors/{code}",
    operation_id="describeErrorCode",
    response_class=HTMLResponse,
    responses=problem_responses("not_found"),
)
async def error_page(code: ErrorCodePath) -> HTMLResponse:
    """The human explanation behind a problem's `type` URL."""
    kind = CATALOGUE.get(code)
    if kind is None:
        raise NotFound(f"There is no error code {code!r}.")
    body = (
        f"<h1>{html.escape(kind.title)}</h1>"
        f"<p>HTTP status <b>{kind.status}</b>, code <code>{html.escape(code)}</code>.</p>"
        f"<p>{_inline_code(kind.explanation)}</p>"
        f"<p>{_RETRY_ADVICE[kind.retryable]}</p>"
        "<p>Branch on the <code>code</code> member of the problem document, never on "
        "<code>detail</code>. Quote the <code>requestId</code> when asking for help.</p>"
        "<p><a href='/errors'>All error codes</a></p>"
    )
    return HTMLResponse(_page(kind.title, body))
