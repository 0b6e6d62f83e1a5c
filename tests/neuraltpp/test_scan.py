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


@pytest.mark.parametrize("impulse", [False, True])
@pytest.mark.parametrize("chunk", [1, 4, 5, 16, 37, 64])
def test_chunked_scan_equals_reference(chunk: int, impulse: bool) -> None:
    args = _inputs(0)
    write = 0.5 + torch.rand(args[1].shape, dtype=torch.float64) if impulse else None
    ref = selective_scan_reference(*args, write=write)
    out = selective_scan(*args, chunk_size=chunk, write=write)
    assert _rel(out, ref) < 1e-5
    # elementwise too, padded positions included (state held, y = C.h + D u there)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)


def test_impulse_scan_holds_the_hawkes_excitation() -> None:
    """With the impulse write (1 per event), delta = beta * gap, A = -1 and u the one-hot type, the
    scan's output at each event is the exponential-Hawkes excitation S_l(t_i) / beta =
    sum_{j <= i, k_j = l} exp(-beta (t_i - t_j)) exactly; Mamba's write (delta) weights each event
    by the gap before it instead."""
    g = torch.Generator().manual_seed(3)
    n, k, beta = 40, 3, 1.7
    times = torch.cumsum(torch.rand(1, n, generator=g, dtype=torch.float64) * 2, dim=1)
    types = torch.randint(0, k, (1, n), generator=g)
    gaps = torch.cat([torch.zeros(1, 1, dtype=torch.float64), times.diff(dim=1)], dim=1)
    u = torch.nn.functional.one_hot(types, k).double()
    delta = (beta * gaps).unsqueeze(-1).expand(1, n, k)
    args = (u, delta, -torch.ones(k, 1, dtype=torch.float64),
            torch.ones(1, n, 1, dtype=torch.float64), torch.ones(1, n, 1, dtype=torch.float64),
            torch.zeros(k, dtype=torch.float64))
    lag = times[0, :, None] - times[0, None, :]  # t_i - t_j
    kernel = torch.where(lag >= 0, torch.exp(-beta * lag.clamp_min(0)), 0.0)
    excitation = (kernel @ u[0]).unsqueeze(0)
    out = selective_scan(*args, chunk_size=8, write=torch.ones_like(delta))
    torch.testing.assert_close(out, excitation, rtol=1e-12, atol=1e-12)
    held = selective_scan(*args, chunk_size=8)  # Mamba's write: event j counts beta * gap_j
    assert (held - excitation).abs().max() > 0.1


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


def test_block_impulse_write_ignores_the_step_scale_in_the_write() -> None:
    """With write="impulse" the step scale sets only the decay: a sequence of one event writes
    the same whatever its step scale, where Mamba's write grows with it."""
    torch.manual_seed(0)
    x = torch.randn(1, 1, 8, dtype=torch.float64)
    mask = torch.ones(1, 1, dtype=torch.bool)
    small, large = torch.full((1, 1), 0.1, dtype=torch.float64), torch.full((1, 1), 10.0,
                                                                           dtype=torch.float64)
    impulse = MambaBlock(8, d_state=4, write="impulse").double()
    torch.testing.assert_close(impulse(x, mask, small), impulse(x, mask, large))
    held = MambaBlock(8, d_state=4).double()
    held.load_state_dict(impulse.state_dict())
    assert (held(x, mask, small) - held(x, mask, large)).abs().max() > 1e-6
    with pytest.raises(ValueError, match="write"):
        MambaBlock(8, write="euler")
