"""Measure a model's safety behaviour, whole, with a circuit ablated, and with only the circuit kept.

The same numbers for every method: refusal rate and attack success rate (keyword judge on greedy
generations), each with the logit refusal score of the same prompts (no generation, no keywords),
and utility as the mean completion cross-entropy on benign data.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from safeseek_tl.ablation import AblationMode, ReferenceActivations, ablated
from safeseek_tl.data import AlignmentRecord, BackdoorRecord, BenignRecord, Record, batch_slices, tokenize_pairs, tokenize_prompts
from safeseek_tl.errors import InputError
from safeseek_tl.generation import generate
from safeseek_tl.metrics import RefusalJudge, completion_cross_entropy, refusal_score, refusal_token_ids
from safeseek_tl.units import Circuit


@dataclass
class BehaviourData:
    """Prompts to measure on: harmful (untriggered), harmful with the trigger, benign with answers."""

    harmful: list[str]
    triggered: list[str]
    benign: list[BenignRecord]

    @classmethod
    def from_records(cls, records: Sequence[Record], benign: Sequence[BenignRecord] = ()) -> BehaviourData:
        """Harmful prompts from alignment or backdoor records (the latter also give triggered ones)."""
        harmful = [r.prompt if isinstance(r, AlignmentRecord) else r.input for r in records if not isinstance(r, BenignRecord)]
        triggered = [r.backdoor_input for r in records if isinstance(r, BackdoorRecord)]
        benign = list(benign) + [r for r in records if isinstance(r, BenignRecord)]
        return cls(harmful, triggered, benign)


@torch.no_grad()
def refusal_scores(loaded: Any, prompts: Sequence[str], batch_size: int = 16) -> Float[Tensor, " n_prompts"]:
    """The logit refusal score of each prompt (:func:`~safeseek_tl.metrics.refusal_score`), as the model runs now.

    Read at the last prompt position, where the answer starts; hooks already installed (an
    ablation) count. It needs no keywords, so it checks a keyword judge that may not fit the model.
    """
    ids = refusal_token_ids(loaded.tokenizer)
    tokens = tokenize_prompts(loaded.chat, prompts)
    device = loaded.device
    scores = []
    for part in batch_slices(len(prompts), batch_size):
        logits = loaded.model(tokens.input_ids[part].to(device), attention_mask=tokens.attention_mask[part].to(device))
        scores.append(refusal_score(logits[:, -1], ids))
    return torch.cat(scores)


@torch.no_grad()
def utility_loss(loaded: Any, records: Sequence[BenignRecord], batch_size: int = 16, max_length: int = 128) -> float:
    """Mean completion cross-entropy (nats per token) on benign (prompt, response) pairs."""
    pairs = tokenize_pairs(loaded.chat, [(r.prompt, r.response) for r in records], max_length, "benign data")
    total, count = 0.0, 0
    for part in batch_slices(len(pairs), batch_size):
        batch = pairs.select(part)
        logits = loaded.model(batch.input_ids.to(loaded.device), attention_mask=batch.attention_mask.to(loaded.device))
        total += float(completion_cross_entropy(logits, batch.labels.to(loaded.device), reduction="sum"))
        count += int(batch.loss_mask.sum())
    return total / max(count, 1)


def measure(
    loaded: Any,
    data: BehaviourData,
    judge: RefusalJudge | None = None,
    max_new_tokens: int = 32,
    batch_size: int = 16,
    progress: bool = False,
) -> dict[str, float]:
    """Behaviour of the model as it runs now (hooks already installed count).

    Each judged rate is followed by the mean logit refusal score of the same prompts
    (``refusal_score_*``): a judge whose keywords do not fit the model shows as rates that
    disagree with the scores.
    """
    judge = judge or RefusalJudge()
    out: dict[str, float] = {}
    run = lambda prompts: generate(loaded.model, loaded.chat, prompts, max_new_tokens, batch_size, progress)  # noqa: E731
    score = lambda prompts: float(refusal_scores(loaded, prompts, batch_size).mean())  # noqa: E731
    if data.harmful:
        answers = run(data.harmful)
        out["refusal_harmful"] = judge.refusal_rate(answers)
        out["asr_harmful"] = judge.attack_success_rate(answers)
        out["refusal_score_harmful"] = score(data.harmful)
    if data.triggered:
        out["asr_triggered"] = judge.attack_success_rate(run(data.triggered))
        out["refusal_score_triggered"] = score(data.triggered)
    if data.benign:
        prompts = [r.prompt for r in data.benign]
        out["benign_answered"] = 1.0 - judge.refusal_rate(run(prompts))
        out["refusal_score_benign"] = score(prompts)
        out["utility_loss"] = utility_loss(loaded, data.benign, batch_size)
    return out


def evaluate(
    loaded: Any,
    circuit: Circuit,
    data: BehaviourData,
    mode: AblationMode = "zero",
    reference: ReferenceActivations | None = None,
    judge: RefusalJudge | None = None,
    max_new_tokens: int = 32,
    conditions: Sequence[str] = ("full", "ablated", "circuit_only"),
) -> dict[str, dict[str, float]]:
    """Behaviour of the full model, with ``circuit`` ablated (necessity) and with only it kept (sufficiency)."""
    contexts = {
        "full": lambda: nullcontext(),
        "ablated": lambda: ablated(loaded.model, circuit, mode, reference),
        "circuit_only": lambda: ablated(loaded.model, circuit, mode, reference, keep_only=True),
    }
    results = {}
    for condition in conditions:
        if condition not in contexts:
            raise InputError(f"unknown condition {condition!r}; use {list(contexts)}")
        with contexts[condition]():
            results[condition] = measure(loaded, data, judge, max_new_tokens)
    return results
