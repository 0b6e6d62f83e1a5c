"""Next-event prediction from a neural TPP: expected time, type, and the direct head outputs.

From h_j the time to the next event has survival S(s) = exp(-Lambda(s)),
Lambda(s) = int_0^s sum_k lambda_k(u | h_j) du, so

    E[t_{j+1}] = t_j + int_0^inf S(s) ds,        P(k_{j+1} = k) = int_0^inf lambda_k(s) S(s) ds.

Numerics (`predict_next`): on [0, U] a graded grid s_i = U (i / grid)^2, i = 0..grid (even),
fine near 0 where S falls fastest, so fast and slow decays are both resolved. Lambda at the grid
points comes from Gauss-Legendre with ``panel_nodes`` nodes per panel, cumulated; int S and
int lambda_k S use composite Simpson in x = sqrt(s / U) (smooth integrand 2 U x f(U x^2)).
Beyond U the intensity is taken as constant, which adds S(U) / lambda(U) to the mean and
S(U) lambda_k(U) / lambda(U) to P(k) (so the P(k) sum to 1 up to quadrature error, and a
constant intensity is handled exactly); when the intensity at U is 0 (it died out, the
next-time distribution is defective) the mean is infinite. U starts at ``bound_factor`` times
the batch's mean observed gap and is adapted per prediction: doubled while S(U) > tol (bound
too short), halved while S(U/2) < tol (grid too coarse for the decay); these cannot oscillate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from neuraltpp.likelihood import gauss_legendre


@dataclass
class NextEventPrediction:
    """Predictions of event j+1 from h_j, aligned with events 1..L-1: every field is [B, L-1]
    (``type_probs`` [B, L-1, K]); entries where ``mask`` is False (no event j+1) are 0."""

    mask: Tensor
    expected_gap: Tensor  # E[t_{j+1} - t_j] under the model (float64)
    expected_time: Tensor  # t_j + expected_gap (float64, absolute)
    type_at_time: Tensor  # argmax_k lambda_k / sum lambda at the expected time
    type_probs: Tensor  # P(k) = int lambda_k S ds
    type_integrated: Tensor  # argmax_k P(k)
    head_type: Tensor  # argmax of the type head (the papers' prediction)
    head_gap: Tensor  # the gap head's prediction (the papers' prediction)
    upper_bound: Tensor  # the integration bound U used


def _simpson_weights(grid: int, upper: Tensor) -> Tensor:
    """Weights [R, grid + 1] of int_0^U f(s) ds ~ sum_i c_i f(s_i) on the graded grid."""
    x = torch.linspace(0.0, 1.0, grid + 1, dtype=torch.float64, device=upper.device)
    c = torch.ones(grid + 1, dtype=torch.float64, device=upper.device)
    c[1:-1:2], c[2:-1:2] = 4.0, 2.0
    return (c * 2 * x / (3 * grid)) * upper.unsqueeze(-1)


def _survival_integrals(
    model: Any, h: Tensor, upper: Tensor, grid: int, panel_nodes: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """For states h [R, d] and bounds U [R]: E[gap] [R], P(k) [R, K], S(U/2) [R], S(U) [R]."""
    x, w = (torch.as_tensor(a, device=h.device) for a in gauss_legendre(panel_nodes))
    x_grid = torch.linspace(0.0, 1.0, grid + 1, dtype=torch.float64, device=h.device)
    edges = upper.unsqueeze(-1) * x_grid**2
    width = edges.diff(dim=-1)
    inner = edges[:, :-1, None] + width[..., None] * (x + 1) / 2
    lam = model.intensity(h, torch.cat([edges, inner.flatten(1)], dim=-1)).double()
    lam_edges = lam[:, : grid + 1]
    panels = (lam[:, grid + 1 :].sum(-1).view(-1, grid, panel_nodes) * w).sum(-1) * width / 2
    survival = torch.exp(-torch.cat([panels.new_zeros(len(h), 1), panels.cumsum(-1)], dim=-1))
    c = _simpson_weights(grid, upper)
    s_end, lam_end = survival[:, -1], lam_edges[:, -1]
    total_end = lam_end.sum(-1)
    # S(U) / lambda(U): inf when the intensity has died out (lambda(U) == 0 < S(U)), 0 if S(U) == 0
    tail = torch.where(s_end > 0, s_end / total_end, 0.0)
    share = lam_end / total_end.clamp_min(torch.finfo(torch.float64).tiny).unsqueeze(-1)
    gap = (survival * c).sum(-1) + tail
    probs = (lam_edges * (survival * c).unsqueeze(-1)).sum(1) + s_end.unsqueeze(-1) * share
    return gap, probs, survival[:, grid // 2], s_end


@torch.no_grad()
def predict_next(
    model: Any,
    batch: Any,
    *,
    grid: int = 256,
    panel_nodes: int = 2,
    bound_factor: float = 10.0,
    tol: float = 1e-6,
    max_rescales: int = 30,
    rows_per_chunk: int = 512,
    h: Tensor | None = None,
) -> NextEventPrediction:
    """Predict every next event j+1 of ``batch`` from h_j (model: `TPPModel`); see module doc.

    ``h``: the states ``model.hidden(batch)`` if the caller already has them."""
    if grid < 2 or grid % 2:
        raise ValueError(f"grid must be an even number >= 2, got {grid}")
    times = batch.times.to(torch.float64)
    h = (model.hidden(batch) if h is None else h)[:, :-1]
    valid = batch.mask[:, 1:]
    gaps = times[:, 1:] - times[:, :-1]
    rows = h[valid]
    mean_gap = float(gaps[valid].mean()) if bool(valid.any()) else 1.0
    upper = torch.full((len(rows),), bound_factor * (mean_gap if mean_gap > 0 else 1.0))
    upper = upper.to(dtype=torch.float64, device=h.device)
    gap, used = torch.zeros_like(upper), torch.zeros_like(upper)
    probs = torch.zeros(len(rows), model.num_types, dtype=torch.float64, device=h.device)
    active = torch.arange(len(rows), device=h.device)
    for _ in range(max_rescales):
        if len(active) == 0:
            break
        parts = [
            _survival_integrals(model, rows[idx], upper[idx], grid, panel_nodes)
            for idx in active.split(rows_per_chunk)
        ]
        g, p, s_half, s_end = (torch.cat(z) for z in zip(*parts, strict=True))
        gap[active], probs[active], used[active] = g, p, upper[active]
        grow, shrink = s_end > tol, s_half < tol
        upper[active[grow]] *= 2
        upper[active[shrink]] /= 2
        active = active[grow | shrink]

    lam_at = model.intensity(rows, gap.unsqueeze(-1))[:, 0]

    def full(values: Tensor) -> Tensor:
        out = values.new_zeros(*valid.shape, *values.shape[1:])
        out[valid] = values
        return out

    expected_gap = full(gap)
    return NextEventPrediction(
        mask=valid,
        expected_gap=expected_gap,
        expected_time=torch.where(valid, times[:, :-1] + expected_gap, 0.0),
        type_at_time=full(lam_at.argmax(-1)),
        type_probs=full(probs),
        type_integrated=full(probs.argmax(-1)),
        head_type=torch.where(valid, model.type_logits(h).argmax(-1), 0),
        head_gap=torch.where(valid, model.gap(h), 0.0),
        upper_bound=full(used),
    )
