"""Structured logs on stderr, for vpsnap's own events and for the libraries it runs on
(uvicorn, alembic): one JSON object per line when stderr is not a terminal (every line of a
service's log parses), structlog's readable console lines when a person watches."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from structlog.typing import ExcInfo


def _import_structlog() -> None:
    """Import structlog without its eager import of rich's traceback renderer.

    ``structlog.dev`` (imported by ``structlog`` itself) loads ``rich.traceback``, and with it
    Pygments, whenever rich is installed (it is: the client commands' tables): ~0.1 s of CPU
    at every server start, for a renderer only console logs use. rich is hidden while
    structlog is imported, as if not installed, and the console renderer is given rich's
    tracebacks explicitly (``_rich_traceback``), loaded on the first exception it prints.
    """
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment] # ImportError for `import rich`
    try:
        import structlog  # noqa: F401, PLC0415
    finally:
        del sys.modules["rich"]


_import_structlog()

import structlog  # noqa: E402 - after _import_structlog

_SHARED: list[structlog.types.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


LOG_FORMATS = ("auto", "json", "console")


def configure_logging(level: str = "info", log_format: str = "auto") -> None:
    """``log_format``: ``json``, ``console``, or ``auto`` (console on a terminal, else JSON)."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}: {log_format!r}")
    console = log_format == "console" or (log_format == "auto" and sys.stderr.isatty())
    renderer: list[structlog.types.Processor] = (
        [
            structlog.dev.ConsoleRenderer(
                colors=sys.stderr.isatty(), exception_formatter=_rich_traceback
            )
        ]
        if console
        else [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=_SHARED,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # Alembic narrates every migration step at INFO; only its warnings matter in the server log.
    logging.getLogger("alembic").setLevel(max(numeric, logging.WARNING))
    # Database libraries log every statement with its parameters (API key hashes, tenants'
    # data): aiosqlite at DEBUG, SQLAlchemy's engine at INFO. Key material never goes to the
    # log, whatever the level (docs/api.md, "Authentication").
    logging.getLogger("aiosqlite").setLevel(max(numeric, logging.INFO))
    logging.getLogger("sqlalchemy.engine").setLevel(max(numeric, logging.WARNING))
    structlog.configure(
        processors=[
            *_SHARED,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )


def _rich_traceback(sio: TextIO, exc_info: ExcInfo) -> None:
    """structlog's default console exception formatter when rich is installed (rich's
    traceback), imported only when an exception is printed (``_import_structlog``). Without the
    frames' local variables, unlike structlog's default: a request's locals hold API keys and
    passwords, which never go to the log."""
    from rich.console import Console  # noqa: PLC0415
    from rich.traceback import Traceback  # noqa: PLC0415

    sio.write("\n")
    console = Console(file=sio, color_system="truecolor" if sys.stderr.isatty() else None)
    console.print(Traceback.from_exception(*exc_info, show_locals=False))
