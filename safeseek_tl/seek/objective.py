"""SafeSeek's loss: the mask paths of a scenario and :class:`SeekObjective`, all paths in one pass.

- **backdoor**: two mask sets. The *main* mask G must remove the backdoor while keeping clean
  behaviour; the *circuit* mask H must, alone, reproduce the backdoor on triggered prompts and not
  on clean ones; an overlap term pushes H into the complement of G. The circuit (the ablation set)
  is the units G switches off.
- **alignment**: one mask m. With m the model must accept harmful requests (the circuit removed);
  with 1 - m (the circuit alone) it must still refuse (``alignment_objective="official"``; a weight
  that defaults to 0 otherwise). The circuit is the units m switches off. ``"necessity"`` keeps
  benign answers by the KL from the full model; ``"refusal_score"`` runs prompts only and reads the
  refusal score (:func:`~safeseek_tl.metrics.refusal_score`) and the KL at the last prompt position.

All mask paths of a training step are rows of ONE forward/backward pass, each row carrying its
own mask (:func:`~safeseek_tl.masks.masked` with per-row masks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from safeseek_tl.chat import ChatFormatter
from safeseek_tl.compat import pad_token_id
from safeseek_tl.data import IGNORE_INDEX, BenignRecord, Record, TokenizedPairs, batch_slices, tokenize_pairs
from safeseek_tl.distributed import DataParallel
from safeseek_tl.errors import InputError
from safeseek_tl.hooks import UnitKind
from safeseek_tl.masks import MaskLogits, masked
from safeseek_tl.metrics import completion_cross_entropy, last_position_kl, refusal_score, refusal_token_ids
from safeseek_tl.scenarios import scenario_of
from safeseek_tl.seek.config import AlignmentLoss, BackdoorLoss, SeekConfig
from safeseek_tl.seek.size import cut_to_target, step_multiplier
from safeseek_tl.units import Circuit, ModelShape

if TYPE_CHECKING:  # imported for the annotations only: loading it takes seconds
    from transformer_lens.model_bridge import TransformerBridge

MaskRole = Literal["main", "circuit", "inverse"]
"""Which mask a path runs under: the main mask, the backdoor's circuit mask H, or alignment's 1 - m."""

PathLoss = Literal["tokens", "comply", "refuse", "last_kl"]
"""What a path's loss reads: its completion tokens (cross-entropy, or KL with ``kl_to_full``), or,
on prompt-only rows, the answer's first token: ``softplus(±refusal score)`` pushes the refusal
score down (comply) or up (refuse), ``last_kl`` is the KL from the full model there."""


@dataclass
class MaskPath:
    """One mask path: a tokenized set of rows, the mask it runs under and its loss weight."""

    name: str
    pairs: TokenizedPairs
    mask: MaskRole
    weight: float
    sign: float = 1.0  # -1 for the "must not produce" term
    kl_to_full: bool = False  # KL objective: target is the full model's own output
    loss: PathLoss = "tokens"
    refusal_ids: tuple[int, ...] = ()  # the refusal tokens of "comply" and "refuse" paths
    # a "last_kl" path's target: the unmasked model's logits at each row's last prompt position
    # (SeekObjective.cache_full_last); None: computed in every step's pass
    full_last: Float[Tensor, "rows d_vocab"] | None = None


SWITCH_PATHS = frozenset({"accept", "main_backdoor"})
"""The paths whose target is the behaviour switched (harmful prompts answered, triggered prompts
refused): the full model does otherwise. A learned fill gets no gradient from them: it is fitted to
keep what the full model does (Li & Janson's optimal ablation), never to switch the behaviour
itself, which a constant added in place of the circuit could do without the circuit (docs/choices.md)."""

PathSpec = tuple[str, list[tuple[str, str]], MaskRole, float, float, bool, PathLoss]
"""(name, (prompt, completion) pairs, mask, weight, sign, kl_to_full, loss) of a path before tokenizing."""


def _backdoor_specs(loss: BackdoorLoss, records: Sequence[Any], kl: bool) -> list[PathSpec]:
    return [
        ("main_clean", [(r.input, r.output) for r in records], "main", loss.w_main_clean, 1.0, kl, "tokens"),
        ("main_backdoor", [(r.backdoor_input, r.output) for r in records], "main", loss.w_main_backdoor, 1.0, False, "tokens"),
        ("circuit_backdoor", [(r.backdoor_input, r.backdoor_output) for r in records], "circuit", loss.w_circuit_backdoor, 1.0, kl, "tokens"),
        ("circuit_clean", [(r.input, r.backdoor_output) for r in records], "circuit", loss.w_circuit_clean, -1.0, False, "tokens"),
    ]


def _alignment_specs(loss: AlignmentLoss, records: Sequence[Any], kl: bool) -> list[PathSpec]:
    if loss.alignment_objective == "refusal_score":  # prompt-only rows: no completion tokens
        return [
            ("accept", [(r.prompt, "") for r in records], "main", loss.w_accept, 1.0, False, "comply"),
            ("refuse", [(r.prompt, "") for r in records], "inverse", loss.w_refuse, 1.0, False, "refuse"),
        ]
    return [
        ("accept", [(r.prompt, r.accept) for r in records], "main", loss.w_accept, 1.0, False, "tokens"),
        ("refuse", [(r.prompt, r.refuse) for r in records], "inverse", loss.w_refuse, 1.0, kl, "tokens"),
    ]


def _benign_spec(config: SeekConfig, benign: Sequence[BenignRecord]) -> PathSpec:
    """The main mask keeps benign answers: as the objective says, or by the KL from the full model
    (necessity objectives: the full model's own answer is the target)."""
    loss = config.loss
    mode = loss.alignment_objective if isinstance(loss, AlignmentLoss) else "official"
    if mode == "refusal_score":
        return ("main_benign", [(b.prompt, "") for b in benign], "main", loss.w_main_benign, 1.0, False, "last_kl")
    kl = loss.objective == "kl" or mode == "necessity"
    return ("main_benign", [(b.prompt, b.response) for b in benign], "main", loss.w_main_benign, 1.0, kl, "tokens")


def tokenize_prompt_rows(chat: ChatFormatter, pairs: Sequence[tuple[str, str]], max_length: int, source: str) -> TokenizedPairs:
    """Prompt-only rows, right-padded like :func:`~safeseek_tl.data.tokenize_pairs`, no label: a
    loss on them reads the last prompt position, where the answer starts (long prompts keep their end)."""
    rows = [chat.prompt_ids(prompt)[-max_length:] for prompt, _ in pairs]
    input_ids = torch.full((len(rows), max(map(len, rows))), pad_token_id(chat.tokenizer), dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, ids in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
    return TokenizedPairs(input_ids, attention_mask, torch.full_like(input_ids, IGNORE_INDEX))


def scenario_specs(config: SeekConfig, records: Sequence[Any]) -> list[PathSpec]:
    """The paths of ``config``'s scenario on its records (see the module docstring), before tokenizing."""
    loss, kl = config.loss, config.loss.objective == "kl"
    return _backdoor_specs(loss, records, kl) if isinstance(loss, BackdoorLoss) else _alignment_specs(loss, records, kl)


def mask_paths(config: SeekConfig, records: Sequence[Record], chat: ChatFormatter, source: str, benign: Sequence[BenignRecord] = ()) -> list[MaskPath]:
    """The tokenized mask paths of ``config``'s scenario on ``records`` (paths of weight 0 left out).

    With ``benign`` records a ``main_benign`` path asks the main mask to keep their answers; every
    path indexes the same rows, so benign records are repeated or cut to the records' count.
    """
    scenario_of(config.scenario).check(records, source)
    specs = scenario_specs(config, records)
    if benign:
        specs.append(_benign_spec(config, [benign[i % len(benign)] for i in range(len(records))]))
    specs = [spec for spec in specs if spec[3] != 0]
    refusal = tuple(refusal_token_ids(chat.tokenizer)) if any(spec[6] in ("comply", "refuse") for spec in specs) else ()
    return [
        MaskPath(
            name, (tokenize_pairs if loss == "tokens" else tokenize_prompt_rows)(chat, pairs, config.schedule.max_length, source),
            mask, weight, sign, kl_flag, loss, refusal if loss in ("comply", "refuse") else (),
        )
        for name, pairs, mask, weight, sign, kl_flag, loss in specs
    ]  # fmt: skip


class SeekObjective:
    """Mask logits plus the loss of one scenario; ``task_terms`` runs every path in one pass."""

    def __init__(
        self,
        model: TransformerBridge,
        config: SeekConfig,
        shape: ModelShape,
        protected: Circuit | None = None,
        fill: dict[str, Tensor] | None = None,
        parallel: DataParallel | None = None,
    ) -> None:
        self.model, self.config, self.shape = model, config, shape
        self.parallel = parallel if parallel is not None else DataParallel()
        self.device = next(model.parameters()).device
        self.fill = fill
        if config.masks.fill == "learned":  # trained with the masks, from the given means (Li & Janson's optimal ablation)
            if fill is None:
                raise InputError("masks.fill='learned' starts each unit's fill at its mean activation: pass fill (seek.trainer.mean_fill)")
            self.fill = {kind: nn.Parameter(fill[kind].detach().float().clone().to(self.device)) for kind in config.kinds}
        init = {"heads": config.masks.init_heads, "neurons": config.masks.init_neurons}
        self.main = MaskLogits(shape, config.kinds, init, config.masks.kind)
        # The circuit mask H exists when one of the scenario's paths runs under it (backdoor).
        uses_circuit_mask = any(spec[2] == "circuit" for spec in scenario_specs(config, []))
        self.circuit = MaskLogits(shape, config.kinds, init, config.masks.kind) if uses_circuit_mask else None
        # Units already found by an earlier round of a "complete" search: held on in the main mask.
        self.protected = {kind: protected.get(kind).clone() for kind in config.kinds} if protected is not None else None
        # size targets (seek.size): units asked for per granularity, and the multipliers steering to them
        sizes = {kind: config.target.count(kind, shape.size(kind)[0] * shape.size(kind)[1]) for kind in config.kinds}
        self.targets = {kind: count for kind, count in sizes.items() if count is not None}
        self.multipliers = dict.fromkeys(self.targets, 0.0)
        for module in self.mask_modules():
            module.to(self.device)

    def mask_modules(self) -> list[MaskLogits]:
        return [m for m in (self.main, self.circuit) if m is not None]

    def parameters(self) -> list[Tensor]:
        """What the optimizer trains: the mask logits, and a learned fill."""
        return [p for m in self.mask_modules() for p in m.parameters()] + list(self.learned_fill().values())

    def learned_fill(self) -> dict[str, Tensor]:
        """The trained fill of ``ablation="learned"``, per granularity (empty for a fixed fill)."""
        return dict(self.fill) if self.config.masks.fill == "learned" and self.fill is not None else {}

    def named_logits(self) -> dict[str, Tensor]:
        """Every mask's logits, named ``main.heads``, ``circuit.neurons``, ..."""
        masks = (("main", self.main), ("circuit", self.circuit))
        return {f"{prefix}.{kind}": logits for prefix, mask in masks if mask is not None for kind, logits in mask.searched().items()}

    def circuit_sizes(self) -> dict[str, int]:
        """Current number of units the main mask removes (the circuit size), per granularity."""
        return {f"off_{k}": int((~v).sum()) for k, v in self.main.kept().items()}

    def target_kept(self, logits: dict[UnitKind, Tensor], kept: dict[UnitKind, Tensor]) -> dict[UnitKind, Tensor]:
        """Which units the circuit of the target size keeps, from main-mask ``logits`` and the mask's own read-off ``kept`` (:func:`~safeseek_tl.seek.size.cut_to_target`)."""
        held = self.protected or {}
        return {kind: cut_to_target(kept[kind], logits[kind], count, held.get(kind), self.config.target.exact) for kind, count in self.targets.items()}

    def update_multipliers(self) -> None:
        """One ascent step of each target's multiplier, from the circuit's size now."""
        sizes = self.circuit_sizes()
        for kind, count in self.targets.items():
            self.multipliers[kind] = step_multiplier(self.multipliers[kind], sizes[f"off_{kind}"], count, self.config.target.lr)

    def _main_values(self, stochastic: bool, generator: torch.Generator | None) -> dict[UnitKind, Tensor]:
        values = self.main.values(stochastic, generator)
        # Evaluation judges the circuit of the target size, as it is read off; with target.in_training the
        # training passes run it too, straight through: the cut forward, the mask's gradient backward.
        if self.targets and (not stochastic or self.config.target.in_training):
            cut = self.target_kept(self.main.searched(), {kind: value > 0.5 for kind, value in values.items()})
            values = values | {kind: kept.to(values[kind].dtype) + values[kind] - values[kind].detach() for kind, kept in cut.items()}
        if self.protected is not None:
            values = {k: torch.where(self.protected[k].to(v.device), torch.ones_like(v), v) for k, v in values.items()}
        return values

    def row_masks(self, paths: Sequence[MaskPath], counts: Sequence[int], stochastic: bool, generator: torch.Generator | None) -> dict[UnitKind, Tensor]:
        """Per-row masks of one forward pass over all paths: each path's mask (main ``m``, inverse
        ``1 - m`` or circuit ``H``) repeated for its ``counts[i]`` rows, in path order, per granularity."""
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
        loss = self.config.loss
        keep = self.main.keep_probability()
        weights = {"heads": loss.w_sparsity_heads, "neurons": loss.w_sparsity_neurons}
        terms = {f"sparsity_{k}": (weights[k] + self.multipliers.get(k, 0.0)) * (1 - p).mean(-1).sum() for k, p in keep.items()}
        if self.circuit is not None:
            backdoor = self.config.loss_as(BackdoorLoss)
            circ = self.circuit.keep_probability()
            for kind, p in circ.items():
                per_module = torch.log(1e-6 + p).mean(-1) if backdoor.circuit_sparsity == "log" else p.mean(-1)
                terms[f"circuit_sparsity_{kind}"] = backdoor.w_circuit_sparsity * per_module.sum()
            overlap = [(keep[k] * circ[k]).sum(-1) / (keep[k].sum(-1) + 1e-8) for k in self.config.kinds]
            terms["overlap"] = backdoor.w_overlap * 100 * torch.cat(overlap).mean()
        return terms

    def negative_ce(self, ce: Tensor) -> Tensor:
        """The loss a negative path adds for its cross-entropy ``ce``: ``relu(margin - ce)`` (bounded,
        the default) or ``-ce`` (``negative_ce="unbounded"``)."""
        loss = self.config.loss_as(BackdoorLoss)
        if loss.negative_ce == "unbounded":
            return -ce
        # Bounded: only push until the circuit path's CE on the forbidden target reaches the margin.
        return torch.relu(loss.negative_ce_margin - ce)

    def task_terms(
        self, paths: Sequence[MaskPath], index: Int[Tensor, " batch"], stochastic: bool = False, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Weighted task loss of each path on the records ``index``, all paths in one forward pass.

        Under data parallelism ``index`` is the global batch and this rank runs its shard of it;
        every term still has the global batch's value (token means over the whole batch), while
        its gradient is this rank's share (:class:`~safeseek_tl.distributed.DataParallel`).
        """
        local = self.parallel.shard(index)
        # Drawn on every rank, even one with an empty shard: the noise generator stays in step.
        masks = self.row_masks(paths, [len(local)] * len(paths), stochastic, generator)
        sums = self._token_sums(paths, local, masks) if len(local) else [torch.zeros((), device=self.device)] * len(paths)
        terms: dict[str, Tensor] = {}
        for path, total in zip(paths, sums):
            # The global batch's completion tokens of this path: every rank can count them.
            # prompt-only paths: one position per row
            n_tokens = int(path.pairs.select(index).loss_mask.sum()) if path.loss == "tokens" else len(index)
            value = self.parallel.globalize(total / max(n_tokens, 1))
            if path.sign < 0 and not path.kl_to_full and path.loss == "tokens":
                value = self.negative_ce(value)
            terms[path.name] = path.weight * value
        return terms

    def row_fill(self, paths: Sequence[MaskPath], rows: int) -> dict[str, Tensor] | None:
        """The fill of one pass over ``rows`` rows of each path: a fixed fill as it is; a learned one
        per row, ``[n_layers, batch, 1, units(, d_head)]``, equal everywhere but detached on the rows
        of :data:`SWITCH_PATHS`, so that only the other paths train it."""
        learned = self.learned_fill()
        if not learned:
            return self.fill
        trains = torch.tensor([path.name not in SWITCH_PATHS for path in paths for _ in range(rows)], dtype=torch.float32, device=self.device)
        out = {}
        for kind, value in learned.items():
            frozen, delta = value.detach()[:, None, None], (value - value.detach())[:, None, None]  # delta: 0, with the gradient
            out[kind] = frozen + trains.view(1, -1, *(1,) * value.dim()) * delta
        return out

    def _token_sums(self, paths: Sequence[MaskPath], index: Int[Tensor, " batch"], masks: dict[UnitKind, Tensor]) -> list[Tensor]:
        """Each path's loss summed over its completion tokens of the records ``index`` (one forward)."""
        batch = TokenizedPairs.concat([path.pairs.select(index) for path in paths], pad_id=0)
        used = int(batch.attention_mask.sum(0).nonzero().max()) + 1
        input_ids = batch.input_ids[:, :used].to(self.device)
        attention_mask = batch.attention_mask[:, :used].to(self.device)
        labels = batch.labels[:, :used].to(self.device)
        with masked(self.model, heads=masks.get("heads"), neurons=masks.get("neurons"), fill=self.row_fill(paths, len(index))):
            logits = self.model(input_ids, attention_mask=attention_mask)
        slices = batch_slices(len(input_ids), len(index))
        full = self._full_logits(paths, slices, input_ids, attention_mask)
        last = attention_mask.sum(1) - 1  # the last prompt position of a prompt-only row
        sums = []
        for path, rows in zip(paths, slices):
            target = full.get(path.name)
            if path.full_last is not None:  # a cached last_kl target: the full model at the answer's first token
                target = path.full_last[index.to(self.device)]
            elif path.loss == "last_kl" and target is not None:  # computed in this pass, at every position
                target = target[torch.arange(len(target)), last[rows]]
            sums.append(_path_sum(path, logits[rows], target, labels[rows], last[rows]))
        return sums

    @torch.no_grad()
    def cache_full_last(self, paths: Sequence[MaskPath]) -> None:
        """Compute once what each ``last_kl`` path compares with: the unmasked model's logits at every
        row's last prompt position (``path.full_last``). The model is frozen, so the steps read them
        instead of running it again on those rows (about a fifth of the step's time on the benchmark's mid-size model);
        one row of the vocabulary per record is kept (151,936 floats for Qwen2.5)."""
        for path in paths:
            if path.loss != "last_kl" or path.full_last is not None:
                continue
            parts = []
            for rows in batch_slices(len(path.pairs), self.config.schedule.batch_size):
                attention_mask = path.pairs.attention_mask[rows].to(self.device)
                logits = self.model(path.pairs.input_ids[rows].to(self.device), attention_mask=attention_mask)
                parts.append(logits[torch.arange(len(logits), device=self.device), attention_mask.sum(1) - 1])
            path.full_last = torch.cat(parts)

    def _full_logits(
        self, paths: Sequence[MaskPath], slices: Sequence[slice], input_ids: Int[Tensor, "rows pos"], attention_mask: Int[Tensor, "rows pos"]
    ) -> dict[str, Float[Tensor, "batch pos d_vocab"]]:
        """The unmasked model's logits on the rows of the paths whose loss reads them (KL paths not
        cached by :meth:`cache_full_last`), by path name: one pass without gradient over those rows only."""
        wanted = [(path.name, rows) for path, rows in zip(paths, slices) if path.kl_to_full or (path.loss == "last_kl" and path.full_last is None)]
        if not wanted:
            return {}
        picked = torch.cat([torch.arange(rows.start, rows.stop, device=input_ids.device) for _, rows in wanted])
        with torch.no_grad():
            logits = self.model(input_ids[picked], attention_mask=attention_mask[picked])
        sizes = [rows.stop - rows.start for _, rows in wanted]
        return {name: part for (name, _), part in zip(wanted, logits.split(sizes))}


def _path_sum(
    path: MaskPath,
    logits: Float[Tensor, "batch pos d_vocab"],
    full: Float[Tensor, "batch *pos d_vocab"] | None,
    labels: Int[Tensor, "batch pos"],
    last: Int[Tensor, " batch"],
) -> Float[Tensor, ""]:
    """One path's loss summed over its completion tokens, or over its rows' last prompt positions.
    ``full``: the unmasked model's logits, at every position for a KL path of tokens, at the last
    prompt position for a ``last_kl`` path."""
    if path.loss == "tokens" and not path.kl_to_full:
        return completion_cross_entropy(logits, labels, reduction="sum")
    rows = torch.arange(len(last), device=last.device)
    if path.loss in ("tokens", "last_kl"):
        assert full is not None, "the pass computes the full model's logits for every KL path"
        return completion_kl_sum(full, logits, labels) if path.loss == "tokens" else last_position_kl(full, logits[rows, last]).sum()
    score = refusal_score(logits[rows, last], path.refusal_ids)
    # softplus(score) = -log(1 - P_refusal): zero once refusing is unlikely, unlike the bare score
    return F.softplus(score if path.loss == "comply" else -score).sum().float()


def completion_kl_sum(
    full: Float[Tensor, "batch pos d_vocab"], masked_logits: Float[Tensor, "batch pos d_vocab"], labels: Int[Tensor, "batch pos"]
) -> Float[Tensor, ""]:
    """KL(full || masked) of next-token distributions, summed over the completion positions."""
    valid = labels[:, 1:] != IGNORE_INDEX
    p = torch.log_softmax(full[:, :-1].float(), -1)
    q = torch.log_softmax(masked_logits[:, :-1].float(), -1)
    kl = (p.exp() * (p - q)).sum(-1)
    return (kl * valid).sum()
