"""The ``vpsnap`` command, a package of command groups loaded lazily.

Layout:

- ``entry``: the root group and its table of commands (``COMMANDS``: name → module and one
  line of help). Only the module of the command that runs is imported, so ``vpsnap --help``,
  completion and the client commands never load the server (FastAPI, SQLAlchemy, Alembic).
- ``lazy``: ``LazyGroup``, the click group that imports a command's module on first use.
- ``state``, ``config``: global options, contexts (``~/.config/vpsnap/config.toml``) and how
  URL and key are chosen (flags > environment > context).
- ``output``, ``progress``, ``exit_codes``, ``complete``: tables / JSON / YAML, spinners,
  exit codes, shell completion of VPS and snapshot names.
- ``commands/``: one module per group. Client groups (``vps``, ``snapshots``, ``schedules``,
  ``jobs``, ``context``) use the SDK only; ``serve`` and ``commands/admin/`` (one module per
  admin group) use the server's services and are imported only when run.

Adding a group: write ``commands/<name>.py`` (or ``commands/admin/<name>.py``) defining a
``click.Group`` called ``group``, and add one line to ``COMMANDS`` in ``entry`` (or
``ADMIN_COMMANDS`` in ``commands/admin/__init__``). Keep server imports inside admin modules.

Why click and not Typer: Typer 0.29 coerces parameters through pydantic, imported on every
invocation (a one-command Typer app took 0.50 s against 0.13 s for importing Typer alone on
this project's 2-core machine), and carries its own copy of click; click is small, already
what httpx's command line uses, and its ``Group.get_command`` is the lazy-loading hook
(docs/cli.md, "How it starts fast").
"""
