"""One real vpsnap server for the SDK tests (see tests/live_server.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.live_server import LiveServer
from vpsnap.client import Client


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(
        tmp_path_factory.mktemp("sdk-server"),
        # Webhook tests register a receiver on 127.0.0.1 (refused by default) and want its
        # delivery attempts within a fraction of a second, not the default 2 s.
        VPSNAP_WEBHOOK_ALLOWED_NETWORKS="127.0.0.1/32",
        VPSNAP_WEBHOOK_DELIVERY_INTERVAL_SECONDS="0.2",
    )
    yield live
    live.stop()


@pytest.fixture
def client(server: LiveServer) -> Iterator[Client]:
    with Client(server.url, server.key()) as sdk:
        yield sdk
