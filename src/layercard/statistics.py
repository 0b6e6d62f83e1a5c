"""Pure math of the Layer Card: streaming per-site statistics and the quantities derived from them.

Notation (docs/design layercard.md): for one linear site with inputs x_i (d_in) and output
gradients g_i = dLoss/dy_i (d_out) over n tokens,
Σ = (1/n) Σ x xᵀ, G = (1/n) Σ g xᵀ, E_r = (1/n) Σ ‖g‖², and the ridge λ = eps·tr(Σ)/d_in.
Solves with Σ+λI go through one cached Cholesky factor per distinct input; the conditioning
quantities use one cached eigenvalue decomposition (values only) per distinct input.
"""

from __future__ import annotations

import itertools
import math

import scipy.linalg
import torch
from threadpoolctl import threadpool_limits
from torch import Tensor

from layercard import distributed
from layercard.sites import SiteDiagnostics

# The running sums are float64 whatever `dtype` the statistics are read in: their rounding
# then no longer depends on the order the batches come in, so a card measured by several
# processes (each summing its own batches) equals the single-process card to ~1e-12 in the
# sums. Each batch's product is computed in its inputs' precision (at least float32).
SUM_DTYPE = torch.float64

# Most rows in one block row of the lower-triangular Σ accumulation (blocks are made equal):
# blocks of 192-256 rows skip most of the upper triangle and keep each GEMM fast.
SIGMA_BLOCK = 256


def _eigvalsh(matrix: Tensor) -> Tensor:
    """Eigenvalues (ascending) of a symmetric matrix. On the CPU through SciPy's LAPACK (divide
    and conquer) on one thread: on the 2-core benchmark machine it took 0.17 s for 1536 x 1536
    float32 against 0.26 s in torch, and more threads only spin beside torch's own."""
    if matrix.device.type != "cpu":
        return torch.linalg.eigvalsh(matrix)
    with threadpool_limits(1, user_api="blas"):
        values = scipy.linalg.eigh(matrix.numpy(), eigvals_only=True, driver="evd")
    return torch.from_numpy(values)


def _rows(t: Tensor, width: int, name: str) -> Tensor:
    """t [n, width], detached, in at least float32 (the precision of one batch's products)."""
    if t.dim() != 2 or t.shape[1] != width:
        raise ValueError(f"{name} must have shape [n, {width}], got {list(t.shape)}")
    return t.detach().to(torch.promote_types(t.dtype, torch.float32))


def _sigma_edges(d_in: int) -> list[int]:
    """Row edges of Σ's block rows: near-equal blocks of at most `SIGMA_BLOCK` rows."""
    n_blocks = math.ceil(d_in / SIGMA_BLOCK)
    return [round(i * d_in / n_blocks) for i in range(n_blocks + 1)]


def sigma_entries(d_in: int) -> int:
    """Entries `InputStats` keeps for a d_in-wide input: block row i holds columns 0..its end."""
    return sum((stop - start) * stop for start, stop in itertools.pairwise(_sigma_edges(d_in)))


def _add_product(total: Tensor, a: Tensor, b: Tensor) -> None:
    """total += a @ b, the product in the inputs' precision, the sum in `total`'s."""
    if a.dtype == total.dtype:
        total.addmm_(a, b)
    else:
        total.add_(a @ b)


class InputStats:
    """Streaming Σ = (1/n) Σ x xᵀ of one input tensor, read (and solved with) in `dtype`.

    Several `SiteStats` may share one `InputStats` (q/k/v read the same tensor), so Σ, its
    eigenvalues and its Cholesky factor are computed once per distinct input. Only the lower
    triangle of the sum is kept, as block rows of ≤ `SIGMA_BLOCK` rows (row block i holds
    columns 0..end of block i), one GEMM each: a third fewer flops than the full x xᵀ and
    0.58-0.67 of its memory for d_in of 576-1536. Reading Σ assembles the full, symmetric matrix.
    """

    def __init__(
        self, d_in: int, *, dtype: torch.dtype = torch.float64, device: torch.device | None = None
    ) -> None:
        self.d_in = d_in
        self.dtype = dtype
        edges = _sigma_edges(d_in)
        # (first row, the sum of x xᵀ over the block's rows and columns 0 to its last row)
        self._blocks = [
            (start, torch.zeros(stop - start, stop, dtype=SUM_DTYPE, device=device))
            for start, stop in itertools.pairwise(edges)
        ]
        self.device = self._blocks[0][1].device
        self.n = 0
        self._eigenvalues: Tensor | None = None
        self._factor: tuple[float, Tensor] | None = None

    def update(self, x: Tensor) -> None:
        """Add the tokens x [n, d_in] to the running sum (its lower triangle)."""
        x = _rows(x, self.d_in, "x")
        for start, block in self._blocks:
            _add_product(block, x[:, start:block.shape[1]].T, x[:, : block.shape[1]])
        self.n += x.shape[0]
        self._eigenvalues = None
        self._factor = None

    @property
    def sigma(self) -> Tensor:
        """Σ, the mean of x xᵀ over the tokens seen so far (a new, exactly symmetric tensor)."""
        return self._mean().to(self.dtype)

    def _mean(self) -> Tensor:
        """Σ in the sums' float64."""
        if self.n == 0:
            raise ValueError("no tokens were accumulated")
        sigma = torch.empty(self.d_in, self.d_in, dtype=SUM_DTYPE, device=self.device)
        for start, block in self._blocks:
            stop = block.shape[1]
            torch.div(block, self.n, out=sigma[start:stop, :stop])
            diagonal = sigma[start:stop, start:stop]
            diagonal.copy_(diagonal.tril() + diagonal.tril(-1).T)
            sigma[:start, start:stop].copy_(sigma[start:stop, :start].T)
        return sigma

    @property
    def nbytes(self) -> int:
        """Bytes of the running sum (`memory.statistics_bytes` counts the same)."""
        return sum(block.nbytes for _, block in self._blocks)

    @property
    def trace(self) -> float:
        """tr(Σ)."""
        diagonals = (torch.diagonal(block, offset=start) for start, block in self._blocks)
        return sum(float(diagonal.sum()) for diagonal in diagonals) / self.n

    def ridge(self, ridge_eps: float) -> float:
        """λ = eps·tr(Σ)/d_in: a ridge relative to the mean activation energy."""
        if ridge_eps <= 0:
            raise ValueError(f"ridge_eps must be > 0, got {ridge_eps}")
        lam = ridge_eps * self.trace / self.d_in
        if lam <= 0:
            raise ValueError("the site's inputs are all zero; Σ carries no information")
        return lam

    def all_reduce_(self) -> None:
        """Sum the accumulated x xᵀ and token count over the processes (`distributed`)."""
        for _, block in self._blocks:
            distributed.all_reduce_(block)
        self.n = round(distributed.all_reduce_number(self.n))
        self._eigenvalues = None
        self._factor = None

    def eigenvalues(self) -> Tensor:
        """Eigenvalues of Σ (ascending, clamped at 0), computed once and cached."""
        if self._eigenvalues is None:
            self._eigenvalues = _eigvalsh(self.sigma).clamp_min(0)
        return self._eigenvalues

    def cholesky(self, ridge_eps: float) -> Tensor:
        """Lower Cholesky factor L of Σ+λI (cached for the last ridge_eps), in `dtype`, or in
        float64 where `dtype` cannot factor it: Σ+λI's condition number can reach
        d_in/ridge_eps (5e6 for a 4864-wide input at the default ridge, as Qwen2.5-0.5B's down
        projection), where float32 Cholesky fails. Callers solve in the factor's dtype."""
        if self._factor is None or self._factor[0] != ridge_eps:
            lam = self.ridge(ridge_eps)
            for dtype in dict.fromkeys((self.dtype, SUM_DTYPE)):
                ridged = self._mean().to(dtype)
                ridged.diagonal().add_(lam)
                factor, info = torch.linalg.cholesky_ex(ridged)
                if int(info) == 0:
                    break
            else:
                raise ValueError(
                    f"Σ+λI is not numerically positive definite even in float64 "
                    f"(ridge_eps={ridge_eps}); use a larger ridge_eps"
                )
            self._factor = (ridge_eps, factor)
        return self._factor[1]


class SiteStats:
    """Streaming sufficient statistics of one site: sums for Σ (via `inputs`), G and E_r.

    Memory is O(d_in² + d_out·d_in), independent of the number of tokens. Pass `inputs` to share
    a Σ accumulator: the caller then updates that `InputStats` once per batch itself, and
    `update` adds only the gradient sums. Without `inputs` the site owns its Σ and updates it.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | None = None,
        inputs: InputStats | None = None,
    ) -> None:
        self.owns_inputs = inputs is None
        if inputs is None:
            inputs = InputStats(d_in, dtype=dtype, device=device)
        elif inputs.d_in != d_in or inputs.dtype != dtype:
            raise ValueError(
                f"shared inputs have d_in={inputs.d_in}, {inputs.dtype}; "
                f"this site needs d_in={d_in}, {dtype}"
            )
        self.inputs = inputs
        self.d_in = d_in
        self.d_out = d_out
        self.dtype = dtype
        self.gx_sum = torch.zeros(d_out, d_in, dtype=SUM_DTYPE, device=inputs.device)
        self.g_energy_sum = 0.0
        self.n = 0

    def update(self, x: Tensor, g: Tensor) -> None:
        """Add tokens: x [n, d_in] module inputs, g [n, d_out] loss gradients at its output."""
        x, g = _rows(x, self.d_in, "x"), _rows(g, self.d_out, "g")
        x, g = (t.to(torch.promote_types(x.dtype, g.dtype)) for t in (x, g))
        if x.shape[0] != g.shape[0]:
            raise ValueError(f"x has {x.shape[0]} rows but g has {g.shape[0]}")
        if self.owns_inputs:
            self.inputs.update(x)
        _add_product(self.gx_sum, g.T, x)
        self.g_energy_sum += float(g.square().sum(dtype=torch.float64))
        self.n += x.shape[0]

    def all_reduce_(self) -> None:
        """Sum G, E_r and the token count over the processes (Σ is its InputStats' own)."""
        distributed.all_reduce_(self.gx_sum)
        self.g_energy_sum = distributed.all_reduce_number(self.g_energy_sum)
        self.n = round(distributed.all_reduce_number(self.n))

    @property
    def sigma(self) -> Tensor:
        """Σ = (1/n) Σ x xᵀ."""
        return self.inputs.sigma

    @property
    def gx(self) -> Tensor:
        """G = (1/n) Σ g xᵀ, the weight gradient divided by n (d_out × d_in)."""
        self._check()
        return (self.gx_sum / self.n).to(self.dtype)

    @property
    def nbytes(self) -> int:
        """Bytes of the G sum (Σ's are its `InputStats`', possibly shared)."""
        return self.gx_sum.nbytes

    @property
    def g_energy(self) -> float:
        """E_r = (1/n) Σ ‖g‖², the total residual energy per token."""
        self._check()
        return self.g_energy_sum / self.n

    def _check(self) -> None:
        if self.n == 0:
            raise ValueError("no tokens were accumulated")
        if self.inputs.n != self.n:
            raise ValueError(
                f"Σ was accumulated over {self.inputs.n} tokens but G over {self.n}: a shared "
                "InputStats must be updated exactly once per batch of its sites' tokens"
            )


def _correction(stats: SiteStats, g: Tensor, ridge_eps: float) -> tuple[Tensor, Tensor]:
    """(dW* = G(Σ+λI)⁻¹, Cholesky factor L of Σ+λI), for G = ``g`` = stats.gx."""
    factor = stats.inputs.cholesky(ridge_eps)
    return torch.cholesky_solve(g.T.to(factor.dtype), factor).T.to(g.dtype), factor


def _whitened_gram(stats: SiteStats, g: Tensor, dw: Tensor, factor: Tensor) -> Tensor:
    """The smaller Gram matrix of M = G L⁻ᵀ (G = ``g``); its eigenvalues are the squared singular
    values of G(Σ+λI)^(-1/2) (both whitenings differ by an orthogonal factor)."""
    if stats.d_out <= stats.d_in:
        gram = dw @ g.T  # M Mᵀ = G (Σ+λI)⁻¹ Gᵀ
    else:
        half = torch.linalg.solve_triangular(factor, g.T.to(factor.dtype), upper=False)
        gram = (half @ half.T).to(g.dtype)  # Mᵀ = L⁻¹ Gᵀ
    return (gram + gram.T) / 2


def site_diagnostics(
    stats: SiteStats, *, rank: int, ridge_eps: float = 1e-3, correction: Tensor | None = None
) -> SiteDiagnostics:
    """Resnorm, rank-r resnorm, gradient norm and conditioning of one site.

    resnorm2 = tr(G(Σ+λI)⁻¹Gᵀ) (explained residual energy per token of the best linear
    correction); resnorm2_rank = sum of the `rank` largest squared singular values of
    G(Σ+λI)^(-1/2) (what rank-r LoRA can reach; `rank` is stored clipped to min(d_in, d_out));
    rel_resnorm = resnorm2/E_r; condition_number is that of the ridged Σ+λI (finite);
    effective_rank = exp(entropy of eig(Σ)/tr(Σ)) of the un-ridged Σ; noise_amplification
    A = (1/d_in) tr(Σ_n⁻¹) with Σ_n = (Σ+λI)/(tr(Σ+λI)/d_in), so A = 1 exactly when isotropic.
    Pass `correction` = `best_correction(stats, ridge_eps=...)` if already computed (saves a solve).
    """
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    g = stats.gx  # G = sum / n: formed once here, it is as large as the module's weight
    factor = stats.inputs.cholesky(ridge_eps)
    dw = _correction(stats, g, ridge_eps)[0] if correction is None else correction
    lam = stats.inputs.ridge(ridge_eps)
    resnorm2 = max(float((dw * g).sum()), 0.0)
    sv2 = _eigvalsh(_whitened_gram(stats, g, dw, factor)).clamp_min(0)
    clipped = min(rank, stats.d_in, stats.d_out)
    resnorm2_rank = min(float(sv2[-clipped:].sum()), resnorm2)

    eig = stats.inputs.eigenvalues()
    ridged = eig + lam
    share = eig / eig.sum()
    share = share[share > 0]
    entropy = float(-(share * share.log()).sum())
    energy = stats.g_energy
    return SiteDiagnostics(
        resnorm2=resnorm2,
        resnorm2_rank=resnorm2_rank,
        rel_resnorm=resnorm2 / energy if energy > 0 else 0.0,
        grad_norm=float(torch.linalg.matrix_norm(g)),
        act_energy=stats.inputs.trace / stats.d_in,
        condition_number=float(ridged[-1] / ridged[0]),
        effective_rank=math.exp(entropy),
        noise_amplification=float(ridged.mean() * ridged.reciprocal().mean()),
        ridge=lam,
        rank=clipped,
        residual_energy=energy,
    )


def best_correction(stats: SiteStats, *, ridge_eps: float, rank: int | None = None) -> Tensor:
    """dW* = G(Σ+λI)⁻¹ (d_out × d_in): the covariance-preconditioned gradient step.

    W − dW* is the best linear correction of the residuals r = −g. With `rank`, the best
    rank-r step: it minimises tr((D − dW*)(Σ+λI)(D − dW*)ᵀ) over rank-r D (reduced-rank
    regression through the whitened problem).
    """
    dw, factor = _correction(stats, stats.gx, ridge_eps)
    if rank is None or rank >= min(stats.d_in, stats.d_out):
        return dw
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    whitened = dw.to(factor.dtype) @ factor  # M = dW* L = G L⁻ᵀ
    u, s, vh = torch.linalg.svd(whitened, full_matrices=False)
    truncated = (u[:, :rank] * s[:rank]) @ vh[:rank]
    return torch.linalg.solve_triangular(factor.T, truncated.T, upper=True).T.to(dw.dtype)


def _standardized_gains(s: Tensor) -> Tensor:
    """Gains centred and scaled to unit variance per site (sites that do not vary stay 0)."""
    if s.dim() != 2 or s.shape[0] < 2:
        raise ValueError(f"s must have shape [n_examples >= 2, n_sites], got {list(s.shape)}")
    s = s.to(torch.float64)
    s = s - s.mean(dim=0)
    var = (s * s).mean(dim=0)
    scale = torch.where(var > 0, var.clamp_min(torch.finfo(s.dtype).tiny).rsqrt(), 0.0)
    return s * scale


def coupling_shrinkage(s: Tensor) -> float:
    """Schäfer–Strimmer shrinkage intensity λ ∈ [0, 1] of the gain correlation toward identity.

    λ = Σ_{a≠b} Var(ρ_ab) / Σ_{a≠b} ρ_ab², with Var(ρ_ab) estimated from the per-example products
    of standardized gains: ~0 when the correlations are large against their sampling noise, ~1 when
    they are noise. Few examples and many sites leave R's small eigenvalues far too small, and
    predicted gains of layer sets (which invert R) would blow up without it.
    """
    z = _standardized_gains(s)
    n = z.shape[0]
    products = z[:, :, None] * z[:, None, :]
    mean = products.mean(dim=0)
    var = n / (n - 1) ** 3 * ((products - mean) ** 2).sum(dim=0)
    off = ~torch.eye(z.shape[1], dtype=torch.bool)
    denom = float((mean[off] * n / (n - 1)).square().sum())
    if denom == 0.0:
        return 1.0
    return min(1.0, max(0.0, float(var[off].sum()) / denom))


def coupling_from_gains(s: Tensor, *, shrinkage: float = 0.0) -> Tensor:
    """Coupling ρ [n_sites, n_sites] from per-example first-order gains s [n_examples, n_sites].

    ρ_ab = K_ab/√(K_aa K_bb) with K the covariance of the gains across examples (the design
    note's per-example estimate), off-diagonal entries shrunk by (1 − shrinkage) toward 0.
    Centred on purpose: every example gains along every site's mean-gradient correction, so the
    uncentred second moment is dominated by that shared mean and puts ρ ≈ 1 between all layers
    (seen on SmolLM2). Sites whose gains do not vary get ρ = 0 off the diagonal. Returned in
    float64 with unit diagonal, symmetric, entries in [-1, 1].
    """
    if not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage}")
    z = _standardized_gains(s)
    rho = (1.0 - shrinkage) * (z.T @ z) / z.shape[0]
    rho = ((rho + rho.T) / 2).clamp(-1.0, 1.0)
    rho.fill_diagonal_(1.0)
    return rho
