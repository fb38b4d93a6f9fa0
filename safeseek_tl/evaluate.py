"""Measure a model's safety behaviour, whole, with a circuit ablated, and with only the circuit kept.

The same numbers for every method: refusal rate and attack success rate (keyword judge on greedy
generations), each with the logit refusal score of the same prompts (no generation, no keywords),
and utility as the mean completion cross-entropy on benign data. :func:`intervention_kl` is the
cost of an intervention that the community reports beside refusals: KL(full || intervened) of the
next-token distribution at the last prompt position, on harmless prompts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from safeseek_tl.ablation import AblationMode, ReferenceActivations, ablated
from safeseek_tl.data import AlignmentRecord, BackdoorRecord, BenignRecord, Record, batch_slices, tokenize_pairs, tokenize_prompts
from safeseek_tl.errors import InputError
from safeseek_tl.generation import generate
from safeseek_tl.metrics import (
    RefusalJudge,
    completion_cross_entropy,
    last_position_kl,
    refusal_first_tokens,
    refusal_score,
    refusal_token_ids,
)
from safeseek_tl.models import LoadedModel
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
def last_logits(loaded: LoadedModel, prompts: Sequence[str], batch_size: int = 16) -> Float[Tensor, "n_prompts d_vocab"]:
    """Next-token logits at the last position of each chat-templated prompt, as the model runs now.

    The last prompt position is where the answer starts; hooks already installed (an ablation)
    count. Float32, on the CPU; only that position is unembedded.
    """
    tokens = tokenize_prompts(loaded.chat, prompts)
    device = loaded.device
    rows = []
    for part in batch_slices(len(prompts), batch_size):
        ids, mask = tokens.input_ids[part].to(device), tokens.attention_mask[part].to(device)
        rows.append(loaded.model(ids, attention_mask=mask, logits_to_keep=1)[:, -1].float().cpu())
    return torch.cat(rows)


def refusal_scores(
    loaded: LoadedModel, prompts: Sequence[str], batch_size: int = 16, refusal_ids: Sequence[int] | None = None
) -> Float[Tensor, " n_prompts"]:
    """The logit refusal score of each prompt (:func:`~safeseek_tl.metrics.refusal_score`), as the model runs now.

    Read at the last prompt position, where the answer starts; hooks already installed (an
    ablation) count. It needs no keywords, so it checks a keyword judge that may not fit the model.
    ``refusal_ids``: the refusal tokens, by default the tokenizer's typical refusal openings
    (:func:`~safeseek_tl.metrics.refusal_token_ids`); :func:`own_refusal_token_ids` finds those
    that open this model's own refusals, as Arditi et al. chose theirs.
    """
    ids = refusal_token_ids(loaded.tokenizer) if refusal_ids is None else list(refusal_ids)
    return refusal_score(last_logits(loaded, prompts, batch_size), ids)


def own_refusal_token_ids(
    loaded: LoadedModel,
    harmful: Sequence[str],
    judge: RefusalJudge | None = None,
    min_share: float = 0.1,
    max_new_tokens: int = 32,
    batch_size: int = 16,
) -> list[int]:
    """The first tokens of the model's own refusals of ``harmful`` prompts (Arditi et al.'s refusal tokens).

    The model answers greedily and ``judge`` (default: the keyword judge) says which answers are
    refusals; the first token of an answer is the argmax of the last prompt position's logits.
    Tokens that open fewer than ``min_share`` of the refusals are dropped
    (:func:`~safeseek_tl.metrics.refusal_first_tokens`).
    """
    judge = judge or RefusalJudge()
    answers = generate(loaded.model, loaded.chat, harmful, max_new_tokens, batch_size, progress=False)
    first = last_logits(loaded, harmful, batch_size).argmax(-1).tolist()
    return refusal_first_tokens(first, [judge.is_refusal(answer) for answer in answers], min_share)


def intervention_kl(
    loaded: LoadedModel,
    prompts: Sequence[str],
    intervention: Callable[[], AbstractContextManager[Any]],
    batch_size: int = 16,
) -> Float[Tensor, " n_prompts"]:
    """KL(full || intervened) of the next-token distribution at the last prompt position, per prompt.

    ``intervention`` makes the context manager to measure, e.g. ``lambda: ablated(loaded.model,
    circuit)`` or ``lambda: direction_ablated(loaded.model, direction)``; pass harmless prompts for
    the cost of the intervention where nothing should change. Nats, float32
    (:func:`~safeseek_tl.metrics.last_position_kl`).
    """
    full = last_logits(loaded, prompts, batch_size)
    with intervention():
        intervened = last_logits(loaded, prompts, batch_size)
    return last_position_kl(full, intervened)


@torch.no_grad()
def utility_loss(loaded: LoadedModel, records: Sequence[BenignRecord], batch_size: int = 16, max_length: int = 128) -> float:
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
    loaded: LoadedModel,
    data: BehaviourData,
    judge: RefusalJudge | None = None,
    max_new_tokens: int = 32,
    batch_size: int = 16,
    progress: bool = False,
    other_judges: Mapping[str, RefusalJudge] | None = None,
) -> dict[str, float]:
    """Behaviour of the model as it runs now (hooks already installed count).

    Each judged rate is followed by the mean logit refusal score of the same prompts
    (``refusal_score_*``): a judge whose keywords do not fit the model shows as rates that
    disagree with the scores. ``other_judges`` judge the same answers again: each judged rate
    gets a twin named ``{rate}_{name}`` per judge, at the end (e.g. ``asr_harmful_arditi``).
    """
    judge = judge or RefusalJudge()
    run = lambda prompts: generate(loaded.model, loaded.chat, prompts, max_new_tokens, batch_size, progress)  # noqa: E731
    prompt_sets = {"harmful": data.harmful, "triggered": data.triggered, "benign": [r.prompt for r in data.benign]}
    answers = {name: run(prompts) for name, prompts in prompt_sets.items() if prompts}
    out: dict[str, float] = {}
    for name, rates in _judged_rates(answers, judge).items():
        out.update(rates)
        out[f"refusal_score_{name}"] = float(refusal_scores(loaded, prompt_sets[name], batch_size).mean())
    if data.benign:
        out["utility_loss"] = utility_loss(loaded, data.benign, batch_size)
    for judge_name, other in (other_judges or {}).items():
        for rates in _judged_rates(answers, other).values():
            out.update({f"{rate}_{judge_name}": value for rate, value in rates.items()})
    return out


def _judged_rates(answers: Mapping[str, Sequence[str]], judge: RefusalJudge) -> dict[str, dict[str, float]]:
    """Per prompt set of :func:`measure` (harmful, triggered, benign), its judged rates from its answers."""
    rules: dict[str, Callable[[Sequence[str]], dict[str, float]]] = {
        "harmful": lambda texts: {"refusal_harmful": judge.refusal_rate(texts), "asr_harmful": judge.attack_success_rate(texts)},
        "triggered": lambda texts: {"asr_triggered": judge.attack_success_rate(texts)},
        "benign": lambda texts: {"benign_answered": 1.0 - judge.refusal_rate(texts)},
    }
    return {name: rules[name](texts) for name, texts in answers.items()}


def reference_activations(loaded: Any, data: BehaviourData, batch_size: int = 16) -> ReferenceActivations:
    """What mean and resample ablation replace units with: the benign prompts' activations, or without
    benign prompts the harmful ones'."""
    prompts = [r.prompt for r in data.benign] or data.harmful
    tokens = tokenize_prompts(loaded.chat, prompts)
    batches = ((tokens.input_ids[p], tokens.attention_mask[p]) for p in batch_slices(len(prompts), batch_size))
    return ReferenceActivations.collect(loaded.model, batches)

def evaluate(
    loaded: LoadedModel,
    circuit: Circuit,
    data: BehaviourData,
    mode: AblationMode = "zero",
    reference: ReferenceActivations | None = None,
    judge: RefusalJudge | None = None,
    max_new_tokens: int = 32,
    conditions: Sequence[str] = ("full", "ablated", "circuit_only"),
) -> dict[str, dict[str, float]]:
    """Behaviour of the full model, with ``circuit`` ablated (necessity) and with only it kept (sufficiency)."""
    contexts: dict[str, Callable[[], AbstractContextManager[Any]]] = {
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
