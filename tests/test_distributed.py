"""Data-parallel SafeSeek: two gloo processes end with the masks of one process on the same global batch."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from safeseek_tl._io import read_json, read_safetensors, write_json, write_safetensors
from safeseek_tl.distributed import DataParallel
from safeseek_tl.models import load_model
from safeseek_tl.organisms import load_data
from safeseek_tl.seek import SafeSeek, SeekConfig, SeekResult


# 10 training records in global batches of 4: the last batch (2 records) splits 1 + 1, and
# hard-concrete masks draw noise, so the ranks must keep their noise generators in step.
def _config(batch_size: int = 4) -> SeekConfig:
    return SeekConfig.of("backdoor", "both", masks={"kind": "hard_concrete"}, schedule={"epochs": 2, "batch_size": batch_size})


def _fit(config: SeekConfig) -> SeekResult:
    loaded = load_model("organism:tiny-backdoor")
    return SafeSeek(loaded, config).fit(load_data("backdoor", "train")[:10], load_data("backdoor", "val")[:3], progress=False)


def _tensors(result: SeekResult) -> dict[str, torch.Tensor]:
    return {f"main.{k}": v for k, v in result.main_logits.items()} | {f"circuit.{k}": v for k, v in result.circuit_logits.items()}


def _worker(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        result = _fit(_config())
        write_safetensors(Path(out) / f"rank{rank}.safetensors", _tensors(result), {})
        try:
            _fit(_config(batch_size=1))
            refused = ""
        except ValueError as err:
            refused = str(err)
        write_json(Path(out) / f"rank{rank}.json", {"history": result.history, "refused": refused})
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_give_the_masks_of_one(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    single = _fit(_config())
    expected = _tensors(single)
    for rank in range(2):
        masks, _ = read_safetensors(tmp_path / f"rank{rank}.safetensors", "masks")
        assert set(masks) == set(expected)
        for name, value in expected.items():
            torch.testing.assert_close(masks[name], value, rtol=0, atol=1e-5, msg=f"rank {rank}: {name}")
        report = read_json(tmp_path / f"rank{rank}.json")
        # every term (task terms of the global batch, validation) is the global value on every rank
        for got, want in zip(report["history"], single.history, strict=True):
            assert got.keys() == want.keys()
            for key, value in want.items():
                assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-6), f"rank {rank}: {key}"
        assert "smaller than the 2 data-parallel processes" in report["refused"]


def test_one_process_is_the_identity():
    parallel = DataParallel.current()
    assert (parallel.rank, parallel.world_size, parallel.is_main) == (0, 1, True)
    index = torch.arange(5)
    assert torch.equal(parallel.shard(index), index)
    value = torch.tensor(2.0, requires_grad=True)
    assert parallel.globalize(value) is value
