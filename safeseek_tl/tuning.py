"""Safety Circuit Tuning (SafeSeek step 4): fine-tune only a circuit, or everything except it.

SafeSeek's figure and abstract describe it (docs/choices.md); the official repository has no
code for it. Three modes (``TUNE_MODES``):

- ``"only"``: only the circuit's parameters train, on safety data (refusals on harmful prompts,
  clean answers on triggered prompts); every other weight stays bit-identical.
- ``"protect"``: every parameter trains except the circuit's (a downstream fine-tune, e.g. on
  benign helpfulness data, that must not touch the alignment circuit); the circuit's weights stay
  bit-identical.
- ``"full"``: every parameter trains (the baseline the other two are compared with).

**A unit's parameters**, in the Hugging Face weights the bridge runs on (``nn.Linear`` weights are
``[out, in]``):

- head ``(l, h)``: rows ``h*d_head:(h+1)*d_head`` of ``q_proj`` (and of its bias, if any), the same
  columns of ``o_proj``, and the rows of ``k_proj``/``v_proj`` of its key/value head (see below);
- neuron ``(l, i)``: row ``i`` of ``gate_proj`` and ``up_proj`` (and of their biases), column ``i``
  of ``down_proj``.

Output biases (``o_proj``, ``down_proj``) are shared by every unit of a layer and belong to none.
Embeddings, norms and the unembedding belong to no unit either: ``"only"`` freezes them,
``"protect"`` trains them.

**Grouped-query attention.** One key/value head serves ``n_heads / n_kv_heads`` query heads (query
head ``h`` reads key/value head ``h // group``, as Hugging Face's ``repeat_kv`` lays them out). A
shared weight is given to the circuit only as far as both modes keep their promise:

- ``"only"`` tunes a key/value head's rows only when *every* query head of its group is in the
  circuit, so tuning never changes a weight that a head outside the circuit reads;
- ``"protect"`` freezes a key/value head's rows when *any* query head of its group is in the
  circuit, so no weight that a protected head reads ever changes.

A key/value head of a partly selected group is therefore frozen in both modes.

**Bit-identical frozen entries.** Hooks on the parameters zero the gradients of frozen entries
before they reach the optimizer, and the optimizer is AdamW *without weight decay*: an entry whose
gradient is always zero keeps zero Adam moments, so its update is exactly zero (weight decay would
shrink it). Training runs in eval mode (no dropout), so a run is deterministic given its seed.

**Interrupts.** With a checkpoint folder, :func:`tune` saves the trainable slices, AdamW's state
of the same slices (a frozen entry's moments are exactly zero) and the batch order every few
steps (:mod:`safeseek_tl.checkpoint`); a resumed run reaches the uninterrupted run's weights bit
for bit.

**In place.** :func:`tune` changes the model it is given: the bridge (``loaded.model``) runs on the
very tensors of ``loaded.model.original_model``. :func:`~safeseek_tl.models.load_model` gives fresh
weights on every call, so load the model again to compare with the base, or save the tuned slices
as a ``safeseek_tl.delta.ParameterDelta`` (``result.save(out)``) and apply them to a fresh
copy with :func:`apply_delta`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Bool, Int
from torch import Tensor
from tqdm.auto import tqdm

from safeseek_tl._io import write_json
from safeseek_tl.checkpoint import CHECKPOINT_FILE, Slices, read_checkpoint, write_checkpoint
from safeseek_tl.data import (
    AlignmentRecord,
    BackdoorRecord,
    BenignRecord,
    Record,
    TokenizedPairs,
    batch_slices,
    tokenize_pairs,
    trim_padding,
)
from safeseek_tl.delta import ParameterDelta, SliceDelta
from safeseek_tl.errors import InputError
from safeseek_tl.metrics import completion_cross_entropy
from safeseek_tl.seek import NonFiniteLossError
from safeseek_tl.units import Circuit, ModelShape

TuneMode = Literal["only", "protect", "full"]
TUNE_MODES: tuple[TuneMode, ...] = ("only", "protect", "full")

# The bridge wraps every Hugging Face module and adds this segment to the parameter names.
_WRAPPER_SEGMENT = "._original_component"
# Projection -> (submodule, axis of a unit's slice): 0 = output rows, 1 = input columns.
_PROJECTIONS: dict[str, tuple[str, int]] = {
    "q_proj": ("self_attn", 0),
    "k_proj": ("self_attn", 0),
    "v_proj": ("self_attn", 0),
    "o_proj": ("self_attn", 1),
    "gate_proj": ("mlp", 0),
    "up_proj": ("mlp", 0),
    "down_proj": ("mlp", 1),
}
_OPTIONAL_PROJECTIONS = ("gate_proj",)  # MLPs without a gate have only up_proj and down_proj


# ---------------------------------------------------------------- which entries train
def hf_parameters(loaded: Any) -> dict[str, torch.nn.Parameter]:
    """The Hugging Face model's parameters under their usual names (``model.layers.0.self_attn.q_proj.weight``).

    These are the tensors the bridge runs on; the names are those of the model's ``state_dict``.
    """
    model = loaded.model.original_model
    return {name.replace(_WRAPPER_SEGMENT, ""): param for name, param in model.named_parameters()}


def _attention_geometry(loaded: Any) -> tuple[int, int]:
    """``(d_head, group)``: the head width and how many query heads share one key/value head."""
    cfg = loaded.model.cfg
    n_kv = int(cfg.n_key_value_heads or cfg.n_heads)
    if cfg.n_heads % n_kv:
        raise ValueError(f"{cfg.n_heads} query heads cannot be split into groups over {n_kv} key/value heads")
    return int(cfg.d_head), int(cfg.n_heads) // n_kv


def _circuit_entries(loaded: Any, circuit: Circuit, shared_kv: Literal["all", "any"]) -> dict[str, Bool[Tensor, " ..."]]:
    """Boolean masks of the parameter entries that belong to ``circuit``'s units.

    ``shared_kv`` says when a key/value head shared by a group of query heads counts as the
    circuit's: when ``"all"`` the query heads of its group are in the circuit, or ``"any"``.
    """
    params = hf_parameters(loaded)
    d_head, group = _attention_geometry(loaded)
    owned: dict[str, Tensor] = {}

    def mark(layer: int, proj: str, index: slice | int) -> None:
        module, axis = _PROJECTIONS[proj]
        prefix = f"model.layers.{layer}.{module}.{proj}"
        if f"{prefix}.weight" not in params:
            if proj in _OPTIONAL_PROJECTIONS:
                return
            raise InputError(
                f"safety circuit tuning needs Llama-style weights (model.layers.{{l}}.self_attn.q_proj/k_proj/v_proj/o_proj, "
                f"model.layers.{{l}}.mlp.up_proj/down_proj); this model has no {prefix}.weight"
            )
        names = [f"{prefix}.weight"] + ([f"{prefix}.bias"] if axis == 0 and f"{prefix}.bias" in params else [])
        for name in names:
            mask = owned.setdefault(name, torch.zeros(params[name].shape, dtype=torch.bool))
            if axis == 0:
                mask[index] = True
            else:
                mask[:, index] = True

    for layer, head in circuit.head_list:
        rows = slice(head * d_head, (head + 1) * d_head)
        mark(layer, "q_proj", rows)
        mark(layer, "o_proj", rows)
    for layer, selected in enumerate(circuit.heads):
        for kv_head, members in enumerate(selected.view(-1, group)):
            if members.all() if shared_kv == "all" else members.any():
                rows = slice(kv_head * d_head, (kv_head + 1) * d_head)
                mark(layer, "k_proj", rows)
                mark(layer, "v_proj", rows)
    for layer, index in circuit.neuron_list:
        for proj in ("gate_proj", "up_proj", "down_proj"):
            mark(layer, proj, index)
    return owned


def parameter_masks(loaded: Any, circuit: Circuit | None, mode: TuneMode = "only") -> dict[str, Bool[Tensor, " ..."]]:
    """Which entries of each Hugging Face parameter may change when tuning in ``mode``.

    Keys are :func:`hf_parameters` names; a parameter that is not a key is frozen entirely.
    ``"only"``: the entries of the circuit's units; ``"protect"``: every entry except those;
    ``"full"``: everything (``circuit`` may be ``None``). See the module docstring for which
    entries a unit owns and for the grouped-query attention rule.
    """
    if mode not in TUNE_MODES:
        raise InputError(f"mode must be one of {TUNE_MODES}, got {mode!r}")
    params = hf_parameters(loaded)
    if mode == "full":
        return {name: torch.ones(param.shape, dtype=torch.bool) for name, param in params.items()}
    if circuit is None:
        raise InputError(f"mode {mode!r} needs a circuit (the units to tune or to protect)")
    loaded.shape.check_compatible(circuit.shape, "the circuit")
    if mode == "only":
        return _circuit_entries(loaded, circuit, shared_kv="all")
    frozen = _circuit_entries(loaded, circuit, shared_kv="any")
    return {name: ~frozen[name] if name in frozen else torch.ones(param.shape, dtype=torch.bool) for name, param in params.items()}


# ---------------------------------------------------------------- deltas
def _slice_of(mask: Bool[Tensor, " ..."]) -> tuple[int, Int[Tensor, " k"]]:
    """``(dim, index)`` such that ``mask`` selects exactly the rows (dim 0) or columns (dim 1) ``index``."""
    rows = mask.flatten(1).any(1) if mask.dim() > 1 else mask
    if torch.equal(mask, rows.view(-1, *[1] * (mask.dim() - 1)).expand_as(mask)):
        return 0, rows.nonzero().flatten()
    columns = mask.any(0)
    if mask.dim() == 2 and torch.equal(mask, columns.expand_as(mask)):
        return 1, columns.nonzero().flatten()
    raise ValueError("a tuning mask must select whole rows or whole columns of a parameter")


def delta_of(loaded: Any, masks: Mapping[str, Bool[Tensor, " ..."]], **metadata: Any) -> ParameterDelta:
    """The current values of the entries ``masks`` select, as a ``safeseek_tl.delta.ParameterDelta``.

    Parameters carry their Hugging Face names (:func:`hf_parameters`), so the delta also applies
    to a plain Hugging Face model (``delta.apply_(hf_model)``); the model's shape goes in the
    metadata (``"model"``) for :func:`apply_delta` to check.
    """
    params = hf_parameters(loaded)
    slices = {}
    for name, mask in masks.items():
        dim, index = _slice_of(mask)
        values = params[name].detach().index_select(dim, index.to(params[name].device))
        slices[name] = SliceDelta(dim, index, values.cpu().clone(), tuple(params[name].shape))
    return ParameterDelta(slices, {"model": loaded.shape.to_dict(), **metadata})


def apply_delta(loaded: Any, delta: ParameterDelta | str | Path) -> ParameterDelta:
    """Write a delta (or a delta file saved by :meth:`~safeseek_tl.tuning.TuneResult.save`) into ``loaded``'s weights, in place.

    The bridge sees the new weights at once. Raises :class:`~safeseek_tl.errors.ShapeMismatchError`
    when the delta was made for a model of another shape (checked before anything is written) or
    names a parameter this model lacks or has in another shape.
    """
    if not isinstance(delta, ParameterDelta):
        delta = ParameterDelta.load(delta)
    if "model" in delta.metadata:
        made_for = ModelShape.from_dict(delta.metadata["model"], source="the parameter delta")
        loaded.shape.check_compatible(made_for, "the parameter delta")
        if made_for.model_name and loaded.name and made_for.model_name != loaded.name:
            warnings.warn(f"the delta was tuned on {made_for.model_name!r} and is applied to {loaded.name!r}", stacklevel=2)
    # The bridge's wrappers add a segment to the parameter names: address the wrapped names.
    model = loaded.model.original_model
    wrapped = {name.replace(_WRAPPER_SEGMENT, ""): name for name, _ in model.named_parameters()}
    ParameterDelta({wrapped.get(name, name): part for name, part in delta.slices.items()}, delta.metadata).apply_(model)
    return delta


# ---------------------------------------------------------------- training
@dataclass
class TuneConfig:
    """Settings of a tuning run: AdamW without weight decay, constant learning rate, gradient clipping."""

    mode: TuneMode = "only"
    steps: int = 100
    lr: float = 1e-3
    batch_size: int = 16
    max_length: int = 128
    max_grad_norm: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in TUNE_MODES:
            raise InputError(f"mode must be one of {TUNE_MODES}, got {self.mode!r}")
        for name in ("steps", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.max_grad_norm <= 0:
            raise InputError(f"lr and max_grad_norm must be positive, got {self.lr} and {self.max_grad_norm}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def training_pairs(records: Sequence[Record]) -> list[tuple[str, str]]:
    """The (prompt, completion) pairs that teach each record's wanted behaviour.

    Backdoor records give the clean answer for both the clean and the triggered prompt (the
    backdoor's removal, with clean behaviour kept); alignment records give the refusal; benign
    records the response. Kinds may be mixed.
    """
    pairs: list[tuple[str, str]] = []
    for record in records:
        if isinstance(record, BackdoorRecord):
            pairs += [(record.input, record.output), (record.backdoor_input, record.output)]
        elif isinstance(record, AlignmentRecord):
            pairs.append((record.prompt, record.refuse))
        elif isinstance(record, BenignRecord):
            pairs.append((record.prompt, record.response))
        else:
            raise InputError(f"cannot tune on a {type(record).__name__}; use backdoor, alignment or benign records")
    return pairs


@dataclass
class TuneResult:
    """What a tuning run produces: the tuned values of the trainable slices (``delta``) and the run's record."""

    config: TuneConfig
    delta: ParameterDelta
    trainable_params: int
    total_params: int
    losses: list[float]
    wall_s: float

    def summary(self) -> dict[str, Any]:
        """The run as JSON-ready values (what ``tune.json`` holds)."""
        return {
            "model": self.delta.metadata["model"],
            "config": self.config.to_dict(),
            "circuit": self.delta.metadata.get("circuit"),
            "trainable_params": self.trainable_params,
            "total_params": self.total_params,
            "trainable_fraction": self.trainable_params / self.total_params,
            "wall_s": self.wall_s,
            "loss_first": self.losses[0],
            "loss_last": self.losses[-1],
            "losses": self.losses,
        }

    def save(self, out_dir: str | Path) -> None:
        """Write ``delta.safetensors`` (apply it with :func:`apply_delta`) and ``tune.json``."""
        out = Path(out_dir)
        self.delta.save(out / "delta.safetensors")
        write_json(out / "tune.json", self.summary())


class _BatchOrder:
    """Batches of pair indices: shuffled passes over the data, a new order drawn as each pass starts.

    A checkpoint saves ``order`` (the current pass's), ``position`` (its batches already given) and
    the generator's state, so that a resumed run draws the very batches an uninterrupted one would.
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator) -> None:
        self.n, self.parts, self.generator = n, batch_slices(n, batch_size), generator
        self.order: Int[Tensor, " n"] = torch.arange(n)
        self.position = len(self.parts)  # the first batch starts a pass

    def next(self) -> Int[Tensor, " batch"]:
        if self.position == len(self.parts):
            self.order, self.position = torch.randperm(self.n, generator=self.generator), 0
        self.position += 1
        return self.order[self.parts[self.position - 1]]


def _run_settings(loaded: Any, config: TuneConfig, units: dict[str, list[list[int]]] | None, pairs: TokenizedPairs) -> dict[str, Any]:
    """What a checkpoint must have been made with to be resumed: settings, circuit, model and data."""
    digest = hashlib.sha256(pairs.input_ids.numpy().tobytes() + pairs.labels.numpy().tobytes()).hexdigest()
    return {**config.to_dict(), "circuit": units, "model": loaded.name, "data": f"{len(pairs)} pairs, sha256 {digest[:16]}"}


@dataclass
class _Checkpoint:
    """A tuning run's checkpoint: the trainable slices, AdamW's state of the same slices, the batch order.

    The moments of a frozen entry stay exactly zero (its gradient is always zero), so the slices
    hold everything AdamW needs.
    """

    path: Path
    params: dict[str, torch.nn.Parameter]  # the tuned parameters, by Hugging Face name
    slices: dict[str, tuple[int, Int[Tensor, " k"]]]  # each one's trainable rows (dim 0) or columns (dim 1)
    optimizer: torch.optim.Optimizer
    batches: _BatchOrder
    settings: dict[str, Any]
    shape: ModelShape

    def _optimizer_slices(self) -> Slices:
        return {i: self.slices[name] for i, name in enumerate(self.params)}

    def save(self, losses: list[float], wall_s: float) -> None:
        tensors = {"order": self.batches.order}
        for name, param in self.params.items():
            dim, index = self.slices[name]
            tensors[f"param.{name}"] = param.detach().index_select(dim, index.to(param.device)).cpu()
        header = {"state": json.dumps({"position": self.batches.position, "losses": losses, "wall_s": wall_s})}
        write_checkpoint(self.path, tensors, header, settings=self.settings, shape=self.shape, optimizer=self.optimizer, generator=self.batches.generator, slices=self._optimizer_slices())

    def load(self) -> tuple[list[float], float]:
        """Restore the run as saved; returns its losses so far and its wall time."""
        tensors, header = read_checkpoint(self.path, settings=self.settings, shape=self.shape, optimizer=self.optimizer, generator=self.batches.generator, slices=self._optimizer_slices())
        with torch.no_grad():
            for name, param in self.params.items():
                dim, index = self.slices[name]
                param.index_copy_(dim, index.to(param.device), tensors[f"param.{name}"].to(param.device, param.dtype))
        state = json.loads(header["state"])
        self.batches.order, self.batches.position = tensors["order"], state["position"]
        return state["losses"], state["wall_s"]


def tune(
    loaded: Any,
    records: Sequence[Record],
    circuit: Circuit | None = None,
    config: TuneConfig | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    checkpoint_every: int = 10,
    progress: bool = True,
) -> TuneResult:
    """Fine-tune ``loaded`` in place on ``records``'s completions, in ``config.mode``.

    The loss is the completion cross-entropy of :func:`training_pairs` (prompt tokens do not
    count). ``circuit`` is the set of units to tune (``"only"``) or to freeze (``"protect"``);
    ``"full"`` ignores it. Returns the delta of the trainable slices and the run's record. The
    model is left tuned, frozen (no gradients) and in eval mode.

    With ``checkpoint_dir`` the run is saved every ``checkpoint_every`` steps (an interrupt leaves
    the last checkpoint whole), and ``resume=True`` continues from it, on a freshly loaded model,
    to the result of an uninterrupted run. A checkpoint made with other settings, another circuit,
    model or training data is refused with a ``ValueError`` naming the file and what differs.
    """
    config = config or TuneConfig()
    if checkpoint_every < 1:
        raise InputError(f"checkpoint_every must be at least 1, got {checkpoint_every}")
    masks = parameter_masks(loaded, circuit, config.mode)
    trainable = sum(int(mask.sum()) for mask in masks.values())
    if trainable == 0:
        raise InputError(f"nothing to tune: in mode {config.mode!r} the circuit ({circuit!r}) owns no parameter")
    pairs = tokenize_pairs(loaded.chat, training_pairs(records), config.max_length, "tuning data")
    units = None if circuit is None or config.mode == "full" else {"heads": circuit.head_list, "neurons": circuit.neuron_list}
    params = hf_parameters(loaded)
    tuned = {name: params[name] for name in masks}
    handles = []
    for name, mask in masks.items():
        param = params[name]
        param.requires_grad_(True)
        if not mask.all():
            keep = mask.to(param.device)
            # masked_fill rather than a product: a NaN gradient must not reach a frozen entry either.
            handles.append(param.register_hook(lambda grad, keep=keep: grad.masked_fill(~keep, 0.0)))
    # No weight decay: it would move frozen entries, whose gradient is always zero.
    optimizer = torch.optim.AdamW(tuned.values(), lr=config.lr, weight_decay=0.0)
    batches = _BatchOrder(len(pairs), config.batch_size, torch.Generator().manual_seed(config.seed))
    device = loaded.device
    losses: list[float] = []
    wall_before = 0.0  # of the run's earlier, interrupted parts
    checkpoint = None
    if checkpoint_dir is not None:
        slices = {name: _slice_of(mask) for name, mask in masks.items()}
        checkpoint = _Checkpoint(Path(checkpoint_dir) / CHECKPOINT_FILE, tuned, slices, optimizer, batches, _run_settings(loaded, config, units, pairs), loaded.shape)
    start = time.perf_counter()
    bar = tqdm(total=config.steps, desc=f"tune ({config.mode})", disable=not progress)
    try:
        if resume and checkpoint is not None and checkpoint.path.exists():
            losses, wall_before = checkpoint.load()
            bar.update(len(losses))
        while len(losses) < config.steps:
            batch = pairs.select(batches.next())
            input_ids, attention_mask = trim_padding(batch.input_ids, batch.attention_mask)
            labels = batch.labels[:, : input_ids.shape[1]]
            logits = loaded.model(input_ids.to(device), attention_mask=attention_mask.to(device))
            loss = completion_cross_entropy(logits, labels.to(device))
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"the tuning loss became {loss.item()} at step {len(losses)}; the model is left as tuned so far")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(tuned.values(), config.max_grad_norm)
            optimizer.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix({"loss": f"{losses[-1]:.3g}"}, refresh=False)
            if checkpoint is not None and len(losses) % checkpoint_every == 0:
                checkpoint.save(losses, wall_before + time.perf_counter() - start)
    finally:
        bar.close()
        for handle in handles:
            handle.remove()
        for param in tuned.values():
            param.requires_grad_(False)
            param.grad = None
    wall = wall_before + time.perf_counter() - start
    delta = delta_of(loaded, masks, mode=config.mode, circuit=units, config=config.to_dict())
    return TuneResult(config, delta, trainable, sum(p.numel() for p in params.values()), losses, wall)
