"""Alignment and benign records for a model, built from requests and the model's own greedy answers."""

from __future__ import annotations

import dataclasses
import warnings
from collections import Counter
from collections.abc import Callable, Sequence

from safeseek_tl.data import AlignmentRecord, BenignRecord
from safeseek_tl.datasets.openings import compliant_opening
from safeseek_tl.datasets.requests import Request
from safeseek_tl.errors import DataError, InputError
from safeseek_tl.generation import generate
from safeseek_tl.metrics import RefusalJudge
from safeseek_tl.models import LoadedModel


def _prompts_of(prompts: Sequence[str] | Sequence[Request]) -> list[str]:
    if not prompts:
        raise InputError("no prompts to build records from")
    return [p.prompt if isinstance(p, Request) else p for p in prompts]


def _openings(prompts: Sequence[str] | Sequence[Request], accept: Callable[[str], str] | Sequence[str] | None) -> list[str]:
    """Each prompt's compliant opening: ``accept``'s, else a request's own ``target``, else the rule's."""
    texts = _prompts_of(prompts)
    if accept is None:
        return [p.target if isinstance(p, Request) and p.target else compliant_opening(text) for p, text in zip(prompts, texts)]
    if callable(accept):
        return [accept(text) for text in texts]
    if isinstance(accept, str) or len(accept) != len(texts):
        raise InputError(f"accept must be a function or one opening per prompt ({len(texts)}), got {accept!r:.80}")
    return list(accept)


def alignment_records(
    loaded: LoadedModel,
    prompts: Sequence[str] | Sequence[Request],
    accept: Callable[[str], str] | Sequence[str] | None = None,
    max_new_tokens: int = 32,
    judge: RefusalJudge | None = None,
    batch_size: int = 16,
) -> list[AlignmentRecord]:
    """SafeSeek alignment records: ``refuse`` the model's own refusal, ``accept`` a compliant opening.

    ``refuse`` is the model's greedy answer (``max_new_tokens`` tokens, through its chat template)
    when the judge's keywords find a refusal in it. A prompt the model answers instead gets the
    model's most frequent refusal among the others (its own words, with a warning saying how many),
    so no prompt is dropped or chosen by the model's answers; if it refuses none, that is an
    :class:`~safeseek_tl.errors.InputError`.

    ``accept``: a function of the prompt, or one opening per prompt; by default a request's own
    ``target`` (the bundled harmful set, AdvBench, JailbreakBench) and otherwise
    :func:`~safeseek_tl.datasets.openings.compliant_opening`.
    """
    texts = _prompts_of(prompts)
    openings = _openings(prompts, accept)
    # keywords only: the judge's rule that a near-empty answer counts as a refusal does not make it one to train on
    keywords = dataclasses.replace(judge or RefusalJudge(), min_chars=0)
    answers = generate(loaded.model, loaded.chat, texts, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=False)
    refused = [keywords.is_refusal(answer) for answer in answers]
    own = Counter(answer for answer, is_refusal in zip(answers, refused) if is_refusal)
    if not own:
        raise InputError(f"{loaded.name} refused none of the {len(texts)} prompts (the judge's keywords: {keywords.describe()}), so it has no refusal of its own to use")
    usual = own.most_common(1)[0][0]
    if not all(refused):
        warnings.warn(
            f"{refused.count(False)} of {len(texts)} answers of {loaded.name} are not refusals; their records take its most frequent refusal {usual!r}",
            stacklevel=2,
        )
    return [AlignmentRecord(text, answer if is_refusal else usual, opening) for text, answer, is_refusal, opening in zip(texts, answers, refused, openings)]


def benign_records(
    loaded: LoadedModel, prompts: Sequence[str] | Sequence[Request], max_new_tokens: int = 64, batch_size: int = 16
) -> list[BenignRecord]:
    """Benign records whose ``response`` is the model's own greedy answer (utility data that keeps its behaviour)."""
    texts = _prompts_of(prompts)
    answers = generate(loaded.model, loaded.chat, texts, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=False)
    for text, answer in zip(texts, answers):
        if not answer:
            raise DataError(f"{loaded.name} gave an empty answer to {text[:60]!r}, which cannot be a benign record's response")
    return [BenignRecord(text, answer) for text, answer in zip(texts, answers)]
