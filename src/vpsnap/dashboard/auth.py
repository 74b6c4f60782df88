"""Signing in and out of the panel: ``GET /login``, ``POST /login``, ``POST /logout``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from vpsnap.dashboard.config import DashboardConfig, dashboard_config
from vpsnap.dashboard.web import (
    DashboardRoute,
    Form,
    SignedIn,
    check_form_origin,
    field,
    local_path,
    redirect,
    render,
)
from vpsnap.services.container import Services
from vpsnap.services.sessions import COOKIE_NAME, SIGN_IN_FAILED, SessionEnded, SignInFailed

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

ConfigDep = Annotated[DashboardConfig, Depends(dashboard_config)]
HOME = "/vps"


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _login_form(
    request: Request,
    *,
    email: str = "",
    next_path: str | None = None,
    message: str | None = None,
    notice: str | None = None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    return render(
        request,
        "login.html",
        {"email": email, "next": next_path or "", "message": message, "notice": notice},
        status_code=status_code,
        headers=headers,
    )


@router.get("/")
async def home() -> Response:
    return redirect(HOME)


@router.get("/login")
async def login_page(
    request: Request,
    next: str | None = None,  # noqa: A002 - the conventional name of the parameter
    ended: str | None = None,
    signed_out: str | None = None,
) -> Response:
    token = request.cookies.get(COOKIE_NAME)
    if token:
        try:
            await _services(request).sessions.authenticate(token)
        except SessionEnded:
            pass
        else:
            return redirect(local_path(next) or HOME)
    notice = None
    if ended:
        notice = "Your session has ended. Sign in again."
    elif signed_out:
        notice = "You have signed out."
    return _login_form(request, next_path=local_path(next), notice=notice)


@router.post("/login")
async def login_submit(request: Request, config: ConfigDep) -> Response:
    # No session yet, so no form token: the origin check alone stops login CSRF (a foreign
    # page signing the victim in to the attacker's account).
    check_form_origin(request)
    form = await request.form()
    email, password = field(form, "email"), form.get("password")
    next_path = local_path(field(form, "next"))
    ip = _client_ip(request)
    wait = await config.throttle.retry_after(ip, email)
    if wait is not None:
        minutes = max(1, round(wait / 60))
        return _login_form(
            request,
            email=email,
            next_path=next_path,
            message=(
                "Too many failed sign-in attempts. Try again in "
                f"{minutes} minute{'s' if minutes != 1 else ''}."
            ),
            status_code=429,
            headers={"Retry-After": str(wait)},
        )
    try:
        signed = await _services(request).sessions.sign_in(
            email,
            password if isinstance(password, str) else "",
            replacing=request.cookies.get(COOKIE_NAME),
        )
    except SignInFailed:
        await config.throttle.failed(ip, email)
        return _login_form(request, email=email, next_path=next_path, message=SIGN_IN_FAILED)
    await config.throttle.succeeded(ip, email)
    response = redirect(next_path or HOME)
    response.set_cookie(
        COOKIE_NAME,
        signed.token,
        max_age=config.session_lifetime_seconds,
        path="/",
        httponly=True,
        samesite="lax",
        secure=config.secure_cookies,
    )
    return response


@router.post("/logout")
async def logout(request: Request, page: SignedIn, form: Form) -> Response:
    del page, form  # signed in, and the form passed the CSRF check
    token = request.cookies.get(COOKIE_NAME)
    if token:
        await _services(request).sessions.sign_out(token)
    response = redirect("/login?signed_out=1")
    response.delete_cookie(COOKIE_NAME, path="/")
    return response
