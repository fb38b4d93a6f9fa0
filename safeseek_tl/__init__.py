"""safeseek_tl: safety circuits in language models, on TransformerLens hook points.

The flow: load a model, run any attribution method to get :class:`Scores`, select a
:class:`Circuit`, ablate it and measure the behaviour, plot and compare.
"""

from safeseek_tl.ablation import ABLATION_MODES, AblationMode, ReferenceActivations, ablated, ablation_hooks
from safeseek_tl.chat import ChatFormatter
from safeseek_tl.data import (
    AlignmentRecord,
    BackdoorRecord,
    BenignRecord,
    TokenizedPairs,
    TokenizedPrompts,
    load_records,
    tokenize_pairs,
    tokenize_prompts,
)
from safeseek_tl.errors import ChecksumError, DataError, InputError, ModelNotAvailableError, NonFiniteLossError, ShapeMismatchError
from safeseek_tl.generation import generate
from safeseek_tl.masks import MASK_KINDS, MaskKind, MaskLogits, mask_hooks, masked
from safeseek_tl.metrics import (
    REFUSAL_KEYWORDS,
    RefusalJudge,
    completion_cross_entropy,
    last_position_kl,
    refusal_score,
    refusal_token_ids,
)
from safeseek_tl.models import LoadedModel, load_model
from safeseek_tl.monitor import Monitor, PromptCheck, TamperReference
from safeseek_tl.parameters import TUNE_MODES, TuneMode, apply_delta, parameter_masks
from safeseek_tl.readout import CircuitReader
from safeseek_tl.safeguard import Safeguard
from safeseek_tl.tuning import TuneConfig, TuneResult, tune
from safeseek_tl.units import Circuit, ModelShape, Scores

__version__ = "0.1.0"

__all__ = [
    "ABLATION_MODES",
    "MASK_KINDS",
    "REFUSAL_KEYWORDS",
    "TUNE_MODES",
    "AblationMode",
    "AlignmentRecord",
    "BackdoorRecord",
    "BenignRecord",
    "ChatFormatter",
    "ChecksumError",
    "Circuit",
    "CircuitReader",
    "DataError",
    "InputError",
    "LoadedModel",
    "MaskKind",
    "MaskLogits",
    "ModelNotAvailableError",
    "ModelShape",
    "Monitor",
    "NonFiniteLossError",
    "PromptCheck",
    "ReferenceActivations",
    "RefusalJudge",
    "Safeguard",
    "Scores",
    "ShapeMismatchError",
    "TamperReference",
    "TokenizedPairs",
    "TokenizedPrompts",
    "TuneConfig",
    "TuneMode",
    "TuneResult",
    "ablated",
    "ablation_hooks",
    "apply_delta",
    "completion_cross_entropy",
    "generate",
    "last_position_kl",
    "load_model",
    "load_records",
    "mask_hooks",
    "masked",
    "parameter_masks",
    "refusal_score",
    "refusal_token_ids",
    "tokenize_pairs",
    "tokenize_prompts",
    "tune",
]
