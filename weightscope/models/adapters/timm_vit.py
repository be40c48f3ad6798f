"""Adapter for open_clip ``TimmModel`` towers whose trunk is a plain timm ``VisionTransformer`` (CLIP-style timm
towers, SigLIP and SigLIP 2).

The only place that knows timm's ViT parameter names. Supported: pre-LN ``Block`` s with timm's fused-qkv
``Attention`` (optional QK-norm, LayerScale ``ls1`` / ``ls2``, an MLP-hidden LayerNorm), GELU or QuickGELU, a class
token or none (SigLIP), no register tokens, class-token ('token'), average ('avg') or attention-pool ('map', timm's
``AttentionPoolLatent``: SigLIP's MAP head) pooling, and a linear joint projection: open_clip's ``head.proj``, the
trunk's own ``head`` (with its bias), or none (SigLIP's pooled vector is its joint-space embedding). The patch
embedding's bias is added to the patch rows of the position embedding (exact: both are per-token constants added
before block 0). Everything else is refused in one line.

A MAP head is described exactly (:class:`~weightscope.core.weights.AttentionPoolWeights`); its output is not linear
in the residual stream, so the description's single joint-space map ``proj`` is a labelled linearisation whose error
against the head on random token sets is measured here (:func:`joint_linearisation`, METHODS.md s. 12).
"""
from __future__ import annotations

import numpy as np
import torch

from ...core.errors import WeightscopeError
from ...core.weights import AttentionPoolWeights, AttentionWeights, LayerWeights, StemWeights, VisionWeights
from ._finite import check_finite
from .openclip_vit import _kept, _ln, _np, _unscale

#: random token sets the MAP linearisation's error is measured on (seeded: the description is deterministic)
LINEARISATION_SETS = 16
LINEARISATION_SEED = 0

FAMILY = "open_clip.TimmModel(timm VisionTransformer)"
ACTIVATIONS = {"GELU": "gelu", "QuickGELU": "quick_gelu"}
SUPPORTED = ("timm VisionTransformer trunks with a class token or none, 'token', 'avg' or 'map' (SigLIP attention-pool) "
             "pooling and a linear or no projection head (plus open_clip VisionTransformer, timm Eva and transformers "
             "CLIPModel towers)")


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
    if trunk.global_pool == "map":
        _check_attn_pool(visual, trunk.attn_pool)
    # dynamic_img_size trunks resample pos_embed only for other sizes: at the native size they are described exactly
    if trunk.reg_token is not None or (trunk.cls_token is not None and trunk.no_embed_class):
        _refuse(visual, "it needs at most one class token, no register tokens and a position embedding that covers "
                        "every token")
    if trunk.cls_token is None and trunk.global_pool == "token":
        _refuse(visual, "it pools a class token it does not have")
    grid = tuple(int(s) // int(p) for s, p in zip(visual.image_size, trunk.patch_embed.patch_size))
    n_prefix = 0 if trunk.cls_token is None else 1
    if trunk.pos_embed is None or trunk.pos_embed.shape[1] != n_prefix + grid[0] * grid[1]:
        _refuse(visual, f"its position embedding is not for the tower's {tuple(visual.image_size)} px input "
                        "(it would be resampled on every forward)")
    if trunk.global_pool not in ("token", "avg", "map") or getattr(trunk, "pool_include_prefix", False):
        _refuse(visual, f"pooling {trunk.global_pool!r} is not 'token', 'avg' over the patch tokens or 'map'")
    if not _identity(getattr(trunk.patch_embed, "norm", None)):
        _refuse(visual, "the trunk normalises patch embeddings")
    if trunk.global_pool == "map" and not (_identity(trunk.fc_norm) and not _identity(trunk.norm)):
        _refuse(visual, "a MAP head is expected after the final norm, with no fc_norm")
    if trunk.global_pool != "map" and _identity(trunk.norm) == _identity(trunk.fc_norm):
        _refuse(visual, "exactly one final LayerNorm (norm before pooling or fc_norm after) is expected")
    joint_head(visual)
    for i, block in enumerate(trunk.blocks):
        attn, mlp = block.attn, block.mlp
        if (type(block).__name__ != "Block" or type(attn).__name__ != "Attention" or not hasattr(attn, "qkv")
                or not _identity(getattr(attn, "norm", None)) or type(mlp).__name__ != "Mlp"):
            _refuse(visual, f"block {i} is a {type(block).__name__} with {type(attn).__name__} / {type(mlp).__name__}, "
                            "not timm's pre-LN Block with fused-qkv Attention and Mlp")
        act = type(mlp.act).__name__
        if act not in ACTIVATIONS or getattr(mlp.act, "approximate", "none") != "none":
            _refuse(visual, f"block {i} uses activation {act}; exact GELU and QuickGELU are supported")


def _check_attn_pool(visual, pool) -> None:
    if type(pool).__name__ != "AttentionPoolLatent":
        _refuse(visual, f"its attention pool is a {type(pool).__name__}, not timm's AttentionPoolLatent")
    if (pool.pos_embed is not None or not _identity(pool.q_norm) or not _identity(pool.k_norm)
            or isinstance(pool.q, torch.nn.Identity) or pool.mlp is None or pool.latent_len != 1):
        _refuse(visual, "its AttentionPoolLatent has a position embedding, QK-norm, no query projection, no MLP or "
                        f"{pool.latent_len} latent queries; SigLIP's form (one latent query, kv, proj, "
                        "x + mlp(norm(x))) is supported")
    act = type(pool.mlp.act).__name__
    if act not in ACTIVATIONS or getattr(pool.mlp.act, "approximate", "none") != "none" or not _identity(
            getattr(pool.mlp, "norm", None)):
        _refuse(visual, f"its attention-pool MLP uses {act} or a hidden norm; exact GELU / QuickGELU are supported")


def joint_head(visual) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The linear map after pooling: (weight (D, E), bias (E,) or None), or (None, None) when there is none.

    open_clip's ``head.proj`` (timm_proj 'linear'), else the trunk's own ``head`` (timm_proj null builds the trunk
    with ``num_classes = embed_dim``), else nothing (timm_proj 'none': the pooled vector is the embedding).
    """
    head = list(visual.head.children())
    proj = getattr(visual.head, "proj", None)
    if any(not isinstance(m, (torch.nn.Linear, torch.nn.Dropout, torch.nn.Identity)) for m in head) or (
            head and not isinstance(proj, torch.nn.Linear)):
        _refuse(visual, "the projection head must be one Linear (open_clip timm_proj 'linear', null or 'none')")
    trunk_head = visual.trunk.head
    if proj is not None and not _identity(trunk_head):
        _refuse(visual, "it has both a trunk classifier head and a projection")
    lin = proj if proj is not None else (None if _identity(trunk_head) else trunk_head)
    if lin is None:
        return None, None
    if not isinstance(lin, torch.nn.Linear):
        _refuse(visual, f"its trunk head is a {type(lin).__name__}, not a Linear")
    return _np(lin.weight).T.copy(), (_np(lin.bias) if lin.bias is not None else None)


def _gamma(ls, d: int) -> np.ndarray:
    return _np(ls.gamma) if hasattr(ls, "gamma") else np.ones(d)


def describe(visual, keep: set[int] | None = None) -> VisionWeights:
    """Read an open_clip TimmModel with a timm VisionTransformer trunk into the neutral description."""
    check_supported(visual)
    trunk = visual.trunk
    check_finite(_kept(visual.named_parameters(), keep, r"trunk\.blocks\.(\d+)\."), None, prefix="visual.")
    layers = [_describe_block(b) if keep is None or i in keep else None for i, b in enumerate(trunk.blocks)]
    pos = _np(trunk.pos_embed)[0]
    cls = None if trunk.cls_token is None else _np(trunk.cls_token).reshape(-1)
    conv = trunk.patch_embed.proj
    if conv.bias is not None:
        pos[0 if cls is None else 1:] += _np(conv.bias)  # the conv bias is one more constant on every patch token
    stem = StemWeights(patch_weight=_np(conv.weight), class_embedding=cls, positional_embedding=pos,
                       ln_pre=_ln(trunk.norm_pre))
    after = not _identity(trunk.fc_norm)
    eps = max(torch.finfo(p.dtype).eps for p in visual.parameters() if p.is_floating_point())
    head_w, head_b = joint_head(visual)
    D = pos.shape[1]
    if trunk.global_pool == "map":
        pool = _describe_attn_pool(trunk.attn_pool, head_w)
        weights = VisionWeights(family=FAMILY, stem=stem, layers=layers, ln_post=_ln(trunk.norm), proj=np.eye(D),
                                pool="map", ln_after_pool=False, eps=float(eps), proj_bias=head_b, attn_pool=pool)
        weights.proj, weights.meta["joint_map"] = joint_linearisation(weights)
        return weights
    return VisionWeights(family=FAMILY, stem=stem, layers=layers, ln_post=_ln(trunk.fc_norm if after else trunk.norm),
                         proj=head_w if head_w is not None else np.eye(D), pool="tok" if trunk.global_pool == "token"
                         else "avg", ln_after_pool=after, eps=float(eps), proj_bias=head_b)


def _describe_attn_pool(pool, head_w) -> AttentionPoolWeights:
    H = pool.num_heads
    dh = pool.head_dim
    kv = _np(pool.kv.weight)
    kv_b = _np(pool.kv.bias) if pool.kv.bias is not None else np.zeros(2 * H * dh)

    def read(rows):
        return rows.reshape(H, dh, -1).transpose(0, 2, 1).copy()

    def bias(lin, n):
        return _np(lin.bias) if lin.bias is not None else np.zeros(n)

    mlp = pool.mlp
    return AttentionPoolWeights(
        latent=_np(pool.latent)[0], read_q=read(_np(pool.q.weight)), bias_q=bias(pool.q, H * dh).reshape(H, dh),
        read_k=read(kv[:H * dh]), bias_k=kv_b[:H * dh].reshape(H, dh).copy(),
        read_v=read(kv[H * dh:]), bias_v=kv_b[H * dh:].reshape(H, dh).copy(),
        write_o=_np(pool.proj.weight).T.reshape(H, dh, -1).copy(), bias_o=bias(pool.proj, pool.proj.weight.shape[0]),
        norm=_ln(pool.norm), mlp_in=_np(mlp.fc1.weight).T.copy(), mlp_in_bias=bias(mlp.fc1, mlp.fc1.weight.shape[0]),
        mlp_out=_np(mlp.fc2.weight).T.copy(), mlp_out_bias=bias(mlp.fc2, mlp.fc2.weight.shape[0]),
        activation=ACTIVATIONS[type(mlp.act).__name__], pool=pool.pool, proj_out=head_w)


def joint_linearisation(weights: VisionWeights) -> tuple[np.ndarray, dict]:
    """The single residual -> joint map of a MAP tower, a linearisation, and its measured error.

    ``L = (sum_h read_v[h] write_o[h]) (I + J) proj_out``: every pooling head's value-output map (what a direction
    written at every token adds, whatever the attention, since each head's weights sum to 1) followed by the
    Jacobian J of the pool's ``mlp(norm(y))`` at the mean pre-MLP pooled vector y0 of random token sets.
    Error: on ``LINEARISATION_SETS`` seeded random token sets X (tokens N(0, 1), the tower's token count), the
    module's output f(X) against ``c + mean_t ln_post(X)_t @ L`` with the best constant c: the share of f's
    variation across the sets that the linear map misses (root mean square; 0 = exact).
    Returns (L (D, E), record for ``meta["joint_map"]``).
    """
    from ..forward import _activation, attention_pool, layer_norm, pool_mlp

    ap = weights.attn_pool
    D = weights.width
    T = weights.stem.positional_embedding.shape[0]
    rng = np.random.default_rng(LINEARISATION_SEED)
    X = layer_norm(rng.standard_normal((LINEARISATION_SETS, T, D)), weights.ln_post)
    pre_mlp = attention_pool(X, ap, pre_mlp=True)  # one latent (checked): pooling the latents is taking it
    y0 = pre_mlp.mean(axis=0)
    norm = ap.norm
    mu, var = y0.mean(), y0.var()
    sigma = np.sqrt(var + norm.eps)
    yhat = (y0 - mu) / sigma
    jac_norm = (np.eye(D) - 1.0 / D - np.outer(yhat, yhat) / D) / sigma * norm.scale  # d norm(y) / dy, rows: dy
    pre = layer_norm(y0, norm) @ ap.mlp_in + ap.mlp_in_bias
    eps = 1e-6
    slope = (_activation(pre + eps, ap.activation) - _activation(pre - eps, ap.activation)) / (2 * eps)
    jac = np.eye(D) + jac_norm @ (ap.mlp_in * slope) @ ap.mlp_out
    L = np.einsum("hde,hef->df", ap.read_v, ap.write_o) @ jac
    if ap.proj_out is not None:
        L = L @ ap.proj_out
    f = pool_mlp(pre_mlp, ap)
    if ap.proj_out is not None:
        f = f @ ap.proj_out
    mean = X.mean(axis=1)
    before = _missed(pre_mlp, mean @ np.einsum("hde,hef->df", ap.read_v, ap.write_o))
    record = {"kind": "linearisation", "error": _missed(f, mean @ L), "error_before_mlp": before,
              "n_token_sets": LINEARISATION_SETS,
              "what": "sum of the pooling heads' value-output maps, then the pool MLP's Jacobian at the mean pooled "
                      "vector of random token sets; error = share of the MAP head's output variation across random "
                      "token sets that this map misses (error_before_mlp: the same for the heads' sum alone, before "
                      "the MLP); exact per-head maps: weightscope.decompose.pooling"}
    return L, record


def _missed(f: np.ndarray, g: np.ndarray) -> float:
    """RMS of (f - g) after removing each one's mean over the rows, relative to the RMS spread of f (0 = exact)."""
    resid = (f - f.mean(axis=0)) - (g - g.mean(axis=0))
    spread = np.sqrt(((f - f.mean(axis=0)) ** 2).sum(axis=1).mean())
    return float(np.sqrt((resid ** 2).sum(axis=1).mean()) / spread) if spread > 0 else 0.0


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
            "grid": (int(gh), int(gw)), "image_size": tuple(int(x) for x in visual.image_size),
            "n_prefix": 0 if trunk.cls_token is None else 1}
