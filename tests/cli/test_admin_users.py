"""``vpsnap admin user create|list|disable|set-password`` on a real data dir (issue 11):
passwords come from a prompt or stdin, never from an argument."""

from __future__ import annotations

import asyncio
from pathlib import Path

from click.testing import CliRunner

from vpsnap.cli.entry import cli
from vpsnap.domain.errors import DomainError
from vpsnap.runtime import Runtime
from vpsnap.settings import Settings

PASSWORD = "a good long passphrase"


def run(data_dir: Path, *args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["admin", *args, "--data-dir", str(data_dir)], input=stdin)
    return result.exit_code, result.output


def sign_in(data_dir: Path, email: str, password: str) -> bool:
    async def attempt() -> bool:
        runtime = Runtime.build(Settings(data_dir=data_dir))
        try:
            await runtime.prepare()
            await runtime.services.sessions.sign_in(email, password)
        except DomainError:
            return False
        finally:
            await runtime.close()
        return True

    return asyncio.run(attempt())


def test_create_list_disable_and_set_password(tmp_path: Path) -> None:
    assert run(tmp_path, "account", "create", "acme")[0] == 0

    code, output = run(
        tmp_path,
        *("user", "create", "--account", "acme", "--email", "Ops@Acme.example"),
        *("--role", "operator", "--password-stdin"),
        stdin=PASSWORD + "\n",
    )
    assert code == 0, output
    assert "created ops@acme.example" in output
    assert sign_in(tmp_path, "ops@acme.example", PASSWORD)

    code, output = run(tmp_path, "user", "list", "--account", "acme")
    assert code == 0
    assert "ops@acme.example" in output
    assert "operator" in output
    assert "active" in output

    code, output = run(
        tmp_path,
        "user",
        "set-password",
        "ops@acme.example",
        "--password-stdin",
        stdin="another long passphrase\n",
    )
    assert code == 0, output
    assert not sign_in(tmp_path, "ops@acme.example", PASSWORD)
    assert sign_in(tmp_path, "ops@acme.example", "another long passphrase")

    code, output = run(tmp_path, "user", "disable", "ops@acme.example")
    assert code == 0, output
    assert not sign_in(tmp_path, "ops@acme.example", "another long passphrase")
    assert "disabled" in run(tmp_path, "user", "list")[1]


def test_the_prompt_asks_twice_and_hides_the_password(tmp_path: Path) -> None:
    run(tmp_path, "account", "create", "acme")
    code, output = run(
        tmp_path,
        *("user", "create", "--account", "acme", "--email", "v@acme.example", "--role", "viewer"),
        stdin=f"{PASSWORD}\n{PASSWORD}\n",
    )
    assert code == 0, output
    assert "Repeat for confirmation" in output
    assert PASSWORD not in output
    assert sign_in(tmp_path, "v@acme.example", PASSWORD)


def test_a_password_is_never_an_argument(tmp_path: Path) -> None:
    run(tmp_path, "account", "create", "acme")
    code, output = run(
        tmp_path,
        *("user", "create", "--account", "acme", "--email", "v@acme.example", "--role", "viewer"),
        "--password",
        PASSWORD,
    )
    assert code == 2
    assert "No such option" in output


def test_bad_input_is_refused_clearly(tmp_path: Path) -> None:
    run(tmp_path, "account", "create", "acme")
    base = ("user", "create", "--account", "acme", "--role", "viewer", "--password-stdin")
    code, output = run(tmp_path, *base, "--email", "v@acme.example", stdin="short\n")
    assert code == 2  # invalid input (docs/cli.md, exit codes)
    assert "at least 12 characters" in output
    code, output = run(tmp_path, *base, "--email", "v@acme.example", "--role", "boss", stdin="x\n")
    assert code == 2
    code, output = run(
        tmp_path,
        *base[:2],
        "--account",
        "nope",
        *base[4:],
        "--email",
        "a@b.example",
        stdin=PASSWORD + "\n",
    )
    assert code == 3  # not found
    assert "No account named 'nope'" in output
    run(tmp_path, *base, "--email", "v@acme.example", stdin=PASSWORD + "\n")
    code, output = run(tmp_path, *base, "--email", "V@ACME.example", stdin=PASSWORD + "\n")
    assert code == 4  # conflict
    assert "already exists" in output
    assert run(tmp_path, "user", "disable", "nobody@acme.example")[0] == 3
