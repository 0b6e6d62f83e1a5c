"""Hooks that measure a frozen causal LM on probe batches: per-site statistics and coupling.

Pass 1 streams `SiteStats` (Σ, G, E_r) over every probe batch with one forward+backward each;
pass 2 runs the first `coupling_examples` examples again and accumulates each example's
first-order gain along every site's best correction, from which the coupling matrix follows.
With layer groups, both passes run once per contiguous group of layers, top group first, so
that only one group's statistics are in memory: a group's pass runs the layers below it without
autograd, stops the forward at the group above and seeds its backward with the gradient that
the group above recorded at their boundary (the chain rule split in two, so the numbers are
those of one pass over all layers).
The loss is the fine-tuning loss (cross-entropy on completion tokens, labels != -100) summed
and divided by the number of completion tokens of the whole probe set, so n·G is exactly the
weight gradient of the mean probe loss. Token sums run over all non-padding positions.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from layercard import distributed
from layercard.data import n_target_tokens
from layercard.models import adaptable_sites, find_blocks, site_module
from layercard.sites import Site, SiteDiagnostics
from layercard.statistics import (
    InputStats,
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
    """Pass-1 result: streaming statistics of every site (of a layer group) over the probe set."""

    sites: list[Site]
    stats: dict[Site, SiteStats]
    n_examples: int
    n_tokens: int  # non-padding positions
    n_loss_tokens: int  # completion tokens that carry loss
    loss: float  # mean completion-token loss over the probe set (nan below the top group)
    input_grads: list[Tensor] | None  # per batch, the gradient at the group's input (None at 0)


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


class _StopForward(Exception):
    """Raised by the pre-hook of the first block above a layer group: its forward is done."""


def _hidden_states(block: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor:
    """The hidden states a transformer block is called with (first argument or keyword)."""
    hidden = args[0] if args else kwargs.get("hidden_states")
    if not isinstance(hidden, Tensor):
        raise RuntimeError(
            f"{type(block).__name__} was not called with hidden states as its first argument "
            "or as hidden_states=...; measure it with one layer group"
        )
    return hidden


class _Session(ABC):
    """Registers hooks for one pass over the layers `layers` (a contiguous range) and removes
    them on exit. The input of the group (embedding output, or the hidden states entering its
    first block) is made a leaf that requires grad, so backward reaches every site of the group
    and nothing below it; a group below the top one stops the forward at the next block."""

    def __init__(self, model: nn.Module, sites: list[Site], layers: range) -> None:
        self.model = model
        self.sites = sites
        self.blocks = find_blocks(model)[1]
        self.layers = layers
        self.top = layers.stop == len(self.blocks)
        self.leaf: Tensor | None = None
        self.boundary: Tensor | None = None  # hidden states entering the block above the group
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> _Session:
        try:
            if self.layers.start == 0:
                embeddings = self.model.get_input_embeddings()
                self.handles.append(embeddings.register_forward_hook(self._make_leaf))
            else:
                first = self.blocks[self.layers.start]
                self.handles.append(
                    first.register_forward_pre_hook(self._make_block_leaf, with_kwargs=True)
                )
            if not self.top:
                above = self.blocks[self.layers.stop]
                self.handles.append(above.register_forward_pre_hook(self._stop, with_kwargs=True))
            for site in self.sites:
                module = site_module(self.model, site, self.blocks)
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

    def _make_block_leaf(
        self, block: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        self.leaf = _hidden_states(block, args, kwargs).detach().requires_grad_()
        if args:
            return (self.leaf, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": self.leaf}

    def _stop(self, block: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.boundary = _hidden_states(block, args, kwargs)
        raise _StopForward

    def loss_backward(
        self, batch: Batch, scale: float, seed: Tensor | None
    ) -> tuple[float, Tensor]:
        """Forward, then backward down to the group's input; site hooks see the gradients, no
        parameter gradient is formed. Returns (summed completion loss, or nan below the top
        group; the gradient at the group's input).

        The top group's backward starts from scale·(summed completion loss); the output head
        runs only at the positions whose next token carries loss (a pre-hook selects them), so
        no full [batch, length, vocab] logits are formed: same loss and gradients, far less
        memory on short completions and large vocabularies. A lower group's backward starts
        from `seed`, the gradient the group above recorded at its input."""
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        try:
            with torch.enable_grad():
                if self.top:
                    loss = self._loss(batch, inputs)
                    output, grad_output, value = loss * scale, None, float(loss.detach())
                else:
                    if seed is None:
                        raise ValueError("a layer group below the top one needs seed gradients")
                    with contextlib.suppress(_StopForward):
                        self.model(**inputs, use_cache=False)
                    if self.boundary is None:
                        raise RuntimeError("the forward never reached the block above the group")
                    output, grad_output, value = self.boundary, seed, math.nan
                if self.leaf is None:
                    raise RuntimeError("the forward never reached the input of the layer group")
                (grad,) = torch.autograd.grad(output, self.leaf, grad_outputs=grad_output)
        finally:
            self.leaf = None
            self.boundary = None
        return value, grad

    def _loss(self, batch: Batch, inputs: dict[str, Tensor]) -> Tensor:
        """Summed completion loss, with the LM head run at loss positions only."""
        head = self.model.get_output_embeddings()
        if head is None:
            raise RuntimeError(f"{type(self.model).__name__} has no output embeddings (LM head)")
        next_labels = batch["labels"][:, 1:]
        rows, cols = (next_labels != -100).nonzero(as_tuple=True)

        def keep_loss_positions(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            return (args[0][rows, cols].unsqueeze(0), *args[1:])

        handle = head.register_forward_pre_hook(keep_loss_positions)
        try:
            logits = self.model(**inputs, use_cache=False).logits
        finally:
            handle.remove()
        logits = logits.reshape(-1, logits.shape[-1])
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        return F.cross_entropy(logits, next_labels[rows, cols], reduction="sum")


def _require_grad(output: Tensor, site: Site) -> None:
    if not output.requires_grad:
        raise RuntimeError(f"{site}: no gradient path from the input of its layer group")


class _StatsPass(_Session):
    """Pass 1: streams x xᵀ (once per distinct input tensor), g xᵀ and ‖g‖² per site."""

    def __init__(
        self, model: nn.Module, sites: list[Site], layers: range, dtype: torch.dtype
    ) -> None:
        super().__init__(model, sites, layers)
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

    def run(self, batch: Batch, scale: float, seed: Tensor | None) -> tuple[float, Tensor]:
        """One forward+backward; returns `loss_backward`'s (loss, gradient at the group input)."""
        self.valid = batch["attention_mask"].reshape(-1).nonzero().squeeze(1)
        self.seen.clear()
        result = self.loss_backward(batch, scale, seed)
        if self.pending:
            missing = ", ".join(str(site) for site in self.pending)
            self.pending.clear()
            raise RuntimeError(f"no gradient reached: {missing}")
        return result


class _GainPass(_Session):
    """Pass 2: per-example gains s_site(i) = Σ_{t∈i} g_tᵀ dW*_site x_t."""

    def __init__(
        self,
        model: nn.Module,
        sites: list[Site],
        layers: range,
        corrections: dict[Site, Tensor],
        n: int,
    ) -> None:
        super().__init__(model, sites, layers)
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

    def run(self, batch: Batch, start: int, scale: float, seed: Tensor | None) -> None:
        """One forward+backward over a batch whose examples are rows start.. of the gains."""
        self.rows = slice(start, start + batch["input_ids"].shape[0])
        self.mask = batch["attention_mask"]
        self.loss_backward(batch, scale, seed)
        self.pending.clear()


def split_layers(n_layers: int, n_groups: int) -> list[range]:
    """Split layers 0..n_layers-1 into `n_groups` contiguous ranges of near-equal size, top first
    (the order in which the passes must run)."""
    if not 1 <= n_groups <= n_layers:
        raise ValueError(f"layer groups must be between 1 and {n_layers}, got {n_groups}")
    bounds = [round(i * n_layers / n_groups) for i in range(n_groups + 1)]
    return [range(bounds[i], bounds[i + 1]) for i in reversed(range(n_groups))]


def _group(module: nn.Module, layers: range | None, seeds: list[Tensor] | None) -> range:
    """The layer range to measure (all by default), checked against the seeds it needs."""
    n_layers = len(find_blocks(module)[1])
    layers = range(n_layers) if layers is None else layers
    if layers.step != 1 or not 0 <= layers.start < layers.stop <= n_layers:
        raise ValueError(f"layers must be a contiguous range within 0..{n_layers - 1}: {layers}")
    if (seeds is None) != (layers.stop == n_layers):
        raise ValueError("seed gradients are needed exactly when the group is not the top one")
    return layers


def collect_statistics(
    model: nn.Module | HasModel,
    batches: Iterable[Batch],
    *,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    layers: range | None = None,
    seeds: list[Tensor] | None = None,
) -> ProbeStatistics:
    """Pass 1: stream `SiteStats` of the sites in `layers` (default: all) over the probe batches.

    Σ is shared by the sites that read the same input tensor. Gradients are those of the mean
    completion loss over all batches. A group below the top one needs `seeds`: per batch, the
    gradient at the input of the group above (its `input_grads`).
    """
    module = _as_module(model)
    batches = list(batches)
    layers = _group(module, layers, seeds)
    sites = [site for site in adaptable_sites(module) if site.layer in layers]
    n_loss = sum(n_target_tokens(batch) for batch in batches)
    if n_loss == 0:
        raise ValueError("the probe batches contain no completion tokens (all labels are -100)")
    if seeds is not None and len(seeds) != len(batches):
        raise ValueError(f"{len(seeds)} seed gradients for {len(batches)} batches")
    total = 0.0
    # kept only above layer 0: the seeds of the group below (None for other processes' batches)
    input_grads: list[Tensor | None] = [None] * len(batches)
    desc = f"layercard statistics, layers {layers.start}-{layers.stop - 1}"
    with _StatsPass(module, sites, layers, dtype) as probe:
        for i in tqdm(distributed.own(len(batches)), desc=desc, disable=not progress):
            loss, grad = probe.run(batches[i], 1.0 / n_loss,
                                   None if seeds is None else seeds[i])
            total += loss
            if layers.start > 0:
                input_grads[i] = grad
    _sum_over_processes(probe.stats)
    return ProbeStatistics(
        sites=sites,
        stats=probe.stats,
        n_examples=sum(int(batch["input_ids"].shape[0]) for batch in batches),
        n_tokens=sum(int(batch["attention_mask"].sum()) for batch in batches),
        n_loss_tokens=n_loss,
        loss=distributed.all_reduce_number(total) / n_loss,
        input_grads=input_grads if layers.start > 0 else None,
    )


def _sum_over_processes(stats: dict[Site, SiteStats]) -> None:
    """Sum the streaming statistics of every site (and each shared Σ once) over processes."""
    if distributed.rank_and_size()[1] == 1:
        return
    for inputs in {id(s.inputs): s.inputs for s in stats.values()}.values():
        inputs.all_reduce_()
    for site_stats in stats.values():
        site_stats.all_reduce_()


def example_gains(
    model: nn.Module | HasModel,
    batches: Iterable[Batch],
    corrections: dict[Site, Tensor],
    *,
    n_examples: int,
    scale: float = 1.0,
    progress: bool = True,
    layers: range | None = None,
    seeds: list[Tensor] | None = None,
) -> Tensor:
    """Pass 2: gains s_site(i) = ⟨G_site(i), dW*_site⟩ [n_examples, n_sites] of the first
    `n_examples` examples for the sites in `layers` (default: all), in `adaptable_sites` order;
    `corrections` holds every one of them. `scale` multiplies the summed loss; `seeds` as in
    `collect_statistics`, one per batch."""
    module = _as_module(model)
    layers = _group(module, layers, seeds)
    sites = [site for site in adaptable_sites(module) if site.layer in layers]
    done = 0
    desc = f"layercard coupling, layers {layers.start}-{layers.stop - 1}"
    with _GainPass(module, sites, layers, corrections, n_examples) as gain_pass:
        bar = tqdm(total=n_examples, desc=desc, disable=not progress)
        mine = set(distributed.own(len(batches)))
        for i, batch in enumerate(batches):
            if done >= n_examples:
                break
            take = min(n_examples - done, int(batch["input_ids"].shape[0]))
            if i in mine:  # other processes fill the other rows; the sum assembles them
                part = {key: value[:take] for key, value in batch.items()}
                seed = None if seeds is None else seeds[i][:take]
                gain_pass.run(part, done, scale, seed)
            done += take
            bar.update(take)
        bar.close()
    if done < n_examples:
        raise ValueError(f"asked for {n_examples} coupling examples, the batches hold {done}")
    return distributed.all_reduce_(gain_pass.gains)


def measure(
    model: nn.Module | HasModel,
    batches: Iterable[Batch],
    *,
    rank: int = 8,
    ridge_eps: float = 1e-3,
    coupling_examples: int = 64,
    layer_groups: int = 1,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> Measurements:
    """Measure a frozen model on probe batches: per-site diagnostics and layer coupling.

    `batches` (iterated several times) hold input_ids, attention_mask and labels (-100 on prompt
    and padding). Statistics are summed in float64 and read in `dtype`; per-site memory is
    freed site by site. With `layer_groups` > 1 the layers are measured group by group (top
    first): only one group's statistics and activations are in memory, for one extra forward
    through the layers below each group; the numbers are those of one group up to float
    rounding.
    """
    if coupling_examples < 1:
        raise ValueError(f"coupling_examples must be >= 1, got {coupling_examples}")
    module = _as_module(model)
    batches = list(batches)
    n_layers = len(find_blocks(module)[1])
    sites = adaptable_sites(module)
    diagnostics: dict[Site, SiteDiagnostics] = {}
    site_gains: dict[Site, Tensor] = {}
    seeds: list[Tensor] | None = None
    groups = split_layers(n_layers, layer_groups)
    for layers in groups:
        probe = collect_statistics(
            module, batches, dtype=dtype, progress=progress, layers=layers, seeds=seeds
        )
        if layers is groups[0]:  # the loss is known only where the backward starts from it
            top = replace(probe, stats={}, input_grads=None)
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
            layers=layers,
            seeds=seeds,
        )
        site_gains.update(zip(probe.sites, gains.T, strict=True))
        del corrections, gains
        seeds = probe.input_grads
    all_gains = torch.stack([site_gains[site] for site in sites], dim=1)
    layer_of = torch.tensor([site.layer for site in sites])
    layer_gains = torch.zeros(n_coupling, n_layers, dtype=torch.float64)
    layer_gains.index_add_(1, layer_of, all_gains)
    shrinkage = coupling_shrinkage(layer_gains)
    return Measurements(
        sites=sites,
        stats={site: diagnostics[site] for site in sites},
        coupling=coupling_from_gains(layer_gains, shrinkage=shrinkage),
        example_gains=all_gains,
        coupling_method=COUPLING_METHOD.format(n=n_coupling, shrinkage=shrinkage),
        n_probe_examples=top.n_examples,
        n_probe_tokens=top.n_tokens,
        n_loss_tokens=top.n_loss_tokens,
        n_coupling_examples=n_coupling,
        base_loss=top.loss,
        rank=rank,
        ridge_eps=ridge_eps,
    )
