"""Statistics memory per layer group, counted from the module shapes, against what the
statistics pass allocates; the fewest groups a budget allows."""

from __future__ import annotations

import pytest
import torch

from layercard.measure import collect_statistics
from layercard.memory import GIB, group_bytes, groups_for_budget, input_sharing, statistics_bytes
from layercard.models import adaptable_sites


@pytest.mark.parametrize(("arch", "distinct"), [("llama", 4), ("gpt2", 4)])
def test_counted_bytes_are_what_the_statistics_allocate(
    arch: str, distinct: int, tiny_lm, random_batches
) -> None:
    model = tiny_lm(arch, 3)
    sharing = input_sharing(model)
    sites = adaptable_sites(model)
    assert len(set(sharing.values())) == distinct * 3  # Llama: q/k/v and gate/up share
    probe = collect_statistics(model, random_batches(2), progress=False)
    inputs = {id(st.inputs): st.inputs for st in probe.stats.values()}
    allocated = sum(st.nbytes for st in probe.stats.values())
    allocated += sum(x.nbytes for x in inputs.values())
    assert len(inputs) == distinct * 3
    assert statistics_bytes(sites, sharing) == allocated
    one_layer = [s for s in sites if s.layer == 2]
    assert statistics_bytes(one_layer, sharing) * 3 == allocated


def test_the_budget_picks_the_fewest_groups_that_fit(tiny_lm) -> None:
    model = tiny_lm("llama", 3)
    whole, per_layer = group_bytes(model, 1), group_bytes(model, 3)
    assert whole == 3 * per_layer and group_bytes(model, 2) == 2 * per_layer
    assert groups_for_budget(model, whole / GIB) == (1, whole)
    assert groups_for_budget(model, (whole - 1) / GIB) == (2, 2 * per_layer)
    assert groups_for_budget(model, per_layer / GIB) == (3, per_layer)
    with pytest.raises(ValueError, match="one layer take"):
        groups_for_budget(model, (per_layer - 1) / GIB)
    assert not any(m._forward_pre_hooks for m in model.modules())
    assert torch.is_grad_enabled()
