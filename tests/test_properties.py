"""Property-based tests (hypothesis) of the loaders, the CLI and the report on bad or hostile input.

A malformed data file gives a :class:`DataError` naming the file, the line and the field; arbitrary
bytes give records or a DataError, never another exception; the CLI turns errors into one line
and a documented exit code; saved results of another model are refused, pickles are never
unpickled, and hostile text in a run folder makes no markup in the HTML report.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import pickle
import re
import tempfile
import warnings
from dataclasses import astuple, fields
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import safeseek_tl
from safeseek_tl.cli import shared
from safeseek_tl.data import (
    DATA_KINDS,
    RECORD_TYPES,
    BenignRecord,
    DataError,
    context_length,
    load_records,
    split_records,
    tokenize_pairs,
    tokenize_prompts,
)
from safeseek_tl.delta import ParameterDelta
from safeseek_tl.models import load_model
from safeseek_tl.report import write_report
from safeseek_tl.seek import SeekConfig, SeekResult
from safeseek_tl.units import Circuit, ModelShape, Scores, ShapeMismatchError
from tests.helpers import run_cli
from tests.test_plots import remote_resources

FEW = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PACKAGE = Path(safeseek_tl.__file__).parent
BACKDOOR_TRAIN = PACKAGE / "organisms" / "bundled" / "data" / "backdoor_train.jsonl"

FIELDS = {kind: tuple(f.name for f in fields(RECORD_TYPES[kind])) for kind in DATA_KINDS}
# any text a field may hold (no lone surrogates: they are not text), drawn often from characters
# that break naive readers (line separators, quotes, BOM, NUL); one-line text for CSV
TRICKY = "\u2028\u2029\x85\x0b\x0c\x1c\r\n\t\"',\\\ufeff\x00é😀"
TEXT = st.text(st.characters(blacklist_categories=("Cs",)) | st.sampled_from(TRICKY), min_size=1, max_size=20).filter(str.strip)
LINE_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")) | st.sampled_from("\"',;é😀\ufeff"), min_size=1, max_size=20).filter(str.strip)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
# objects that look like records: the loaders' own field names with any JSON values
ALL_FIELDS = sorted({name for names in FIELDS.values() for name in names} | {"instruction", "input", "output", "results"})
RECORDISH = st.dictionaries(st.sampled_from(ALL_FIELDS), JSON_VALUES | TEXT, max_size=5)
EXTRA_FIELDS = st.dictionaries(st.sampled_from(["id", "category", "note", "source"]), LINE_TEXT, max_size=2)


def records_of(kind: str, text: st.SearchStrategy = TEXT) -> st.SearchStrategy:
    return st.lists(st.builds(RECORD_TYPES[kind], *[text] * len(FIELDS[kind])), min_size=1, max_size=4)


def write_items(path: Path, items: list[dict], ensure_ascii: bool = True) -> list[int]:
    """Write dicts as .json (one per line inside a list), .jsonl or .csv; return each item's line."""
    if path.suffix == ".csv":
        names = list(dict.fromkeys(key for item in items for key in item))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, names, lineterminator="\n")
        writer.writeheader()
        writer.writerows(items)
        path.write_text(buffer.getvalue(), encoding="utf-8")
        return [i + 2 for i in range(len(items))]
    lines = [json.dumps(item, ensure_ascii=ensure_ascii) for item in items]
    if path.suffix == ".jsonl":
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return [i + 1 for i in range(len(items))]
    path.write_text("[\n" + ",\n".join(lines) + "\n]\n", encoding="utf-8")
    return [i + 2 for i in range(len(items))]


# ---------------------------------------------------------------- loaders
@FEW
@given(data=st.data(), kind=st.sampled_from(DATA_KINDS), suffix=st.sampled_from([".json", ".jsonl", ".csv"]))
def test_valid_files_load_back_exactly(data, kind, suffix):
    """Round trip, non-ASCII written raw; a raw U+2028 in a .jsonl line once split the line (str.splitlines)."""
    records = data.draw(records_of(kind, LINE_TEXT if suffix == ".csv" else TEXT))
    extras = data.draw(EXTRA_FIELDS)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"data{suffix}"
        write_items(path, [dict(zip(FIELDS[kind], astuple(r))) | extras for r in records], ensure_ascii=False)
        assert load_records(path) == records
        assert load_records(path, kind) == records


MUTATIONS = ["missing", "not_a_string", "empty", "surrogate", "not_utf8", "invalid_json", "not_an_object"]


@FEW
@given(
    data=st.data(),
    kind=st.sampled_from(DATA_KINDS),
    suffix=st.sampled_from([".json", ".jsonl"]),
    mutation=st.sampled_from(MUTATIONS),
)
def test_malformed_json_names_file_line_and_field(data, kind, suffix, mutation):
    records = data.draw(records_of(kind))
    items = [dict(zip(FIELDS[kind], astuple(r))) for r in records]
    index = data.draw(st.integers(0, len(items) - 1))
    field = data.draw(st.sampled_from(FIELDS[kind]))
    expected = {
        "missing": f"missing field '{field}'",
        "not_a_string": f"field '{field}' must be a string",
        "empty": f"field '{field}' is empty",
        "surrogate": f"field '{field}' holds an unpaired surrogate",
        "not_utf8": "not UTF-8",
        "invalid_json": "invalid JSON",
        "not_an_object": "expected an object",
    }[mutation]
    if mutation == "missing":
        del items[index][field]
    elif mutation == "not_a_string":
        items[index][field] = data.draw(JSON_VALUES.filter(lambda v: not isinstance(v, str)))
    elif mutation == "empty":
        items[index][field] = data.draw(st.text(" \t\u3000\u2028", max_size=3))
    elif mutation == "surrogate":
        items[index][field] = "a\ud800b"
    elif mutation in ("not_utf8", "invalid_json"):
        items[index][field] = "@@MARK@@"
    else:
        items[index] = data.draw(JSON_VALUES.filter(lambda v: not isinstance(v, dict)))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"data{suffix}"
        lines = write_items(path, items)
        if mutation == "not_utf8":
            path.write_bytes(path.read_bytes().replace(b"@@MARK@@", b"\xff\xfe"))
        elif mutation == "invalid_json":
            path.write_text(path.read_text().replace('"@@MARK@@"', '"unterminated'))
        with pytest.raises(DataError) as caught:
            load_records(path, kind)
    message = str(caught.value)
    assert expected in message
    line = int(re.match(rf"{re.escape(str(path))}:(\d+):", message).group(1))
    # a JSON decoder may notice a broken item only on the line after it
    assert line == lines[index] or (mutation == "invalid_json" and suffix == ".json" and line == lines[index] + 1)


@FEW
@given(data=st.data(), kind=st.sampled_from(DATA_KINDS), mutation=st.sampled_from(["empty", "extra_cell", "missing_cell", "not_utf8"]))
def test_malformed_csv_names_file_line_and_field(data, kind, mutation):
    records = data.draw(records_of(kind, LINE_TEXT))
    items = [dict(zip(FIELDS[kind], astuple(r))) for r in records]
    index = data.draw(st.integers(0, len(items) - 1))
    last = FIELDS[kind][-1]
    field = data.draw(st.sampled_from(FIELDS[kind])) if mutation == "empty" else last
    items[index][field] = " " if mutation == "empty" else "@@MARK@@"
    expected = {
        "empty": f"field '{field}' is empty",
        "extra_cell": "more cells than the header",
        "missing_cell": f"missing field '{last}'",
        "not_utf8": "not UTF-8",
    }[mutation]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.csv"
        lines = write_items(path, items)
        if mutation != "empty":  # the mark is the row's last cell, unquoted (it has no special characters)
            replacement = {"extra_cell": b",x,extra", "missing_cell": b"", "not_utf8": b",\xff\xfe"}[mutation]
            path.write_bytes(path.read_bytes().replace(b",@@MARK@@", replacement))
        with pytest.raises(DataError) as caught:
            load_records(path, kind)
    assert str(caught.value).startswith(f"{path}:{lines[index]}:")
    assert expected in str(caught.value)


DOCUMENTS = st.one_of(
    st.binary(max_size=300),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.lists(RECORDISH, max_size=4).map(lambda items: json.dumps(items).encode()),
    st.lists(RECORDISH, max_size=4).map(lambda items: "\n".join(json.dumps(i) for i in items).encode()),
    RECORDISH.map(lambda item: json.dumps({"results": [item]}).encode()),
)


@settings(max_examples=50, deadline=None)
@given(raw=DOCUMENTS, suffix=st.sampled_from([".json", ".jsonl", ".csv"]))
@example(raw=b'[{"instruction": 5, "output": "x"}]', suffix=".json")  # once a TypeError
@example(raw=b"prompt,response\n" + b"x" * 200_000 + b",y\n", suffix=".csv")  # once csv.Error (field size limit)
def test_arbitrary_bytes_give_records_or_a_data_error(raw, suffix):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"data{suffix}"
        path.write_bytes(raw)
        try:
            records = load_records(path)
        except DataError as err:
            assert str(err).startswith(str(path))
        else:
            assert records and all(isinstance(r, tuple(RECORD_TYPES.values())) for r in records)


def test_a_results_key_nested_deeper_does_not_confuse_line_numbers(tmp_path):
    path = tmp_path / "aligned.json"
    good = {"prompt": "p", "refuse": "no", "accept": "yes"}
    path.write_text(json.dumps({"meta": {"results": [1, 2]}, "results": [good, {**good, "accept": 3}]}, indent=1))
    with pytest.raises(DataError, match=r"aligned.json:(\d+): field 'accept' must be a string") as caught:
        load_records(path)
    line = int(re.search(r"aligned.json:(\d+):", str(caught.value)).group(1))
    assert '"accept": 3' in "".join(path.read_text().splitlines(keepends=True)[line - 1 : line + 4])


@settings(max_examples=50, deadline=None)
@given(n=st.integers(0, 8), n_val=st.integers(-2, 10))
def test_split_gives_train_and_validation_or_names_the_counts(n, n_val):
    records = [BenignRecord(f"p{i}", "r") for i in range(n)]
    if n_val < 0 or n - n_val < 1:
        with pytest.raises(DataError, match=rf"{n} records cannot give {n_val} validation records"):
            split_records(records, n_val)
    else:
        train, val = split_records(records, n_val)
        assert train + val == records and len(val) == n_val and train


# ---------------------------------------------------------------- prompts longer than the context
@pytest.fixture(scope="module")
def backdoor():
    return load_model("organism:tiny-backdoor")


def test_load_model_hands_the_context_to_the_data_code(backdoor, gqa):
    for loaded in (backdoor, gqa):
        assert context_length(loaded.chat) == loaded.model.cfg.n_ctx


@FEW
@given(prompt_words=st.integers(1, 160), answer_words=st.integers(1, 60), max_length=st.integers(8, 400))
def test_training_pairs_fit_the_context_or_name_the_record(backdoor, prompt_words, answer_words, max_length):
    prompt, answer = " ".join(["steal a car"] * prompt_words), " ".join(["sure"] * answer_words)
    limit = min(max_length, backdoor.model.cfg.n_ctx)
    prompt_ids, answer_ids = backdoor.chat.pair_ids(prompt, answer)
    if len(prompt_ids) >= limit:
        with pytest.raises(DataError, match=rf"record 2: the prompt is {len(prompt_ids)} tokens.*within .*{limit}"):
            tokenize_pairs(backdoor.chat, [("hi", "yo"), (prompt, answer)], max_length=max_length)
        return
    with warnings_if(len(prompt_ids) + len(answer_ids) > limit, f"1 of 1 completions were cut to fit .*{limit}"):
        pairs = tokenize_pairs(backdoor.chat, [(prompt, answer)], max_length=max_length)
    assert pairs.input_ids.shape[1] <= limit
    assert pairs.input_ids[0, : len(prompt_ids)].tolist() == prompt_ids  # the whole prompt is kept


@FEW
@given(words=st.integers(1, 120))
def test_prompts_longer_than_the_context_keep_their_end_with_a_warning(backdoor, words):
    prompt = " ".join(["cf steal a car"] * words)
    ids = backdoor.chat.prompt_ids(prompt)
    n_ctx = backdoor.model.cfg.n_ctx
    with warnings_if(len(ids) > n_ctx, rf"1 of 2 prompts are longer than {n_ctx} tokens"):
        tokens = tokenize_prompts(backdoor.chat, ["hi", prompt])
    assert tokens.input_ids.shape[1] == min(len(ids), n_ctx)
    assert tokens.input_ids[1].tolist() == ids[-n_ctx:]


@contextlib.contextmanager
def warnings_if(expected: bool, pattern: str):
    """Expect a warning matching ``pattern``, or no warning at all."""
    if expected:
        with pytest.warns(UserWarning, match=pattern):
            yield
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            yield


# ---------------------------------------------------------------- the command line



def assert_one_line_error(code: int, stderr: str, exit_code: int, *needles: str) -> None:
    assert code == exit_code, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    for needle in needles:
        assert needle in stderr, (needle, stderr)


@FEW
@given(data=st.data(), mutation=st.sampled_from(MUTATIONS))
def test_cli_reports_a_malformed_data_file_in_one_line_with_exit_code_2(data, mutation):
    records = data.draw(records_of("backdoor"))
    items = [dict(zip(FIELDS["backdoor"], astuple(r))) for r in records]
    index = data.draw(st.integers(0, len(items) - 1))
    items[index] = {
        "missing": {k: v for k, v in items[index].items() if k != "output"},
        "not_a_string": {**items[index], "output": 3},
        "empty": {**items[index], "output": ""},
        "surrogate": {**items[index], "output": "\udc80"},
        "not_utf8": {**items[index], "output": "@@MARK@@"},
        "invalid_json": {**items[index], "output": "@@MARK@@"},
        "not_an_object": [1, 2],
    }[mutation]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.jsonl"
        lines = write_items(path, items)
        path.write_bytes(path.read_bytes().replace(b'"@@MARK@@"', b'"\xff"' if mutation == "not_utf8" else b'"open'))
        code, _, stderr = run_cli("discover", "--model", "organism:tiny-backdoor", "--data", str(path), "--scenario", "backdoor", "--out", folder)
    assert_one_line_error(code, stderr, 2, f"{path}:{lines[index]}:")


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        (["--set", "not_a_setting=1"], "unknown setting 'not_a_setting'"),
        (["--set", "schedule.epochs=many"], "schedule.epochs must be a whole number, got 'many'"),
        (["--set", "loss.objective=kll"], "loss.objective must be one of 'ce', 'kl', got 'kll'"),
        (["--set", "w_overlap=0.5"], "settings are named group.field, and w_overlap is loss.w_overlap now"),
        (["--set", "loss.w_accept=1"], "loss.w_accept is not a setting of BackdoorLoss"),
        (["--set", "schedule.lr=0.1", "--lr", "0.2"], "--set schedule.lr repeats an option of the command"),
        (["--set", "novalue"], "--set expects key=value"),
        (["--lr", "inf"], "schedule.lr must be a positive finite number"),
        (["--units", "layers"], "units must be one of"),
        (["--complete", "--resume"], "--resume does not apply to --complete"),
        (["--complete", "--prune"], "--prune does not apply to --complete"),
        (["--device", "toaster"], "--device 'toaster' is not a torch device"),
        (["--val-data", "missing.jsonl"], "missing.jsonl: cannot read the file"),
        (["--bogus-option"], "No such option"),
    ],
)
def test_cli_bad_options_exit_with_code_2(tmp_path, options, needle):
    code, _, stderr = run_cli("discover", "--model", "organism:tiny-backdoor", "--data", str(BACKDOOR_TRAIN), "--scenario", "backdoor", "--out", str(tmp_path), *options)
    assert code == 2 and "Traceback" not in stderr and needle in stderr, stderr


@pytest.fixture
def small_backdoor_file(tmp_path) -> Path:
    path = tmp_path / "small.jsonl"
    path.write_text("".join(BACKDOOR_TRAIN.read_text().splitlines(keepends=True)[:6]))
    return path


def test_cli_dataset_too_small_for_the_split_exits_with_code_2(backdoor, small_backdoor_file, tmp_path, monkeypatch):
    monkeypatch.setattr(shared, "load_model_for_cli", lambda model, device: backdoor)
    code, _, stderr = run_cli("discover", "--model", "organism:tiny-backdoor", "--data", str(small_backdoor_file), "--scenario", "backdoor", "--out", str(tmp_path / "run"), "--val-size", "6")
    assert_one_line_error(code, stderr, 2, "6 records cannot give 6 validation records")


def test_cli_circuit_of_another_model_exits_with_code_2(backdoor, small_backdoor_file, tmp_path, monkeypatch):
    monkeypatch.setattr(shared, "load_model_for_cli", lambda model, device: backdoor)
    other = ModelShape(3, 8, 384, "other-model")
    Circuit.from_units(other, heads=[[0, 1]]).save(tmp_path / "circuit.json")
    code, _, stderr = run_cli("evaluate", "--model", "organism:tiny-backdoor", "--data", str(small_backdoor_file), "--circuit", str(tmp_path / "circuit.json"), "--out", str(tmp_path / "eval"))
    assert_one_line_error(code, stderr, 2, "made for a model with n_layers, n_heads, d_mlp = (3, 8, 384) (other-model)", "(4, 8, 384)")


def test_cli_nan_in_the_loss_exits_with_code_3_naming_the_term(backdoor, small_backdoor_file, tmp_path, monkeypatch):
    monkeypatch.setattr(shared, "load_model_for_cli", lambda model, device: backdoor)
    poison = ("blocks.1.mlp.hook_post", lambda act, hook: act * float("nan"))
    with backdoor.model.hooks(fwd_hooks=[poison]):
        code, _, stderr = run_cli("discover", "--model", "organism:tiny-backdoor", "--data", str(small_backdoor_file), "--scenario", "backdoor", "--out", str(tmp_path), "--epochs", "1", "--val-size", "2")
    assert_one_line_error(code, stderr, 3, "loss term 'main_clean' became nan", "the last good masks were kept")
    assert not (tmp_path / "circuit.json").exists()


def test_cli_unexpected_errors_are_one_line_with_code_1(small_backdoor_file, tmp_path, monkeypatch):
    def broken(model, device):
        raise RuntimeError("expected scalar type Float but found Half")

    monkeypatch.setattr(shared, "load_model_for_cli", broken)
    code, _, stderr = run_cli("discover", "--model", "organism:tiny-backdoor", "--data", str(small_backdoor_file), "--scenario", "backdoor", "--out", str(tmp_path))
    assert_one_line_error(code, stderr, 1, "unexpected RuntimeError: expected scalar type", "SAFESEEK_DEBUG=1")
    monkeypatch.setenv("SAFESEEK_DEBUG", "1")
    with pytest.raises(RuntimeError, match="expected scalar type"):
        run_cli("discover", "--model", "organism:tiny-backdoor", "--data", str(small_backdoor_file), "--scenario", "backdoor", "--out", str(tmp_path))


def test_cli_a_plain_value_error_from_inside_is_a_bug_with_code_1(small_backdoor_file, tmp_path, monkeypatch):
    # only an InputError is the user's to fix; a ValueError that a bug raises deep down is not
    def broken(*args, **kwargs):
        raise ValueError("too many values to unpack (expected 2)")

    monkeypatch.setattr("safeseek_tl.data.load_records", broken)
    code, _, stderr = run_cli("discover", "--model", "organism:tiny-backdoor", "--data", str(small_backdoor_file), "--scenario", "backdoor", "--out", str(tmp_path))
    assert_one_line_error(code, stderr, 1, "unexpected ValueError: too many values to unpack", "a bug")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["discover", "--model", "organism:no-such", "--scenario", "backdoor"], "unknown organism 'no-such'"),
        (["attribute", "--method", "no-such", "--model", "organism:tiny-backdoor", "--scenario", "backdoor"], "unknown method 'no-such'"),
        (["compare", "--methods", "ships,no-such", "--model", "organism:tiny-backdoor", "--scenario", "backdoor"], "unknown method 'no-such'"),
    ],
)
def test_cli_unknown_names_exit_with_code_2(backdoor, tmp_path, monkeypatch, args, needle):
    real_load = shared.load_model_for_cli
    monkeypatch.setattr(shared, "load_model_for_cli", lambda model, device: backdoor if model == "organism:tiny-backdoor" else real_load(model, device))
    code, _, stderr = run_cli(*args, "--data", str(BACKDOOR_TRAIN), "--out", str(tmp_path / "out"))
    assert_one_line_error(code, stderr, 2, needle)


def test_cli_report_of_a_folder_that_is_no_run_exits_with_code_2(tmp_path):
    (tmp_path / "notes.txt").write_text("not a run")
    code, _, stderr = run_cli("report", "--run", str(tmp_path), "--out", str(tmp_path / "report.html"))
    assert_one_line_error(code, stderr, 2, "not a saved run folder")


# ---------------------------------------------------------------- files of another model, and no pickles
SHAPES = st.builds(ModelShape, st.integers(1, 3), st.integers(1, 4), st.integers(1, 6), st.sampled_from(["", "model-a", "model-b"]))


def _dims(shape: ModelShape) -> tuple[int, int, int]:
    return (shape.n_layers, shape.n_heads, shape.d_mlp)


@FEW
@given(made_for=SHAPES, used_with=SHAPES)
def test_circuits_scores_and_masks_of_another_model_are_refused(made_for, used_with):
    assume(_dims(made_for) != _dims(used_with))
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        Circuit.from_units(made_for, heads=[[0, 0]]).save(out / "circuit.json")
        Scores(made_for, heads=torch.rand(made_for.size("heads")), method="x").save(out / "scores.safetensors")
        for load, name in ((Circuit.load, "circuit.json"), (Scores.load, "scores.safetensors")):
            with pytest.raises(ShapeMismatchError, match=re.escape(f"made for a model with n_layers, n_heads, d_mlp = {_dims(made_for)}")):
                load(out / name, expected=used_with)
            assert load(out / name, expected=made_for).shape == made_for
        # a run folder whose circuit and scores fit, but whose masks were made for the other model
        _seek_result(made_for).save(out / "other")
        _seek_result(used_with).save(out / "run")
        (out / "other" / "masks.safetensors").replace(out / "run" / "masks.safetensors")
        with pytest.raises(ShapeMismatchError, match="mask file"):
            SeekResult.load(out / "run", expected=used_with)


def _seek_result(shape: ModelShape) -> SeekResult:
    logits = torch.zeros(shape.size("heads"))
    scores = Scores(shape, heads=logits, method="safeseek")
    return SeekResult(scores, Circuit.empty(shape), SeekConfig.of("backdoor"), {"heads": logits})


@FEW
@given(made_for=st.tuples(st.integers(1, 5), st.integers(1, 5)), used_with=st.tuples(st.integers(1, 5), st.integers(1, 5)))
def test_a_delta_of_another_model_is_refused(made_for, used_with):
    assume(made_for != used_with)
    base = torch.nn.Linear(*made_for)
    changed = {name: p.detach() + 1 for name, p in base.named_parameters()}
    delta = ParameterDelta.between(dict(base.named_parameters()), changed)
    with tempfile.TemporaryDirectory() as folder:
        delta.save(Path(folder) / "delta.safetensors")
        loaded = ParameterDelta.load(Path(folder) / "delta.safetensors")
    target = torch.nn.Linear(*used_with)
    before = {name: p.detach().clone() for name, p in target.named_parameters()}
    with pytest.raises(ShapeMismatchError, match="made for another model"):
        loaded.apply_(target)
    for name, p in target.named_parameters():  # refused before anything was written
        assert torch.equal(p, before[name]), name


class _Payload:
    """Unpickling this creates a file: proof that a loader ran code from the data."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_loaders_never_unpickle(tmp_path):
    marker = tmp_path / "code-ran"
    blob = pickle.dumps(_Payload(marker))
    run = tmp_path / "run"
    run.mkdir()
    for name in ("circuit.json", "scores.safetensors", "masks.safetensors", "history.json", "config.json"):
        (run / name).write_bytes(blob)
    torch.save({"heads": torch.zeros(4, 8)}, tmp_path / "torch_saved.safetensors")
    attempts = [
        lambda: Circuit.load(run / "circuit.json"),
        lambda: Scores.load(run / "scores.safetensors"),
        lambda: Scores.load(tmp_path / "torch_saved.safetensors"),
        lambda: ParameterDelta.load(run / "masks.safetensors"),
        lambda: SeekResult.load(run),
        lambda: write_report(run, tmp_path / "report.html"),
    ]
    for attempt in attempts:
        with pytest.raises(ValueError):
            attempt()
    assert not marker.exists()


def test_report_refuses_a_history_that_is_not_an_object(tmp_path):
    Circuit.from_units(ModelShape(1, 2, 3), heads=[[0, 1]]).save(tmp_path / "circuit.json")
    (tmp_path / "history.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"history.json: expected an object with a 'history' list"):
        write_report(tmp_path, tmp_path / "report.html")
    assert not (tmp_path / "report.html").exists()


def test_the_package_has_no_pickle_loading_code():
    offenders = [
        f"{path.relative_to(PACKAGE)}: {line.strip()}"
        for path in PACKAGE.rglob("*.py")
        for line in path.read_text(encoding="utf-8").splitlines()
        if re.search(r"\btorch\.load\(|\bimport pickle\b|\bpickle\.loads?\(|\bjoblib\b|\bdill\b", line)
    ]
    assert offenders == []


# ---------------------------------------------------------------- hostile text in the report
PAYLOADS = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "</script><script>alert(1)</script>",
    "<a href='https://evil.example/x.js'>x</a>",
    "<link rel=stylesheet href=//evil.example/s.css>",
    "&lt;already escaped&gt; & <b>",
    "<!-- comment --><iframe src=javascript:alert(1)>",
]
HOSTILE = st.sampled_from(PAYLOADS) | st.text(st.sampled_from("<>\"'&/=;: xsrc!-"), min_size=1, max_size=30)


class _Markup(HTMLParser):
    """Start tags with their attribute names: the page's structure, whatever the text in it."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, tuple[str, ...]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, tuple(sorted(name for name, _ in attrs))))


def _markup(page: str) -> list[tuple[str, tuple[str, ...]]]:
    parser = _Markup()
    parser.feed(page)
    return parser.tags


def _run_folder(folder: Path, text: str) -> None:
    shape = ModelShape(2, 3, 4, model_name=text)
    generator = torch.Generator().manual_seed(0)
    scores = Scores(shape, heads=torch.rand(2, 3, generator=generator), neurons=torch.rand(2, 4, generator=generator), method=text)
    scores.save(folder / "scores.safetensors")
    Circuit.from_units(shape, heads=[[0, 1]], neurons=[[1, 2]], method=text, note=text).save(folder / "circuit.json")
    (folder / "examples.json").write_text(json.dumps([{"prompt": text, "full": text, "ablated": text}]))
    (folder / "behaviour.json").write_text(json.dumps({text: {text: 0.5}}))
    (folder / "config.json").write_text(json.dumps({text: text, "scenario": text}))
    history = [{"epoch": e, "loss": 1.0 / (e + 1), "off_heads": e, f"t{text}": 0.5} for e in range(2)]
    (folder / "history.json").write_text(json.dumps({"best_epoch": 1, "rounds": 1, "history": history}))
    rows = [
        {"method": m, "budget": b, "n_heads": b, "n_neurons": b, "n_units": 2 * b, "behaviour_change": 0.1 * b,
         "utility_change": -0.01 * b, "wall_time_s": 0.5, "precision": 0.5, "recall": 0.25 * b}
        for m in ("safeseek", f"m{text}") for b in (1, 2)
    ]  # fmt: skip
    pd.DataFrame(rows).to_csv(folder / "comparison.csv", index=False)


@pytest.fixture(scope="module")
def benign_markup(tmp_path_factory) -> list[tuple[str, tuple[str, ...]]]:
    folder = tmp_path_factory.mktemp("benign_run")
    _run_folder(folder, "plain")
    return _markup(write_report(folder, folder / "report.html", title="plain").read_text(encoding="utf-8"))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=HOSTILE)
def test_hostile_text_makes_no_markup_and_the_report_loads_nothing_remote(benign_markup, text):
    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder)
        _run_folder(run, text)
        page = write_report(run, run / "report.html", title=text).read_text(encoding="utf-8")
    assert _markup(page) == benign_markup  # the same elements and attributes as with plain text
    assert remote_resources(page) == []
    if text in PAYLOADS:
        assert text not in page
