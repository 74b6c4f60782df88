"""The panel's pages that change what a VPS or account has: the snapshot schedule, more
snapshot slots (preview, then confirm), and the account's API keys (owners only)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request, Response

from vpsnap.dashboard.web import DashboardRoute, Form, Page, SignedIn, field, redirect, render
from vpsnap.domain.audit import Actor
from vpsnap.domain.auth import Scope
from vpsnap.domain.capacity import SNAPSHOT_SLOTS_KEY, format_amount
from vpsnap.domain.errors import InvalidRequest
from vpsnap.domain.schedules import MAX_INTERVAL_HOURS, MIN_INTERVAL_HOURS
from vpsnap.services.schedules import ScheduleService

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

KEY_EXPIRY_DAYS = (30, 90, 365)


def _schedules(page: Page) -> ScheduleService:
    # As the API builds it: stateless, from the process's store and clock.
    return ScheduleService(page.services.store, page.services.snapshots.clock)


# -- schedule ----------------------------------------------------------------------------------


async def _schedule_page(
    request: Request, page: Page, vps_id: str, *, saved: bool = False, error: str | None = None
) -> Response:
    view = await _schedules(page).get(page.context.principal, vps_id)
    return render(
        request,
        "schedule.html",
        {
            "view": view,
            "vps": view.vps,
            "saved": saved,
            "error": error,
            "min_hours": MIN_INTERVAL_HOURS,
            "max_hours": MAX_INTERVAL_HOURS,
        },
        page=page,
        status_code=400 if error else 200,
    )


@router.get("/vps/{vps_id}/schedule")
async def schedule_page(
    request: Request, vps_id: str, page: SignedIn, saved: str | None = None
) -> Response:
    return await _schedule_page(request, page, vps_id, saved=bool(saved))


@router.post("/vps/{vps_id}/schedule")
async def schedule_save(request: Request, vps_id: str, page: SignedIn, form: Form) -> Response:
    page.require(Scope.WRITE_VM, "change the snapshot schedule")
    try:
        hours = int(field(form, "interval_hours") or MIN_INTERVAL_HOURS)
    except ValueError:
        return await _schedule_page(
            request, page, vps_id, error="The interval must be a whole number of hours."
        )
    await _schedules(page).put(
        page.context.principal,
        vps_id,
        enabled=form.get("enabled") == "on",
        interval_hours=float(hours),
    )
    return redirect(f"/vps/{vps_id}/schedule?saved=1")


# -- more slots ----------------------------------------------------------------------------


@router.get("/vps/{vps_id}/slots")
async def slots_page(request: Request, vps_id: str, page: SignedIn) -> Response:
    options = await page.services.capacity.upgrade_options(page.context.principal, vps_id)
    usage_view = await page.services.panel.vps_page(page.context.principal, vps_id)
    return render(
        request,
        "slots.html",
        {
            "options": options,
            "vps": options.vps,
            "usage": usage_view.usage,
            "format_amount": format_amount,
        },
        page=page,
    )


def _requested_slots(form_value: str) -> int:
    try:
        return int(form_value)
    except ValueError:
        raise InvalidRequest("The number of slots must be a whole number.", []) from None


@router.post("/vps/{vps_id}/slots/preview")
async def slots_preview(request: Request, vps_id: str, page: SignedIn, form: Form) -> Response:
    page.require(Scope.WRITE_VM, "change snapshot slots")
    requested = _requested_slots(field(form, "slots"))
    capacity = page.services.capacity
    vps = await page.services.panel.vps(page.context.principal, vps_id)
    try:
        outcome = await capacity.configure(
            page.context.principal, vps_id, {SNAPSHOT_SLOTS_KEY: requested}, dry_run=True
        )
    except InvalidRequest as invalid:
        detail = "; ".join(e.detail for e in invalid.errors) or invalid.detail
        raise InvalidRequest(detail, invalid.errors) from None
    return render(
        request,
        "slots_preview.html",
        {"vps": vps, "outcome": outcome, "format_amount": format_amount},
        page=page,
    )


@router.post("/vps/{vps_id}/slots")
async def slots_commit(vps_id: str, page: SignedIn, form: Form) -> Response:
    page.require(Scope.WRITE_VM, "change snapshot slots")
    requested = _requested_slots(field(form, "slots"))
    await page.services.capacity.configure(
        page.context.principal, vps_id, {SNAPSHOT_SLOTS_KEY: requested}
    )
    return redirect(f"/vps/{vps_id}?notice=slots")


# -- API keys (owners) -------------------------------------------------------------------------


async def _keys_page(
    request: Request, page: Page, *, error: str | None = None, status_code: int = 200
) -> Response:
    keys = await page.services.credentials.list_for_account(page.context.principal.account_id)
    return render(
        request,
        "keys.html",
        {
            "keys": keys,
            "scopes": [s.value for s in Scope],
            "expiry_days": KEY_EXPIRY_DAYS,
            "error": error,
            "now": page.services.snapshots.clock.now(),
        },
        page=page,
        status_code=status_code,
    )


@router.get("/keys")
async def keys_page(request: Request, page: SignedIn) -> Response:
    page.require_owner("manage API keys")
    return await _keys_page(request, page)


@router.post("/keys")
async def key_create(request: Request, page: SignedIn, form: Form) -> Response:
    page.require_owner("manage API keys")
    chosen = set(form.getlist("scopes"))
    scopes = frozenset(s for s in Scope if s.value in chosen)
    if not scopes:
        return await _keys_page(request, page, error="Choose at least one scope.", status_code=400)
    days = field(form, "expires_in_days")
    expires = None
    if days:
        if not days.isdigit() or int(days) not in KEY_EXPIRY_DAYS:
            return await _keys_page(
                request, page, error="Choose one of the offered expiries.", status_code=400
            )
        expires = timedelta(days=int(days))
    issued = await page.services.credentials.issue_for_account(
        page.context.principal.account_id,
        scopes,
        expires,
        actor=Actor.of(page.context.principal),
    )
    return render(request, "key_created.html", {"issued": issued}, page=page)


@router.post("/keys/{key_id}/revoke")
async def key_revoke(key_id: str, page: SignedIn, form: Form) -> Response:
    del form
    page.require_owner("manage API keys")
    await page.services.credentials.revoke_for_account(
        page.context.principal.account_id, key_id, actor=Actor.of(page.context.principal)
    )
    return redirect("/keys")
