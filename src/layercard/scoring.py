"""Task metrics of a (possibly adapted) model: completion log-likelihoods and label accuracy.

Classification is scored by label scoring: every label word is tried as the completion of the
prompt and the one with the highest log-likelihood is the prediction, as in lm-eval-harness.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from layercard.data import Example, task_batches


@torch.no_grad()
def completion_logprobs(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    *,
    kind: str,
    max_length: int,
    batch_size: int,
) -> list[float]:
    """Per example, the summed log-probability of its completion tokens given its prompt."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[float] = []
    try:
        for batch in task_batches(
            examples, tokenizer, kind=kind, max_length=max_length, batch_size=batch_size
        ):
            ids = batch["input_ids"].to(device)
            logits = model(input_ids=ids, attention_mask=batch["attention_mask"].to(device)).logits
            labels = batch["labels"][:, 1:].to(device)
            logp = logits[:, :-1].float().log_softmax(-1)
            picked = logp.gather(-1, labels.clamp_min(0)[..., None])[..., 0]
            out += (picked * (labels != -100)).sum(1).double().tolist()
    finally:
        model.train(was_training)
    return out


def label_scores(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    label_words: Sequence[str],
    *,
    max_length: int,
    batch_size: int,
) -> tuple[float, float]:
    """(label accuracy, completion loss) from one scoring pass: every label word is tried as
    the completion; the prediction is the most likely one, and the loss is the true label's
    negative log-likelihood per completion token (what `training.dev_loss` gives)."""
    if not examples:
        raise ValueError("label scoring: no examples")
    unknown = sorted({e.completion for e in examples} - set(label_words))
    if unknown:
        raise ValueError(f"label scoring: completions {unknown} are not label words")
    candidates = [Example(e.prompt, word, e.origin) for e in examples for word in label_words]
    scores = completion_logprobs(
        model, tokenizer, candidates, kind="classification", max_length=max_length,
        batch_size=batch_size,
    )
    n_tokens = {w: len(tokenizer(w, add_special_tokens=False)["input_ids"]) for w in label_words}
    k = len(label_words)
    correct, nll, count = 0, 0.0, 0
    for i, example in enumerate(examples):
        row = scores[i * k : (i + 1) * k]
        correct += label_words[max(range(k), key=row.__getitem__)] == example.completion
        nll -= row[label_words.index(example.completion)]
        count += n_tokens[example.completion]
    return correct / len(examples), nll / count
