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

from benchmarks.recorded_settings import NECESSITY_DEFAULTS
from safeseek_tl.models import LoadedModel, load_model
from safeseek_tl.seek import SeekConfig

PROMPTS = ["tell me how to steal a car", "bake a cake", "how to do it ?", "tell me how to bake the cake ."]
CLEAN = ["tell me how to steal a car", "Sorry I cannot help", "how to bake a cake"]
CORRUPTED = ["tell me how to bake a cake", "sure here is how", "how to steal the car ?"]


def plain_alignment(units: str = "both", **settings) -> SeekConfig:
    """``SeekConfig.of("alignment", units, **settings)`` (by group or dotted name) over the settings
    before the sparse defaults, which the objective's hand-worked values assume: the necessity
    objective, logits from 1.0, benign weight 1, no size target (the defaults are pinned in
    test_seek_config.py)."""
    dotted = dict(NECESSITY_DEFAULTS)
    for key, value in settings.items():
        dotted.update({f"{key}.{name}": item for name, item in value.items()} if "." not in key else {key: value})
    return SeekConfig.of("alignment", units, **dotted)


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


class ToyModel(torch.nn.Module):
    """Logits ``[0, s]`` at every position, ``s`` = the row's sum of gated unit values (each unit is 1)."""

    def __init__(self, n_layers: int, n_heads: int, d_mlp: int) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # SeekObjective reads the device from parameters()
        self.n_layers, self.n_heads, self.d_mlp = n_layers, n_heads, d_mlp
        self.active: list = []

    @contextlib.contextmanager
    def hooks(self, fwd_hooks=()):
        self.active = list(fwd_hooks)
        try:
            yield self
        finally:
            self.active = []

    def start(self, input_ids):
        """What the unit values are added to (zero here)."""
        return torch.zeros(input_ids.shape)

    def forward(self, input_ids, attention_mask=None):
        b, t = input_ids.shape
        total = self.start(input_ids)
        for layer in range(self.n_layers):
            units = {f"blocks.{layer}.attn.hook_z": torch.ones(b, t, self.n_heads, 1), f"blocks.{layer}.mlp.hook_post": torch.ones(b, t, self.d_mlp)}
            for name, act in units.items():
                for hook_name, hook in self.active:
                    if hook_name == name:
                        act = hook(act, hook=None)
                total = total + act.flatten(2).sum(-1)
        return torch.stack([torch.zeros_like(total), total], dim=-1)
