"""Mutation testing of the core modules with mutmut (``make mutation``).

Each module is mutated on its own, against only the fast tests that exercise it (``MODULES``
below), in a work folder ``.mutation/<module>/`` that holds a snapshot of ``safeseek_tl/`` and
``tests/`` and a ``pyproject.toml`` with the module's ``[tool.mutmut]`` section. mutmut writes its
mutated copy under that folder's ``mutants/``; nothing in the checkout is changed, so an
interrupted run leaves the sources as they were. A second run resumes: mutants whose function
did not change keep their result.

Left out of mutation: docstrings and type annotations (mutmut never mutates them), and lines that
only build messages or report progress (``DO_NOT_MUTATE`` below: exceptions raised with their
message, warnings, progress bars). Mutants shown to be equivalent to the original are listed in
``EQUIVALENT`` with the reason; each entry names the mutated line it expects, so that an entry
whose mutant number now points at another change (the function was edited) is reported as stale
and counted like any other mutant instead of being excluded.

    python scripts/mutation.py                      # every module, in MODULES order
    python scripts/mutation.py units metrics         # some modules
    python scripts/mutation.py --sample 200 seek     # a seeded sample of a module's mutants
    python scripts/mutation.py --recheck units       # the survivors again, after adding tests
    python scripts/mutation.py --fresh               # forget earlier results (a timed full run)
    python scripts/mutation.py --report              # scores of the last runs, without running
    python scripts/mutation.py --report --markdown   # the same as benchmarks/RESULTS.md shows it
    python scripts/mutation.py --survivors units     # the diff of each surviving mutant

The score of a module is (killed + timed out) / (mutants run - equivalent); mutants that no
mapped test reaches ("no tests") count as survivors.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutation"
PACKAGE = "safeseek_tl"


@dataclass(frozen=True)
class Module:
    name: str
    path: str
    tests: tuple[str, ...]
    sample: int | None = None  # mutants run: a seeded sample of this many, or all
    deselect: tuple[str, ...] = ()  # slow tests of those files left out (pytest node ids)
    tests_for: str | None = None  # the name in the file of tests written for its mutants, when not the module's own

    @property
    def own_tests(self) -> str:
        """The file of tests written for this module's mutants."""
        return f"tests/test_mutants_{self.tests_for or self.name.rpartition('.')[2]}.py"


# Module -> the fast tests that exercise it (slow and gpu tests stay out through the pytest
# addopts copied with pyproject.toml). tests/test_mutants_<name>.py joins its module's list when
# it exists. Smallest and most stable modules first.
MODULES = [
    Module("units", "safeseek_tl/units.py", ("tests/test_units.py",)),
    Module("metrics", "safeseek_tl/metrics.py", ("tests/test_metrics.py", "tests/test_judge.py", "tests/test_pinned_components.py")),
    Module("evaluate", "safeseek_tl/evaluate.py", ("tests/test_compare.py", "tests/test_evaluate_organisms.py", "tests/test_judge.py")),
    # tuning.py was split in two (2026-12): the two samples keep the 200 mutants the whole module had
    Module("tuning", "safeseek_tl/tuning.py", ("tests/test_tuning.py", "tests/test_tune_resume.py"), sample=120,
           deselect=("tests/test_tune_resume.py::test_tune_command_stopped_by_a_signal_resumes_to_the_same_delta",)),
    # the entries a unit owns and the deltas; their mutant tests are in test_mutants_tuning.py
    Module("parameters", "safeseek_tl/parameters.py", ("tests/test_tuning.py", "tests/test_mutants_tuning.py"), sample=80),
    Module("baselines.patching", "safeseek_tl/baselines/patching.py", ("tests/test_baselines.py",), sample=150),
    Module("baselines.probing", "safeseek_tl/baselines/probing.py", ("tests/test_baselines.py",)),
    Module("baselines.ships", "safeseek_tl/baselines/ships.py", ("tests/test_baselines.py",), sample=150),
    Module("baselines.contrasting", "safeseek_tl/baselines/contrasting.py", ("tests/test_baselines.py", "tests/test_pinned_components.py")),
    # the unit intervention (fill + keep * (act - fill)) that masks, ablation, patching and Ships install
    Module("hooks", "safeseek_tl/hooks.py", ("tests/test_hooks.py", "tests/test_masks.py", "tests/test_mutants_masks.py", "tests/test_mutants_ablation.py")),
    Module("masks", "safeseek_tl/masks.py", ("tests/test_masks.py", "tests/test_pinned_components.py")),
    Module("ablation", "safeseek_tl/ablation.py", ("tests/test_masks.py", "tests/test_pinned_components.py")),
    Module("compare", "safeseek_tl/compare.py", ("tests/test_compare.py", "tests/test_evaluate_organisms.py", "tests/test_pinned_components.py",
                                                 "tests/test_judge.py"), sample=150),
    # seek/ (split from one seek.py on 2026-12-02; the equivalent mutants below were listed under the old
    # module and file names: a fresh run re-derives them)
    *(
        Module(f"seek.{part}", f"safeseek_tl/seek/{part}.py", ("tests/test_seek_mechanics.py", "tests/test_pinned_objective.py",
                                                              "tests/test_complete_search.py"), sample=150, tests_for="seek")
        for part in ("objective", "trainer", "checking", "discovery")
    ),
]

# Lines whose expressions only build a message or report progress: their mutants change what a
# person reads, not what the code computes (tests pin the kind of error, not its wording).
DO_NOT_MUTATE = [
    r"^\s*raise\s",  # the exception raised and its message; the condition is on the line before
    r"\bwarnings\.warn\(",
    r"\btqdm\(",  # progress bar: description and whether it is shown
    r"\.set_postfix\(",
    r"\blog(ger)?\.(debug|info|warning|error|exception)\(",
]

# Equivalent mutants: mutant name -> (the mutated line, stripped, as mutmut shows it; why the
# change cannot be observed).
_NOT_HEADS = ("ModelShape.size, Scores.get and Circuit.get read every kind but 'heads' as neurons, so a "
              "mangled 'neurons' (None, 'XXneuronsXX', 'NEURONS') gives the same neuron count or tensor")
_FLOAT_TO_BOOL = ("the tensor is made float instead of bool, but its only use stores it into a bool tensor "
                  "(Circuit._select) or Circuit.__post_init__ converts it to bool, which gives the same values")
_CPU_ONLY = ("the device argument of .to(): on a machine without a GPU every tensor is on the CPU already; "
             "moving CUDA tensors is checked by tests/test_cuda.py (gpu marker)")
_OR_EMPTY = "a default that only reaches `x or ''`: None or '' and '' or '' are both ''"
_ONLY_ALL = "_circuit_entries compares shared_kv with 'all' only: every other value means 'any'"
_ZERO_GRAD = ("zero_grad(set_to_none=None) zeroes the gradients instead of dropping them; backward() then "
              "leaves the same gradient in every tuned parameter (each takes part in every forward pass)")
_FIRST_ORDER = ("the first next() draws a new order before reading one (position starts at the end of a pass), "
                "so the initial order is never used")
_SAME_DTYPE = "the checkpoint holds the slices in the parameter's own dtype (saved from it): the cast changes nothing"
_NEG_INDEX = "arange(n)[part] - n indexes the 2n rows from their end: row i - n is row n + i, the same rows"
_PADDING = ("trim_padding(right=False) drops the left columns that are padding in every row of a batch; keeping "
            "them changes no real token's result (padding is masked as a key and rotary positions are relative), "
            "up to float rounding")
_PRECISION = "the dtype an intermediate sum or angle is kept in: the result changes by float rounding only"
_CACHE_ALL = "without names_filter the cache holds every hook point, the ones read among them: same values, more memory"
_LAST_LOGITS = "only the last position's logits are read ([:, -1]); unembedding more positions leaves them as they are"
_REACHES = ("every head's hook_z and neuron's hook_post reaches the last position's logits, so no gradient is "
            "unused and allow_unused never matters")
_BATCHING = "how many rows share a forward pass: the same results, up to float rounding"
_PROGRESS = "whether a progress bar is shown"
_FULL_SVD = "full_matrices=True only adds columns after the first: U[..., 0] is the same (and _angles uses |cos|)"
_NO_SELECTION = "the reference run ablates no head, so no hook is made: the selection's dtype and epsilon are never used"
_ELSE_MEAN = "completion_cross_entropy gives the mean for every reduction but 'sum' and 'none': a mangled 'mean' still means"
_IGNORE_DEFAULT = "IGNORE_INDEX is -100, F.cross_entropy's own default ignore_index"
_LAST_DIM_2D = ("these functions take [rows, d_vocab]: on 2-D input dim +1, dim -1 and no dim (softmax's implicit "
                "choice for 2-D is dim 1) are the same dimension")
_CODEC_CASE = "Python's codec names are case-insensitive: 'UTF-8' is 'utf-8'"
_DEFAULTS = "the value passed is the class default (REFUSAL_KEYWORDS, min_chars=32): leaving it out gives the same judge"
_DEFAULT_FLOAT = "torch.full of a Python float makes torch's default dtype, float32, which the library never changes"
_FALSY = "None is as false as False for an `if stochastic:` test"
_NOISE_CLAMP = ("torch.rand draws from [0, 1): the upper bound never binds, and the lower one only when a draw is "
                "exactly 0 (probability 2**-24 per unit), so clamping differently changes no gate in practice")
_POOL_UNUSED = "mean patching reads the reference means only: the resample pool collected beside them is never used"
_RIGHT_PADDED = ("training pairs are right-padded (tokenize_pairs): in a causal model no real token attends to the "
                 "padding after it, and padding carries no label, so the loss is the same without the mask")
_ONE_KIND = ("compare's circuits come from Circuit.top_k on one granularity, so the other is empty in all of them "
             "and a Jaccard over both kinds equals the Jaccard over that one")
_SPLIT_AGAIN = ("the split's label names the data in split_records' error, which cannot come: fit() has just split "
                "the same records by the same val_size without error")
_FALSY_INDEX = "pandas' to_csv writes no index for index=None, as for index=False"
_UNREAD = "full_logits is read only when a path is a KL path, and then it is set before: its placeholder is never read"
_LAST_DIM_MASKS = "keep probabilities are [n_layers, units]: on 2-D tensors dim +1 is dim -1"
_ONE_PROCESS = ("without torchrun world_size is 1 and every shard has rows: x * 1 == x / 1, and the empty-shard branch "
                "never runs (tests/test_distributed.py runs several processes)")
_MESSAGE = ("only the text of a NonFiniteLossError changes (where it happened, a mask's name in it), for logits that "
            "become non-finite after a step with a finite gradient, which no test can provoke without breaking the optimizer")
_ABSENT_TWIN = ("a rate is absent from the check only with its *_full twin (no clean prompts in the alignment "
                "scenario, no benign records): the other default makes that term -1 instead of 0, which only a "
                "negative bound (asking the ablation to improve clean behaviour) could tell apart")
_ORIENT_CASE = "pandas' DataFrame.to_dict lower-cases orient: 'RECORDS' is 'records'"
EQUIVALENT: dict[str, tuple[str, str]] = {
    "safeseek_tl.units.x__top_k_mask__mutmut_15": ("mask = torch.zeros_like(flat, dtype=None)", _FLOAT_TO_BOOL),
    "safeseek_tl.units.x__top_k_mask__mutmut_17": ("mask = torch.zeros_like(flat, )", _FLOAT_TO_BOOL),
    "safeseek_tl.units.xǁCircuitǁempty__mutmut_10": ("return cls(shape, torch.zeros(shape.size(\"heads\"), dtype=None), torch.zeros(shape.size(\"neurons\"), dtype=torch.bool), dict(metadata))", _FLOAT_TO_BOOL),
    "safeseek_tl.units.xǁCircuitǁempty__mutmut_12": ("return cls(shape, torch.zeros(shape.size(\"heads\"), ), torch.zeros(shape.size(\"neurons\"), dtype=torch.bool), dict(metadata))", _FLOAT_TO_BOOL),
    "safeseek_tl.units.xǁCircuitǁempty__mutmut_17": ("return cls(shape, torch.zeros(shape.size(\"heads\"), dtype=torch.bool), torch.zeros(shape.size(\"neurons\"), dtype=None), dict(metadata))", _FLOAT_TO_BOOL),
    "safeseek_tl.units.xǁCircuitǁempty__mutmut_19": ("return cls(shape, torch.zeros(shape.size(\"heads\"), dtype=torch.bool), torch.zeros(shape.size(\"neurons\"), ), dict(metadata))", _FLOAT_TO_BOOL),
    "safeseek_tl.units.xǁCircuitǁ__post_init____mutmut_18": ("_check_tensor_shape(self.neurons, self.shape.size(None), \"circuit neurons\")", _NOT_HEADS),
    "safeseek_tl.units.xǁCircuitǁ__post_init____mutmut_19": ("_check_tensor_shape(self.neurons, self.shape.size(\"XXneuronsXX\"), \"circuit neurons\")", _NOT_HEADS),
    "safeseek_tl.units.xǁCircuitǁ__post_init____mutmut_20": ("_check_tensor_shape(self.neurons, self.shape.size(\"NEURONS\"), \"circuit neurons\")", _NOT_HEADS),
    "safeseek_tl.units.xǁCircuitǁempty__mutmut_20": ("return cls(shape, torch.zeros(shape.size(\"heads\"), dtype=torch.bool), torch.zeros(shape.size(None), dtype=torch.bool), dict(metadata))", _NOT_HEADS),
    "safeseek_tl.units.xǁCircuitǁempty__mutmut_21": ("return cls(shape, torch.zeros(shape.size(\"heads\"), dtype=torch.bool), torch.zeros(shape.size(\"XXneuronsXX\"), dtype=torch.bool), dict(metadata))", _NOT_HEADS),
    "safeseek_tl.units.xǁCircuitǁempty__mutmut_22": ("return cls(shape, torch.zeros(shape.size(\"heads\"), dtype=torch.bool), torch.zeros(shape.size(\"NEURONS\"), dtype=torch.bool), dict(metadata))", _NOT_HEADS),
    "safeseek_tl.units.xǁScoresǁ__post_init____mutmut_21": ("_check_tensor_shape(self.neurons, self.shape.size(None), \"neuron scores\")", _NOT_HEADS),
    "safeseek_tl.units.xǁScoresǁ__post_init____mutmut_22": ("_check_tensor_shape(self.neurons, self.shape.size(\"XXneuronsXX\"), \"neuron scores\")", _NOT_HEADS),
    "safeseek_tl.units.xǁScoresǁ__post_init____mutmut_23": ("_check_tensor_shape(self.neurons, self.shape.size(\"NEURONS\"), \"neuron scores\")", _NOT_HEADS),
    "safeseek_tl.units.xǁCircuitǁ__post_init____mutmut_24": ("self.heads = self.heads.detach().to(device=None, dtype=torch.bool)", _CPU_ONLY),
    "safeseek_tl.units.xǁCircuitǁ__post_init____mutmut_26": ("self.heads = self.heads.detach().to(dtype=torch.bool)", _CPU_ONLY),
    "safeseek_tl.units.xǁCircuitǁ__post_init____mutmut_31": ("self.neurons = self.neurons.detach().to(device=None, dtype=torch.bool)", _CPU_ONLY),
    "safeseek_tl.units.xǁCircuitǁ__post_init____mutmut_33": ("self.neurons = self.neurons.detach().to(dtype=torch.bool)", _CPU_ONLY),
    "safeseek_tl.units.xǁCircuitǁ__repr____mutmut_8": ("f\"{self.n_neurons} neurons ({100 * self.fraction(None):.2f}%), model={self.shape.model_name or '?'})\"", _NOT_HEADS),
    "safeseek_tl.units.xǁCircuitǁ__repr____mutmut_9": ("f\"{self.n_neurons} neurons ({100 * self.fraction('XXneuronsXX'):.2f}%), model={self.shape.model_name or '?'})\"", _NOT_HEADS),
    "safeseek_tl.units.xǁCircuitǁ__repr____mutmut_10": ("f\"{self.n_neurons} neurons ({100 * self.fraction('NEURONS'):.2f}%), model={self.shape.model_name or '?'})\"", _NOT_HEADS),
    "safeseek_tl.units.xǁModelShapeǁof__mutmut_10": ("name = model_name if model_name is not None else str(getattr(cfg, \"model_name\", None) or \"\")", _OR_EMPTY),
    "safeseek_tl.tuning.x__step__mutmut_15": ("logits = loaded.model(input_ids.to(device), attention_mask=attention_mask.to(None))", _CPU_ONLY),
    "safeseek_tl.tuning.x__step__mutmut_21": ("loss = completion_cross_entropy(logits, labels.to(None))", _CPU_ONLY),
    "safeseek_tl.tuning.x__step__mutmut_1": ("device = None", _CPU_ONLY),
    "safeseek_tl.tuning.xǁ_Checkpointǁload__mutmut_21": ("param.index_copy_(dim, index.to(None), tensors[f\"param.{name}\"].to(param.device, param.dtype))", _CPU_ONLY),
    "safeseek_tl.parameters.x_parameter_masks__mutmut_39": ("frozen = _circuit_entries(loaded, circuit, shared_kv=\"ANY\")", _ONLY_ALL),
    "safeseek_tl.tuning.x__step__mutmut_24": ("optimizer.zero_grad(set_to_none=None)", _ZERO_GRAD),
    "safeseek_tl.tuning.xǁ_BatchOrderǁ__init____mutmut_6": ("self.order: Int[Tensor, \" n\"] = None", _FIRST_ORDER),
    "safeseek_tl.tuning.xǁ_Checkpointǁload__mutmut_25": ("param.index_copy_(dim, index.to(param.device), tensors[f\"param.{name}\"].to(param.device, ))", _SAME_DTYPE),
    "safeseek_tl.baselines.patching.x__pair_batches__mutmut_20": ("rows = torch.cat([torch.arange(n)[part], torch.arange(n)[part] - n])", _NEG_INDEX),
    "safeseek_tl.baselines.patching.x__pair_batches__mutmut_25": ("ids, mask = trim_padding(tokens.input_ids[rows], tokens.attention_mask[rows], right=None)", _PADDING),
    "safeseek_tl.baselines.patching.x__pair_batches__mutmut_28": ("ids, mask = trim_padding(tokens.input_ids[rows], tokens.attention_mask[rows], )", _PADDING),
    "safeseek_tl.baselines.patching.x__pair_batches__mutmut_31": ("ids, mask = ids.to(None), mask.to(loaded.device)", _CPU_ONLY),
    "safeseek_tl.baselines.patching.x__pair_batches__mutmut_32": ("ids, mask = ids.to(loaded.device), mask.to(None)", _CPU_ONLY),
    "safeseek_tl.baselines.patching.x_attribution_patching__mutmut_16": ("totals = {kind: torch.zeros(shape.size(kind), dtype=None) for kind in kinds}", _PRECISION),
    "safeseek_tl.baselines.patching.x_attribution_patching__mutmut_32": ("clean_logits, cache = model.run_with_cache(clean_ids, attention_mask=clean_mask, names_filter=None, logits_to_keep=1)", _CACHE_ALL),
    "safeseek_tl.baselines.patching.x_attribution_patching__mutmut_36": ("clean_logits, cache = model.run_with_cache(clean_ids, attention_mask=clean_mask, logits_to_keep=1)", _CACHE_ALL),
    "safeseek_tl.baselines.patching.x_attribution_patching__mutmut_40": ("clean_logits, cache = model.run_with_cache(clean_ids, attention_mask=clean_mask, names_filter=lambda name: name in names, logits_to_keep=2)", _LAST_LOGITS),
    "safeseek_tl.baselines.patching.x_attribution_patching__mutmut_70": ("values = metric(model(corr_ids, attention_mask=corr_mask, )[:, -1])", _LAST_LOGITS),
    "safeseek_tl.baselines.patching.x_attribution_patching__mutmut_71": ("values = metric(model(corr_ids, attention_mask=corr_mask, logits_to_keep=2)[:, -1])", _LAST_LOGITS),
    "safeseek_tl.baselines.patching.x_attribution_patching__mutmut_80": ("grads = torch.autograd.grad(values.sum(), [deltas[key] for key in keys], )", _REACHES),
    "safeseek_tl.baselines.patching.x_attribution_patching__mutmut_81": ("grads = torch.autograd.grad(values.sum(), [deltas[key] for key in keys], allow_unused=False)", _REACHES),
    "safeseek_tl.baselines.probing.x_linear_probes__mutmut_5": ("batch_size: int = 17,", _BATCHING),
    "safeseek_tl.baselines.probing.x_linear_probes__mutmut_6": ("progress: bool = False,", _PROGRESS),
    "safeseek_tl.baselines.probing.x_linear_probes__mutmut_24": ("features = _last_token_activations(loaded, [*positive_prompts, *negative_prompts], site, batch_size, None)", _PROGRESS),
    "safeseek_tl.baselines.probing.xǁProbeResultǁto_scores__mutmut_18": ("neurons=column.expand(shape.size(None)).clone(),", _NOT_HEADS),
    "safeseek_tl.baselines.probing.xǁProbeResultǁto_scores__mutmut_19": ("neurons=column.expand(shape.size(\"XXneuronsXX\")).clone(),", _NOT_HEADS),
    "safeseek_tl.baselines.probing.xǁProbeResultǁto_scores__mutmut_20": ("neurons=column.expand(shape.size(\"NEURONS\")).clone(),", _NOT_HEADS),
    "safeseek_tl.baselines.ships.x__batch__mutmut_10": ("return ids.to(loaded.device), mask.to(None)", _CPU_ONLY),
    "safeseek_tl.baselines.ships.x__batch__mutmut_8": ("ids, mask = trim_padding(tokens.input_ids[part], tokens.attention_mask[part], right=True)", _PADDING),
    "safeseek_tl.baselines.ships.x__leading_left_vectors__mutmut_5": ("return torch.linalg.svd(hidden, full_matrices=True).U[..., 0]", _FULL_SVD),
    "safeseek_tl.baselines.ships.x_sahara__mutmut_28": ("no_heads = torch.zeros(1, n_layers, n_heads, dtype=None)", _NO_SELECTION),
    "safeseek_tl.baselines.ships.x_sahara__mutmut_40": ("reference = _leading_left_vectors(_final_hidden(loaded, tokens, no_heads, operator, None, batch_size))[0]", _NO_SELECTION),
    "safeseek_tl.baselines.ships.x_sahara__mutmut_61": ("per_pass = max(2, batch_size // len(prompts))", _BATCHING),
    "safeseek_tl.baselines.ships.x__grown_group_angles__mutmut_7": ("step_angles = torch.empty(len(candidates), dtype=None)", _PRECISION),
    "safeseek_tl.baselines.ships.x__grown_group_angles__mutmut_9": ("step_angles = torch.empty(len(candidates), )", _PRECISION),
    "safeseek_tl.baselines.ships.x_ships_scores__mutmut_6": ("progress: bool = False,", _PROGRESS),
    "safeseek_tl.metrics.x_completion_cross_entropy__mutmut_1": ("logits: Float[Tensor, \"batch pos d_vocab\"], labels: Int[Tensor, \"batch pos\"], reduction: str = \"XXmeanXX\"", _ELSE_MEAN),
    "safeseek_tl.metrics.x_completion_cross_entropy__mutmut_2": ("logits: Float[Tensor, \"batch pos d_vocab\"], labels: Int[Tensor, \"batch pos\"], reduction: str = \"MEAN\"", _ELSE_MEAN),
    "safeseek_tl.metrics.x_completion_cross_entropy__mutmut_15": ("token_loss = F.cross_entropy(shifted_logits.transpose(1, 2), targets, reduction=\"none\")", _IGNORE_DEFAULT),
    "safeseek_tl.metrics.x_last_position_kl__mutmut_3": ("base = F.log_softmax(base_logits.float(), dim=None)", _LAST_DIM_2D),
    "safeseek_tl.metrics.x_last_position_kl__mutmut_5": ("base = F.log_softmax(base_logits.float(), )", _LAST_DIM_2D),
    "safeseek_tl.metrics.x_last_position_kl__mutmut_6": ("base = F.log_softmax(base_logits.float(), dim=+1)", _LAST_DIM_2D),
    "safeseek_tl.metrics.x_last_position_kl__mutmut_10": ("other = F.log_softmax(other_logits.float(), dim=None)", _LAST_DIM_2D),
    "safeseek_tl.metrics.x_last_position_kl__mutmut_12": ("other = F.log_softmax(other_logits.float(), )", _LAST_DIM_2D),
    "safeseek_tl.metrics.x_last_position_kl__mutmut_13": ("other = F.log_softmax(other_logits.float(), dim=+1)", _LAST_DIM_2D),
    "safeseek_tl.metrics.x_last_position_kl__mutmut_18": ("return (base.exp() * (base - other)).sum(+1)", _LAST_DIM_2D),
    "safeseek_tl.metrics.x_refusal_score__mutmut_6": ("probs = torch.softmax(last_logits.double(), dim=+1)", _LAST_DIM_2D),
    "safeseek_tl.metrics.x_refusal_score__mutmut_11": ("p_ref = probs[:, list(refusal_ids)].sum(+1)", _LAST_DIM_2D),
    "safeseek_tl.metrics.xǁRefusalJudgeǁfrom_file__mutmut_19": ("text = line.decode(\"UTF-8-SIG\" if number == 1 else \"utf-8\")", _CODEC_CASE),
    "safeseek_tl.metrics.xǁRefusalJudgeǁfrom_file__mutmut_23": ("text = line.decode(\"utf-8-sig\" if number == 1 else \"UTF-8\")", _CODEC_CASE),
    "safeseek_tl.metrics.xǁRefusalJudgeǁships__mutmut_4": ("return cls(min_chars=32, case_sensitive=True)", _DEFAULTS),
    "safeseek_tl.metrics.xǁRefusalJudgeǁships__mutmut_5": ("return cls(REFUSAL_KEYWORDS, case_sensitive=True)", _DEFAULTS),
    "safeseek_tl.masks.xǁMaskLogitsǁvalues__mutmut_23": ("noise_device = None", _CPU_ONLY),
    "safeseek_tl.masks.xǁMaskLogitsǁvalues__mutmut_24": ("noise_device = generator.device if (generator is not None) and False else a.device", _CPU_ONLY),
    "safeseek_tl.masks.xǁMaskLogitsǁvalues__mutmut_32": ("u = torch.rand(a.shape, generator=generator, device=noise_device).to(None).clamp(1e-6, 1 - 1e-6)", _CPU_ONLY),
    "safeseek_tl.masks.xǁMaskLogitsǁvalues__mutmut_35": ("u = torch.rand(a.shape, generator=generator, device=None).to(a.device).clamp(1e-6, 1 - 1e-6)", _CPU_ONLY),
    "safeseek_tl.masks.xǁMaskLogitsǁvalues__mutmut_38": ("u = torch.rand(a.shape, generator=generator, ).to(a.device).clamp(1e-6, 1 - 1e-6)", _CPU_ONLY),
    "safeseek_tl.masks.xǁMaskLogitsǁ__init____mutmut_28": ("param = nn.Parameter(torch.full(shape.size(unit_kind), float(value), dtype=None)) if unit_kind in self.kinds else None", _DEFAULT_FLOAT),
    "safeseek_tl.masks.xǁMaskLogitsǁ__init____mutmut_31": ("param = nn.Parameter(torch.full(shape.size(unit_kind), float(value), )) if unit_kind in self.kinds else None", _DEFAULT_FLOAT),
    "safeseek_tl.masks.xǁMaskLogitsǁkept__mutmut_3": ("return {unit_kind: value > 0.5 for unit_kind, value in self.values(stochastic=None).items()}", _FALSY),
    "safeseek_tl.masks.xǁMaskLogitsǁvalues__mutmut_28": ("u = torch.rand(a.shape, generator=generator, device=noise_device).to(a.device).clamp(None, 1 - 1e-6)", _NOISE_CLAMP),
    "safeseek_tl.masks.xǁMaskLogitsǁvalues__mutmut_29": ("u = torch.rand(a.shape, generator=generator, device=noise_device).to(a.device).clamp(1e-6, None)", _NOISE_CLAMP),
    "safeseek_tl.masks.xǁMaskLogitsǁvalues__mutmut_31": ("u = torch.rand(a.shape, generator=generator, device=noise_device).to(a.device).clamp(1e-6, )", _NOISE_CLAMP),
    "safeseek_tl.masks.xǁMaskLogitsǁvalues__mutmut_40": ("u = torch.rand(a.shape, generator=generator, device=noise_device).to(a.device).clamp(1e-6, 1 + 1e-6)", _NOISE_CLAMP),
    "safeseek_tl.masks.xǁMaskLogitsǁvalues__mutmut_41": ("u = torch.rand(a.shape, generator=generator, device=noise_device).to(a.device).clamp(1e-6, 2 - 1e-6)", _NOISE_CLAMP),
    "safeseek_tl.baselines.contrasting.x_static_patching__mutmut_4": ("batch_size: int = 9,", _BATCHING),
    "safeseek_tl.baselines.contrasting.x_static_patching__mutmut_62": ("return generate(model.model, model.chat, prompts, max_new_tokens=max_new_tokens, progress=progress)", _BATCHING),
    "safeseek_tl.baselines.contrasting.x_static_patching__mutmut_5": ("progress: bool = False,", _PROGRESS),
    "safeseek_tl.baselines.contrasting.x_static_patching__mutmut_57": ("return generate(model.model, model.chat, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=None)", _PROGRESS),
    "safeseek_tl.baselines.contrasting.x_static_patching__mutmut_63": ("return generate(model.model, model.chat, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, )", _PROGRESS),
    "safeseek_tl.baselines.contrasting.x_static_patching__mutmut_42": ("reference = ReferenceActivations.collect(donor.model, ((t.input_ids, t.attention_mask) for t in batches), )", _POOL_UNUSED),
    "safeseek_tl.baselines.contrasting.x_static_patching__mutmut_43": ("reference = ReferenceActivations.collect(donor.model, ((t.input_ids, t.attention_mask) for t in batches), pool_size=1)", _POOL_UNUSED),
    "safeseek_tl.tuning.x__step__mutmut_13": ("logits = loaded.model(input_ids.to(device), )", _RIGHT_PADDED),
    "safeseek_tl.compare.x_method_runners__mutmut_19": ("train, _ = split_records(records, config.val_size, )  # as fit() splits them", _SPLIT_AGAIN),
    "safeseek_tl.compare.x_method_runners__mutmut_20": ("train, _ = split_records(records, config.val_size, \"XXtraining dataXX\")  # as fit() splits them", _SPLIT_AGAIN),
    "safeseek_tl.compare.x_method_runners__mutmut_3": ("progress: bool = True,", _PROGRESS),
    "safeseek_tl.compare.x_method_runners__mutmut_6": ("scores = SafeSeek(loaded, config).fit(records, progress=None).scores", _PROGRESS),
    "safeseek_tl.compare.xǁComparisonǁsave__mutmut_14": ("self.table.to_csv(tmp, index=None)", _FALSY_INDEX),
    "safeseek_tl.seek.xǁSeekObjectiveǁ_token_sums__mutmut_9": ("used = None", _RIGHT_PADDED),
    "safeseek_tl.seek.xǁSeekObjectiveǁ_token_sums__mutmut_44": ("full_logits = self.model(input_ids, attention_mask=None)", _RIGHT_PADDED),
    "safeseek_tl.seek.xǁSeekObjectiveǁ_token_sums__mutmut_40": ("full_logits = \"\"", _UNREAD),
    "safeseek_tl.seek.xǁSeekObjectiveǁsparsity_terms__mutmut_24": ("per_module = torch.log(1e-6 + p).mean(+1) if cfg.circuit_sparsity == \"log\" else p.mean(-1)", _LAST_DIM_MASKS),
    "safeseek_tl.seek.xǁSeekObjectiveǁtask_terms__mutmut_25": ("sums = self._token_sums(paths, local, masks) if len(local) else [torch.zeros((), device=None)] * len(paths)", _ONE_PROCESS),
    "safeseek_tl.seek.xǁSeekObjectiveǁtask_terms__mutmut_26": ("sums = self._token_sums(paths, local, masks) if len(local) else [torch.zeros(device=self.device)] * len(paths)", _ONE_PROCESS),
    "safeseek_tl.seek.xǁSafeSeekǁfit__mutmut_161": ("(sum(task.values()) + sum(sparsity.values()) * parallel.world_size).backward()", _ONE_PROCESS),
    "safeseek_tl.seek.xǁSafeSeekǁfit__mutmut_157": ("optimizer.zero_grad(set_to_none=None)", _ZERO_GRAD),
    "safeseek_tl.seek.xǁSafeSeekǁfit__mutmut_180": ("_check_finite(_named_logits(objective), None, what=\"mask logits\")", _MESSAGE),
    "safeseek_tl.seek.x__named_logits__mutmut_5": ("masks = ((\"main\", objective.main), (\"CIRCUIT\", objective.circuit))", _MESSAGE),
    "safeseek_tl.seek.x__switch_test__mutmut_44": ("drops = (check.get(f\"{k}_full\", 0.0) - check.get(k, 1.0) for k in (\"clean\", \"benign\"))", _ABSENT_TWIN),
    "safeseek_tl.seek.x__switch_test__mutmut_64": ("utility_increase = check.get(\"utility\", 0.0) - check.get(\"utility_full\", 1.0)", _ABSENT_TWIN),
    "safeseek_tl.compare.x_compare__mutmut_115": ("k: pd.DataFrame([[circuits[(a, k)].jaccard(circuits[(b, k)], ) for b in names] for a in names], index=names, columns=names)", _ONE_KIND),
    "safeseek_tl.compare.x_method_runners__mutmut_16": ("train, _ = split_records(records, config.val_size, None)  # as fit() splits them", _SPLIT_AGAIN),
    "safeseek_tl.compare.x_method_runners__mutmut_21": ("train, _ = split_records(records, config.val_size, \"TRAINING DATA\")  # as fit() splits them", _SPLIT_AGAIN),
    "safeseek_tl.compare.xǁComparisonǁsave__mutmut_31": ("write_json(out / \"comparison.json\", {\"baseline\": self.baseline, \"rows\": self.table.to_dict(orient=\"RECORDS\")})", _ORIENT_CASE),
    "safeseek_tl.hooks.x_intervention_hook__mutmut_7": ("weight = keep.to(device=None, dtype=act.dtype)", _CPU_ONLY),
    "safeseek_tl.hooks.x_intervention_hook__mutmut_9": ("weight = keep.to(dtype=act.dtype)", _CPU_ONLY),
    "safeseek_tl.hooks.x_intervention_hook__mutmut_31": ("base = torch.zeros((), device=None, dtype=act.dtype)", _CPU_ONLY),
    "safeseek_tl.hooks.x_intervention_hook__mutmut_34": ("base = torch.zeros((), dtype=act.dtype)", _CPU_ONLY),
    "safeseek_tl.hooks.x_intervention_hook__mutmut_37": ("base = (fill(act) if callable(fill) else fill).to(device=None, dtype=act.dtype)", _CPU_ONLY),
    "safeseek_tl.hooks.x_intervention_hook__mutmut_39": ("base = (fill(act) if callable(fill) else fill).to(dtype=act.dtype)", _CPU_ONLY),
    "safeseek_tl.baselines.patching.x_attribution_patching__mutmut_37": ("clean_logits, cache = model.run_with_cache(clean_ids, attention_mask=clean_mask, names_filter=lambda name: name in names, )", _LAST_LOGITS),
    "safeseek_tl.baselines.patching.x_attribution_patching__mutmut_4": ("progress: bool = False,", _PROGRESS),
}

STATUS = {  # mutmut's exit codes (mutmut.stats.status_by_exit_code)
    0: "survived", 1: "killed", 3: "killed", 5: "no tests", 33: "no tests", 34: "skipped",
    36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout",
    -9: "killed by signal", -11: "segfault", 2: "interrupted", 37: "type check", None: "not checked",
}


def module_tests(module: Module) -> list[str]:
    """pytest's arguments that select the module's tests: the files that exist, the module's own
    tests/test_mutants_<name>.py (an empty one in the snapshot until it exists, so that adding it
    does not change mutmut's test selection, which would make it rerun every mutant), and the
    slow tests left out."""
    tests = [t for t in module.tests if (ROOT / t.partition("::")[0]).exists()] + [module.own_tests]
    return tests + [arg for node in module.deselect for arg in ("--deselect", node)]


def _sync(source: Path, target: Path) -> None:
    """Make target a copy of source (no __pycache__), copying only files whose content differs,
    with a fresh modification time so that mutmut regenerates the mutants of a changed file."""
    target.mkdir(parents=True, exist_ok=True)
    names = {p.name for p in source.iterdir() if p.name not in ("__pycache__", ".pytest_cache")}
    for old in target.iterdir():
        if old.name not in names:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    for name in names:
        src, dst = source / name, target / name
        if src.is_dir():
            _sync(src, dst)
        elif not dst.exists() or not filecmp.cmp(src, dst, shallow=False):
            shutil.copyfile(src, dst)


def toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def prepare(module: Module) -> tuple[Path, bool]:
    """The module's work folder, brought up to date; and whether its mutmut settings changed (then
    mutmut forgets every result, so every mutant is run again)."""
    folder = WORK / module.name
    _sync(ROOT / PACKAGE, folder / PACKAGE)
    _sync(ROOT / "tests", folder / "tests")
    own = folder / module.own_tests
    if not own.exists():
        own.write_text('"""Placeholder: no tests written for these mutants yet."""\n', encoding="utf-8")
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    section = "\n".join([
        "",
        "[tool.mutmut]",
        f'source_paths = ["{PACKAGE}"]',
        f"only_mutate = {toml_list([module.path])}",
        f"pytest_add_cli_args_test_selection = {toml_list(module_tests(module))}",
        'pytest_add_cli_args = ["-p", "no:cacheprovider"]',
        f"do_not_mutate_patterns = {toml_list(DO_NOT_MUTATE)}",
        # each mutant's tests run in a process forked from mutmut's, which ran the tests once
        # (torch runs single-threaded, see environment(), so forking after it is safe)
        'process_isolation = "fork"',
        "use_git_change_detection = false",
        "",
    ])
    text = pyproject + section
    target = folder / "pyproject.toml"
    changed = target.exists() and target.read_text(encoding="utf-8") != text
    target.write_text(text, encoding="utf-8")
    return folder, changed


def environment() -> dict[str, str]:
    env = dict(os.environ)
    # one thread per worker: the workers already use every core
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false", PYTHONDONTWRITEBYTECODE="1")
    return env


def mutmut() -> str:
    return str(Path(sys.executable).parent / "mutmut")


def meta(folder: Path, module: Module) -> dict[str, int | None]:
    path = folder / "mutants" / (module.path + ".meta")
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))["exit_code_by_key"]


GENERATE = """
import os
from mutmut.__main__ import copy_also_copy_files, copy_src_dir, create_mutants, setup_source_paths
from mutmut.mutation.trampoline import set_mutant_under_test
os.makedirs("mutants", exist_ok=True)
set_mutant_under_test("mutant_generation")
copy_src_dir(); copy_also_copy_files(); setup_source_paths(); create_mutants(1)
"""


def chosen(folder: Path, module: Module, sample: int | None, seed: int) -> list[str]:
    """The module's mutants to run: all, or a sample drawn with the seed from all of them."""
    subprocess.run([sys.executable, "-c", GENERATE], cwd=folder, env=environment(), check=True,
                   stdout=subprocess.DEVNULL)
    names = sorted(meta(folder, module))
    if sample is not None and sample < len(names):
        names = sorted(random.Random(f"{seed}:{module.name}").sample(names, sample))
    return names


def diffs(folder: Path, names: list[str]) -> dict[str, str]:
    """mutmut's diff of each mutant (read from the work folder, nothing is run)."""
    if not names:
        return {}
    code = (
        "import json, sys\n"
        "from mutmut.mutation.diff_apply import find_mutant, get_diff_for_mutant\n"
        "out = {}\n"
        "for n in json.loads(sys.stdin.read()):\n"
        "    out[n] = get_diff_for_mutant(n, path=find_mutant(n).path)\n"
        "print(json.dumps(out))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=folder, env=environment(), input=json.dumps(names),
                         capture_output=True, text=True, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def changed_line(diff: str) -> str:
    """The first added line of a unified diff, stripped (what EQUIVALENT entries name)."""
    for line in diff.splitlines():
        if line.startswith("+") and not line.startswith("+++"):
            return line[1:].strip()
    return ""


def score(folder: Path, module: Module, names: list[str]) -> dict:
    codes = meta(folder, module)
    counts: dict[str, int] = {}
    for name in names:
        status = STATUS.get(codes.get(name), "suspicious")
        counts[status] = counts.get(status, 0) + 1
    not_killed = [n for n in names if codes.get(n) is not None and STATUS.get(codes[n]) not in KILLED]
    found = diffs(folder, [n for n in not_killed if n in EQUIVALENT])
    equivalent, stale = [], []
    for name, diff in found.items():
        (equivalent if changed_line(diff) == EQUIVALENT[name][0] else stale).append(name)
    killed = sum(counts.get(s, 0) for s in KILLED)
    unchecked = counts.get("not checked", 0)
    considered = len(names) - len(equivalent) - unchecked
    return {
        "module": module.name,
        "mutants": len(names),
        "killed": killed,
        "equivalent": len(equivalent),
        "survived": considered - killed,
        "not_checked": unchecked,
        "score": round(100 * killed / considered, 1) if considered else None,
        "counts": counts,
        "survivors": sorted(set(not_killed) - set(equivalent)),
        "stale_equivalents": stale,
    }


KILLED = ("killed", "timeout", "killed by signal")


def run_module(module: Module, sample: int | None, seed: int, jobs: int, recheck: bool, log) -> dict:
    folder, settings_changed = prepare(module)
    names = chosen(folder, module, sample if sample is not None else module.sample, seed)
    everything = len(meta(folder, module))
    codes = meta(folder, module)
    todo = [n for n in names if settings_changed or codes.get(n) is None
            or (recheck and STATUS.get(codes[n]) not in KILLED and n not in EQUIVALENT)]
    start = time.monotonic()
    if todo:
        # unnamed, mutmut runs every mutant without a result; named (a sample, or survivors to
        # check again), it reruns each one, so only those without a result are named
        args = todo if len(todo) < everything else []
        log.write(f"\n=== {module.name}: {len(todo)} of {len(names)} mutants to run ===\n")
        log.flush()
        subprocess.run([mutmut(), "run", "--max-children", str(jobs), *args], cwd=folder, env=environment(),
                       stdout=log, stderr=subprocess.STDOUT, check=False)
    result = score(folder, module, names)
    result.update(total_generated=everything, seconds=round(time.monotonic() - start, 1), tests=module_tests(module),
                  names=names)
    (folder / "score.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


def last_results(modules: list[Module]) -> list[dict]:
    """The last run of each module, scored again (EQUIVALENT may have changed since)."""
    out = []
    for module in modules:
        path = WORK / module.name / "score.json"
        if path.exists():
            last = json.loads(path.read_text(encoding="utf-8"))
            names = [n for n in last.get("names", []) if n]
            if names:
                last.update(score(WORK / module.name, module, names))
            out.append(last)
    return out


def print_table(results: list[dict]) -> None:
    print(f"{'module':24} {'mutants':>8} {'killed':>7} {'equiv.':>7} {'survived':>9} {'score':>7}")
    for r in results:
        print(f"{r['module']:24} {r['mutants']:>8} {r['killed']:>7} {r['equivalent']:>7} {r['survived']:>9} {r['score']!s:>6}%")
    mutants = sum(r["mutants"] for r in results)
    killed = sum(r["killed"] for r in results)
    equivalent = sum(r["equivalent"] for r in results)
    considered = mutants - equivalent - sum(r.get("not_checked", 0) for r in results)
    overall = round(100 * killed / considered, 1) if considered else None
    print(f"{'overall':24} {mutants:>8} {killed:>7} {equivalent:>7} {considered - killed:>9} {overall!s:>6}%")
    unchecked = [r["module"] for r in results if r.get("not_checked")]
    if unchecked:
        print("not every mutant was checked (mutmut stopped) in:", ", ".join(unchecked))
    stale = [n for r in results for n in r.get("stale_equivalents", [])]
    if stale:
        print("stale EQUIVALENT entries (their mutant changed; counted as survivors):", *stale, sep="\n  ")


def short_name(name: str) -> str:
    """``safeseek_tl.units.xǁCircuitǁempty__mutmut_10`` -> ``units.Circuit.empty#10``."""
    module, _, rest = name.removeprefix(PACKAGE + ".").rpartition(".")
    function, _, number = rest.rpartition("__mutmut_")
    function = function[2:].replace("ǁ", ".") if function.startswith("xǁ") else function.removeprefix("x_")
    return f"{module}.{function}#{number}"


def print_markdown(results: list[dict]) -> None:
    """The scores as a Markdown table, then the equivalent mutants by reason (for benchmarks/RESULTS.md)."""
    print("| module | tests | mutants run (of all) | killed | equivalent | survived | score | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        args, tests = r.get("tests", []), []
        for i, arg in enumerate(args):
            if arg.startswith("tests/"):
                left_out = i > 0 and args[i - 1] == "--deselect"
                tests.append(f"not {arg.rpartition('::')[2]}" if left_out else arg.removeprefix("tests/"))
        print(f"| {r['module']} | {', '.join(tests)} | {r['mutants']} ({r.get('total_generated', '?')}) | {r['killed']} | "
              f"{r['equivalent']} | {r['survived']} | {r['score']}% | {r.get('seconds', '?')} |")
    mutants = sum(r["mutants"] for r in results)
    killed = sum(r["killed"] for r in results)
    equivalent = sum(r["equivalent"] for r in results)
    considered = mutants - equivalent - sum(r.get("not_checked", 0) for r in results)
    overall = round(100 * killed / considered, 1) if considered else None
    seconds = round(sum(r.get("seconds", 0) for r in results))
    print(f"| **all** | | {mutants} | {killed} | {equivalent} | {considered - killed} | **{overall}%** | {seconds} |")
    run = {n for r in results for n in r.get("names", [])}
    by_reason: dict[str, list[str]] = {}
    for name, (_, reason) in EQUIVALENT.items():
        if name in run:
            by_reason.setdefault(reason, []).append(short_name(name))
    print()
    print("| why equivalent | mutants |")
    print("|---|---|")
    for reason, names in sorted(by_reason.items(), key=lambda item: -len(item[1])):
        print(f"| {reason.replace('|', chr(92) + '|')} | {len(names)}: {', '.join(f'`{n}`' for n in sorted(names))} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="module names from MODULES (default: all)")
    parser.add_argument("--sample", type=int, help="run a seeded sample of this many mutants per module")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="mutants tested at once")
    parser.add_argument("--fresh", action="store_true", help="forget earlier results of these modules")
    parser.add_argument("--recheck", action="store_true", help="test the surviving mutants again (after adding tests)")
    parser.add_argument("--report", action="store_true", help="print the scores of the last runs and stop")
    parser.add_argument("--markdown", action="store_true", help="with --report: as Markdown, with the equivalent mutants")
    parser.add_argument("--survivors", action="store_true", help="print the diff of each surviving mutant and stop")
    parser.add_argument("--log", type=Path, default=WORK / "mutmut.log", help="mutmut's output (appended)")
    args = parser.parse_args(argv)

    by_name = {m.name: m for m in MODULES}
    unknown = [n for n in args.modules if n not in by_name]
    if unknown:
        parser.error(f"unknown module(s) {unknown}; choose from {list(by_name)}")
    modules = [by_name[n] for n in args.modules] if args.modules else MODULES

    if args.report:
        (print_markdown if args.markdown else print_table)(last_results(modules))
        return 0
    if args.survivors:
        for r in last_results(modules):
            folder = WORK / r["module"]
            for name, diff in diffs(folder, r["survivors"]).items():
                status = STATUS.get(meta(folder, by_name[r["module"]]).get(name), "suspicious")
                print(f"# {name}: {status}\n{diff}")
        return 0

    WORK.mkdir(exist_ok=True)
    args.log.parent.mkdir(parents=True, exist_ok=True)
    print(f"mutmut output: {args.log}")
    started = datetime.now(timezone.utc)
    t0 = time.monotonic()
    results = []
    with open(args.log, "a", encoding="utf-8") as log:
        for module in modules:
            if args.fresh:
                shutil.rmtree(WORK / module.name, ignore_errors=True)
            result = run_module(module, args.sample, args.seed, args.jobs, args.recheck, log)
            results.append(result)
            print(f"{module.name}: {result['killed']}/{result['mutants'] - result['equivalent']} killed "
                  f"({result['score']}%), {result['seconds']} s", flush=True)
            if result["not_checked"]:
                print(f"  {result['not_checked']} mutants not checked: mutmut stopped (a mapped test fails "
                      f"without mutation?); its output is in {args.log}", flush=True)
    print()
    print_table(results)
    print(f"\n{platform.machine()}, {os.cpu_count()} cores, started {started:%Y-%m-%d %H:%M} UTC, "
          f"wall time {time.monotonic() - t0:.0f} s")
    return 1 if any(r["not_checked"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
