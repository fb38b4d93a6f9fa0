"""Safeguard: predict, before generation, whether a model's answer will be unsafe, from a circuit.

The Safety Neurons paper's safeguard (docs/choices.md, "Safeguard") is a logistic regression on the
activations of chosen units at the last prompt token. Here the units are any
:class:`~safeseek_tl.units.Circuit`: a SafeSeek circuit, the top contrasting neurons, or a random
control of the same size. A neuron contributes its ``hook_post`` value. A head contributes its whole
``hook_z`` vector (``d_head`` values), not only its norm: a head writes ``z @ W_O``, so what it adds
to the residual stream depends on the direction of ``z`` (which token it attended to), which the
norm throws away.

Labels come from the model itself: a prompt is *unsafe* when it is harmful and the model's own
greedy answer is not a refusal (:class:`~safeseek_tl.metrics.RefusalJudge`); benign prompts are
safe whatever the answer.

The features are read by :mod:`safeseek_tl.readout` (:class:`~safeseek_tl.readout.CircuitReader`),
the same code the run-time :class:`~safeseek_tl.monitor.Monitor` reads them with; this module
re-exports its names. A safeguard saves without pickles: its circuit as ``circuit.json``, weights
and standardization in ``safeguard.safetensors``, settings in ``safeguard.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from safeseek_tl import runs
from safeseek_tl._io import read_json, read_safetensors, write_json, write_safetensors
from safeseek_tl.data import AlignmentRecord, BackdoorRecord, BenignRecord, Record
from safeseek_tl.errors import InputError
from safeseek_tl.evaluate import refusal_scores
from safeseek_tl.generation import generate
from safeseek_tl.metrics import RefusalJudge
from safeseek_tl.models import LoadedModel
from safeseek_tl.readout import (
    CircuitReader,
    LayerKey,
    PromptReadout,
    circuit_features,
    circuit_layers,
    feature_count,
    read_prompts,
    unit_labels,
)
from safeseek_tl.units import Circuit, ModelShape, ShapeMismatchError

FORMAT = "safeseek_tl.safeguard/1"


# ---------------------------------------------------------------- labels
def labelled_prompts(records: Sequence[Record]) -> tuple[list[str], list[bool]]:
    """Prompts of the records and whether each is harmful.

    Backdoor records give their clean and their triggered prompt (both harmful requests: the
    backdoor decides whether the model complies), alignment records their harmful prompt, benign
    records their prompt (not harmful).
    """
    prompts: list[str] = []
    harmful: list[bool] = []
    for record in records:
        if isinstance(record, BackdoorRecord):
            prompts += [record.input, record.backdoor_input]
            harmful += [True, True]
        elif isinstance(record, AlignmentRecord):
            prompts.append(record.prompt)
            harmful.append(True)
        elif isinstance(record, BenignRecord):
            prompts.append(record.prompt)
            harmful.append(False)
        else:
            raise TypeError(f"expected backdoor, alignment or benign records, got {type(record).__name__}")
    return prompts, harmful


def unsafe_labels(
    loaded: LoadedModel,
    prompts: Sequence[str],
    harmful: Sequence[bool],
    *,
    judge: RefusalJudge | None = None,
    max_new_tokens: int = 32,
    batch_size: int = 16,
    progress: bool = True,
) -> Bool[Tensor, " n_prompts"]:
    """True where ``prompts[i]`` is harmful and the model's own greedy answer is not a refusal.

    Only the harmful prompts are generated from: a benign prompt is safe whatever the answer.
    """
    if len(prompts) != len(harmful):
        raise InputError(f"{len(prompts)} prompts but {len(harmful)} harmful flags")
    judge = judge or RefusalJudge()
    labels = torch.zeros(len(prompts), dtype=torch.bool)
    asked = [i for i, flag in enumerate(harmful) if flag]
    if asked:
        answers = generate(loaded.model, loaded.chat, [prompts[i] for i in asked], max_new_tokens, batch_size, progress)
        labels[asked] = torch.tensor([not judge.is_refusal(answer) for answer in answers])
    return labels



def judged_prompts(
    loaded: LoadedModel, records: Sequence[Record], *, judge: RefusalJudge | None = None, max_new_tokens: int = 32
) -> tuple[list[str], Bool[Tensor, " n_prompts"], float | None]:
    """The records' prompts (:func:`labelled_prompts`), their labels (:func:`unsafe_labels`) and the mean
    logit refusal score of the harmful ones (None without any), to read beside the judged labels."""
    prompts, harmful = labelled_prompts(records)
    labels = unsafe_labels(loaded, prompts, harmful, judge=judge, max_new_tokens=max_new_tokens)
    asked = [prompt for prompt, is_harmful in zip(prompts, harmful) if is_harmful]
    score = float(refusal_scores(loaded, asked).mean()) if asked else None
    return prompts, labels, score

def split_indices(labels: Bool[Tensor, " n"], test_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """A seeded train/held-out split of ``range(n)``, stratified by label when both classes allow it."""
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"the held-out fraction must be strictly between 0 and 1, got {test_fraction}")
    values = labels.numpy()
    stratify = values if min(int(values.sum()), int((~values).sum())) >= 2 else None
    train, test = train_test_split(np.arange(len(values)), test_size=test_fraction, random_state=seed, stratify=stratify)
    return sorted(train.tolist()), sorted(test.tolist())


# ---------------------------------------------------------------- the classifier
@dataclass
class Safeguard:
    """Logistic regression on standardized circuit features; ``unsafe`` is probability >= ``threshold``.

    Prediction uses the stored parameters (float64), so a loaded safeguard predicts exactly what
    the saved one did: ``p = sigmoid(((x - mean) / scale) @ weights + bias)``, the sum of each row
    rounded once (:meth:`logits`).
    """

    circuit: Circuit
    d_head: int
    weights: Float[Tensor, " n_features"]
    bias: float
    mean: Float[Tensor, " n_features"]
    scale: Float[Tensor, " n_features"]
    threshold: float = 0.5
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        expected = feature_count(self.circuit, self.d_head)
        for name in ("weights", "mean", "scale"):
            value = getattr(self, name)
            if tuple(value.shape) != (expected,):
                raise ShapeMismatchError(
                    f"safeguard {name} have shape {tuple(value.shape)}, but its circuit ({self.circuit.n_heads} heads x "
                    f"d_head {self.d_head} + {self.circuit.n_neurons} neurons) gives {expected} features"
                )
            setattr(self, name, value.detach().double().cpu())
        if not 0.0 < self.threshold < 1.0:
            raise InputError(f"the decision threshold must be a probability in (0, 1), got {self.threshold}")

    @property
    def n_features(self) -> int:
        return int(self.weights.numel())

    @classmethod
    def fit(
        cls,
        features: Float[Tensor, "n n_features"],
        labels: Bool[Tensor, " n"],
        circuit: Circuit,
        d_head: int,
        *,
        C: float = 1.0,
        max_iter: int = 1000,
        **metadata: Any,
    ) -> Safeguard:
        """Fit scikit-learn's ``StandardScaler`` and ``LogisticRegression`` (L2, ``C``; the paper used the defaults)."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        x, y = cls._arrays(features, labels, feature_count(circuit, d_head))
        if y.min() == y.max():
            kind = "unsafe" if y[0] else "safe"
            raise InputError(
                f"all {len(y)} training prompts are labelled {kind}; a safeguard needs both classes. Add prompts the model "
                "answers unsafely (triggered prompts, a model without the alignment) and prompts it handles safely"
            )
        scaler = StandardScaler().fit(x)
        model = LogisticRegression(C=C, max_iter=max_iter).fit(scaler.transform(x), y)
        return cls(
            circuit=circuit,
            d_head=d_head,
            weights=torch.from_numpy(model.coef_[0].copy()),
            bias=float(model.intercept_[0]),
            mean=torch.from_numpy(scaler.mean_.copy()),
            scale=torch.from_numpy(scaler.scale_.copy()),
            metadata={"n_train": len(y), "unsafe_rate_train": float(y.mean()), "C": C, **metadata},
        )

    @staticmethod
    def _arrays(features: Tensor, labels: Tensor | None, n_features: int) -> tuple[np.ndarray, np.ndarray]:
        if features.dim() != 2 or features.shape[1] != n_features:
            raise ShapeMismatchError(f"features have shape {tuple(features.shape)}; this circuit gives [n, {n_features}]")
        x = features.detach().double().cpu().numpy()
        if labels is None:
            return x, np.empty(0, dtype=bool)
        if labels.shape != (features.shape[0],):
            raise InputError(f"{features.shape[0]} feature rows but labels of shape {tuple(labels.shape)}")
        return x, labels.detach().bool().cpu().numpy()

    def logits(self, features: Float[Tensor, "n n_features"]) -> Float[Tensor, " n"]:
        """Log-odds that each answer will be unsafe (float64).

        Each row's ``sum(weights * (x - mean) / scale) + bias`` is rounded once, from its exact value
        (``math.fsum``), so it does not depend on the order its terms are added in. A BLAS
        matrix-vector product (``@``, as this was) promises no order: MKL, outside its
        reproducibility mode, does not promise the same bits for operands at other memory
        alignments or thread counts, and the same weights are held by numpy after fitting and by
        torch after loading (a fitted and a reloaded safeguard once predicted probabilities that
        were not bit-identical). The products are elementwise IEEE operations, the same bits on
        any path.
        """
        x = self._arrays(features, None, self.n_features)[0]
        terms = (x - self.mean.numpy()) / self.scale.numpy() * self.weights.numpy()
        return torch.tensor([math.fsum([*row, self.bias]) for row in terms.tolist()], dtype=torch.float64)

    def probability(self, features: Float[Tensor, "n n_features"]) -> Float[Tensor, " n"]:
        """Probability that each answer will be unsafe."""
        return torch.sigmoid(self.logits(features))

    def predict(self, features: Float[Tensor, "n n_features"]) -> Bool[Tensor, " n"]:
        return self.probability(features) >= self.threshold

    def evaluate(self, features: Float[Tensor, "n n_features"], labels: Bool[Tensor, " n"]) -> dict[str, float]:
        """Accuracy, AUROC (NaN when only one class is present) and the majority-class accuracy to compare with."""
        from sklearn.metrics import accuracy_score, roc_auc_score

        _, y = self._arrays(features, labels, self.n_features)
        probability = self.probability(features).numpy()
        unsafe_rate = float(y.mean())
        return {
            "n": len(y),
            "unsafe_rate": unsafe_rate,
            "accuracy": float(accuracy_score(y, probability >= self.threshold)),
            "majority_accuracy": max(unsafe_rate, 1.0 - unsafe_rate),
            "auroc": float(roc_auc_score(y, probability)) if 0.0 < unsafe_rate < 1.0 else math.nan,
        }

    def check_model(self, loaded: LoadedModel) -> None:
        """Refuse a model whose shape or head size differs from the one the safeguard was trained on."""
        loaded.shape.check_compatible(self.circuit.shape, "the safeguard's circuit")
        d_head = int(loaded.model.cfg.d_head)
        if d_head != self.d_head:
            raise ShapeMismatchError(f"the safeguard was trained on heads of d_head {self.d_head}, but this model has d_head {d_head}")

    def features(self, loaded: LoadedModel, prompts: Sequence[str], batch_size: int = 32, progress: bool = True) -> Float[Tensor, "n n_features"]:
        """This safeguard's features of ``prompts`` on ``loaded`` (checked to fit)."""
        self.check_model(loaded)
        return circuit_features(loaded, self.circuit, prompts, batch_size, progress)

    # ---- persistence ----
    def save(self, out_dir: str | Path) -> None:
        """Write ``circuit.json``, ``safeguard.safetensors`` (float64 parameters) and ``safeguard.json``."""
        out = Path(out_dir)
        self.circuit.save(out / runs.CIRCUIT)
        tensors = {"weights": self.weights, "bias": torch.tensor([self.bias], dtype=torch.float64), "mean": self.mean, "scale": self.scale}
        write_safetensors(out / runs.SAFEGUARD_TENSORS, tensors, {"format": FORMAT})
        payload = {
            "format": FORMAT,
            "model": self.circuit.shape.to_dict(),
            "d_head": self.d_head,
            "n_features": self.n_features,
            "threshold": self.threshold,
            "features": "last prompt token; heads: hook_z vectors (d_head each), neurons: hook_post; standardized",
            "metadata": self.metadata,
        }
        write_json(out / runs.SAFEGUARD_JSON, json.loads(json.dumps(payload, default=str)))

    @classmethod
    def load(cls, out_dir: str | Path, expected: ModelShape | None = None) -> Safeguard:
        """Load a safeguard saved by :meth:`save`; with ``expected``, refuse one made for another model shape."""
        out = Path(out_dir)
        for name in (runs.CIRCUIT, runs.SAFEGUARD_TENSORS, runs.SAFEGUARD_JSON):
            if not (out / name).is_file():
                raise FileNotFoundError(f"{out} is not a safeguard folder: {name} is missing")
        settings = read_json(out / runs.SAFEGUARD_JSON)
        if not isinstance(settings, dict) or settings.get("format") != FORMAT:
            raise InputError(f"{out / 'safeguard.json'}: not a safeguard file (expected format {FORMAT!r})")
        circuit = Circuit.load(out / runs.CIRCUIT, expected)
        ModelShape.from_dict(settings["model"], str(out / runs.SAFEGUARD_JSON)).check_compatible(circuit.shape, f"circuit {out / runs.CIRCUIT}")
        tensors, _ = read_safetensors(out / runs.SAFEGUARD_TENSORS, "safeguard file")
        missing = {"weights", "bias", "mean", "scale"} - tensors.keys()
        if missing:
            raise InputError(f"{out / 'safeguard.safetensors'}: missing tensors {sorted(missing)}")
        return cls(
            circuit=circuit,
            d_head=int(settings["d_head"]),
            weights=tensors["weights"],
            bias=float(tensors["bias"][0]),
            mean=tensors["mean"],
            scale=tensors["scale"],
            threshold=float(settings.get("threshold", 0.5)),
            metadata=settings.get("metadata", {}),
        )


# the readout names stay importable from here, where they were first defined
__all__ = [
    "FORMAT",
    "CircuitReader",
    "LayerKey",
    "PromptReadout",
    "Safeguard",
    "circuit_features",
    "circuit_layers",
    "feature_count",
    "labelled_prompts",
    "read_prompts",
    "split_indices",
    "unit_labels",
    "unsafe_labels",
]
