"""Griffe extension for the docs build: Sphinx roles and doctest blocks in docstrings, as Markdown.

The docstrings are written in reST style (``:class:`Scores```, ``:func:`~safeseek_tl.masks.mask_hooks```,
``>>>`` examples); mkdocstrings renders Markdown. This turns each role into an mkdocstrings
cross-reference (``[Scores][safeseek_tl.units.Scores]``, resolved by autorefs) and wraps runs of
``>>>`` lines in a fenced Python block.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|func|meth|attr|data|mod|exc|obj):`(~?)([\w.]+)`")
DOCTEST = re.compile(r"^([ \t]*>>> .*(?:\n[ \t]*(?:>>>|\.\.\.) .*)*)", re.MULTILINE)


def _role(match: re.Match[str], obj: griffe.Object) -> str:
    tilde, target = match.groups()
    shown = target.rsplit(".", 1)[-1] if tilde else target
    if "." not in target:  # a bare name: resolve it from the docstring's own module or class
        try:
            target = obj.resolve(target) if not obj.is_module else obj.module.resolve(target)
        except Exception:  # noqa: BLE001 - unresolved names stay plain code
            return f"`{shown}`"
    return f"[`{shown}`][{target}]"


def _convert(obj: griffe.Object) -> None:
    if obj.is_alias or obj.docstring is None or getattr(obj, "_sphinx_roles_done", False):
        return
    text = ROLE.sub(lambda m: _role(m, obj), obj.docstring.value)
    obj.docstring.value = DOCTEST.sub(lambda m: f"```python\n{m.group(1)}\n```", text)
    obj._sphinx_roles_done = True  # type: ignore[attr-defined]


class SphinxRoles(griffe.Extension):
    """Convert every object's docstring once, after its package is loaded."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        _convert(obj)

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        _convert(pkg)
