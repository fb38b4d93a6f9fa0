"""Small file helpers shared by every module that writes results."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import Tensor

from safeseek_tl.errors import InputError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A crash or interrupt therefore never leaves a half-written result file behind.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_file_beside(target)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _new_file_beside(target: Path) -> Path:
    """Create an empty, uniquely named file next to ``target`` with the user's usual permissions.

    ``tempfile.mkstemp`` creates files 0600, which the rename would then give to every result file;
    opening with mode 0666 lets the kernel apply the umask (and default ACLs) as for any new file,
    without changing the process-wide umask, which other threads share.
    """
    for _ in range(100):
        tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temporary name beside {target}")


def write_json(path: str | Path, payload: Any) -> None:
    """Write ``payload`` as indented UTF-8 JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write one JSON object a line (UTF-8), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def read_json(path: str | Path) -> Any:
    """Read a JSON file, naming the file and position on a syntax error."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(f"{path}:{err.lineno}:{err.colno}: invalid JSON: {err.msg}") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text (byte {err.start})") from None


def write_safetensors(path: str | Path, tensors: dict[str, Tensor], header: dict[str, str]) -> None:
    """Write tensors and string metadata as a safetensors file, atomically, byte for byte reproducibly."""
    from safetensors.torch import save

    blob = save({k: v.contiguous() for k, v in tensors.items()}, metadata=header)
    with atomic_path(path) as tmp:
        tmp.write_bytes(_sorted_header(blob))


def _sorted_header(blob: bytes) -> bytes:
    """``blob`` with its JSON header's keys sorted.

    safetensors writes the metadata from a hash map, in an order that changes from one process to
    the next, so the same tensors would give files with different checksums. The data offsets
    count from the end of the header, so rewriting it (padded to 8 bytes, as the format asks)
    leaves them valid.
    """
    size = int.from_bytes(blob[:8], "little")
    text = json.dumps(json.loads(blob[8 : 8 + size]), sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + blob[8 + size :]


def read_safetensors(path: str | Path, what: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and string metadata of a safetensors file (never a pickle); ``what`` names it in errors."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise InputError(f"{path}: not a readable safetensors {what} ({err})") from None
    return tensors, header
