"""The test run checks the library's jaxtyping shapes on every call (tests/conftest.py, tests/shapecheck.py)."""

from typing import Literal

import pytest
import torch
from jaxtyping import Bool, Float, TypeCheckError
from torch import Tensor

from safeseek_tl.metrics import last_position_kl
from safeseek_tl.models import LoadedModel
from tests.shapecheck import names_a_shape


def test_a_batch_size_that_differs_between_arguments_is_caught():
    # Unchecked, [2, 5] and [1, 5] logits broadcast into a KL of two rows without a word.
    with pytest.raises(TypeCheckError, match="batch"):
        last_position_kl(torch.zeros(2, 5), torch.zeros(1, 5))
    assert last_position_kl(torch.zeros(2, 5), torch.zeros(2, 5)).tolist() == [0.0, 0.0]


def test_a_wrong_dtype_is_caught():
    with pytest.raises(TypeCheckError):
        last_position_kl(torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 5))


def test_only_shape_annotations_are_checked():
    assert names_a_shape(Float[Tensor, "batch d_vocab"])
    assert names_a_shape(Float[Tensor, " batch"] | None)
    assert names_a_shape(dict[str, Bool[Tensor, " ..."]])
    assert not names_a_shape(Tensor)
    assert not names_a_shape(LoadedModel)  # tests pass stand-ins for it
    assert not names_a_shape(Literal["heads", "neurons"])
    assert not names_a_shape(dict[str, Tensor] | None)
