"""The CLI's contract: help for every command, one-line errors, documented exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import EXIT_USAGE, main


@pytest.mark.parametrize(
    "command",
    [[], ["proxy"], ["proxy", "http"], ["proxy", "grpc"], ["proxy", "toxic"], ["serve-demo"], ["serve-feature-store"], ["demo"], ["analyze"]],
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
        (["proxy", "grpc", "--incumbent", "127.0.0.1:1", "--sample", "3"], "--sample"),
        (["proxy", "grpc", "--incumbent", "grpc://127.0.0.1:1/path"], "--incumbent"),
        (["proxy", "grpc", "--incumbent", "grpcs://127.0.0.1:1", "--upstream-ca", "/nonexistent/ca.pem"], "--upstream-ca"),
        (["proxy", "grpc", "--incumbent", "127.0.0.1:1", "--faults", "/nonexistent/plan.yaml"], "--faults"),
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


def test_scenario_validate_names_the_file_and_field(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nphases:\n  - name: a\n    duration_s: 10\n    faults:\n      - {type: nan, probability: 2}\n")
    assert main(["scenario", "validate", str(bad)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert str(bad) in err and "phases[0].faults[0].probability" in err and "Traceback" not in err
    assert main(["run", str(bad)]) == EXIT_USAGE  # nothing is started for a bad scenario


def test_scenario_validate_and_schema_succeed_on_the_library(capsys):
    library = Path(__file__).resolve().parents[2] / "scenarios" / "nan-storm.yaml"
    assert main(["scenario", "validate", str(library)]) == 0
    assert capsys.readouterr().out.startswith(f"ok: {library}")
    assert main(["scenario", "schema"]) == 0
    assert '"title": "Shadowline scenario"' in capsys.readouterr().out
