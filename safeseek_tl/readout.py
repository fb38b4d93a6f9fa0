"""Read a circuit's units during a model's prompt passes: the features a safeguard or monitor sees.

:class:`CircuitReader` holds read-only hooks on the layers that hold the units of one or more
circuits and, after each *prompt pass* (a forward pass without cached keys), hands a
:class:`PromptReadout` of that batch to a callback. The safeguard
(:mod:`safeseek_tl.safeguard`) is trained on these readouts and the run-time
:class:`~safeseek_tl.monitor.Monitor` reads them while the model generates, so that the features a
safeguard was trained on and the features it sees at run time come from the same code.

A readout keeps, per read layer, the whole layer at each prompt's last token and each unit's mean
activation magnitude over the prompt. A circuit's *features*
(:meth:`~safeseek_tl.readout.PromptReadout.features`) are its units at the last prompt token: a
neuron contributes its ``hook_post`` value, a head its whole ``hook_z`` vector (``d_head``
values), not only its norm: a head writes ``z @ W_O``, so what it adds to the residual stream
depends on the direction of ``z`` (which token it attended to), which the norm throws away.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from tqdm.auto import tqdm

from safeseek_tl.compat import add_point_hook, causal_lm, hook_points, kv_cache_from
from safeseek_tl.data import batch_slices, tokenize_prompts, trim_padding
from safeseek_tl.errors import InputError
from safeseek_tl.hooks import UNIT_KINDS, UnitKind, unit_hook
from safeseek_tl.models import LoadedModel
from safeseek_tl.units import Circuit

LayerKey = tuple[UnitKind, int]


def circuit_layers(circuit: Circuit) -> list[LayerKey]:
    """The (kind, layer) hook points that hold units of ``circuit``, heads first, by layer."""
    return [(kind, layer) for kind in UNIT_KINDS for layer in range(circuit.shape.n_layers) if circuit.get(kind)[layer].any()]


def unit_labels(circuit: Circuit) -> list[str]:
    """Names of the circuit's units (``L1H3``, ``L2N99``) in the order of :meth:`~safeseek_tl.readout.PromptReadout.magnitudes`."""
    return [f"L{layer}H{index}" for layer, index in circuit.head_list] + [f"L{layer}N{index}" for layer, index in circuit.neuron_list]


def feature_count(circuit: Circuit, d_head: int) -> int:
    """Safeguard features of ``circuit``: one per neuron, ``d_head`` per head."""
    return circuit.n_neurons + circuit.n_heads * d_head


@dataclass
class PromptReadout:
    """What one or more prompt passes showed at the read layers, per prompt.

    ``last[(kind, layer)]`` is the whole layer at each prompt's last token: [batch, units] for
    neurons, [batch, n_heads, d_head] for heads. ``magnitude[(kind, layer)]`` is [batch, units], the
    mean over the prompt's tokens (padding excluded) of ``|hook_post|`` (neurons) or ``||hook_z||``
    (heads). Float32, on the CPU.
    """

    last: dict[LayerKey, Tensor]
    magnitude: dict[LayerKey, Tensor]

    def __len__(self) -> int:
        return next(iter(self.last.values())).shape[0]

    def _layer(self, table: dict[LayerKey, Tensor], key: LayerKey) -> Tensor:
        if key not in table:
            raise ValueError(f"{key[0]} of layer {key[1]} were not read; read with a CircuitReader that watches this circuit")
        return table[key]

    def features(self, circuit: Circuit) -> Float[Tensor, "batch n_features"]:
        """Safeguard features: the circuit's neurons, and its heads' ``d_head`` vectors, at the last prompt token."""
        parts = [self._layer(self.last, key)[:, circuit.get(key[0])[key[1]]].flatten(1) for key in circuit_layers(circuit)]
        return torch.cat(parts, dim=1)

    def magnitudes(self, circuit: Circuit) -> Float[Tensor, "batch n_units"]:
        """Mean activation magnitude over the prompt of each unit of ``circuit``, in :func:`unit_labels` order."""
        return torch.cat([self._layer(self.magnitude, key)[:, circuit.get(key[0])[key[1]]] for key in circuit_layers(circuit)], dim=1)

    @staticmethod
    def concat(parts: Sequence[PromptReadout]) -> PromptReadout:
        """Stack the readouts of several batches in order."""
        if not parts:
            raise ValueError("no prompt passes were read")
        keys = parts[0].last.keys()
        return PromptReadout(
            last={key: torch.cat([part.last[key] for part in parts]) for key in keys},
            magnitude={key: torch.cat([part.magnitude[key] for part in parts]) for key in keys},
        )


class CircuitReader:
    """Read-only hooks that read the layers of one or more circuits during every *prompt pass*.

    A prompt pass is a forward pass without cached keys: a plain ``model(tokens)`` call, or the
    first step of Hugging Face ``generate``. After each prompt pass ``on_readout`` receives a
    :class:`PromptReadout` of that batch. Padding is taken from the ``attention_mask`` the wrapped
    model receives; without one every position counts.

    Only two hooks stay on while the reader is active, on the wrapped Hugging Face model: one
    before and one after each forward pass. The layer hooks are added to their hook points at the
    start of each prompt pass and removed at its end. Hence decoding steps cost almost nothing, and
    since TransformerLens runs a hook point's hooks in the order they were added, the reader's run
    after every hook already there when the pass starts (an ablation entered inside the reader's
    block included): it reads the activations the model actually uses.

    >>> with CircuitReader(loaded, [circuit], on_readout=batches.append):  # doctest: +SKIP
    ...     generate(loaded.model, loaded.chat, prompts)
    """

    def __init__(self, loaded: LoadedModel, circuits: Sequence[Circuit], on_readout: Callable[[PromptReadout], None]) -> None:
        for circuit in circuits:
            loaded.shape.check_compatible(circuit.shape, "the circuit")
        self.loaded = loaded
        layers = sorted({key for circuit in circuits for key in circuit_layers(circuit)}, key=lambda key: (UNIT_KINDS.index(key[0]), key[1]))
        if not layers:
            raise InputError("the circuit holds no units: there is nothing to read")
        # hook points resolved once: model.hooks(...) rebuilds the bridge's hook dictionary on every
        # call (milliseconds), too slow to do per prompt pass
        points = hook_points(loaded.model, [unit_hook(kind, layer) for kind, layer in layers])
        self._points = [(point, self._recorder(kind, layer)) for point, (kind, layer) in zip(points, layers)]
        self.on_readout = on_readout
        self._valid: Bool[Tensor, "batch pos"] | None = None
        self._last: dict[LayerKey, Tensor] = {}
        self._magnitude: dict[LayerKey, Tensor] = {}
        self._removers: list[Callable[[], None]] = []
        self._stack: ExitStack | None = None

    def __enter__(self) -> CircuitReader:
        if self._stack is not None:
            raise RuntimeError("this reader is already active")
        original = causal_lm(self.loaded.model)
        with ExitStack() as stack:
            stack.callback(original.register_forward_pre_hook(self._start_pass, with_kwargs=True).remove)
            stack.callback(original.register_forward_hook(self._end_pass).remove)
            stack.callback(self._remove_layer_hooks)  # a pass that raised never reached _end_pass
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def _remove_layer_hooks(self) -> None:
        removers, self._removers, self._valid = self._removers, [], None
        for remove in removers:
            remove()

    def _start_pass(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._remove_layer_hooks()
        self._last, self._magnitude = {}, {}
        cache = kv_cache_from(kwargs)
        if cache.get_seq_length() > 0 if hasattr(cache, "get_seq_length") else bool(cache):
            return  # a decoding step: its prompt was read in the prompt pass
        inputs = args[0] if args else kwargs.get("input_ids", kwargs.get("inputs_embeds"))
        mask = kwargs.get("attention_mask")
        if isinstance(mask, Tensor) and mask.dim() == 2:
            self._valid = mask.bool()
        elif isinstance(inputs, Tensor):
            self._valid = torch.ones(inputs.shape[:2], dtype=torch.bool, device=inputs.device)
        else:
            return
        self._removers = [add_point_hook(point, hook) for point, hook in self._points]

    def _recorder(self, kind: UnitKind, layer: int) -> Callable[..., None]:
        def hook(act: Tensor, hook: Any) -> None:
            # act: [batch, pos, units] (neurons) or [batch, pos, n_heads, d_head] (heads)
            if self._valid is None:  # not reached: these hooks are installed only while a pass's mask is set
                return
            valid = self._valid[:, -act.shape[1] :].to(act.device)
            # the last valid position, so that left and right padding both work
            last_index = valid.shape[1] - 1 - valid.flip(1).int().argmax(1)
            rows = torch.arange(act.shape[0], device=act.device)
            self._last[(kind, layer)] = act[rows, last_index].detach().float().cpu()
            per_token = act.detach().float().norm(dim=-1) if kind == "heads" else act.detach().float().abs()
            weights = valid.float().unsqueeze(-1)
            mean = (per_token * weights).sum(1) / weights.sum(1).clamp(min=1.0)
            self._magnitude[(kind, layer)] = mean.cpu()
            # read-only: returning nothing leaves the activation as it is

        return hook

    def _end_pass(self, module: Any, args: Any, output: Any) -> None:
        if not self._removers:
            return
        self._remove_layer_hooks()
        readout = PromptReadout(self._last, self._magnitude)
        self._last, self._magnitude = {}, {}
        self.on_readout(readout)


@torch.no_grad()
def read_prompts(
    loaded: LoadedModel, circuits: Sequence[Circuit], prompts: Sequence[str], batch_size: int = 32, progress: bool = True
) -> PromptReadout:
    """Run the chat-templated ``prompts`` once (no generation) and read the circuits' layers.

    Any hooks active on the model (an ablation, say) apply, as they would at run time.
    """
    tokens = tokenize_prompts(loaded.chat, prompts)
    readouts: list[PromptReadout] = []
    with CircuitReader(loaded, circuits, on_readout=readouts.append):
        for part in tqdm(batch_slices(len(prompts), batch_size), desc="reading the circuit", disable=not progress, leave=False):
            ids, mask = trim_padding(tokens.input_ids[part], tokens.attention_mask[part], right=False)
            loaded.model(ids.to(loaded.device), attention_mask=mask.to(loaded.device))
    return PromptReadout.concat(readouts)


def circuit_features(
    loaded: LoadedModel, circuit: Circuit, prompts: Sequence[str], batch_size: int = 32, progress: bool = True
) -> Float[Tensor, "n_prompts n_features"]:
    """Safeguard features of ``prompts``: the circuit's units at the last prompt token (see the module doc)."""
    return read_prompts(loaded, [circuit], prompts, batch_size, progress).features(circuit)
