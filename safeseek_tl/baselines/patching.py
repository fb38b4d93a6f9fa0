"""Activation patching, attribution patching and EAP-IG of heads and neurons between paired prompts.

Each pair is a *clean* prompt (the behaviour is present) and a *corrupted* prompt (it is not). A
unit's activation patching score is ``metric(corrupted run with that unit's clean activation) -
metric(corrupted run)``, averaged over pairs; attribution patching estimates the same number from one
gradient (Nanda's "attribution patching"), EAP-IG from gradients averaged along a path of
inputs (:func:`eap_ig`). A unit is a head (``hook_z``, all positions, all of
d_head) or a neuron (``hook_post``, all positions).

Alignment of positions: the clean and corrupted prompts of all pairs are left-padded together to one
width, so positions align *from the end* (the last tokens, i.e. the chat template's generation
prompt, line up; with pairs of equal token length every position lines up). Where only one prompt of
a pair has a token, the patch still copies that position; padding positions are masked as keys, so
they affect nothing but themselves.

Several units are patched in one forward pass: the corrupted batch is repeated once per unit and
each row patches its own unit (:func:`row_unit_hooks`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.utilities import get_act_name

from safeseek_tl.data import batch_slices, tokenize_prompts, trim_padding
from safeseek_tl.errors import InputError
from safeseek_tl.hooks import HookList, UnitChoice, UnitKind, intervention_hook, unit_hook, unit_kinds
from safeseek_tl.metrics import refusal_score, refusal_token_ids
from safeseek_tl.models import LoadedModel
from safeseek_tl.units import Scores

EMBED_HOOK = get_act_name("embed")
"""Hook point of the token embeddings, where EAP-IG interpolates its inputs."""

Metric = Callable[[Float[Tensor, "batch d_vocab"]], Float[Tensor, " batch"]]
"""A behaviour metric of the last-position logits, one value per row; differentiable."""


def refusal_metric(loaded: LoadedModel) -> Metric:
    """The default metric: Arditi et al.'s refusal log-odds with this tokenizer's refusal openings."""
    ids = refusal_token_ids(loaded.tokenizer)
    return lambda last_logits: refusal_score(last_logits, ids)


def row_unit_hooks(
    hook_name: Callable[[int], str],
    selection: Bool[Tensor, "rows n_layers units"],
    replacement: Callable[[Tensor, int], Tensor],
) -> HookList:
    """Per-row unit replacement: in row ``r``, the units ``selection[r, layer]`` take the values of
    ``replacement(act, layer)`` (a tensor broadcastable to ``act``); all other units are unchanged.

    ``act`` is ``[rows, pos, units]`` or ``[rows, pos, units, d_head]``. Layers with nothing selected
    get no hook. This is how Ships ablates one head per row and patching patches one unit per row.
    """
    hooks: HookList = []
    for layer in range(selection.shape[1]):
        chosen = selection[:, layer]
        if not chosen.any():
            continue

        hooks.append((hook_name(layer), intervention_hook((~chosen).float(), partial(_at_layer, replacement, layer))))
    return hooks


def _at_layer(replacement: Callable[[Tensor, int], Tensor], layer: int, act: Tensor) -> Tensor:
    return replacement(act, layer)


def _repeated_donor(cache: Any, kind: UnitKind, k: int, act: Tensor, layer: int) -> Tensor:
    """The donor run's activations of ``kind`` at ``layer``, repeated for ``k`` groups of rows."""
    return cache[unit_hook(kind, layer)].repeat(k, *([1] * (act.dim() - 1)))


def pair_batches(
    loaded: LoadedModel, clean_prompts: Sequence[str], corrupted_prompts: Sequence[str], batch_size: int
) -> list[tuple[Int[Tensor, "b pos"], Int[Tensor, "b pos"], Int[Tensor, "b pos"], Int[Tensor, "b pos"]]]:
    """(clean ids, clean mask, corrupted ids, corrupted mask) per batch, all left-padded to one width."""
    if len(clean_prompts) != len(corrupted_prompts):
        raise InputError(f"patching needs pairs: {len(clean_prompts)} clean prompts but {len(corrupted_prompts)} corrupted ones")
    if not clean_prompts:
        raise InputError("patching needs at least one (clean, corrupted) prompt pair")
    n = len(clean_prompts)
    tokens = tokenize_prompts(loaded.chat, list(clean_prompts) + list(corrupted_prompts))
    batches = []
    for part in batch_slices(n, batch_size):
        rows = torch.cat([torch.arange(n)[part], torch.arange(n)[part] + n])
        ids, mask = trim_padding(tokens.input_ids[rows], tokens.attention_mask[rows], right=False)
        ids, mask = ids.to(loaded.device), mask.to(loaded.device)
        b = len(rows) // 2
        batches.append((ids[:b], mask[:b], ids[b:], mask[b:]))
    return batches


def _result(loaded: LoadedModel, totals: dict[UnitKind, Tensor], n_pairs: int, method: str, **metadata: Any) -> Scores:
    return Scores(
        shape=loaded.shape,
        heads=totals["heads"] / n_pairs if "heads" in totals else None,
        neurons=totals["neurons"] / n_pairs if "neurons" in totals else None,
        method=method,
        metadata={"n_pairs": n_pairs, "position_alignment": "left-padded, aligned from the end", **metadata},
    )


@torch.no_grad()
def activation_patching(
    loaded: LoadedModel,
    clean_prompts: Sequence[str],
    corrupted_prompts: Sequence[str],
    *,
    metric: Metric | None = None,
    units: UnitChoice = "heads",
    batch_size: int = 32,
    progress: bool = True,
) -> Scores:
    """Exact activation patching: patch each unit's clean activation (all positions) into the
    corrupted run; score = mean over pairs of ``metric(patched) - metric(corrupted)``.

    ``batch_size`` is the number of rows per forward pass (pairs x units patched at once). Costs
    one forward row per unit and pair, so prefer :func:`attribution_patching` for all the neurons
    of a large model. ``metadata`` holds the mean metric on the clean and corrupted prompts.
    """
    metric = refusal_metric(loaded) if metric is None else metric
    kinds = unit_kinds(units)
    shape = loaded.shape
    model = loaded.model
    all_units = [(kind, layer, index) for kind in kinds for layer in range(shape.n_layers) for index in range(shape.size(kind)[1])]
    totals = {kind: torch.zeros(shape.size(kind), dtype=torch.float64) for kind in kinds}
    names = {unit_hook(kind, layer) for kind in kinds for layer in range(shape.n_layers)}
    batches = pair_batches(loaded, clean_prompts, corrupted_prompts, batch_size)
    n_passes = sum(-(-len(all_units) // max(1, batch_size // len(b[0]))) for b in batches)
    bar = tqdm(total=n_passes, desc="activation patching", disable=not progress, leave=False)
    clean_sum = corrupted_sum = 0.0
    for clean_ids, clean_mask, corr_ids, corr_mask in batches:
        b = len(clean_ids)
        clean_logits, cache = model.run_with_cache(clean_ids, attention_mask=clean_mask, names_filter=lambda name: name in names, logits_to_keep=1)
        baseline = metric(model(corr_ids, attention_mask=corr_mask, logits_to_keep=1)[:, -1]).double().cpu()
        clean_sum += float(metric(clean_logits[:, -1]).double().sum())
        corrupted_sum += float(baseline.sum())
        per_pass = max(1, batch_size // b)
        for start in range(0, len(all_units), per_pass):
            group = all_units[start : start + per_pass]
            k = len(group)
            hooks: HookList = []
            for kind in kinds:
                selection = torch.zeros(k * b, *shape.size(kind), dtype=torch.bool)
                for j, (unit_kind, layer, index) in enumerate(group):
                    if unit_kind == kind:
                        selection[j * b : (j + 1) * b, layer, index] = True
                hooks += row_unit_hooks(partial(unit_hook, kind), selection, partial(_repeated_donor, cache, kind, k))
            with model.hooks(fwd_hooks=hooks):
                logits = model(corr_ids.repeat(k, 1), attention_mask=corr_mask.repeat(k, 1), logits_to_keep=1)[:, -1]
            effect = (metric(logits).double().cpu() - baseline.repeat(k)).view(k, b).sum(1)
            for j, (kind, layer, index) in enumerate(group):
                totals[kind][layer, index] += effect[j]
            bar.update()
    bar.close()
    n = len(clean_prompts)
    return _result(loaded, totals, n, "act-patch", units=units, metric_clean=clean_sum / n, metric_corrupted=corrupted_sum / n)


def _gradient_taps(keys: Sequence[tuple[UnitKind, int]]) -> tuple[dict[tuple[UnitKind, int], Tensor], dict[tuple[UnitKind, int], Tensor], HookList]:
    """Hooks that record each unit layer's activation and add a zero leaf to it; after a backward
    pass the leaf's gradient is d metric / d act. The graph stays connected, so earlier units still
    get their gradient through later layers. Returns (activations, leaves, hooks), filled on the forward."""
    acts: dict[tuple[UnitKind, int], Tensor] = {}
    leaves: dict[tuple[UnitKind, int], Tensor] = {}

    def attach(key: tuple[UnitKind, int]) -> Callable[..., Tensor]:
        def hook(act: Tensor, hook: Any) -> Tensor:
            acts[key] = act.detach()
            leaves[key] = torch.zeros_like(act, requires_grad=True)
            return act + leaves[key]

        return hook

    return acts, leaves, [(unit_hook(kind, layer), attach((kind, layer))) for kind, layer in keys]


def attribution_patching(
    loaded: LoadedModel,
    clean_prompts: Sequence[str],
    corrupted_prompts: Sequence[str],
    *,
    metric: Metric | None = None,
    units: UnitChoice = "heads",
    batch_size: int = 8,
    progress: bool = True,
) -> Scores:
    """Attribution patching: a first-order (linear) approximation of :func:`activation_patching`.

    One forward on the clean prompts and one forward and backward on the corrupted ones give, per
    unit, ``sum over positions (and d_head) of d metric / d act * (clean act - corrupted act)``,
    averaged over pairs. It equals activation patching exactly only where the metric is linear in
    the unit's activation; elsewhere (through later attention, MLPs and norms) it is an estimate.

    Cost: three passes for all heads and neurons at once, the clean forward, the corrupted forward
    and its backward; only the last position is unembedded (docs/performance.md has measurements).
    """
    metric = refusal_metric(loaded) if metric is None else metric
    kinds = unit_kinds(units)
    shape = loaded.shape
    model = loaded.model
    totals = {kind: torch.zeros(shape.size(kind), dtype=torch.float64) for kind in kinds}
    keys = [(kind, layer) for kind in kinds for layer in range(shape.n_layers)]
    names = {unit_hook(kind, layer) for kind, layer in keys}
    clean_sum = corrupted_sum = 0.0
    for clean_ids, clean_mask, corr_ids, corr_mask in tqdm(
        pair_batches(loaded, clean_prompts, corrupted_prompts, batch_size), desc="attribution patching", disable=not progress, leave=False
    ):
        with torch.no_grad():
            clean_logits, cache = model.run_with_cache(clean_ids, attention_mask=clean_mask, names_filter=lambda name: name in names, logits_to_keep=1)
            clean_sum += float(metric(clean_logits[:, -1]).double().sum())
        corrupted, deltas, taps = _gradient_taps(keys)
        with torch.enable_grad(), model.hooks(fwd_hooks=taps):
            values = metric(model(corr_ids, attention_mask=corr_mask, logits_to_keep=1)[:, -1])
            grads = torch.autograd.grad(values.sum(), [deltas[key] for key in keys], allow_unused=True)
        corrupted_sum += float(values.detach().double().sum())
        for (kind, layer), grad in zip(keys, grads):
            if grad is None:  # the unit cannot reach the metric
                continue
            attribution = grad * (cache[unit_hook(kind, layer)] - corrupted[(kind, layer)])
            totals[kind][layer] += attribution.sum((0, 1, 3) if kind == "heads" else (0, 1)).double().cpu()
    n = len(clean_prompts)
    return _result(loaded, totals, n, "attr-patch", units=units, metric_clean=clean_sum / n, metric_corrupted=corrupted_sum / n)


def _interpolated(
    start: Float[Tensor, "batch pos d_model"], end: Float[Tensor, "batch pos d_model"], alphas: Float[Tensor, " steps"]
) -> Float[Tensor, "steps_batch pos d_model"]:
    """``start + alpha * (end - start)`` for every alpha, stacked step-major (step 0's batch first)."""
    weight = alphas.to(start.device, start.dtype).repeat_interleave(len(start)).view(-1, 1, 1)
    steps = len(alphas)
    return start.repeat(steps, 1, 1) + weight * (end - start).repeat(steps, 1, 1)


def eap_ig(
    loaded: LoadedModel,
    clean_prompts: Sequence[str],
    corrupted_prompts: Sequence[str],
    *,
    metric: Metric | None = None,
    units: UnitChoice = "heads",
    ig_steps: int = 5,
    batch_size: int = 8,
    progress: bool = True,
) -> Scores:
    """EAP-IG at node level, inputs variant (Hanna et al.; MIB's recommended first baseline).

    The input embeddings are interpolated from the corrupted prompt to the clean one,
    ``e(alpha) = e_corrupted + alpha * (e_clean - e_corrupted)`` at ``alpha = s / ig_steps``,
    ``s = 1..ig_steps`` (a right Riemann sum), the rest of the model running freely from there.
    A unit's score is ``sum over positions (and d_head) of (clean act - corrupted act) * mean over
    steps of d metric / d act``, averaged over pairs. With ``ig_steps=1`` it is attribution
    patching taken at the clean end; where the metric is linear in the unit it equals exact
    activation patching. Heads are ``hook_z`` slices, one per query head, so grouped-query
    attention needs nothing special: a shared key/value head is reached through each query head.

    The interpolated runs attend to positions either prompt of the pair uses (the union of both
    masks). Cost per batch: a clean and a corrupted forward, then one forward and backward over
    ``ig_steps`` times the batch.
    """
    if ig_steps < 1:
        raise InputError(f"eap-ig: ig_steps must be a positive integer, got {ig_steps}")
    metric = refusal_metric(loaded) if metric is None else metric
    kinds = unit_kinds(units)
    shape, model = loaded.shape, loaded.model
    totals = {kind: torch.zeros(shape.size(kind), dtype=torch.float64) for kind in kinds}
    keys = [(kind, layer) for kind in kinds for layer in range(shape.n_layers)]
    names = {unit_hook(kind, layer) for kind, layer in keys} | {EMBED_HOOK}
    alphas = torch.arange(1, ig_steps + 1, dtype=torch.float32) / ig_steps
    clean_sum = corrupted_sum = 0.0
    for clean_ids, clean_mask, corr_ids, corr_mask in tqdm(
        pair_batches(loaded, clean_prompts, corrupted_prompts, batch_size), desc="eap-ig", disable=not progress, leave=False
    ):
        b = len(clean_ids)
        with torch.no_grad():
            clean_logits, clean = model.run_with_cache(clean_ids, attention_mask=clean_mask, names_filter=lambda name: name in names, logits_to_keep=1)
            corr_logits, corr = model.run_with_cache(corr_ids, attention_mask=corr_mask, names_filter=lambda name: name in names, logits_to_keep=1)
        clean_sum += float(metric(clean_logits[:, -1]).double().sum())
        corrupted_sum += float(metric(corr_logits[:, -1]).double().sum())
        path = _interpolated(corr[EMBED_HOOK], clean[EMBED_HOOK], alphas)
        _, leaves, taps = _gradient_taps(keys)
        with torch.enable_grad(), model.hooks(fwd_hooks=[(EMBED_HOOK, lambda act, hook: path), *taps]):
            mask = (clean_mask.bool() | corr_mask.bool()).to(clean_mask.dtype).repeat(ig_steps, 1)
            values = metric(model(corr_ids.repeat(ig_steps, 1), attention_mask=mask, logits_to_keep=1)[:, -1])
            grads = torch.autograd.grad(values.sum(), [leaves[key] for key in keys], allow_unused=True)
        for (kind, layer), grad in zip(keys, grads):
            if grad is None:  # the unit cannot reach the metric
                continue
            name = unit_hook(kind, layer)
            mean_grad = grad.view(ig_steps, b, *grad.shape[1:]).mean(0)
            attribution = mean_grad * (clean[name] - corr[name])
            totals[kind][layer] += attribution.sum((0, 1, 3) if kind == "heads" else (0, 1)).double().cpu()
    n = len(clean_prompts)
    return _result(loaded, totals, n, "eap-ig", units=units, ig_steps=ig_steps, metric_clean=clean_sum / n, metric_corrupted=corrupted_sum / n)


def oriented(scores: Scores) -> Scores:
    """Flip patching scores so that higher always means "moves the metric toward the behaviour"."""
    sign = 1.0 if scores.metadata["metric_clean"] >= scores.metadata["metric_corrupted"] else -1.0
    return dataclasses.replace(
        scores,
        heads=None if scores.heads is None else sign * scores.heads,
        neurons=None if scores.neurons is None else sign * scores.neurons,
        metadata={**scores.metadata, "orientation": sign},
    )
