"""The CLI against a real server: contexts and their precedence, output formats and options
before the subcommand, confirmations of what spends money or destroys, the rest of the API
(schedules, jobs, upgrade/configure, power), version, and shell completion."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from tests.live_server import VPSNAP, LiveServer, free_port
from vpsnap.cli.entry import cli

pytestmark = [pytest.mark.slow, pytest.mark.qemu]


def run(*args: str, answer: str | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=answer, env={"COLUMNS": "200", **(env or {})})


def keyed(server: LiveServer, *args: str, key: str = "full", answer: str | None = None) -> Result:
    return run("--url", server.url, "--api-key", server.key(key), *args, answer=answer)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def test_contexts_store_the_key_privately_and_follow_the_precedence(
    api_server: LiveServer,
) -> None:
    config = Path(os.environ["VPSNAP_CONFIG"])
    made = ok(run("context", "create", "demo", "--url", api_server.url, answer=api_server.key()))
    assert "context demo saved" in made.stdout
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert api_server.key() in config.read_text()
    # The key went in on stdin: it is not in the output, nor in `context list`.
    listed = ok(run("context", "list"))
    assert api_server.key() not in listed.stdout + listed.stderr
    assert "*" in listed.stdout
    assert "demo" in listed.stdout

    # The active context connects every command.
    assert "demo-web" in ok(run("vps", "list")).stdout

    # A wrong key is refused before anything is saved, and says why (exit 5).
    bad = run("context", "create", "bad", "--url", api_server.url, answer="vpsnap_wrong\n")
    assert bad.exit_code == 5
    assert (
        "bad"
        not in json.loads(ok(run("context", "list", "-o", "json")).stdout)["contexts"][0]["name"]
    )
    # A key that cannot be sent is a usage error (exit 2), not a traceback.
    odd = run("context", "create", "odd", "--url", api_server.url, answer="vpsnap_clé\n")
    assert odd.exit_code == 2
    assert "cannot be sent" in odd.stderr

    # Precedence: flag > environment > context.
    other = ok(
        run(
            "context",
            "create",
            "other",
            "--url",
            api_server.url,
            "--no-use",
            answer=api_server.key("other"),
        )
    )
    assert "and active" not in other.stdout
    assert "other-web" not in ok(run("vps", "list")).stdout
    assert "other-web" in ok(run("--context", "other", "vps", "list")).stdout
    assert "other-web" in ok(run("vps", "list", env={"VPSNAP_CONTEXT": "other"})).stdout
    env_key = {"VPSNAP_API_KEY": api_server.key("other")}
    assert "other-web" in ok(run("vps", "list", env=env_key)).stdout  # env beats the context
    flag = run("vps", "list", "--api-key", api_server.key(), env=env_key)
    assert "other-web" not in ok(flag).stdout  # the flag beats the environment
    dead = f"http://127.0.0.1:{free_port()}"
    assert run("vps", "list", env={"VPSNAP_URL": dead}).exit_code == 9
    unknown = run("--context", "nope", "vps", "list")
    assert unknown.exit_code == 2
    assert "no context 'nope'" in unknown.stderr

    ok(run("context", "use", "other"))
    assert ok(run("context", "active")).stdout.strip() == "other"
    ok(run("context", "delete", "other"))
    ok(run("context", "delete", "demo"))
    assert json.loads(ok(run("context", "list", "-o", "json")).stdout) == {
        "active": None,
        "contexts": [],
    }
    none = run("vps", "list")
    assert none.exit_code == 2
    assert "no API key: create a context" in none.stderr


def test_output_formats_options_before_the_subcommand_and_columns(api_server: LiveServer) -> None:
    as_json = json.loads(ok(keyed(api_server, "-o", "json", "vps", "list")).stdout)
    as_yaml = yaml.safe_load(ok(keyed(api_server, "vps", "list", "-o", "yaml")).stdout)
    assert as_json == as_yaml
    ids = [v["id"] for v in as_json["data"]]

    table = ok(keyed(api_server, "vps", "list")).stdout.splitlines()
    assert table[0].split()[:3] == ["NAME", "ID", "IP"]
    assert all(any(i in line for line in table) for i in ids)  # never shortened

    rows = ok(keyed(api_server, "vps", "list", "--no-header", "--columns", "id,name")).stdout
    assert [line.split()[0] for line in rows.splitlines()] == ids
    wide = ok(keyed(api_server, "vps", "list", "--wide")).stdout.splitlines()[0]
    assert "CPUS" in wide
    assert "CREATED" in wide
    unknown = keyed(api_server, "vps", "list", "--columns", "id,colour")
    assert unknown.exit_code == 2
    assert "no column 'colour'" in unknown.stderr
    assert "ip" in unknown.stderr  # and says which there are

    one = yaml.safe_load(ok(keyed(api_server, "vps", "get", "demo-db", "-o", "yaml")).stdout)
    assert one["name"] == "demo-db"
    # A command's own -o beats the one before the subcommand.
    assert ok(
        keyed(api_server, "-o", "json", "vps", "get", "demo-db", "-o", "yaml")
    ).stdout.startswith("id:")


def test_schedules_jobs_and_configure_with_a_price_confirmation(api_server: LiveServer) -> None:
    vps = api_server.add_vps(2)
    shown = ok(keyed(api_server, "schedules", "set", vps, "--every", "6.5"))
    assert "EVERY HOURS" in shown.stdout
    state = json.loads(ok(keyed(api_server, "schedules", "get", vps, "-o", "json")).stdout)
    assert state["schedule"]["intervalHours"] == 6
    declined = keyed(api_server, "schedules", "delete", vps, answer="n\n")
    assert declined.exit_code == 1
    assert "Remove the snapshot schedule of" in declined.stderr
    assert "schedule removal cancelled: nothing was changed" in declined.stderr
    assert "EVERY HOURS" in ok(keyed(api_server, "schedules", "get", vps)).stdout
    ok(keyed(api_server, "schedules", "delete", vps, "--yes"))
    assert "has no schedule" in ok(keyed(api_server, "schedules", "get", vps)).stdout

    ok(keyed(api_server, "snapshots", "create", vps, "one"))
    listed = json.loads(ok(keyed(api_server, "jobs", "list", "--vps", vps, "-o", "json")).stdout)
    [job] = listed["data"]
    assert (job["type"], job["status"], job["snapshotName"]) == (
        "snapshot.create",
        "completed",
        "one",
    )
    shown = ok(keyed(api_server, "jobs", "get", job["jobId"])).stdout
    assert job["jobId"] in shown
    ok(keyed(api_server, "snapshots", "create", vps, "slow-two", "--no-wait"))
    page = ok(keyed(api_server, "jobs", "list", "--vps", vps, "--limit", "1"))
    assert "more: vpsnap jobs list --cursor" in page.stdout

    options = ok(keyed(api_server, "vps", "upgrade-options", vps)).stdout
    assert "snapshotSlots" in options
    declined = keyed(api_server, "vps", "configure", vps, "--slots", "3", answer="n\n")
    assert declined.exit_code == 1
    assert "snapshot slots → 3: " in declined.stderr
    assert "EUR" in declined.stderr
    assert "configure cancelled: nothing was changed" in declined.stderr
    assert (
        json.loads(ok(keyed(api_server, "snapshots", "list", vps, "-o", "json")).stdout)["limits"][
            "totalSnapshots"
        ]
        == 2
    )
    bought = ok(keyed(api_server, "vps", "configure", vps, "--slots", "3", answer="y\n"))
    assert "now has 3 snapshot slot(s)" in bought.stdout
    too_few = keyed(api_server, "vps", "configure", vps, "--slots", "0", "--yes")
    assert too_few.exit_code == 4
    assert "snapshot_slots_in_use" in too_few.stderr


def test_stop_and_reset_ask_first_and_errors_speak_in_flags(api_server: LiveServer) -> None:
    for action in ("stop", "reset"):
        refused = keyed(api_server, "vps", action, "demo-db")  # no answer: stdin closed
        assert refused.exit_code == 1
        assert f"{action} cancelled: nothing was changed" in refused.stderr
    # demo-db is disk images only: the action is refused by the server, with its code.
    answered = keyed(api_server, "vps", "stop", "demo-db", "--yes")
    assert answered.exit_code == 4
    assert "[vps_not_ready]" in answered.stderr

    vps = api_server.add_vps(1)
    ok(keyed(api_server, "snapshots", "create", vps, "a"))
    full = keyed(api_server, "snapshots", "create", vps, "b")
    assert full.exit_code == 4
    assert "--make-room delete-oldest or --make-room buy-slot" in full.stderr
    timed_out = keyed(
        api_server,
        "snapshots",
        "create",
        vps,
        "slow-c",
        "--make-room",
        "buy-slot",
        "--yes",
        "--timeout",
        "0.5",
    )
    assert timed_out.exit_code == 8
    assert "vpsnap jobs wait" in timed_out.stderr
    for result in (full, timed_out):
        assert "make_room=" not in result.stderr
        assert "api_key=" not in result.stderr


def test_version_says_client_and_server(api_server: LiveServer) -> None:
    from vpsnap import __version__

    shown = ok(run("version", "--url", api_server.url)).stdout  # no key needed
    assert f"client: vpsnap {__version__}" in shown
    assert f"server: vpsnap {__version__} at {api_server.url}" in shown
    away = ok(run("version", "--url", f"http://127.0.0.1:{free_port()}")).stdout
    assert "server: unreachable" in away
    assert ok(run("--version")).stdout.strip() == f"vpsnap, version {__version__}"


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_and_names(api_server: LiveServer, shell: str, tmp_path: Path) -> None:
    script = ok(run("completion", shell)).stdout
    assert "_VPSNAP_COMPLETE" in script
    env = {
        **os.environ,
        "VPSNAP_URL": api_server.url,
        "VPSNAP_API_KEY": api_server.key(),
        "XDG_CACHE_HOME": str(tmp_path),
        "_VPSNAP_COMPLETE": f"{shell}_complete",
        "COMP_WORDS": "vpsnap snapshots restore demo-",
        # fish passes the word being completed itself; bash and zsh its index.
        "COMP_CWORD": "demo-" if shell == "fish" else "3",
    }
    names = subprocess.run(
        [VPSNAP], env=env, capture_output=True, text=True, timeout=30, check=True
    )
    assert "demo-web" in names.stdout
    assert "demo-db" in names.stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completes_snapshot_names_through_the_real_script(
    api_server: LiveServer, tmp_path: Path
) -> None:
    vps = api_server.add_vps(2)
    ok(keyed(api_server, "snapshots", "create", vps, "before-upgrade"))
    script = ok(run("completion", "bash")).stdout
    probe = (
        f"{script}\n"
        f"COMP_WORDS=(vpsnap snapshots restore {vps} be); COMP_CWORD=4\n"
        "_vpsnap_completion vpsnap  # bash passes the command name\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {
        **os.environ,
        "PATH": f"{Path(VPSNAP).parent}{os.pathsep}{os.environ['PATH']}",
        "VPSNAP_URL": api_server.url,
        "VPSNAP_API_KEY": api_server.key(),
        "XDG_CACHE_HOME": str(tmp_path),
    }
    done = subprocess.run(
        ["bash", "-c", probe], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.stdout.split() == ["before-upgrade"], done.stderr
