"""Adapter for open_clip's own ``VisionTransformer`` (ViT-B/32 ... bigG/14, -quickgelu, custom configs).

The only place that knows open_clip's vision parameter names. ``describe`` reads them into the neutral
:class:`VisionWeights`; ``write_attention`` writes per-head factors back so a stock open_clip model holds them.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import WeightscopeError
from ..weights import AttentionWeights, LayerNormWeights, LayerWeights, StemWeights, VisionWeights

FAMILY = "open_clip.VisionTransformer"


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy().copy()


def _ln(mod) -> LayerNormWeights | None:
    if isinstance(mod, torch.nn.Identity):
        return None
    if mod.weight is None:  # elementwise_affine=False
        d = mod.normalized_shape[0]
        return LayerNormWeights(np.ones(d), np.zeros(d), float(mod.eps))
    return LayerNormWeights(_np(mod.weight), _np(mod.bias) if mod.bias is not None else np.zeros(mod.weight.shape[0]), float(mod.eps))


def _refuse_unless_plain(block, index: int) -> None:
    """Refuse blocks whose value-output path is not linear (inner norms, head scales, cosine attention)."""
    features = []
    if not isinstance(getattr(block, "ln_attn", torch.nn.Identity()), torch.nn.Identity):
        features.append("scale_attn (ln_attn)")
    attn = block.attn
    if not isinstance(attn, torch.nn.MultiheadAttention):
        if not isinstance(getattr(attn, "ln_inner", torch.nn.Identity()), torch.nn.Identity):
            features.append("scale_attn_inner (ln_inner)")
        if getattr(attn, "head_scale", None) is not None:
            features.append("scale_heads (head_scale)")
        if getattr(attn, "logit_scale", None) is not None:
            features.append("scaled_cosine_attn")
        if not isinstance(getattr(attn, "ln_q", torch.nn.Identity()), torch.nn.Identity):
            features.append("qk_norm")
    elif attn.in_proj_weight is None:
        features.append("separate q/k/v projections")
    if "ln" in getattr(block.mlp, "_modules", {}) and not isinstance(block.mlp.ln, torch.nn.Identity):
        features.append("scale_fc (mlp.ln)")
    if features:
        raise WeightscopeError(
            f"layer {index} uses {', '.join(features)}, which makes a head's value-output map nonlinear; "
            "supported: plain pre-LN ViT blocks (optionally with LayerScale)"
        )


def check_supported(visual: torch.nn.Module) -> None:
    """Raise a clear error unless ``visual`` is an open_clip VisionTransformer this adapter can describe."""
    from open_clip.transformer import VisionTransformer

    if not isinstance(visual, VisionTransformer):
        raise WeightscopeError(
            f"vision tower {type(visual).__name__} is not supported: weightscope reads open_clip VisionTransformer "
            "towers (ViT-B-32, ViT-B-16, ViT-L-14, ViT-H-14, ViT-bigG-14, -quickgelu and custom ViT configs)"
        )
    if getattr(visual, "attn_pool", None) is not None:
        raise WeightscopeError(
            "vision tower uses an attentional pooler (CoCa-style), which is not supported: "
            "weightscope reads ViTs that pool the class token or the token average through ln_post and proj"
        )
    if visual.proj is None:
        raise WeightscopeError("vision tower has no output projection (proj is None): it has no joint space to map into")
    if visual.pool_type not in ("tok", "avg"):
        raise WeightscopeError(f"vision tower pool_type {visual.pool_type!r} is not supported; expected 'tok' or 'avg'")


def describe(visual: torch.nn.Module) -> VisionWeights:
    """Read an open_clip VisionTransformer into the neutral description (float64 numpy copies)."""
    check_supported(visual)
    layers = []
    for i, block in enumerate(visual.transformer.resblocks):
        _refuse_unless_plain(block, i)
        layers.append(_describe_block(block))
    stem = StemWeights(
        patch_weight=_np(visual.conv1.weight),
        class_embedding=_np(visual.class_embedding),
        positional_embedding=_np(visual.positional_embedding),
        ln_pre=_ln(visual.ln_pre),
    )
    return VisionWeights(
        family=FAMILY,
        stem=stem,
        layers=layers,
        ln_post=_ln(visual.ln_post),
        proj=_np(visual.proj),
        pool=visual.pool_type,
        ln_after_pool=bool(visual.final_ln_after_pool),
    )


def _describe_block(block) -> LayerWeights:
    attn = block.attn
    D = attn.in_proj_weight.shape[1]
    H = attn.num_heads
    dh = D // H
    w = _np(attn.in_proj_weight)  # (3D, D): rows are output features of q, k, v
    b = _np(attn.in_proj_bias) if attn.in_proj_bias is not None else np.zeros(3 * D)

    def per_head_read(rows):  # (D_out, D_in) -> (H, D_in, dh)
        return rows.reshape(H, dh, D).transpose(0, 2, 1).copy()

    wo = _np(attn.out_proj.weight)  # (D_out, D_in): y = v @ wo.T
    bo = _np(attn.out_proj.bias) if attn.out_proj.bias is not None else np.zeros(D)
    act = type(block.mlp.gelu).__name__
    return LayerWeights(
        ln_1=_ln(block.ln_1),
        attn=AttentionWeights(
            read_q=per_head_read(w[:D]),
            read_k=per_head_read(w[D:2 * D]),
            read_v=per_head_read(w[2 * D:]),
            write_o=wo.T.reshape(H, dh, D).copy(),
            bias_q=b[:D].reshape(H, dh).copy(),
            bias_k=b[D:2 * D].reshape(H, dh).copy(),
            bias_v=b[2 * D:].reshape(H, dh).copy(),
            bias_o=bo,
        ),
        ln_2=_ln(block.ln_2),
        mlp_in=_np(block.mlp.c_fc.weight).T.copy(),
        mlp_in_bias=_np(block.mlp.c_fc.bias),
        mlp_out=_np(block.mlp.c_proj.weight).T.copy(),
        mlp_out_bias=_np(block.mlp.c_proj.bias),
        activation="quick_gelu" if act == "QuickGELU" else "gelu",
        layer_scale_attn=_np(block.ls_1.gamma) if hasattr(block.ls_1, "gamma") else None,
        layer_scale_mlp=_np(block.ls_2.gamma) if hasattr(block.ls_2, "gamma") else None,
    )


def write_attention(visual: torch.nn.Module, layer: int, attn: AttentionWeights) -> None:
    """Write per-head factors and biases of ``attn`` into block ``layer`` of ``visual`` (in place).

    The caller owns ``visual`` (edits pass a copy). Values are cast to the parameters' own dtype.
    """
    check_supported(visual)
    mod = visual.transformer.resblocks[layer].attn
    H, D, dh = attn.read_v.shape

    def rows(read):  # (H, D_in, dh) -> (D_out, D_in)
        return read.transpose(0, 2, 1).reshape(H * dh, D)

    in_w = np.concatenate([rows(attn.read_q), rows(attn.read_k), rows(attn.read_v)], axis=0)
    in_b = np.concatenate([attn.bias_q.ravel(), attn.bias_k.ravel(), attn.bias_v.ravel()])
    out_w = attn.write_o.reshape(H * dh, D).T
    with torch.no_grad():
        mod.in_proj_weight.copy_(torch.from_numpy(in_w))
        if mod.in_proj_bias is not None:
            mod.in_proj_bias.copy_(torch.from_numpy(in_b))
        elif np.any(in_b):
            raise WeightscopeError(f"layer {layer} has no q/k/v bias to hold the edited bias")
        mod.out_proj.weight.copy_(torch.from_numpy(np.ascontiguousarray(out_w)))
        if mod.out_proj.bias is not None:
            mod.out_proj.bias.copy_(torch.from_numpy(attn.bias_o))
        elif np.any(attn.bias_o):
            raise WeightscopeError(f"layer {layer} has no output bias to hold the folded value bias")


def block_modules(visual: torch.nn.Module, prefix: str = "") -> dict:
    """Where each residual block's output (the residual stream after block i) can be hooked.

    Returns {"names": [prefix + "transformer.resblocks.<i>", ...], "batch_first": bool (outputs are (N, T, D) when
    True, (T, N, D) otherwise), "grid": (gh, gw) (patch tokens form a gh x gw map after the class token), "image_size": (H, W)}.
    """
    check_supported(visual)
    names = [f"{prefix}transformer.resblocks.{i}" for i in range(len(visual.transformer.resblocks))]
    grid = visual.grid_size
    return {"names": names, "batch_first": bool(getattr(visual.transformer, "batch_first", True)),
            "grid": (int(grid[0]), int(grid[1])), "image_size": tuple(int(x) for x in visual.image_size)}
