"""Helpers shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

import torch

from safeseek_tl.models import LoadedModel, load_model

PROMPTS = ["tell me how to steal a car", "bake a cake", "how to do it ?", "tell me how to bake the cake ."]
CLEAN = ["tell me how to steal a car", "Sorry I cannot help", "how to bake a cake"]
CORRUPTED = ["tell me how to bake a cake", "sure here is how", "how to steal the car ?"]


def load_sharp(folder) -> LoadedModel:
    """The tiny GQA model with sharper attention and logits, so ablations and patches matter.

    (The random init gives near-uniform attention and next-token distributions, where KLs are
    ~1e-7, below float32 noise.)"""
    loaded = load_model(folder)
    hf = loaded.model.original_model
    with torch.no_grad():
        hf.lm_head.weight.mul_(30.0)
        for layer in hf.model.layers:
            layer.self_attn.q_proj.weight.mul_(5.0)
            layer.self_attn.k_proj.weight.mul_(5.0)
    return loaded


def run_cli(*args: str) -> tuple[int, str, str]:
    """Run ``safeseek ARGS`` in this process (a subprocess spends most of its time importing torch).

    Returns the exit code, stdout and stderr. (Signal handlers are not restored here: ``discover``
    and ``tune`` must give SIGTERM back themselves, and tests check that they do.)
    """
    from safeseek_tl import cli

    out, err = io.StringIO(), io.StringIO()
    with mock.patch.object(sys, "argv", ["safeseek", *args]), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli.main()
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    return code, out.getvalue(), err.getvalue()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
"""Debian's headless browser, for the render tests (None where it is not installed)."""


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Run headless Chromium offline-friendly (no background networking) with ``args``; raise on failure."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
             f"--user-data-dir={profile}", "--window-size=1200,2400", "--enable-logging=stderr", "--v=0"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120, check=True)
