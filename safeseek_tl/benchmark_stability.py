"""Stability of a method's circuits (CircuitKIT's sense): the same size found again over seeds and data splits.

A method runs on each of two random halves of the records (:func:`halves`) with each of three seeds
(:data:`STABILITY_SEEDS`): six circuits ``C_k`` per granularity. Their mean pairwise Jaccard index is
the stability; the pairs that differ only in the seed (same half) and only in the half (same seed)
give its two parts. A deterministic method (``Method.seeded`` false) ignores the seed: it runs once
per half and its seed pairs are identical by construction (Jaccard 1), so its stability comes from
the halves alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import torch

from safeseek_tl.benchmark_methods import MethodRun, MethodSpec, Setting, run_method
from safeseek_tl.data import BenignRecord, Record
from safeseek_tl.errors import InputError
from safeseek_tl.hooks import UnitChoice, unit_kinds
from safeseek_tl.units import mean_jaccard

STABILITY_SEEDS: tuple[int, ...] = (0, 1, 2)
"""The seeds each half is run with."""
SPLIT_SEED = 0
"""The seed of the permutation that cuts the records into two halves."""


def halves(n: int, seed: int = SPLIT_SEED) -> tuple[list[int], list[int]]:
    """Two random halves of ``range(n)`` (each in increasing order; the first has the odd one out)."""
    if n < 2:
        raise InputError(f"two halves need at least 2 records, got {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    cut = (n + 1) // 2
    return sorted(order[:cut]), sorted(order[cut:])


def stability(spec: MethodSpec, setting: Setting, records: Sequence[Record], benign: Sequence[BenignRecord] | None,
              granularities: Sequence[UnitChoice], k: float, seeds: Sequence[int] = STABILITY_SEEDS) -> dict[UnitChoice, dict[str, float]]:
    """Per granularity the method scores: ``jaccard`` (all pairs of the ``2 x len(seeds)`` circuits at
    ``k``%), ``jaccard_seeds`` (same half, other seed) and ``jaccard_splits`` (same seed, other half).

    Benign records (the alignment scenario's contrast prompts, paired in order) are split with the
    records they pair with.
    """
    if len(seeds) < 2:
        raise InputError(f"stability needs at least 2 seeds, got {list(seeds)}")
    found: dict[tuple[int, int], MethodRun] = {}
    for half, indices in enumerate(halves(len(records))):
        part = [records[i] for i in indices]
        part_benign = None if benign is None else [benign[i] for i in indices if i < len(benign)]
        for seed in seeds:
            reuse = not spec.seeded and seed != seeds[0]  # a deterministic method: the seed changes nothing
            found[(half, seed)] = found[(half, seeds[0])] if reuse else run_method(spec, setting, part, part_benign, granularities, (k,), seed=seed)
    pairs = list(combinations(found, 2))  # (half, seed) keys
    groups = {"jaccard": pairs, "jaccard_seeds": [(a, b) for a, b in pairs if a[0] == b[0]], "jaccard_splits": [(a, b) for a, b in pairs if a[1] == b[1]]}
    result: dict[UnitChoice, dict[str, float]] = {}
    for granularity in found[(0, seeds[0])].scores:
        circuits = {key: run.circuit(granularity, k) for key, run in found.items()}
        result[granularity] = {name: mean_jaccard([(circuits[a], circuits[b]) for a, b in group], unit_kinds(granularity)) for name, group in groups.items()}
    return result
