"""SafeSeek: find safety circuits by optimizing differentiable binary masks (docs/choices.md).

Two scenarios, as in the official code:

- **backdoor**: two mask sets. The *main* mask G must remove the backdoor while keeping clean
  behaviour; the *circuit* mask H must, alone, reproduce the backdoor on triggered prompts and not
  on clean ones; an overlap term pushes H into the complement of G. The circuit (the ablation set)
  is the units G switches off.
- **alignment**: one mask m. With m the model must accept harmful requests (the circuit removed);
  with 1 - m (the circuit alone) it must still refuse. The circuit is the units m switches off.

All mask paths of a training step are rows of ONE forward/backward pass, each row carrying its
own mask (:func:`~safeseek_tl.masks.mask_hooks` with per-row masks).
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from safeseek_tl._io import read_json, read_safetensors, write_json, write_safetensors
from safeseek_tl.ablation import ReferenceActivations, ablated
from safeseek_tl.checkpoint import CHECKPOINT_FILE, read_checkpoint, write_checkpoint
from safeseek_tl.data import IGNORE_INDEX, AlignmentRecord, BackdoorRecord, BenignRecord, Record, TokenizedPairs, batch_slices, tokenize_pairs
from safeseek_tl.distributed import DataParallel
from safeseek_tl.errors import InputError, NonFiniteLossError
from safeseek_tl.evaluate import refusal_scores, utility_loss
from safeseek_tl.generation import generate
from safeseek_tl.hooks import UNIT_KINDS, UnitKind
from safeseek_tl.masks import MaskKind, MaskLogits, masked
from safeseek_tl.metrics import RefusalJudge, completion_cross_entropy
from safeseek_tl.units import Circuit, ModelShape, Scores

Scenario = Literal["backdoor", "alignment"]
UnitChoice = Literal["heads", "neurons", "both"]
Objective = Literal["ce", "kl"]
NegativeCE = Literal["bounded", "unbounded"]
CircuitSparsity = Literal["mean", "log"]
MaskFill = Literal["zero", "mean"]

SCENARIOS: tuple[Scenario, ...] = ("backdoor", "alignment")
UNIT_CHOICES: tuple[UnitChoice, ...] = ("heads", "neurons", "both")


def _kinds(units: UnitChoice) -> tuple[UnitKind, ...]:
    return ("heads", "neurons") if units == "both" else (units,)


@dataclass
class SeekConfig:
    """Settings of a SafeSeek run. ``None`` fields take the official code's value for the scenario.

    Defaults: lr 1e-2, AdamW without weight decay, linear decay, gradient clipping at 1.0, seed 42
    (the HF Trainer scripts); mask logits start at 1.0 (0.1 for backdoor heads); straight-through
    hard-sigmoid masks. Each official script's settings: docs/choices.md, "The official scripts'
    settings".
    """

    scenario: Scenario
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
        if self.scenario not in SCENARIOS:
            raise InputError(f"scenario must be one of {SCENARIOS}, got {self.scenario!r}")
        if self.units not in UNIT_CHOICES:
            raise InputError(f"units must be one of {UNIT_CHOICES}, got {self.units!r}")
        backdoor, neurons_only = self.scenario == "backdoor", self.units == "neurons"
        defaults: dict[str, Any] = {
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
        for name, value in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        for name in ("epochs", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"lr must be a positive finite number, got {self.lr}")
        if self.ablation not in ("zero", "mean"):
            raise InputError(f"ablation must be 'zero' or 'mean', got {self.ablation!r}")

    @property
    def kinds(self) -> tuple[UnitKind, ...]:
        return _kinds(self.units)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------- mask paths
@dataclass
class _Path:
    """One mask path: a tokenized set of rows, the mask it runs under and its loss weight."""

    name: str
    pairs: TokenizedPairs
    mask: str  # "main", "circuit" (backdoor H) or "inverse" (alignment 1 - m)
    weight: float
    sign: float = 1.0  # -1 for the "must not produce" term
    kl_to_full: bool = False  # KL objective: target is the full model's own output


def _paths(config: SeekConfig, records: Sequence[Record], chat: Any, source: str, benign: Sequence[BenignRecord] = ()) -> list[_Path]:
    tok = lambda pairs: tokenize_pairs(chat, pairs, config.max_length, source)  # noqa: E731
    kl = config.objective == "kl"
    if config.scenario == "backdoor":
        if not all(isinstance(r, BackdoorRecord) for r in records):
            raise InputError(f"{source}: the backdoor scenario needs backdoor records (input, output, backdoor_input, backdoor_output)")
        specs = [
            ("main_clean", [(r.input, r.output) for r in records], "main", config.w_main_clean, 1.0, kl),
            ("main_backdoor", [(r.backdoor_input, r.output) for r in records], "main", config.w_main_backdoor, 1.0, False),
            ("circuit_backdoor", [(r.backdoor_input, r.backdoor_output) for r in records], "circuit", config.w_circuit_backdoor, 1.0, kl),
            ("circuit_clean", [(r.input, r.backdoor_output) for r in records], "circuit", config.w_circuit_clean, -1.0, False),
        ]
    else:
        if not all(isinstance(r, AlignmentRecord) for r in records):
            raise InputError(f"{source}: the alignment scenario needs alignment records (prompt, refuse, accept)")
        specs = [
            ("accept", [(r.prompt, r.accept) for r in records], "main", config.w_accept, 1.0, False),
            ("refuse", [(r.prompt, r.refuse) for r in records], "inverse", config.w_refuse, 1.0, kl),
        ]
    if benign:
        # every path indexes the same rows: benign records are repeated or cut to the records' count
        cycled = [benign[i % len(benign)] for i in range(len(records))]
        specs.append(("main_benign", [(b.prompt, b.response) for b in cycled], "main", config.w_main_benign, 1.0, kl))
    return [_Path(name, tok(pairs), mask, weight, sign, kl_flag) for name, pairs, mask, weight, sign, kl_flag in specs if weight != 0]


# ---------------------------------------------------------------- the objective
class SeekObjective:
    """Mask logits plus the loss of one scenario; ``step_loss`` runs every path in one pass."""

    def __init__(
        self,
        model: Any,
        config: SeekConfig,
        shape: ModelShape,
        protected: Circuit | None = None,
        fill: dict[str, Tensor] | None = None,
        parallel: DataParallel | None = None,
    ) -> None:
        self.model, self.config, self.shape, self.fill = model, config, shape, fill
        self.parallel = parallel if parallel is not None else DataParallel()
        init = {"heads": config.init_heads, "neurons": config.init_neurons}
        self.main = MaskLogits(shape, config.kinds, init, config.mask_kind)
        self.circuit = MaskLogits(shape, config.kinds, init, config.mask_kind) if config.scenario == "backdoor" else None
        # Units already found by an earlier round of a "complete" search: held on in the main mask.
        self.protected = {kind: protected.get(kind).clone() for kind in config.kinds} if protected is not None else None
        self.device = next(model.parameters()).device
        for module in self.mask_modules():
            module.to(self.device)

    def mask_modules(self) -> list[MaskLogits]:
        return [m for m in (self.main, self.circuit) if m is not None]

    def parameters(self) -> list[Tensor]:
        return [p for m in self.mask_modules() for p in m.parameters()]

    def _main_values(self, stochastic: bool, generator: torch.Generator | None) -> dict[UnitKind, Tensor]:
        values = self.main.values(stochastic, generator)
        if self.protected is not None:
            values = {k: torch.where(self.protected[k].to(v.device), torch.ones_like(v), v) for k, v in values.items()}
        return values

    def _row_masks(self, paths: Sequence[_Path], counts: Sequence[int], stochastic: bool, generator: torch.Generator | None) -> dict[UnitKind, Tensor]:
        main = self._main_values(stochastic, generator)
        per_mask = {"main": main, "inverse": {k: 1 - v for k, v in main.items()}}
        if self.circuit is not None:
            per_mask["circuit"] = self.circuit.values(stochastic, generator)
        return {
            kind: torch.cat([per_mask[path.mask][kind].unsqueeze(0).expand(n, -1, -1) for path, n in zip(paths, counts)])
            for kind in self.config.kinds
        }

    def sparsity_terms(self) -> dict[str, Tensor]:
        """Sparsity and overlap terms on the soft keep-probabilities, summed over layers (per module)."""
        cfg = self.config
        keep = self.main.keep_probability()
        weights = {"heads": cfg.w_sparsity_heads, "neurons": cfg.w_sparsity_neurons}
        terms = {f"sparsity_{k}": weights[k] * (1 - p).mean(-1).sum() for k, p in keep.items()}
        if self.circuit is not None:
            circ = self.circuit.keep_probability()
            for kind, p in circ.items():
                per_module = torch.log(1e-6 + p).mean(-1) if cfg.circuit_sparsity == "log" else p.mean(-1)
                terms[f"circuit_sparsity_{kind}"] = cfg.w_circuit_sparsity * per_module.sum()
            overlap = [(keep[k] * circ[k]).sum(-1) / (keep[k].sum(-1) + 1e-8) for k in cfg.kinds]
            terms["overlap"] = cfg.w_overlap * 100 * torch.cat(overlap).mean()
        return terms

    def _negative_ce(self, ce: Tensor) -> Tensor:
        if self.config.negative_ce == "unbounded":
            return -ce
        # Bounded: only push until the circuit path's CE on the forbidden target reaches the margin.
        return torch.relu(self.config.negative_ce_margin - ce)

    def task_terms(self, paths: Sequence[_Path], index: Tensor, stochastic: bool = False, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Weighted task loss of each path on the records ``index``, all paths in one forward pass.

        Under data parallelism ``index`` is the global batch and this rank runs its shard of it;
        every term still has the global batch's value (token means over the whole batch), while
        its gradient is this rank's share (:class:`~safeseek_tl.distributed.DataParallel`).
        """
        local = self.parallel.shard(index)
        # Drawn on every rank, even one with an empty shard: the noise generator stays in step.
        masks = self._row_masks(paths, [len(local)] * len(paths), stochastic, generator)
        sums = self._token_sums(paths, local, masks) if len(local) else [torch.zeros((), device=self.device)] * len(paths)
        terms: dict[str, Tensor] = {}
        for path, total in zip(paths, sums):
            # The global batch's completion tokens of this path: every rank can count them.
            n_tokens = int(path.pairs.select(index).loss_mask.sum())
            value = self.parallel.globalize(total / max(n_tokens, 1))
            if path.sign < 0 and not path.kl_to_full:
                value = self._negative_ce(value)
            terms[path.name] = path.weight * value
        return terms

    def _token_sums(self, paths: Sequence[_Path], index: Tensor, masks: dict[UnitKind, Tensor]) -> list[Tensor]:
        """Each path's loss summed over its completion tokens of the records ``index`` (one forward)."""
        parts = [path.pairs.select(index) for path in paths]
        batch = TokenizedPairs.concat(parts, pad_id=0)
        used = int(batch.attention_mask.sum(0).nonzero().max()) + 1
        input_ids = batch.input_ids[:, :used].to(self.device)
        attention_mask = batch.attention_mask[:, :used].to(self.device)
        labels = batch.labels[:, :used].to(self.device)
        with masked(self.model, heads=masks.get("heads"), neurons=masks.get("neurons"), fill=self.fill):
            logits = self.model(input_ids, attention_mask=attention_mask)
        full_logits = None
        if any(p.kl_to_full for p in paths):
            with torch.no_grad():
                full_logits = self.model(input_ids, attention_mask=attention_mask)
        sums: list[Tensor] = []
        for path, rows in zip(paths, batch_slices(len(input_ids), len(index))):
            if path.kl_to_full:
                sums.append(_completion_kl_sum(full_logits[rows], logits[rows], labels[rows]))
            else:
                sums.append(completion_cross_entropy(logits[rows], labels[rows], reduction="sum"))
        return sums


def _completion_kl_sum(full: Tensor, masked_logits: Tensor, labels: Tensor) -> Tensor:
    """KL(full || masked) of next-token distributions, summed over the completion positions."""
    valid = labels[:, 1:] != IGNORE_INDEX
    p = torch.log_softmax(full[:, :-1].float(), -1)
    q = torch.log_softmax(masked_logits[:, :-1].float(), -1)
    kl = (p.exp() * (p - q)).sum(-1)
    return (kl * valid).sum()


# ---------------------------------------------------------------- results
@dataclass
class SeekResult:
    """What a SafeSeek run produces: scores, the circuit (ablation set), masks, history, settings.

    ``verified`` says whether ablating ``circuit`` was checked to switch the behaviour on the
    validation prompts (:func:`behaviour_switch`): ``True`` for the counted rounds of
    :func:`discover_complete` and for :func:`prune_circuit`; ``False`` when
    :func:`discover_complete` found no round that passes the check and returned its first search
    as found (its circuit does not switch the behaviour, or is empty); ``None`` for a single
    search, which checks nothing. Saved in ``history.json``.
    """

    scores: Scores
    circuit: Circuit
    config: SeekConfig
    main_logits: dict[str, Tensor]
    circuit_logits: dict[str, Tensor] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    rounds: int = 1
    verified: bool | None = None

    @property
    def sufficient_circuit(self) -> Circuit | None:
        """Backdoor scenario: the units the circuit mask H keeps (the circuit alone)."""
        if not self.circuit_logits:
            return None
        shape = self.circuit.shape
        kept = {k: v > 0 for k, v in self.circuit_logits.items()}
        empty = Circuit.empty(shape)
        return Circuit(shape, kept.get("heads", empty.heads), kept.get("neurons", empty.neurons), {"method": "safeseek", "role": "circuit mask H"})

    def save(self, out_dir: str | Path) -> None:
        """Write ``circuit.json``, ``scores.safetensors``, ``masks.safetensors``, ``history.json``, ``config.json``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.circuit.save(out / "circuit.json")
        self.scores.save(out / "scores.safetensors")
        tensors = {f"main.{k}": v for k, v in self.main_logits.items()}
        tensors |= {f"circuit.{k}": v for k, v in self.circuit_logits.items()}
        write_safetensors(out / "masks.safetensors", tensors, {"model": json.dumps(self.circuit.shape.to_dict())})
        write_json(out / "history.json", {"best_epoch": self.best_epoch, "rounds": self.rounds, "verified": self.verified, "history": self.history})
        write_json(out / "config.json", self.config.to_dict())

    @classmethod
    def load(cls, out_dir: str | Path, expected: ModelShape | None = None) -> SeekResult:
        out = Path(out_dir)
        circuit = Circuit.load(out / "circuit.json", expected)
        scores = Scores.load(out / "scores.safetensors", expected)
        masks, header = read_safetensors(out / "masks.safetensors", "mask file")
        if expected is not None and "model" in header:
            expected.check_compatible(ModelShape.from_dict(json.loads(header["model"]), str(out / "masks.safetensors")), f"mask file {out / 'masks.safetensors'}")
        history = read_json(out / "history.json")
        config = SeekConfig(**read_json(out / "config.json"))
        return cls(
            scores=scores,
            circuit=circuit,
            config=config,
            main_logits={k.split(".", 1)[1]: v for k, v in masks.items() if k.startswith("main.")},
            circuit_logits={k.split(".", 1)[1]: v for k, v in masks.items() if k.startswith("circuit.")},
            history=history["history"],
            best_epoch=history["best_epoch"],
            rounds=history["rounds"],
            verified=history.get("verified"),  # absent from results saved before it existed
        )


# ---------------------------------------------------------------- training
@dataclass
class _State:
    """Everything a checkpoint must hold to resume a run exactly."""

    epoch: int = 0
    best_loss: float = math.inf
    best_epoch: int = -1
    best_main: dict[str, Tensor] = field(default_factory=dict)
    best_circuit: dict[str, Tensor] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    stale_epochs: int = 0


def _logits_of(mask: MaskLogits | None) -> dict[str, Tensor]:
    return {} if mask is None else {k: mask.logits(k).detach().cpu().clone() for k in mask.kinds}


def _named_logits(objective: SeekObjective) -> dict[str, Tensor]:
    """Every mask's logits, named ``main.heads``, ``circuit.neurons``, ..."""
    masks = (("main", objective.main), ("circuit", objective.circuit))
    return {f"{prefix}.{kind}": mask.logits(kind) for prefix, mask in masks if mask is not None for kind in mask.kinds}


def _check_finite(values: dict[str, Tensor], where: str, what: str = "loss term") -> None:
    for name, value in values.items():
        bad = value.detach()[~torch.isfinite(value.detach())]
        if bad.numel():
            raise NonFiniteLossError(f"{what} '{name}' became {bad.flatten()[0].item()} at {where}; the last good masks were kept")


class SafeSeek:
    """Optimize masks for one scenario on one model.

    >>> seeker = SafeSeek(loaded, SeekConfig(scenario="backdoor", units="heads"))  # doctest: +SKIP
    >>> result = seeker.fit(train_records)  # doctest: +SKIP
    """

    def __init__(self, loaded: Any, config: SeekConfig) -> None:
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
    ) -> SeekResult:
        """Train the masks; validation each epoch keeps the best masks; returns a :class:`SeekResult`.

        ``records`` trains; ``val_records`` (default: the last ``config.val_size`` training records)
        selects the best epoch. With ``checkpoint_dir`` the state is saved after every epoch and
        ``resume=True`` continues from it. ``protected`` units are held on in the main mask.
        ``benign_records`` add a path (weight ``config.w_main_benign``) on which the main mask must
        keep the model's benign answers, in training and validation alike.

        Launched in several processes (``torchrun``, an initialized ``torch.distributed`` group),
        each batch is split over the processes and the mask gradients are summed: the masks equal a
        one-process run's with the same ``batch_size`` (the global batch, at least the number of
        processes). Rank 0 alone writes the checkpoint and shows progress.
        """
        cfg = self.config
        parallel = DataParallel.current()
        if cfg.batch_size < parallel.world_size:
            raise InputError(f"batch_size {cfg.batch_size} is smaller than the {parallel.world_size} data-parallel processes; each needs at least one record per batch")
        if val_records is None:
            from safeseek_tl.data import split_records

            records, val_records = split_records(records, cfg.val_size, "training data")
        torch.manual_seed(cfg.seed)
        train_paths = _paths(cfg, records, self.loaded.chat, "training data", benign_records)
        val_paths = _paths(cfg, val_records, self.loaded.chat, "validation data", benign_records)
        fill = _mean_fill(self.loaded.model, train_paths, cfg.batch_size) if cfg.ablation == "mean" else None
        objective = SeekObjective(self.loaded.model, cfg, self.shape, protected, fill, parallel)
        n_train = len(records)
        steps_per_epoch = math.ceil(n_train / cfg.batch_size)
        total_steps = steps_per_epoch * cfg.epochs
        optimizer = torch.optim.AdamW(objective.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: max(0.0, 1 - step / total_steps) if cfg.lr_decay else 1.0
        )
        state = _State(best_main=_logits_of(objective.main), best_circuit=_logits_of(objective.circuit))
        generator = torch.Generator().manual_seed(cfg.seed)
        checkpoint = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir else None
        if resume and checkpoint is not None and checkpoint.exists():
            state = _load_checkpoint(checkpoint, objective, optimizer, schedule, generator)

        bar = tqdm(total=total_steps, initial=state.epoch * steps_per_epoch, desc=f"safeseek {cfg.scenario}/{cfg.units}", disable=not (progress and parallel.is_main))
        try:
            while state.epoch < cfg.epochs:
                order = torch.randperm(n_train, generator=generator)
                for batch, part in enumerate(batch_slices(n_train, cfg.batch_size)):
                    task = objective.task_terms(train_paths, order[part], stochastic=True, generator=generator)
                    sparsity = objective.sparsity_terms()
                    terms = task | sparsity
                    where = f"epoch {state.epoch}, batch {batch}"
                    _check_finite(terms, where)
                    loss = sum(terms.values())
                    optimizer.zero_grad(set_to_none=True)
                    # This rank's share of the gradient: its part of the task terms and 1/world of the
                    # data-free sparsity terms, which every rank computes whole; summed over ranks.
                    (sum(task.values()) + sum(sparsity.values()) / parallel.world_size).backward()
                    parallel.all_reduce_gradients(objective.parameters())
                    grad_norm = torch.nn.utils.clip_grad_norm_(objective.parameters(), cfg.max_grad_norm)
                    # Checked before the step, so that a bad gradient never reaches the masks.
                    _check_finite({"norm": grad_norm}, where, what="gradient (of the sum of the loss terms)")
                    optimizer.step()
                    _check_finite(_named_logits(objective), where, what="mask logits")
                    schedule.step()
                    bar.update(1)
                    bar.set_postfix({"loss": f"{loss.item():.3g}"} | _sizes(objective), refresh=False)
                val = self._validate(objective, val_paths)
                state.history.append({"epoch": state.epoch, **{k: v.item() for k, v in terms.items()}, **val, **_sizes(objective)})
                state.epoch += 1
                if val["val_loss"] < state.best_loss - 1e-6:
                    state.best_loss, state.best_epoch, state.stale_epochs = val["val_loss"], state.epoch - 1, 0
                    state.best_main, state.best_circuit = _logits_of(objective.main), _logits_of(objective.circuit)
                else:
                    state.stale_epochs += 1
                if checkpoint is not None and parallel.is_main:
                    _save_checkpoint(checkpoint, state, objective, optimizer, schedule, generator)
                if cfg.patience is not None and state.stale_epochs >= cfg.patience:
                    break
        except NonFiniteLossError as err:
            err.result = self._result(state, protected)
            raise
        finally:
            bar.close()
        return self._result(state, protected)

    @torch.no_grad()
    def _validate(self, objective: SeekObjective, paths: Sequence[_Path]) -> dict[str, float]:
        """Weighted task loss over the whole validation set (deterministic masks)."""
        n = len(paths[0].pairs)
        totals: dict[str, float] = {}
        for part in batch_slices(n, self.config.batch_size):
            index = torch.arange(n)[part]
            for name, value in objective.task_terms(paths, index).items():
                totals[f"val_{name}"] = totals.get(f"val_{name}", 0.0) + value.item() * len(index) / n
        _check_finite({k: torch.tensor(v) for k, v in totals.items()}, "validation")
        totals["val_loss"] = sum(totals.values())
        return totals

    def _result(self, state: _State, protected: Circuit | None) -> SeekResult:
        cfg, shape = self.config, self.shape
        main = MaskLogits(shape, cfg.kinds, kind=cfg.mask_kind)
        with torch.no_grad():
            for kind, value in state.best_main.items():
                main.logits(kind).copy_(value)
        keep = {k: v.detach() for k, v in main.keep_probability().items()}
        kept = main.kept()
        if protected is not None:  # held-on units belong to earlier rounds, not to this one
            kept = {k: v | protected.get(k) for k, v in kept.items()}
            keep = {k: torch.where(protected.get(k), torch.ones_like(v), v) for k, v in keep.items()}
        scores = Scores(shape, heads=1 - keep["heads"] if "heads" in keep else None, neurons=1 - keep["neurons"] if "neurons" in keep else None, method="safeseek", metadata={"scenario": cfg.scenario, "units": cfg.units, "score": "1 - keep probability of the main mask"})
        empty = Circuit.empty(shape)
        circuit = Circuit(
            shape,
            ~kept["heads"] if "heads" in kept else empty.heads,
            ~kept["neurons"] if "neurons" in kept else empty.neurons,
            {"method": "safeseek", "scenario": cfg.scenario, "units": cfg.units, "best_epoch": state.best_epoch},
        )
        return SeekResult(scores, circuit, cfg, state.best_main, state.best_circuit, state.history, state.best_epoch)


def _path_means(model: Any, paths: Sequence[_Path], batch_size: int) -> ReferenceActivations:
    """Mean activation of every unit over all tokens of the sequences of every path."""
    batches = (
        (path.pairs.input_ids[part], path.pairs.attention_mask[part])
        for path in paths
        for part in batch_slices(len(path.pairs), batch_size)
    )
    return ReferenceActivations.collect(model, batches, pool_size=0)


def _mean_fill(model: Any, paths: Sequence[_Path], batch_size: int) -> dict[str, Tensor]:
    device = next(model.parameters()).device
    return {kind: value.to(device) for kind, value in _path_means(model, paths, batch_size).means.items()}


def search_fill(loaded: Any, config: SeekConfig, records: Sequence[Record], benign_records: Sequence[BenignRecord] = ()) -> ReferenceActivations | None:
    """What a search with ``config`` puts in place of masked-off units, for checking its circuit the same way.

    ``None`` for zero ablation; for ``ablation="mean"``, the unit means over the training
    sequences of every path, as :meth:`~safeseek_tl.seek.SafeSeek.fit` computes them from the same records.
    """
    if config.ablation != "mean":
        return None
    return _path_means(loaded.model, _paths(config, records, loaded.chat, "training data", benign_records), config.batch_size)


def _sizes(objective: SeekObjective) -> dict[str, int]:
    """Current number of units the main mask removes (the circuit size), per granularity."""
    return {f"off_{k}": int((~v).sum()) for k, v in objective.main.kept().items()}


def _save_checkpoint(path: Path, state: _State, objective: SeekObjective, optimizer: Any, schedule: Any, generator: torch.Generator) -> None:
    tensors: dict[str, Tensor] = {}
    for prefix, mask in (("main", objective.main), ("circuit", objective.circuit)):
        for kind, value in _logits_of(mask).items():
            tensors[f"{prefix}.{kind}"] = value
    for prefix, best in (("best_main", state.best_main), ("best_circuit", state.best_circuit)):
        for kind, value in best.items():
            tensors[f"{prefix}.{kind}"] = value
    meta = dataclasses.asdict(state)
    for key in ("best_main", "best_circuit"):
        meta.pop(key)
    header = {"state": json.dumps(meta), "schedule": json.dumps(schedule.state_dict())}
    write_checkpoint(path, tensors, header, settings=objective.config.to_dict(), shape=objective.shape, optimizer=optimizer, generator=generator)


def _load_checkpoint(path: Path, objective: SeekObjective, optimizer: Any, schedule: Any, generator: torch.Generator) -> _State:
    tensors, header = read_checkpoint(path, settings=objective.config.to_dict(), shape=objective.shape, optimizer=optimizer, generator=generator)
    with torch.no_grad():
        for prefix, mask in (("main", objective.main), ("circuit", objective.circuit)):
            if mask is not None:
                for kind in mask.kinds:
                    mask.logits(kind).copy_(tensors[f"{prefix}.{kind}"])
    schedule.load_state_dict(json.loads(header["schedule"]))
    meta = json.loads(header["state"])
    return _State(
        **meta,
        best_main={k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("best_main.")},
        best_circuit={k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("best_circuit.")},
    )


def discover(
    loaded: Any,
    records: Sequence[Record],
    config: SeekConfig,
    val_records: Sequence[Record] | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    benign_records: Sequence[BenignRecord] = (),
) -> SeekResult:
    """Run SafeSeek once: the minimal ablation set that switches the behaviour."""
    return SafeSeek(loaded, config).fit(records, val_records, checkpoint_dir, resume, progress=progress, benign_records=benign_records)


SWITCH_TOKENS = 32
"""New tokens generated per prompt when judging whether an ablation switches the behaviour."""


def _clean_behaviour(
    loaded: Any, config: SeekConfig, records: Sequence[Record], benign: Sequence[BenignRecord], max_new_tokens: int, judge: RefusalJudge
) -> dict[str, float]:
    """What must not change: refusal of clean harmful prompts (backdoor), benign answers and their cross-entropy."""
    out: dict[str, float] = {}
    if config.scenario == "backdoor":
        prompts = [r.input for r in records]
        out["clean"] = judge.refusal_rate(generate(loaded.model, loaded.chat, prompts, max_new_tokens, progress=False))
        out["refusal_score_clean"] = float(refusal_scores(loaded, prompts).mean())
    if benign:
        prompts = [r.prompt for r in benign]
        out["benign"] = 1 - judge.refusal_rate(generate(loaded.model, loaded.chat, prompts, max_new_tokens, progress=False))
        out["refusal_score_benign"] = float(refusal_scores(loaded, prompts).mean())
        out["utility"] = utility_loss(loaded, benign)
    return out


def _full_behaviour(
    loaded: Any, config: SeekConfig, records: Sequence[Record], benign: Sequence[BenignRecord], max_new_tokens: int, judge: RefusalJudge
) -> dict[str, float]:
    """:func:`_clean_behaviour` of the model without ablation, as ``*_full`` keys."""
    return {f"{k}_full": v for k, v in _clean_behaviour(loaded, config, records, benign, max_new_tokens, judge).items()}


def behaviour_switch(
    loaded: Any,
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
    from an earlier call on the same model and data, so that repeated checks do not measure the
    full model again. The circuit is ablated as the search masked it: zero, or with
    ``config.ablation="mean"`` the means ``fill`` (:func:`search_fill`; default: from ``records``).
    ``judge``: the keyword judge (default :class:`~safeseek_tl.metrics.RefusalJudge`). Each judged
    rate ``key`` comes with ``refusal_score_<key>``, the mean logit refusal score of the same
    prompts (:func:`~safeseek_tl.evaluate.refusal_scores`), which shows a judge that misreads the model.
    """
    judge = judge or RefusalJudge()
    if full is None:
        full = _full_behaviour(loaded, config, records, benign, max_new_tokens, judge)
    if config.ablation == "mean" and fill is None:
        fill = search_fill(loaded, config, records)
    with ablated(loaded.model, circuit, config.ablation, fill):
        if config.scenario == "backdoor":
            prompts = [r.backdoor_input for r in records]
            switched = judge.refusal_rate(generate(loaded.model, loaded.chat, prompts, max_new_tokens, progress=False))
        else:
            prompts = [r.prompt for r in records]
            switched = judge.attack_success_rate(generate(loaded.model, loaded.chat, prompts, max_new_tokens, progress=False))
        score = float(refusal_scores(loaded, prompts).mean())
        return {**full, "switched": switched, "refusal_score_switched": score, **_clean_behaviour(loaded, config, records, benign, max_new_tokens, judge)}


def _switch_test(
    loaded: Any,
    config: SeekConfig,
    records: Sequence[Record],
    benign_records: Sequence[BenignRecord],
    fill: ReferenceActivations | None,
    min_switched: float,
    max_clean_drop: float,
    max_utility_increase: float,
    judge: RefusalJudge | None = None,
) -> Callable[[Circuit], bool]:
    """``switches(circuit)``: does ablating it switch >= ``min_switched`` of ``records``, while clean
    refusals and benign answers drop by at most ``max_clean_drop`` and the benign cross-entropy
    rises by at most ``max_utility_increase`` nats per token? (:func:`behaviour_switch`)"""
    # The model itself does not change between checks: measure its clean behaviour once.
    judge = judge or RefusalJudge()
    full = _full_behaviour(loaded, config, records, benign_records, SWITCH_TOKENS, judge)

    def switches(circuit: Circuit) -> bool:
        check = behaviour_switch(loaded, config, circuit, records, benign=benign_records, full=full, fill=fill, judge=judge)
        drops = (check.get(f"{k}_full", 0.0) - check.get(k, 0.0) for k in ("clean", "benign"))
        utility_increase = check.get("utility", 0.0) - check.get("utility_full", 0.0)
        return check["switched"] >= min_switched and max(drops) <= max_clean_drop and utility_increase <= max_utility_increase

    return switches


def prune_circuit(
    loaded: Any,
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
    passes the test of :func:`discover_complete` on ``val_records`` (and ``benign_records``), then
    leaves out each of its units that the rest can switch without, least confident first (each
    check is one :func:`behaviour_switch`, about log2(n) + n of them). ``fill``: the
    search's means for ``ablation="mean"`` (:func:`search_fill` of its training records; default:
    means over ``val_records``). ``judge``: the keyword judge of the checks. Raises
    :class:`~safeseek_tl.errors.InputError` when the whole circuit does not pass the test.
    """
    switches = _switch_test(loaded, result.config, val_records, benign_records, fill, min_switched, max_clean_drop, max_utility_increase, judge)
    if not switches(result.circuit):
        raise InputError(
            f"ablating the circuit ({result.circuit.n_heads} heads, {result.circuit.n_neurons} neurons) does not switch "
            f"{min_switched:.0%} of the validation prompts while keeping clean behaviour: nothing to prune"
        )
    pruned = _minimal_switching_set(result.circuit, result.main_logits, switches)
    pruned.metadata = {**result.circuit.metadata, "pruned": True, "unpruned_units": len(result.circuit)}
    return replace(result, circuit=pruned, verified=True)


def _minimal_switching_set(circuit: Circuit, main_logits: dict[str, Tensor], switches: Callable[[Circuit], bool]) -> Circuit:
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

    def of(chosen: list[tuple[float, str, int, int]]) -> Circuit:
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


def discover_complete(
    loaded: Any,
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
    ``benign_records`` the share of benign prompts answered, drops by at most ``max_clean_drop``,
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
    :class:`~safeseek_tl.metrics.RefusalJudge`).
    """
    from safeseek_tl.data import split_records

    if val_records is None:
        records, val_records = split_records(records, config.val_size, "training data")
    shape = loaded.shape
    union = Circuit.empty(shape)
    rounds: list[SeekResult] = []
    switches = _switch_test(
        loaded, config, val_records, benign_records, search_fill(loaded, config, records, benign_records),
        min_switched, max_clean_drop, max_utility_increase, judge,
    )  # fmt: skip
    for round_index in range(max_rounds):
        result = SafeSeek(loaded, config).fit(
            records, val_records, protected=union if rounds else None, progress=progress, benign_records=benign_records
        )
        new = result.circuit - union
        if len(new) == 0:
            break

        if not switches(new):
            break
        if prune:
            new = _minimal_switching_set(new, result.main_logits, switches)
        union = union | new
        for entry in result.history:
            entry["round"] = round_index
        rounds.append(result)
    if not rounds:  # the loop stopped at its first round: ``result`` is the first search
        warnings.warn(
            f"no round of the complete search switched the behaviour on the {len(val_records)} validation prompts "
            f"(first round: {result.circuit.n_heads} heads, {result.circuit.n_neurons} neurons); returning the first "
            "search's circuit as found, unverified (SeekResult.verified is False)",
            stacklevel=2,
        )
        result.circuit.metadata = {**result.circuit.metadata, "complete": True, "verified": False}
        return replace(result, verified=False)
    first = rounds[0]
    scores = Scores(
        shape,
        heads=torch.stack([r.scores.heads for r in rounds]).amax(0) if first.scores.heads is not None else None,
        neurons=torch.stack([r.scores.neurons for r in rounds]).amax(0) if first.scores.neurons is not None else None,
        method="safeseek",
        metadata={**first.scores.metadata, "complete": True, "rounds": len(rounds)},
    )
    union.metadata = {**first.circuit.metadata, "complete": True, "rounds": len(rounds), "verified": True}
    history = [entry for r in rounds for entry in r.history]
    return SeekResult(scores, union, config, first.main_logits, first.circuit_logits, history, first.best_epoch, len(rounds), verified=True)
