"""count_hooks pinned on hand-built modules (a gap found by mutation testing: ``make mutation
MODULES=hooks``): every kind of torch hook counts, on the model and on the model it wraps, each
module once."""

from __future__ import annotations

from torch import nn

from safeseek_tl.hooks import count_hooks


def _noop(*args):
    return None


def test_count_hooks_counts_every_kind_on_the_model_and_the_wrapped_model_once():
    inner = nn.Linear(2, 2)
    inner.register_forward_hook(_noop)
    inner.register_forward_pre_hook(_noop)
    inner.register_full_backward_hook(_noop)
    inner.register_full_backward_pre_hook(_noop)
    assert count_hooks(inner) == 4

    registered = nn.Module()
    registered.original_model = inner  # also a submodule: counted once
    registered.register_forward_hook(_noop)
    assert count_hooks(registered) == 5

    class Wrapper(nn.Module):
        def __init__(self, wrapped):
            super().__init__()
            self.__dict__["original_model"] = wrapped  # reachable only through the attribute

    assert count_hooks(Wrapper(inner)) == 4
    assert count_hooks(nn.Linear(2, 2)) == 0
