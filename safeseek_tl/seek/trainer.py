"""The SafeSeek training loop: :class:`SafeSeek` optimizes the masks of a :class:`SeekObjective`."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import operator
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from safeseek_tl.ablation import ReferenceActivations
from safeseek_tl.checkpoint import CHECKPOINT_FILE, read_checkpoint, write_checkpoint
from safeseek_tl.data import BenignRecord, Record, batch_slices, split_records
from safeseek_tl.distributed import DataParallel
from safeseek_tl.errors import InputError, NonFiniteLossError
from safeseek_tl.hooks import UnitKind
from safeseek_tl.masks import MaskLogits
from safeseek_tl.models import LoadedModel
from safeseek_tl.seek.budget import PROBE_STEPS, Budget
from safeseek_tl.seek.config import AlignmentLoss, SeekConfig
from safeseek_tl.seek.objective import MaskPath, SeekObjective, mask_paths
from safeseek_tl.seek.result import SeekResult, main_mask, removed_units
from safeseek_tl.seek.size import cut_to_target
from safeseek_tl.seek.warm import starts_warm, warm_logits, warm_start
from safeseek_tl.units import Circuit, Scores

if TYPE_CHECKING:  # imported for the annotations only: loading it takes seconds
    from transformer_lens.model_bridge import TransformerBridge


@dataclass
class TrainState:
    """Everything a checkpoint must hold to resume a run exactly."""

    epoch: int = 0
    best_loss: float = math.inf
    best_epoch: int = -1
    best_main: dict[str, Tensor] = field(default_factory=dict)
    best_circuit: dict[str, Tensor] = field(default_factory=dict)
    best_fill: dict[str, Tensor] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    stale_epochs: int = 0
    step: int = 0
    multipliers: dict[UnitKind, float] = field(default_factory=dict)


@dataclass
class _Run:
    """One fit's moving parts, so that the steps below stay short."""

    objective: SeekObjective
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    state: TrainState
    checkpoint: Path | None
    total_steps: int
    budget: Budget | None = None
    clock: Callable[[], float] = time.monotonic
    schedule: torch.optim.lr_scheduler.LambdaLR = field(init=False)  # set by SafeSeek._start: its decay reads total_steps

    def done(self) -> bool:
        return self.state.step >= self.total_steps or (self.budget is not None and self.budget.spent(self.clock()))


def _total(terms: Iterable[Tensor]) -> Tensor:
    """The sum of loss terms (in order, as ``sum`` adds them; typed as a tensor)."""
    return functools.reduce(operator.add, terms)


def _logits_of(mask: MaskLogits | None) -> dict[str, Tensor]:
    return {} if mask is None else {k: v.detach().cpu().clone() for k, v in mask.searched().items()}


def _fill_of(objective: SeekObjective) -> dict[str, Tensor]:
    """The search's fill as it stands (fixed means, or the learned values); empty for zeros."""
    return {k: v.detach().cpu().clone() for k, v in (objective.fill or {}).items()}


def _check_finite(values: dict[str, Tensor], where: str, what: str = "loss term") -> None:
    for name, value in values.items():
        bad = value.detach()[~torch.isfinite(value.detach())]
        if bad.numel():
            raise NonFiniteLossError(f"{what} '{name}' became {bad.flatten()[0].item()} at {where}; the last good masks were kept")


def _check_budget(time_budget_s: float | None, resume: bool, parallel: DataParallel) -> None:
    if time_budget_s is not None and resume:
        raise InputError("resume does not apply to a time budget: the step count depends on the interrupted run's clock")
    if time_budget_s is not None and parallel.world_size > 1:  # each process would time its own steps
        raise InputError("a time budget runs in one process; under data parallelism set --epochs instead")


def _warn_without_benign(config: SeekConfig, benign_records: Sequence[BenignRecord]) -> None:
    """Warn that a sparse alignment search without benign records keeps nothing of the harmless
    answers (the official objective never had them), and starts cold where it would warm-start."""
    if config.scenario != "alignment" or benign_records or config.loss_as(AlignmentLoss).alignment_objective == "official":
        return
    cold = "; the mask logits start constant instead of from attribution patching" if config.masks.init_from == "auto" else ""
    warnings.warn(
        f"an alignment search without benign records: nothing keeps harmless answers as they were{cold}; give benign records "
        "(benign_records=..., CLI --benign)", stacklevel=4,
    )  # fmt: skip


class SafeSeek:
    """Optimize masks for one scenario on one model.

    >>> seeker = SafeSeek(loaded, SeekConfig.of("backdoor", "heads"))  # doctest: +SKIP
    >>> result = seeker.fit(train_records)  # doctest: +SKIP
    """

    def __init__(self, loaded: LoadedModel, config: SeekConfig) -> None:
        self.loaded, self.config = loaded, config
        self.shape = loaded.shape

    def fit(
        self,
        records: Sequence[Record],
        val_records: Sequence[Record] | None = None,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
        protected: Circuit | None = None,
        progress: bool = True,
        benign_records: Sequence[BenignRecord] = (),
        time_budget_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> SeekResult:
        """Train the masks; validation each epoch keeps the best masks; returns a :class:`SeekResult`.

        ``records`` trains; ``val_records`` (default: the last ``config.schedule.val_size`` training records)
        selects the best epoch. With ``checkpoint_dir`` the state is saved after every epoch and
        ``resume=True`` continues from it. ``protected`` units are held on in the main mask.
        ``benign_records`` add a path (weight ``config.loss.w_main_benign``) on which the main mask must
        keep the model's benign answers, in training and validation alike.

        Launched in several processes (``torchrun``, an initialized ``torch.distributed`` group),
        each batch is split over the processes and the mask gradients are summed: the masks equal a
        one-process run's with the same ``batch_size`` (the global batch, at least the number of
        processes). Rank 0 alone writes the checkpoint and shows progress.

        ``time_budget_s``: the first :data:`~safeseek_tl.seek.budget.PROBE_STEPS` steps are timed on
        ``clock`` and the number of steps (and the learning-rate decay) is set to what fits the
        budget, less a share for validation, and set again at each epoch's first step; the search stops there, or when the clock says the time
        is up, with the best masks so far (``config.schedule.epochs`` no longer counts).
        """
        cfg, schedule = self.config, self.config.schedule
        parallel = DataParallel.current()
        if schedule.batch_size < parallel.world_size:
            raise InputError(f"batch_size {schedule.batch_size} is smaller than the {parallel.world_size} data-parallel processes; each needs at least one record per batch")
        _check_budget(time_budget_s, resume, parallel)
        if val_records is None:
            records, val_records = split_records(records, schedule.val_size, "training data")
        torch.manual_seed(schedule.seed)
        train_paths = mask_paths(cfg, records, self.loaded.chat, "training data", benign_records)
        val_paths = mask_paths(cfg, val_records, self.loaded.chat, "validation data", benign_records)
        objective = self.objective(train_paths, records, benign_records, protected, parallel)
        objective.cache_full_last([*train_paths, *val_paths])  # before the budget's clock, as the warm start
        run = self._start(objective, len(records), checkpoint_dir, resume)
        if time_budget_s is not None:
            run.budget, run.clock = Budget(time_budget_s, clock()), clock
        bar = tqdm(
            total=run.total_steps, initial=run.state.step,
            desc=f"safeseek {cfg.scenario}/{cfg.units}", disable=not (progress and parallel.is_main),
        )  # fmt: skip
        try:
            while not run.done():
                terms = self._train_epoch(run, train_paths, len(records), bar)
                if self._end_epoch(run, terms, val_paths, parallel):
                    break
        except NonFiniteLossError as err:
            err.result = self.result_of(run.state, protected)
            raise
        finally:
            bar.close()
        return self.result_of(run.state, protected)

    def objective(
        self,
        train_paths: Sequence[MaskPath],
        records: Sequence[Record],
        benign_records: Sequence[BenignRecord] = (),
        protected: Circuit | None = None,
        parallel: DataParallel | None = None,
    ) -> SeekObjective:
        """The search's objective before its first step: its fill from the unit means over
        ``train_paths`` (a learned fill starts there), and with ``masks.init_from="attr-patch"`` its mask
        logits from attribution patching on the training ``records`` (:mod:`~safeseek_tl.seek.warm`; ``"auto"``
        where the records can be paired)."""
        cfg = self.config
        _warn_without_benign(cfg, benign_records)
        fill = mean_fill(self.loaded.model, train_paths, cfg.schedule.batch_size) if cfg.masks.fill != "zero" else None
        objective = SeekObjective(self.loaded.model, cfg, self.shape, protected, fill, parallel)
        if starts_warm(cfg, benign_records):
            warm_start(objective, warm_logits(self.loaded, cfg, records, benign_records))
        return objective

    def _start(self, objective: SeekObjective, n_train: int, checkpoint_dir: str | Path | None, resume: bool) -> _Run:
        """The optimizer, its linear decay, the noise generator and the state (from the checkpoint when resuming)."""
        cfg = self.config.schedule
        optimizer = torch.optim.AdamW(objective.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        state = TrainState(
            best_main=_logits_of(objective.main), best_circuit=_logits_of(objective.circuit), best_fill=_fill_of(objective), multipliers=objective.multipliers
        )
        generator = torch.Generator().manual_seed(cfg.seed)
        checkpoint = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir else None
        run = _Run(objective, optimizer, generator, state, checkpoint, math.ceil(n_train / cfg.batch_size) * cfg.epochs)
        # the decay reads the run's step count, which a time budget sets after its first steps
        run.schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / run.total_steps) if cfg.lr_decay else 1.0)
        if resume and checkpoint is not None and checkpoint.exists():
            run.state = load_checkpoint(checkpoint, run)
            objective.multipliers = run.state.multipliers
        return run

    def _train_epoch(self, run: _Run, paths: Sequence[MaskPath], n_train: int, bar: Any) -> dict[str, Tensor]:
        """One pass over the training records in a fresh random order; the last batch's loss terms."""
        cfg, objective = self.config.schedule, run.objective
        world = objective.parallel.world_size
        order = torch.randperm(n_train, generator=run.generator)
        terms: dict[str, Tensor] = {}
        for batch, part in enumerate(batch_slices(n_train, cfg.batch_size)):
            if run.done():
                break
            task = objective.task_terms(paths, order[part], stochastic=True, generator=run.generator)
            sparsity = objective.sparsity_terms()
            terms = task | sparsity
            where = f"epoch {run.state.epoch}, batch {batch}"
            _check_finite(terms, where)
            run.optimizer.zero_grad(set_to_none=True)
            # This rank's share of the gradient: its part of the task terms and 1/world of the
            # data-free sparsity terms, which every rank computes whole; summed over ranks.
            (_total(task.values()) + _total(sparsity.values()) / world).backward()
            objective.parallel.all_reduce_gradients(objective.parameters())
            grad_norm = torch.nn.utils.clip_grad_norm_(objective.parameters(), cfg.max_grad_norm)
            # Checked before the step, so that a bad gradient never reaches the masks.
            _check_finite({"norm": grad_norm}, where, what="gradient (of the sum of the loss terms)")
            run.optimizer.step()
            _check_finite(objective.named_logits() | objective.learned_fill(), where, what="mask logits and learned fill")
            run.schedule.step()
            objective.update_multipliers()
            run.state.step += 1
            if run.budget is not None and (run.state.step == PROBE_STEPS or (batch == 0 and run.state.step > PROBE_STEPS)):
                # fitted after the first steps, then again at each epoch's first step, at the pace so
                # far (validation included): the first steps' pace alone misjudges a machine whose load changes
                run.total_steps = bar.total = run.budget.steps(run.clock(), run.state.step)
            bar.update(1)
            bar.set_postfix({"loss": f"{_total(terms.values()).item():.3g}"} | objective.circuit_sizes(), refresh=False)
        return terms

    def _end_epoch(self, run: _Run, terms: dict[str, Tensor], val_paths: Sequence[MaskPath], parallel: DataParallel) -> bool:
        """Validate, keep the best masks, checkpoint; whether patience ran out."""
        state, objective = run.state, run.objective
        val = self.validate(objective, val_paths)
        multipliers = {f"multiplier_{k}": v for k, v in objective.multipliers.items()}
        state.history.append({"epoch": state.epoch, **{k: v.item() for k, v in terms.items()}, **val, **objective.circuit_sizes(), **multipliers})
        state.epoch += 1
        if val["val_loss"] < state.best_loss - 1e-6:
            state.best_loss, state.best_epoch, state.stale_epochs = val["val_loss"], state.epoch - 1, 0
            state.best_main, state.best_circuit, state.best_fill = _logits_of(objective.main), _logits_of(objective.circuit), _fill_of(objective)
        else:
            state.stale_epochs += 1
        if run.checkpoint is not None and parallel.is_main:
            save_checkpoint(run.checkpoint, run)
        patience = self.config.schedule.patience
        return patience is not None and state.stale_epochs >= patience

    @torch.no_grad()
    def validate(self, objective: SeekObjective, paths: Sequence[MaskPath]) -> dict[str, float]:
        """Weighted task loss over the whole validation set (deterministic masks), after each epoch:
        ``val_<path>`` per path and their sum ``val_loss``, which picks the best epoch and drives patience."""
        n = len(paths[0].pairs)
        totals: dict[str, float] = {}
        for part in batch_slices(n, self.config.schedule.batch_size):
            index = torch.arange(n)[part]
            for name, value in objective.task_terms(paths, index).items():
                totals[f"val_{name}"] = totals.get(f"val_{name}", 0.0) + value.item() * len(index) / n
        _check_finite({k: torch.tensor(v) for k, v in totals.items()}, "validation")
        totals["val_loss"] = sum(totals.values())
        return totals

    def result_of(self, state: TrainState, protected: Circuit | None = None) -> SeekResult:
        """The search's result from ``state``'s best main mask: scores ``1 - keep probability``, the
        circuit the units it turns off. Units of ``protected`` (held on for an earlier round of a
        complete search) are left out of both."""
        cfg, shape = self.config, self.shape
        main = main_mask(cfg, shape, state.best_main)
        keep = {k: v.detach() for k, v in main.keep_probability().items()}
        kept = main.kept()
        for kind in kept:  # a size target: its number of units (at most, unless exact), the lowest logits
            count = cfg.target.count(kind, kept[kind].numel())
            if count is not None:
                kept[kind] = cut_to_target(kept[kind], state.best_main[kind], count, protected.get(kind) if protected is not None else None, cfg.target.exact)
        if protected is not None:  # held-on units belong to earlier rounds, not to this one
            kept = {k: v | protected.get(k) for k, v in kept.items()}
            keep = {k: torch.where(protected.get(k), torch.ones_like(v), v) for k, v in keep.items()}
        described = {"scenario": cfg.scenario, "units": cfg.units}
        scores = Scores(
            shape, heads=1 - keep["heads"] if "heads" in keep else None, neurons=1 - keep["neurons"] if "neurons" in keep else None,
            method="safeseek", metadata={**described, "score": "1 - keep probability of the main mask"},
        )  # fmt: skip
        circuit = removed_units(shape, kept, {"method": "safeseek", **described, "best_epoch": state.best_epoch})
        return SeekResult(scores, circuit, cfg, state.best_main, state.best_circuit, state.history, state.best_epoch, fill=state.best_fill)


def path_means(model: TransformerBridge, paths: Sequence[MaskPath], batch_size: int) -> ReferenceActivations:
    """Mean activation of every unit over all tokens of the sequences of every path."""
    batches = (
        (path.pairs.input_ids[part], path.pairs.attention_mask[part])
        for path in paths
        for part in batch_slices(len(path.pairs), batch_size)
    )
    return ReferenceActivations.collect(model, batches, pool_size=0)


def mean_fill(model: TransformerBridge, paths: Sequence[MaskPath], batch_size: int) -> dict[str, Tensor]:
    """:func:`path_means` on the model's device: what a mean-fill search puts in place of masked-off units."""
    device = next(model.parameters()).device
    return {kind: value.to(device) for kind, value in path_means(model, paths, batch_size).means.items()}


def search_fill(loaded: LoadedModel, config: SeekConfig, records: Sequence[Record], benign_records: Sequence[BenignRecord] = ()) -> ReferenceActivations | None:
    """What a search with ``config`` puts in place of masked-off units, for checking its circuit the same way.

    ``None`` for zero fill; for ``masks.fill="mean"``, the unit means over the training
    sequences of every path, as :meth:`~safeseek_tl.seek.trainer.SafeSeek.fit` computes them from the same records.
    A search's result carries its fill (:meth:`~safeseek_tl.seek.result.SeekResult.reference`), the only
    source of a learned one: this raises for ``masks.fill="learned"``.
    """
    if config.masks.fill == "learned":
        raise InputError("a learned fill comes from its search: use the result's fill (SeekResult.reference())")
    if config.masks.fill != "mean":
        return None
    return path_means(loaded.model, mask_paths(config, records, loaded.chat, "training data", benign_records), config.schedule.batch_size)


def save_checkpoint(path: Path, run: _Run) -> None:
    """The masks, the best masks so far, the state and the optimizer, schedule and noise generator."""
    objective, state = run.objective, run.state
    tensors = {
        f"{prefix}.{kind}": value
        for prefix, logits in (
            ("main", _logits_of(objective.main)), ("circuit", _logits_of(objective.circuit)), ("fill", _fill_of(objective)),
            ("best_main", state.best_main), ("best_circuit", state.best_circuit), ("best_fill", state.best_fill),
        )
        for kind, value in logits.items()
    }  # fmt: skip
    meta = dataclasses.asdict(state)
    for key in ("best_main", "best_circuit", "best_fill"):
        meta.pop(key)
    header = {"state": json.dumps(meta), "schedule": json.dumps(run.schedule.state_dict())}
    write_checkpoint(path, tensors, header, settings=objective.config.dotted(), shape=objective.shape, optimizer=run.optimizer, generator=run.generator)


def load_checkpoint(path: Path, run: _Run) -> TrainState:
    """Put a checkpoint's masks, optimizer, schedule and generator in place; its state."""
    objective = run.objective
    tensors, header = read_checkpoint(
        path, settings=objective.config.dotted(), shape=objective.shape, optimizer=run.optimizer, generator=run.generator,
        upgrade=lambda saved: SeekConfig.from_dict(saved, f"checkpoint {path}").dotted(),  # checkpoints of the flat config's version
    )  # fmt: skip
    with torch.no_grad():
        for name, logits in objective.named_logits().items():
            logits.copy_(tensors[name])
        for kind, value in objective.learned_fill().items():
            value.copy_(tensors[f"fill.{kind}"])
    run.schedule.load_state_dict(json.loads(header["schedule"]))
    return TrainState(
        **json.loads(header["state"]),
        best_main={k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("best_main.")},
        best_circuit={k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("best_circuit.")},
        best_fill={k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("best_fill.")},
    )
