"""Choosing the refusal direction (Arditi et al. 2024) among the candidates, and the ``refusal-direction`` baseline.

:func:`evaluate_candidates` measures every candidate of :func:`~safeseek_tl.baselines.direction.mean_differences`
on validation prompts once; :func:`choose_direction` applies the filters (:func:`rejection`) and
picks the lowest refusal score under ablation, so other limits cost no model pass;
:func:`select_direction` does both; :func:`find_refusal_direction` is the whole recipe and
:func:`refusal_direction_scores` the registered baseline (the direction, then the units ranked by
their write onto it). docs/direction.md has the details.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from safeseek_tl.baselines.direction import RefusalDirection, direction_ablated, direction_added, direction_unit_scores, first_pruned_layer, mean_differences
from safeseek_tl.errors import InputError
from safeseek_tl.evaluate import last_logits, own_refusal_token_ids, refusal_scores
from safeseek_tl.metrics import last_position_kl, refusal_score, refusal_token_ids
from safeseek_tl.models import LoadedModel
from safeseek_tl.units import Scores


def rejection(
    layer: int, n_layers: int, norm: float, kl: float | None, induced: float | None, *, kl_limit: float = 0.1, induce_min: float | None = 0.0, prune_fraction: float = 0.2
) -> str | None:
    """Why a candidate is rejected (Arditi et al.'s filters), or ``None`` when it is kept.

    Rejected: a layer in the last ``prune_fraction`` of layers; a zero vector (at the first layer
    the post-instruction tokens are the same for every prompt) or a non-finite one; a KL on
    harmless prompts above ``kl_limit``; an induced refusal score below ``induce_min`` (``None``:
    not checked); a NaN.
    """
    if layer >= first_pruned_layer(n_layers, prune_fraction):
        return f"layer in the last {prune_fraction:.0%} of layers"
    if not (math.isfinite(norm) and norm > 0):
        return "zero or not finite"
    if kl is None or math.isnan(kl) or (induce_min is not None and (induced is None or math.isnan(induced))):
        return "not a number"
    if kl > kl_limit:
        return f"KL above {kl_limit}"
    if induce_min is not None and induced is not None and induced < induce_min:
        return f"induced refusal score below {induce_min}"
    return None


def _evaluate(loaded: LoadedModel, vector: Tensor, layer: int, harmful: Sequence[str], harmless: Sequence[str], full: Tensor, ids: list[int], induce: bool, batch_size: int) -> dict[str, float | None]:
    """Ablated refusal score (harmful), KL (harmless) and induced refusal score (harmless) of one candidate."""
    with direction_ablated(loaded.model, vector):
        ablated = float(refusal_scores(loaded, harmful, batch_size, ids).mean())
        kl = float(last_position_kl(full, last_logits(loaded, harmless, batch_size)).mean())
    induced = None
    if induce:
        with direction_added(loaded.model, vector, layer):
            induced = float(refusal_scores(loaded, harmless, batch_size, ids).mean())
    return {"ablated_score": ablated, "kl": kl, "induced_score": induced}


@dataclass
class CandidateEvaluation:
    """Every candidate's validation numbers (:func:`evaluate_candidates`): one row per candidate, as
    :class:`RefusalDirection`'s ``table`` (without ``rejected``), the full model's refusal scores and
    the settings they were measured with. Filters are applied afterwards (:func:`choose_direction`),
    so trying other limits costs no model pass."""

    rows: list[dict[str, Any]]
    baseline: dict[str, float]
    settings: dict[str, Any]

    @classmethod
    def of(cls, chosen: RefusalDirection) -> CandidateEvaluation:
        """The evaluation a direction was chosen from (a saved one: :meth:`~safeseek_tl.baselines.direction.RefusalDirection.load`), to
        choose again with other limits without measuring again: ``choose_direction(chosen.candidates, ...)``."""
        rows = [{key: value for key, value in row.items() if key != "rejected"} for row in chosen.table]
        settings = {key: value for key, value in chosen.settings.items() if key not in ("kl_limit", "induce_min")}
        return cls(rows, dict(chosen.baseline), settings | {"induce": any(row.get("induced_score") is not None for row in rows)})


def evaluate_candidates(
    loaded: LoadedModel,
    candidates: Float[Tensor, "n_positions n_layers d_model"],
    harmful_val: Sequence[str],
    harmless_val: Sequence[str],
    *,
    induce: bool = True,
    prune_fraction: float = 0.2,
    refusal_ids: Sequence[int] | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> CandidateEvaluation:
    """Measure ``candidates`` (:func:`mean_differences`) on validation prompts: refusal score of
    ``harmful_val`` under directional ablation, KL on ``harmless_val``, and with ``induce`` their
    refusal score with the candidate added. Candidates of the last ``prune_fraction`` of layers and
    zero ones are not measured. ``refusal_ids`` default to the tokenizer's refusal openings
    (:func:`~safeseek_tl.evaluate.own_refusal_token_ids` finds the model's own)."""
    if not harmful_val or not harmless_val:
        raise InputError("choosing a refusal direction needs harmful and harmless validation prompts")
    n_positions, n_layers = candidates.shape[:2]
    ids = refusal_token_ids(loaded.tokenizer) if refusal_ids is None else [int(i) for i in refusal_ids]
    full = last_logits(loaded, harmless_val, batch_size)
    baseline = {"refusal_score_harmful": float(refusal_scores(loaded, harmful_val, batch_size, ids).mean()), "refusal_score_harmless": float(refusal_score(full, ids).mean())}
    rows = []
    for index in tqdm(range(n_positions * n_layers), desc="refusal direction", disable=not progress, leave=False):
        pos, layer = divmod(index, n_layers)
        row: dict[str, Any] = {"position": pos - n_positions, "layer": layer, "ablated_score": None, "score_drop": None, "kl": None, "induced_score": None}
        norm = float(candidates[pos, layer].double().norm())
        if layer < first_pruned_layer(n_layers, prune_fraction) and math.isfinite(norm) and norm > 0:
            row.update(_evaluate(loaded, candidates[pos, layer], layer, harmful_val, harmless_val, full, ids, induce, batch_size))
            row["score_drop"] = baseline["refusal_score_harmful"] - row["ablated_score"]
        rows.append(row)
    settings = {"induce": induce, "prune_fraction": prune_fraction, "refusal_ids": ids, "n_harmful_val": len(harmful_val), "n_harmless_val": len(harmless_val)}
    return CandidateEvaluation(rows, baseline, settings)


def choose_direction(
    candidates: Float[Tensor, "n_positions n_layers d_model"],
    evaluation: CandidateEvaluation,
    *,
    kl_limit: float = 0.1,
    induce_min: float | None = 0.0,
) -> RefusalDirection:
    """The kept candidate (see :func:`rejection`) with the lowest mean refusal score of the harmful
    validation prompts under directional ablation (the first such, position-major, on ties).

    Raises :class:`~safeseek_tl.errors.InputError` when every candidate is rejected (``evaluation``
    is untouched: choose again with other limits) or when ``induce_min`` asks for the induced
    refusal of an evaluation made without it."""
    if induce_min is not None and not evaluation.settings["induce"]:
        raise InputError("induce_min needs the induced refusal score: evaluate the candidates with induce=True, or pass induce_min=None")
    n_layers, prune_fraction = candidates.shape[1], evaluation.settings["prune_fraction"]
    table = []
    for row in evaluation.rows:
        norm = float(candidates[row["position"], row["layer"]].double().norm())
        rejected = rejection(row["layer"], n_layers, norm, row["kl"], row["induced_score"], kl_limit=kl_limit, induce_min=induce_min, prune_fraction=prune_fraction)
        table.append({**row, "rejected": rejected})
    kept = [row for row in table if row["rejected"] is None]
    if not kept:
        reasons = ", ".join(f"{count} {reason}" for reason, count in Counter(row["rejected"] for row in table).items())
        raise InputError(f"all {len(table)} candidate directions were rejected ({reasons}); raise kl_limit, lower induce_min or prune_fraction")
    best = min(kept, key=lambda row: row["ablated_score"])
    settings = {"kl_limit": kl_limit, "induce_min": induce_min, **{key: value for key, value in evaluation.settings.items() if key != "induce"}}
    position, layer = best["position"], best["layer"]
    return RefusalDirection(candidates[position, layer].float().clone(), layer, position, candidates.float(), table, dict(evaluation.baseline), settings)


def select_direction(
    loaded: LoadedModel,
    candidates: Float[Tensor, "n_positions n_layers d_model"],
    harmful_val: Sequence[str],
    harmless_val: Sequence[str],
    *,
    kl_limit: float = 0.1,
    induce_min: float | None = 0.0,
    prune_fraction: float = 0.2,
    refusal_ids: Sequence[int] | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> RefusalDirection:
    """Choose among ``candidates`` on validation prompts: :func:`evaluate_candidates`, then
    :func:`choose_direction` (Arditi et al.'s filters, :func:`rejection`). The induced refusal is
    measured only when ``induce_min`` asks for it."""
    evaluation = evaluate_candidates(
        loaded, candidates, harmful_val, harmless_val, induce=induce_min is not None, prune_fraction=prune_fraction, refusal_ids=refusal_ids, batch_size=batch_size, progress=progress
    )
    return choose_direction(candidates, evaluation, kl_limit=kl_limit, induce_min=induce_min)


def find_refusal_direction(
    loaded: LoadedModel,
    harmful_train: Sequence[str],
    harmless_train: Sequence[str],
    harmful_val: Sequence[str],
    harmless_val: Sequence[str],
    *,
    n_positions: int | None = None,
    batch_size: int = 16,
    **selection: Any,
) -> RefusalDirection:
    """Arditi et al.'s recipe: :func:`mean_differences` on the training prompts, :func:`select_direction` on the validation ones."""
    candidates = mean_differences(loaded, harmful_train, harmless_train, n_positions, batch_size)
    found = select_direction(loaded, candidates, harmful_val, harmless_val, batch_size=batch_size, **selection)
    found.settings.update(n_harmful_train=len(harmful_train), n_harmless_train=len(harmless_train))
    return found


def _split(prompts: Sequence[str], val_fraction: float, what: str) -> tuple[list[str], list[str]]:
    """(train, validation): the last ``val_fraction`` of the prompts, at least one, is held out."""
    if not 0.0 < val_fraction < 1.0:
        raise InputError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if len(prompts) < 2:
        raise InputError(f"the refusal direction needs at least 2 {what} prompts (training and validation), got {len(prompts)}")
    n_val = min(len(prompts) - 1, max(1, round(val_fraction * len(prompts))))
    return list(prompts[:-n_val]), list(prompts[-n_val:])


def refusal_direction_scores(
    loaded: LoadedModel,
    harmful: Sequence[str],
    harmless: Sequence[str],
    *,
    val_fraction: float = 0.25,
    refusal_ids: Sequence[int] | Literal["own"] | None = None,
    batch_size: int = 16,
    progress: bool = True,
    **selection: Any,
) -> Scores:
    """The ``refusal-direction`` baseline: find the direction, then rank the units by their write onto it.

    The last ``val_fraction`` of each prompt list chooses the direction (:func:`select_direction`,
    whose options ``selection`` passes on), the rest computes the candidates and the unit scores.
    ``refusal_ids="own"``: the refusal tokens are the first tokens of the model's own refusals of
    the harmful training prompts. ``metadata`` holds the chosen layer and position and the table.
    """
    harmful_train, harmful_val = _split(harmful, val_fraction, "harmful")
    harmless_train, harmless_val = _split(harmless, val_fraction, "harmless")
    ids = own_refusal_token_ids(loaded, harmful_train, batch_size=batch_size) if refusal_ids == "own" else refusal_ids
    found = find_refusal_direction(
        loaded, harmful_train, harmless_train, harmful_val, harmless_val, batch_size=batch_size, refusal_ids=ids, progress=progress, **selection
    )
    scores = direction_unit_scores(loaded, found.direction, harmful_train, harmless_train, batch_size=batch_size)
    scores.metadata.update(found.summary())
    return scores
