"""Settings from a TOML file: flags win over the environment, which wins over the file, which
wins over the defaults; unknown keys and bad values name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from vpsnap import settings as settings_module
from vpsnap.cli.entry import cli as app
from vpsnap.settings import ConfigFileError, Settings, load_settings


@pytest.fixture(autouse=True)
def no_ambient_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Neither the machine's /etc/vpsnap nor the caller's environment may leak into a test.
    monkeypatch.setattr(settings_module, "DEFAULT_CONFIG_FILE", tmp_path / "absent.toml")
    for name in ("VPSNAP_SETTINGS_FILE", "VPSNAP_PORT", "VPSNAP_LOG_LEVEL", "VPSNAP_HOST"):
        monkeypatch.delenv(name, raising=False)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_file_then_environment_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(
        tmp_path / "vpsnap.toml",
        'port = 9000\nhost = "0.0.0.0"\nlog_level = "debug"\n'
        'webhook_allowed_networks = ["10.0.0.0/8"]\nstorage_free_floor = "2GiB"\n',
    )
    from_file = load_settings(config)
    assert (from_file.port, from_file.host, from_file.log_level) == (9000, "0.0.0.0", "debug")
    assert from_file.webhook_allowed_networks == ["10.0.0.0/8"]
    assert int(from_file.storage_free_floor) == 2 * 1024**3
    assert from_file.retention_hours == 24.0  # not in the file: the default

    monkeypatch.setenv("VPSNAP_PORT", "9100")
    monkeypatch.setenv("VPSNAP_WEBHOOK_ALLOWED_NETWORKS", "192.168.0.0/16, 127.0.0.1/32")
    with_env = load_settings(config)
    assert with_env.port == 9100  # the environment wins over the file
    assert with_env.webhook_allowed_networks == ["192.168.0.0/16", "127.0.0.1/32"]
    assert with_env.host == "0.0.0.0"  # what the environment does not set still comes from it

    with_flags = load_settings(config, port=9200, host=None)
    assert with_flags.port == 9200  # a flag wins over both
    assert with_flags.host == "0.0.0.0"  # a flag not given (None) changes nothing


def test_the_file_is_found_by_variable_or_default_location(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_settings().port == 8080  # no file anywhere: defaults
    default = write(tmp_path / "etc.toml", "port = 7000\n")
    monkeypatch.setattr(settings_module, "DEFAULT_CONFIG_FILE", default)
    assert load_settings().port == 7000
    named = write(tmp_path / "named.toml", "port = 7100\n")
    monkeypatch.setenv("VPSNAP_SETTINGS_FILE", str(named))
    assert load_settings().port == 7100
    assert load_settings(write(tmp_path / "flag.toml", "port = 7200\n")).port == 7200
    # A plain Settings() (tests, embedding) never reads a file.
    assert Settings().port == 8080


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prot = 9000\n", "prot: unknown setting"),
        ("VPSNAP_PORT = 9000\n", "VPSNAP_PORT: unknown setting"),
        ('port = "many"\n', "port: Input should be a valid integer"),
        ("audit_retention_days = 0\n", "audit_retention_days: Input should be greater than"),
        ("port = \n", "not valid TOML"),
    ],
)
def test_mistakes_name_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    config = write(tmp_path / "vpsnap.toml", text)
    with pytest.raises(ConfigFileError) as caught:
        load_settings(config)
    assert str(config) in caught.value.detail
    assert message in caught.value.detail


def test_a_named_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")


def test_the_command_line_reads_the_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "from-file"
    config = write(tmp_path / "vpsnap.toml", f'data_dir = "{data_dir}"\n')
    result = CliRunner().invoke(app, ["--config", str(config), "admin", "account", "create", "x"])
    assert result.exit_code == 0, result.stderr
    assert (data_dir / "vpsnap.db").is_file()
    bad = write(tmp_path / "bad.toml", "nope = 1\n")
    result = CliRunner().invoke(app, ["--config", str(bad), "admin", "account", "create", "y"])
    assert result.exit_code != 0
    assert "nope: unknown setting" in result.stderr
