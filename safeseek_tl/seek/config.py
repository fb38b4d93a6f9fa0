"""The settings of a SafeSeek search (:class:`SeekConfig`)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from safeseek_tl.ablation import AblationMode
from safeseek_tl.errors import InputError
from safeseek_tl.hooks import UnitChoice, UnitKind, unit_kinds
from safeseek_tl.masks import MaskKind
from safeseek_tl.scenarios import ScenarioName, scenario_of

Objective = Literal["ce", "kl"]
OBJECTIVES: tuple[Objective, ...] = ("ce", "kl")
NegativeCE = Literal["bounded", "unbounded"]
CircuitSparsity = Literal["mean", "log"]
MaskFill = Literal["zero", "mean", "learned"]
"""What a masked-off unit becomes during the search: 0 (the official code's), its mean activation over
the training sequences, or a per-unit constant trained with the mask ("optimal ablation", Li & Janson
2024), started at that mean and trained only by the paths that keep the full model's behaviour
(:data:`~safeseek_tl.seek.objective.SWITCH_PATHS`; docs/choices.md)."""
MASK_FILLS: tuple[MaskFill, ...] = ("zero", "mean", "learned")
InitFrom = Literal["constant", "attr-patch"]
"""Where the mask logits start: ``init_heads``/``init_neurons`` for every unit, or each unit's rank
under attribution patching (:mod:`~safeseek_tl.seek.warm`)."""
AlignmentObjective = Literal["official", "necessity", "refusal_score"]
"""official: comply under m, refuse under 1 - m; necessity: comply under m, benign kept (KL to the
full model), the 1 - m term off by default; refusal_score: necessity on prompt-only passes, the
refusal score at the answer's first token instead of the completion (docs/choices.md)."""
T = TypeVar("T")


def filled(value: T | None, name: str) -> T:
    """``value`` of the :class:`SeekConfig` field ``name`` that the scenario fills: never None once the config is built."""
    if value is None:
        raise InputError(f"SeekConfig.{name} is None; the scenario fills it when the config is built, so set a value or build the config again")
    return value


@dataclass
class SeekConfig:
    """Settings of a SafeSeek run. ``None`` fields take the official code's value for the scenario.

    Defaults: lr 1e-2, AdamW without weight decay, linear decay, gradient clipping at 1.0, seed 42
    (the HF Trainer scripts); mask logits start at 1.0 (0.1 for backdoor heads); straight-through
    hard-sigmoid masks. Each official script's settings: docs/choices.md, "The official scripts'
    settings".
    """

    scenario: ScenarioName
    units: UnitChoice = "heads"
    mask_kind: MaskKind = "hard_sigmoid"
    objective: Objective = "ce"
    negative_ce: NegativeCE = "bounded"
    negative_ce_margin: float = 5.0
    epochs: int | None = None
    batch_size: int = 8
    lr: float = 1e-2
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    lr_decay: bool = True
    init_heads: float | None = None
    init_neurons: float | None = None
    # backdoor loss weights
    w_main_clean: float = 1.0
    w_main_backdoor: float = 1.0
    w_circuit_backdoor: float = 1.0
    w_circuit_clean: float = 1.0
    w_main_sparsity: float = 0.1
    w_circuit_sparsity: float | None = None
    circuit_sparsity: CircuitSparsity | None = None
    w_overlap: float = 1.0
    # benign path (main mask keeps benign answers), only when fit() is given benign records: the
    # official code has none; it steers the search away from units that break unrelated answers
    w_main_benign: float = 1.0
    # alignment objective (see AlignmentObjective); w_refuse defaults to 0 outside "official"
    alignment_objective: AlignmentObjective = "necessity"
    # alignment loss weights
    w_accept: float | None = None
    w_refuse: float | None = None
    # sparsity of the alignment mask, or of the main mask's heads/neurons when set
    w_sparsity_heads: float | None = None
    w_sparsity_neurons: float | None = None
    # what a masked-off unit becomes during the search (MaskFill)
    ablation: MaskFill = "zero"
    # where the mask logits start (InitFrom): "attr-patch" starts them from attribution-patching ranks
    init_from: InitFrom = "constant"
    # circuit size asked for, per granularity: a fraction (< 1) or a number (>= 1) of units; the
    # sparsity weight gets a multiplier that grows while the circuit is larger than the target, and
    # the circuit read off is exactly the target's top units by mask logit
    target_heads: float | None = None
    target_neurons: float | None = None
    target_lr: float = 0.05
    max_length: int = 128
    val_size: int = 20
    patience: int | None = None
    seed: int = 42

    def __post_init__(self) -> None:
        scenario_of(self.scenario)  # an unknown name raises
        unit_kinds(self.units)
        for name, value in self._scenario_defaults().items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        for name in ("epochs", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"lr must be a positive finite number, got {self.lr}")
        if self.ablation not in MASK_FILLS:
            raise InputError(f"ablation must be one of {MASK_FILLS}, got {self.ablation!r}")
        if self.init_from not in ("constant", "attr-patch"):
            raise InputError(f"init_from must be 'constant' or 'attr-patch', got {self.init_from!r}")
        if self.alignment_objective not in ("official", "necessity", "refusal_score"):
            raise InputError(f"alignment_objective must be 'official', 'necessity' or 'refusal_score', got {self.alignment_objective!r}")
        for kind, target in (("heads", self.target_heads), ("neurons", self.target_neurons)):
            if target is not None and kind not in self.kinds:
                raise InputError(f"target_{kind} is set but units={self.units!r} searches no {kind}")
            if target is not None and not (target > 0 and (target < 1 or float(target).is_integer())):
                raise InputError(f"target_{kind} must be a fraction in (0, 1) or a whole number of units, got {target}")

    def target_count(self, kind: UnitKind, total: int) -> int | None:
        """The number of ``kind`` units asked for out of ``total`` (``None``: no target); at most ``total``."""
        target = self.target_heads if kind == "heads" else self.target_neurons
        if target is None:
            return None
        count = round(target * total) if target < 1 else int(target)
        if count > total:
            raise InputError(f"target_{kind}={target} asks for more than the model's {total} {kind}")
        return count

    def _scenario_defaults(self) -> dict[str, Any]:
        """The official scripts' values of the ``None`` fields for this scenario and granularity."""
        backdoor, neurons_only = self.scenario == "backdoor", self.units == "neurons"
        return {
            "epochs": 20 if backdoor else 50,
            "init_heads": 0.1 if backdoor else 1.0,
            "init_neurons": 1.0,
            "w_circuit_sparsity": 3.0 if neurons_only else 1.0,
            "circuit_sparsity": "log" if neurons_only else "mean",
            "w_accept": 1.0 if neurons_only else 2.0,
            "w_refuse": 0.0 if self.scenario == "alignment" and self.alignment_objective != "official" else (1.0 if neurons_only else 2.0),
            "w_sparsity_heads": self.w_main_sparsity if backdoor else 0.1,
            "w_sparsity_neurons": self.w_main_sparsity if backdoor else (1.0 if neurons_only else 0.1),
        }

    @property
    def ablation_mode(self) -> AblationMode:
        """How a circuit found with this config is ablated afterwards: zeros, or the search's fill as
        "mean" ablation's constants (its means, or its learned values: :meth:`~safeseek_tl.seek.result.SeekResult.reference`)."""
        return "zero" if self.ablation == "zero" else "mean"

    @property
    def kinds(self) -> tuple[UnitKind, ...]:
        return unit_kinds(self.units)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
