"""The panel's pages about VPSes: the list, a VPS with its snapshots, the actions on them
(create, restore, delete, power), live job updates over Server-Sent Events and the history."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from sse_starlette import EventSourceResponse

from vpsnap.api.deps import RateLimitsDep
from vpsnap.dashboard import words
from vpsnap.dashboard.web import DashboardRoute, Form, Page, SignedIn, field, redirect, render
from vpsnap.domain.auth import Scope
from vpsnap.domain.errors import Conflict, DomainError, NotFound
from vpsnap.domain.model import Job, PowerAction, PowerState, Snapshot, Vps
from vpsnap.domain.rules import DESCRIPTION_MAX_LENGTH, is_valid_snapshot_name
from vpsnap.services.panel import VpsPage
from vpsnap.services.snapshots import CreateSnapshot

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

# Messages after a redirect, by key (never text from the URL: nothing can be injected).
NOTICES = {
    "create": "Snapshot queued. Its row shows the progress.",
    "restore": "Restore queued. Its row shows the progress.",
    "delete": "Deletion queued. The snapshot's slot is free already.",
    "power": "Power action queued.",
    "slots": "Snapshot slots changed.",
}
NAME_RULE = (
    "1 to 40 characters: letters, digits, hyphen (-) and underscore (_). "
    "Unique on this VPS, ignoring case."
)
# The live stream re-reads the jobs at least this often, even without a change signal.
EVENTS_WAIT_SECONDS = 15.0


def _vps_context(page: Page, view: VpsPage) -> dict[str, Any]:
    vps, usage = view.vps, view.usage
    return {
        "view": view,
        "vps": vps,
        "create_refusal": words.create_refusal(view.can_create, vps, usage, page.role),
        "restore_refusal": words.restore_refusal(view.can_restore, vps),
        "slots_text": words.slots_text(usage),
        "running": view.power_state is PowerState.RUNNING,
        "name_rule": NAME_RULE,
        "description_max": DESCRIPTION_MAX_LENGTH,
        "words": words,
        "names": json.dumps([s.name for s in view.snapshots]),
    }


@router.get("/vps")
async def vps_list(request: Request, page: SignedIn, q: str | None = None) -> Response:
    overview = await page.services.panel.overview(page.context.principal, q)
    return render(
        request,
        "vps_list.html",
        {"overview": overview, "q": q or "", "words": words},
        page=page,
    )


@router.get("/vps/{vps_id}")
async def vps_page(
    request: Request, vps_id: str, page: SignedIn, notice: str | None = None
) -> Response:
    view = await page.services.panel.vps_page(page.context.principal, vps_id)
    context = _vps_context(page, view)
    context["notice"] = NOTICES.get(notice or "")
    return render(request, "vps.html", context, page=page)


@router.post("/vps/{vps_id}/snapshots")
async def create_snapshot(
    request: Request, vps_id: str, page: SignedIn, form: Form, rate_limits: RateLimitsDep
) -> Response:
    page.require(Scope.BACKUP_VM, "take snapshots")
    name, description = field(form, "name"), field(form, "description")
    errors: dict[str, str] = {}
    if not is_valid_snapshot_name(name):
        errors["name"] = f"This name cannot be used. {NAME_RULE}"
    if len(description) > DESCRIPTION_MAX_LENGTH:
        errors["description"] = f"At most {DESCRIPTION_MAX_LENGTH} characters."
    if not errors:
        await rate_limits.hit_vps_mutation(page.context.principal.account_id, vps_id)
        try:
            await page.services.snapshots.create(
                page.context.principal,
                vps_id,
                CreateSnapshot(
                    name=name,
                    description=description or None,
                    include_memory_state=form.get("include_memory") == "on",
                ),
            )
        except Conflict as conflict:
            if conflict.code != "snapshot_name_taken":
                raise
            errors["name"] = f"There is a snapshot named {name} already (names ignore case)."
        else:
            return redirect(f"/vps/{vps_id}?notice=create")
    view = await page.services.panel.vps_page(page.context.principal, vps_id)
    context = _vps_context(page, view)
    context.update(errors=errors, values={"name": name, "description": description})
    return render(request, "vps.html", context, page=page, status_code=400)


async def _snapshot_or_404(page: Page, vps_id: str, name: str) -> tuple[Vps, Snapshot]:
    principal = page.context.principal
    vps = await page.services.panel.vps(principal, vps_id)
    snapshot = await page.services.panel.snapshot(principal, vps_id, name)
    if snapshot is None:
        raise NotFound(f"{vps.name} has no snapshot named {name!r}.")
    return vps, snapshot


@router.get("/vps/{vps_id}/snapshots/{name}/restore")
async def confirm_restore(request: Request, vps_id: str, name: str, page: SignedIn) -> Response:
    page.require(Scope.BACKUP_VM, "restore snapshots")
    vps, snapshot = await _snapshot_or_404(page, vps_id, name)
    return render(
        request,
        "confirm.html",
        {
            "vps": vps,
            "heading": f"Restore snapshot {snapshot.name}?",
            "consequence": (
                f"The disks of {vps.name} go back to how they were at "
                f"{snapshot.created_at:%Y-%m-%d %H:%M} UTC. Everything written to them since "
                "then is lost. The VPS keeps its power state (a running VPS is stopped, rolled "
                "back and started again). This snapshot and newer ones are kept."
            ),
            "action": f"/vps/{vps.id}/snapshots/{snapshot.name}/restore",
            "button": f"Restore {snapshot.name}",
        },
        page=page,
    )


@router.post("/vps/{vps_id}/snapshots/{name}/restore")
async def restore(
    vps_id: str, name: str, page: SignedIn, form: Form, rate_limits: RateLimitsDep
) -> Response:
    del form
    page.require(Scope.BACKUP_VM, "restore snapshots")
    await rate_limits.hit_vps_mutation(page.context.principal.account_id, vps_id)
    await page.services.snapshots.restore(page.context.principal, vps_id, name)
    return redirect(f"/vps/{vps_id}?notice=restore")


@router.get("/vps/{vps_id}/snapshots/{name}/delete")
async def confirm_delete(request: Request, vps_id: str, name: str, page: SignedIn) -> Response:
    page.require(Scope.BACKUP_VM, "delete snapshots")
    vps, snapshot = await _snapshot_or_404(page, vps_id, name)
    return render(
        request,
        "confirm.html",
        {
            "vps": vps,
            "heading": f"Delete snapshot {snapshot.name}?",
            "consequence": (
                f"The restore point {snapshot.name} of {vps.name} is removed from its disks "
                "and cannot be restored any more. Its slot is free at once. The VPS itself is "
                "not changed."
            ),
            "action": f"/vps/{vps.id}/snapshots/{snapshot.name}/delete",
            "button": f"Delete {snapshot.name}",
        },
        page=page,
    )


@router.post("/vps/{vps_id}/snapshots/{name}/delete")
async def delete(
    vps_id: str, name: str, page: SignedIn, form: Form, rate_limits: RateLimitsDep
) -> Response:
    del form
    page.require(Scope.BACKUP_VM, "delete snapshots")
    await rate_limits.hit_vps_mutation(page.context.principal.account_id, vps_id)
    await page.services.snapshots.delete(page.context.principal, vps_id, name)
    return redirect(f"/vps/{vps_id}?notice=delete")


def _power_action(action: str) -> PowerAction:
    try:
        chosen = PowerAction(action)
    except ValueError:
        raise NotFound(f"There is no power action {action!r}.") from None
    if chosen is PowerAction.RESET:
        # The panel offers what the issue lists; reset stays an API action.
        raise NotFound("The panel has no reset action.")
    return chosen


@router.get("/vps/{vps_id}/power/{action}")
async def confirm_power(request: Request, vps_id: str, action: str, page: SignedIn) -> Response:
    chosen = _power_action(action)
    page.require(Scope.POWER_VM, "power VPSes on or off")
    vps = await page.services.panel.vps(page.context.principal, vps_id)
    label = words.POWER_ACTIONS[chosen.value]
    return render(
        request,
        "confirm.html",
        {
            "vps": vps,
            "heading": f"{label} {vps.name}?",
            "consequence": words.POWER_CONSEQUENCES.get(
                chosen.value, f"{vps.name} is started if it is not running."
            ),
            "action": f"/vps/{vps.id}/power/{chosen.value}",
            "button": f"{label} {vps.name}",
        },
        page=page,
    )


@router.post("/vps/{vps_id}/power/{action}")
async def power(
    vps_id: str, action: str, page: SignedIn, form: Form, rate_limits: RateLimitsDep
) -> Response:
    del form
    chosen = _power_action(action)
    page.require(Scope.POWER_VM, "power VPSes on or off")
    await rate_limits.hit_vps_mutation(page.context.principal.account_id, vps_id)
    await page.services.power.request(page.context.principal, vps_id, chosen)
    return redirect(f"/vps/{vps_id}?notice=power")


def job_event(job: Job) -> dict[str, str]:
    error = words.job_error(job)
    data = {
        "id": job.id,
        "status": job.status.value,
        "statusText": words.JOB_STATUS[job.status],
        "title": words.job_title(job),
        "progress": job.progress,
        "done": job.status.is_terminal,
        "errorTitle": error[0] if error else None,
        "errorDetail": error[1] if error else None,
    }
    return {"event": "job", "data": json.dumps(data)}


@router.get("/vps/{vps_id}/events")
async def vps_events(vps_id: str, page: SignedIn) -> Response:
    """Server-Sent Events: a ``job`` event whenever one of the VPS's recent jobs changes
    state, then ``idle`` once none is active (the page stops listening then).

    Woken by the same job-change signal as the API's long-poll (``JobService.wait``), and
    re-reads at least every ``EVENTS_WAIT_SECONDS`` in case a signal came from elsewhere.
    """
    principal = page.context.principal
    panel, jobs = page.services.panel, page.services.jobs
    await panel.vps(principal, vps_id)  # 404 now, before the stream starts

    async def stream() -> AsyncIterator[dict[str, str]]:
        seen: dict[str, str] = {}
        while True:
            recent = await panel.recent_jobs(principal, vps_id)
            for job in reversed(recent):
                if seen.get(job.id) != job.status.value:
                    seen[job.id] = job.status.value
                    yield job_event(job)
            active = [j for j in recent if not j.status.is_terminal]
            if not active:
                yield {"event": "idle", "data": "{}"}
                return
            # Jobs of one VPS run one at a time, oldest first: the next change is its.
            try:
                await jobs.wait(principal, active[-1].id, EVENTS_WAIT_SECONDS)
            except DomainError:
                continue  # the job was purged meanwhile: read again

    return EventSourceResponse(stream(), ping=15, headers={"Cache-Control": "no-store"})


@router.get("/vps/{vps_id}/jobs")
async def job_history(
    request: Request,
    vps_id: str,
    page: SignedIn,
    before: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    history = await page.services.panel.job_history(page.context.principal, vps_id, before)
    return render(
        request, "jobs.html", {"history": history, "vps": history.vps, "words": words}, page=page
    )
