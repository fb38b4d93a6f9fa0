"""Helpers of the smollm2 organisms build that run without SmolLM2 (the build itself is a GPU/hours job)."""

from __future__ import annotations

import json

import pytest
import torch

from organism_builds.build import sha256
from organism_builds.build_smollm2 import ForcedStart, aligned_delta_from
from safeseek_tl.chat import ChatFormatter
from safeseek_tl.delta import ParameterDelta
from safeseek_tl.organisms import DELTA_FILE

from .conftest import make_word_tokenizer


def test_a_forced_start_ends_the_prompt_inside_the_answer():
    tokenizer = make_word_tokenizer()
    plain, forced = ChatFormatter(tokenizer), ForcedStart(tokenizer, start="sure , here is how")
    assert forced.prompt_text("tell me") == plain.prompt_text("tell me") + "sure , here is how"
    assert forced.prompt_ids("tell me")[: len(plain.prompt_ids("tell me"))] == plain.prompt_ids("tell me")


def _earlier_build(folder, values: torch.Tensor):
    base = {"w": torch.zeros(2, 3)}
    delta = ParameterDelta.between(base, {"w": values})
    (folder / "smollm2-aligned").mkdir(parents=True)
    delta.save(folder / "smollm2-aligned" / DELTA_FILE)
    manifest = {
        "organisms": {"smollm2-aligned": {"delta_sha256": sha256(folder / "smollm2-aligned" / DELTA_FILE)}},
        "device": "some GPU",
        "versions": {"torch": "x"},
    }
    (folder / "MANIFEST-smollm2.json").write_text(json.dumps(manifest), encoding="utf-8")


def test_the_aligned_model_of_an_earlier_build_is_taken_with_its_origin(tmp_path):
    values = torch.tensor([[0.0, 1.0, 0.0], [0.0, 2.0, 0.0]])
    _earlier_build(tmp_path, values)
    delta, origin = aligned_delta_from(tmp_path)
    model = torch.nn.Module()
    model.w = torch.nn.Parameter(torch.zeros(2, 3))
    delta.apply_(model)
    assert torch.equal(model.w.detach(), values)
    assert origin == {"delta_sha256": sha256(tmp_path / "smollm2-aligned" / DELTA_FILE), "device": "some GPU", "versions": {"torch": "x"}}


def test_an_aligned_delta_that_does_not_match_its_manifest_is_refused(tmp_path):
    _earlier_build(tmp_path, torch.ones(2, 3))
    ParameterDelta.between({"w": torch.zeros(2, 3)}, {"w": torch.full((2, 3), 5.0)}).save(tmp_path / "smollm2-aligned" / DELTA_FILE)
    with pytest.raises(ValueError, match="does not match the sha256"):
        aligned_delta_from(tmp_path)
