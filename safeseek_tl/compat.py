"""Every place where safeseek-tl touches TransformerLens or transformers internals.

The rest of the library uses only public APIs (hook names, ``run_with_hooks``, ``model.hooks``,
``generate``); what depends on how a release of either library works inside lives here, so that
the next release that moves something is fixed in one file:

- booting a ``TransformerBridge`` on a preloaded Hugging Face model, and GGUF conversion;
- the KV-cache keyword: transformers 5.24 renamed ``past_key_values`` to ``cache`` in decoder
  layers and attention modules; TransformerLens 4.3's ``AttentionBridge._update_kv_cache`` reads
  only the old names, so on 5.24 the cache stays empty and every generated token after the first
  attends to itself alone. :func:`fix_kv_cache_keyword` mends a bridge's attention components;
- :func:`check_cached_generation`, the self-check that stops before wrong generations are judged,
  and :func:`check_generation_once`, which remembers a passed check in a converted model's folder;
- hiding the first decoder layers of the wrapped model (:func:`only_blocks_from`);
- adding and removing a hook directly on a ``HookPoint`` (without ``model.hooks`` rebuilding the
  hook dictionary).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Int
from torch import Tensor, nn

from safeseek_tl._io import write_json
from safeseek_tl.errors import InputError

if TYPE_CHECKING:  # imported for the annotations only: loading it takes seconds
    from transformer_lens.model_bridge import TransformerBridge

SHARDING_KWARGS = ("device_map", "n_devices", "max_memory", "offload_folder")
"""``TransformerBridge.boot_transformers`` options that place a model over several devices."""

KV_CACHE_KEYWORDS = ("cache", "past_key_values", "layer_past")
"""Names under which a decoder layer or attention module receives the KV cache: ``cache`` from
transformers 5.24 on, ``past_key_values`` before, ``layer_past`` in some older architectures."""

_CHECKED_ATTRIBUTE = "_safeseek_cached_generation_checked"

LIBRARIES = ("transformers", "transformer-lens", "torch")
"""The libraries whose internals this module depends on."""

GENERATION_CHECK_FILE = "safeseek_generation_check.json"
"""The marker of a passed generation self-check in a converted model's folder (:func:`check_generation_once`)."""


class GenerationMismatchError(RuntimeError):
    """Cached generation gives other tokens than uncached generation: generated text would be wrong."""


def library_versions() -> str:
    """The releases of the libraries whose internals this module depends on, for messages and reports."""
    return ", ".join(f"{name} {version(name)}" for name in LIBRARIES)


def causal_lm(model: Any) -> Any:
    """The Hugging Face model a bridge wraps (``model`` itself when it is a plain HF model)."""
    return getattr(model, "original_model", model)


def kv_cache_from(kwargs: Mapping[str, Any]) -> Any:
    """The KV cache passed to a layer or model call under any of :data:`KV_CACHE_KEYWORDS` (or None)."""
    for keyword in KV_CACHE_KEYWORDS:
        if kwargs.get(keyword) is not None:
            return kwargs[keyword]
    return None


def fix_kv_cache_keyword(bridge: TransformerBridge) -> None:
    """Let every attention component of ``bridge`` fill the KV cache whatever its keyword.

    Patches the instances (not the TransformerLens class), so only bridges this library loads are
    changed. Idempotent. On releases that still pass ``past_key_values`` this changes nothing.
    """
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

    for module in bridge.modules():
        if isinstance(module, AttentionBridge) and "_update_kv_cache" not in vars(module):
            # patches this instance only, on purpose (see the docstring)
            module._update_kv_cache = _cache_keyword_aware(module._update_kv_cache)  # type: ignore[method-assign]


def _cache_keyword_aware(update: Callable[..., tuple[Tensor, Tensor]]) -> Callable[..., tuple[Tensor, Tensor]]:
    def update_kv_cache(k: Tensor, v: Tensor, **kwargs: Any) -> tuple[Tensor, Tensor]:
        cache = kwargs.pop("cache", None)
        if cache is not None and kwargs.get("past_key_values") is None:
            kwargs["past_key_values"] = cache
        return update(k, v, **kwargs)

    return update_kv_cache


def pad_token_id(tokenizer: Any) -> int:
    """The id that pads a batch: the tokenizer's pad token, else its end-of-sequence token, else 0."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


def greedy_generate(
    model: TransformerBridge,
    input_ids: Int[Tensor, "batch prompt_pos"],
    attention_mask: Int[Tensor, "batch prompt_pos"],
    tokenizer: Any,
    max_new_tokens: int,
    use_cache: bool = True,
) -> Int[Tensor, "batch pos"]:
    """Prompt + greedy completion by Hugging Face ``generate`` on the wrapped model (hooks apply)."""
    return causal_lm(model).generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=pad_token_id(tokenizer),
        eos_token_id=tokenizer.eos_token_id,
        use_cache=use_cache,
    )


PROBE_TEXTS = ("The three primary colours are", "Count with me: one, two, three, four, five, six,")
"""Prompts of the generation self-check: two lengths, so that the shorter row is left-padded."""


def probe_batch(tokenizer: Any, texts: Sequence[str] = PROBE_TEXTS) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """``texts`` tokenized and left-padded by hand (whatever the tokenizer's own padding side)."""
    pad_id = pad_token_id(tokenizer)
    rows = [tokenizer(text).input_ids for text in texts]
    width = max(map(len, rows))
    ids = torch.tensor([[pad_id] * (width - len(row)) + row for row in rows])
    mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows])
    return ids, mask


@torch.no_grad()
def check_cached_generation(model: TransformerBridge, tokenizer: Any, max_new_tokens: int = 6) -> None:
    """Stop with :class:`GenerationMismatchError` unless cached greedy generation equals uncached.

    Generation with a KV cache goes through library internals that a new transformers or
    TransformerLens release can break without any error (transformers 5.24 did); uncached
    generation needs only forward passes. Checked once per model on :data:`PROBE_TEXTS` (a
    left-padded batch) and remembered on the wrapped model: :func:`boot_bridge` checks every model
    the library loads (a converted folder remembers a pass: :func:`check_generation_once`), :func:`safeseek_tl.generation.generate` any other before its first batch
    (with the hooks active at that moment).
    """
    hf_model = causal_lm(model)
    if getattr(hf_model, _CHECKED_ATTRIBUTE, False):
        return
    ids, mask = probe_batch(tokenizer)
    device = next(hf_model.parameters()).device
    ids, mask = ids.to(device), mask.to(device)
    cached = greedy_generate(model, ids, mask, tokenizer, max_new_tokens, use_cache=True)
    uncached = greedy_generate(model, ids, mask, tokenizer, max_new_tokens, use_cache=False)
    if not torch.equal(cached, uncached):
        raise GenerationMismatchError(
            f"cached generation differs from uncached generation (row {_first_differing_row(cached, uncached)} of the "
            f"self-check prompts {list(PROBE_TEXTS)}), so generated answers and every rate judged from them would be "
            f"wrong. Installed: {library_versions()}. Install the tested versions (`make setup` installs them from "
            "requirements.lock) or report this pair of releases."
        )
    setattr(hf_model, _CHECKED_ATTRIBUTE, True)


def generation_check_key(model: Any, folder: Path) -> dict[str, Any]:
    """What a passed self-check holds for: the library releases, the weight files, device type and dtype.

    The weight files are named by name, size and modification time (hashing 2.5 GB would cost
    seconds on every load); :func:`gguf_to_folder` writes them once and never again.
    """
    files = sorted(path for path in folder.iterdir() if path.is_file() and path.name != GENERATION_CHECK_FILE)
    parameter = next(causal_lm(model).parameters())
    return {
        "libraries": {name: version(name) for name in LIBRARIES},
        "files": [[path.name, path.stat().st_size, path.stat().st_mtime_ns] for path in files],
        "device": parameter.device.type,
        "dtype": str(parameter.dtype),
    }


def check_generation_once(model: Any, tokenizer: Any, folder: Path) -> None:
    """:func:`check_cached_generation`, skipped when ``folder`` remembers a pass with the same key.

    Only folders this library converted (in :func:`cache_dir`) remember: a user's folder is not
    written to. The marker (:data:`GENERATION_CHECK_FILE`, written atomically after a pass) holds
    :func:`generation_check_key`, so any other transformers, TransformerLens or torch release,
    other weights, device type or dtype checks again.
    """
    marker = folder / GENERATION_CHECK_FILE
    if not folder.resolve().is_relative_to(cache_dir().resolve()):
        check_cached_generation(model, tokenizer)
        return
    key = generation_check_key(model, folder)
    try:
        remembered = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none yet, or unreadable: check again
        remembered = None
    if remembered == key:
        setattr(causal_lm(model), _CHECKED_ATTRIBUTE, True)
        return
    check_cached_generation(model, tokenizer)
    write_json(marker, key)


def _first_differing_row(a: Tensor, b: Tensor) -> int:
    if a.shape != b.shape:
        return 0
    return int((a != b).any(-1).nonzero()[0, 0])


def boot_bridge(folder: Path, name: str, device: str, dtype: torch.dtype, hf_model: Any = None, **bridge_kwargs: Any) -> tuple[TransformerBridge, Any]:
    """A frozen, eval-mode ``TransformerBridge`` over the model in ``folder`` (or ``hf_model``) and its tokenizer."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    in_memory = hf_model is not None
    # With a placement over several devices the bridge must load the weights itself (accelerate
    # dispatches them as it loads): TransformerBridge refuses a preloaded model with one.
    sharded = any(key in bridge_kwargs for key in SHARDING_KWARGS)
    if sharded:
        if hf_model is not None:
            raise InputError(f"model {name!r} is built in memory (a delta organism) and loads on one device; {', '.join(SHARDING_KWARGS)} need a model folder")
    else:
        bridge_kwargs["device"] = device
        if hf_model is None:
            hf_model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
        # the bridge leaves a preloaded model where it is: without this it would run on the CPU
        hf_model.to(device)
    bridge = TransformerBridge.boot_transformers(str(folder), hf_model=hf_model, tokenizer=tokenizer, dtype=dtype, **bridge_kwargs)
    bridge.eval()
    bridge.requires_grad_(False)
    bridge.cfg.model_name = name
    fix_kv_cache_keyword(bridge)
    if not in_memory:
        check_generation_once(bridge, tokenizer, folder)
    else:  # weights changed in memory (a delta organism): the folder's marker would not describe them
        check_cached_generation(bridge, tokenizer)
    # The tokenizer carries the model's context to the data code (data.context_length): prompts cut to fit.
    if getattr(bridge.cfg, "n_ctx", None) and tokenizer.model_max_length > bridge.cfg.n_ctx:
        tokenizer.model_max_length = int(bridge.cfg.n_ctx)
    return bridge, tokenizer


def cache_dir() -> Path:
    """Where converted models are cached (``$SAFESEEK_CACHE`` or ``~/.cache/safeseek_tl``)."""
    return Path(os.environ.get("SAFESEEK_CACHE", Path.home() / ".cache" / "safeseek_tl"))


def gguf_to_folder(gguf_file: Path) -> Path:
    """Convert a GGUF checkpoint to a plain float32 Hugging Face folder in :func:`cache_dir`, once."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    stat = gguf_file.stat()
    key = hashlib.sha256(f"{gguf_file.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    folder = cache_dir() / "gguf" / f"{gguf_file.stem}-{key}"
    if (folder / "config.json").exists():
        return folder
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
    # save_pretrained refuses GGUF-loaded models: rebuild a plain model from the config and weights.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config.to_dict()), dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())
    tmp = folder.with_name(folder.name + ".partial")
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(folder)
    return folder


def _block_list(model: TransformerBridge) -> tuple[nn.Module, str] | None:
    """The module and attribute name of the Hugging Face ``ModuleList`` holding the bridge's blocks."""
    first = model.blocks[0]
    for name, module in model.original_model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) and module[0] is first:
            owner, _, attribute = name.rpartition(".")
            return model.original_model.get_submodule(owner), attribute
    return None


@contextmanager
def only_blocks_from(model: TransformerBridge, layer: int) -> Iterator[None]:
    """Inside the block, the model's forward runs blocks ``layer``.. only (the layer list is cut).

    Where the blocks are not found in a ``ModuleList`` of the wrapped model, nothing is cut: the
    results are the same, the earlier blocks just run for nothing.
    """
    found = _block_list(model)
    if found is None or layer == 0:
        yield
        return
    owner, attribute = found
    full = getattr(owner, attribute)
    setattr(owner, attribute, nn.ModuleList(list(full)[layer:]))
    try:
        yield
    finally:
        setattr(owner, attribute, full)


def hook_points(model: TransformerBridge, names: Sequence[str]) -> list[Any]:
    """The ``HookPoint`` objects of ``names`` (resolved once: ``model.hooks`` rebuilds them per call)."""
    hook_dict = model.hook_dict
    return [hook_dict[name] for name in names]


def add_point_hook(point: Any, hook: Callable[..., Any]) -> Callable[[], None]:
    """Add a forward hook to one ``HookPoint``; returns the function that removes it again."""
    handle = point.add_hook(hook)

    def remove() -> None:
        handle.hook.remove()
        point.fwd_hooks.remove(handle)

    return remove
