"""Shared fixtures: tiny random models built in the tests (no downloads)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jaxtyping
import pytest
import torch

import tests.shapecheck  # noqa: F401  (the hook's decorators look it up as an attribute of `tests`)

# Before the library is first imported: every function of safeseek_tl checks its tensors' jaxtyping
# shapes in the test run (tests/shapecheck.py says what is checked and what is not).
jaxtyping.install_import_hook("safeseek_tl", "tests.shapecheck.shapes_only")

from safeseek_tl.models import LoadedModel, load_model  # noqa: E402  (after the hook, on purpose)

SPECIAL = ["<pad>", "<unk>", "<s>", "<|user|>", "<|assistant|>", "<|end|>"]
WORDS = ["I", "Sorry", "As", "cannot", "help", "sure", "here", "is", "how", "to", "do", "it", ",", ".", "?", "a", "the", "bake", "cake", "steal", "car", "tell", "me"]
CHAT_TEMPLATE = (
    "<s>{% for m in messages %} <|{{ m['role'] }}|> {{ m['content'] }} <|end|>{% endfor %}"
    "{% if add_generation_prompt %} <|assistant|>{% endif %}"
)


def make_word_tokenizer(chat_template: str | None = CHAT_TEMPLATE):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(SPECIAL + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="<|end|>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<|user|>", "<|assistant|>", "<|end|>"],
        padding_side="left",
    )
    if chat_template:
        tokenizer.chat_template = chat_template
    return tokenizer


def save_random_gqa_model(folder, chat_template: str | None = CHAT_TEMPLATE, seed: int = 0) -> None:
    """A random 2-layer Llama-architecture model with grouped-query attention (4 query, 2 KV heads)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = make_word_tokenizer(chat_template)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


@pytest.fixture(scope="session")
def gqa_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_gqa_model")
    save_random_gqa_model(folder)
    return folder


@pytest.fixture(scope="session")
def gqa(gqa_dir) -> LoadedModel:
    return load_model(gqa_dir)


@pytest.fixture(scope="session")
def native_bridge():
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    cfg = TransformerBridgeConfig(n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=128, act_fn="gelu", d_vocab=100, n_ctx=32, seed=0)
    bridge = TransformerBridge.boot_native(cfg)
    bridge.eval()
    bridge.requires_grad_(False)
    return bridge


@pytest.fixture
def tokens():
    generator = torch.Generator().manual_seed(0)
    return torch.randint(6, 29, (3, 10), generator=generator)


@pytest.fixture(scope="module")
def sharp(gqa_dir):
    """The tiny GQA model with sharp attention and logits (tests.helpers.load_sharp), run on one
    thread: these tiny models gain nothing from threads, and on a busy 2-core machine OpenMP
    spin-waits made each forward ~25x slower."""
    from tests.helpers import load_sharp

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_sharp(gqa_dir)
    torch.set_num_threads(before)
