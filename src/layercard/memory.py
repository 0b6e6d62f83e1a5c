"""Memory of the card's statistics per layer group, and the number of groups a budget allows.

The statistics of one site are its G sum (d_out × d_in) and, once per distinct input tensor,
the lower triangle of its Σ sum (`statistics.sigma_entries`), all float64
(`statistics.SUM_DTYPE`). Which sites read the same tensor (q/k/v, gate/up in Llama) is seen
in one forward pass of two tokens, so the count is exact for any architecture.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from layercard.measure import split_layers
from layercard.models import adaptable_sites, find_blocks, site_module
from layercard.sites import Site
from layercard.statistics import SUM_DTYPE, sigma_entries

GIB = 2**30


def input_sharing(model: nn.Module) -> dict[Site, int]:
    """Each site's input key: sites that read the same tensor in a forward pass get the same
    key (found with forward pre-hooks on a two-token input; the inputs are held until the pass
    ends, so no id is reused). A site the pass does not call gets a key of its own."""
    sites = adaptable_sites(model)
    _, blocks = find_blocks(model)
    held: list[torch.Tensor] = []
    keys: dict[Site, int] = {}

    def hook_for(site: Site) -> Callable[[nn.Module, tuple], None]:
        def hook(module: nn.Module, args: tuple) -> None:
            held.append(args[0])
            keys.setdefault(site, id(args[0]))

        return hook

    handles = [site_module(model, s, blocks).register_forward_pre_hook(hook_for(s)) for s in sites]
    try:
        with torch.no_grad():
            model(input_ids=torch.zeros(1, 2, dtype=torch.long, device=model.device))
    finally:
        for handle in handles:
            handle.remove()
    # a site the pass did not call is counted with an input of its own (an upper bound)
    return {s: keys.get(s, -1 - i) for i, s in enumerate(sites)}


def statistics_bytes(sites: Sequence[Site], sharing: dict[Site, int]) -> int:
    """Bytes of the statistics of `sites`: every G sum plus one Σ triangle per distinct input."""
    size = torch.empty(0, dtype=SUM_DTYPE).element_size()
    inputs = {sharing[s]: s.d_in for s in sites}
    entries = sum(s.d_out * s.d_in for s in sites) + sum(map(sigma_entries, inputs.values()))
    return entries * size


def group_bytes(model: nn.Module, n_groups: int, sharing: dict[Site, int] | None = None) -> int:
    """Bytes of the statistics of the largest of `n_groups` layer groups (`split_layers`)."""
    sharing = input_sharing(model) if sharing is None else sharing
    sites = adaptable_sites(model)
    n_layers = len(find_blocks(model)[1])
    return max(
        statistics_bytes([s for s in sites if s.layer in layers], sharing)
        for layers in split_layers(n_layers, n_groups)
    )


def groups_for_budget(model: nn.Module, budget_gib: float) -> tuple[int, int]:
    """(fewest layer groups whose largest group's statistics fit in `budget_gib`, their bytes);
    ValueError when not even one layer per group fits."""
    sharing = input_sharing(model)
    n_layers = len(find_blocks(model)[1])
    budget = budget_gib * GIB
    for n_groups in range(1, n_layers + 1):
        needed = group_bytes(model, n_groups, sharing)
        if needed <= budget:
            return n_groups, needed
    raise ValueError(
        f"the statistics of one layer take {needed / GIB:.3g} GiB, more than the budget of "
        f"{budget_gib:g} GiB"
    )
