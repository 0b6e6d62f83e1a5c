"""The chunked selective scan equals the step-by-step loop (values and gradients)."""

import pytest
import torch

from neuraltpp.models.mamba import MambaBlock, selective_scan, selective_scan_reference


def _inputs(seed: int, b: int = 2, n: int = 37, d: int = 3, s: int = 4, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(b, n, d, generator=g, dtype=torch.float64)
    delta = scale * torch.rand(b, n, d, generator=g, dtype=torch.float64)
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[1, 29:] = False  # a padded sequence: delta = 0 there, as MambaBlock sets it
    delta = delta * mask.unsqueeze(-1)
    A = -torch.exp(torch.randn(d, s, generator=g, dtype=torch.float64))
    B = torch.randn(b, n, s, generator=g, dtype=torch.float64)
    C = torch.randn(b, n, s, generator=g, dtype=torch.float64)
    D = torch.randn(d, generator=g, dtype=torch.float64)
    return u, delta, A, B, C, D


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("chunk", [1, 4, 5, 16, 37, 64])
def test_chunked_scan_equals_reference(chunk: int) -> None:
    args = _inputs(0)
    ref = selective_scan_reference(*args)
    out = selective_scan(*args, chunk_size=chunk)
    assert _rel(out, ref) < 1e-5
    # elementwise too, padded positions included (state held, y = C.h + D u there)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)


def test_scan_with_strong_decay_stays_finite() -> None:
    """delta * A down to about -1e3 per step: masking before exp keeps every weight <= 1."""
    args = _inputs(1, scale=100.0)
    ref = selective_scan_reference(*args)
    out = selective_scan(*args, chunk_size=8)
    assert torch.isfinite(out).all()
    assert _rel(out, ref) < 1e-5


def test_scan_gradients_equal_reference() -> None:
    args = [a.clone().requires_grad_(True) for a in _inputs(2, n=13)]
    w = torch.randn(2, 13, 3, dtype=torch.float64)
    (selective_scan_reference(*args) * w).sum().backward()
    ref = [a.grad.clone() for a in args]
    for a in args:
        a.grad = None
    (selective_scan(*args, chunk_size=5) * w).sum().backward()
    for a, g in zip(args, ref, strict=True):
        assert _rel(a.grad, g) < 1e-5


def test_block_holds_state_at_padding() -> None:
    """Outputs at real positions do not depend on what the padding contains."""
    torch.manual_seed(0)
    block = MambaBlock(8, d_state=4, chunk_size=3).double()
    x = torch.randn(1, 10, 8, dtype=torch.float64)
    mask = torch.ones(1, 10, dtype=torch.bool)
    mask[0, 6:] = False
    y1 = block(x, mask)
    x2 = x.clone()
    x2[0, 6:] = 1e3
    y2 = block(x2, mask)
    torch.testing.assert_close(y1[:, :6], y2[:, :6])
