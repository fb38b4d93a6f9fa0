"""Stability over 3 seeds x 2 halves, worked by hand with stand-in methods whose top head is known.

At k = 1% of 32 heads every circuit is one head, so a pair's Jaccard index is 1 (same head) or 0.
The six runs are keyed (half, seed); of their 15 pairs, 6 share a half (2 halves x 3 seed pairs)
and 3 share a seed.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from safeseek_tl.benchmark_methods import MethodSpec, Setting
from safeseek_tl.benchmark_stability import halves, stability
from safeseek_tl.methods import METHODS, Attribution, Method
from safeseek_tl.scenarios import BACKDOOR
from safeseek_tl.units import Circuit, ModelShape, Scores, mean_jaccard

SHAPE = ModelShape(4, 8, 16)
RECORDS = [f"record {i}" for i in range(8)]
FIRST_HALF, _ = halves(len(RECORDS))


def _top_head(head: int) -> Scores:
    heads = torch.zeros(SHAPE.size("heads"))
    heads.view(-1)[head] = 1.0
    return Scores(SHAPE, heads=heads, method="stand-in")


@pytest.fixture
def calls(monkeypatch):
    """Two stand-in methods: ``by-seed`` tops head seed // 2 (seeds 0, 1, 2: heads 0, 0, 1) whatever the data;
    ``by-half`` (deterministic) tops head 0 on the half that holds the first half's records, else head 1."""
    made: list[str] = []

    def by_seed(inputs, seed=0):
        made.append("by-seed")
        return Attribution(_top_head(seed // 2))

    def by_half(inputs):
        made.append("by-half")
        return Attribution(_top_head(0 if inputs.records[0] == RECORDS[FIRST_HALF[0]] else 1))

    monkeypatch.setitem(METHODS, "by-seed", Method("by-seed", by_seed, ("heads",), seeded=True))
    monkeypatch.setitem(METHODS, "by-half", Method("by-half", by_half, ("heads",)))
    return made


def _setting() -> Setting:
    stand_in = SimpleNamespace(model=SimpleNamespace(hook_embed=torch.nn.Identity()), shape=SHAPE)  # passes are counted on it
    return Setting(stand_in, BACKDOOR)  # type: ignore[arg-type]


def test_halves_are_disjoint_random_and_fixed():
    first, second = halves(5)
    assert len(first) == 3 and len(second) == 2 and sorted(first + second) == [0, 1, 2, 3, 4]
    assert halves(5) == (first, second) and first == sorted(first)
    assert halves(40)[0] != list(range(20)) and halves(40, seed=1) != halves(40)  # random, not by position; the seed moves it
    with pytest.raises(ValueError, match="at least 2 records"):
        halves(1)


def test_mean_jaccard_by_hand():
    a = Circuit.from_units(SHAPE, heads=[[0, 0], [0, 1]], neurons=[[0, 3]])
    b = Circuit.from_units(SHAPE, heads=[[0, 1], [0, 2]])
    assert mean_jaccard([(a, b)], ("heads",)) == pytest.approx(1 / 3)  # {0,1} vs {1,2}
    assert mean_jaccard([(a, b), (a, a)]) == pytest.approx((1 / 4 + 1) / 2)  # both kinds: the neuron joins the union
    with pytest.raises(ValueError, match="at least one pair"):
        mean_jaccard([], ("heads",))


def test_seeded_method_runs_six_times_and_its_seeds_move_the_circuit(calls):
    result = stability(MethodSpec("by-seed"), _setting(), RECORDS, None, ("heads", "neurons"), k=1)
    # heads by (half, seed): 0, 0, 1 | 0, 0, 1. Equal pairs: 6 among the four 0s, 1 between the two 1s -> 7 / 15;
    # same half: (s0, s1) equal, (s0, s2) and (s1, s2) not -> 1 / 3; same seed: always equal -> 1
    assert result == {"heads": pytest.approx({"jaccard": 7 / 15, "jaccard_seeds": 1 / 3, "jaccard_splits": 1.0})}
    assert calls == ["by-seed"] * 6


def test_deterministic_method_runs_once_a_half_and_only_the_halves_move_it(calls):
    result = stability(MethodSpec("by-half"), _setting(), RECORDS, None, ("heads",), k=1)
    # head 0 on one half, head 1 on the other: the 6 same-half pairs equal, the 9 across halves not
    assert result == {"heads": pytest.approx({"jaccard": 6 / 15, "jaccard_seeds": 1.0, "jaccard_splits": 0.0})}
    assert calls == ["by-half"] * 2


def test_benign_records_are_split_with_the_records_they_pair_with(monkeypatch):
    seen: list[tuple[list[str], list[str]]] = []

    def pairs(inputs):
        seen.append((list(inputs.records), list(inputs.benign)))
        return Attribution(_top_head(0))

    monkeypatch.setitem(METHODS, "pairs", Method("pairs", pairs, ("heads",)))
    benign = [f"benign {i}" for i in range(6)]  # records 6 and 7 have no benign pair
    stability(MethodSpec("pairs"), _setting(), RECORDS, benign, ("heads",), k=1)
    first, second = halves(len(RECORDS))
    assert seen == [([RECORDS[i] for i in half], [benign[i] for i in half if i < 6]) for half in (first, second)]
