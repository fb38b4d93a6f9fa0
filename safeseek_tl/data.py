"""Safety datasets: typed records, file loaders (JSON, JSONL, CSV) and tokenization into batches.

Three kinds of records, with the official SafeSeek field names:

- backdoor: ``input``, ``output``, ``backdoor_input``, ``backdoor_output``;
- alignment: ``prompt``, ``refuse``, ``accept`` (a JSON file may hold them in a top-level
  ``results`` list, as the official code's files do);
- benign: ``prompt``, ``response``, or Alpaca's ``instruction``, ``input``, ``output``.

A bad file raises :class:`DataError` naming the file, the line and the field. Extra fields are
ignored, so files can carry ids or categories.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, overload

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from safeseek_tl.chat import ChatFormatter
from safeseek_tl.compat import pad_token_id
from safeseek_tl.errors import DataError, InputError
from safeseek_tl.readers import read_items

DataKind = Literal["backdoor", "alignment", "benign"]
DATA_KINDS: tuple[DataKind, ...] = ("backdoor", "alignment", "benign")
IGNORE_INDEX = -100


@dataclass(frozen=True)
class BackdoorRecord:
    """A clean prompt and answer, and the same prompt with the trigger and the backdoor answer."""

    input: str
    output: str
    backdoor_input: str
    backdoor_output: str


@dataclass(frozen=True)
class AlignmentRecord:
    """A harmful prompt with a refusal and a compliant answer."""

    prompt: str
    refuse: str
    accept: str


@dataclass(frozen=True)
class BenignRecord:
    """A benign prompt with a helpful answer (utility data)."""

    prompt: str
    response: str


Record = BackdoorRecord | AlignmentRecord | BenignRecord
RECORD_TYPES: dict[DataKind, type] = {"backdoor": BackdoorRecord, "alignment": AlignmentRecord, "benign": BenignRecord}


def _required_fields(kind: DataKind) -> tuple[str, ...]:
    return tuple(f.name for f in fields(RECORD_TYPES[kind]))


def detect_kind(item: Any) -> DataKind | None:
    """The kind whose fields ``item`` has (Alpaca items count as benign), or ``None``."""
    if not isinstance(item, dict):
        return None
    if "backdoor_input" in item:
        return "backdoor"
    if "refuse" in item or "accept" in item:
        return "alignment"
    if "response" in item or "instruction" in item:
        return "benign"
    return None


def _record_from(item: Any, kind: DataKind, where: str) -> Record:
    if not isinstance(item, dict):
        raise DataError(f"{where}: expected an object with fields {list(_required_fields(kind))}, got {type(item).__name__}")
    if kind == "benign" and "instruction" in item and "prompt" not in item:
        item = _alpaca_to_benign(item, where)
    values = {}
    for name in _required_fields(kind):
        if name not in item:
            raise DataError(f"{where}: missing field '{name}' (a {kind} record needs {list(_required_fields(kind))})")
        value = item[name]
        if not isinstance(value, str):
            raise DataError(f"{where}: field '{name}' must be a string, got {type(value).__name__}")
        if not value.strip():
            raise DataError(f"{where}: field '{name}' is empty")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:  # a JSON "\ud800" escape decodes to a lone surrogate, which no tokenizer takes
            raise DataError(f"{where}: field '{name}' holds an unpaired surrogate escape at character {err.start}, which is not text") from None
        values[name] = value
    return RECORD_TYPES[kind](**values)


def _alpaca_to_benign(item: dict[str, Any], where: str) -> dict[str, Any]:
    if "output" not in item:
        raise DataError(f"{where}: missing field 'output' (an Alpaca record needs 'instruction' and 'output', 'input' is optional)")
    instruction, extra, output = item["instruction"], item.get("input", ""), item["output"]
    for name, value in (("instruction", instruction), ("input", extra), ("output", output)):
        if not isinstance(value, str):
            raise DataError(f"{where}: field '{name}' must be a string, got {type(value).__name__}")
    return {"prompt": instruction + (f"\n\n{extra}" if extra.strip() else ""), "response": output}


@overload
def load_records(path: str | Path, kind: Literal["backdoor"]) -> list[BackdoorRecord]: ...
@overload
def load_records(path: str | Path, kind: Literal["alignment"]) -> list[AlignmentRecord]: ...
@overload
def load_records(path: str | Path, kind: Literal["benign"]) -> list[BenignRecord]: ...
@overload
def load_records(path: str | Path, kind: DataKind | None = None) -> list[Record]: ...
def load_records(path: str | Path, kind: DataKind | None = None) -> list[Any]:
    """Load a dataset file (.json, .jsonl or .csv) as typed records.

    ``kind`` is detected from the first record's fields when not given. Every record must be of
    the same kind. Raises :class:`DataError` naming the file, line and field of the first problem.
    """
    path = Path(path)
    items = read_items(path)
    if kind is not None and kind not in DATA_KINDS:
        raise DataError(f"{path}: unknown data kind {kind!r}; use one of {DATA_KINDS}")
    records: list[Record] = []
    for line, item in items:
        where = f"{path}:{line}"
        if kind is None:
            kind = detect_kind(item)
            if kind is None:
                keys = sorted(item) if isinstance(item, dict) else type(item).__name__
                raise DataError(
                    f"{where}: cannot tell the kind of data from fields {keys}; expected backdoor "
                    f"{list(_required_fields('backdoor'))}, alignment {list(_required_fields('alignment'))} "
                    f"or benign {list(_required_fields('benign'))}"
                )
        records.append(_record_from(item, kind, where))
    if not records:
        raise DataError(f"{path}: the file holds no records")
    return records


def split_records(records: Sequence[Record], n_val: int, source: str = "dataset") -> tuple[list[Record], list[Record]]:
    """Split into (train, validation) by position: the last ``n_val`` records validate."""
    if n_val < 0 or len(records) - n_val < 1:
        raise DataError(f"{source}: {len(records)} records cannot give {n_val} validation records and at least one for training")
    return list(records[: len(records) - n_val]), list(records[len(records) - n_val :])


@dataclass
class TokenizedPairs:
    """Right-padded (prompt, completion) sequences with a loss mask over completion tokens only."""

    input_ids: Int[Tensor, "n pos"]
    attention_mask: Int[Tensor, "n pos"]
    labels: Int[Tensor, "n pos"]

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def loss_mask(self) -> Bool[Tensor, "n pos"]:
        """True at the positions whose *next* token is a completion token (shifted labels)."""
        return self.labels[:, 1:] != IGNORE_INDEX

    def select(self, index: Tensor | slice | list[int]) -> TokenizedPairs:
        return TokenizedPairs(self.input_ids[index], self.attention_mask[index], self.labels[index])

    @staticmethod
    def concat(parts: Sequence[TokenizedPairs], pad_id: int) -> TokenizedPairs:
        """Stack several batches (of possibly different lengths) into one, right-padding."""
        width = max(part.input_ids.shape[1] for part in parts)

        def pad(t: Tensor, value: int) -> Tensor:
            return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)

        return TokenizedPairs(
            torch.cat([pad(p.input_ids, pad_id) for p in parts]),
            torch.cat([pad(p.attention_mask, 0) for p in parts]),
            torch.cat([pad(p.labels, IGNORE_INDEX) for p in parts]),
        )


def context_length(chat: ChatFormatter) -> int | None:
    """The model's context in tokens as its tokenizer records it (``load_model`` sets it), or ``None``."""
    limit = getattr(chat.tokenizer, "model_max_length", None)
    # Tokenizers that do not know their model's context say so with a huge sentinel (int(1e30)).
    return int(limit) if isinstance(limit, int) and 0 < limit < 10**9 else None


def tokenize_pairs(
    chat: ChatFormatter,
    pairs: Sequence[tuple[str, str]],
    max_length: int = 128,
    source: str = "dataset",
) -> TokenizedPairs:
    """Tokenize (prompt, completion) pairs through the chat template.

    Labels are the input ids on completion tokens and ``-100`` elsewhere (prompt and padding).
    A sequence longer than ``max_length`` (or than the model's context, when shorter) keeps its
    whole prompt and loses the end of its completion, with a warning; a prompt that alone does not
    fit is a :class:`DataError` naming the record and the start of the prompt.
    """
    if not pairs:
        raise DataError(f"{source}: no (prompt, completion) pairs to tokenize")
    context = context_length(chat)
    if context is not None and context < max_length:
        max_length, limit = context, f"the model's context of {context} tokens"
    else:
        limit = f"max_length={max_length}"
    rows, truncated = [], 0
    for number, (prompt, completion) in enumerate(pairs, start=1):
        prompt_ids, completion_ids = chat.pair_ids(prompt, completion)
        if len(prompt_ids) >= max_length:
            raise DataError(
                f"{source}: record {number}: the prompt is {len(prompt_ids)} tokens, which leaves no room for a "
                f"completion within {limit}; shorten it or raise max_length (it starts {prompt[:40]!r})"
            )
        if len(prompt_ids) + len(completion_ids) > max_length:
            truncated += 1
            completion_ids = completion_ids[: max_length - len(prompt_ids)]
        rows.append((prompt_ids, completion_ids))
    if truncated:
        warnings.warn(f"{source}: {truncated} of {len(pairs)} completions were cut to fit {limit}", stacklevel=2)
    width = max(len(p) + len(c) for p, c in rows)
    pad_id = pad_token_id(chat.tokenizer)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for row, (prompt_ids, completion_ids) in enumerate(rows):
        ids = prompt_ids + completion_ids
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
        labels[row, len(prompt_ids) : len(ids)] = torch.tensor(completion_ids)
    return TokenizedPairs(input_ids, attention_mask, labels)


@dataclass
class TokenizedPrompts:
    """Left-padded prompts (so the last position is every row's last prompt token)."""

    input_ids: Int[Tensor, "n pos"]
    attention_mask: Int[Tensor, "n pos"]

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, index: Tensor | slice | list[int]) -> TokenizedPrompts:
        return TokenizedPrompts(self.input_ids[index], self.attention_mask[index])


def tokenize_prompts(chat: ChatFormatter, prompts: Sequence[str], max_length: int | None = None) -> TokenizedPrompts:
    """Tokenize prompts through the chat template, left-padded.

    Prompts longer than ``max_length`` (default: the model's context) keep their last tokens, with
    a warning: the end holds the chat template's start of the answer, which generation needs.
    """
    if not prompts:
        raise DataError("no prompts to tokenize")
    max_length = max_length if max_length is not None else context_length(chat)
    rows = [chat.prompt_ids(prompt) for prompt in prompts]
    too_long = sum(len(r) > max_length for r in rows) if max_length is not None else 0
    if too_long and max_length is not None:
        warnings.warn(
            f"{too_long} of {len(rows)} prompts are longer than {max_length} tokens and keep only their last "
            f"{max_length} (their start, where a trigger may sit, is lost)",
            stacklevel=2,
        )
        rows = [r[-max_length:] for r in rows]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_token_id(chat.tokenizer), dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, ids in enumerate(rows):
        input_ids[i, width - len(ids) :] = torch.tensor(ids)
        attention_mask[i, width - len(ids) :] = 1
    return TokenizedPrompts(input_ids, attention_mask)


def batch_slices(n: int, batch_size: int) -> list[slice]:
    """Consecutive slices covering ``range(n)`` in batches of ``batch_size``."""
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    return [slice(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


def trim_padding(input_ids: Tensor, attention_mask: Tensor, right: bool = True) -> tuple[Tensor, Tensor]:
    """Drop columns that are padding in every row (a batch cut from a wider tokenized set)."""
    used = attention_mask.bool().any(0).nonzero()
    lo, hi = (0, int(used.max()) + 1) if right else (int(used.min()), attention_mask.shape[1])
    return input_ids[:, lo:hi], attention_mask[:, lo:hi]
