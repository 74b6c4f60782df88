"""One real vpsnap server for the client command tests (see tests/live_server.py); the admin
command tests do not use it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.live_server import LiveServer


@pytest.fixture(scope="session")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("cli-server"))
    yield live
    live.stop()
