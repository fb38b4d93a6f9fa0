"""Run-time monitor on a circuit: flag likely-unsafe prompts and tampering, before generation.

A safety circuit small enough to find is also small enough to remove: zeroing or scaling down a few
units (``ablated(..., strength=)``) undoes the behaviour. :class:`Monitor` is a context manager of
read-only hooks that, for every prompt the model processes,

- (a) asks a :class:`~safeseek_tl.safeguard.Safeguard` whether the answer will be unsafe, and
- (b) checks the circuit's activations against a :class:`TamperReference` fitted on clean runs.

Both read the prompt pass only (the forward pass before the first generated token), so the verdict
is there before any token is produced and decoding steps cost nothing extra.

Tamper score: for each unit of the circuit, its mean activation magnitude over the prompt
(``|hook_post|`` for neurons, ``||hook_z||`` for heads) becomes a z-score against the clean
reference; the prompt's score is the largest ``|z|``, and the unit that has it is named. The
threshold is a split-conformal quantile of the scores of held-out clean prompts, so that the
false-alarm rate on clean prompts like them is at most the target.

What it cannot see: edits that leave the watched activations alone, such as zeroing a head's
``W_O`` columns or a neuron's ``W_out`` column (the unit still fires, its output is dropped); a
weight checksum covers those. Tampering only during decoding (not on the prompt) is not seen either.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from safeseek_tl import runs
from safeseek_tl._io import read_json, read_safetensors, write_json, write_safetensors
from safeseek_tl.errors import InputError
from safeseek_tl.models import LoadedModel
from safeseek_tl.readout import CircuitReader, PromptReadout, read_prompts, unit_labels
from safeseek_tl.safeguard import Safeguard
from safeseek_tl.units import Circuit, ModelShape, ShapeMismatchError

FORMAT = "safeseek_tl.tamper_reference/1"
# a unit whose magnitude barely varies on clean prompts gets this relative spread at least, so that
# float noise (another batch, another padding) cannot raise a z-score
MIN_RELATIVE_STD = 0.01


def conformal_threshold(scores: Float[Tensor, " n"], false_alarm: float) -> float:
    """The ``ceil((n + 1)(1 - false_alarm))``-th smallest calibration score (split-conformal).

    A new clean score exchangeable with the calibration scores exceeds it with probability at
    most ``false_alarm``.
    """
    if not 0.0 < false_alarm < 1.0:
        raise InputError(f"the target false-alarm rate must be in (0, 1), got {false_alarm}")
    n = scores.numel()
    rank = math.ceil((n + 1) * (1.0 - false_alarm))
    if rank > n:
        raise InputError(
            f"{n} calibration prompts cannot set a threshold for a false-alarm rate of {false_alarm}: "
            f"use at least {math.ceil(1.0 / false_alarm) - 1} calibration prompts or a higher rate"
        )
    return float(scores.sort().values[rank - 1])


@dataclass
class TamperReference:
    """Per-unit reference of a circuit's activation magnitudes on clean prompts, and the alarm threshold."""

    circuit: Circuit
    mean: Float[Tensor, " n_units"]
    std: Float[Tensor, " n_units"]
    threshold: float
    false_alarm: float
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n_units = len(self.circuit)
        for name in ("mean", "std"):
            value = getattr(self, name)
            if tuple(value.shape) != (n_units,):
                raise ShapeMismatchError(f"tamper reference {name} has shape {tuple(value.shape)}, but the circuit has {n_units} units")
            setattr(self, name, value.detach().float().cpu())

    @classmethod
    @torch.no_grad()
    def fit(
        cls,
        loaded: LoadedModel,
        circuit: Circuit,
        prompts: Sequence[str],
        calibration_prompts: Sequence[str],
        *,
        false_alarm: float = 0.01,
        batch_size: int = 32,
        progress: bool = True,
    ) -> TamperReference:
        """Fit the per-unit mean and spread on ``prompts`` (clean runs), then set the threshold on
        ``calibration_prompts`` (other clean prompts) for the target ``false_alarm`` rate."""
        if len(prompts) < 2:
            raise InputError(f"the reference needs at least 2 clean prompts to measure a spread, got {len(prompts)}")
        reference = read_prompts(loaded, [circuit], prompts, batch_size, progress).magnitudes(circuit)
        mean = reference.mean(0)
        std = torch.maximum(reference.std(0), MIN_RELATIVE_STD * mean.abs()).clamp(min=1e-6)
        unfitted = cls(circuit, mean, std, threshold=math.inf, false_alarm=false_alarm)
        calibration = unfitted.scores(read_prompts(loaded, [circuit], calibration_prompts, batch_size, progress).magnitudes(circuit))
        return cls(
            circuit,
            mean,
            std,
            threshold=conformal_threshold(calibration, false_alarm),
            false_alarm=false_alarm,
            metadata={"model": loaded.name, "n_reference": len(prompts), "n_calibration": len(calibration_prompts)},
        )

    def z_scores(self, magnitudes: Float[Tensor, "n n_units"]) -> Float[Tensor, "n n_units"]:
        if magnitudes.dim() != 2 or magnitudes.shape[1] != self.mean.numel():
            raise ShapeMismatchError(f"magnitudes have shape {tuple(magnitudes.shape)}; this reference has {self.mean.numel()} units")
        return (magnitudes.float() - self.mean) / self.std

    def scores(self, magnitudes: Float[Tensor, "n n_units"]) -> Float[Tensor, " n"]:
        """Tamper score of each prompt: the largest ``|z|`` over the circuit's units."""
        return self.z_scores(magnitudes).abs().amax(1)

    def save(self, out_dir: str | Path) -> None:
        """Write ``circuit.json``, ``tamper.safetensors`` and ``tamper.json``.

        A folder may hold a safeguard and a tamper reference when they share the circuit; writing
        over a ``circuit.json`` of another circuit is refused.
        """
        out = Path(out_dir)
        circuit_file = out / runs.CIRCUIT
        if circuit_file.is_file():
            other = Circuit.load(circuit_file)
            if (other.head_list, other.neuron_list) != (self.circuit.head_list, self.circuit.neuron_list):
                raise InputError(f"{circuit_file} holds another circuit; save the tamper reference in its own folder")
        else:
            self.circuit.save(circuit_file)
        write_safetensors(out / runs.TAMPER_TENSORS, {"mean": self.mean, "std": self.std}, {"format": FORMAT})
        payload = {"format": FORMAT, "threshold": self.threshold, "false_alarm": self.false_alarm, "units": unit_labels(self.circuit), "metadata": self.metadata}
        write_json(out / runs.TAMPER_JSON, json.loads(json.dumps(payload, default=str)))

    @classmethod
    def load(cls, out_dir: str | Path, expected: ModelShape | None = None) -> TamperReference:
        out = Path(out_dir)
        for name in (runs.CIRCUIT, runs.TAMPER_TENSORS, runs.TAMPER_JSON):
            if not (out / name).is_file():
                raise FileNotFoundError(f"{out} holds no tamper reference: {name} is missing")
        settings = read_json(out / runs.TAMPER_JSON)
        if not isinstance(settings, dict) or settings.get("format") != FORMAT:
            raise InputError(f"{out / 'tamper.json'}: not a tamper reference file (expected format {FORMAT!r})")
        tensors, _ = read_safetensors(out / runs.TAMPER_TENSORS, "tamper reference")
        if {"mean", "std"} - tensors.keys():
            raise InputError(f"{out / 'tamper.safetensors'}: needs tensors 'mean' and 'std', found {sorted(tensors)}")
        return cls(
            circuit=Circuit.load(out / runs.CIRCUIT, expected),
            mean=tensors["mean"],
            std=tensors["std"],
            threshold=float(settings["threshold"]),
            false_alarm=float(settings["false_alarm"]),
            metadata=settings.get("metadata", {}),
        )


@dataclass(frozen=True)
class PromptCheck:
    """The monitor's verdict on one prompt. Fields of a check the monitor does not run stay ``None``/``False``."""

    unsafe_probability: float | None = None
    unsafe: bool = False
    tamper_score: float | None = None
    tampered: bool = False
    suspect_unit: str | None = None  # the unit furthest from its reference

    @property
    def flagged(self) -> bool:
        return self.unsafe or self.tampered


class Monitor:
    """Watch a running model; ``monitor.checks`` gets one :class:`PromptCheck` per prompt, in order.

    Pass a ``safeguard``, a tamper ``reference`` or both (they may watch different circuits).
    ``on_check`` receives each prompt pass's checks as soon as the pass ends, before the first
    token is generated: raise from it to stop a generation. The hooks are read-only, run after
    any other hooks on their hook points (ablations entered inside the monitor included), and are
    removed when the block exits.

    >>> with Monitor(loaded, safeguard=guard, reference=reference) as monitor:  # doctest: +SKIP
    ...     answers = generate(loaded.model, loaded.chat, prompts)
    >>> [check.flagged for check in monitor.checks]  # doctest: +SKIP
    """

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        safeguard: Safeguard | None = None,
        reference: TamperReference | None = None,
        on_check: Callable[[list[PromptCheck]], None] | None = None,
    ) -> None:
        if safeguard is None and reference is None:
            raise InputError("a monitor needs a safeguard, a tamper reference or both")
        if safeguard is not None:
            safeguard.check_model(loaded)
        if reference is not None:
            loaded.shape.check_compatible(reference.circuit.shape, "the tamper reference's circuit")
        self.safeguard, self.reference, self.on_check = safeguard, reference, on_check
        self._unit_names = unit_labels(reference.circuit) if reference is not None else []
        circuits = [owner.circuit for owner in (safeguard, reference) if owner is not None]
        self._reader = CircuitReader(loaded, circuits, on_readout=self._check)
        self.checks: list[PromptCheck] = []

    def __enter__(self) -> Monitor:
        self._reader.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._reader.__exit__(*exc_info)

    def _check(self, readout: PromptReadout) -> None:
        n = len(readout)
        probability: list[float | None] = [None] * n
        score: list[float | None] = [None] * n
        suspect: list[str | None] = [None] * n
        unsafe, tampered = [False] * n, [False] * n
        if self.safeguard is not None:
            probabilities: list[float] = self.safeguard.probability(readout.features(self.safeguard.circuit)).tolist()
            probability, unsafe = list(probabilities), [p >= self.safeguard.threshold for p in probabilities]
        if self.reference is not None:
            z = self.reference.z_scores(readout.magnitudes(self.reference.circuit)).abs()
            best, where = z.max(1)
            scores: list[float] = best.tolist()
            score, tampered = list(scores), [s > self.reference.threshold for s in scores]
            suspect = [self._unit_names[i] for i in where.tolist()]
        checks = [
            PromptCheck(unsafe_probability=p, unsafe=bad, tamper_score=s, tampered=changed, suspect_unit=u)
            for p, bad, s, changed, u in zip(probability, unsafe, score, tampered, suspect)
        ]
        self.checks.extend(checks)
        if self.on_check is not None:
            self.on_check(checks)

    def summary(self) -> dict[str, float]:
        """Prompts checked and the share flagged unsafe, tampered and either."""
        n = len(self.checks)
        share = lambda flags: sum(flags) / n if n else 0.0  # noqa: E731
        return {
            "prompts": n,
            "unsafe": share(c.unsafe for c in self.checks),
            "tampered": share(c.tampered for c in self.checks),
            "flagged": share(c.flagged for c in self.checks),
        }
