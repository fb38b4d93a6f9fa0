"""Ships and Sahara (Zhou et al., ICLR 2025): attention-head attribution by ablation (docs/choices.md).

- :func:`ships_scores`: per query, KL(p_full || p_ablated) of the next-token distribution at the
  last prompt position when one head is ablated; the dataset score is the mean over queries.
- :func:`generalized_ships`: the angle between the leading left singular vectors of the
  last-token final hidden states of the full and the ablated model (dataset level).
- :func:`sahara`: greedy search for the head group with the largest generalized Ships angle.

Ablation operators on head ``h`` of layer ``l``:

- ``"ua"`` (undifferentiated attention, the paper's main one): ``hook_q[:, :, h] *= epsilon``, so
  the head attends uniformly to every non-padding position (scaling before RoPE is the same as
  after: RoPE is linear); queries, not keys, so that under grouped-query attention only one head
  is hit;
- ``"sc"`` (scaling contribution): ``hook_z[:, :, h] *= epsilon`` (the head's output before W_O);
- ``"mean"``: ``hook_q[:, :, h]`` replaced by the mean query over all heads at each position.

Prompts go through the model's chat template (like every method of this library), not Ships'
``"## Query: ... ## Answer:"`` template. The KL is the library's exact
:func:`~safeseek_tl.metrics.last_position_kl` in float32 (log-softmax), not the code's ``p + 1e-12``
version; the two differ by about ``1e-12 * d_vocab``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, overload

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from safeseek_tl.baselines.patching import row_unit_hooks
from safeseek_tl.data import TokenizedPrompts, batch_slices, tokenize_prompts, trim_padding
from safeseek_tl.errors import InputError
from safeseek_tl.hooks import HookList, head_hook, intervention_hook, query_hook
from safeseek_tl.metrics import last_position_kl
from safeseek_tl.models import LoadedModel
from safeseek_tl.prefix import last_logits_and_residuals, last_logits_from
from safeseek_tl.units import Circuit, Scores

Operator = Literal["ua", "sc", "mean"]
OPERATORS: tuple[Operator, ...] = ("ua", "sc", "mean")

FINAL_HIDDEN_HOOK = "ln_final.hook_out"
"""Final hidden state for generalized Ships: the output of the final norm *with* its weight, i.e.
Hugging Face's ``hidden_states[-1]`` that the official code uses. (On a bridge,
``ln_final.hook_normalized`` is before the norm's weight.)"""


def _check_operator(operator: str) -> None:
    if operator not in OPERATORS:
        raise InputError(f"Ships operator must be one of {OPERATORS}, got {operator!r}")


def head_ablation_hooks(selection: Bool[Tensor, "rows n_layers n_heads"], operator: Operator = "ua", epsilon: float = 1e-5) -> HookList:
    """Hooks ablating, in each batch row, the heads selected for that row with a Ships operator."""
    _check_operator(operator)
    if operator == "sc":
        return row_unit_hooks(head_hook, selection, lambda z, layer: z * epsilon)
    if operator == "ua":
        return row_unit_hooks(query_hook, selection, lambda q, layer: q * epsilon)
    return row_unit_hooks(query_hook, selection, lambda q, layer: q.mean(dim=2, keepdim=True))


def _batch(loaded: LoadedModel, tokens: TokenizedPrompts, part: slice) -> tuple[Int[Tensor, "b pos"], Int[Tensor, "b pos"]]:
    ids, mask = trim_padding(tokens.input_ids[part], tokens.attention_mask[part], right=False)
    return ids.to(loaded.device), mask.to(loaded.device)


def _last_logits(loaded: LoadedModel, ids: Tensor, mask: Tensor, hooks: HookList) -> Float[Tensor, "rows d_vocab"]:
    with loaded.model.hooks(fwd_hooks=hooks):
        return loaded.model(ids, attention_mask=mask)[:, -1].float()


def _one_head_per_row(units: Sequence[int], rows_per_unit: int, n_layers: int, n_heads: int) -> Bool[Tensor, "rows n_layers n_heads"]:
    """Row ``j * rows_per_unit + i`` ablates head ``units[j]`` (flat index ``layer * n_heads + head``)."""
    selection = torch.zeros(len(units) * rows_per_unit, n_layers * n_heads, dtype=torch.bool)
    for j, unit in enumerate(units):
        selection[j * rows_per_unit : (j + 1) * rows_per_unit, unit] = True
    return selection.view(-1, n_layers, n_heads)


@torch.no_grad()
def _ships_per_query(
    loaded: LoadedModel, prompts: Sequence[str], operator: Operator, epsilon: float, batch_size: int, progress: bool
) -> Float[Tensor, "n_prompts n_layers n_heads"]:
    _check_operator(operator)
    n_layers, n_heads = loaded.shape.size("heads")
    tokens = tokenize_prompts(loaded.chat, prompts)
    out = torch.zeros(len(prompts), n_layers, n_heads)
    parts = batch_slices(len(prompts), batch_size)
    bar = tqdm(total=sum(n_layers * -(-n_heads // max(1, batch_size // (p.stop - p.start))) for p in parts), desc="Ships", disable=not progress, leave=False)
    for part in parts:
        ids, mask = _batch(loaded, tokens, part)
        b = len(ids)
        full, residuals = last_logits_and_residuals(loaded.model, ids, mask)
        per_pass = max(1, batch_size // b)
        # Ablating a head of layer l changes nothing before l: run from the cached residual at l.
        for layer in range(n_layers):
            for start in range(0, n_heads, per_pass):
                k = min(per_pass, n_heads - start)
                units = range(layer * n_heads + start, layer * n_heads + start + k)
                hooks = head_ablation_hooks(_one_head_per_row(units, b, n_layers, n_heads), operator, epsilon)
                ablated = last_logits_from(loaded.model, layer, residuals[layer].repeat(k, 1, 1), mask.repeat(k, 1), hooks)
                out[part, layer, start : start + k] = last_position_kl(full.repeat(k, 1), ablated).view(k, b).T.cpu()
                bar.update()
    bar.close()
    return out


def _ships_result(loaded: LoadedModel, per_query: Tensor, operator: str, epsilon: float) -> Scores:
    return Scores(
        shape=loaded.shape,
        heads=per_query.mean(0),
        method="ships",
        metadata={"operator": operator, "epsilon": epsilon, "n_prompts": per_query.shape[0], "score": "mean over prompts of KL(p_full || p_ablated) at the last position"},
    )


@overload
def ships_scores(
    loaded: LoadedModel, prompts: Sequence[str], *, operator: Operator = ..., epsilon: float = ..., per_query: Literal[False] = ..., batch_size: int = ..., progress: bool = ...
) -> Scores: ...
@overload
def ships_scores(
    loaded: LoadedModel, prompts: Sequence[str], *, operator: Operator = ..., epsilon: float = ..., per_query: Literal[True], batch_size: int = ..., progress: bool = ...
) -> tuple[Scores, Float[Tensor, "n_prompts n_layers n_heads"]]: ...
def ships_scores(
    loaded: LoadedModel,
    prompts: Sequence[str],
    *,
    operator: Operator = "ua",
    epsilon: float = 1e-5,
    per_query: bool = False,
    batch_size: int = 64,
    progress: bool = True,
) -> Scores | tuple[Scores, Float[Tensor, "n_prompts n_layers n_heads"]]:
    """Ships head scores: mean over prompts of KL(p_full || p_head ablated) at the last position.

    Batched: each forward pass holds up to ``batch_size`` rows, the prompts of a batch repeated
    once per head of one layer, every row ablating its own head; the pass starts from the clean
    run's residual stream at that layer (:mod:`safeseek_tl.prefix`), since an ablation cannot change
    what comes before it, and unembeds the last position only. With ``per_query=True`` also returns the
    per-prompt scores ``[n_prompts, n_layers, n_heads]`` (the paper's per-query Ships).
    """
    if not prompts:
        raise InputError("Ships needs at least one prompt")
    scores_per_query = _ships_per_query(loaded, prompts, operator, epsilon, batch_size, progress)
    result = _ships_result(loaded, scores_per_query, operator, epsilon)
    return (result, scores_per_query) if per_query else result


@torch.no_grad()
def ships_scores_naive(loaded: LoadedModel, prompts: Sequence[str], *, operator: Operator = "ua", epsilon: float = 1e-5) -> Scores:
    """Reference implementation of :func:`ships_scores`: one forward pass per head, all prompts at once."""
    _check_operator(operator)
    tokens = tokenize_prompts(loaded.chat, prompts)
    ids, mask = tokens.input_ids.to(loaded.device), tokens.attention_mask.to(loaded.device)
    full = _last_logits(loaded, ids, mask, [])
    n_layers, n_heads = loaded.shape.size("heads")
    per_query = torch.zeros(len(prompts), n_layers, n_heads)
    for layer in range(n_layers):
        for head in range(n_heads):

            keep = torch.ones(n_heads)
            keep[head] = 0.0
            fill = (lambda act: act.mean(dim=2, keepdim=True)) if operator == "mean" else (lambda act: act * epsilon)
            name = head_hook(layer) if operator == "sc" else query_hook(layer)
            per_query[:, layer, head] = last_position_kl(full, _last_logits(loaded, ids, mask, [(name, intervention_hook(keep, fill))])).cpu()
    return _ships_result(loaded, per_query, operator, epsilon)


@torch.no_grad()
def _final_hidden(
    loaded: LoadedModel,
    tokens: TokenizedPrompts,
    selections: Bool[Tensor, "k n_layers n_heads"],
    operator: Operator,
    epsilon: float,
    batch_size: int,
) -> Float[Tensor, "k n_prompts d_model"]:
    """Last-token final hidden states of every prompt, once per head selection (ablated together)."""
    k, n = len(selections), len(tokens)
    out = torch.zeros(k, n, int(loaded.model.cfg.d_model), dtype=torch.float64)
    captured: list[Tensor] = []

    def capture(act: Tensor, hook: object) -> Tensor:
        captured.append(act[:, -1].double().cpu())
        return act

    for part in batch_slices(n, max(1, batch_size // k)):
        ids, mask = _batch(loaded, tokens, part)
        b = len(ids)
        hooks = head_ablation_hooks(selections.repeat_interleave(b, dim=0), operator, epsilon)
        with loaded.model.hooks(fwd_hooks=[*hooks, (FINAL_HIDDEN_HOOK, capture)]):
            loaded.model(ids.repeat(k, 1), attention_mask=mask.repeat(k, 1))
        out[:, part] = captured.pop().view(k, b, -1)
    return out


def _leading_left_vectors(hidden: Float[Tensor, "k n_prompts d_model"]) -> Float[Tensor, "k n_prompts"]:
    """First left singular vector (sample space) of each uncentered [n_prompts, d_model] matrix."""
    return torch.linalg.svd(hidden, full_matrices=False).U[..., 0]


def _angles(reference: Float[Tensor, " n_prompts"], others: Float[Tensor, "k n_prompts"]) -> Float[Tensor, " k"]:
    """Principal angle in degrees between span(reference) and each span(other) (r_main = 1)."""
    return torch.rad2deg(torch.arccos((others @ reference).abs().clamp(-1.0, 1.0)))


def generalized_ships(
    loaded: LoadedModel,
    prompts: Sequence[str],
    ablate: Circuit,
    *,
    operator: Operator = "ua",
    epsilon: float = 1e-5,
    batch_size: int = 32,
) -> float:
    """Dataset-level Ships of a head group: the angle (degrees) between the leading left singular
    vectors of the last-token final hidden states ``[n_prompts, d_model]`` (uncentered) of the full
    model and of the model with ``ablate``'s heads ablated (r_main = 1, |cos| clamped to [0, 1])."""
    _check_operator(operator)
    loaded.shape.check_compatible(ablate.shape, "the circuit")
    if ablate.n_neurons:
        raise InputError(f"generalized Ships ablates heads only, but the circuit holds {ablate.n_neurons} neurons")
    if not prompts:
        raise InputError("generalized Ships needs at least one prompt")
    tokens = tokenize_prompts(loaded.chat, prompts)
    selections = torch.stack([torch.zeros_like(ablate.heads), ablate.heads])
    u = _leading_left_vectors(_final_hidden(loaded, tokens, selections, operator, epsilon, batch_size))
    return float(_angles(u[0], u[1:])[0])


def _grown_group_angles(
    loaded: LoadedModel,
    tokens: TokenizedPrompts,
    reference: Float[Tensor, " n_prompts"],
    group: Bool[Tensor, " n_units"],
    candidates: Int[Tensor, " k"],
    per_pass: int,
    operator: Operator,
    epsilon: float,
    batch_size: int,
    bar: tqdm,
) -> Float[Tensor, " k"]:
    """The angle against ``reference`` of the model with ``group`` and each candidate head ablated,
    ``per_pass`` candidates a forward pass (heads numbered layer-major)."""
    n_layers, n_heads = loaded.shape.size("heads")
    step_angles = torch.empty(len(candidates), dtype=torch.float64)
    for start in range(0, len(candidates), per_pass):
        chunk = candidates[start : start + per_pass]
        selections = group.repeat(len(chunk), 1)
        selections[torch.arange(len(chunk)), chunk] = True
        hidden = _final_hidden(loaded, tokens, selections.view(-1, n_layers, n_heads), operator, epsilon, batch_size)
        step_angles[start : start + len(chunk)] = _angles(reference, _leading_left_vectors(hidden))
        bar.update()
    return step_angles


def sahara(
    loaded: LoadedModel,
    prompts: Sequence[str],
    *,
    steps: int = 3,
    operator: Operator = "ua",
    epsilon: float = 1e-5,
    batch_size: int = 64,
    progress: bool = True,
) -> Scores:
    """Sahara: greedily grow a head group, each step adding the head whose ablation together with
    the group gives the largest :func:`generalized_ships` angle against the *unablated* model.

    Scores: the head chosen at step ``s`` (0-based) gets ``steps - s``, all others 0, so
    ``Circuit.top_k(scores, heads=steps)`` is the group; ties go to the first head (layer-major).
    ``metadata["group"]`` lists the heads in order, ``metadata["angles"]`` each step's angle.
    """
    _check_operator(operator)
    n_layers, n_heads = loaded.shape.size("heads")
    n_units = n_layers * n_heads
    if not 1 <= steps <= n_units:
        raise InputError(f"Sahara steps must be between 1 and the number of heads ({n_units}), got {steps}")
    if not prompts:
        raise InputError("Sahara needs at least one prompt")
    tokens = tokenize_prompts(loaded.chat, prompts)
    no_heads = torch.zeros(1, n_layers, n_heads, dtype=torch.bool)
    reference = _leading_left_vectors(_final_hidden(loaded, tokens, no_heads, operator, epsilon, batch_size))[0]
    group = torch.zeros(n_units, dtype=torch.bool)
    order: list[int] = []
    angles: list[float] = []
    per_pass = max(1, batch_size // len(prompts))
    bar = tqdm(total=sum(-(-(n_units - step) // per_pass) for step in range(steps)), desc="Sahara", disable=not progress, leave=False)
    for _ in range(steps):
        candidates = (~group).nonzero().flatten()
        step_angles = _grown_group_angles(loaded, tokens, reference, group, candidates, per_pass, operator, epsilon, batch_size, bar)
        best = int(torch.argmax(step_angles))  # first maximum
        group[candidates[best]] = True
        order.append(int(candidates[best]))
        angles.append(float(step_angles[best]))
    bar.close()
    scores = torch.zeros(n_units)
    scores[order] = torch.arange(steps, 0, -1, dtype=torch.float32)
    return Scores(
        shape=loaded.shape,
        heads=scores.view(n_layers, n_heads),
        method="sahara",
        metadata={
            "group": [[unit // n_heads, unit % n_heads] for unit in order],
            "angles": angles,
            "operator": operator,
            "epsilon": epsilon,
            "n_prompts": len(prompts),
            "reference": "unablated model",
            "score": "steps - rank for the greedily chosen heads, 0 for the rest",
        },
    )
