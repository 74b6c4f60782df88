"""How commands show things: plain aligned tables for people (never a cut id), the API's own
JSON or YAML for scripts, relative times ("in 23 h"), confirmations, and errors as one line
in the CLI's words plus the request id."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from vpsnap.cli.state import UsageProblem, state

if TYPE_CHECKING:
    from vpsnap.client import Operation, Sync, VpsnapError

Row = Mapping[str, Any]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def clean(value: object) -> str:
    """Text safe for one table cell on a terminal: control characters (a description with an
    escape sequence or a newline) are shown escaped, never sent to the terminal."""
    text = "" if value is None else str(value)
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


@dataclass(frozen=True, slots=True)
class Column:
    """A table column: ``key`` is its name for ``--columns``; ``wide`` columns show only with
    ``--wide`` (or when asked for by name)."""

    key: str
    get: Callable[[Row], object]
    wide: bool = False

    @property
    def header(self) -> str:
        return self.key.upper().replace("_", " ")


def field(name: str, default: str = "-") -> Callable[[Row], object]:
    """A getter of a (dotted) field of the API's JSON."""

    def get(row: Row) -> object:
        value: Any = row
        for part in name.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if isinstance(value, bool):
            return "yes" if value else "no"
        return default if value is None else value

    return get


def chosen_columns(columns: Sequence[Column]) -> list[Column]:
    current = state()
    if current.columns:
        by_key = {c.key: c for c in columns}
        wanted = [k.strip() for k in current.columns.split(",") if k.strip()]
        unknown = [k for k in wanted if k not in by_key]
        if unknown:
            raise UsageProblem(
                f"no column {', '.join(map(repr, unknown))} here; the columns are: "
                f"{', '.join(by_key)}"
            )
        return [by_key[k] for k in wanted]
    return [c for c in columns if current.wide or not c.wide]


def table_lines(rows: Iterable[Row], columns: Sequence[Column], *, header: bool) -> list[str]:
    """Aligned columns, two spaces apart, one line per row; nothing is ever shortened."""
    from rich.cells import cell_len  # noqa: PLC0415 - loaded with httpx anyway

    cells = [[clean(c.get(row)) for c in columns] for row in rows]
    if header:
        cells.insert(0, [c.header for c in columns])
    if not cells:
        return []
    widths = [max(cell_len(line[i]) for line in cells) for i in range(len(columns))]
    lines = []
    for line in cells:
        padded = [
            text + " " * (width - cell_len(text))
            for text, width in zip(line[:-1], widths[:-1], strict=True)
        ]
        lines.append("  ".join([*padded, line[-1]]).rstrip())
    return lines


def show(
    document: object,
    rows: Iterable[Row],
    columns: Sequence[Column],
    *,
    title: str | None = None,
    footer: Sequence[str] = (),
) -> None:
    """Print a read command's answer in the chosen format: ``document`` (the API's JSON) for
    json and yaml; for table, ``title``, the rows, then ``footer`` (all but the rows are
    left out with ``--no-header``)."""
    current = state()
    if current.format == "json":
        print_json(document)
        return
    if current.format == "yaml":
        print_yaml(document)
        return
    header = not current.no_header
    lines = table_lines(rows, chosen_columns(columns), header=header)
    if header and title:
        lines.insert(0, clean(title))
        lines.insert(1, "")
    if header and footer:
        lines.extend(["", *(clean(f) for f in footer)])
    for line in lines:
        click.echo(line)


def print_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def print_yaml(value: object) -> None:
    import yaml  # noqa: PLC0415 - only -o yaml needs it

    click.echo(yaml.safe_dump(value, sort_keys=False, allow_unicode=True), nl=False)


def print_document(document: object) -> None:
    """A mutation's answer: the API's JSON (or YAML) for scripts; nothing for table."""
    if state().format == "yaml":
        print_yaml(document)
    else:
        print_json(document)


def print_queued(operation: Operation[Sync]) -> None:
    """An operation returned without waiting: its job id for people, the API's answer for
    scripts."""
    if state().format == "table":
        click.echo(f"queued: follow it with: vpsnap jobs wait {operation.job_id}")
    else:
        print_document(dict(operation.raw))


def print_result(document: Mapping[str, Any]) -> bool:
    """Print a finished job (or any answer) for scripts; False in table format, where the
    command says what happened in a sentence instead."""
    if state().format == "table":
        return False
    print_document(dict(document))
    return True


def say(message: str) -> None:
    """A line for people (table format); scripts asking for json or yaml get only data."""
    if state().format == "table":
        click.echo(message)


def relative(moment: datetime | None, now: datetime | None = None) -> str:
    """``in 23 h`` / ``5 min ago``: whole units, rounded down, as people read an expiry."""
    if moment is None:
        return "-"
    seconds = (moment - (now or datetime.now(UTC))).total_seconds()
    span = abs(seconds)
    if span < 60:
        text = f"{int(span)} s"
    elif span < 3600:
        text = f"{int(span // 60)} min"
    elif span < 2 * 86400:
        text = f"{int(span // 3600)} h"
    else:
        text = f"{int(span // 86400)} d"
    return f"in {text}" if seconds >= 0 else f"{text} ago"


def when(name: str) -> Callable[[Row], object]:
    """A getter showing a timestamp field as a relative time."""

    def get(row: Row) -> object:
        value = field(name, "")(row)
        return relative(datetime.fromisoformat(value)) if isinstance(value, str) and value else "-"

    return get


def confirm(question: str, *, yes: bool) -> bool:
    """Ask on stderr (default no); ``--yes`` answers yes, no answer (stdin closed) is a no."""
    if yes:
        return True
    try:
        return click.confirm(question, default=False, err=True)
    except click.Abort:
        click.echo(err=True)  # end the question's line
        return False


def refused(what: str) -> SystemExit:
    """A question answered no: nothing was changed (exit 1)."""
    click.echo(f"{what} cancelled: nothing was changed (--yes skips this question)", err=True)
    return SystemExit(1)


# The SDK speaks in its argument names; a CLI user needs the flags.
_SDK_TO_CLI = (
    ('make_room="delete-oldest"', "--make-room delete-oldest"),
    ('make_room="buy-slot"', "--make-room buy-slot"),
    ("make_room=", "--make-room "),
    ("api_key=", "--api-key"),
    ("wait again with its id", "wait again: vpsnap jobs wait JOB"),
)


def in_cli_words(text: str) -> str:
    for sdk, cli in _SDK_TO_CLI:
        text = text.replace(sdk, cli)
    return text


def error_document(error: VpsnapError) -> dict[str, Any]:
    document: dict[str, Any] = {
        "code": error.code,
        "status": error.status,
        "detail": in_cli_words(error.detail),
        "requestId": error.request_id,
    }
    if error.field_errors:
        document["errors"] = [
            {"pointer": f.pointer, "detail": f.detail, "code": f.code} for f in error.field_errors
        ]
    return document


def report_error(error: VpsnapError, output: str) -> None:
    """One line saying what went wrong (field errors included) in the CLI's words, then the
    request id to quote; with ``-o json``/``yaml`` also ``{"error": …}`` on stdout."""
    fields = "; ".join(f"{f.pointer}: {f.detail}" for f in error.field_errors)
    line = f"error: {in_cli_words(error.detail)}"
    if fields:
        line += f" ({fields})"
    click.echo(f"{clean(line)} [{error.code}]", err=True)
    if error.request_id:
        click.echo(f"request id: {error.request_id}", err=True)
    if output == "json":
        print_json({"error": error_document(error)})
    elif output == "yaml":
        print_yaml({"error": error_document(error)})


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()
