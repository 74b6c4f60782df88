"""The panel's machinery: templates, the signed-in session of a request, the CSRF check of
forms, error pages instead of problem documents, and the security headers of every page."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData

from vpsnap.api.deps import own_origin, services_of
from vpsnap.api.edge import SESSION_CONTEXT
from vpsnap.domain.auth import Scope
from vpsnap.domain.clock import SystemClock, format_timestamp
from vpsnap.domain.errors import CsrfFailed, DomainError, Forbidden, Unauthorized
from vpsnap.domain.problems import kind_of
from vpsnap.domain.users import Role
from vpsnap.services.container import Services
from vpsnap.services.sessions import (
    COOKIE_NAME,
    CSRF_FIELD,
    SessionContext,
    SessionEnded,
    csrf_token_matches,
    from_same_origin,
)

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")

# Every page: our own assets only (no CDN, no inline script), never framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    return moment.strftime("%Y-%m-%d %H:%M UTC")


templates.env.filters["when"] = _when
templates.env.filters["iso"] = lambda m: format_timestamp(m) if m else ""


class LoginRequired(Exception):
    """No live session: the page redirects to the sign-in form."""

    def __init__(self, *, ended: bool) -> None:
        super().__init__("login required")
        self.ended = ended


@dataclass(frozen=True, slots=True)
class Page:
    """The signed-in person and what their role allows, for handlers and templates."""

    context: SessionContext
    services: Services

    @property
    def role(self) -> Role:
        return self.context.user.role

    @property
    def csrf_token(self) -> str:
        return self.context.csrf_token

    def may(self, scope: Scope) -> bool:
        return self.context.principal.has(scope)

    @property
    def may_backup(self) -> bool:
        return self.may(Scope.BACKUP_VM)

    @property
    def may_power(self) -> bool:
        return self.may(Scope.POWER_VM)

    @property
    def may_write(self) -> bool:
        return self.may(Scope.WRITE_VM)

    @property
    def is_owner(self) -> bool:
        return self.role is Role.OWNER

    def require(self, scope: Scope, what: str) -> None:
        if not self.may(scope):
            raise Forbidden(
                f"Your role ({self.role.value}) cannot {what}.",
                extensions={"requiredScopes": [scope.value]},
            )

    def require_owner(self, what: str) -> None:
        if not self.is_owner:
            raise Forbidden(f"Only an owner of the account can {what}.")


def _services(request: Request) -> Services:
    return services_of(request)


async def signed_in(request: Request) -> Page:
    services = _services(request)
    token = request.cookies.get(COOKIE_NAME)
    if not token:
        raise LoginRequired(ended=False)
    # The edge verified the cookie already (to count the request against the user): reuse it.
    verified = request.scope.get("state", {}).get(SESSION_CONTEXT)
    try:
        context = verified or await services.sessions.authenticate(token)
    except SessionEnded:
        raise LoginRequired(ended=True) from None
    request.state.principal = context.principal
    page = Page(context, services)
    request.state.dashboard_page = page  # error pages keep the signed-in header
    return page


SignedIn = Annotated[Page, Depends(signed_in)]


def check_form_origin(request: Request) -> None:
    """Every form POST must come from one of our pages (``Origin``/``Sec-Fetch-Site``)."""
    if not from_same_origin(
        request.headers.get("origin"), request.headers.get("sec-fetch-site"), own_origin(request)
    ):
        raise CsrfFailed("The form was not sent from one of this site's pages.")


async def posted_form(request: Request, page: SignedIn) -> FormData:
    """The body of a signed-in form POST, after the CSRF check: same origin *and* the
    session's token in the form."""
    check_form_origin(request)
    form = await request.form()
    token = form.get(CSRF_FIELD)
    presented = token if isinstance(token, str) else None
    if not csrf_token_matches(request.cookies.get(COOKIE_NAME, ""), presented):
        raise CsrfFailed("The form's security token is missing or belongs to another session.")
    del page  # the dependency guarantees a live session before the form is even read
    return form


Form = Annotated[FormData, Depends(posted_form)]


def field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
    page: Page | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    values: dict[str, Any] = {"page": page, "now": SystemClock().now()}
    values.update(context or {})
    return templates.TemplateResponse(
        request, template, values, status_code=status_code, headers=headers
    )


def redirect(url: str) -> RedirectResponse:
    # 303: the browser follows with GET (post/redirect/get: a reload never re-submits).
    return RedirectResponse(url, status_code=303)


def local_path(candidate: str | None) -> str | None:
    """``candidate`` if it is a path on this site (no scheme, no ``//host``), else None: the
    sign-in form's ``next`` must never send anyone elsewhere."""
    if not candidate or not candidate.startswith("/") or candidate.startswith(("//", "/\\")):
        return None
    return candidate


_ERROR_PAGES = {
    400: ("That request was not right", "Check what you entered and try again."),
    401: ("Sign in needed", "Sign in to continue."),
    403: ("Not allowed", "Your role in this account does not allow this."),
    404: ("Page not found", "There is nothing here, or it belongs to someone else."),
    405: ("Not allowed here", "This address does not accept that kind of request."),
    409: ("That cannot be done right now", "The VPS is not in a state that allows it."),
    429: ("Too many requests", "Wait a moment, then try again."),
    # database_unavailable, node_unavailable, hypervisor_unavailable: conditions that pass.
    503: (
        "Temporarily unavailable",
        "This could not be done just now. Wait a few seconds, then try again.",
    ),
}


def error_page(
    request: Request,
    status: int,
    detail: str | None = None,
    *,
    title: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """The human page for an error status (404 also for another account's things)."""
    default_title, default_detail = _ERROR_PAGES.get(
        status, ("Something went wrong", "Something failed on our side. Try again later.")
    )
    page = getattr(request.state, "dashboard_page", None)
    response = render(
        request,
        "error.html",
        {
            "status": status,
            "title": title or default_title,
            "detail": detail or default_detail,
            "request_id": getattr(request.state, "request_id", None),
        },
        status_code=status,
        page=page,
        headers=headers,
    )
    response.headers.update(SECURITY_HEADERS)
    return response


def domain_error_page(request: Request, error: DomainError) -> Response:
    status = kind_of(error.code).status
    headers = None
    # Every refusal that says when to come back (rate_limited, vps_queue_full,
    # node_unavailable, database_unavailable) says it to a browser too.
    if "retryAfter" in error.extensions:
        headers = {"Retry-After": str(error.extensions["retryAfter"])}
    if isinstance(error, CsrfFailed):
        return error_page(
            request,
            403,
            "This request did not come from a page of this site, so it was refused to "
            "protect your account. Go back, reload the page and try again.",
            title="Request refused",
        )
    if status == 404:
        # Another account's VPS reads exactly like a missing one (no detail that differs).
        return error_page(request, 404)
    if status >= 500:
        return error_page(request, status, headers=headers)
    return error_page(request, status, error.detail, headers=headers)


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class DashboardRoute(APIRoute):
    """A panel route: errors become pages (not problem documents), a missing session
    becomes the sign-in form, and every answer carries the security headers."""

    def get_route_handler(self) -> Handler:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                response = await original(request)
            except LoginRequired as signal:
                target = "/login?next=" + quote(request.url.path, safe="/")
                if signal.ended:
                    target += "&ended=1"
                response = redirect(target)
                if signal.ended:
                    response.delete_cookie(COOKIE_NAME, path="/")
            except Unauthorized:
                response = redirect("/login")
            except DomainError as error:
                response = domain_error_page(request, error)
            except RequestValidationError:
                response = error_page(request, 400)
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            response.headers.setdefault("Cache-Control", "no-store")
            return response

        return handler
