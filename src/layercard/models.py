"""Model structure: generic discovery of the repeated transformer blocks and their linear sites."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from transformers.pytorch_utils import Conv1D


class ModelStructureError(ValueError):
    """The model has no list of repeated transformer blocks that layercard can adapt."""


@dataclass(frozen=True, order=True)
class Site:
    """One adaptable linear module: block index plus its name relative to the block."""

    layer: int
    module: str
    d_in: int
    d_out: int


def _num_layers(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    if config is None:
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(text, key, None)
        if isinstance(value, int):
            return value
    return None


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """Return (dotted path, ModuleList) of the model's repeated decoder blocks.

    Generic: the longest ModuleList whose children all share one class; when the config states
    the number of layers, the list must have exactly that length.
    """
    expected = _num_layers(model)
    best: tuple[str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if len({type(child) for child in module}) != 1:
            continue
        if expected is not None and len(module) != expected:
            continue
        if best is None or len(module) > len(best[1]):
            best = (name, module)
    if best is None:
        what = f" of length {expected} (config.num_hidden_layers)" if expected else ""
        raise ModelStructureError(
            f"{type(model).__name__} has no list of repeated transformer blocks{what}; "
            "layercard supports decoder-only models whose blocks live in one nn.ModuleList "
            "(Llama, Qwen2/3, Mistral, GPT-2, GPT-NeoX, Phi, ...)."
        )
    return best


def _dims(module: nn.Module) -> tuple[int, int] | None:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, Conv1D):  # GPT-2 style: weight is (in, out)
        d_in, d_out = module.weight.shape
        return int(d_in), int(d_out)
    return None


def adaptable_sites(model: nn.Module) -> list[Site]:
    """Every linear module (nn.Linear or GPT-2 Conv1D) inside the blocks, in block order."""
    _, blocks = find_blocks(model)
    sites = []
    for layer, block in enumerate(blocks):
        for name, module in block.named_modules():
            dims = _dims(module)
            if dims is not None:
                sites.append(Site(layer, name, *dims))
    if not sites:
        raise ModelStructureError(f"{type(model).__name__}: its blocks contain no linear modules.")
    return sites


def site_module(model: nn.Module, site: Site) -> nn.Module:
    """The module object a Site refers to."""
    _, blocks = find_blocks(model)
    return blocks[site.layer].get_submodule(site.module)
