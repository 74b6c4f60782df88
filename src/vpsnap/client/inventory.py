"""``client.vps``: the caller's VPSes, finding one by id, name or primary IP, power actions,
and buying snapshot slots (upgrade options and config)."""

from __future__ import annotations

import builtins
import ipaddress
import re
from typing import Any
from urllib.parse import quote

from vpsnap.client._http import exchange, fetch
from vpsnap.client._plan import Plan, get, mutation
from vpsnap.client._runners import (
    Bound,
    M,
    Page,
    PageQuery,
    Runner,
    api_method,
    api_pager,
    page_query,
)
from vpsnap.client.errors import AmbiguousVps, VpsNotFound
from vpsnap.client.jobs import Operation, parse_operation
from vpsnap.client.models import ConfigResult, UpgradeOptions, Vps, parse_vps_page

VpsRef = str | Vps
"""A VPS: a ``Vps``, its id (``vps_…``), its name, or its primary IP."""

_VPS_ID = re.compile(r"^vps_[0-9a-z]{26}$")
PAGE_SIZE = 100


def looks_like_vps_id(ref: str) -> bool:
    return _VPS_ID.match(ref) is not None


def _is_ip(ref: str) -> bool:
    try:
        ipaddress.ip_address(ref)
    except ValueError:
        return False
    return True


def vps_path(vps_id: str, *rest: str) -> str:
    return "/".join(["/api/v2/vps", quote(vps_id, safe=""), *(quote(p, safe="") for p in rest)])


class Inventory(Bound[M]):
    """``client.vps``."""

    def __init__(self, runner: Runner[M]) -> None:
        self._runner = runner

    def _page(
        self, cursor: str | None, limit: int, name: str | None, primary_ip: str | None
    ) -> Plan[Page[Vps]]:
        params = {"limit": str(limit), "cursor": cursor, "name": name, "primaryIp": primary_ip}
        items, next_cursor = yield from fetch(
            get("/api/v2/vps", params), self._runner.policy, parse_vps_page
        )
        return Page(tuple(items), next_cursor)

    def _list(
        self,
        *,
        name: str | None = None,
        primary_ip: str | None = None,
        limit: int = PAGE_SIZE,
        cursor: str | None = None,
    ) -> PageQuery[Vps]:
        """``GET /api/v2/vps``: the account's VPSes, oldest first, as a lazy iterator over
        pages of ``limit`` (1..100) from ``cursor``; optionally only those with this name
        (exact, ignoring case) or primary IP. Nothing is sent until it is iterated."""
        return page_query(lambda at, size: self._page(at, size, name, primary_ip), limit, cursor)

    list = api_pager(_list)

    def _all(
        self, *, name: str | None = None, primary_ip: str | None = None
    ) -> Plan[builtins.list[Vps]]:
        found: builtins.list[Vps] = []
        cursor: str | None = None
        while True:
            page = yield from self._page(cursor, PAGE_SIZE, name, primary_ip)
            found.extend(page.items)
            if page.next_cursor is None:
                return found
            cursor = page.next_cursor

    def _get(self, vps: VpsRef) -> Plan[Vps]:
        """One VPS, by ``Vps``, id, name or primary IP (read fresh from the server)."""
        if isinstance(vps, Vps):
            vps = vps.id
        if looks_like_vps_id(vps):
            return (yield from fetch(get(vps_path(vps)), self._runner.policy, Vps.parse))
        return (yield from self._find(vps))

    get = api_method(_get)

    def _find(self, ref: str) -> Plan[Vps]:
        by_ip = _is_ip(ref)
        what = "primary IP" if by_ip else "name"
        if by_ip:
            matches = yield from self._all(primary_ip=ref)
        else:
            matches = yield from self._all(name=ref)
        if not matches:
            raise VpsNotFound(
                f"no VPS with {what} {ref!r} in this account "
                "(a VPS is given by its id, its name or its primary IP)"
            )
        if len(matches) > 1:
            ids = ", ".join(f"{v.name} ({v.id})" for v in matches)
            raise AmbiguousVps(f"{len(matches)} VPSes have {what} {ref!r}: {ids}; give the id")
        return matches[0]

    def _resolve_id(self, vps: VpsRef) -> Plan[str]:
        """The id of ``vps``; a lookup only for a name or an IP (an id is taken as it is)."""
        if isinstance(vps, Vps):
            return vps.id
        if looks_like_vps_id(vps):
            return vps
        return (yield from self._find(vps)).id

    def _upgrade_options(self, vps: VpsRef) -> Plan[UpgradeOptions]:
        """``GET …/actions/upgrade``: what can be bought (snapshot slots), at what price."""
        vps_id = yield from self._resolve_id(vps)
        return (
            yield from fetch(
                get(vps_path(vps_id, "actions", "upgrade")),
                self._runner.policy,
                UpgradeOptions.parse,
            )
        )

    upgrade_options = api_method(_upgrade_options)

    def _configure(
        self, vps: VpsRef, *, snapshot_slots: int, dry_run: bool = False
    ) -> Plan[ConfigResult]:
        """``POST …/actions/config``: set the VPS's total snapshot slots (a preview with
        ``dry_run``). Needs ``write:vm``; a commit is billed by the operator."""
        vps_id = yield from self._resolve_id(vps)
        body: dict[str, Any] = {"resources": {"snapshotSlots": snapshot_slots}}
        if dry_run:
            body["dryRun"] = True
        return (
            yield from fetch(
                mutation("POST", vps_path(vps_id, "actions", "config"), body),
                self._runner.policy,
                ConfigResult.parse,
            )
        )

    configure = api_method(_configure)

    def _power(self, vps: VpsRef, action: str, body: dict[str, Any] | None) -> Plan[Operation[M]]:
        vps_id = yield from self._resolve_id(vps)
        response = yield from exchange(
            mutation("POST", vps_path(vps_id, "actions", action), body), self._runner.policy
        )
        return parse_operation(self._runner, response)

    def _start(self, vps: VpsRef) -> Plan[Operation[M]]:
        """``POST …/actions/start``: start the VM (nothing changes when it runs). Needs
        ``power:vm``; ``.wait()`` for the job, whose result has ``powerStateAfter``."""
        return (yield from self._power(vps, "start", None))

    start = api_method(_start)

    def _shutdown(self, vps: VpsRef) -> Plan[Operation[M]]:
        """``POST …/actions/shutdown``: ask the guest to power off (ACPI) and wait for it; the
        job fails when the guest ignores it (then ``stop``)."""
        return (yield from self._power(vps, "shutdown", None))

    shutdown = api_method(_shutdown)

    def _stop(self, vps: VpsRef) -> Plan[Operation[M]]:
        """``POST …/actions/stop``: power off at once, like pulling the plug."""
        return (yield from self._power(vps, "stop", None))

    stop = api_method(_stop)

    def _restart(self, vps: VpsRef, *, force: bool = False) -> Plan[Operation[M]]:
        """``POST …/actions/restart``: graceful shutdown and start; ``force``: stop and start."""
        return (yield from self._power(vps, "restart", {"force": True} if force else None))

    restart = api_method(_restart)

    def _reset(self, vps: VpsRef) -> Plan[Operation[M]]:
        """``POST …/actions/reset``: reset at once, like pressing the reset button."""
        return (yield from self._power(vps, "reset", None))

    reset = api_method(_reset)
