"""Adapter for open_clip's own ``VisionTransformer`` (ViT-B/32 ... bigG/14, -quickgelu, custom configs).

The only place that knows open_clip's vision parameter names. ``describe`` reads them into the neutral
:class:`VisionWeights`; ``write_attention`` writes per-head factors back so a stock open_clip model holds them.

The write factor rule, applied here once in both directions: everything that scales a head's output on its
way into the residual stream (the per-head ``head_scale`` of NormFormer-style blocks, the block's LayerScale
``ls_1.gamma``) is part of that head's write factor ``write_o[h]``; ``describe`` multiplies it in and
``write_attention`` divides it out (:func:`_write_scale`). Options that change only the attention pattern
(QK-norm, scaled cosine attention) are described. A LayerNorm on the concatenated head outputs
(``scale_attn_inner``) is linear up to one positive scalar per token shared by all heads (METHODS.md s. 12): its
centring and gain go into ``write_o`` and the scalar stays in the forward (``AttentionWeights.inner_norm_eps``);
a LayerNorm on the summed output (``scale_attn``) is refused.
"""
from __future__ import annotations

import re

import numpy as np
import torch

from ...core.errors import WeightscopeError
from ...core.weights import AttentionWeights, LayerNormWeights, LayerWeights, StemWeights, VisionWeights
from ._finite import check_finite

FAMILY = "open_clip.VisionTransformer"
ACTIVATIONS = {"GELU": "gelu", "QuickGELU": "quick_gelu"}


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy().copy()


def _kept(named, keep, pattern):
    """The (name, tensor) pairs outside any block, or in a block whose index is in ``keep`` (None: all)."""
    if keep is None:
        yield from named
        return
    rx = re.compile(pattern)
    for name, t in named:
        m = rx.match(name)
        if m is None or int(m.group(1)) in keep:
            yield name, t


def _is_identity(mod) -> bool:
    return mod is None or isinstance(mod, torch.nn.Identity)


def _ln(mod) -> LayerNormWeights | None:
    if _is_identity(mod):
        return None
    if mod.weight is None:  # elementwise_affine=False
        d = mod.normalized_shape[0]
        return LayerNormWeights(np.ones(d), np.zeros(d), float(mod.eps))
    return LayerNormWeights(_np(mod.weight), _np(mod.bias) if mod.bias is not None else np.zeros(mod.weight.shape[0]), float(mod.eps))


def _refuse_nonlinear(block, index: int) -> None:
    """Refuse blocks whose value-output map is not linear, or whose attention this adapter cannot reproduce."""
    features = []
    if not _is_identity(getattr(block, "ln_attn", None)):
        features.append("scale_attn (a LayerNorm on the summed head outputs, ln_attn)")
    attn = block.attn
    if isinstance(attn, torch.nn.MultiheadAttention):
        if attn.in_proj_weight is None:
            features.append("separate q/k/v projections")
        if attn.bias_k is not None or attn.add_zero_attn:
            features.append("extra key/value tokens (add_bias_kv / add_zero_attn)")
    elif not _is_identity(getattr(attn, "ln_inner", None)) and getattr(attn, "head_scale", None) is not None:
        features.append("scale_attn_inner together with scale_heads (the inner LayerNorm's per-token scale would be "
                        "taken after the head scales)")
    if features:
        raise WeightscopeError(
            f"layer {index} uses {', '.join(features)}, so a head's value-output map is not linear; supported: "
            "pre-LN ViT blocks, optionally with LayerScale, scale_heads, qk_norm, scaled_cosine_attn, scale_fc or "
            "scale_attn_inner"
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


def describe(visual: torch.nn.Module, keep: set[int] | None = None) -> VisionWeights:
    """Read an open_clip VisionTransformer into the neutral description (float64 numpy copies).

    Raises WeightscopeError for unsupported towers, nonlinear value-output paths and non-finite weights.
    """
    check_supported(visual)
    check_finite(_kept(visual.named_parameters(), keep, r"transformer\.resblocks\.(\d+)\."), visual.transformer,
                 prefix="visual.")
    layers = []
    for i, block in enumerate(visual.transformer.resblocks):
        if keep is not None and i not in keep:
            layers.append(None)   # left out on request (see describe_model)
            continue
        _refuse_nonlinear(block, i)
        layers.append(_describe_block(block, i))
    stem = StemWeights(
        patch_weight=_np(visual.conv1.weight),
        class_embedding=_np(visual.class_embedding),
        positional_embedding=_np(visual.positional_embedding),
        ln_pre=_ln(visual.ln_pre),
    )
    eps = max(torch.finfo(p.dtype).eps for p in visual.parameters() if p.is_floating_point())
    return VisionWeights(
        family=FAMILY,
        stem=stem,
        layers=layers,
        ln_post=_ln(visual.ln_post),
        proj=_np(visual.proj),
        pool=visual.pool_type,
        ln_after_pool=bool(visual.final_ln_after_pool),
        eps=float(eps),
    )


def _write_scale(block) -> tuple[np.ndarray, np.ndarray]:
    """What multiplies a head's output on its way into the residual stream: (per_head (H,), gamma (D,)).

    Coordinate d of head h's output is scaled by ``per_head[h] * gamma[d]``: per_head is open_clip's
    ``scale_heads`` parameter (it multiplies each head's mix of values before out_proj; NormFormer, Shleifer et
    al. 2021, s. 2), gamma the block's LayerScale ``ls_1`` (Touvron et al. 2021, "Going deeper with image
    transformers", s. 2.1), which also scales out_proj's bias. Ones where the block has neither.
    """
    attn = block.attn
    D, H = attn.out_proj.weight.shape[0], attn.num_heads
    head_scale = getattr(attn, "head_scale", None)  # (H, 1, 1)
    per_head = _np(head_scale).reshape(H) if head_scale is not None else np.ones(H)
    gamma = _np(block.ls_1.gamma) if hasattr(block.ls_1, "gamma") else np.ones(D)
    return per_head, gamma


def _describe_block(block, index: int) -> LayerWeights:
    attn = block.attn
    D = attn.in_proj_weight.shape[1]
    H = attn.num_heads
    dh = D // H
    w = _np(attn.in_proj_weight)  # (3D, D): rows are output features of q, k, v
    b = _np(attn.in_proj_bias) if attn.in_proj_bias is not None else np.zeros(3 * D)

    def per_head_read(rows):  # (D_out, D_in) -> (H, D_in, dh)
        return rows.reshape(H, dh, D).transpose(0, 2, 1).copy()

    per_head, gamma = _write_scale(block)
    scale = per_head[:, None, None] * gamma  # (H, 1, D), computed once so write_attention inverts it exactly
    wo = _np(attn.out_proj.weight)  # (D_out, D_in): y = v @ wo.T
    bo = _np(attn.out_proj.bias) if attn.out_proj.bias is not None else np.zeros(D)
    inner = _ln(getattr(attn, "ln_inner", None))
    if inner is not None:  # out_proj(LN(o)) = (P o / sigma) diag(g) wo.T + beta wo.T + bo
        bo = inner.shift @ wo.T + bo
        wo = ((np.eye(D) - 1.0 / D) * inner.scale @ wo.T).T
    logit_scale = getattr(attn, "logit_scale", None)  # (H, 1, 1) log-temperatures of cosine attention
    act = type(block.mlp.gelu).__name__
    if act not in ACTIVATIONS or getattr(block.mlp.gelu, "approximate", "none") != "none":
        raise WeightscopeError(f"layer {index} uses activation {block.mlp.gelu!r}; supported: "
                               "exact GELU and QuickGELU")
    return LayerWeights(
        ln_1=_ln(block.ln_1),
        attn=AttentionWeights(
            read_q=per_head_read(w[:D]),
            read_k=per_head_read(w[D:2 * D]),
            read_v=per_head_read(w[2 * D:]),
            write_o=wo.T.reshape(H, dh, D) * scale,
            bias_q=b[:D].reshape(H, dh).copy(),
            bias_k=b[D:2 * D].reshape(H, dh).copy(),
            bias_v=b[2 * D:].reshape(H, dh).copy(),
            bias_o=bo * gamma,
            norm_q=_ln(getattr(attn, "ln_q", None)),
            norm_k=_ln(getattr(attn, "ln_k", None)),
            logit_scale=(np.exp(np.minimum(_np(logit_scale).reshape(H), attn.logit_scale_max))
                         if logit_scale is not None else None),
            inner_norm_eps=inner.eps if inner is not None else None,
        ),
        ln_2=_ln(block.ln_2),
        mlp_in=_np(block.mlp.c_fc.weight).T.copy(),
        mlp_in_bias=_np(block.mlp.c_fc.bias),
        mlp_out=_np(block.mlp.c_proj.weight).T.copy(),
        mlp_out_bias=_np(block.mlp.c_proj.bias),
        activation=ACTIVATIONS[act],
        layer_scale_mlp=_np(block.ls_2.gamma) if hasattr(block.ls_2, "gamma") else None,
        mlp_norm=_ln(getattr(block.mlp, "ln", None)),
    )


def write_attention(visual: torch.nn.Module, layer: int, attn: AttentionWeights) -> None:
    """Write per-head factors and biases of ``attn`` into block ``layer`` of ``visual`` (in place).

    The inverse of ``describe`` for one block: the output scales (:func:`_write_scale`) are divided out of
    ``write_o`` and ``bias_o``. Where a scale is zero the block discards that output coordinate, so nothing can
    be written there: the module keeps its own value, and a non-zero edited value is an error.
    The caller owns ``visual`` (edits pass a copy). Values are cast to the parameters' own dtype.
    """
    check_supported(visual)
    block = visual.transformer.resblocks[layer]
    mod = block.attn
    H, D, dh = attn.read_v.shape

    def rows(read):  # (H, D_in, dh) -> (D_out, D_in)
        return read.transpose(0, 2, 1).reshape(H * dh, D)

    per_head, gamma = _write_scale(block)
    scale = per_head[:, None, None] * gamma
    inner = _ln(getattr(mod, "ln_inner", None))
    current = _np(mod.out_proj.weight).T
    if inner is not None:  # the model holds P diag(g) W^T: only edits that keep its columns centred (eva.py)
        current = current * inner.scale[:, None]
    out_w = _unscale(attn.write_o, scale, current.reshape(H, dh, D), layer, "write factor",
                     mod.out_proj.weight.dtype).reshape(H * dh, D)
    bias_o = attn.bias_o
    if inner is not None:
        if np.abs(out_w.sum(axis=0)).max() > 1e-9 * max(np.abs(out_w).max(), 1e-300) * H * dh:
            raise WeightscopeError(
                f"layer {layer} normalises the concatenated head outputs (scale_attn_inner): its centring is shared by "
                "all heads, so an edit that changes one head's write map alone cannot be held by the model")
        if np.any(inner.scale == 0):
            raise WeightscopeError(f"layer {layer} has a zero inner-norm gain; its write factor cannot be written back")
        out_w = (out_w + current.mean(axis=0, keepdims=True)) / inner.scale[:, None]
        bias_o = attn.bias_o - (inner.shift @ out_w) * gamma
    out_w = out_w.T
    in_w = np.concatenate([rows(attn.read_q), rows(attn.read_k), rows(attn.read_v)], axis=0)
    in_b = np.concatenate([attn.bias_q.ravel(), attn.bias_k.ravel(), attn.bias_v.ravel()])
    with torch.no_grad():
        mod.in_proj_weight.copy_(torch.from_numpy(in_w))
        if mod.in_proj_bias is not None:
            mod.in_proj_bias.copy_(torch.from_numpy(in_b))
        elif np.any(in_b):
            raise WeightscopeError(f"layer {layer} has no q/k/v bias to hold the edited bias")
        mod.out_proj.weight.copy_(torch.from_numpy(np.ascontiguousarray(out_w)))
        if mod.out_proj.bias is not None:
            bias = _unscale(bias_o, gamma, _np(mod.out_proj.bias), layer, "output bias", mod.out_proj.bias.dtype)
            mod.out_proj.bias.copy_(torch.from_numpy(bias))
        elif np.any(bias_o):
            raise WeightscopeError(f"layer {layer} has no output bias to hold the folded value bias")


def write_mlp(visual: torch.nn.Module, layer: int, lw: LayerWeights) -> None:
    """Write the MLP weights of ``lw`` (mlp_in, mlp_in_bias, mlp_out, mlp_out_bias) into block ``layer`` (in place).

    The inverse of ``describe`` for the MLP: ``mlp.c_fc`` holds mlp_in^T and its bias, ``mlp.c_proj`` mlp_out^T
    and its bias (LayerScale ``ls_2`` stays where it is: ``describe`` keeps it separate). The caller owns
    ``visual``; values are cast to the parameters' own dtype.
    """
    check_supported(visual)
    mlp = visual.transformer.resblocks[layer].mlp
    with torch.no_grad():
        for mod, w, b in ((mlp.c_fc, lw.mlp_in, lw.mlp_in_bias), (mlp.c_proj, lw.mlp_out, lw.mlp_out_bias)):
            mod.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T)))
            mod.bias.copy_(torch.from_numpy(np.ascontiguousarray(b)))


def _unscale(value: np.ndarray, scale: np.ndarray, current: np.ndarray, layer: int, what: str, dtype) -> np.ndarray:
    """``value / scale`` (broadcast), keeping ``current`` where the scale is zero (that output is discarded)."""
    scale = np.broadcast_to(scale, value.shape)
    zero = scale == 0
    # only rounding may sit where the block multiplies by zero (edits stay in the row space of the factor)
    if np.any(np.abs(value[zero]) > torch.finfo(dtype).eps * max(np.abs(value).max(), 1e-300)):
        raise WeightscopeError(f"layer {layer}: the edited {what} is non-zero where the block's output scale "
                               "(LayerScale or head scale) is zero, so the model cannot hold it")
    return np.where(zero, current, value / np.where(zero, 1.0, scale))


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


def residual_blocks(visual: torch.nn.Module) -> torch.nn.ModuleList:
    """The residual blocks of an open_clip ``VisionTransformer``, in order."""
    return visual.transformer.resblocks


def rebuildable_blocks(visual: torch.nn.Module):
    """The residual blocks of an open_clip ``VisionTransformer`` whose every tensor is set by its modules' own
    ``reset_parameters`` (what open_clip's constructor does for a block), else None (another tower, LayerScale,
    head scales: tensors a reset would not restore). Used to build random-init models block by block."""
    from open_clip.transformer import VisionTransformer

    if not isinstance(visual, VisionTransformer):
        return None
    blocks = residual_blocks(visual)
    for block in blocks:
        if any(True for _ in block.buffers()):
            return None
        for module in block.modules():
            own = list(module.parameters(recurse=False))
            if own and not (hasattr(module, "reset_parameters") or hasattr(module, "_reset_parameters")):
                return None
    return blocks
