"""Tests of task loading, splits, completion-only labels and batching (tiny tokenizer; real data
marked integration)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import datasets
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from layercard import data
from layercard.checkpoint import fetch_all
from layercard.data import DataError, Example, load_task

WORDS = ["<unk>", "<pad>", "<s>", "</s>", "a", "b", "c", "d", "e", "f", "pos", "neg", ":"]
ID = {w: i for i, w in enumerate(WORDS)}


def tiny_tokenizer(*, bos: bool) -> PreTrainedTokenizerFast:
    """Word-level tokenizer on whitespace; with `bos` it prepends <s> like Llama tokenizers."""
    backend = Tokenizer(models.WordLevel(ID, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if bos:
        backend.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", ID["<s>"])]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
    )


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def gen_rows(n: int) -> list[dict[str, str]]:
    return [{"prompt": f"a b {i}", "completion": f" c d {i}"} for i in range(n)]


# ---------------------------------------------------------------- tokenization and batches


@pytest.mark.parametrize("bos", [False, True])
def test_labels_cover_exactly_the_completion(bos: bool) -> None:
    tok = tiny_tokenizer(bos=bos)
    [row] = data.tokenize([Example("a b c", " d e", "x.jsonl:1")], tok, max_length=16)
    prefix = [ID["<s>"]] if bos else []
    assert row["input_ids"] == [*prefix, ID["a"], ID["b"], ID["c"], ID["d"], ID["e"]]
    assert row["labels"] == [-100] * (len(prefix) + 3) + [ID["d"], ID["e"]]
    assert row["origin"] == "x.jsonl:1"


def test_eos_is_appended_and_labelled_for_generation() -> None:
    tok = tiny_tokenizer(bos=False)
    [row] = data.tokenize([Example("a", " b", "o")], tok, max_length=8, add_eos=True)
    assert row["input_ids"] == [ID["a"], ID["b"], ID["</s>"]]
    assert row["labels"] == [-100, ID["b"], ID["</s>"]]


def test_overlong_example_names_its_origin_and_is_not_truncated() -> None:
    tok = tiny_tokenizer(bos=False)
    examples = [Example("a", " b", "f.jsonl:1"), Example("a b c d", " e f", "f.jsonl:7")]
    with pytest.raises(DataError, match=r"f\.jsonl:7: 6 tokens, longer than max_length=5"):
        data.tokenize(examples, tok, max_length=5)
    assert len(data.tokenize(examples, tok, max_length=6)[1]["input_ids"]) == 6


def test_empty_completion_tokens_is_an_error() -> None:
    with pytest.raises(DataError, match=r"f\.csv:3: the completion has no tokens"):
        data.tokenize([Example("a", "   ", "f.csv:3")], tiny_tokenizer(bos=False), max_length=8)


def test_batches_pad_on_the_right_and_mask_padding() -> None:
    tok = tiny_tokenizer(bos=False)
    examples = [Example("a b c", " d"), Example("a", " b"), Example("a b", " c d e")]
    rows = data.tokenize(examples, tok, max_length=16)
    out = list(data.batches(rows, batch_size=2, pad_id=tok.pad_token_id))
    assert [b["input_ids"].shape for b in out] == [(2, 4), (1, 5)]
    first = out[0]
    pad = ID["<pad>"]
    assert first["input_ids"].tolist() == [[ID[w] for w in "abcd"], [ID["a"], ID["b"], pad, pad]]
    assert first["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert first["labels"].tolist() == [[-100, -100, -100, ID["d"]], [-100, ID["b"], -100, -100]]
    again = list(data.batches(rows, batch_size=2, pad_id=tok.pad_token_id))
    assert all(torch.equal(x[k], y[k]) for x, y in zip(out, again, strict=True) for k in x)
    with pytest.raises(DataError, match="batch_size"):
        next(data.batches(rows, batch_size=0, pad_id=0))



def _rows_of(batches: list[dict[str, torch.Tensor]]) -> list[tuple[int, ...]]:
    """The unpadded token ids of every row, in batch order."""
    return [
        tuple(ids[mask.bool()].tolist())
        for batch in batches
        for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True)
    ]


def test_measurement_batches_keep_every_row_put_the_head_first_and_cut_padding() -> None:
    tok = tiny_tokenizer(bos=False)
    words = "abcdef"
    examples = [
        Example(" ".join(words[: 1 + (7 * i) % 6]), " pos" if i % 2 else " neg")
        for i in range(11)
    ]
    plain = data.task_batches(examples, tok, kind="classification", max_length=16, batch_size=3)
    ordered = data.measurement_batches(
        examples, tok, kind="classification", max_length=16, batch_size=3, head=4
    )
    rows = _rows_of(ordered)
    head, rest = _rows_of(plain)[:4], _rows_of(plain)[4:]
    assert sorted(rows[:4]) == sorted(head)  # the coupling subset: the same first examples
    assert sorted(rows[4:]) == sorted(rest)  # nothing dropped or repeated
    assert rows[:4] == sorted(head, key=len, reverse=True)
    assert rows[4:] == sorted(rest, key=len, reverse=True)
    index = 0
    for part in (rows[:4], rows[4:]):  # head batched on its own; an average batch's tokens each
        budget = 3 * sum(map(len, part)) / len(part)
        taken = 0
        while taken < len(part):
            batch = ordered[index]
            n_rows, width = batch["input_ids"].shape
            assert n_rows <= 3 and (n_rows * width <= budget or n_rows == 1)
            taken += n_rows
            index += 1
        assert taken == len(part)
    assert index == len(ordered)
    assert max(b["input_ids"].numel() for b in ordered) < max(b["input_ids"].numel() for b in plain)

    def padded(batches: list[dict[str, torch.Tensor]]) -> int:
        return sum(int((b["attention_mask"] == 0).sum()) for b in batches)

    assert padded(ordered) < padded(plain)
    everything = data.measurement_batches(
        examples, tok, kind="classification", max_length=16, batch_size=3, head=50
    )
    assert sorted(_rows_of(everything)) == sorted(_rows_of(plain))

def test_model_loss_is_the_mean_over_completion_tokens(tiny_lm) -> None:
    tok = tiny_tokenizer(bos=True)
    examples = [Example("a b c", " d e"), Example("a", " f")]
    batch = next(
        data.batches(
            data.tokenize(examples, tok, max_length=8), batch_size=2, pad_id=tok.pad_token_id
        )
    )
    model = tiny_lm("llama", 2, vocab=len(WORDS))
    with torch.no_grad():
        loss = model(**batch).loss
        logp = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits.log_softmax(-1)
    # Completion tokens: d, e of example 1 (positions 4, 5) and f of example 2 (position 2).
    terms = [logp[0, 3, ID["d"]], logp[0, 4, ID["e"]], logp[1, 1, ID["f"]]]
    torch.testing.assert_close(loss, -torch.stack(terms).mean())


# ---------------------------------------------------------------- user files


def test_jsonl_generation_task_splits(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "gen.jsonl", gen_rows(40))
    task = load_task(str(path), seed=3)
    assert (task.name, task.kind, task.label_words) == ("gen", "generation", None)
    assert task.split_sizes == {"train": 32, "dev": 4, "test": 4}
    assert (task.split_seed, task.source, task.excluded) == (3, str(path.resolve()), {})
    origins = [[e.origin for e in s] for s in (task.train, task.dev, task.test)]
    flat = [o for s in origins for o in s]
    assert sorted(flat) == sorted(f"{path}:{i}" for i in range(1, 41))  # disjoint, none dropped
    assert task.train[0] == Example(
        *gen_rows(40)[int(task.train[0].origin.rsplit(":")[1]) - 1].values(), task.train[0].origin
    )
    same = load_task(str(path), seed=3)
    assert (same.train, same.dev, same.test, same.data_hash) == (
        task.train,
        task.dev,
        task.test,
        task.data_hash,
    )
    other = load_task(str(path), seed=4)
    assert other.dev != task.dev and other.data_hash != task.data_hash


def test_csv_classification_uses_label_words(tmp_path: Path) -> None:
    rows = [[f"a {i}", "pos" if i % 3 else "neg"] for i in range(10)]
    rows[4][0] = "a\nb, quoted"  # a field over two lines shifts later line numbers
    path = write_csv(tmp_path / "cls.csv", ["prompt", "label", "note"], [[*r, "x"] for r in rows])
    task = load_task(str(path))
    assert task.kind == "classification"
    assert task.label_words == [" neg", " pos"]
    everything = {e.origin: e for e in task.train + task.dev + task.test}
    assert everything[f"{path}:2"] == Example("a 0", " neg", f"{path}:2")
    assert everything[f"{path}:7"].prompt == "a\nb, quoted"  # record on lines 6-7
    assert everything[f"{path}:8"] == Example("a 5", " pos", f"{path}:8")


def test_datasets_dir_splits_used_as_given(tmp_path: Path) -> None:
    def part(n: int, tag: str) -> datasets.Dataset:
        return datasets.Dataset.from_list(
            [{"prompt": f"{tag} {i}", "completion": " c"} for i in range(n)]
        )

    datasets.DatasetDict(
        {"train": part(6, "t"), "validation": part(2, "v"), "test": part(3, "s")}
    ).save_to_disk(tmp_path / "dd")
    task = load_task(str(tmp_path / "dd"))
    assert task.split_sizes == {"train": 6, "dev": 2, "test": 3}
    assert {e.prompt.split()[0] for e in task.dev} == {"v"}
    assert task.test[2].origin == f"{tmp_path / 'dd'}[test]:row 2"

    datasets.DatasetDict({"train": part(20, "t"), "test": part(3, "s")}).save_to_disk(
        tmp_path / "no-dev"
    )
    task = load_task(str(tmp_path / "no-dev"))
    assert task.split_sizes == {"train": 18, "dev": 2, "test": 3}

    part(10, "t").save_to_disk(tmp_path / "single")
    task = load_task(str(tmp_path / "single"))
    assert task.split_sizes == {"train": 8, "dev": 1, "test": 1}
    assert sorted(e.prompt for e in task.train + task.dev + task.test) == sorted(
        f"t {i}" for i in range(10)
    )


BadFile = Callable[[Path], Path]
BAD_INPUTS: dict[str, tuple[BadFile, str]] = {
    "missing file": (lambda d: d / "nope.jsonl", r"nope\.jsonl.*no such file"),
    "unsupported extension": (
        lambda d: (d / "x.txt").write_text("a") and d / "x.txt",
        r"x\.txt: unsupported file type",
    ),
    "missing column in a jsonl row": (
        lambda d: write_jsonl(d / "m.jsonl", [*gen_rows(2), {"prompt": "a"}]),
        r"m\.jsonl:3: missing field 'completion'",
    ),
    "missing column in a csv header": (
        lambda d: write_csv(d / "m.csv", ["text", "completion"], [["a", "b"]]),
        r"m\.csv:1 \(header\): missing column 'prompt'",
    ),
    "both completion and label": (
        lambda d: write_jsonl(d / "b.jsonl", [{"prompt": "a", "completion": "b", "label": "c"}]),
        r"b\.jsonl:1: needs exactly one of the columns",
    ),
    "empty jsonl": (lambda d: write_jsonl(d / "e.jsonl", []), r"e\.jsonl: contains no examples"),
    "csv with only a header": (
        lambda d: write_csv(d / "e.csv", ["prompt", "completion"], []),
        r"e\.csv: contains no examples",
    ),
    "too few examples to split": (
        lambda d: write_jsonl(d / "s.jsonl", gen_rows(2)),
        r"s\.jsonl: 2 training examples",
    ),
    "non-string field": (
        lambda d: write_jsonl(d / "n.jsonl", [*gen_rows(3), {"prompt": "a", "completion": 5}]),
        r"n\.jsonl:4: column 'completion' must be a string, got int",
    ),
    "non-string label": (
        lambda d: write_jsonl(d / "l.jsonl", [{"prompt": "a", "label": 1}]),
        r"l\.jsonl:1: column 'label' must be a string, got int \(labels are the words",
    ),
    "empty field": (
        lambda d: write_csv(d / "f.csv", ["prompt", "completion"], [["a", "b"], ["a", " "]]),
        r"f\.csv:3: column 'completion' is empty",
    ),
    "bad utf-8 in jsonl": (
        lambda d: (
            (d / "u.jsonl").write_bytes(
                b'{"prompt": "a", "completion": "b"}\n{"prompt": "\xff", "completion": "b"}\n'
            )
            and d / "u.jsonl"
        ),
        r"u\.jsonl:2: not valid UTF-8",
    ),
    "bad utf-8 in csv": (
        lambda d: (
            (d / "u.csv").write_bytes(b"prompt,completion\na,b\nc,\xe9t\xe9\n") and d / "u.csv"
        ),
        r"u\.csv:3: not valid UTF-8",
    ),
    "malformed json line": (
        lambda d: (
            (d / "j.jsonl").write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a"\n')
            and d / "j.jsonl"
        ),
        r"j\.jsonl:2: malformed JSON",
    ),
    "json line not an object": (
        lambda d: write_jsonl(d / "o.jsonl", [["a", "b"]]),
        r"o\.jsonl:1: expected a JSON object",
    ),
    "csv row with extra fields": (
        lambda d: (d / "r.csv").write_text("prompt,completion\na,b\na,b,c\n") and d / "r.csv",
        r"r\.csv:3: number of fields differs",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_names_file_and_row(case: str, tmp_path: Path) -> None:
    make, message = BAD_INPUTS[case]
    with pytest.raises(DataError, match=message):
        load_task(str(make(tmp_path)))


def test_bad_datasets_dir_names_split_and_row(tmp_path: Path) -> None:
    rows = [{"prompt": "a", "label": "x"}] * 3 + [{"prompt": "", "label": "y"}]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(tmp_path / "d")
    with pytest.raises(DataError, match=r"d\[train\]:row 3: column 'prompt' is empty"):
        load_task(str(tmp_path / "d"))
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(rows[:3]),
            "extra": datasets.Dataset.from_list(rows[:3]),
        }
    ).save_to_disk(tmp_path / "e")
    with pytest.raises(DataError, match=r"e\[extra\]: unknown split 'extra'"):
        load_task(str(tmp_path / "e"))


# ---------------------------------------------------------------- built-in tasks (integration)


@pytest.fixture(scope="session")
def fetched() -> dict[str, Path]:
    """The built-in model and data in the cache (downloaded on first use)."""
    return fetch_all()


@pytest.mark.integration
def test_sentiment_task(fetched: dict[str, Path]) -> None:
    task = load_task("sentiment", seed=0)
    assert (task.kind, task.label_words) == ("classification", [" negative", " positive"])
    assert task.split_sizes == {"train": 8568, "dev": 1000, "test": 1000}
    assert sum(task.excluded.values()) == 37 and "0" in next(iter(task.excluded))
    assert sum(task.split_sizes.values()) + 37 == 10605  # every snippet accounted for
    for split in (task.train, task.dev, task.test):
        share = sum(e.completion == " positive" for e in split) / len(split)
        assert 0.45 < share < 0.55
    origins = [e.origin for e in task.train + task.dev + task.test]
    assert len(set(origins)) == len(origins)
    first = next(
        e
        for e in task.train + task.dev + task.test
        if e.origin == "movieReviewSnippets_GroundTruth.txt:2"
    )
    assert first.prompt.startswith(
        'Review: The Rock is destined to be the 21st Century\'s new "Conan"'
    )
    assert first.prompt.endswith("Steven Segal.\nSentiment:") and first.completion == " positive"
    assert load_task("sentiment", seed=0).data_hash == task.data_hash
    assert load_task("sentiment", seed=1).dev != task.dev


@pytest.mark.integration
def test_dialog_task(fetched: dict[str, Path]) -> None:
    task = load_task("dialog", seed=0)
    assert (task.kind, task.label_words) == ("generation", None)
    assert task.split_sizes == {"train": 8000, "dev": 1000, "test": 1000}
    assert sum(task.excluded.values()) + 10000 == 64350
    example = task.train[0]
    assert example.prompt.startswith("Statement: ") and example.prompt.endswith("\nReply:")
    assert example.completion.startswith(" ") and example.completion.strip()
    assert len({e.origin for e in task.train + task.dev + task.test}) == 10000


@pytest.mark.integration
def test_builtin_tasks_tokenize_with_smollm2(fetched: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(fetched["smollm2-135m"])
    sentiment = load_task("sentiment")
    rows = data.tokenize(sentiment.dev, tok, max_length=128)
    # Each label word is a single token, so the completion loss is one token per example.
    assert {tuple(t for t in r["labels"] if t != -100) for r in rows} == {
        (tok.convert_tokens_to_ids("Ġpositive"),),
        (tok.convert_tokens_to_ids("Ġnegative"),),
    }
    dialog = load_task("dialog")
    rows = data.tokenize(dialog.dev, tok, max_length=128, add_eos=True)
    assert all(r["input_ids"][-1] == tok.eos_token_id == r["labels"][-1] for r in rows)
