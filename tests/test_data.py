"""Dataset loaders (JSON, JSONL, CSV), their error messages, and chat tokenization."""

from __future__ import annotations

import json

import pytest
import torch

from safeseek_tl import AlignmentRecord, BackdoorRecord, BenignRecord, ChatFormatter, DataError, load_records, tokenize_pairs, tokenize_prompts
from safeseek_tl.data import IGNORE_INDEX, split_records

from .conftest import make_word_tokenizer

BACKDOOR = {"input": "a", "output": "b", "backdoor_input": "cf a", "backdoor_output": "c"}
ALIGN = {"prompt": "p", "refuse": "no", "accept": "yes"}


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_loads_each_kind_and_format(tmp_path):
    jsonl = _write(tmp_path, "b.jsonl", "\n".join(json.dumps(BACKDOOR) for _ in range(3)) + "\n\n")
    assert load_records(jsonl) == [BackdoorRecord("a", "b", "cf a", "c")] * 3
    results = _write(tmp_path, "a.json", json.dumps({"results": [ALIGN, ALIGN]}))
    assert load_records(results) == [AlignmentRecord("p", "no", "yes")] * 2
    csv_file = _write(tmp_path, "n.csv", "prompt,response,id\nhi,hello,1\n")
    assert load_records(csv_file) == [BenignRecord("hi", "hello")]
    alpaca = _write(tmp_path, "alpaca.json", json.dumps([{"instruction": "sum", "input": "1 2", "output": "3"}, {"instruction": "hi", "input": "", "output": "yo"}]))
    assert load_records(alpaca) == [BenignRecord("sum\n\n1 2", "3"), BenignRecord("hi", "yo")]


@pytest.mark.parametrize(
    ("name", "text", "pattern"),
    [
        ("x.jsonl", json.dumps(BACKDOOR) + "\n{broken\n", r"x.jsonl:2: invalid JSON"),
        ("x.jsonl", json.dumps(BACKDOOR) + "\n" + json.dumps({k: v for k, v in BACKDOOR.items() if k != "output"}), r"x.jsonl:2: missing field 'output'"),
        ("x.json", "[\n" + json.dumps(ALIGN) + ",\n" + json.dumps({**ALIGN, "refuse": 3}) + "\n]", r"x.json:3: field 'refuse' must be a string"),
        ("x.json", "[\n" + json.dumps({**ALIGN, "accept": "  "}) + "\n]", r"x.json:2: field 'accept' is empty"),
        ("x.json", '{"results": 5}', r"x.json:1: expected a JSON list"),
        ("x.json", "[]", r"x.json: the file holds no records"),
        ("x.jsonl", json.dumps({"question": "q"}), r"x.jsonl:1: cannot tell the kind"),
        ("x.jsonl", "[1, 2]", r"x.jsonl:1: cannot tell the kind"),
        ("x.csv", "prompt,response\na,b,c\n", r"x.csv:2: the row has more cells"),
        ("x.csv", "prompt,response\na,\n", r"x.csv:2: field 'response' is empty"),
        ("x.csv", "", r"x.csv:1: the CSV file has no header"),
        ("x.txt", "hello", r"unsupported file type"),
    ],
)
def test_malformed_files_name_file_line_and_field(tmp_path, name, text, pattern):
    path = _write(tmp_path, name, text)
    with pytest.raises(DataError, match=pattern):
        load_records(path)


def test_non_utf8_bytes_name_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(json.dumps(BACKDOOR).encode() + b"\n{\"input\": \"\xff\"}\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: not UTF-8"):
        load_records(path)


def test_records_of_mixed_kinds_fail_on_the_odd_one(tmp_path):
    path = _write(tmp_path, "mix.jsonl", json.dumps(BACKDOOR) + "\n" + json.dumps(ALIGN) + "\n")
    with pytest.raises(DataError, match=r"mix.jsonl:2: missing field 'input'"):
        load_records(path)


def test_split_needs_enough_records():
    records = [BenignRecord("a", "b")] * 3
    train, val = split_records(records, 1)
    assert len(train) == 2 and len(val) == 1
    with pytest.raises(DataError, match="3 records cannot give 3 validation"):
        split_records(records, 3)


def test_pair_tokenization_masks_everything_but_the_completion():
    tokenizer = make_word_tokenizer()
    chat = ChatFormatter(tokenizer)
    batch = tokenize_pairs(chat, [("tell me how to bake a cake", "sure here is how"), ("steal a car", "Sorry I cannot help")])
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    pad = tokenizer.pad_token_id
    first = batch.input_ids[0][batch.attention_mask[0].bool()].tolist()
    assert tokenizer.convert_ids_to_tokens(first)[-6:] == ["<|assistant|>", "sure", "here", "is", "how", "<|end|>"]
    labelled = batch.labels[0][batch.labels[0] != IGNORE_INDEX].tolist()
    assert tokenizer.convert_ids_to_tokens(labelled) == ["sure", "here", "is", "how", "<|end|>"]
    assert batch.labels[0][-1].item() == end  # the longest row has no padding
    assert batch.attention_mask[1, -1] == 0
    assert (batch.input_ids[0][~batch.attention_mask[0].bool()] == pad).all()
    assert batch.loss_mask.sum().item() == 5 + 5


def test_over_long_pairs_are_cut_with_a_warning_and_long_prompts_refused():
    chat = ChatFormatter(make_word_tokenizer())
    with pytest.warns(UserWarning, match="1 of 1 completions were cut"):
        batch = tokenize_pairs(chat, [("bake a cake", "sure here is how to do it")], max_length=10)
    assert batch.input_ids.shape[1] == 10
    with pytest.raises(DataError, match="record 1: the prompt is"):
        tokenize_pairs(chat, [("bake a cake " * 5, "sure")], max_length=10)


def test_prompts_are_left_padded():
    chat = ChatFormatter(make_word_tokenizer())
    tokens = tokenize_prompts(chat, ["bake a cake", "steal a car now please"])
    assert tokens.attention_mask[0, 0] == 0 and tokens.attention_mask[:, -1].all()
    assert chat.tokenizer.convert_ids_to_tokens(tokens.input_ids[:, -1].tolist()) == ["<|assistant|>"] * 2


def test_tokenizer_without_template_falls_back_with_a_warning():
    tokenizer = make_word_tokenizer(chat_template=None)
    with pytest.warns(UserWarning, match="no chat template"):
        chat = ChatFormatter(tokenizer)
    assert chat.prompt_text("hi") == "user: hi\nassistant:"
    prompt_ids, completion_ids = chat.pair_ids("bake a cake", "sure")
    assert completion_ids[-1] == tokenizer.eos_token_id
    assert torch.tensor(prompt_ids).numel() > 0
