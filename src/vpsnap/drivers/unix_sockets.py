"""Unix sockets at paths of any length.

The address of a unix socket holds at most 107 bytes of path (``sockaddr_un.sun_path`` is 108
bytes with its terminating NUL; unix(7)), while the data dir, and so a managed VM's sockets in
it, is wherever the provider put it. A socket whose path does not fit is reached through its
directory instead: ``/proc/self/fd/<fd>/<name>``, where ``<fd>`` is an ``O_PATH`` descriptor of
the directory held open for the ``bind`` or ``connect`` (the kernel resolves ``sun_path`` like
any path, so this names the same file; the technique systemd uses for long socket
paths). Paths that fit are used as they are, so an address in a log or in QEMU's
``query-chardev`` stays the file's own name whenever it can.

Linux only, like the rest of vpsnap's hypervisor side.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Iterator
from pathlib import Path

#: The longest path a unix socket address holds, in bytes (unix(7)).
MAX_ADDRESS_BYTES = 107


@contextlib.contextmanager
def socket_address(path: str | Path) -> Iterator[str]:
    """An address for ``bind``/``connect`` that names the socket file ``path``, valid inside
    the ``with`` block.

    ``path`` itself when it fits in :data:`MAX_ADDRESS_BYTES`, else the ``/proc/self/fd`` form
    through its directory. Raises ``OSError`` like ``open`` when the directory cannot be
    opened (``FileNotFoundError`` when it does not exist), and ``ENAMETOOLONG`` when even the
    file's own name does not fit. Cheap: at most one ``open`` and one ``close`` of a directory.
    """
    text = os.fspath(path)
    if len(os.fsencode(text)) <= MAX_ADDRESS_BYTES:
        yield text
        return
    directory, name = os.path.split(text)
    fd = os.open(directory or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        address = f"/proc/self/fd/{fd}/{name}"
        if len(os.fsencode(address)) > MAX_ADDRESS_BYTES:
            raise OSError(errno.ENAMETOOLONG, "unix socket file name too long", text)
        yield address
    finally:
        os.close(fd)


def listening_socket(path: str | Path) -> socket.socket:
    """A unix stream socket bound at ``path`` (which must not exist) and listening.

    The caller owns the socket (close it; the file stays until it is unlinked). Raises
    ``OSError`` when it cannot be bound (``FileExistsError``-like ``EADDRINUSE`` when a file is
    at ``path``, ``FileNotFoundError`` when the directory is missing).
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with socket_address(path) as address:
            sock.bind(address)
        sock.listen()
    except BaseException:
        sock.close()
        raise
    return sock
