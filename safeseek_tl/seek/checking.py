"""Does ablating a circuit switch the behaviour? The check, and pruning a circuit to what it needs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from torch import Tensor

from safeseek_tl.ablation import ReferenceActivations, ablated
from safeseek_tl.data import BenignRecord, Record
from safeseek_tl.errors import InputError
from safeseek_tl.evaluate import refusal_scores, utility_loss
from safeseek_tl.generation import generate
from safeseek_tl.hooks import UNIT_KINDS, UnitKind
from safeseek_tl.metrics import RefusalJudge
from safeseek_tl.models import LoadedModel
from safeseek_tl.scenarios import scenario_of
from safeseek_tl.seek.config import SeekConfig
from safeseek_tl.seek.result import SeekResult
from safeseek_tl.seek.trainer import search_fill
from safeseek_tl.units import Circuit

SWITCH_TOKENS = 32
"""New tokens generated per prompt when judging whether an ablation switches the behaviour."""


def checked_benign(benign: Sequence[BenignRecord], val_records: Sequence[Record]) -> list[BenignRecord]:
    """The benign records whose answers a check judges: the first ``len(val_records)`` of them.

    Every check generates an answer to each, with the circuit ablated (and once without), while the
    search's objective may use many more: all 180 of a real model's harmless training prompts beside
    20 validation prompts made a 19-minute check (qwen2.5-coder-0.5b-instruct, 2 CPU cores).
    """
    return list(benign[: len(val_records)])


def _judged(loaded: LoadedModel, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
    return generate(loaded.model, loaded.chat, list(prompts), max_new_tokens, progress=False)


def _clean_behaviour(
    loaded: LoadedModel, config: SeekConfig, records: Sequence[Record], benign: Sequence[BenignRecord], max_new_tokens: int, judge: RefusalJudge
) -> dict[str, float]:
    """What must not change: refusal of clean harmful prompts (backdoor), benign answers and their cross-entropy."""
    out: dict[str, float] = {}
    kept_refused = scenario_of(config.scenario).kept_refused_prompts(records)
    if kept_refused:
        out["clean"] = judge.refusal_rate(_judged(loaded, kept_refused, max_new_tokens))
        out["refusal_score_clean"] = float(refusal_scores(loaded, kept_refused).mean())
    if benign:
        prompts = [r.prompt for r in benign]
        out["benign"] = 1 - judge.refusal_rate(_judged(loaded, prompts, max_new_tokens))
        out["refusal_score_benign"] = float(refusal_scores(loaded, prompts).mean())
        out["utility"] = utility_loss(loaded, benign)
    return out


def full_behaviour(
    loaded: LoadedModel, config: SeekConfig, records: Sequence[Record], benign: Sequence[BenignRecord] = (), max_new_tokens: int = SWITCH_TOKENS, judge: RefusalJudge | None = None
) -> dict[str, float]:
    """The clean behaviour of the model without ablation (see :func:`behaviour_switch`), as ``*_full`` keys."""
    return {f"{k}_full": v for k, v in _clean_behaviour(loaded, config, records, benign, max_new_tokens, judge or RefusalJudge()).items()}


def behaviour_switch(
    loaded: LoadedModel,
    config: SeekConfig,
    circuit: Circuit,
    records: Sequence[Record],
    max_new_tokens: int = SWITCH_TOKENS,
    benign: Sequence[BenignRecord] = (),
    full: dict[str, float] | None = None,
    fill: ReferenceActivations | None = None,
    judge: RefusalJudge | None = None,
) -> dict[str, float]:
    """Does ablating ``circuit`` switch the behaviour while keeping clean behaviour? (greedy + keyword judge)

    ``switched``: backdoor, the share of triggered prompts that are refused again (the backdoor is
    gone); alignment, the share of harmful prompts that are now answered. ``clean`` and
    ``clean_full`` (backdoor only): the share of clean harmful prompts refused by the ablated and
    by the full model. With ``benign`` records, ``benign`` and ``benign_full``: the share of benign
    prompts answered, and ``utility`` and ``utility_full``: their completion cross-entropy (an
    answer can be broken without being a refusal). Judged on the model's own generations, not on
    the data's target strings, which a model may word differently. ``full``: the ``*_full`` values
    from an earlier call on the same model and data (:func:`full_behaviour`), so that repeated
    checks do not measure the full model again. The circuit is ablated as the search masked it:
    zero, or with ``config.masks.fill="mean"`` or ``"learned"`` the constants ``fill`` (the search's
    :meth:`~safeseek_tl.seek.result.SeekResult.reference`; for means, default: from ``records``). ``judge``: the keyword
    judge (default :class:`~safeseek_tl.metrics.RefusalJudge`). Each judged rate ``key`` comes
    with ``refusal_score_<key>``, the mean logit refusal score of the same prompts
    (:func:`~safeseek_tl.evaluate.refusal_scores`), which shows a judge that misreads the model.
    """
    judge = judge or RefusalJudge()
    behaviour = scenario_of(config.scenario)
    if full is None:
        full = full_behaviour(loaded, config, records, benign, max_new_tokens, judge)
    if config.masks.fill != "zero" and fill is None:
        fill = search_fill(loaded, config, records)  # raises for a learned fill, which only its search has
    with ablated(loaded.model, circuit, config.ablation_mode, fill):
        prompts = behaviour.behaviour_prompts(records)
        switched = behaviour.switch_rate(judge, _judged(loaded, prompts, max_new_tokens))
        score = float(refusal_scores(loaded, prompts).mean())
        return {**full, "switched": switched, "refusal_score_switched": score, **_clean_behaviour(loaded, config, records, benign, max_new_tokens, judge)}


def switch_test(
    loaded: LoadedModel,
    config: SeekConfig,
    records: Sequence[Record],
    benign_records: Sequence[BenignRecord],
    fill: ReferenceActivations | None,
    min_switched: float,
    max_clean_drop: float,
    max_utility_increase: float,
    judge: RefusalJudge | None = None,
) -> Callable[..., bool]:
    """``switches(circuit, fill=fill)``: does ablating it switch >= ``min_switched`` of ``records``, while clean
    refusals and benign answers drop by at most ``max_clean_drop`` and the benign cross-entropy
    rises by at most ``max_utility_increase`` nats per token? (:func:`behaviour_switch`; ``fill``
    per call: each round of a complete search ablates with its own search's fill)"""
    # The model itself does not change between checks: measure its clean behaviour once.
    judge = judge or RefusalJudge()
    full = full_behaviour(loaded, config, records, benign_records, SWITCH_TOKENS, judge)

    def switches(circuit: Circuit, fill: ReferenceActivations | None = fill) -> bool:
        check = behaviour_switch(loaded, config, circuit, records, benign=benign_records, full=full, fill=fill, judge=judge)
        drops = (check.get(f"{k}_full", 0.0) - check.get(k, 0.0) for k in ("clean", "benign"))
        utility_increase = check.get("utility", 0.0) - check.get("utility_full", 0.0)
        return check["switched"] >= min_switched and max(drops) <= max_clean_drop and utility_increase <= max_utility_increase

    return switches


def prune_circuit(
    loaded: LoadedModel,
    result: SeekResult,
    val_records: Sequence[Record],
    benign_records: Sequence[BenignRecord] = (),
    fill: ReferenceActivations | None = None,
    min_switched: float = 0.8,
    max_clean_drop: float = 0.1,
    max_utility_increase: float = 0.1,
    judge: RefusalJudge | None = None,
) -> SeekResult:
    """``result`` with its circuit cut to a minimal ablation set: no unit of it can be left out.

    A search stopped early (a short budget) leaves units switched off that the behaviour does not
    need; this keeps the shortest prefix of the circuit's units, by main-mask logit, whose ablation
    passes the test of :func:`~safeseek_tl.seek.discover_complete` on ``val_records`` (and
    ``benign_records``), then leaves out each of its units that the rest can switch without, least
    confident first (each check is one :func:`behaviour_switch`, about log2(n) + n of them).
    ``fill``: the search's fill (default: ``result.reference()``, or for a result without one
    and ``ablation="mean"``, means over ``val_records``). ``judge``: the keyword judge of the
    checks. Raises :class:`~safeseek_tl.errors.InputError` when the whole circuit does not pass the test.
    """
    if fill is None and result.fill:
        fill = result.reference()
    switches = switch_test(loaded, result.config, val_records, benign_records, fill, min_switched, max_clean_drop, max_utility_increase, judge)
    if not switches(result.circuit):
        raise InputError(
            f"ablating the circuit ({result.circuit.n_heads} heads, {result.circuit.n_neurons} neurons) does not switch "
            f"{min_switched:.0%} of the validation prompts while keeping clean behaviour: nothing to prune"
        )
    pruned = minimal_switching_set(result.circuit, result.main_logits, switches)
    pruned.metadata = {**result.circuit.metadata, "pruned": True, "unpruned_units": len(result.circuit)}
    return replace(result, circuit=pruned, verified=True)


def minimal_switching_set(circuit: Circuit, main_logits: dict[str, Tensor], switches: Callable[[Circuit], bool]) -> Circuit:
    """A minimal subset of ``circuit`` whose ablation still ``switches``: no unit of it can be left out.

    First the shortest prefix of the units, lowest main-mask logit first (a binary search over its
    length), then one pass that leaves out each of its units in turn, least confident first, and
    keeps it out when the rest still switches: a short search ranks its units only roughly, so a
    needed unit can sit behind unneeded ones. ``switches(circuit)`` must hold for the whole circuit.
    """
    units = [
        (float(main_logits[kind][layer, index]), kind, layer, index)
        for kind in UNIT_KINDS if kind in main_logits
        for layer, index in circuit.get(kind).nonzero().tolist()
    ]  # fmt: skip
    units.sort()

    def of(chosen: list[tuple[float, UnitKind, int, int]]) -> Circuit:
        listed = {kind: [[layer, index] for _, unit_kind, layer, index in chosen if unit_kind == kind] for kind in UNIT_KINDS}
        return Circuit.from_units(circuit.shape, listed["heads"], listed["neurons"], **circuit.metadata)

    low, high = 1, len(units)  # switches(of(units[:high])) holds
    while low < high:
        middle = (low + high) // 2
        if switches(of(units[:middle])):
            high = middle
        else:
            low = middle + 1
    kept = units[:high]
    for unit in reversed(units[: high - 1]):  # the last unit of the shortest prefix is needed by construction
        rest = [u for u in kept if u != unit]
        if switches(of(rest)):
            kept = rest
    return of(kept)
