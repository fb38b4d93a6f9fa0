"""The atomic file writer: result files get the permissions any new file of the user gets."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from safeseek_tl._io import atomic_path, write_json, write_safetensors


@pytest.fixture
def umask() -> Iterator[None]:
    """Restore the process umask after a test that sets its own."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_have_the_users_permissions(tmp_path: Path, umask: None, mask: int, expected: int) -> None:
    # 0666 & ~umask, as for `touch`: other users of a shared run folder can read the results
    os.umask(mask)
    write_json(tmp_path / "a.json", {"x": 1})
    write_safetensors(tmp_path / "b.safetensors", {"t": torch.zeros(2)}, {"k": "v"})
    with atomic_path(tmp_path / "c.csv") as tmp:
        tmp.write_text("x\n1\n")
    for name in ("a.json", "b.safetensors", "c.csv"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.safetensors", "c.csv"]  # no temporary left


def test_overwriting_keeps_the_new_files_permissions(tmp_path: Path, umask: None) -> None:
    os.umask(0o077)
    write_json(tmp_path / "a.json", {"x": 1})
    os.umask(0o022)
    write_json(tmp_path / "a.json", {"x": 2})
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
