"""Shared builders of the neuraltpp tests: small and tiny models, random padded batches, and
heads whose intensity does not depend on the state (for closed forms)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch

from neuraltpp.data import Batch
from neuraltpp.models import TPPModel, build_model

SIZES = {
    # enough layers to make causality and shift tests meaningful, still fast
    "small": {
        "d_model": 16,
        "n_layers": 2,
        "n_heads": 2,
        "d_ff": 32,
        "d_state": 4,
        "chunk_size": 4,
    },
    # the smallest sensible model, for training loops and the CLI
    "tiny": {"d_model": 8, "n_layers": 1, "n_heads": 2, "d_ff": 16, "d_state": 4, "dropout": 0.1},
}
ModelBuilder = Callable[..., TPPModel]


def _build(
    name: str = "rothp",
    k: int = 3,
    *,
    size: str = "small",
    seed: int = 0,
    double: bool = False,
    frozen: bool = False,
    **overrides: object,
) -> TPPModel:
    """Model ``name`` for ``k`` types of a named size (plus overrides), seeded, in eval mode."""
    torch.manual_seed(seed)
    model = build_model(name, k, {**SIZES[size], **overrides}).eval()
    if frozen:
        model.requires_grad_(False)
    return model.double() if double else model


def _batch(seed: int = 0, b: int = 3, n: int = 12, k: int = 3, shift: float = 0.0) -> Batch:
    """``b`` random sequences of ``n`` events (sequence 1 padded after ``n - 4``), window half a
    unit before the first event and one after the last; times shifted by ``shift``."""
    g = torch.Generator().manual_seed(seed)
    times = shift + torch.cumsum(torch.rand(b, n, generator=g, dtype=torch.float64) * 2, dim=1)
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[1, n - 4 :] = False
    times[1, n - 4 :] = times[1, n - 5]  # padding repeats the last time
    types = torch.randint(0, k, (b, n), generator=g) * mask
    return Batch(times, types, mask, times[:, 0] - 0.5, times.max(1).values + 1.0)


def _set_heads(
    model: TPPModel,
    alpha: Sequence[float],
    bias: Sequence[float],
    beta: Sequence[float] | None = None,
) -> None:
    """Intensity independent of h: lambda_k(t_j + s) = softplus_{beta_k}(alpha_k s + bias_k)
    (beta_k = 1 when not given)."""
    heads = model.heads
    with torch.no_grad():
        heads.intensity_proj.weight.zero_()
        heads.intensity_proj.bias.copy_(torch.as_tensor(bias))
        heads.alpha.copy_(torch.as_tensor(alpha))
        if beta is not None:
            heads.log_beta.copy_(torch.log(torch.as_tensor(beta)))


@pytest.fixture
def make_model() -> ModelBuilder:
    """Builder ``(name, k, *, size, seed, double, frozen, **overrides) -> TPPModel``."""
    return _build


@pytest.fixture
def make_batch() -> Callable[..., Batch]:
    """Builder ``(seed, b, n, k, shift) -> Batch`` of random padded sequences."""
    return _batch


@pytest.fixture
def set_heads() -> Callable[..., None]:
    """Setter ``(model, alpha, bias, beta=None)`` of a state-independent intensity."""
    return _set_heads
