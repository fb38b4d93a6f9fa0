"""The settings of a SafeSeek search (:class:`SeekConfig`)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from safeseek_tl.errors import InputError
from safeseek_tl.hooks import UnitChoice, UnitKind, unit_kinds
from safeseek_tl.masks import MaskKind
from safeseek_tl.scenarios import ScenarioName, scenario

Objective = Literal["ce", "kl"]
NegativeCE = Literal["bounded", "unbounded"]
CircuitSparsity = Literal["mean", "log"]
MaskFill = Literal["zero", "mean"]
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
    # alignment loss weights
    w_accept: float | None = None
    w_refuse: float | None = None
    # sparsity of the alignment mask, or of the main mask's heads/neurons when set
    w_sparsity_heads: float | None = None
    w_sparsity_neurons: float | None = None
    # what a masked-off unit becomes during the search: 0 (the code's) or its mean activation
    ablation: MaskFill = "zero"
    max_length: int = 128
    val_size: int = 20
    patience: int | None = None
    seed: int = 42

    def __post_init__(self) -> None:
        scenario(self.scenario)  # an unknown name raises
        unit_kinds(self.units)
        for name, value in self._scenario_defaults().items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        for name in ("epochs", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"lr must be a positive finite number, got {self.lr}")
        if self.ablation not in ("zero", "mean"):
            raise InputError(f"ablation must be 'zero' or 'mean', got {self.ablation!r}")

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
            "w_refuse": 1.0 if neurons_only else 2.0,
            "w_sparsity_heads": self.w_main_sparsity if backdoor else 0.1,
            "w_sparsity_neurons": self.w_main_sparsity if backdoor else (1.0 if neurons_only else 0.1),
        }

    @property
    def kinds(self) -> tuple[UnitKind, ...]:
        return unit_kinds(self.units)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
