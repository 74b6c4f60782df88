"""`vpsnap audit` and `vpsnap webhooks` against a real server (and a real receiver on
127.0.0.1): tables for people, the API's JSON for scripts, the secret shown once, the
confirmation before a delete, and the exit codes of refusals."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tests.live_server import LiveServer
from tests.webhook_receiver import Receiver
from vpsnap.cli.commands import audit as audit_commands
from vpsnap.cli.commands import webhooks as webhook_commands
from vpsnap.cli.entry import cli as app
from vpsnap.client import ACTOR_KINDS, EVENT_TYPES
from vpsnap.domain.audit import ActorKind
from vpsnap.domain.webhooks import SUBSCRIBABLE_EVENTS

pytestmark = [pytest.mark.slow, pytest.mark.qemu]

WEBHOOK_ID = re.compile(r"whk_[0-9a-z]{26}")
UNKNOWN_WEBHOOK = "whk_" + "0" * 26


def vpsnap(server: LiveServer, *args: str, key: str = "full", answer: str | None = None) -> Result:
    options = ["--url", server.url, "--api-key", server.key(key)]
    return CliRunner().invoke(app, [*args, *options], input=answer, env={"COLUMNS": "200"})


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@contextlib.contextmanager
def receiver_thread(**options: Any) -> Iterator[Receiver]:
    """A webhook receiver on its own event loop in a thread (the CLI runs synchronously)."""
    loop = asyncio.new_event_loop()
    receiver = Receiver(**options)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(receiver.start(), loop).result(timeout=10)
    try:
        yield receiver
    finally:
        asyncio.run_coroutine_threadsafe(receiver.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def test_choices_match_the_sdk_and_the_server() -> None:
    # The CLI writes them out so that --help imports no SDK; they must not drift.
    assert webhook_commands.EVENT_TYPES == EVENT_TYPES
    assert set(EVENT_TYPES) == {e.value for e in SUBSCRIBABLE_EVENTS}
    assert audit_commands.ACTOR_KINDS == ACTOR_KINDS
    assert set(ACTOR_KINDS) == {k.value for k in ActorKind}


def test_webhooks_create_list_get_and_delete(api_server: LiveServer) -> None:
    created = vpsnap(
        api_server,
        "webhooks",
        "create",
        "http://127.0.0.1:9/hooks",
        "--event",
        "job.failed",
        "--event",
        "snapshot.created",
        "-d",
        "ci hook",
    )
    assert created.exit_code == 0, created.stderr
    found = WEBHOOK_ID.search(created.stdout)
    assert found is not None
    webhook_id = found.group()
    secret = re.search(r"^secret: (whsec_\S+)$", created.stdout, re.MULTILINE)
    assert secret is not None
    assert "shown only now" in created.stdout
    assert re.search(
        rf"{webhook_id}\s+http://127.0.0.1:9/hooks\s+yes\s+job.failed,snapshot.created",
        created.stdout,
    )

    table = vpsnap(api_server, "webhooks", "list")
    assert table.exit_code == 0, table.stderr
    assert webhook_id in table.stdout
    assert secret.group(1) not in table.stdout  # never shown again
    listed = as_json(vpsnap(api_server, "webhooks", "list", "-o", "json"))["data"]
    assert [w["description"] for w in listed if w["id"] == webhook_id] == ["ci hook"]
    shown = as_json(vpsnap(api_server, "-o", "yaml", "webhooks", "get", webhook_id, "-o", "json"))
    assert (shown["id"], shown["enabled"], shown["lastSuccessAt"]) == (webhook_id, True, None)
    rows = vpsnap(api_server, "webhooks", "get", webhook_id, "--no-header", "--columns", "id,url")
    assert rows.stdout.split() == [webhook_id, "http://127.0.0.1:9/hooks"]

    declined = vpsnap(api_server, "webhooks", "delete", webhook_id, answer="n\n")
    assert declined.exit_code == 1
    assert f"Delete webhook {webhook_id} (http://127.0.0.1:9/hooks)?" in declined.stderr
    assert "delete cancelled: nothing was changed" in declined.stderr
    deleted = vpsnap(api_server, "webhooks", "delete", webhook_id, "--yes")
    assert deleted.exit_code == 0, deleted.stderr
    assert f"deleted webhook {webhook_id}" in deleted.stdout
    again = vpsnap(api_server, "webhooks", "delete", webhook_id, "--yes")
    assert again.exit_code == 3
    assert "[webhook_not_found]" in again.stderr

    audit = as_json(vpsnap(api_server, "audit", "list", "--action", "webhook.delete", "-o", "json"))
    assert webhook_id in {e["target"]["id"] for e in audit["data"]}


def test_a_test_event_and_its_deliveries(api_server: LiveServer) -> None:
    with receiver_thread(statuses=[503]) as receiver:
        created = as_json(vpsnap(api_server, "webhooks", "create", receiver.url, "-o", "json"))
        webhook_id, secret = created["id"], created["secret"]
        try:
            # The first attempt is answered 503: `test --wait` shows it and exits 1.
            failed = vpsnap(api_server, "webhooks", "test", webhook_id, "--wait")
            assert failed.exit_code == 1, failed.stderr
            assert re.search(r"webhook.test\s+1\s+failed\s+503", failed.stdout)
            # The retry gets 204: the next test is delivered at its first attempt.
            ok = as_json(vpsnap(api_server, "webhooks", "test", webhook_id, "--wait", "-o", "json"))
            assert ok["eventType"] == "webhook.test"
            assert ok["delivery"]["outcome"] == "delivered"
            assert ok["delivery"]["statusCode"] == 204
            assert ok["delivery"]["messageId"] == ok["messageId"]
            delivered = [r for r in receiver.delivered() if r.message_id == ok["messageId"]]
            assert len(delivered) == 1
            assert delivered[0].verified(secret)["type"] == "webhook.test"

            queued = vpsnap(api_server, "webhooks", "test", webhook_id)
            assert queued.exit_code == 0, queued.stderr
            assert f"see: vpsnap webhooks deliveries {webhook_id}" in queued.stdout

            # Attempts keep arriving meanwhile (the retry, the queued test): they are newer
            # than any page already read, so a cursor's pages stay the same.
            page = vpsnap(
                api_server, "webhooks", "deliveries", webhook_id, "--limit", "1", "--wide"
            )
            assert page.exit_code == 0, page.stderr
            first = re.search(r"dlv_[0-9a-z]{26}", page.stdout)
            more = re.search(r"--cursor (\S+)", page.stdout)
            assert first is not None
            assert more is not None
            assert f"more: vpsnap webhooks deliveries {webhook_id} --cursor" in page.stdout
            rest = as_json(
                vpsnap(
                    api_server,
                    "webhooks",
                    "deliveries",
                    webhook_id,
                    "--cursor",
                    more.group(1),
                    "-o",
                    "json",
                )
            )
            listing = as_json(
                vpsnap(api_server, "webhooks", "deliveries", webhook_id, "-o", "json")
            )
            assert listing["hasMore"] is False
            assert {d["outcome"] for d in listing["data"]} >= {"failed", "delivered"}
            ids = [d["id"] for d in listing["data"]]
            assert [d["id"] for d in rest["data"]] == ids[ids.index(first.group()) + 1 :]
        finally:
            vpsnap(api_server, "webhooks", "delete", webhook_id, "--yes")


def test_refusals_have_their_exit_codes(api_server: LiveServer) -> None:
    missing = vpsnap(api_server, "webhooks", "get", UNKNOWN_WEBHOOK, "-o", "json")
    assert missing.exit_code == 3
    assert json.loads(missing.stdout)["error"]["code"] == "webhook_not_found"
    private = vpsnap(api_server, "webhooks", "create", "http://10.1.2.3/hook")
    assert private.exit_code == 2
    assert "/url" in private.stderr
    assert "[invalid_request]" in private.stderr
    unknown = vpsnap(api_server, "webhooks", "create", "http://127.0.0.1:9/", "--event", "nope")
    assert unknown.exit_code == 2  # refused by the CLI before any request
    assert "'nope' is not one of" in unknown.stderr
    readonly = vpsnap(api_server, "webhooks", "list", key="readonly")
    assert readonly.exit_code == 5
    assert "[forbidden]" in readonly.stderr
    no_audit = vpsnap(api_server, "audit", "list", key="readonly")
    assert no_audit.exit_code == 5
    assert "[forbidden]" in no_audit.stderr
    bad_cursor = vpsnap(api_server, "audit", "list", "--cursor", "nope")
    assert bad_cursor.exit_code == 2
    assert "[invalid_cursor]" in bad_cursor.stderr


def test_audit_list_of_a_vps(api_server: LiveServer) -> None:
    vps = api_server.add_vps(2)
    made = vpsnap(api_server, "snapshots", "create", vps, "audited")
    assert made.exit_code == 0, made.stderr
    table = vpsnap(api_server, "audit", "list", "--vps", vps)
    assert table.exit_code == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["TIME", "ACTOR", "ACTION", "OUTCOME"]
    assert re.search(
        r"s ago\s+api_key:key_\S+\s+snapshot.create\s+succeeded\s+snapshot:audited", lines[1]
    )
    assert "admin:" in lines[2]
    assert "vps.add" in lines[2]
    data = as_json(
        vpsnap(api_server, "audit", "list", "--vps", vps, "--actor-kind", "admin", "-o", "json")
    )["data"]
    assert [e["action"] for e in data] == ["vps.add"]
    wide = vpsnap(api_server, "audit", "list", "--vps", vps, "--limit", "1", "--wide")
    assert "REQUEST" in wide.stdout
    assert "more: vpsnap audit list --cursor" in wide.stdout
    future = as_json(
        vpsnap(api_server, "audit", "list", "--vps", vps, "--since", "2999-01-01", "-o", "json")
    )
    assert future == {"data": [], "hasMore": False, "nextCursor": None}
