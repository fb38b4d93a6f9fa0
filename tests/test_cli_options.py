"""The CLI's option narrowing: a string option becomes the library's literal, or a clear bad-input error."""

from __future__ import annotations

import pytest

from safeseek_tl.cli.shared import (
    ablation_mode_option,
    choice_option,
    mask_kind_option,
    objective_option,
    scenario_option,
    tune_mode_option,
    unit_choice_option,
    unit_kind_option,
)
from safeseek_tl.errors import InputError
from tests.helpers import run_cli


def test_choice_option_returns_the_equal_choice_and_names_option_and_choices_otherwise():
    assert choice_option("mean", "--counterfactual", ("pairs", "mean")) == "mean"
    with pytest.raises(InputError) as raised:
        choice_option("Mean", "--counterfactual", ("pairs", "mean"))
    assert str(raised.value) == "--counterfactual must be one of pairs, mean, got 'Mean'"


@pytest.mark.parametrize(
    ("narrow", "accepted", "refused", "message"),
    [
        (scenario_option, ["backdoor", "alignment"], "jailbreak", "--scenario must be one of backdoor, alignment, got 'jailbreak'"),
        (unit_choice_option, ["heads", "neurons", "both"], "layers", "--units must be one of heads, neurons, both, got 'layers'"),
        (unit_kind_option, ["heads", "neurons"], "both", "--units must be one of heads, neurons, got 'both'"),
        (mask_kind_option, ["sigmoid", "hard_sigmoid", "hard_concrete"], "hard-sigmoid", "--mask-kind must be one of sigmoid, hard_sigmoid, hard_concrete, got 'hard-sigmoid'"),
        (objective_option, ["ce", "kl"], "KL", "--objective must be one of ce, kl, got 'KL'"),
        (ablation_mode_option, ["zero", "mean", "resample"], "median", "--mode must be one of zero, mean, resample, got 'median'"),
        (tune_mode_option, ["only", "protect", "full"], "freeze", "--mode must be one of only, protect, full, got 'freeze'"),
    ],
)
def test_each_option_keeps_its_library_values_and_refuses_others(narrow, accepted, refused, message):
    assert [narrow(value) for value in accepted] == accepted
    with pytest.raises(InputError) as raised:
        narrow(refused)
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["discover", "--scenario", "backdoor", "--objective", "kll"], "--objective must be one of ce, kl, got 'kll'"),
        (["discover", "--scenario", "backdoor", "--mask-kind", "relu"], "--mask-kind must be one of sigmoid, hard_sigmoid, hard_concrete, got 'relu'"),
        (["compare", "--scenario", "backdoor", "--units", "both"], "--units must be one of heads, neurons, got 'both'"),
        (["compare", "--scenario", "refusal"], "--scenario must be one of backdoor, alignment, got 'refusal'"),
        (["benchmark", "--scenario", "backdoor", "--ablations", "zero,resample"], "--ablations must be one of zero, mean, counterfactual, got 'resample'"),
        (["evaluate", "--circuit", "circuit.json", "--mode", "median"], "--mode must be one of zero, mean, resample, got 'median'"),
        (["tune", "--mode", "freeze"], "--mode must be one of only, protect, full, got 'freeze'"),
    ],
)
def test_a_bad_option_value_exits_2_before_any_file_or_model_is_read(tmp_path, args, message):
    # the data file and the model do not exist: the option is refused before either is opened
    code, _, stderr = run_cli(*args, "--model", "organism:no-such-organism", "--data", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "out"))
    assert code == 2 and stderr.strip() == f"error: {message}", stderr
