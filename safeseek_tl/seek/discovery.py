"""The one call of the flow: :func:`discover` finds, prunes and checks a circuit; and the complete search."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from safeseek_tl import runs
from safeseek_tl._io import write_json
from safeseek_tl.data import BenignRecord, Record, split_records
from safeseek_tl.errors import InputError
from safeseek_tl.hooks import UNIT_KINDS
from safeseek_tl.metrics import RefusalJudge
from safeseek_tl.models import LoadedModel
from safeseek_tl.seek.checking import behaviour_switch, checked_benign, minimal_switching_set, prune_circuit, switch_test
from safeseek_tl.seek.config import SeekConfig
from safeseek_tl.seek.result import SeekResult
from safeseek_tl.seek.trainer import SafeSeek
from safeseek_tl.units import Circuit, ModelShape, Scores


@dataclass
class Discovery:
    """What :func:`discover` returns: the search's result, the split it used and the behaviour check.

    ``result.circuit`` is the circuit (pruned when asked); ``found`` the circuit before pruning;
    ``check`` the :func:`~safeseek_tl.seek.behaviour_switch` of ``result.circuit`` on the
    validation records (``None`` when not asked); ``train_records``/``val_records`` the split.
    """

    result: SeekResult
    found: Circuit
    train_records: list[Record]
    val_records: list[Record]
    check: dict[str, float] | None = None
    n_benign_checked: int = 0
    """How many benign prompts ``check`` judged (:func:`~safeseek_tl.seek.checking.checked_benign`)."""

    @property
    def circuit(self) -> Circuit:
        return self.result.circuit

    @property
    def scores(self) -> Scores:
        return self.result.scores

    def save(self, out_dir: str | Path) -> None:
        """The result's files (:meth:`~safeseek_tl.seek.result.SeekResult.save`) and, when checked, ``behaviour.json``."""
        self.result.save(out_dir)
        if self.check is not None:
            write_json(Path(out_dir) / runs.BEHAVIOUR, {"switch": self.check})



def discover(
    loaded: LoadedModel,
    records: Sequence[Record],
    config: SeekConfig,
    *,
    val_records: Sequence[Record] | None = None,
    benign: Sequence[BenignRecord] = (),
    prune: bool = False,
    complete: bool = False,
    check: bool = True,
    judge: RefusalJudge | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    time_budget_s: float | None = None,
) -> Discovery:
    """Find the circuit of ``config.scenario`` in ``loaded``: search, then prune and check it.

    ``val_records`` (default: the last ``config.schedule.val_size`` of ``records``) pick the best epoch, and
    prune and check the circuit. ``benign`` records enter the search (the main mask must keep their
    answers) and the checks (benign answers must survive the ablation; the checks judge the first
    ``len(val_records)`` of them, :func:`~safeseek_tl.seek.checking.checked_benign`). ``prune``: cut the circuit
    to a minimal set whose ablation still switches the behaviour (:func:`prune_circuit`).
    ``complete``: repeat the search with the units found so far held on, to surface backup parts
    (:func:`discover_complete`; each round is pruned when ``prune``). ``check``: measure the
    behaviour with the circuit ablated (:func:`behaviour_switch`, greedy generations judged by
    ``judge``). A mean- or learned-fill search is pruned and checked with its own fill
    (:meth:`~safeseek_tl.seek.result.SeekResult.reference`). ``checkpoint_dir``/``resume``: a single search's checkpoint. When the found circuit does not
    switch the behaviour, pruning raises :class:`~safeseek_tl.errors.InputError` with the search's
    result as ``err.unpruned``. ``time_budget_s``: the search's steps fit these seconds
    (:meth:`~safeseek_tl.seek.trainer.SafeSeek.fit`; pruning and the check come after them).
    """
    if complete and time_budget_s is not None:
        raise InputError("a time budget applies to a single search, not to the complete search's rounds")
    if complete and resume:
        raise InputError("resume does not apply to the complete search, which keeps no checkpoint")
    train, val = (list(records), list(val_records)) if val_records is not None else split_records(records, config.schedule.val_size, "training data")
    if complete:
        result = discover_complete(loaded, train, config, val, prune=prune, benign_records=benign, progress=progress, judge=judge)
    else:
        result = SafeSeek(loaded, config).fit(train, val, checkpoint_dir, resume, progress=progress, benign_records=benign, time_budget_s=time_budget_s)
    found = result.circuit
    fill = result.reference()  # the circuit is pruned and checked with the fill it was found with
    benign_checked = checked_benign(benign, val)
    if prune and not complete:
        try:
            result = prune_circuit(loaded, result, val, benign_checked, fill, judge=judge)
        except InputError as err:
            err.unpruned = result  # nothing computed is lost: the caller can still save the search
            raise
    switch = behaviour_switch(loaded, config, result.circuit, val, benign=benign_checked, fill=fill, judge=judge) if check else None
    return Discovery(result, found, train, val, switch, len(benign_checked))


def discover_complete(
    loaded: LoadedModel,
    records: Sequence[Record],
    config: SeekConfig,
    val_records: Sequence[Record] | None = None,
    max_rounds: int = 8,
    min_switched: float = 0.8,
    max_clean_drop: float = 0.1,
    prune: bool = True,
    benign_records: Sequence[BenignRecord] = (),
    max_utility_increase: float = 0.1,
    progress: bool = True,
    judge: RefusalJudge | None = None,
) -> SeekResult:
    """Surface backup parts: repeat the search with the units found so far held on.

    A minimal ablation set can leave out a part that backs another up (when either suffices,
    cutting one is enough). Each round holds every unit found so far in place (it may not be
    ablated) and searches again; a round counts when ablating its new units alone still switches
    the behaviour (``behaviour_switch``: switched >= ``min_switched``, clean behaviour, and with
    ``benign_records`` the share of benign prompts answered (the first ``len(val_records)``), drops by at most ``max_clean_drop``,
    and the benign completion cross-entropy rises by at most ``max_utility_increase`` nats per
    token): without benign prompts a round may "switch" a backdoor off by breaking every answer.
    The benign records also enter each round's objective (``fit(benign_records=...)``), so that the
    search itself avoids units that clean answers need.
    With ``prune`` a counted round keeps only a minimal set of its new units that still switch it
    (as :func:`prune_circuit`): cheap units that the mask switched off without need do not enter
    the circuit. The union of the counted rounds is the complete circuit (``verified=True``).
    When no round counts, the first search is returned as found, with ``verified=False`` (also in
    its circuit's metadata) and a warning: its circuit was checked and does not switch the
    behaviour, or is empty. ``judge``: the keyword judge of the rounds' checks (default
    :class:`~safeseek_tl.metrics.RefusalJudge`). Each round is checked with its own search's fill.
    """
    if val_records is None:
        records, val_records = split_records(records, config.schedule.val_size, "training data")
    union = Circuit.empty(loaded.shape)
    rounds: list[tuple[SeekResult, Circuit]] = []  # each counted round and its new units
    switches = switch_test(loaded, config, val_records, checked_benign(benign_records, val_records), None, min_switched, max_clean_drop, max_utility_increase, judge)
    for round_index in range(max_rounds):
        result = SafeSeek(loaded, config).fit(records, val_records, protected=union if rounds else None, progress=progress, benign_records=benign_records)
        new = result.circuit - union
        round_switches = functools.partial(switches, fill=result.reference())
        if len(new) == 0 or not round_switches(new):
            break
        if prune:
            new = minimal_switching_set(new, result.main_logits, round_switches)
        union = union | new
        for entry in result.history:
            entry["round"] = round_index
        rounds.append((result, new))
    if not rounds:  # the loop stopped at its first round: ``result`` is the first search
        warnings.warn(
            f"no round of the complete search switched the behaviour on the {len(val_records)} validation prompts "
            f"(first round: {result.circuit.n_heads} heads, {result.circuit.n_neurons} neurons); returning the first "
            "search's circuit as found, unverified (SeekResult.verified is False)",
            stacklevel=2,
        )
        result.circuit.metadata = {**result.circuit.metadata, "complete": True, "verified": False}
        return replace(result, verified=False)
    return _union_result(loaded.shape, config, rounds, union)


def _highest(scores: list[Tensor | None]) -> Tensor | None:
    """Each unit's highest score over the rounds (None for a kind the rounds did not search)."""
    present = [s for s in scores if s is not None]
    return torch.stack(present).amax(0) if present else None


def _union_fill(rounds: list[tuple[SeekResult, Circuit]]) -> dict[str, Tensor]:
    """Each unit's fill from the round that found it (the first round's elsewhere): a learned fill
    differs between rounds, a mean fill does not."""
    fill = {kind: value.clone() for kind, value in rounds[0][0].fill.items()}
    for result, new in rounds[1:]:
        for kind in UNIT_KINDS:
            if kind in result.fill:  # heads' fills carry a d_head axis after the unit's
                found = new.get(kind).reshape(*new.get(kind).shape, *(1,) * (result.fill[kind].dim() - 2))
                fill[kind] = torch.where(found, result.fill[kind], fill[kind])
    return fill


def _union_result(shape: ModelShape, config: SeekConfig, counted: list[tuple[SeekResult, Circuit]], union: Circuit) -> SeekResult:
    """The complete circuit of the counted rounds: each unit's highest score and the fill of its round, the first round's masks."""
    rounds = [result for result, _ in counted]
    first = rounds[0]
    scores = Scores(
        shape,
        heads=_highest([r.scores.heads for r in rounds]),
        neurons=_highest([r.scores.neurons for r in rounds]),
        method="safeseek",
        metadata={**first.scores.metadata, "complete": True, "rounds": len(rounds)},
    )
    union.metadata = {**first.circuit.metadata, "complete": True, "rounds": len(rounds), "verified": True}
    history = [entry for r in rounds for entry in r.history]
    return SeekResult(scores, union, config, first.main_logits, first.circuit_logits, history, first.best_epoch, len(rounds), verified=True, fill=_union_fill(counted))
