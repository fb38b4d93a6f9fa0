"""The library's typed errors, and what the ``safeseek`` command does with each.

- :class:`InputError` (a ``ValueError``) and its subclasses: bad input the user can fix, a file, a
  name, an option value or a shape. The command line prints the message and exits with code 2.
- :class:`NonFiniteLossError`: an optimization diverged (exit code 3).
- Anything else, a plain ``ValueError`` included, is a bug in the library (exit code 1): raise an
  :class:`InputError` for every problem that the caller's input causes.

Each error is also importable from the module that raises it (``safeseek_tl.data.DataError``, ...)
and from ``safeseek_tl``.
"""

from __future__ import annotations

from typing import Any


class InputError(ValueError):
    """Bad input the user can fix: a file, a name, an option value, a shape; the message says which.

    ``unpruned``: when :func:`~safeseek_tl.seek.discover` found a circuit that pruning then
    rejected, the search's result (a :class:`~safeseek_tl.seek.SeekResult`), so that it can be saved.
    """

    unpruned: Any = None


class DataError(InputError):
    """A data file or record is malformed; the message names the file, line and field."""


class ShapeMismatchError(InputError):
    """A scores or circuit file was made for a model of another shape."""


class ChecksumError(DataError):
    """A fetched or cached file is not the one expected: the message names it, the expected and actual sha256."""


class ModelNotAvailableError(InputError, RuntimeError):
    """The model cannot be loaded without a network download.

    Also a ``RuntimeError``, as it was before it became an :class:`InputError`.
    """


class NonFiniteLossError(FloatingPointError):
    """A loss term, the gradient or a mask became NaN or infinite; the message names which and where.

    ``result`` holds the best masks validated before it happened (a
    :class:`~safeseek_tl.seek.SeekResult`), when :meth:`~safeseek_tl.seek.trainer.SafeSeek.fit` raised it.
    (Typed ``Any``: this module imports nothing of the library, so that every module can raise.)
    """

    result: Any = None
