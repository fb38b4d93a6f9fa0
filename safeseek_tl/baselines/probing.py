"""Linear probes: how well each layer's last-token residual stream separates two prompt sets.

A layer-level baseline: a logistic-regression probe per layer (scikit-learn, standardized features)
on the last prompt token's ``blocks.{l}.hook_{site}``, trained on a stratified split and scored by
held-out accuracy. It says *where* the behaviour is linearly readable, not which unit carries it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from safeseek_tl.data import batch_slices, tokenize_prompts, trim_padding
from safeseek_tl.errors import InputError, ShapeMismatchError
from safeseek_tl.models import LoadedModel
from safeseek_tl.units import ModelShape, Scores

Site = Literal["resid_pre", "resid_mid", "resid_post"]
SITES: tuple[Site, ...] = ("resid_pre", "resid_mid", "resid_post")


@dataclass
class ProbeResult:
    """Held-out (and training) accuracy of one linear probe per layer."""

    accuracy: Float[Tensor, " n_layers"]
    train_accuracy: Float[Tensor, " n_layers"]
    n_train: int
    n_test: int
    site: str

    def to_scores(self, shape: ModelShape) -> Scores:
        """Broadcast each layer's held-out accuracy to all its heads and neurons (a layer-level map:
        every unit of a layer gets the same score)."""
        if shape.n_layers != len(self.accuracy):
            raise ShapeMismatchError(f"probes cover {len(self.accuracy)} layers, the model has {shape.n_layers}")
        column = self.accuracy.float()[:, None]
        return Scores(
            shape=shape,
            heads=column.expand(shape.size("heads")).clone(),
            neurons=column.expand(shape.size("neurons")).clone(),
            method="probe",
            metadata={
                "granularity": "layer: each unit gets its layer's held-out probe accuracy",
                "site": self.site,
                "n_train": self.n_train,
                "n_test": self.n_test,
                "accuracy": self.accuracy.tolist(),
            },
        )


@torch.no_grad()
def _last_token_activations(loaded: LoadedModel, prompts: Sequence[str], site: Site, batch_size: int, progress: bool) -> np.ndarray:
    """``[n_prompts, n_layers, d_model]`` float32 activations at each prompt's last token."""
    n_layers = loaded.shape.n_layers
    names = [f"blocks.{layer}.hook_{site}" for layer in range(n_layers)]
    tokens = tokenize_prompts(loaded.chat, prompts)
    out = np.zeros((len(prompts), n_layers, int(loaded.model.cfg.d_model)), dtype=np.float32)
    for part in tqdm(batch_slices(len(prompts), batch_size), desc="probe activations", disable=not progress, leave=False):
        ids, mask = trim_padding(tokens.input_ids[part], tokens.attention_mask[part], right=False)
        _, cache = loaded.model.run_with_cache(ids.to(loaded.device), attention_mask=mask.to(loaded.device), names_filter=lambda name: name in names)
        out[part] = torch.stack([cache[name][:, -1] for name in names], dim=1).float().cpu().numpy()
    return out


def linear_probes(
    loaded: LoadedModel,
    positive_prompts: Sequence[str],
    negative_prompts: Sequence[str],
    *,
    test_fraction: float = 0.3,
    seed: int = 0,
    site: Site = "resid_post",
    batch_size: int = 16,
    progress: bool = True,
    **logistic_options: Any,
) -> ProbeResult:
    """Train one logistic-regression probe per layer to tell positive from negative prompts.

    Features: the last prompt token's ``blocks.{l}.hook_{site}`` (standardized); a stratified
    ``test_fraction`` of the prompts is held out (``seed``). ``logistic_options`` go to
    ``sklearn.linear_model.LogisticRegression`` (default ``max_iter=1000``).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if site not in SITES:
        raise InputError(f"probe site must be one of {SITES}, got {site!r}")
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if min(len(positive_prompts), len(negative_prompts)) < 2:
        raise InputError("linear probes need at least 2 positive and 2 negative prompts (one of each to train and to test)")
    features = _last_token_activations(loaded, [*positive_prompts, *negative_prompts], site, batch_size, progress)
    labels = np.array([1] * len(positive_prompts) + [0] * len(negative_prompts))
    train, test = train_test_split(np.arange(len(labels)), test_size=test_fraction, stratify=labels, random_state=seed)
    options = {"max_iter": 1000, **logistic_options}
    accuracy, train_accuracy = [], []
    for layer in range(features.shape[1]):
        probe = make_pipeline(StandardScaler(), LogisticRegression(**options))
        probe.fit(features[train, layer], labels[train])
        accuracy.append(probe.score(features[test, layer], labels[test]))
        train_accuracy.append(probe.score(features[train, layer], labels[train]))
    return ProbeResult(torch.tensor(accuracy), torch.tensor(train_accuracy), len(train), len(test), site)
