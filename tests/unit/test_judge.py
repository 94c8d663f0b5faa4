"""Policy files and --set overrides feeding the judge."""

from __future__ import annotations

import pytest

from harness.checks import checks_from_config
from harness.judge import JudgeInputError, load_policy


def test_policy_file_and_overrides_merge_with_flags_winning(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("checks:\n  label_agreement: {margin: 0.02, critical: true}\n  score_psi: false\n")
    config = load_policy(policy, ["label_agreement.margin=0.05", "latency.quantile=0.95"])
    assert config == {"label_agreement": {"margin": 0.05, "critical": True}, "score_psi": False, "latency": {"quantile": 0.95}}
    names = {check.name for check in checks_from_config(config)}
    assert "score_psi" not in names and {"label_agreement", "latency", "errors"} <= names


@pytest.mark.parametrize("text", ["checks: [1, 2]\n", "just a string\n", "checks: {a: 1\n"])
def test_a_bad_policy_file_names_the_file(tmp_path, text):
    policy = tmp_path / "bad.yaml"
    policy.write_text(text)
    with pytest.raises(JudgeInputError, match="bad.yaml"):
        load_policy(policy, [])


@pytest.mark.parametrize("item", ["margin=0.1", "label_agreement=0.1", ".margin=1", "label_agreement.margin"])
def test_a_malformed_override_says_the_expected_form(item):
    with pytest.raises(JudgeInputError, match="CHECK.PARAM=VALUE"):
        load_policy(None, [item])


def test_missing_policy_file_names_it(tmp_path):
    with pytest.raises(JudgeInputError, match="nope.yaml"):
        load_policy(tmp_path / "nope.yaml", [])
