"""The client's config file: named contexts (a URL and an API key each) and the active one, as
``hcloud context`` keeps them.

The file is ``$VPSNAP_CONFIG``, else ``$XDG_CONFIG_HOME/vpsnap/config.toml``, else
``~/.config/vpsnap/config.toml``. It holds API keys, so it is written with mode 0600 (its
directory 0700), atomically (a crash never leaves half a file)::

    active_context = "demo"

    [[contexts]]
    name = "demo"
    url = "http://127.0.0.1:8080"
    api_key = "vpsnap_…"
"""

from __future__ import annotations

import contextlib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

CONFIG_ENV = "VPSNAP_CONFIG"
CONTEXT_ENV = "VPSNAP_CONTEXT"


class ConfigError(Exception):
    """The config file cannot be read, or names no such context."""


@dataclass(frozen=True, slots=True)
class Context:
    name: str
    url: str
    api_key: str


@dataclass
class Config:
    active: str | None = None
    contexts: list[Context] = field(default_factory=list)

    def find(self, name: str) -> Context | None:
        return next((c for c in self.contexts if c.name == name), None)


def config_path() -> Path:
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "vpsnap" / "config.toml"


def load(path: Path) -> Config:
    """The config at ``path``; an empty one when the file does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
        contexts = [
            Context(str(c["name"]), str(c["url"]), str(c["api_key"]))
            for c in data.get("contexts", [])
        ]
    except (tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is not a valid vpsnap config: {exc}") from None
    active = data.get("active_context")
    return Config(str(active) if active else None, contexts)


def save(path: Path, config: Config) -> None:
    """Write ``config`` to ``path`` (mode 0600, replacing the old file atomically)."""
    import tomli_w  # noqa: PLC0415 - only the commands that change contexts write

    document: dict[str, object] = {}
    if config.active:
        document["active_context"] = config.active
    document["contexts"] = [
        {"name": c.name, "url": c.url, "api_key": c.api_key} for c in config.contexts
    ]
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # Created 0600 from the start: the key is never readable by others, not even briefly.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            tomli_w.dump(document, handle)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    path.chmod(0o600)
