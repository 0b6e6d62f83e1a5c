"""Hooks that measure a frozen causal LM on probe batches: per-site statistics and coupling.

Pass 1 streams `SiteStats` (Σ, G, E_r) over every probe batch with one forward+backward each;
pass 2 runs the first `coupling_examples` examples again and accumulates each example's
first-order gain along every site's best correction, from which the coupling matrix follows.
The loss is the fine-tuning loss (cross-entropy on completion tokens, labels != -100) summed
and divided by the number of completion tokens of the whole probe set, so n·G is exactly the
weight gradient of the mean probe loss. Token sums run over all non-padding positions.
"""

from __future__ import annotations

import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from layercard.data import n_target_tokens
from layercard.models import Site, adaptable_sites, find_blocks, site_module
from layercard.statistics import (
    InputStats,
    SiteDiagnostics,
    SiteStats,
    best_correction,
    coupling_from_gains,
    coupling_shrinkage,
    site_diagnostics,
)

Batch = dict[str, Tensor]
COUPLING_METHOD = (
    "per-example gains: rho_ab = K_ab/sqrt(K_aa K_bb), K = covariance over examples of "
    "s_a(i) = <G_a(i), dW*_a> (the first-order gain of example i along site a's best correction) "
    "over {n} probe examples; layer gains are sums of their modules' gains; off-diagonal "
    "entries shrunk toward 0 by the Schafer-Strimmer intensity {shrinkage:.3f}"
)


class HasModel(Protocol):
    """Anything holding the model, e.g. `LoadedModel`."""

    model: nn.Module


@dataclass
class ProbeStatistics:
    """Pass-1 result: streaming statistics of every site over the whole probe set."""

    sites: list[Site]
    stats: dict[Site, SiteStats]
    n_examples: int
    n_tokens: int  # non-padding positions
    n_loss_tokens: int  # completion tokens that carry loss
    loss: float  # mean completion-token loss over the probe set


@dataclass
class Measurements:
    """Everything the card needs from the model on the probe set."""

    sites: list[Site]
    stats: dict[Site, SiteDiagnostics]
    coupling: Tensor  # [n_layers, n_layers], layer level
    example_gains: Tensor  # [n_coupling_examples, n_sites], s_site(i)
    coupling_method: str
    n_probe_examples: int
    n_probe_tokens: int
    n_loss_tokens: int
    n_coupling_examples: int
    base_loss: float
    rank: int
    ridge_eps: float


def _as_module(model: nn.Module | HasModel) -> nn.Module:
    return model if isinstance(model, nn.Module) else model.model


class _Session(ABC):
    """Registers hooks for one pass and removes them on exit; makes the frozen model
    differentiable from its input embeddings so that backward reaches every site."""

    def __init__(self, model: nn.Module, sites: list[Site]) -> None:
        self.model = model
        self.sites = sites
        self.leaf: Tensor | None = None
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> _Session:
        try:
            embeddings = self.model.get_input_embeddings()
            self.handles.append(embeddings.register_forward_hook(self._make_leaf))
            for site in self.sites:
                module = site_module(self.model, site)
                self.handles.append(module.register_forward_hook(self.forward_hook(site)))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    @abstractmethod
    def forward_hook(self, site: Site) -> Callable[..., None]:
        """The forward hook of one site."""

    def _make_leaf(self, module: nn.Module, args: Any, output: Tensor) -> Tensor:
        self.leaf = output.detach().requires_grad_()
        return self.leaf

    def loss_backward(self, batch: Batch, scale: float) -> float:
        """Forward, then backward of scale·(summed completion loss) down to the embeddings;
        returns the summed loss. Site hooks see the gradients; no parameter gradient is formed.

        The output head runs only at the positions whose next token carries loss (a pre-hook
        selects them), so no full [batch, length, vocab] logits are formed: same loss and
        gradients, far less memory on short completions and large vocabularies."""
        head = self.model.get_output_embeddings()
        if head is None:
            raise RuntimeError(f"{type(self.model).__name__} has no output embeddings (LM head)")
        next_labels = batch["labels"][:, 1:]
        rows, cols = (next_labels != -100).nonzero(as_tuple=True)

        def keep_loss_positions(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            return (args[0][rows, cols].unsqueeze(0), *args[1:])

        handle = head.register_forward_pre_hook(keep_loss_positions)
        try:
            with torch.enable_grad():
                logits = self.model(
                    input_ids=batch["input_ids"],
                    attention_mask=batch["attention_mask"],
                    use_cache=False,
                ).logits
                logits = logits.reshape(-1, logits.shape[-1])
                if logits.dtype in (torch.float16, torch.bfloat16):
                    logits = logits.float()
                loss = F.cross_entropy(logits, next_labels[rows, cols], reduction="sum")
                if self.leaf is None:
                    raise RuntimeError("the input-embedding module was not called by forward")
                torch.autograd.grad(loss * scale, self.leaf)
        finally:
            handle.remove()
        self.leaf = None
        return float(loss.detach())


def _require_grad(output: Tensor, site: Site) -> None:
    if not output.requires_grad:
        raise RuntimeError(f"{site}: its output has no gradient path from the input embeddings")


class _StatsPass(_Session):
    """Pass 1: streams x xᵀ (once per distinct input tensor), g xᵀ and ‖g‖² per site."""

    def __init__(self, model: nn.Module, sites: list[Site], dtype: torch.dtype) -> None:
        super().__init__(model, sites)
        self.dtype = dtype
        self.stats: dict[Site, SiteStats] = {}
        self.valid = torch.empty(0, dtype=torch.long)
        # per forward: id(input tensor) -> (weak refs to it and its masked rows, its Σ);
        # weak, so that activations are freed as soon as backward no longer needs them
        self.seen: dict[int, tuple[weakref.ref[Tensor], weakref.ref[Tensor], InputStats]] = {}
        self.pending: dict[Site, Tensor] = {}

    def _rows_for(self, site: Site, x: Tensor) -> Tensor:
        """Masked rows of x; updates the site's Σ accumulator once per distinct input tensor."""
        known = self.stats.get(site)
        entry = self.seen.get(id(x))
        if entry is not None and entry[0]() is x and (rows := entry[1]()) is not None:
            inputs = entry[2]
            if known is not None and known.inputs is not inputs:
                raise RuntimeError(f"{site}: input sharing changed between batches")
        else:
            rows = x.detach().reshape(-1, site.d_in).index_select(0, self.valid).to(self.dtype)
            inputs = known.inputs if known is not None else InputStats(site.d_in, dtype=self.dtype)
            if any(other is inputs for _, _, other in self.seen.values()):
                raise RuntimeError(f"{site}: input sharing changed between batches")
            inputs.update(rows)
            self.seen[id(x)] = (weakref.ref(x), weakref.ref(rows), inputs)
        if known is None:
            self.stats[site] = SiteStats(site.d_in, site.d_out, dtype=self.dtype, inputs=inputs)
        return rows

    def forward_hook(self, site: Site) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Tensor) -> None:
            if site in self.pending:
                raise RuntimeError(f"{site}: module called more than once per forward")
            _require_grad(output, site)
            self.pending[site] = self._rows_for(site, args[0])
            output.register_hook(self._grad_hook(site))

        return hook

    def _grad_hook(self, site: Site) -> Callable[[Tensor], None]:
        def hook(grad: Tensor) -> None:
            rows = self.pending.pop(site)
            g = grad.reshape(-1, site.d_out).index_select(0, self.valid)
            self.stats[site].update(rows, g)

        return hook

    def run(self, batch: Batch, scale: float) -> float:
        """One forward+backward; returns the summed completion loss of the batch."""
        self.valid = batch["attention_mask"].reshape(-1).nonzero().squeeze(1)
        self.seen.clear()
        loss = self.loss_backward(batch, scale)
        if self.pending:
            missing = ", ".join(str(site) for site in self.pending)
            self.pending.clear()
            raise RuntimeError(f"no gradient reached: {missing}")
        return loss


class _GainPass(_Session):
    """Pass 2: per-example gains s_site(i) = Σ_{t∈i} g_tᵀ dW*_site x_t."""

    def __init__(
        self, model: nn.Module, sites: list[Site], corrections: dict[Site, Tensor], n: int
    ) -> None:
        super().__init__(model, sites)
        self.corrections = corrections
        self.column = {site: j for j, site in enumerate(sites)}
        self.gains = torch.zeros(n, len(sites), dtype=torch.float64)
        self.rows = slice(0, 0)
        self.mask = torch.empty(0)
        self.pending: dict[Site, Tensor] = {}

    def forward_hook(self, site: Site) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Tensor) -> None:
            _require_grad(output, site)
            self.pending[site] = args[0].detach()
            output.register_hook(self._grad_hook(site))

        return hook

    def _grad_hook(self, site: Site) -> Callable[[Tensor], None]:
        def hook(grad: Tensor) -> None:
            x = self.pending.pop(site)
            dw = self.corrections[site]
            per_token = ((grad.to(dw.dtype) @ dw) * x.to(dw.dtype)).sum(-1)  # [B, T]
            per_example = (per_token * self.mask.to(dw.dtype)).sum(-1)
            self.gains[self.rows, self.column[site]] += per_example.to(torch.float64)

        return hook

    def run(self, batch: Batch, start: int, scale: float) -> None:
        """One forward+backward over a batch whose examples are rows start.. of the gains."""
        self.rows = slice(start, start + batch["input_ids"].shape[0])
        self.mask = batch["attention_mask"]
        self.loss_backward(batch, scale)
        self.pending.clear()


def collect_statistics(
    model: nn.Module | HasModel,
    batches: Iterable[Batch],
    *,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> ProbeStatistics:
    """Pass 1: stream every site's `SiteStats` over the probe batches (one forward+backward each).

    Σ is shared by the sites that read the same input tensor. Gradients are those of the mean
    completion loss over all batches.
    """
    module = _as_module(model)
    batches = list(batches)
    sites = adaptable_sites(module)
    n_loss = sum(n_target_tokens(batch) for batch in batches)
    if n_loss == 0:
        raise ValueError("the probe batches contain no completion tokens (all labels are -100)")
    total = 0.0
    with _StatsPass(module, sites, dtype) as probe:
        for batch in tqdm(batches, desc="layercard statistics", disable=not progress):
            total += probe.run(batch, 1.0 / n_loss)
    return ProbeStatistics(
        sites=sites,
        stats=probe.stats,
        n_examples=sum(int(batch["input_ids"].shape[0]) for batch in batches),
        n_tokens=sum(int(batch["attention_mask"].sum()) for batch in batches),
        n_loss_tokens=n_loss,
        loss=total / n_loss,
    )


def example_gains(
    model: nn.Module | HasModel,
    batches: Iterable[Batch],
    corrections: dict[Site, Tensor],
    *,
    n_examples: int,
    scale: float = 1.0,
    progress: bool = True,
) -> Tensor:
    """Pass 2: gains s_site(i) = ⟨G_site(i), dW*_site⟩ [n_examples, n_sites] of the first
    `n_examples` examples, in `adaptable_sites` order; `scale` multiplies the summed loss."""
    module = _as_module(model)
    sites = adaptable_sites(module)
    done = 0
    with _GainPass(module, sites, corrections, n_examples) as gain_pass:
        bar = tqdm(total=n_examples, desc="layercard coupling", disable=not progress)
        for batch in batches:
            if done >= n_examples:
                break
            take = min(n_examples - done, int(batch["input_ids"].shape[0]))
            part = {key: value[:take] for key, value in batch.items()}
            gain_pass.run(part, done, scale)
            done += take
            bar.update(take)
        bar.close()
    if done < n_examples:
        raise ValueError(f"asked for {n_examples} coupling examples, the batches hold {done}")
    return gain_pass.gains


def measure(
    model: nn.Module | HasModel,
    batches: Iterable[Batch],
    *,
    rank: int = 8,
    ridge_eps: float = 1e-3,
    coupling_examples: int = 64,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> Measurements:
    """Measure a frozen model on probe batches: per-site diagnostics and layer coupling.

    `batches` (iterated twice) hold input_ids, attention_mask and labels (-100 on prompt and
    padding). Statistics accumulate in `dtype`; per-site memory is freed group by group.
    """
    if coupling_examples < 1:
        raise ValueError(f"coupling_examples must be >= 1, got {coupling_examples}")
    module = _as_module(model)
    batches = list(batches)
    probe = collect_statistics(module, batches, dtype=dtype, progress=progress)
    diagnostics: dict[Site, SiteDiagnostics] = {}
    corrections: dict[Site, Tensor] = {}
    for site in probe.sites:  # sites sharing an input are adjacent: their cache is reused
        stats = probe.stats.pop(site)  # frees G (and Σ after its last site) as we go
        corrections[site] = best_correction(stats, ridge_eps=ridge_eps)
        diagnostics[site] = site_diagnostics(
            stats, rank=rank, ridge_eps=ridge_eps, correction=corrections[site]
        )
    n_coupling = min(coupling_examples, probe.n_examples)
    gains = example_gains(
        module,
        batches,
        corrections,
        n_examples=n_coupling,
        scale=1.0 / probe.n_loss_tokens,
        progress=progress,
    )
    del corrections
    n_layers = len(find_blocks(module)[1])
    layer_of = torch.tensor([site.layer for site in probe.sites])
    layer_gains = torch.zeros(n_coupling, n_layers, dtype=torch.float64)
    layer_gains.index_add_(1, layer_of, gains)
    shrinkage = coupling_shrinkage(layer_gains)
    return Measurements(
        sites=probe.sites,
        stats=diagnostics,
        coupling=coupling_from_gains(layer_gains, shrinkage=shrinkage),
        example_gains=gains,
        coupling_method=COUPLING_METHOD.format(n=n_coupling, shrinkage=shrinkage),
        n_probe_examples=probe.n_examples,
        n_probe_tokens=probe.n_tokens,
        n_loss_tokens=probe.n_loss_tokens,
        n_coupling_examples=n_coupling,
        base_loss=probe.loss,
        rank=rank,
        ridge_eps=ridge_eps,
    )
