"""Unix sockets at paths longer than a unix address holds (``drivers/unix_sockets``)."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

import pytest

from vpsnap.drivers.unix_sockets import MAX_ADDRESS_BYTES, listening_socket, socket_address


def deep_dir(tmp_path: Path, extra: int = 150) -> Path:
    directory = tmp_path / ("d" * 50) / ("e" * 50) / ("f" * extra)
    directory.mkdir(parents=True)
    return directory


def test_a_path_that_fits_is_its_own_address() -> None:
    path = "/run/vpsnap/machines/vps_01m8rcfjeycw8rd8p2awk6k8ty/qmp-status.sock"
    with socket_address(path) as address:
        assert address == path  # nothing opened: the directory need not even exist


def test_a_long_path_is_bound_and_reached_at_that_very_file(tmp_path: Path) -> None:
    path = deep_dir(tmp_path) / "qmp-status.sock"
    assert len(os.fsencode(path)) > MAX_ADDRESS_BYTES
    # What the kernel says without the detour: the reason this module exists.
    with socket.socket(socket.AF_UNIX) as plain, pytest.raises(OSError, match="too long"):
        plain.bind(str(path))

    with listening_socket(path) as server:
        assert path.is_socket()
        client = socket.socket(socket.AF_UNIX)
        with client, socket_address(path) as address:
            assert len(os.fsencode(address)) <= MAX_ADDRESS_BYTES
            client.connect(address)
            accepted, _ = server.accept()
            with accepted:
                client.sendall(b"ping")
                assert accepted.recv(4) == b"ping"


def test_the_directory_descriptor_is_closed_after_the_block(tmp_path: Path) -> None:
    path = deep_dir(tmp_path) / "qga.sock"
    fds = Path("/proc/self/fd")
    before = set(fds.iterdir())
    with socket_address(path):
        assert len(set(fds.iterdir()) - before) == 1
    assert set(fds.iterdir()) == before


def test_a_missing_directory_is_file_not_found_like_any_socket(tmp_path: Path) -> None:
    path = tmp_path / ("x" * 120) / "qmp.sock"
    with pytest.raises(FileNotFoundError), socket_address(path):
        pass


def test_a_file_name_that_cannot_fit_even_alone_is_refused(tmp_path: Path) -> None:
    path = tmp_path / ("n" * 100)
    with pytest.raises(OSError) as caught, socket_address(path):
        pass
    assert caught.value.errno == errno.ENAMETOOLONG


def test_a_socket_already_there_is_not_replaced(tmp_path: Path) -> None:
    path = deep_dir(tmp_path) / "qmp.sock"
    with listening_socket(path), pytest.raises(OSError) as caught:
        listening_socket(path)
    assert caught.value.errno == errno.EADDRINUSE
