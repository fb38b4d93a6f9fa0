"""Safety Circuit Tuning (SafeSeek step 4): fine-tune only a circuit, or everything except it.

SafeSeek's figure and abstract describe it (docs/choices.md); the official repository has no
code for it. Three modes (``TUNE_MODES``):

- ``"only"``: only the circuit's parameters train, on safety data (refusals on harmful prompts,
  clean answers on triggered prompts); every other weight stays bit-identical.
- ``"protect"``: every parameter trains except the circuit's (a downstream fine-tune, e.g. on
  benign helpfulness data, that must not touch the alignment circuit); the circuit's weights stay
  bit-identical.
- ``"full"``: every parameter trains (the baseline the other two are compared with).

Which entries of the Hugging Face weights a unit owns, also under grouped-query attention, is
:mod:`safeseek_tl.parameters`' business (:func:`~safeseek_tl.parameters.parameter_masks`); this
module re-exports its names.

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
copy with :func:`~safeseek_tl.parameters.apply_delta`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool, Int
from torch import Tensor
from tqdm.auto import tqdm

from safeseek_tl import runs
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
from safeseek_tl.delta import ParameterDelta
from safeseek_tl.errors import InputError, NonFiniteLossError
from safeseek_tl.metrics import completion_cross_entropy
from safeseek_tl.models import LoadedModel
from safeseek_tl.parameters import TUNE_MODES, TuneMode, apply_delta, delta_of, hf_parameters, mask_slice, parameter_masks
from safeseek_tl.units import Circuit, ModelShape


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
        self.delta.save(out / runs.DELTA)
        write_json(out / runs.TUNE, self.summary())


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


def _run_settings(loaded: LoadedModel, config: TuneConfig, units: dict[str, list[list[int]]] | None, pairs: TokenizedPairs) -> dict[str, Any]:
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
    loaded: LoadedModel,
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
    with _train_only(tuned, masks):
        # No weight decay: it would move frozen entries, whose gradient is always zero.
        optimizer = torch.optim.AdamW(tuned.values(), lr=config.lr, weight_decay=0.0)
        batches = _BatchOrder(len(pairs), config.batch_size, torch.Generator().manual_seed(config.seed))
        checkpoint = None
        if checkpoint_dir is not None:
            slices = {name: mask_slice(mask) for name, mask in masks.items()}
            settings = _run_settings(loaded, config, units, pairs)
            checkpoint = _Checkpoint(Path(checkpoint_dir) / CHECKPOINT_FILE, tuned, slices, optimizer, batches, settings, loaded.shape)
        losses, wall = _train(loaded, pairs, batches, optimizer, config, checkpoint, resume, checkpoint_every, progress)
    delta = delta_of(loaded, masks, mode=config.mode, circuit=units, config=config.to_dict())
    return TuneResult(config, delta, trainable, sum(p.numel() for p in params.values()), losses, wall)


@contextmanager
def _train_only(tuned: dict[str, torch.nn.Parameter], masks: Mapping[str, Bool[Tensor, " ..."]]) -> Iterator[None]:
    """Let the ``tuned`` parameters take gradients, with those of the entries ``masks`` leaves out zeroed.

    On exit (also on an error or an interrupt) the hooks are removed and the parameters are frozen
    again, without gradients.
    """
    handles = []
    try:
        for name, param in tuned.items():
            param.requires_grad_(True)
            if not masks[name].all():
                keep = masks[name].to(param.device)
                # masked_fill rather than a product: a NaN gradient must not reach a frozen entry either.
                handles.append(param.register_hook(lambda grad, keep=keep: grad.masked_fill(~keep, 0.0)))
        yield
    finally:
        for handle in handles:
            handle.remove()
        for param in tuned.values():
            param.requires_grad_(False)
            param.grad = None


def _train(
    loaded: LoadedModel,
    pairs: TokenizedPairs,
    batches: _BatchOrder,
    optimizer: torch.optim.Optimizer,
    config: TuneConfig,
    checkpoint: _Checkpoint | None,
    resume: bool,
    checkpoint_every: int,
    progress: bool,
) -> tuple[list[float], float]:
    """The run's steps (with ``resume``, those after the checkpoint's, if it exists), checkpointed every ``checkpoint_every``.

    Returns the losses of every step and the run's wall time, its interrupted parts included.
    """
    losses: list[float] = []
    wall_before = 0.0  # of the run's earlier, interrupted parts
    start = time.perf_counter()
    with tqdm(total=config.steps, desc=f"tune ({config.mode})", disable=not progress) as bar:
        if resume and checkpoint is not None and checkpoint.path.exists():
            losses, wall_before = checkpoint.load()
            bar.update(len(losses))
        while len(losses) < config.steps:
            losses.append(_step(loaded, pairs.select(batches.next()), optimizer, config.max_grad_norm, len(losses)))
            bar.update(1)
            bar.set_postfix({"loss": f"{losses[-1]:.3g}"}, refresh=False)
            if checkpoint is not None and len(losses) % checkpoint_every == 0:
                checkpoint.save(losses, wall_before + time.perf_counter() - start)
    return losses, wall_before + time.perf_counter() - start


def _step(loaded: LoadedModel, batch: TokenizedPairs, optimizer: torch.optim.Optimizer, max_grad_norm: float, step: int) -> float:
    """One AdamW step on ``batch``'s completion loss, gradients clipped to ``max_grad_norm``; returns the loss."""
    device = loaded.device
    input_ids, attention_mask = trim_padding(batch.input_ids, batch.attention_mask)
    labels = batch.labels[:, : input_ids.shape[1]]
    logits = loaded.model(input_ids.to(device), attention_mask=attention_mask.to(device))
    loss = completion_cross_entropy(logits, labels.to(device))
    if not torch.isfinite(loss):
        raise NonFiniteLossError(f"the tuning loss became {loss.item()} at step {step}; the model is left as tuned so far")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(optimizer.param_groups[0]["params"], max_grad_norm)  # the tuned parameters, one group
    optimizer.step()
    return loss.item()


# the parameter names stay importable from here, where they were first defined
__all__ = [
    "TUNE_MODES",
    "TuneConfig",
    "TuneMode",
    "TuneResult",
    "apply_delta",
    "delta_of",
    "hf_parameters",
    "parameter_masks",
    "training_pairs",
    "tune",
]
