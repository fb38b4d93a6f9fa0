"""Prefix reuse: running from a cached residual at layer l gives the full run's logits without the blocks before l."""

from __future__ import annotations

import torch

from safeseek_tl.compat import only_blocks_from
from safeseek_tl.prefix import last_logits_and_residuals, last_logits_from, position_ids


def _left_padded(gqa):
    ids = torch.randint(6, 29, (3, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding, as prompts are batched
    mask[2, :1] = 0
    return ids, mask


@torch.no_grad()
def test_running_from_every_layer_gives_the_full_logits(gqa):
    ids, mask = _left_padded(gqa)
    full = gqa.model(ids, attention_mask=mask)[:, -1]
    last, residuals = last_logits_and_residuals(gqa.model, ids, mask)
    torch.testing.assert_close(last, full, rtol=0, atol=1e-5)
    assert len(residuals) == gqa.shape.n_layers
    for layer, residual in enumerate(residuals):
        torch.testing.assert_close(last_logits_from(gqa.model, layer, residual, mask, []), full, rtol=0, atol=1e-5)


@torch.no_grad()
def test_blocks_before_the_start_do_not_run_and_come_back_after(gqa):
    ids, mask = _left_padded(gqa)
    _, residuals = last_logits_and_residuals(gqa.model, ids, mask)
    ran: list[int] = []
    counters = [(f"blocks.{layer}.hook_resid_pre", lambda act, hook, layer=layer: ran.append(layer)) for layer in range(gqa.shape.n_layers)]
    with gqa.model.hooks(fwd_hooks=counters):
        last_logits_from(gqa.model, 1, residuals[1], mask, [])
        assert ran == [1]
        with only_blocks_from(gqa.model, 1):
            assert len(gqa.model.original_model.model.layers) == gqa.shape.n_layers - 1
        ran.clear()
        gqa.model(ids, attention_mask=mask)
        assert ran == list(range(gqa.shape.n_layers))


def test_position_ids_count_from_the_first_token_of_left_padded_rows():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [1, 1, 1, 0]])
    assert position_ids(mask).tolist() == [[0, 0, 0, 1], [0, 1, 2, 3], [0, 1, 2, 3]]
