"""Test-split metrics of a base model or a trained adapter, and its generation latency.

Classification tasks are scored by label accuracy (`scoring.label_scores`), generation tasks
by completion loss and perplexity; both report the completion loss. Latency is greedy decoding
of a few prompts, one at a time, with the adapter unmerged (peft's LoRA forward) and merged
into the weights (`merge_and_unload`): the serving cost of an adapter left separate.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftModel
from torch import nn

from layercard import data
from layercard.finetune import read_summary
from layercard.models import LoadedModel, load_model
from layercard.scoring import label_scores
from layercard.training import dev_loss


@dataclass(frozen=True)
class EvalConfig:
    """What to score: a finished `layercard train` run (or the base model), on which split."""

    run: str | None  # a train output directory; None: the base model of `model` on `task`
    model: str | None = None
    task: str | None = None
    split: str = "test"
    examples: int | None = None  # the first N of the split; None: all
    batch_size: int = 8
    max_length: int = 256
    seed: int = 0
    latency_prompts: int = 4
    latency_tokens: int = 16


@dataclass
class EvalResult:
    """Metrics of one model on one split; latency in seconds per generated token."""

    model: str
    task: str
    split: str
    adapter: str | None
    n_examples: int
    loss: float  # mean completion-token loss
    perplexity: float
    accuracy: float | None  # classification (label scoring), else None
    metric: str  # "accuracy" | "loss": the task's headline metric
    latency_unmerged: float | None  # with the adapter as peft runs it (None: no adapter)
    latency_merged: float  # merged into the weights (the base model when no adapter)


@torch.no_grad()
def seconds_per_token(
    model: nn.Module, loaded: LoadedModel, prompts: list[str], tokens: int
) -> float:
    """Mean wall seconds per token of greedy decoding `tokens` new tokens for each prompt."""
    model.eval()
    total, count = 0.0, 0
    for prompt in prompts:
        ids = loaded.tokenizer(prompt, return_tensors="pt").to(next(model.parameters()).device)
        start = time.perf_counter()
        out = model.generate(**ids, max_new_tokens=tokens, min_new_tokens=tokens,
                             do_sample=False, pad_token_id=loaded.tokenizer.pad_token_id)
        total += time.perf_counter() - start
        count += out.shape[1] - ids["input_ids"].shape[1]
    return total / max(count, 1)


def evaluate(config: EvalConfig) -> EvalResult:
    """Score the run's adapter (or the base model) on the split; see the module doc."""
    if config.run is not None:
        summary = read_summary(config.run)
        model_spec, task_spec = summary.config.model, summary.config.task
        seed, max_length = summary.config.seed, summary.config.max_length
    elif config.model and config.task:
        model_spec, task_spec, seed, max_length = (config.model, config.task, config.seed,
                                                   config.max_length)
    else:
        raise ValueError("eval: give a train run directory, or --model and --task")
    if config.split not in ("dev", "test"):
        raise ValueError(f"--split must be dev or test, got {config.split!r}")
    task = data.load_task(task_spec, seed=seed)
    examples = getattr(task, config.split)[: config.examples]
    if not examples:
        raise ValueError(f"--split {config.split}: the task {task.name} has no such examples")
    loaded = load_model(model_spec)
    model: nn.Module = loaded.model
    adapter = None
    if config.run is not None:
        adapter = str(Path(config.run) / "adapter")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
            model = PeftModel.from_pretrained(loaded.model, adapter)
    if task.kind == "classification":  # one pass gives both (the true label is a candidate)
        accuracy, loss = label_scores(model, loaded.tokenizer, examples, task.label_words,
                                      max_length=max_length, batch_size=config.batch_size)
    else:
        batches = data.task_batches(examples, loaded.tokenizer, kind=task.kind,
                                    max_length=max_length, batch_size=config.batch_size)
        accuracy, loss = None, dev_loss(model, batches)
    prompts = [e.prompt for e in examples[: config.latency_prompts]]
    unmerged = None
    if isinstance(model, PeftModel):
        unmerged = seconds_per_token(model, loaded, prompts, config.latency_tokens)
        model = model.merge_and_unload()
    merged = seconds_per_token(model, loaded, prompts, config.latency_tokens)
    return EvalResult(
        model=model_spec, task=task.name, split=config.split, adapter=adapter,
        n_examples=len(examples), loss=loss, perplexity=math.exp(min(loss, 700.0)),
        accuracy=accuracy, metric="accuracy" if accuracy is not None else "loss",
        latency_unmerged=unmerged, latency_merged=merged,
    )
