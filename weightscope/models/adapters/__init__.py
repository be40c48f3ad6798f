"""Adapters turn a concrete model family into the neutral :class:`~weightscope.core.weights.VisionWeights`.

``describe_model`` picks the adapter for a model; ``write_attention`` writes edited head factors back;
``text_adapter`` gives the text-tower module (open_clip or transformers) that concept embeddings go through.
Nothing outside this package knows a parameter name.
"""
from __future__ import annotations

import torch

from ...core.errors import WeightscopeError
from ...core.weights import AttentionWeights, LayerWeights, VisionWeights
from . import eva, hf_clip, openclip_vit, timm_vit


def _visual(model: torch.nn.Module) -> torch.nn.Module:
    visual = getattr(model, "visual", None)
    if visual is None:
        raise WeightscopeError(
            f"{type(model).__name__} has no vision tower (.visual); expected an open_clip CLIP model or a "
            "transformers CLIPModel / CLIPVisionModelWithProjection"
        )
    if type(visual).__name__ == "ModifiedResNet":
        raise WeightscopeError("vision tower ModifiedResNet is not supported (a convolutional, OpenAI RN50-style "
                               f"tower: no attention heads writing to a residual stream); supported: {SUPPORTED}")
    return visual


SUPPORTED = ("open_clip VisionTransformer towers (ViT-B-32 ... ViT-bigG-14, -quickgelu), open_clip TimmModel towers "
             "with a plain timm VisionTransformer trunk (CLIP-style, SigLIP, SigLIP 2) or a timm Eva trunk (EVA02-CLIP), "
             "and transformers CLIPModel / CLIPVisionModelWithProjection")


def _vision_adapter(visual: torch.nn.Module):
    """The adapter module for an open_clip vision tower: timm Eva or ViT trunks, or open_clip's own VisionTransformer."""
    if eva.is_eva(visual):
        return eva
    return timm_vit if type(visual).__name__ == "TimmModel" else openclip_vit


def describe_model(model, layers=None) -> VisionWeights:
    """Neutral description of a model's vision tower. ``model``: an open_clip CLIP, a transformers CLIPModel /
    CLIPVisionModelWithProjection, or a LoadedModel holding one. layers: None (all), or non-negative indices of
    the blocks to describe; the others are None in ``VisionWeights.layers`` and are neither copied nor checked
    (a ViT-L/14 block is 100 MB in float64: describing only what is analysed keeps memory low)."""
    model = getattr(model, "model", model)
    keep = None if layers is None else {int(l) for l in layers}
    if hf_clip.is_hf_model(model):
        desc = hf_clip.describe(model, keep)
    else:
        visual = _visual(model)
        desc = _vision_adapter(visual).describe(visual, keep)
    desc.meta["name"] = getattr(model, "_weightscope_name", type(model).__name__)
    return desc


def block_modules(model) -> dict:
    """Hook points of the vision tower's residual blocks, as names in ``model.named_modules()`` (``model``: an open_clip
    CLIP or a LoadedModel): {"names": [...], "batch_first": bool, "grid": (gh, gw)}; see openclip_vit.block_modules."""
    model = getattr(model, "model", model)
    if hf_clip.is_hf_model(model):
        return hf_clip.block_modules(model)
    visual = _visual(model)
    return _vision_adapter(visual).block_modules(visual, prefix="visual.")


def head_count(model, layer: int) -> int:
    """Attention heads of vision block ``layer`` (``model``: an open_clip CLIP, a transformers CLIP or a LoadedModel),
    read from the block's attention module: no weight is copied, and a lazy model's block need not be built."""
    root = getattr(model, "model", model)
    block = root.get_submodule(block_modules(root)["names"][layer])
    return next(int(m.num_heads) for m in block.modules() if isinstance(getattr(m, "num_heads", None), int))


def write_attention(model, layer: int, attn: AttentionWeights) -> None:
    """Write one layer's per-head attention factors into ``model`` (an open_clip CLIP or transformers CLIP), in place."""
    model = getattr(model, "model", model)
    if hf_clip.is_hf_model(model):
        hf_clip.write_attention(model, layer, attn)
    else:
        visual = _visual(model)
        _vision_adapter(visual).write_attention(visual, layer, attn)



def write_mlp(model, layer: int, lw: LayerWeights) -> None:
    """Write one layer's MLP weights into ``model`` (an open_clip CLIP with its own ViT), in place."""
    model = getattr(model, "model", model)
    visual = None if hf_clip.is_hf_model(model) else _visual(model)
    adapter = None if visual is None else _vision_adapter(visual)
    if adapter is not openclip_vit:
        raise WeightscopeError("neuron edits are written back into open_clip's own VisionTransformer only; "
                               "this model is a transformers CLIP or a timm trunk")
    openclip_vit.write_mlp(visual, layer, lw)

def text_adapter(model):
    """The text-tower module for ``model`` (or a LoadedModel): :mod:`.hf_clip_text` for transformers models,
    :mod:`.openclip_text` otherwise. Both offer the functions :mod:`weightscope.concepts.embed` calls."""
    from . import hf_clip_text, openclip_text

    inner = getattr(model, "model", None)
    return hf_clip_text if hf_clip.is_hf_model(inner if isinstance(inner, torch.nn.Module) else model) \
        else openclip_text


def _module(model):
    inner = getattr(model, "model", None)
    return inner if isinstance(inner, torch.nn.Module) else model


def encode_image(model, pixels: torch.Tensor) -> torch.Tensor:
    """Image features (N, E), not normalised, from preprocessed pixels (N, 3, H, W): open_clip's ``encode_image`` or
    transformers' ``get_image_features``. ``model``: either, or a LoadedModel holding one."""
    model = _module(model)
    return hf_clip.encode_image(model, pixels) if hf_clip.is_hf_model(model) else model.encode_image(pixels)


def encode_text(model, tokens: torch.Tensor) -> torch.Tensor:
    """Text features (N, E), not normalised, from full-context token ids (N, C): open_clip's ``encode_text`` or
    transformers' ``get_text_features``."""
    return text_adapter(model).encode_full(_module(model), tokens)
