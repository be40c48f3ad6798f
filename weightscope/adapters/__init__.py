"""Adapters turn a concrete model family into the neutral :class:`~weightscope.weights.VisionWeights`.

``describe_model`` picks the adapter for a model; ``write_attention`` writes edited head factors back.
Nothing outside this package knows a parameter name.
"""
from __future__ import annotations

import torch

from ..errors import WeightscopeError
from ..weights import AttentionWeights, LayerWeights, VisionWeights
from . import openclip_vit


def _visual(model: torch.nn.Module) -> torch.nn.Module:
    visual = getattr(model, "visual", None)
    if visual is None:
        raise WeightscopeError(
            f"{type(model).__name__} has no vision tower (.visual); expected an open_clip CLIP model"
        )
    return visual


def describe_model(model) -> VisionWeights:
    """Neutral description of a model's vision tower. ``model``: an open_clip CLIP or a LoadedModel."""
    model = getattr(model, "model", model)
    desc = openclip_vit.describe(_visual(model))
    desc.meta["name"] = getattr(model, "_weightscope_name", type(model).__name__)
    return desc


def block_modules(model) -> dict:
    """Hook points of the vision tower's residual blocks, as names in ``model.named_modules()`` (``model``: an open_clip
    CLIP or a LoadedModel): {"names": [...], "batch_first": bool, "grid": (gh, gw)}; see openclip_vit.block_modules."""
    model = getattr(model, "model", model)
    return openclip_vit.block_modules(_visual(model), prefix="visual.")


def write_attention(model, layer: int, attn: AttentionWeights) -> None:
    """Write one layer's per-head attention factors into ``model`` (an open_clip CLIP), in place."""
    openclip_vit.write_attention(_visual(getattr(model, "model", model)), layer, attn)


def write_mlp(model, layer: int, lw: LayerWeights) -> None:
    """Write one layer's MLP weights into ``model`` (an open_clip CLIP), in place."""
    openclip_vit.write_mlp(_visual(getattr(model, "model", model)), layer, lw)
