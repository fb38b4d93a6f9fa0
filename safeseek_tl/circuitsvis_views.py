"""circuitsvis views of a circuit on one prompt: its heads' attention patterns, its neurons' activations.

Each view runs the chat-formatted prompt through the model once and returns circuitsvis's
``RenderedHTML``. The views render offline only through their ``local_src`` (JavaScript inlined);
``str(view)`` points at a CDN. Save them with :func:`save_circuitsvis`. Tokens are made safe for the
page: circuitsvis writes them into an inline script unescaped, and inserts the neuron view's tokens
as HTML.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from circuitsvis.activations import text_neuron_activations
from circuitsvis.attention import attention_heads
from circuitsvis.utils.render import RenderedHTML
from jaxtyping import Float
from torch import Tensor

from safeseek_tl._io import atomic_path
from safeseek_tl.errors import InputError
from safeseek_tl.hooks import neuron_hook, pattern_hook
from safeseek_tl.units import Circuit

if TYPE_CHECKING:
    from safeseek_tl.models import LoadedModel


def _script_safe(token: str) -> str:
    """A token safe inside circuitsvis's inline <script>: a zero-width space after '<' before '/' or '!'.

    circuitsvis writes its data as JSON into a script element without escaping, so a token holding
    ``</script>`` or ``<!--`` would end or corrupt the script; the token displays unchanged.
    """
    return re.sub(r"<(?=[/!])", "<\u200b", token)


def _recorder(store: dict[str, Tensor], key: str) -> Any:
    def record(act: Tensor, hook: Any) -> Tensor:
        store[key] = act.detach()[0].float().cpu()
        return act

    return record


@torch.no_grad()
def _capture(loaded: LoadedModel, prompt: str, names: Sequence[str]) -> tuple[list[str], dict[str, Tensor]]:
    """Token strings of the chat-formatted ``prompt`` and the first row of each hook ``names``' activation."""
    ids = loaded.chat.prompt_ids(prompt)
    tokens = [loaded.tokenizer.decode([i]) for i in ids]
    store: dict[str, Tensor] = {}
    with loaded.model.hooks(fwd_hooks=[(name, _recorder(store, name)) for name in names]):
        loaded.model(torch.tensor([ids], device=loaded.device))
    return tokens, store


def attention_view(loaded: LoadedModel, prompt: str, circuit: Circuit) -> RenderedHTML:
    """circuitsvis attention-heads view of the circuit's heads on the chat-formatted ``prompt``."""
    if circuit.n_heads == 0:
        raise InputError("attention_view: the circuit holds no heads")
    loaded.shape.check_compatible(circuit.shape, "the circuit passed to attention_view")
    units = circuit.head_list
    layers = sorted({layer for layer, _ in units})
    tokens, store = _capture(loaded, prompt, [pattern_hook(layer) for layer in layers])
    patterns: Float[Tensor, "n_heads q_pos k_pos"] = torch.stack([store[pattern_hook(layer)][head] for layer, head in units])
    return attention_heads(
        attention=patterns,
        tokens=[_script_safe(t) for t in tokens],
        attention_head_names=[f"L{layer}H{head}" for layer, head in units],
    )


def neuron_activation_view(loaded: LoadedModel, prompt: str, circuit: Circuit) -> RenderedHTML:
    """circuitsvis text view of the circuit's neuron activations over the chat-formatted ``prompt``'s tokens.

    The tokens are HTML-escaped: circuitsvis inserts each token of this view as HTML (a token such
    as ``<s>`` would otherwise become an element and vanish), while the attention view shows text.
    """
    if circuit.n_neurons == 0:
        raise InputError("neuron_activation_view: the circuit holds no neurons")
    loaded.shape.check_compatible(circuit.shape, "the circuit passed to neuron_activation_view")
    units = circuit.neuron_list
    layers = sorted({layer for layer, _ in units})
    tokens, store = _capture(loaded, prompt, [neuron_hook(layer) for layer in layers])
    acts: Float[Tensor, "pos n_units"] = torch.stack([store[neuron_hook(layer)][:, index] for layer, index in units], dim=-1)
    return text_neuron_activations(
        tokens=[html.escape(t, quote=False) for t in tokens],
        activations=acts.unsqueeze(1),  # [tokens, 1, units]: one group holding every circuit neuron
        first_dimension_name="Units",
        first_dimension_labels=["circuit neurons"],
        second_dimension_name="Neuron",
        second_dimension_labels=[f"L{layer}N{index}" for layer, index in units],
    )


def save_circuitsvis(view: RenderedHTML, path: str | Path, title: str = "circuitsvis view") -> Path:
    """Write a circuitsvis view as a standalone HTML page that renders offline (its ``local_src``)."""
    page = (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>\n'
        f"<body>\n{view.local_src}\n</body></html>\n"
    )
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return Path(path)
