"""Exactness of the Layer Card math against brute-force least squares and known spectra."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from layercard.statistics import (
    InputStats,
    SiteStats,
    best_correction,
    coupling_from_gains,
    coupling_shrinkage,
    site_diagnostics,
)

TINY = 1e-12  # ridge_eps that makes the ridge negligible in float64


def _problem(n: int, d_in: int, d_out: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Correlated inputs (ill-conditioned Σ) and gradients partly explained by them."""
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn(d_in, d_in, generator=gen, dtype=torch.float64)
    mix *= torch.logspace(0, -2, d_in, dtype=torch.float64)[:, None]
    x = torch.randn(n, d_in, generator=gen, dtype=torch.float64) @ mix
    w = torch.randn(d_out, d_in, generator=gen, dtype=torch.float64)
    g = x @ w.T + 0.5 * torch.randn(n, d_out, generator=gen, dtype=torch.float64)
    return x, g


def _stats(x: torch.Tensor, g: torch.Tensor) -> SiteStats:
    stats = SiteStats(x.shape[1], g.shape[1], dtype=torch.float64)
    stats.update(x, g)
    return stats


def _explained(r: np.ndarray, fitted: np.ndarray) -> float:
    """Energy per token removed from residuals r by subtracting the fitted values."""
    return float((np.sum(r**2) - np.sum((r - fitted) ** 2)) / r.shape[0])


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


@pytest.mark.parametrize(("d_in", "d_out"), [(6, 4), (5, 9)])
def test_resnorm_equals_least_squares_explained_energy(d_in: int, d_out: int) -> None:
    x, g = _problem(200, d_in, d_out, seed=d_in)
    stats = _stats(x, g)
    diag = site_diagnostics(stats, rank=2, ridge_eps=TINY)

    r = -g.numpy()
    w, *_ = np.linalg.lstsq(x.numpy(), r, rcond=None)  # r ≈ x w
    assert _rel(diag.resnorm2, _explained(r, x.numpy() @ w)) < 1e-5
    # dW* is the least-squares solution up to sign (W − dW* corrects r = −g)
    dw = best_correction(stats, ridge_eps=TINY)
    assert torch.allclose(dw, -torch.from_numpy(w).T, rtol=1e-6, atol=1e-8)
    # the other reported quantities follow their definitions
    assert _rel(diag.residual_energy, float((g**2).sum() / 200)) < 1e-12
    assert 0 < diag.rel_resnorm < 1
    assert _rel(diag.rel_resnorm, diag.resnorm2 / diag.residual_energy) < 1e-12
    assert _rel(diag.grad_norm, float(torch.linalg.norm(g.T @ x / 200))) < 1e-12


def test_resnorm_matches_ridge_regression_closed_form() -> None:
    x, g = _problem(150, 7, 3, seed=1)
    eps = 0.3
    stats = _stats(x, g)
    diag = site_diagnostics(stats, rank=3, ridge_eps=eps)
    sigma = x.T @ x / 150
    lam = eps * float(torch.trace(sigma)) / 7
    big_g = g.T @ x / 150
    ridged = sigma + lam * torch.eye(7, dtype=torch.float64)
    expected = float(torch.trace(big_g @ torch.linalg.inv(ridged) @ big_g.T))
    assert diag.ridge == pytest.approx(lam, rel=1e-12)
    assert _rel(diag.resnorm2, expected) < 1e-10
    # a larger ridge can only explain less
    assert diag.resnorm2 < site_diagnostics(stats, rank=3, ridge_eps=TINY).resnorm2


def test_streaming_in_chunks_equals_one_shot() -> None:
    x, g = _problem(97, 6, 5, seed=2)
    once = _stats(x, g)
    chunked = SiteStats(6, 5, dtype=torch.float64)
    for part in torch.tensor_split(torch.arange(97), [10, 11, 60]):
        chunked.update(x[part], g[part])
    assert chunked.n == once.n == 97
    assert torch.allclose(chunked.sigma, once.sigma, rtol=1e-13, atol=0)
    assert torch.allclose(chunked.gx, once.gx, rtol=1e-13, atol=1e-15)
    assert chunked.g_energy == pytest.approx(once.g_energy, rel=1e-13)
    a = site_diagnostics(once, rank=2)
    b = site_diagnostics(chunked, rank=2)
    assert b.resnorm2 == pytest.approx(a.resnorm2, rel=1e-11)
    assert b.resnorm2_rank == pytest.approx(a.resnorm2_rank, rel=1e-11)


@pytest.mark.parametrize(("d_in", "d_out"), [(8, 5), (4, 7)])
def test_rank_resnorm_equals_reduced_rank_regression(d_in: int, d_out: int) -> None:
    n = 300
    x, g = _problem(n, d_in, d_out, seed=10 + d_in)
    stats = _stats(x, g)
    r_np, x_np = -g.numpy(), x.numpy()
    w, *_ = np.linalg.lstsq(x_np, r_np, rcond=None)
    fitted = x_np @ w
    # classic reduced-rank regression: project OLS fitted values on their top-r principal axes
    top = np.linalg.eigvalsh(fitted.T @ fitted)[::-1] / n
    full = site_diagnostics(stats, rank=1, ridge_eps=TINY).resnorm2
    previous = 0.0
    for rank in range(1, min(d_in, d_out) + 2):
        diag = site_diagnostics(stats, rank=rank, ridge_eps=TINY)
        assert _rel(diag.resnorm2_rank, float(top[:rank].sum())) < 1e-6
        assert previous <= diag.resnorm2_rank <= full * (1 + 1e-12)
        previous = diag.resnorm2_rank
        assert diag.rank == min(rank, d_in, d_out)
    assert _rel(previous, full) < 1e-9  # rank >= min(d_in, d_out) reaches the full resnorm


def test_rank_correction_attains_rank_resnorm_and_is_locally_optimal() -> None:
    n, d_in, d_out, rank = 250, 7, 6, 2
    x, g = _problem(n, d_in, d_out, seed=3)
    stats = _stats(x, g)
    target = site_diagnostics(stats, rank=rank, ridge_eps=TINY).resnorm2_rank
    dw = best_correction(stats, ridge_eps=TINY, rank=rank)
    assert torch.linalg.matrix_rank(dw) == rank
    r = -g.numpy()

    def explained(step: torch.Tensor) -> float:
        return _explained(r, -(x @ step.T).numpy())

    assert _rel(explained(dw), target) < 1e-8
    u, s, vh = torch.linalg.svd(dw, full_matrices=False)
    left, right = u[:, :rank] * s[:rank], vh[:rank]
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):  # no nearby rank-r step explains more
        a = left + 1e-2 * torch.randn(left.shape, generator=gen, dtype=torch.float64)
        b = right + 1e-2 * torch.randn(right.shape, generator=gen, dtype=torch.float64)
        assert explained(a @ b) <= target * (1 + 1e-12)


def test_isotropic_inputs_have_unit_noise_amplification_and_full_effective_rank() -> None:
    torch.manual_seed(0)
    n, d, scale = 64, 8, 2.5
    q, _ = torch.linalg.qr(torch.randn(n, d, dtype=torch.float64))
    x = q * math.sqrt(n * scale)  # Σ = scale·I exactly
    g = torch.randn(n, 3, dtype=torch.float64)
    diag = site_diagnostics(_stats(x, g), rank=1)
    assert diag.noise_amplification == pytest.approx(1.0, abs=1e-10)
    assert diag.effective_rank == pytest.approx(d, rel=1e-10)
    assert diag.condition_number == pytest.approx(1.0, abs=1e-10)
    assert diag.act_energy == pytest.approx(scale, rel=1e-12)


def test_conditioning_of_a_known_diagonal_spectrum() -> None:
    torch.manual_seed(0)
    n, eps = 50, 1e-3
    spectrum = torch.tensor([4.0, 1.0, 0.25, 0.01, 0.0], dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(n, 5, dtype=torch.float64))
    rotation, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64))
    x = (q * (n * spectrum).sqrt()) @ rotation.T  # Σ = R diag(spectrum) Rᵀ
    diag = site_diagnostics(
        _stats(x, torch.randn(n, 2, dtype=torch.float64)), rank=1, ridge_eps=eps
    )
    lam = eps * float(spectrum.mean())
    ridged = spectrum + lam
    p = spectrum[spectrum > 0] / spectrum.sum()
    assert diag.ridge == pytest.approx(lam, rel=1e-10)
    assert diag.act_energy == pytest.approx(float(spectrum.mean()), rel=1e-10)
    assert diag.condition_number == pytest.approx(float(ridged.max() / ridged.min()), rel=1e-6)
    assert diag.effective_rank == pytest.approx(math.exp(float(-(p * p.log()).sum())), rel=1e-8)
    expected_a = float(ridged.mean() * (1 / ridged).mean())
    assert diag.noise_amplification == pytest.approx(expected_a, rel=1e-6)


def test_effective_rank_counts_equal_nonzero_eigenvalues() -> None:
    torch.manual_seed(0)
    n = 40
    q, _ = torch.linalg.qr(torch.randn(n, 6, dtype=torch.float64))
    x = q * torch.tensor([3.0, 3.0, 3.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    diag = site_diagnostics(_stats(x, torch.randn(n, 2, dtype=torch.float64)), rank=1)
    assert diag.effective_rank == pytest.approx(3.0, rel=1e-9)
    assert diag.noise_amplification > 100  # ill-conditioned: only the ridge keeps it finite


@pytest.mark.parametrize("d_in", [5, 600])  # one block; three block rows of 200 rows
def test_sigma_from_the_lower_triangle_is_the_full_second_moment(d_in: int) -> None:
    gen = torch.Generator().manual_seed(d_in)
    inputs = InputStats(d_in, dtype=torch.float64)
    chunks = [torch.randn(n, d_in, generator=gen, dtype=torch.float64) for n in (7, 30)]
    for chunk in chunks:
        inputs.update(chunk)
    x = torch.cat(chunks)
    sigma = inputs.sigma
    assert torch.equal(sigma, sigma.T)
    torch.testing.assert_close(sigma, x.T @ x / x.shape[0], rtol=1e-12, atol=1e-12)
    assert inputs.trace == pytest.approx(float(x.square().sum()) / x.shape[0], rel=1e-12)


def test_shared_inputs_match_separate_statistics_and_catch_misuse() -> None:
    x, g = _problem(80, 5, 6, seed=4)
    shared = InputStats(5, dtype=torch.float64)
    a = SiteStats(5, 2, dtype=torch.float64, inputs=shared)
    b = SiteStats(5, 4, dtype=torch.float64, inputs=shared)
    shared.update(x)
    a.update(x, g[:, :2])
    b.update(x, g[:, 2:])
    for site, alone in ((a, _stats(x, g[:, :2])), (b, _stats(x, g[:, 2:]))):
        assert site.sigma is not alone.sigma
        assert torch.equal(site.sigma, alone.sigma)
        assert site_diagnostics(site, rank=2) == site_diagnostics(alone, rank=2)
    assert shared.eigenvalues() is shared.eigenvalues()  # computed once per input
    shared.update(x)  # Σ now counts tokens that G did not see
    with pytest.raises(ValueError, match="exactly once"):
        site_diagnostics(a, rank=1)
    with pytest.raises(ValueError, match="d_in"):
        SiteStats(4, 2, dtype=torch.float64, inputs=shared)


def test_float32_statistics_agree_with_float64() -> None:
    x, g = _problem(500, 12, 9, seed=5)
    exact = site_diagnostics(_stats(x, g), rank=3)
    stats32 = SiteStats(12, 9, dtype=torch.float32)
    stats32.update(x.float(), g.float())
    approx = site_diagnostics(stats32, rank=3)
    assert approx.resnorm2 == pytest.approx(exact.resnorm2, rel=1e-3)
    assert approx.resnorm2_rank == pytest.approx(exact.resnorm2_rank, rel=1e-3)
    assert approx.noise_amplification == pytest.approx(exact.noise_amplification, rel=1e-3)


def test_a_sigma_float32_cannot_factor_is_factored_in_float64() -> None:
    # rank-16 inputs of width 256 and a small ridge: Σ+λI's condition number is beyond float32's
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4000, 16, generator=gen, dtype=torch.float64) @ torch.randn(
        16, 256, generator=gen, dtype=torch.float64)
    g = x @ torch.randn(256, 6, generator=gen, dtype=torch.float64)
    g += 0.1 * torch.randn(4000, 6, generator=gen, dtype=torch.float64)
    x, g = x.float(), g.float()
    stats32 = SiteStats(256, 6, dtype=torch.float32)
    stats32.update(x, g)
    ridged = stats32.sigma
    ridged.diagonal().add_(stats32.inputs.ridge(1e-6))
    assert int(torch.linalg.cholesky_ex(ridged).info) != 0  # float32 alone fails here
    assert stats32.inputs.cholesky(1e-6).dtype == torch.float64
    approx = site_diagnostics(stats32, rank=3, ridge_eps=1e-6)
    exact = site_diagnostics(_stats(x.double(), g.double()), rank=3, ridge_eps=1e-6)
    assert approx.resnorm2 == pytest.approx(exact.resnorm2, rel=1e-3)
    assert approx.resnorm2_rank == pytest.approx(exact.resnorm2_rank, rel=1e-3)
    dw = best_correction(stats32, ridge_eps=1e-6, rank=2)
    assert dw.dtype == torch.float32 and bool(torch.isfinite(dw).all())
    reference = best_correction(_stats(x.double(), g.double()), ridge_eps=1e-6, rank=2)
    # dW itself is ill-determined off the inputs' span; its effect on the inputs is not
    fitted, expected = x.double() @ dw.double().T, x.double() @ reference.T
    assert float((fitted - expected).norm() / expected.norm()) < 1e-3


def test_coupling_is_the_centred_correlation_of_gains() -> None:
    gen = torch.Generator().manual_seed(6)
    s = torch.randn(30, 4, generator=gen, dtype=torch.float64) + 1.0
    s[:, 3] = 0.0  # a site with no gain at all
    rho = coupling_from_gains(s)
    centred = s.numpy() - s.numpy().mean(axis=0)
    k = centred.T @ centred / 30
    for a in range(3):
        for b in range(3):
            assert rho[a, b] == pytest.approx(k[a, b] / math.sqrt(k[a, a] * k[b, b]), rel=1e-12)
    assert torch.equal(rho, rho.T)
    assert torch.equal(torch.diagonal(rho), torch.ones(4, dtype=torch.float64))
    assert torch.all(rho[3, :3] == 0)
    # a shared offset does not couple sites; a common variation does, with its sign
    flipped = coupling_from_gains(torch.stack([s[:, 0], 5.0 - 2 * s[:, 0]], dim=1))
    assert flipped[0, 1] == pytest.approx(-1.0, abs=1e-12)
    independent = torch.randn(4000, 2, generator=gen, dtype=torch.float64) + 10.0
    assert coupling_from_gains(independent)[0, 1].abs() < 0.1


def test_coupling_shrinkage_tracks_signal_against_sampling_noise() -> None:
    gen = torch.Generator().manual_seed(11)
    common = torch.randn(2000, 1, generator=gen, dtype=torch.float64)
    strong = common + 0.1 * torch.randn(2000, 5, generator=gen, dtype=torch.float64)
    assert coupling_shrinkage(strong) < 0.01  # real, well-estimated correlation: kept
    noise = torch.randn(20, 10, generator=gen, dtype=torch.float64)
    assert coupling_shrinkage(noise) > 0.5  # independent sites, few examples: mostly noise
    shrunk = coupling_from_gains(noise, shrinkage=0.5)
    full = coupling_from_gains(noise)
    off = ~torch.eye(10, dtype=torch.bool)
    assert torch.allclose(shrunk[off], 0.5 * full[off])
    assert torch.equal(torch.diagonal(shrunk), torch.ones(10, dtype=torch.float64))
    # shrinkage keeps R positive definite, so set predictions stay bounded
    assert torch.linalg.eigvalsh(coupling_from_gains(noise, shrinkage=0.6)).min() > 0
