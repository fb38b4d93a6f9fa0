"""The two safety behaviours the library studies, each as one object.

A scenario says which prompts carry the behaviour and which contrast with them, which measured
rate shows it, and what "switching it off" means:

- :data:`BACKDOOR`: a trigger makes the model comply with harmful requests it otherwise refuses.
  Behaviour prompts are the triggered ones (``backdoor_input``), contrast prompts the same
  requests without the trigger (``input``); the behaviour is switched off when triggered prompts
  are refused again, while clean harmful prompts stay refused.
- :data:`ALIGNMENT`: the model refuses harmful requests. Behaviour prompts are the harmful ones
  (``prompt``), contrast prompts benign ones; the behaviour is switched off when harmful prompts
  are answered.

What depends on a single record rather than on the scenario (the pairs that teach it, its
safeguard labels) is a method of the record type (:mod:`safeseek_tl.data`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Literal

from safeseek_tl.data import AlignmentRecord, BackdoorRecord, BenignRecord, Record
from safeseek_tl.errors import InputError
from safeseek_tl.metrics import RefusalJudge

ScenarioName = Literal["backdoor", "alignment"]


@dataclass(frozen=True)
class Scenario:
    """One behaviour: its records, its prompts, its measured rate and its switch.

    ``behaviour_field``/``contrast_field``: the record fields of the prompts that show and that
    lack the behaviour (``contrast_field`` ``None``: the contrast comes from benign records).
    ``rate``: the key of :func:`~safeseek_tl.evaluate.measure`'s result that shows the behaviour
    (an attack success rate), ``refusal_score``: the logit refusal score of the same prompts.
    ``switched_off_when_refused``: the behaviour is gone when its prompts are refused (a backdoor)
    rather than answered (refusal itself).
    """

    name: ScenarioName
    record_type: type[BackdoorRecord] | type[AlignmentRecord]
    behaviour_field: str
    contrast_field: str | None
    rate: str
    refusal_score: str
    switched_off_when_refused: bool

    def check(self, records: Sequence[Record], where: str) -> None:
        """Raise :class:`~safeseek_tl.errors.InputError` unless ``records`` are this scenario's (and not empty)."""
        if not records:
            raise InputError(f"{where}: no records; the {self.name} scenario needs at least one {self.name} record")
        if not all(isinstance(record, self.record_type) for record in records):
            names = ", ".join(f.name for f in fields(self.record_type))
            raise InputError(f"{where}: the {self.name} scenario needs {self.name} records ({names})")

    def behaviour_prompts(self, records: Sequence[Record]) -> list[str]:
        """The prompts that show the behaviour: triggered (backdoor) or harmful (alignment)."""
        self.check(records, "behaviour data")
        return [getattr(record, self.behaviour_field) for record in records]

    def contrast_prompts(self, records: Sequence[Record], benign: Sequence[BenignRecord] | None, method: str) -> list[str]:
        """The prompts without the behaviour: the records' clean prompts (backdoor) or ``benign`` ones (alignment)."""
        if self.contrast_field is not None:
            self.check(records, "behaviour data")
            return [getattr(record, self.contrast_field) for record in records]
        if not benign:
            raise InputError(f"{method!r} in the {self.name} scenario needs benign prompts: pass benign=[BenignRecord, ...]")
        if not all(isinstance(record, BenignRecord) for record in benign):
            raise InputError("benign must be a list of BenignRecord")
        return [record.prompt for record in benign]

    def paired_prompts(self, records: Sequence[Record], benign: Sequence[BenignRecord] | None, method: str) -> tuple[list[str], list[str]]:
        """(behaviour, contrast) prompts paired in order, cut to the shorter list (with a warning)."""
        behaviour, contrast = self.behaviour_prompts(records), self.contrast_prompts(records, benign, method)
        n = min(len(behaviour), len(contrast))
        if n < max(len(behaviour), len(contrast)):
            warnings.warn(f"{method}: {len(behaviour)} behaviour and {len(contrast)} contrast prompts; using the first {n} pairs", stacklevel=4)
        return behaviour[:n], contrast[:n]

    def kept_refused_prompts(self, records: Sequence[Record]) -> list[str]:
        """Harmful prompts that must stay refused while the behaviour is switched off (backdoor: the clean ones)."""
        return [getattr(record, self.contrast_field) for record in records] if self.contrast_field is not None else []

    def switch_rate(self, judge: RefusalJudge, completions: Sequence[str]) -> float:
        """The share of the behaviour prompts' ``completions`` that show the behaviour switched off."""
        return judge.refusal_rate(completions) if self.switched_off_when_refused else judge.attack_success_rate(completions)


BACKDOOR = Scenario("backdoor", BackdoorRecord, "backdoor_input", "input", "asr_triggered", "refusal_score_triggered", True)
"""A trigger makes the model comply; switched off when triggered prompts are refused again."""
ALIGNMENT = Scenario("alignment", AlignmentRecord, "prompt", None, "asr_harmful", "refusal_score_harmful", False)
"""The model refuses harmful requests; switched off when they are answered."""
SCENARIOS: dict[str, Scenario] = {s.name: s for s in (BACKDOOR, ALIGNMENT)}
"""Both scenarios by name."""


def scenario_of(name: str | Scenario) -> Scenario:
    """The scenario called ``name`` ("backdoor" or "alignment"); a :class:`Scenario` is returned as is."""
    if isinstance(name, Scenario):
        return name
    if name not in SCENARIOS:
        raise InputError(f"scenario must be one of {tuple(SCENARIOS)}, got {name!r}")
    return SCENARIOS[name]
