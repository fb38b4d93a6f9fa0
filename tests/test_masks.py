"""Mask hooks and ablation contexts on tiny models (a native bridge and a GQA Llama)."""

from __future__ import annotations

import pytest
import torch

from safeseek_tl import Circuit, MaskLogits, ModelShape, ReferenceActivations, ablated, masked


@pytest.mark.parametrize("which", ["native_bridge", "gqa"])
def test_all_ones_masks_leave_logits_unchanged(which, request, tokens):
    model = request.getfixturevalue(which)
    model = getattr(model, "model", model)
    shape = ModelShape.of(model)
    base = model(tokens)
    with masked(model, heads=torch.ones(shape.size("heads")), neurons=torch.ones(shape.size("neurons"))):
        out = model(tokens)
    torch.testing.assert_close(out, base, rtol=0, atol=0)


def test_zero_head_mask_equals_removing_its_w_o_slice(gqa, gqa_dir, tokens):
    from transformers import AutoModelForCausalLM

    layer, head = 1, 2
    mask = torch.ones(ModelShape.of(gqa.model).size("heads"))
    mask[layer, head] = 0.0
    with masked(gqa.model, heads=mask):
        via_hook = gqa.model(tokens)
    edited = AutoModelForCausalLM.from_pretrained(gqa_dir, attn_implementation="eager")
    d_head = gqa.model.cfg.d_head
    with torch.no_grad():
        edited.model.layers[layer].self_attn.o_proj.weight[:, head * d_head : (head + 1) * d_head] = 0.0
        by_hand = edited(tokens).logits
    torch.testing.assert_close(via_hook, by_hand, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(via_hook, gqa.model(tokens), atol=1e-4)


def test_zero_neuron_mask_equals_removing_its_w_out_column(gqa, gqa_dir, tokens):
    from transformers import AutoModelForCausalLM

    layer, neuron = 0, 5
    mask = torch.ones(ModelShape.of(gqa.model).size("neurons"))
    mask[layer, neuron] = 0.0
    with masked(gqa.model, neurons=mask):
        via_hook = gqa.model(tokens)
    edited = AutoModelForCausalLM.from_pretrained(gqa_dir, attn_implementation="eager")
    with torch.no_grad():
        edited.model.layers[layer].mlp.down_proj.weight[:, neuron] = 0.0
        by_hand = edited(tokens).logits
    torch.testing.assert_close(via_hook, by_hand, rtol=1e-5, atol=1e-5)


def test_per_row_masks_give_each_row_its_own_result(gqa, tokens):
    model = gqa.model
    shape = ModelShape.of(model)
    rows = tokens[:1].repeat(3, 1)
    heads = torch.ones(3, *shape.size("heads"))
    heads[1, 0, 1] = 0.0
    neurons = torch.ones(3, *shape.size("neurons"))
    neurons[2, 1, :10] = 0.0
    with masked(model, heads=heads, neurons=neurons):
        batched = model(rows)
    for row in range(3):
        with masked(model, heads=heads[row], neurons=neurons[row]):
            single = model(rows[row : row + 1])
        torch.testing.assert_close(batched[row : row + 1], single, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(batched[0], batched[1], atol=1e-5)
    assert not torch.allclose(batched[0], batched[2], atol=1e-5)


@pytest.mark.parametrize("kind", ["sigmoid", "hard_sigmoid", "hard_concrete"])
def test_gradients_reach_mask_logits_and_nothing_else(gqa, tokens, kind):
    model = gqa.model
    logits = MaskLogits(ModelShape.of(model), init=0.5, kind=kind)
    values = logits.values(stochastic=True, generator=torch.Generator().manual_seed(0))
    with masked(model, heads=values["heads"], neurons=values["neurons"]):
        out = model(tokens)
    out.float().pow(2).mean().backward()
    assert logits.heads.grad is not None and logits.heads.grad.abs().sum() > 0
    assert logits.neurons.grad is not None and logits.neurons.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_hard_sigmoid_is_binary_forward_and_sigmoid_backward():
    shape = ModelShape(n_layers=1, n_heads=3, d_mlp=2)
    mask = MaskLogits(shape, kinds=("heads",), init=0.0)
    with torch.no_grad():
        mask.heads.copy_(torch.tensor([[-1.0, 0.2, 3.0]]))
    values = mask.values()["heads"]
    assert values.tolist() == [[0.0, 1.0, 1.0]]
    values.sum().backward()
    s = torch.sigmoid(torch.tensor([[-1.0, 0.2, 3.0]]))
    torch.testing.assert_close(mask.heads.grad, s * (1 - s))
    assert mask.kept()["heads"].tolist() == [[False, True, True]]


def test_masks_keep_float32_logits_for_a_bf16_model(gqa_dir, tokens):
    from safeseek_tl import load_model

    low = load_model(gqa_dir, dtype=torch.bfloat16)
    mask = MaskLogits(low.shape, init=1.0)
    assert mask.heads.dtype == torch.float32
    values = mask.values()
    with masked(low.model, heads=values["heads"], neurons=values["neurons"]):
        out = low.model(tokens)
    out.float().sum().backward()
    assert mask.heads.grad.dtype == torch.float32


def test_ablation_context_restores_the_model_also_after_an_error(gqa, tokens):
    model = gqa.model
    circuit = Circuit.from_units(gqa.shape, heads=[[0, 1]], neurons=[[1, 3]])
    base = model(tokens)
    with ablated(model, circuit):
        changed = model(tokens)
    assert not torch.allclose(changed, base, atol=1e-5)
    torch.testing.assert_close(model(tokens), base, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="boom"):
        with ablated(model, circuit):
            raise RuntimeError("boom")
    torch.testing.assert_close(model(tokens), base, rtol=0, atol=0)


def test_zero_ablation_matches_zero_mask_and_keep_only_matches_complement(gqa, tokens):
    model = gqa.model
    circuit = Circuit.from_units(gqa.shape, heads=[[0, 1], [1, 3]], neurons=[[1, 3], [0, 7]])
    keep = {kind: (~circuit.get(kind)).float() for kind in ("heads", "neurons")}
    with ablated(model, circuit):
        ablated_out = model(tokens)
    with masked(model, heads=keep["heads"], neurons=keep["neurons"]):
        masked_out = model(tokens)
    torch.testing.assert_close(ablated_out, masked_out, rtol=1e-6, atol=1e-6)
    with ablated(model, circuit, keep_only=True):
        only = model(tokens)
    with masked(model, heads=1 - keep["heads"], neurons=1 - keep["neurons"]):
        only_masked = model(tokens)
    torch.testing.assert_close(only, only_masked, rtol=1e-6, atol=1e-6)


def test_mean_and_partial_ablation(gqa, tokens):
    model = gqa.model
    reference = ReferenceActivations.collect(model, [(tokens, torch.ones_like(tokens))], pool_size=8)
    assert reference.means["heads"].shape == (2, 4, model.cfg.d_head)
    assert reference.pools["neurons"].shape == (2, 8, model.cfg.d_mlp)
    circuit = Circuit.from_units(gqa.shape, neurons=[[0, 2]])
    seen = {}

    def record(act, hook):
        seen["post"] = act.detach().clone()
        return act

    with ablated(model, circuit, mode="mean", reference=reference):
        with model.hooks(fwd_hooks=[("blocks.0.mlp.hook_post", record)]):
            model(tokens)
    assert torch.allclose(seen["post"][..., 2], reference.means["neurons"][0, 2].expand(3, 10))
    with model.hooks(fwd_hooks=[("blocks.0.mlp.hook_post", record)]):
        model(tokens)
    full = seen["post"][..., 2].clone()
    with ablated(model, circuit, strength=0.5):
        with model.hooks(fwd_hooks=[("blocks.0.mlp.hook_post", record)]):
            model(tokens)
    torch.testing.assert_close(seen["post"][..., 2], 0.5 * full)
    with ablated(model, circuit, mode="resample", reference=reference):
        resampled = model(tokens)
    assert torch.isfinite(resampled).all()
    with pytest.raises(ValueError, match="reference"):
        with ablated(model, circuit, mode="mean"):
            pass


def test_ablating_a_circuit_of_another_model_is_refused(gqa):
    other = Circuit.from_units(ModelShape(n_layers=3, n_heads=4, d_mlp=96, model_name="other"), heads=[[2, 0]])
    with pytest.raises(ValueError, match="n_layers, n_heads, d_mlp"):
        with ablated(gqa.model, other):
            pass


def test_mask_with_a_mean_fill_equals_mean_ablation(gqa, tokens):
    model = gqa.model
    reference = ReferenceActivations.collect(model, [(tokens, torch.ones_like(tokens))], pool_size=0)
    circuit = Circuit.from_units(gqa.shape, heads=[[1, 0]], neurons=[[0, 4], [1, 1]])
    keep = {kind: (~circuit.get(kind)).float() for kind in ("heads", "neurons")}
    with ablated(model, circuit, mode="mean", reference=reference):
        expected = model(tokens)
    with masked(model, heads=keep["heads"], neurons=keep["neurons"], fill=reference.means):
        got = model(tokens)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
