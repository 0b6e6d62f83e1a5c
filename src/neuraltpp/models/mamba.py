"""Mamba block and selective scan in pure PyTorch (after Gu & Dao 2023 and mamba-minimal).

Selective scan, per channel c and state n, with A = -exp(A_log) < 0:

    h_t = exp(delta_t A) * h_{t-1} + w_t * u_t * B_t,      y_t = C_t . h_t + D * u_t

with the write factor w = delta (Mamba's discretization of a held input; the default) or any
other given ``write`` (MHP's impulse write for events: see `MambaBlock`).

`selective_scan` splits the sequence into chunks of ``chunk_size`` steps. Inside a chunk it runs
a log-depth (Kogge-Stone) parallel scan: after round r each position holds the composed update of
the last 2^r steps, whose decay is kept as a log-space sum of delta A (<= 0), so every factor
exp(.) is <= 1 and nothing overflows. Across chunks the state is carried sequentially. Work is
O(B L D N log chunk), activation memory per chunk O(B * chunk * D * N), independent of L.
``chunk_size=1`` is the plain sequential loop (fastest on CPU, where each step is already a
vectorized [B, D, N] update); larger chunks trade log(chunk) extra work for chunk-fold fewer
sequential steps (the win on GPUs). `selective_scan_reference` is the step-by-step loop it is
tested against. On CUDA float32 tensors the `mamba_ssm` kernel is used
when that package is importable (it is optional and not a dependency).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuraltpp.models.config import SCAN_WRITES

try:  # optional fused CUDA kernel
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
except ImportError:
    selective_scan_fn = None


def selective_scan_reference(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
    write: Tensor | None = None,
) -> Tensor:
    """Loop scan: u, delta, write [b, L, d]; A [d, N]; B, C [b, L, N]; D [d] -> y [b, L, d]."""
    w = delta if write is None else write
    h = u.new_zeros(u.shape[0], u.shape[2], A.shape[1])
    ys = []
    for t in range(u.shape[1]):
        h = (
            torch.exp(delta[:, t, :, None] * A) * h
            + (w[:, t] * u[:, t])[..., None] * B[:, t, None, :]
        )
        ys.append((h * C[:, t, None, :]).sum(-1))
    return torch.stack(ys, dim=1) + u * D


def selective_scan(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, *, chunk_size: int = 16,
    write: Tensor | None = None,
) -> Tensor:
    """Chunked parallel selective scan; same arguments and result as `selective_scan_reference`
    (the fused kernel only for the default write, which is the one it implements)."""
    fused = write is None and u.is_cuda and u.dtype == torch.float32
    if selective_scan_fn is not None and fused:
        y = selective_scan_fn(
            u.transpose(1, 2).contiguous(),
            delta.transpose(1, 2).contiguous(),
            A.contiguous(),
            B.transpose(1, 2).contiguous(),
            C.transpose(1, 2).contiguous(),
            D.contiguous(),
        )
        return y.transpose(1, 2)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    wu = (delta if write is None else write) * u
    h = u.new_zeros(u.shape[0], u.shape[2], A.shape[1])
    ys = []
    for start in range(0, u.shape[1], chunk_size):
        d_c, wu_c = delta[:, start : start + chunk_size], wu[:, start : start + chunk_size]
        log_decay = d_c[..., None] * A  # [b, n, d, N]
        states = wu_c[..., None] * B[:, start : start + d_c.shape[1], None, :]
        offset = 1
        while offset < d_c.shape[1]:  # compose each step with the one `offset` earlier
            late = states[:, offset:] + torch.exp(log_decay[:, offset:]) * states[:, :-offset]
            states = torch.cat([states[:, :offset], late], dim=1)
            late = log_decay[:, offset:] + log_decay[:, :-offset]
            log_decay = torch.cat([log_decay[:, :offset], late], dim=1)
            offset *= 2
        states = states + torch.exp(log_decay) * h[:, None]
        ys.append((states * C[:, start : start + d_c.shape[1], None, :]).sum(-1))
        h = states[:, -1]
    return torch.cat(ys, dim=1) + u * D


class MambaBlock(nn.Module):
    """Residual Mamba block: RMSNorm, in-projection to (x, z), causal depthwise conv, SiLU,
    selective scan with input-dependent delta, B, C, gate y * SiLU(z), out-projection.

    ``forward`` accepts an optional per-position multiplier of delta (MHP's inter-event-time step).
    ``write`` (`SCAN_WRITES`) is what the input term is scaled by: "zoh", delta itself (Mamba's:
    the input is held over the step, so a longer step writes more), or "impulse", the step rate
    without that multiplier (each position is an instantaneous event: a continuous-time state
    jumps by B u at it and then decays by exp(delta A), however long the step before it was).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        chunk_size: int = 16,
        write: str = "zoh",
    ) -> None:
        super().__init__()
        if write not in SCAN_WRITES:
            raise ValueError(f"write must be one of {SCAN_WRITES}, got {write!r}")
        self.write = write
        d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16)
        self.d_state = d_state
        self.chunk_size = chunk_size
        self.norm = nn.RMSNorm(d_model)
        self.in_proj = nn.Linear(d_model, 2 * d_inner)
        self.conv = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d_inner)
        self.A_log = nn.Parameter(
            torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1)
        )
        self.D = nn.Parameter(torch.ones(d_inner))
        self.out_proj = nn.Linear(d_inner, d_model)
        with torch.no_grad():  # Mamba's init: softplus(bias) log-uniform in [1e-3, 1e-1]
            dt = torch.exp(torch.rand(d_inner) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def forward(self, x: Tensor, mask: Tensor, dt_scale: Tensor | None = None) -> Tensor:
        """x [B, L, d] -> [B, L, d], causal. delta is multiplied by ``dt_scale`` [B, L] if given
        and set to 0 at padding (the state is held there)."""
        n = x.shape[1]
        xi, z = self.in_proj(self.norm(x)).chunk(2, dim=-1)
        xi = F.silu(self.conv(xi.transpose(1, 2))[..., :n].transpose(1, 2))
        dt, B, C = self.x_proj(xi).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        rate = F.softplus(self.dt_proj(dt)) * mask.unsqueeze(-1)
        delta = rate if dt_scale is None else rate * dt_scale.unsqueeze(-1)
        A = -torch.exp(self.A_log)
        y = selective_scan(xi, delta, A, B, C, self.D, chunk_size=self.chunk_size,
                           write=rate if self.write == "impulse" else None)
        return x + self.out_proj(y * F.silu(z))
