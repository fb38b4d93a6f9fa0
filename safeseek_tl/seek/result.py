"""What a SafeSeek search produces (:class:`SeekResult`), and its files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from safeseek_tl import runs
from safeseek_tl._io import read_json, read_safetensors, write_json, write_safetensors
from safeseek_tl.ablation import ReferenceActivations
from safeseek_tl.errors import InputError
from safeseek_tl.hooks import UNIT_KINDS, UnitKind
from safeseek_tl.masks import MaskLogits
from safeseek_tl.seek.config import SeekConfig
from safeseek_tl.units import Circuit, ModelShape, Scores


def main_mask(config: SeekConfig, shape: ModelShape, logits: dict[str, Tensor]) -> MaskLogits:
    """The main mask of a search with ``config``, holding ``logits`` (per granularity)."""
    mask = MaskLogits(shape, config.kinds, kind=config.masks.kind)
    with torch.no_grad():
        for kind, value in mask.searched().items():
            value.copy_(logits[kind])
    return mask


def removed_units(shape: ModelShape, kept: dict[UnitKind, Tensor], metadata: dict[str, object] | None = None) -> Circuit:
    """The circuit of the units a mask does not keep (``kept`` per searched granularity; none of the others)."""
    empty = Circuit.empty(shape)
    return Circuit(shape, ~kept["heads"] if "heads" in kept else empty.heads, ~kept["neurons"] if "neurons" in kept else empty.neurons, dict(metadata or {}))


@dataclass
class SeekResult:
    """What a SafeSeek run produces: scores, the circuit (ablation set), masks, history, settings.

    ``verified`` says whether ablating ``circuit`` was checked to switch the behaviour on the
    validation prompts (:func:`~safeseek_tl.seek.behaviour_switch`): ``True`` for the counted
    rounds of :func:`~safeseek_tl.seek.discover_complete` and for
    :func:`~safeseek_tl.seek.prune_circuit`; ``False`` when the complete search found no round
    that passes the check and returned its first search as found (its circuit does not switch the
    behaviour, or is empty); ``None`` for a single search, which checks nothing. Saved in
    ``history.json``.
    """

    scores: Scores
    circuit: Circuit
    config: SeekConfig
    main_logits: dict[str, Tensor]
    circuit_logits: dict[str, Tensor] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    rounds: int = 1
    verified: bool | None = None
    fill: dict[str, Tensor] = field(default_factory=dict)

    def reference(self) -> ReferenceActivations | None:
        """The search's fill as the constants of a ``"mean"`` ablation (``config.ablation_mode``),
        so that the circuit is ablated as it was found; ``None`` for a zero-fill search."""
        if self.config.masks.fill == "zero":
            return None
        if not self.fill:
            raise InputError(
                f"this {self.config.masks.fill}-fill result carries no fill (saved before fills were kept with results): "
                "recompute mean fills with seek.search_fill; a learned fill cannot be recomputed"
            )
        return ReferenceActivations(means={kind: self.fill[kind] for kind in UNIT_KINDS if kind in self.fill}, pools={})

    def masked_off(self) -> Circuit:
        """The units the main mask itself switches off, before a size target's cut: with an exact
        target (``target.exact``) ``circuit`` may hold units the mask kept on, or leave out some it
        switched off; their intersection is the circuit of the target read as a cap. A complete
        search's result holds its first round's mask."""
        return removed_units(self.circuit.shape, main_mask(self.config, self.circuit.shape, self.main_logits).kept(), {"method": "safeseek", "role": "main mask"})

    @property
    def sufficient_circuit(self) -> Circuit | None:
        """Backdoor scenario: the units the circuit mask H keeps (the circuit alone)."""
        if not self.circuit_logits:
            return None
        shape = self.circuit.shape
        kept = {k: v > 0 for k, v in self.circuit_logits.items()}
        empty = Circuit.empty(shape)
        return Circuit(shape, kept.get("heads", empty.heads), kept.get("neurons", empty.neurons), {"method": "safeseek", "role": "circuit mask H"})

    def save(self, out_dir: str | Path) -> None:
        """Write ``circuit.json``, ``scores.safetensors``, ``masks.safetensors``, ``history.json``, ``config.json``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.circuit.save(out / runs.CIRCUIT)
        self.scores.save(out / runs.SCORES)
        tensors = {f"main.{k}": v for k, v in self.main_logits.items()}
        tensors |= {f"circuit.{k}": v for k, v in self.circuit_logits.items()}
        tensors |= {f"fill.{k}": v for k, v in self.fill.items()}
        write_safetensors(out / runs.MASKS, tensors, {"model": json.dumps(self.circuit.shape.to_dict())})
        write_json(out / runs.HISTORY, {"best_epoch": self.best_epoch, "rounds": self.rounds, "verified": self.verified, "history": self.history})
        write_json(out / runs.CONFIG, self.config.to_dict())

    @classmethod
    def load(cls, out_dir: str | Path, expected: ModelShape | None = None) -> SeekResult:
        out = Path(out_dir)
        circuit = Circuit.load(out / runs.CIRCUIT, expected)
        scores = Scores.load(out / runs.SCORES, expected)
        masks, header = read_safetensors(out / runs.MASKS, "mask file")
        if expected is not None and "model" in header:
            expected.check_compatible(ModelShape.from_dict(json.loads(header["model"]), str(out / runs.MASKS)), f"mask file {out / runs.MASKS}")
        history = read_json(out / runs.HISTORY)
        config = SeekConfig.from_dict(read_json(out / runs.CONFIG), str(out / runs.CONFIG))
        return cls(
            scores=scores,
            circuit=circuit,
            config=config,
            main_logits={k.split(".", 1)[1]: v for k, v in masks.items() if k.startswith("main.")},
            circuit_logits={k.split(".", 1)[1]: v for k, v in masks.items() if k.startswith("circuit.")},
            history=history["history"],
            best_epoch=history["best_epoch"],
            rounds=history["rounds"],
            verified=history.get("verified"),  # absent from results saved before it existed
            fill={k.split(".", 1)[1]: v for k, v in masks.items() if k.startswith("fill.")},
        )
