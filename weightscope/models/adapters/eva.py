"""Adapter for open_clip ``TimmModel`` towers whose trunk is a timm ``Eva`` (EVA02-CLIP: EVA02-B-16 ... E-14).

The only place that knows timm's Eva parameter names. EVA02 blocks differ from CLIP's in three ways
(METHODS.md s. 12), none of which touches a head's value-output path except the third:
- rotary position embedding (RoPE) of queries and keys on the patch tokens: described (``AttentionWeights.rope``)
  and reproduced by the reference forward; the QK bilinear form then depends on the relative offset, so the "qk"
  decomposition refuses these layers (one line) while the "vo" one is exact;
- a SwiGLU MLP with a LayerNorm on its hidden layer (``scale_mlp``): described as a gated MLP;
- a LayerNorm on the concatenated head outputs before ``proj`` (``attn.norm``, ``scale_attn_inner``): centring is a
  linear projection P and the gain diagonal, so head h writes ``(1/sigma) o_h E_h^T P diag(gamma) W_proj^T``:
  ``write_o[h]`` holds ``E_h^T P diag(gamma) W_proj^T`` (exact in direction, comparable across the heads of a
  layer) and the one positive scalar per token ``sigma``, shared by all heads, stays in the forward
  (``AttentionWeights.inner_norm_eps``). The norm's shift and proj's bias form ``bias_o``.

Edits: head write factors are written back exactly when the edited layer's stacked write factors stay centred over
the heads' coordinates (what P allows); an edit of one head's write map generally breaks that (the centring is
shared by all heads), so such edits are refused in one line. Value-side quantities (read_v, bias_v) write back freely.
"""
from __future__ import annotations

import numpy as np
import torch

from ...core.errors import WeightscopeError
from ...core.weights import AttentionWeights, LayerWeights, RotaryWeights, StemWeights, VisionWeights
from ._finite import check_finite
from .openclip_vit import _kept, _ln, _np
from .timm_vit import joint_head

FAMILY = "open_clip.TimmModel(timm Eva)"
SUPPORTED = ("timm Eva trunks of EVA02-CLIP form: one class token, RoPE 'cat' (fixed grid), EvaAttention with "
             "separate or fused q/k/v, optional inner LayerNorm (scale_attn_inner) and LayerScale, SwiGLU / GluMlp / "
             "GELU MLPs, 'token' or 'avg' pooling and a linear head")


def _identity(mod) -> bool:
    return mod is None or isinstance(mod, torch.nn.Identity)


def is_eva(visual) -> bool:
    """True for an open_clip TimmModel whose trunk is a timm Eva (checked without importing timm)."""
    return type(visual).__name__ == "TimmModel" and type(getattr(visual, "trunk", None)).__name__ == "Eva"


def _refuse(why: str):
    raise WeightscopeError(f"vision tower TimmModel with a timm Eva trunk is not supported: {why}; "
                           f"supported: {SUPPORTED}")


def check_supported(visual) -> None:
    """Raise a one-line WeightscopeError unless ``visual`` (a TimmModel with an Eva trunk) is described exactly."""
    trunk = visual.trunk
    if trunk.cls_token is None or getattr(trunk, "reg_token", None) is not None or trunk.num_prefix_tokens != 1:
        _refuse("exactly one class token and no register tokens are expected")
    if getattr(trunk, "attn_pool", None) is not None or trunk.global_pool not in ("token", "avg"):
        _refuse(f"pooling {trunk.global_pool!r} is not 'token' or 'avg'")
    grid = tuple(int(s) // int(p) for s, p in zip(visual.image_size, trunk.patch_embed.patch_size))
    if (trunk.pos_embed is None or trunk.pos_embed.shape[1] != 1 + grid[0] * grid[1]
            or getattr(trunk, "dynamic_img_size", False)):
        _refuse(f"its position embedding is not a fixed one for the tower's {tuple(visual.image_size)} px input")
    if trunk.rope is not None and (getattr(trunk, "rope_mixed", False) or type(trunk.rope).__name__ !=
                                   "RotaryEmbeddingCat" or getattr(trunk.rope, "feat_shape", None) is None):
        _refuse(f"its rotary embedding is {type(trunk.rope).__name__} (mixed or grid-free); EVA02's "
                "RotaryEmbeddingCat on a fixed grid is supported")
    if not _identity(getattr(trunk.patch_embed, "norm", None)) or not _identity(getattr(trunk, "norm_pre", None)):
        _refuse("the trunk normalises patch embeddings or has a pre-norm")
    if _identity(trunk.norm) == _identity(trunk.fc_norm):
        _refuse("exactly one final LayerNorm (norm before pooling or fc_norm after) is expected")
    joint_head(visual)
    for i, block in enumerate(trunk.blocks):
        attn = block.attn
        if type(block).__name__ != "EvaBlock" or type(attn).__name__ != "EvaAttention":
            _refuse(f"block {i} is a {type(block).__name__} with {type(attn).__name__}, not EvaBlock / EvaAttention")
        if getattr(attn, "gate", None) is not None or not _identity(attn.q_norm) or not _identity(attn.k_norm):
            _refuse(f"block {i} gates its attention output or normalises queries / keys")
        if abs(attn.scale - attn.head_dim ** -0.5) > 1e-12:
            _refuse(f"block {i} scales logits by {attn.scale}, not 1/sqrt(head width)")
        if type(block.mlp).__name__ not in ("SwiGLU", "GluMlp", "Mlp"):
            _refuse(f"block {i} has a {type(block.mlp).__name__} MLP")
        _activation(block.mlp, i)


def _activation(mlp, index: int) -> str:
    act = mlp.act
    name = type(act).__name__
    kinds = {"SiLU": "silu", "GELU": "gelu", "QuickGELU": "quick_gelu"}
    if name not in kinds or getattr(act, "approximate", "none") != "none":
        _refuse(f"block {index} uses activation {name}; SiLU, exact GELU and QuickGELU are supported")
    if type(mlp).__name__ == "GluMlp" and (getattr(mlp, "chunk_dim", -1) != -1 or mlp.gate_last):
        _refuse(f"block {index}'s GluMlp gates the second half")
    return kinds[name]


def describe(visual, keep: set[int] | None = None) -> VisionWeights:
    """Read an open_clip TimmModel with an Eva trunk into the neutral description (float64 copies); blocks not in
    ``keep`` (None: all) are None in ``layers``, neither copied nor checked."""
    check_supported(visual)
    trunk = visual.trunk
    check_finite(_kept(visual.named_parameters(), keep, r"trunk\.blocks\.(\d+)\."), None, prefix="visual.")
    rope = None
    if trunk.rope is not None:
        sin, cos = np.split(_np(trunk.rope.get_embed()), 2, axis=-1)
        rope = RotaryWeights(sin=sin, cos=cos, n_prefix=1, half=bool(getattr(trunk.blocks[0].attn, "rotate_half",
                                                                             False)))
    layers = [_describe_block(b, i, rope) if keep is None or i in keep else None for i, b in enumerate(trunk.blocks)]
    pos = _np(trunk.pos_embed)[0]
    conv = trunk.patch_embed.proj
    if conv.bias is not None:
        pos[1:] += _np(conv.bias)  # a per-token constant, like the position embedding
    stem = StemWeights(patch_weight=_np(conv.weight), class_embedding=_np(trunk.cls_token).reshape(-1),
                       positional_embedding=pos, ln_pre=None)
    after = not _identity(trunk.fc_norm)
    head_w, head_b = joint_head(visual)
    D = pos.shape[1]
    eps = max(torch.finfo(p.dtype).eps for p in visual.parameters() if p.is_floating_point())
    return VisionWeights(family=FAMILY, stem=stem, layers=layers, ln_post=_ln(trunk.fc_norm if after else trunk.norm),
                         proj=head_w if head_w is not None else np.eye(D), pool="tok" if trunk.global_pool == "token"
                         else "avg", ln_after_pool=after, eps=float(eps), proj_bias=head_b)


def _qkv(attn):
    """(W (3, H dh, D), b (3, H dh)) of the query, key and value maps, fused or separate."""
    n = attn.num_heads * attn.head_dim
    if attn.qkv is not None:
        w = _np(attn.qkv.weight).reshape(3, n, -1)
    else:
        w = np.stack([_np(attn.q_proj.weight), _np(attn.k_proj.weight), _np(attn.v_proj.weight)])
    b = np.zeros((3, n))
    if getattr(attn, "q_bias", None) is not None:
        b = np.stack([_np(attn.q_bias), _np(attn.k_bias), _np(attn.v_bias)])
    elif attn.qkv is not None and attn.qkv.bias is not None:
        b = _np(attn.qkv.bias).reshape(3, n)
    elif attn.qkv is None:
        b = np.stack([_np(m.bias) if m.bias is not None else np.zeros(n)
                      for m in (attn.q_proj, attn.k_proj, attn.v_proj)])
    return w, b


def _inner(attn, n: int) -> tuple[np.ndarray, np.ndarray, float | None]:
    """(P diag(gamma) (n, n), beta (n,), eps) of the inner LayerNorm, or (I, 0, None) without one."""
    if _identity(attn.norm):
        return np.eye(n), np.zeros(n), None
    ln = _ln(attn.norm)
    return (np.eye(n) - 1.0 / n) * ln.scale, ln.shift, ln.eps


def _scale(gamma, D: int) -> np.ndarray:
    return _np(gamma) if gamma is not None else np.ones(D)


def _describe_block(block, index: int, rope) -> LayerWeights:
    attn, mlp = block.attn, block.mlp
    H, dh = attn.num_heads, attn.head_dim
    n = H * dh
    w, b = _qkv(attn)
    D = w.shape[2]
    PG, beta, inner_eps = _inner(attn, n)
    proj_w, proj_b = _np(attn.proj.weight), (_np(attn.proj.bias) if attn.proj.bias is not None else np.zeros(D))
    gamma = _scale(block.gamma_1, D)
    write = (PG @ proj_w.T) * gamma  # (n, D): row block h is head h's write factor
    bias_o = (beta @ proj_w.T + proj_b) * gamma

    def read(rows):
        return rows.reshape(H, dh, D).transpose(0, 2, 1).copy()

    act = _activation(mlp, index)
    kind = type(mlp).__name__
    if kind == "SwiGLU":
        gate, up = mlp.fc1_g, mlp.fc1_x
        gate_w, gate_b = _np(gate.weight).T.copy(), _np(gate.bias) if gate.bias is not None else None
        in_w, in_b = _np(up.weight).T.copy(), _np(up.bias) if up.bias is not None else None
    elif kind == "GluMlp":
        fw = _np(mlp.fc1.weight)
        fb = _np(mlp.fc1.bias) if mlp.fc1.bias is not None else np.zeros(fw.shape[0])
        F = fw.shape[0] // 2
        gate_w, gate_b, in_w, in_b = fw[:F].T.copy(), fb[:F].copy(), fw[F:].T.copy(), fb[F:].copy()
    else:
        gate_w = gate_b = None
        in_w, in_b = _np(mlp.fc1.weight).T.copy(), _np(mlp.fc1.bias) if mlp.fc1.bias is not None else None
    F = in_w.shape[1]
    return LayerWeights(
        ln_1=_ln(block.norm1),
        attn=AttentionWeights(read_q=read(w[0]), read_k=read(w[1]), read_v=read(w[2]),
                              write_o=write.reshape(H, dh, D), bias_q=b[0].reshape(H, dh).copy(),
                              bias_k=b[1].reshape(H, dh).copy(), bias_v=b[2].reshape(H, dh).copy(), bias_o=bias_o,
                              inner_norm_eps=inner_eps, rope=rope),
        ln_2=_ln(block.norm2),
        mlp_in=in_w, mlp_in_bias=in_b if in_b is not None else np.zeros(F),
        mlp_out=_np(mlp.fc2.weight).T.copy(),
        mlp_out_bias=_np(mlp.fc2.bias) if mlp.fc2.bias is not None else np.zeros(D),
        activation=act, layer_scale_mlp=_np(block.gamma_2) if block.gamma_2 is not None else None,
        mlp_norm=_ln(mlp.norm), mlp_gate=gate_w,
        mlp_gate_bias=(gate_b if gate_b is not None else np.zeros(F)) if gate_w is not None else None,
    )


def write_attention(visual, layer: int, attn: AttentionWeights) -> None:
    """Write per-head factors into Eva block ``layer`` (in place): the inverse of describe.

    The stacked write factors S (H dh, D) must equal ``P diag(g) W^T diag(gamma_1)`` for some proj weight W: their
    columns must sum to zero over the heads' coordinates when the block has an inner LayerNorm; the component P
    removes is kept from the module. Raises WeightscopeError otherwise, and where LayerScale or the inner norm's gain
    is zero but the edit is not.
    """
    check_supported(visual)
    block = visual.trunk.blocks[layer]
    mod = block.attn
    H, D, dh = attn.read_v.shape
    n = H * dh
    gamma = _scale(block.gamma_1, D)
    S = attn.write_o.reshape(n, D)
    tol = 1e-9 * max(np.abs(S).max(), 1e-300) * n
    if not _identity(mod.norm):
        if np.abs(S.sum(axis=0)).max() > tol:
            raise WeightscopeError(
                f"layer {layer} normalises the concatenated head outputs (EVA02 attn.norm): its centring is shared by "
                "all heads, so an edit that changes one head's write map alone cannot be held by the model; edit the "
                "value side or another layer")
    if np.any(gamma == 0) or (not _identity(mod.norm) and np.any(_np(mod.norm.weight) == 0)):
        raise WeightscopeError(f"layer {layer} has a zero LayerScale or inner-norm gain; its write factor cannot "
                               "be written back")
    _, beta, _ = _inner(mod, n)
    g = _ln(mod.norm).scale if not _identity(mod.norm) else np.ones(n)
    current = _np(mod.proj.weight).T * g[:, None]  # diag(g) W^T: P drops its column means
    target = S / gamma + current.mean(axis=0, keepdims=True) * (not _identity(mod.norm))
    proj_w = (target / g[:, None]).T
    proj_b = attn.bias_o / gamma - beta @ proj_w.T
    rows = [r.transpose(0, 2, 1).reshape(n, D) for r in (attn.read_q, attn.read_k, attn.read_v)]
    biases = [attn.bias_q.ravel(), attn.bias_k.ravel(), attn.bias_v.ravel()]
    with torch.no_grad():
        if mod.qkv is not None:
            mod.qkv.weight.copy_(torch.from_numpy(np.concatenate(rows)))
        else:
            for lin, r in zip((mod.q_proj, mod.k_proj, mod.v_proj), rows):
                lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(r)))
        _write_biases(mod, biases, layer)
        mod.proj.weight.copy_(torch.from_numpy(np.ascontiguousarray(proj_w)))
        if mod.proj.bias is not None:
            mod.proj.bias.copy_(torch.from_numpy(proj_b))
        elif np.abs(proj_b).max() > tol:
            raise WeightscopeError(f"layer {layer} has no output bias to hold the folded value bias")


def _write_biases(mod, biases, layer: int) -> None:
    if getattr(mod, "q_bias", None) is not None:
        targets = [mod.q_bias, mod.k_bias, mod.v_bias]
    elif mod.qkv is not None:
        targets = [None] * 3 if mod.qkv.bias is None else list(mod.qkv.bias.view(3, -1))
    else:
        targets = [m.bias for m in (mod.q_proj, mod.k_proj, mod.v_proj)]
    fixed = getattr(mod, "q_bias", None) is not None  # fused EVA: the key bias is a zero buffer, not a weight
    for name, t, b in zip("qkv", targets, biases):
        if t is None or (fixed and name == "k"):
            if np.any(b):
                raise WeightscopeError(f"layer {layer} has no trainable {name} bias to hold the edited bias")
            continue
        t.copy_(torch.from_numpy(np.ascontiguousarray(b)))


def block_modules(visual, prefix: str = "") -> dict:
    """Hook points of the trunk's blocks, as :func:`weightscope.models.adapters.openclip_vit.block_modules` returns them."""
    check_supported(visual)
    trunk = visual.trunk
    gh, gw = (int(s) // int(p) for s, p in zip(visual.image_size, trunk.patch_embed.patch_size))
    return {"names": [f"{prefix}trunk.blocks.{i}" for i in range(len(trunk.blocks))], "batch_first": True,
            "grid": (int(gh), int(gw)), "image_size": tuple(int(x) for x in visual.image_size), "n_prefix": 1}
