"""One real vpsnap server for the client command tests (see tests/live_server.py); the admin
command tests do not use it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.live_server import LiveServer


@pytest.fixture(scope="session")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(
        tmp_path_factory.mktemp("cli-server"),
        # `vpsnap webhooks` tests register a receiver on 127.0.0.1 (refused by default) and
        # wait for its delivery attempts, checked for every 0.2 s instead of 2 s.
        VPSNAP_WEBHOOK_ALLOWED_NETWORKS="127.0.0.1/32",
        VPSNAP_WEBHOOK_DELIVERY_INTERVAL_SECONDS="0.2",
    )
    yield live
    live.stop()


@pytest.fixture(autouse=True)
def private_config(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test reads or writes the user's own contexts or completion cache."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("VPSNAP_CONFIG", str(home / "config.toml"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    for name in ("VPSNAP_URL", "VPSNAP_API_KEY", "VPSNAP_CONTEXT"):
        monkeypatch.delenv(name, raising=False)
