"""Adapter for open_clip ``TimmModel`` towers whose trunk is a plain timm ``VisionTransformer``.

The only place that knows timm's ViT parameter names. Supported: pre-LN ``Block`` s with timm's fused-qkv
``Attention`` (optional QK-norm, LayerScale ``ls1`` / ``ls2``, an MLP-hidden LayerNorm), GELU or QuickGELU, a class
token (no register tokens, position embedding covering the class token), class-token ('token') or average ('avg')
pooling, and open_clip's linear head (``head.proj`` without bias). The patch embedding's bias is added to the patch
rows of the position embedding (exact: both are per-token constants added before block 0). Everything else is refused
in one line; in particular SigLIP-style attention-pool (MAP) heads, whose output is not linear in the residual stream.
"""
from __future__ import annotations

import numpy as np
import torch

from ...core.errors import WeightscopeError
from ...core.weights import AttentionWeights, LayerWeights, StemWeights, VisionWeights
from ._finite import check_finite
from .openclip_vit import _kept, _ln, _np, _unscale

FAMILY = "open_clip.TimmModel(timm VisionTransformer)"
ACTIVATIONS = {"GELU": "gelu", "QuickGELU": "quick_gelu"}
SUPPORTED = ("timm VisionTransformer trunks with a class token, 'token' or 'avg' pooling and a linear projection "
             "head (plus open_clip VisionTransformer and transformers CLIPModel towers)")


def _identity(mod) -> bool:
    return mod is None or isinstance(mod, torch.nn.Identity)


def _refuse(visual, why: str):
    trunk = getattr(visual, "trunk", None)
    raise WeightscopeError(f"vision tower TimmModel with a timm {type(trunk).__name__} trunk is not supported: {why}; "
                           f"supported: {SUPPORTED}")


def check_supported(visual) -> None:
    """Raise a one-line WeightscopeError unless ``visual`` (an open_clip TimmModel) can be described exactly."""
    from timm.models.vision_transformer import VisionTransformer

    trunk = visual.trunk
    if type(trunk) is not VisionTransformer:
        _refuse(visual, "only plain timm VisionTransformer trunks are described (convolutional and other timm "
                        "families have no per-head residual writes of this form)")
    if getattr(trunk, "attn_pool", None) is not None or trunk.global_pool == "map":
        _refuse(visual, "its attention-pool (MAP) head is not linear in the residual stream")
    # dynamic_img_size trunks resample pos_embed only for other sizes: at the native size they are described exactly
    if trunk.cls_token is None or trunk.reg_token is not None or trunk.no_embed_class:
        _refuse(visual, "it needs exactly one class token, no register tokens and a position embedding that covers "
                        "the class token")
    grid = tuple(int(s) // int(p) for s, p in zip(visual.image_size, trunk.patch_embed.patch_size))
    if trunk.pos_embed is None or trunk.pos_embed.shape[1] != 1 + grid[0] * grid[1]:
        _refuse(visual, f"its position embedding is not for the tower's {tuple(visual.image_size)} px input "
                        "(it would be resampled on every forward)")
    if trunk.global_pool not in ("token", "avg") or getattr(trunk, "pool_include_prefix", False):
        _refuse(visual, f"pooling {trunk.global_pool!r} is not 'token' or 'avg' over the patch tokens")
    if not _identity(trunk.head) or not _identity(getattr(trunk.patch_embed, "norm", None)):
        _refuse(visual, "the trunk keeps a classifier head or normalises patch embeddings")
    if _identity(trunk.norm) == _identity(trunk.fc_norm):
        _refuse(visual, "exactly one final LayerNorm (norm before pooling or fc_norm after) is expected")
    head = list(visual.head.children())
    proj = getattr(visual.head, "proj", None)
    if not isinstance(proj, torch.nn.Linear) or proj.bias is not None or any(
            not isinstance(m, (torch.nn.Linear, torch.nn.Dropout, torch.nn.Identity)) for m in head):
        _refuse(visual, "the projection head must be one bias-free Linear (open_clip timm_proj 'linear')")
    for i, block in enumerate(trunk.blocks):
        attn, mlp = block.attn, block.mlp
        if (type(block).__name__ != "Block" or type(attn).__name__ != "Attention" or not hasattr(attn, "qkv")
                or not _identity(getattr(attn, "norm", None)) or type(mlp).__name__ != "Mlp"):
            _refuse(visual, f"block {i} is a {type(block).__name__} with {type(attn).__name__} / {type(mlp).__name__}, "
                            "not timm's pre-LN Block with fused-qkv Attention and Mlp")
        act = type(mlp.act).__name__
        if act not in ACTIVATIONS or getattr(mlp.act, "approximate", "none") != "none":
            _refuse(visual, f"block {i} uses activation {act}; exact GELU and QuickGELU are supported")


def _gamma(ls, d: int) -> np.ndarray:
    return _np(ls.gamma) if hasattr(ls, "gamma") else np.ones(d)


def describe(visual, keep: set[int] | None = None) -> VisionWeights:
    """Read an open_clip TimmModel with a timm VisionTransformer trunk into the neutral description."""
    check_supported(visual)
    trunk = visual.trunk
    check_finite(_kept(visual.named_parameters(), keep, r"trunk\.blocks\.(\d+)\."), None, prefix="visual.")
    layers = [_describe_block(b) if keep is None or i in keep else None for i, b in enumerate(trunk.blocks)]
    pos = _np(trunk.pos_embed)[0]
    conv = trunk.patch_embed.proj
    if conv.bias is not None:
        pos[1:] += _np(conv.bias)  # the conv bias is one more constant on every patch token
    stem = StemWeights(patch_weight=_np(conv.weight), class_embedding=_np(trunk.cls_token).reshape(-1),
                       positional_embedding=pos, ln_pre=_ln(trunk.norm_pre))
    after = not _identity(trunk.fc_norm)
    eps = max(torch.finfo(p.dtype).eps for p in visual.parameters() if p.is_floating_point())
    return VisionWeights(family=FAMILY, stem=stem, layers=layers, ln_post=_ln(trunk.fc_norm if after else trunk.norm),
                         proj=_np(visual.head.proj.weight).T.copy(), pool="tok" if trunk.global_pool == "token"
                         else "avg", ln_after_pool=after, eps=float(eps))


def _describe_block(block) -> LayerWeights:
    attn, mlp = block.attn, block.mlp
    D, H = attn.qkv.weight.shape[1], attn.num_heads
    dh = D // H
    w = _np(attn.qkv.weight)
    b = _np(attn.qkv.bias) if attn.qkv.bias is not None else np.zeros(3 * D)
    gamma = _gamma(block.ls1, D)

    def read(rows):
        return rows.reshape(H, dh, D).transpose(0, 2, 1).copy()

    bo = _np(attn.proj.bias) if attn.proj.bias is not None else np.zeros(D)
    return LayerWeights(
        ln_1=_ln(block.norm1),
        attn=AttentionWeights(
            read_q=read(w[:D]), read_k=read(w[D:2 * D]), read_v=read(w[2 * D:]),
            write_o=_np(attn.proj.weight).T.reshape(H, dh, D) * gamma,
            bias_q=b[:D].reshape(H, dh).copy(), bias_k=b[D:2 * D].reshape(H, dh).copy(),
            bias_v=b[2 * D:].reshape(H, dh).copy(), bias_o=bo * gamma,
            norm_q=_ln(attn.q_norm), norm_k=_ln(attn.k_norm),
        ),
        ln_2=_ln(block.norm2),
        mlp_in=_np(mlp.fc1.weight).T.copy(),
        mlp_in_bias=_np(mlp.fc1.bias) if mlp.fc1.bias is not None else np.zeros(mlp.fc1.weight.shape[0]),
        mlp_out=_np(mlp.fc2.weight).T.copy(),
        mlp_out_bias=_np(mlp.fc2.bias) if mlp.fc2.bias is not None else np.zeros(D),
        activation=ACTIVATIONS[type(mlp.act).__name__],
        layer_scale_mlp=_np(block.ls2.gamma) if hasattr(block.ls2, "gamma") else None,
        mlp_norm=_ln(mlp.norm),
    )


def write_attention(visual, layer: int, attn: AttentionWeights) -> None:
    """Write per-head factors into block ``layer`` of the trunk (in place); LayerScale divided out as in describe."""
    check_supported(visual)
    block = visual.trunk.blocks[layer]
    mod = block.attn
    H, D, dh = attn.read_v.shape
    gamma = _gamma(block.ls1, D)
    out_w = _unscale(attn.write_o, gamma, _np(mod.proj.weight).T.reshape(H, dh, D), layer, "write factor",
                     mod.proj.weight.dtype).reshape(H * dh, D).T
    qkv = np.concatenate([r.transpose(0, 2, 1).reshape(H * dh, D) for r in (attn.read_q, attn.read_k, attn.read_v)])
    qkv_b = np.concatenate([attn.bias_q.ravel(), attn.bias_k.ravel(), attn.bias_v.ravel()])
    with torch.no_grad():
        mod.qkv.weight.copy_(torch.from_numpy(qkv))
        if mod.qkv.bias is not None:
            mod.qkv.bias.copy_(torch.from_numpy(qkv_b))
        elif np.any(qkv_b):
            raise WeightscopeError(f"layer {layer} has no qkv bias to hold the edited bias")
        mod.proj.weight.copy_(torch.from_numpy(np.ascontiguousarray(out_w)))
        if mod.proj.bias is not None:
            mod.proj.bias.copy_(torch.from_numpy(_unscale(attn.bias_o, gamma, _np(mod.proj.bias), layer,
                                                          "output bias", mod.proj.bias.dtype)))
        elif np.any(attn.bias_o):
            raise WeightscopeError(f"layer {layer} has no output bias to hold the folded value bias")


def block_modules(visual, prefix: str = "") -> dict:
    """Hook points of the trunk's blocks, as :func:`weightscope.models.adapters.openclip_vit.block_modules` returns them."""
    check_supported(visual)
    trunk = visual.trunk
    gh, gw = (int(s) // int(p) for s, p in zip(visual.image_size, trunk.patch_embed.patch_size))
    return {"names": [f"{prefix}trunk.blocks.{i}" for i in range(len(trunk.blocks))], "batch_first": True,
            "grid": (int(gh), int(gw)), "image_size": tuple(int(x) for x in visual.image_size)}
