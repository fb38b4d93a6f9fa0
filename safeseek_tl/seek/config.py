"""The settings of a SafeSeek search (:class:`SeekConfig`), grouped by concern.

- :class:`Schedule`: the optimization (epochs, batch size, learning rate, validation, seed);
- :class:`Masks`: the mask kind, the initial logits, what a masked-off unit becomes;
- the scenario's loss, :class:`BackdoorLoss` or :class:`AlignmentLoss` (their shared part :class:`Loss`);
- :class:`SizeTarget`: a circuit size asked for.

:meth:`~safeseek_tl.seek.config.SeekConfig.of` builds a scenario's settings: the official scripts' values for its scenario,
granularity and alignment objective (docs/choices.md, "The official scripts' settings"), except for
the alignment default, which asks for sparse circuits (docs/choices.md, "Sparse alignment
circuits by default"), with any settings changed. A setting is named ``group.field`` (``schedule.epochs``, ``loss.w_overlap``):
the CLI's ``--set``, the checkpoints and the error messages use these names. In a group, a field
has a default only when every official script uses that value; the others (the epochs, the heads'
initial logit, the weights that differ by granularity) are required, so a group built by hand
states them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar, Literal, TypeVar, get_args, get_type_hints

from safeseek_tl.ablation import AblationMode
from safeseek_tl.errors import InputError
from safeseek_tl.hooks import UnitChoice, UnitKind, unit_kinds
from safeseek_tl.masks import MaskKind
from safeseek_tl.scenarios import ScenarioName, scenario_of
from safeseek_tl.seek.setting_types import accepts, describe

Objective = Literal["ce", "kl"]
OBJECTIVES: tuple[Objective, ...] = ("ce", "kl")
NegativeCE = Literal["bounded", "unbounded"]
CircuitSparsity = Literal["mean", "log"]
MaskFill = Literal["zero", "mean", "learned"]
"""What a masked-off unit becomes during the search: 0 (the official code's), its mean activation over
the training sequences, or a per-unit constant trained with the mask ("optimal ablation", Li & Janson
2024), started at that mean and trained only by the paths that keep the full model's behaviour
(:data:`~safeseek_tl.seek.objective.SWITCH_PATHS`; docs/choices.md)."""
InitFrom = Literal["constant", "attr-patch", "auto"]
"""Where the mask logits start: ``init_heads``/``init_neurons`` for every unit, or each unit's rank
under attribution patching (:mod:`~safeseek_tl.seek.warm`); ``"auto"``: attribution patching where
the scenario can pair its prompts (the alignment scenario needs benign records), constant otherwise."""
AlignmentObjective = Literal["official", "necessity", "refusal_score"]
"""official: comply under m, refuse under 1 - m; necessity: comply under m, benign kept (KL to the
full model), the 1 - m term off by default; refusal_score: necessity on prompt-only passes, the
refusal score at the answer's first token instead of the completion (docs/choices.md)."""

GROUPS = ("schedule", "masks", "loss", "target")
"""The groups of a :class:`SeekConfig`, the first part of a dotted setting name."""

FLAT_NAMES: dict[str, str] = {
    **{name: f"schedule.{name}" for name in ("epochs", "batch_size", "lr", "weight_decay", "max_grad_norm", "lr_decay", "val_size", "patience", "seed", "max_length")},
    "mask_kind": "masks.kind", "init_heads": "masks.init_heads", "init_neurons": "masks.init_neurons", "ablation": "masks.fill", "init_from": "masks.init_from",
    **{name: f"loss.{name}" for name in (
        "objective", "negative_ce", "negative_ce_margin", "w_main_clean", "w_main_backdoor", "w_circuit_backdoor", "w_circuit_clean",
        "w_circuit_sparsity", "circuit_sparsity", "w_overlap", "w_main_benign", "alignment_objective", "w_accept", "w_refuse",
        "w_sparsity_heads", "w_sparsity_neurons",
    )},
    "w_main_sparsity": "loss.w_sparsity_heads and loss.w_sparsity_neurons",
    "target_heads": "target.heads", "target_neurons": "target.neurons", "target_lr": "target.lr",
}  # fmt: skip
"""The flat field names of the previous version's SeekConfig (before the groups), and what each is now."""


@dataclass(frozen=True, kw_only=True)
class _Group:
    """A group of settings: each value is checked against its field's type (an int given for a float is stored as a float)."""

    GROUP: ClassVar[str]

    def __post_init__(self) -> None:
        hints = get_type_hints(type(self))
        for item in fields(self):
            value, hint = getattr(self, item.name), hints[item.name]
            if not accepts(hint, value):
                raise InputError(f"{self.GROUP}.{item.name} must be {describe(hint)}, got {value!r}")
            if type(value) is int and float in (get_args(hint) or (hint,)):  # a float field: 2 -> 2.0
                object.__setattr__(self, item.name, float(value))

    def _at_least_one(self, *names: str) -> None:
        for name in names:
            if getattr(self, name) < 1:
                raise InputError(f"{self.GROUP}.{name} must be at least 1, got {getattr(self, name)}")


@dataclass(frozen=True, kw_only=True)
class Schedule(_Group):
    """The optimization: AdamW (``lr``, ``weight_decay``), linear decay to 0 (``lr_decay``),
    gradient clipping at ``max_grad_norm``; the last ``val_size`` training records validate when no
    validation records are given; ``patience`` epochs without a better validation loss stop the
    search (``None``: never, as the official code). ``epochs``: 20 backdoor, 50 alignment."""

    GROUP: ClassVar[str] = "schedule"
    epochs: int
    batch_size: int = 8
    lr: float = 1e-2
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    lr_decay: bool = True
    val_size: int = 20
    patience: int | None = None
    seed: int = 42
    max_length: int = 128

    def __post_init__(self) -> None:
        super().__post_init__()
        self._at_least_one("epochs", "batch_size", "max_length")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"schedule.lr must be a positive finite number, got {self.lr}")


@dataclass(frozen=True, kw_only=True)
class Masks(_Group):
    """The masks: their ``kind`` (straight-through hard sigmoid, the code's), the initial logits
    (``init_heads`` 0.1 backdoor, 0.1 alignment, 1.0 with its official objective; ``init_from``: the
    same for every unit, or from attribution-patching ranks, :data:`InitFrom`) and what a masked-off unit becomes during the
    search (``fill``, :data:`MaskFill`)."""

    GROUP: ClassVar[str] = "masks"
    kind: MaskKind = "hard_sigmoid"
    init_heads: float
    init_neurons: float = 1.0
    fill: MaskFill = "zero"
    init_from: InitFrom = "constant"


@dataclass(frozen=True, kw_only=True)
class Loss(_Group):
    """What both scenarios' losses share: the token objective (``"kl"`` replaces the cross-entropy
    of the paths whose target is the full model's own output), the main mask's sparsity weights and
    the weight of the benign path (only with benign records; the official code has none)."""

    GROUP: ClassVar[str] = "loss"
    objective: Objective = "ce"
    w_sparsity_heads: float = 0.1
    w_sparsity_neurons: float
    w_main_benign: float = 1.0


@dataclass(frozen=True, kw_only=True)
class BackdoorLoss(Loss):
    """The backdoor scenario's loss: the main mask's paths on clean and triggered prompts, the circuit
    mask H's paths (the second one a negative cross-entropy, bounded by ``negative_ce_margin``
    nats unless ``negative_ce="unbounded"``), H's sparsity (``circuit_sparsity``: the mean of σ at
    weight 1.0, or of log σ at 3.0 when searching neurons only) and the overlap of the two masks."""

    negative_ce: NegativeCE = "bounded"
    negative_ce_margin: float = 5.0
    w_main_clean: float = 1.0
    w_main_backdoor: float = 1.0
    w_circuit_backdoor: float = 1.0
    w_circuit_clean: float = 1.0
    w_circuit_sparsity: float
    circuit_sparsity: CircuitSparsity
    w_overlap: float = 1.0


@dataclass(frozen=True, kw_only=True)
class AlignmentLoss(Loss):
    """The alignment scenario's loss: comply with the circuit removed (``w_accept``), refuse with the
    circuit alone (``w_refuse``, 0 unless ``alignment_objective="official"``); see
    :data:`AlignmentObjective`."""

    alignment_objective: AlignmentObjective = "refusal_score"
    w_accept: float
    w_refuse: float


@dataclass(frozen=True, kw_only=True)
class SizeTarget(_Group):
    """A circuit size asked for, per granularity: a fraction (< 1) or a number (>= 1) of units
    (``None``: none). The sparsity weight gets a multiplier that rises by ``lr`` steps while the
    circuit is larger than the target (:mod:`~safeseek_tl.seek.size`); the circuit read off is
    exactly the target's top units by mask logit (``exact``, for circuits of given sizes), or at
    most that many: the units the mask switches off, cut to the target when there are more.
    ``in_training``: the training passes run that circuit too (a straight-through cut), not every
    unit the mask switches off, so the search never runs a model far larger in circuit than asked."""

    GROUP: ClassVar[str] = "target"
    heads: float | None = None
    neurons: float | None = None
    lr: float = 0.05
    exact: bool = True
    in_training: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        for kind in ("heads", "neurons"):
            target = getattr(self, kind)
            if target is not None and not (target > 0 and (target < 1 or float(target).is_integer())):
                raise InputError(f"target.{kind} must be a fraction in (0, 1) or a whole number of units, got {target}")

    def count(self, kind: UnitKind, total: int) -> int | None:
        """The number of ``kind`` units asked for out of ``total`` (``None``: no target); at least 1
        (a fraction of a small model, 3% of 16 heads, asks for one unit, not none) and at most ``total``."""
        target = getattr(self, kind)
        if target is None:
            return None
        count = max(1, round(target * total)) if target < 1 else int(target)
        if count > total:
            raise InputError(f"target.{kind}={target} asks for more than the model's {total} {kind}")
        return count


LOSSES: dict[str, type[BackdoorLoss] | type[AlignmentLoss]] = {"backdoor": BackdoorLoss, "alignment": AlignmentLoss}
"""Each scenario's loss settings."""
L = TypeVar("L", bound=Loss)


@dataclass(frozen=True, kw_only=True)
class SeekConfig:
    """Settings of a SafeSeek run: the scenario, the granularity (``units``) and a group per concern.

    Build one with :meth:`of`, which fills in the official scripts' values (the alignment default:
    the sparse-circuit settings):
    ``SeekConfig.of("backdoor", "both")``, or with settings changed,
    ``SeekConfig.of("alignment", "both", schedule={"epochs": 10}, loss={"alignment_objective": "official"})``.

    The loss group is the scenario's own type: ``dataclasses.replace(config, scenario=...)`` on a
    config of the other scenario raises :class:`~safeseek_tl.errors.InputError` instead of keeping
    that scenario's weights (build the other scenario's config with :meth:`of`).
    """

    scenario: ScenarioName
    units: UnitChoice
    schedule: Schedule
    masks: Masks
    loss: BackdoorLoss | AlignmentLoss
    target: SizeTarget = field(default_factory=SizeTarget)

    def __post_init__(self) -> None:
        scenario_of(self.scenario)  # an unknown name raises
        unit_kinds(self.units)
        wanted = LOSSES[self.scenario]
        if type(self.loss) is not wanted:
            raise InputError(
                f"SeekConfig(scenario={self.scenario!r}) has a {type(self.loss).__name__} but the {self.scenario} scenario needs its "
                f"{wanted.__name__}: dataclasses.replace(config, scenario=...) keeps the other scenario's settings; build "
                f"SeekConfig.of({self.scenario!r}, {self.units!r}, ...) for this scenario's own"
            )
        for kind in ("heads", "neurons"):
            if getattr(self.target, kind) is not None and kind not in self.kinds:
                raise InputError(f"target.{kind} is set but units={self.units!r} searches no {kind}")

    @classmethod
    def of(cls, scenario: ScenarioName, units: UnitChoice = "heads", **settings: Any) -> SeekConfig:
        """The default settings of ``scenario`` at granularity ``units``, with ``settings`` changed:
        the official scripts' (backdoor; alignment with ``alignment_objective="official"``) or the
        sparse-circuit settings (the other alignment objectives; docs/choices.md, "Sparse alignment circuits by default").

        Each of ``settings`` is a group's name with a mapping of its fields
        (``schedule={"epochs": 3}``), or a dotted name with its value (``**{"schedule.epochs": 3}``,
        as ``--set`` gives them). The alignment settings follow its ``alignment_objective``
        (``w_refuse`` is 0 unless ``"official"``): give it here, not by replacing it afterwards.

        >>> SeekConfig.of("alignment", "both", loss={"alignment_objective": "official"}).loss.w_refuse
        2.0
        >>> SeekConfig.of("alignment", "both").target.neurons
        0.01
        """
        scenario_of(scenario)
        unit_kinds(units)
        dotted = _dotted(settings)
        config = _preset(scenario, units, dotted.get("loss.alignment_objective", "refusal_score"))
        changes = {}
        for group in GROUPS:
            values = {name.partition(".")[2]: value for name, value in dotted.items() if name.partition(".")[0] == group}
            if values:
                changes[group] = _changed(getattr(config, group), values)
        return replace(config, **changes)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> SeekConfig:
        """A config as saved: nested (:meth:`to_dict`, ``config.json``), dotted (:meth:`dotted`,
        checkpoints), or the flat fields of the previous version (its runs and checkpoints). A
        setting the file lacks takes the official scripts' value: the file predates it, and so the
        sparse alignment defaults (an alignment file without an objective ran the official one)."""
        settings = dict(data)
        if "scenario" not in settings:
            raise InputError(f"{source}: no 'scenario' among the settings")
        scenario, units = settings.pop("scenario"), settings.pop("units", "heads")
        try:
            if any(name in FLAT_NAMES for name in settings):
                settings = _from_flat(scenario, settings)
            saved = _dotted(settings)
            official = _official(scenario, units, saved.get("loss.alignment_objective", "official")).dotted()
            return cls.of(scenario, units, **({name: value for name, value in official.items() if "." in name} | saved))
        except InputError as err:
            raise InputError(f"{source}: {err}") from None

    @property
    def ablation_mode(self) -> AblationMode:
        """How a circuit found with this config is ablated afterwards: zeros, or the search's fill as
        "mean" ablation's constants (its means, or its learned values: :meth:`~safeseek_tl.seek.result.SeekResult.reference`)."""
        return "zero" if self.masks.fill == "zero" else "mean"

    @property
    def kinds(self) -> tuple[UnitKind, ...]:
        return unit_kinds(self.units)

    def loss_as(self, kind: type[L]) -> L:
        """The loss settings as ``kind`` (:class:`BackdoorLoss`, ...): an InputError for another scenario's."""
        if not isinstance(self.loss, kind):
            raise InputError(f"the {self.scenario} scenario's loss has no {kind.__name__} settings")
        return self.loss

    def to_dict(self) -> dict[str, Any]:
        """The settings nested by group (``config.json``)."""
        return asdict(self)

    def dotted(self) -> dict[str, Any]:
        """``scenario``, ``units`` and every setting by its dotted name (``schedule.epochs``, ...)."""
        return {"scenario": self.scenario, "units": self.units} | {
            f"{group}.{name}": value for group in GROUPS for name, value in asdict(getattr(self, group)).items()
        }


def _preset(scenario: ScenarioName, units: UnitChoice, alignment_objective: AlignmentObjective) -> SeekConfig:
    """The settings a search starts from: the official scripts' (``_official``) for the backdoor
    scenario and the official alignment objective; for the other alignment objectives the settings
    measured to give sparse circuits (docs/choices.md, "Sparse alignment circuits by default"): a
    size target of at most 3% of heads and 1% of neurons, run in training, the mask logits started
    at 0.1 from attribution patching where benign records allow it, and the benign path weighed 4."""
    config = _official(scenario, units, alignment_objective)
    if scenario == "backdoor" or alignment_objective == "official":
        return config
    kinds = unit_kinds(units)
    target = SizeTarget(heads=0.03 if "heads" in kinds else None, neurons=0.01 if "neurons" in kinds else None, exact=False, in_training=True)
    masks = replace(config.masks, init_heads=0.1, init_neurons=0.1, init_from="auto")
    return replace(config, masks=masks, loss=replace(config.loss, w_main_benign=4.0), target=target)


def _official(scenario: ScenarioName, units: UnitChoice, alignment_objective: AlignmentObjective) -> SeekConfig:
    """The official scripts' settings of ``scenario`` at ``units`` (docs/choices.md, "The official scripts' settings")."""
    backdoor, neurons_only = scenario == "backdoor", units == "neurons"
    loss: BackdoorLoss | AlignmentLoss
    if backdoor:  # the neuron script's circuit mask: log σ at weight 3; the head scripts': σ at 1
        loss = BackdoorLoss(w_sparsity_neurons=0.1, w_circuit_sparsity=3.0 if neurons_only else 1.0, circuit_sparsity="log" if neurons_only else "mean")
    else:  # the neuron script weighs its paths 1 and its sparsity 1.0; the head scripts 2 and 0.1
        weight = 1.0 if neurons_only else 2.0
        refuse = weight if alignment_objective == "official" else 0.0
        loss = AlignmentLoss(alignment_objective=alignment_objective, w_accept=weight, w_refuse=refuse, w_sparsity_neurons=1.0 if neurons_only else 0.1)
    schedule, masks = Schedule(epochs=20 if backdoor else 50), Masks(init_heads=0.1 if backdoor else 1.0)
    return SeekConfig(scenario=scenario, units=units, schedule=schedule, masks=masks, loss=loss)


def _dotted(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The ``settings`` of ``SeekConfig.of`` as dotted names; a flat name of the previous version is
    refused, naming what it is now."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if key in GROUPS:
            if not isinstance(value, Mapping):
                raise InputError(f"{key} takes a mapping of its settings, e.g. {key}={{'name': value}}, got {value!r}")
            items = {f"{key}.{name}": item for name, item in value.items()}
        elif key.partition(".")[0] in GROUPS:
            items = {key: value}
        elif key in FLAT_NAMES:
            raise InputError(f"{key!r} is not a setting name: settings are named group.field, and {key} is {FLAT_NAMES[key]} now")
        else:
            raise InputError(f"unknown setting {key!r}: settings are named group.field, the groups being {', '.join(GROUPS)}")
        for name, item in items.items():
            if name in out:
                raise InputError(f"setting {name} is given twice")
            out[name] = item
    return out


G = TypeVar("G", bound=_Group)


def _changed(group: G, values: Mapping[str, Any]) -> G:
    """``group`` with ``values`` (its fields by name) changed; an unknown name raises, listing the group's."""
    names = [item.name for item in fields(group)]
    for name in values:
        if name not in names:
            raise InputError(f"{group.GROUP}.{name} is not a setting of {type(group).__name__}; its settings are {', '.join(names)}")
    return replace(group, **values)


def _from_flat(scenario: ScenarioName, flat: Mapping[str, Any]) -> dict[str, Any]:
    """The dotted settings of a flat config of the previous version. Its files hold every field, the
    other scenario's loss weights too (left out here); ``None`` was a value the scenario filled in."""
    loss_names = {item.name for item in fields(LOSSES[scenario_of(scenario).name])}
    # results saved before alignment_objective existed (issue 20) ran the official objective
    out: dict[str, Any] = {"loss.alignment_objective": "official"} if scenario == "alignment" else {}
    for old, value in flat.items():
        if old not in FLAT_NAMES:
            raise InputError(f"unknown setting {old!r} (a config of the previous version holds {', '.join(FLAT_NAMES)})")
        group, _, name = FLAT_NAMES[old].partition(".")
        if old != "w_main_sparsity" and value is not None and (group != "loss" or name in loss_names):
            out[FLAT_NAMES[old]] = value
    if scenario == "backdoor" and flat.get("w_main_sparsity") is not None:  # it was the default of both sparsity weights
        for kind in ("heads", "neurons"):
            out.setdefault(f"loss.w_sparsity_{kind}", flat["w_main_sparsity"])
    return out
