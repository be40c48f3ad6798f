"""Recover the open_clip model config (``model_cfg``: embed_dim, vision_cfg, text_cfg, quick_gelu, init_logit_bias)
of an open_clip ``CLIP`` built from a config dict, which keeps nothing of it on the module.

The config is read off the module's structure (sizes of its tensors, the types of its layers) and accepted only
when a model built from it has the same structure: the same ``repr`` (layer types, sizes, norms, activations)
and the same state-dict names and shapes. Otherwise None: the caller must not record a config that would build
another model. Vision towers: open_clip's VisionTransformer; text towers: the CLIP TextTransformer.
"""
from __future__ import annotations

import hashlib
import json


def _block_cfg(transformer) -> dict:
    import torch

    block = transformer.resblocks[0]
    width = transformer.width
    heads = block.attn.num_heads
    cfg = {"layers": len(transformer.resblocks), "width": width,
           "mlp_ratio": block.mlp.c_fc.out_features / width}
    if not isinstance(block.ls_1, torch.nn.Identity):
        cfg["ls_init_value"] = float(block.ls_1.gamma.detach().float().mean())
    return cfg, heads


def _vision_cfg(visual) -> dict | None:
    from open_clip.transformer import VisionTransformer

    if type(visual) is not VisionTransformer:
        return None
    cfg, heads = _block_cfg(visual.transformer)
    cfg.update(image_size=list(visual.image_size), patch_size=list(visual.patch_size)[0],
               head_width=cfg["width"] // heads, pool_type=visual.pool_type,
               final_ln_after_pool=bool(visual.final_ln_after_pool))
    if getattr(visual, "attn_pool", None) is not None:
        return None
    if type(visual.ln_pre).__name__ == "Identity":
        cfg["no_ln_pre"] = True
    return cfg


def _text_cfg(model) -> dict | None:
    import torch

    if not hasattr(model, "token_embedding") or not hasattr(model, "transformer"):
        return None
    cfg, heads = _block_cfg(model.transformer)
    cfg.update(context_length=int(model.context_length), vocab_size=int(model.vocab_size), heads=heads,
               pool_type=model.text_pool_type)
    if getattr(model, "attn_mask", None) is None:
        cfg["no_causal_mask"] = True
    if isinstance(model.text_projection, torch.nn.Linear):
        cfg["proj_bias"] = model.text_projection.bias is not None
    return cfg


def infer_config(module) -> dict | None:
    """The open_clip model config that builds ``module`` (an open_clip CLIP), verified by construction; or None."""
    import open_clip
    import torch

    if type(module) is not open_clip.CLIP:
        return None
    try:
        vision, text = _vision_cfg(_bare(module.visual)), _text_cfg(module)
        if vision is None or text is None:
            return None
        block = _bare(module.visual).transformer.resblocks[0]
        config = {"embed_dim": int(module.visual.output_dim), "vision_cfg": vision, "text_cfg": text,
                  "quick_gelu": isinstance(block.mlp.gelu, open_clip.transformer.QuickGELU)}
        if getattr(module, "logit_bias", None) is not None:
            config["init_logit_bias"] = float(module.logit_bias.detach().float().reshape(-1)[0])
        with torch.device("meta"):    # structure only: no memory for the weights, no initialisation cost
            built = open_clip.CLIP(**config)
    except (AttributeError, TypeError, ValueError, RuntimeError, IndexError):
        return None
    return config if _structure(built) == _structure(module) else None


def _bare(m):
    return getattr(m, "_orig_mod", m)       # a torch.compile'd submodule: the module it wraps


def _structure(model) -> tuple:
    """Each child's repr (layer types, sizes, norms, activations) and every tensor's name and shape."""
    children = tuple((name, repr(_bare(child))) for name, child in model.named_children())
    shapes = tuple(sorted((k.replace("_orig_mod.", ""), tuple(v.shape)) for k, v in model.state_dict().items()))
    return children, shapes


def config_name(config: dict) -> str:
    """A name for an architecture known only by its config, unique to that config."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    return f"custom-clip-{digest}"
