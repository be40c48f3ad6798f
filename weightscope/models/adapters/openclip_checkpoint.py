"""open_clip checkpoint layouts: the key renames and geometry checks that need open_clip's parameter names.

Used by :mod:`weightscope.models.checkpoints` (which handles the name-free rules: wrapper prefixes, nested containers,
scalar vs (1,) shapes, non-persistent buffers). The rules follow what ``open_clip.factory.load_checkpoint``
does (open_clip 3.x), so every file stock open_clip loads loads here too.
"""
from __future__ import annotations

import math

import torch

#: keys open_clip drops on load: the HF text position ids (transformers >= 4.31 stopped saving them) and the
#: integers OpenAI's TorchScript archives keep next to the weights.
STALE_KEYS = ("text.transformer.embeddings.position_ids", "input_resolution", "context_length", "vocab_size")


def convert_layout(model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip's own conversions (third-party layouts; old-style text tower for CustomTextCLIP) and stale keys
    removed. ``sd`` is not modified; returns a new dict."""
    from open_clip.convert import convert_state_dict
    from open_clip.model import convert_to_custom_text_state_dict

    sd = convert_state_dict(model, dict(sd))
    if "positional_embedding" in sd and not hasattr(model, "positional_embedding"):
        sd = convert_to_custom_text_state_dict(sd)
    return {k: v for k, v in sd.items() if k not in STALE_KEYS}


def saved_geometry(model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> dict:
    """open_clip ``create_model`` overrides that rebuild ``model`` at the sizes ``sd`` was saved for.

    Returns {} when the sizes agree, else some of {"force_image_size": (H, W) pixels, "force_context_length": n}.
    A vision positional embedding of (1 + g*g, D) rows means a g x g patch grid (one class token, as open_clip's
    VisionTransformer has); grids that are not square, or towers without a patch grid, are left to the strict
    load to report.
    """
    out: dict = {}
    visual = getattr(model, "visual", None)
    saved = sd.get("visual.positional_embedding")
    own = getattr(visual, "positional_embedding", None)
    if saved is not None and own is not None and hasattr(visual, "grid_size") and saved.ndim == own.ndim == 2:
        extra = own.shape[0] - visual.grid_size[0] * visual.grid_size[1]
        n = saved.shape[0] - extra
        g = math.isqrt(max(n, 0))
        if saved.shape[0] != own.shape[0] and n > 0 and g * g == n and saved.shape[1] == own.shape[1]:
            ph, pw = visual.patch_size
            out["force_image_size"] = (g * ph, g * pw)
    text_pos = sd.get("positional_embedding", sd.get("text.positional_embedding"))
    own_text = getattr(model, "positional_embedding", None)
    if own_text is None:
        own_text = getattr(getattr(model, "text", None), "positional_embedding", None)
    if (text_pos is not None and own_text is not None and text_pos.ndim == own_text.ndim == 2
            and text_pos.shape[0] != own_text.shape[0] and text_pos.shape[1] == own_text.shape[1]):
        out["force_context_length"] = int(text_pos.shape[0])
    return out


def is_quick_gelu(module: torch.nn.Module) -> bool | None:
    """Whether a model (eager or TorchScript) uses QuickGELU in its MLPs: True, False, or None when neither
    activation is found. TorchScript modules keep their Python class name as ``original_name``."""
    names = {getattr(m, "original_name", type(m).__name__) for m in module.modules()}
    if "QuickGELU" in names:
        return True
    return False if "GELU" in names else None
