"""``vpsnap completion SHELL``: the completion script of bash, zsh or fish (click's)."""

from __future__ import annotations

import click

SHELLS = ("bash", "zsh", "fish")


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
def command(shell: str) -> None:
    """Print the shell completion script. Completes commands, options, and VPS and snapshot
    names (asked of the server, cached for 30 s).

    \b
    bash: echo 'eval "$(vpsnap completion bash)"' >> ~/.bashrc
    zsh:  echo 'eval "$(vpsnap completion zsh)"' >> ~/.zshrc
    fish: vpsnap completion fish > ~/.config/fish/completions/vpsnap.fish
    """
    from click.shell_completion import get_completion_class  # noqa: PLC0415

    from vpsnap.cli.entry import cli  # noqa: PLC0415

    completion = get_completion_class(shell)
    assert completion is not None
    click.echo(completion(cli, {}, "vpsnap", "_VPSNAP_COMPLETE").source())
