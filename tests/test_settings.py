"""poseidon's settings: read once from an environment, checked, with the README's defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

import poseidon.api as po
from poseidon.cli import _sandbox_settings
from poseidon.errors import UsageError
from poseidon.session import CommandResult
from poseidon.settings import DEFAULT_API_URL, Settings


def test_an_empty_environment_gives_the_defaults() -> None:
    assert Settings.from_environ({}) == Settings()
    settings = Settings()
    assert (settings.api_url, settings.api_timeout, settings.ssh_user, settings.ssh_port) == (
        DEFAULT_API_URL,
        30.0,
        "root",
        22,
    )
    assert (settings.ssh_keepalive, settings.pin_host_keys, settings.token) == (15.0, True, None)
    assert settings.doctl_config == Path.home() / ".config" / "doctl" / "config.yaml"


def test_the_token_is_the_first_variable_set_and_every_one_is_masked() -> None:
    settings = Settings.from_environ({"DIGITALOCEAN_ACCESS_TOKEN": " second ", "DIGITALOCEAN_API_KEY": "third"})
    assert settings.token == "second"
    assert settings.tokens == ("second", "third")
    assert "second" not in repr(settings) and "third" not in repr(settings)


def test_a_bad_api_setting_is_refused_at_once() -> None:
    with pytest.raises(UsageError, match="POSEIDON_API_TIMEOUT must be a number of seconds above 0, not 'soon'"):
        Settings.from_environ({"POSEIDON_API_TIMEOUT": "soon"})


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("POSEIDON_SSH_PORT", "ssh", "POSEIDON_SSH_PORT must be a port number from 1 to 65535, not 'ssh'"),
        ("POSEIDON_SSH_KEEPALIVE", "-1", "POSEIDON_SSH_KEEPALIVE must be a number of seconds"),
    ],
)
def test_a_bad_ssh_setting_is_refused_where_ssh_is_used(variable: str, value: str, message: str) -> None:
    settings = Settings.from_environ({variable: value})
    assert [name for name, _ in settings.login_problems] == [variable]
    with pytest.raises(UsageError, match=message):
        settings.check_login()


def test_a_sandbox_brings_its_port_but_not_its_keepalive() -> None:
    environ = {
        "POSEIDON_API_URL": "http://127.0.0.1:1",
        "DIGITALOCEAN_TOKEN": "sandbox-token",
        "POSEIDON_SSH_USER": "me",
        "POSEIDON_SSH_PORT": "2222",
        "POSEIDON_SSH_KEY": "/k",
        "POSEIDON_KNOWN_HOSTS": "/kh",
    }
    mine = Settings.from_environ({"POSEIDON_SSH_PORT": "ssh", "DIGITALOCEAN_TOKEN": "real"})
    sandbox = _sandbox_settings(mine, environ)
    assert (sandbox.ssh_port, sandbox.token, sandbox.tokens, sandbox.login_pinned) == (
        2222,
        "sandbox-token",
        ("real",),
        True,
    )
    assert sandbox.check_login() is sandbox
    bad_keepalive = Settings.from_environ({"POSEIDON_SSH_KEEPALIVE": "forever"})
    with pytest.raises(UsageError, match="POSEIDON_SSH_KEEPALIVE"):
        _sandbox_settings(bad_keepalive, environ).check_login()


def test_a_blank_api_url_is_refused_not_taken_for_the_public_api() -> None:
    with pytest.raises(UsageError, match="the API URL must look like https://host"):
        po.connect(token="t", settings=Settings.from_environ({"POSEIDON_API_URL": "   "}))
    assert Settings.from_environ({"POSEIDON_API_URL": ""}).api_url == DEFAULT_API_URL


def test_a_client_keeps_its_settings_for_the_droplets_it_lists() -> None:
    settings = Settings(api_url="http://127.0.0.1:1", ssh_user="deploy")
    client = po.connect(token="t", settings=settings)
    assert client.settings is settings


def test_a_command_result_is_true_when_the_command_succeeded_as_fabrics_is() -> None:
    ok, failed = CommandResult("true", "", "", 0), CommandResult("false", "a\nb\nc\n", "", 1)
    assert ok and not failed
    assert (failed.ok, failed.failed, failed.return_code) == (False, True, 1)
    assert failed.tail("stdout", 2) == "\n\nb\nc"
