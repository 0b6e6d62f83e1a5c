"""Label scoring and completion log-likelihoods against a direct per-example computation."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from layercard.data import Example, task_batches
from layercard.scoring import completion_logprobs, label_scores
from layercard.training import dev_loss

WORDS = ["[UNK]", "[PAD]", "</s>", "a", "b", "c", "d", "yes", "no"]


def _tokenizer() -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", eos_token="</s>"
    )


def _direct_logprob(model, tokenizer, prompt: str, completion: str) -> float:
    """log p(completion | prompt), one example at a time, no padding."""
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c = tokenizer(completion, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p + c])
    with torch.no_grad():
        logp = model(input_ids=ids).logits[0].log_softmax(-1)
    return sum(float(logp[len(p) + i - 1, t]) for i, t in enumerate(c))


def test_completion_logprobs_match_a_direct_computation(tiny_lm) -> None:
    model, tok = tiny_lm("llama", 2, vocab=len(WORDS)), _tokenizer()
    examples = [Example("a b c", " d"), Example("a", " yes no"), Example("b c d a", " no")]
    got = completion_logprobs(model, tok, examples, kind="classification", max_length=16,
                              batch_size=2)
    want = [_direct_logprob(model, tok, e.prompt, e.completion) for e in examples]
    assert got == pytest.approx(want, abs=1e-5)


def test_label_accuracy_picks_the_most_likely_label(tiny_lm) -> None:
    model, tok = tiny_lm("llama", 2, vocab=len(WORDS)), _tokenizer()
    prompts = ["a b", "c d", "a c", "d d b", "b"]
    labels = [" yes", " no"]
    best = [max(labels, key=lambda w, p=p: _direct_logprob(model, tok, p, w)) for p in prompts]
    truth = [best[0], best[1], *(" no" if b == " yes" else " yes" for b in best[2:])]
    examples = [Example(p, t) for p, t in zip(prompts, truth, strict=True)]
    assert label_scores(model, tok, examples, labels, max_length=16, batch_size=3)[0] == 2 / 5
    with pytest.raises(ValueError, match="not label words"):
        label_scores(model, tok, [Example("a", " maybe")], labels, max_length=16, batch_size=1)


def test_label_scores_loss_equals_the_dev_loss_of_the_true_labels(tiny_lm) -> None:
    model, tok = tiny_lm("llama", 2, vocab=len(WORDS)), _tokenizer()
    examples = [Example("a b", " yes"), Example("c d", " no"), Example("a c d", " yes no"),
                Example("b", " no")]
    labels = [" yes", " no", " yes no"]
    accuracy, loss = label_scores(model, tok, examples, labels, max_length=16, batch_size=3)
    batches = task_batches(examples, tok, kind="classification", max_length=16, batch_size=2)
    assert loss == pytest.approx(dev_loss(model, batches), rel=1e-5)
    assert accuracy == label_scores(model, tok, examples, labels, max_length=16, batch_size=2)[0]
