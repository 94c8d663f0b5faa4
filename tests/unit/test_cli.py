"""The CLI's contract: help for every command, one-line errors, documented exit codes."""

from __future__ import annotations

import pytest

from harness.cli import EXIT_USAGE, main


@pytest.mark.parametrize(
    "command",
    [[], ["proxy"], ["proxy", "http"], ["proxy", "toxic"], ["serve-demo"], ["serve-feature-store"], ["demo"], ["analyze"]],
)
def test_every_command_has_help(command, capsys):
    assert main([*command, "--help"]) == 0
    assert "Usage" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["proxy", "http", "--incumbent", "ftp://x:1"], "--incumbent"),
        (["proxy", "http", "--incumbent", "http://127.0.0.1:1", "--candidate", "nohost"], "--candidate"),
        (["proxy", "http", "--incumbent", "http://127.0.0.1:1", "--sample", "2"], "--sample"),
        (["proxy", "http", "--incumbent", "http://127.0.0.1:1", "--listen", "127.0.0.1:http"], "--listen"),
        (["serve-demo", "--error-rate", "3"], "--error-rate"),
        (["serve-demo", "--role", "champion"], "--role"),
        (["proxy", "http"], "--incumbent"),
        (["serve-demo", "--dependency", "nohost"], "--dependency"),
        (["proxy", "toxic", "--upstream", "127.0.0.1:1", "--toxic", '{"type": "nope"}'], "--toxic"),
        (["proxy", "toxic", "--upstream", "127.0.0.1:1", "--toxic", "{not json"], "--toxic"),
        (["proxy", "toxic", "--upstream", "nohost"], "--upstream"),
    ],
)
def test_bad_usage_is_exit_2_with_a_message_naming_the_option(argv, names, capsys):
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert names in err
    assert "Traceback" not in err


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("shadowline ")
