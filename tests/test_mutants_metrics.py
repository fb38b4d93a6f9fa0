"""Behaviour metrics pinned on tiny hand-made inputs (gaps found by mutation testing: ``make mutation
MODULES=metrics``). Every expected value is worked out by hand."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from safeseek_tl import RefusalJudge, completion_cross_entropy, refusal_score, refusal_token_ids

LOG4 = math.log(4.0)


def test_completion_cross_entropy_reductions_on_uniform_logits():
    # 4-token vocabulary, all logits 0: every completion token costs log 4. Labels are shifted by
    # one: row 0 has 2 completion targets, row 1 has 1.
    logits = torch.zeros(2, 4, 4)
    labels = torch.tensor([[-100, -100, 2, 3], [-100, -100, -100, 1]])
    assert float(completion_cross_entropy(logits, labels, reduction="sum")) == pytest.approx(3 * LOG4)
    assert float(completion_cross_entropy(logits, labels)) == pytest.approx(LOG4)  # mean over the 3 tokens
    assert completion_cross_entropy(logits, labels, reduction="none").tolist() == pytest.approx([LOG4, LOG4])
    # one completion token in the whole batch: its loss, not half of it
    assert float(completion_cross_entropy(logits[1:], labels[1:])) == pytest.approx(LOG4)


def test_refusal_score_stays_finite_when_every_token_is_a_refusal():
    # P_ref = 1: log(1 + 1e-8) - log(1e-8)
    score = refusal_score(torch.zeros(1, 3), [0, 1, 2])
    assert float(score[0]) == pytest.approx(math.log(1 + 1e-8) - math.log(1e-8), rel=1e-12)


class _Tokenizer:
    """Word tokenizer stand-in: 'I' -> 5, ' I' -> 7, anything else unknown (0); a BOS (1) first
    unless add_special_tokens=False."""

    unk_token_id = 0

    def __call__(self, text, add_special_tokens=True):
        ids = {"I": [5], " I": [7]}.get(text, [0])
        return SimpleNamespace(input_ids=([1] if add_special_tokens else []) + ids)


def test_refusal_token_ids_reads_the_bare_and_the_spaced_opening_without_special_tokens():
    assert refusal_token_ids(_Tokenizer(), ["I"]) == [5, 7]

    class NoUnk:  # no unk_token_id: no id is dropped as unknown
        def __call__(self, text, add_special_tokens=True):
            return _Tokenizer()(text, add_special_tokens)

    assert refusal_token_ids(NoUnk(), ["I", "no"]) == [5, 7, 0]


def test_rates_of_no_response_are_zero():
    judge = RefusalJudge()
    assert judge.refusal_rate([]) == 0.0
    assert judge.attack_success_rate([]) == 0.0


def test_a_response_of_exactly_min_chars_is_judged_by_its_words():
    judge = RefusalJudge(("sorry",), min_chars=10)
    assert not judge.is_refusal("abcdefghij")  # 10 characters, no keyword
    assert judge.is_refusal("abcdefghi")  # 9: too short to be an answer


def test_from_file_passes_min_chars_and_takes_a_bom_only_at_the_start(tmp_path):
    path = tmp_path / "keywords.txt"
    # a byte-order mark opens the file; the same bytes on a later line are a character of it
    path.write_bytes(b"\xef\xbb\xbfsorry\n\xef\xbb\xbfnope\n")
    judge = RefusalJudge.from_file(path, min_chars=5, case_sensitive=True)
    assert judge.keywords == ("sorry", "\ufeffnope")
    assert (judge.min_chars, judge.case_sensitive) == (5, True)
