"""A reference forward pass of the vision tower computed from the neutral description alone (float64 numpy).

It checks adapters by construction (describe(model) must reproduce model.encode_image) and predicts what an
edited model must output (edit factors -> forward here == forward of the written-back torch model).
"""
from __future__ import annotations

import numpy as np
from scipy.special import erf, softmax

from ..core.weights import AttentionPoolWeights, AttentionWeights, LayerNormWeights, LayerWeights, RotaryWeights, VisionWeights


def layer_norm(x: np.ndarray, ln: LayerNormWeights | None) -> np.ndarray:
    if ln is None:
        return x
    mu = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + ln.eps) * ln.scale + ln.shift


def _activation(x: np.ndarray, kind: str) -> np.ndarray:
    if kind == "quick_gelu":
        return x / (1.0 + np.exp(-1.702 * x))
    if kind == "silu":
        return x / (1.0 + np.exp(-x))
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def patch_tokens(weights: VisionWeights, images: np.ndarray) -> np.ndarray:
    """Residual stream entering block 0: images (N, 3, S, S) preprocessed -> tokens (N, T, D)."""
    stem = weights.stem
    D, _, p, _ = stem.patch_weight.shape
    N, C, S, _ = images.shape
    g = S // p
    patches = images[:, :, : g * p, : g * p].reshape(N, C, g, p, g, p).transpose(0, 2, 4, 1, 3, 5).reshape(N, g * g, C * p * p)
    x = patches @ stem.patch_weight.reshape(D, -1).T
    if stem.class_embedding is not None:
        x = np.concatenate([np.broadcast_to(stem.class_embedding, (N, 1, D)), x], axis=1)
    x = x + stem.positional_embedding
    return layer_norm(x, stem.ln_pre)


def _logits(q: np.ndarray, k: np.ndarray, a: AttentionWeights) -> np.ndarray:
    """Attention logits (N, H, T, T) from queries and keys (N, H, T, dh), as open_clip computes them."""
    if a.logit_scale is not None:  # scaled cosine attention: F.normalize (eps 1e-12), then a per-head temperature
        qn = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
        kn = k / np.maximum(np.linalg.norm(k, axis=-1, keepdims=True), 1e-12)
        return qn @ kn.transpose(0, 1, 3, 2) * a.logit_scale[None, :, None, None]
    q, k = layer_norm(q, a.norm_q), layer_norm(k, a.norm_k)
    if a.rope is not None:
        q, k = rotate(q, a.rope), rotate(k, a.rope)
    return q @ k.transpose(0, 1, 3, 2) / np.sqrt(a.head_width)


def rotate(x: np.ndarray, rope: RotaryWeights) -> np.ndarray:
    """Rotary embedding of queries or keys x (..., T, dh) as timm's ``apply_rot_embed``: prefix tokens unchanged."""
    p = rope.n_prefix
    y = x[..., p:, :]
    if rope.half:
        h = y.shape[-1] // 2
        turned = np.concatenate([-y[..., h:], y[..., :h]], axis=-1)
    else:
        turned = np.stack([-y[..., 1::2], y[..., ::2]], axis=-1).reshape(y.shape)
    return np.concatenate([x[..., :p, :], y * rope.cos + turned * rope.sin], axis=-2)


def mlp(x: np.ndarray, lw: LayerWeights) -> np.ndarray:
    """The block's MLP branch (before LayerScale) on already-normalised inputs x (..., D)."""
    pre = _activation(x @ (lw.mlp_gate if lw.mlp_gate is not None else lw.mlp_in)
                      + (lw.mlp_gate_bias if lw.mlp_gate is not None else lw.mlp_in_bias), lw.activation)
    if lw.mlp_gate is not None:
        pre = pre * (x @ lw.mlp_in + lw.mlp_in_bias)
    return layer_norm(pre, lw.mlp_norm) @ lw.mlp_out + lw.mlp_out_bias


def block(x: np.ndarray, lw: LayerWeights) -> np.ndarray:
    """One residual block on tokens x (N, T, D). The attention's output scales are inside write_o / bias_o."""
    a = lw.attn
    h = layer_norm(x, lw.ln_1)
    q = np.einsum("ntd,hde->nhte", h, a.read_q) + a.bias_q[None, :, None, :]
    k = np.einsum("ntd,hde->nhte", h, a.read_k) + a.bias_k[None, :, None, :]
    v = np.einsum("ntd,hde->nhte", h, a.read_v) + a.bias_v[None, :, None, :]
    attn = softmax(_logits(q, k, a), axis=-1)
    heads = attn @ v
    out = np.einsum("nhte,hed->ntd", heads, a.write_o)
    if a.inner_norm_eps is not None:  # the one per-token scalar of the LayerNorm over all heads' outputs
        o = heads.transpose(0, 2, 1, 3).reshape(heads.shape[0], heads.shape[2], -1)
        out = out / np.sqrt(o.var(axis=-1, keepdims=True) + a.inner_norm_eps)
    x = x + out + a.bias_o
    m = mlp(layer_norm(x, lw.ln_2), lw)
    return x + (m * lw.layer_scale_mlp if lw.layer_scale_mlp is not None else m)


def attention_pool(tokens: np.ndarray, ap: AttentionPoolWeights, pre_mlp: bool = False) -> np.ndarray:
    """The attention-pool (MAP) head on final tokens (N, T, D), already through ln_post -> (N, D) pooled
    (before ``proj_out``). pre_mlp: stop after the pooled heads' sum and ``proj`` (before ``x + mlp(norm(x))``)."""
    H, D, dh = ap.read_v.shape
    N, T, _ = tokens.shape

    def heads(read, bias):  # (N, T, D) -> (N, H, T, dh) through one matrix product (BLAS), not an einsum
        return (tokens @ read.transpose(1, 0, 2).reshape(D, H * dh) + bias.reshape(-1)).reshape(
            N, T, H, dh).transpose(0, 2, 1, 3)

    q = np.einsum("ld,hde->hle", ap.latent, ap.read_q) + ap.bias_q[:, None, :]
    k, v = heads(ap.read_k, ap.bias_k), heads(ap.read_v, ap.bias_v)
    attn = softmax(q[None] @ k.transpose(0, 1, 3, 2) / np.sqrt(dh), axis=-1)  # (N, H, L, T)
    mixed = (attn @ v).transpose(0, 2, 1, 3).reshape(N, -1, H * dh)  # (N, L, H dh)
    y = mixed @ ap.write_o.reshape(H * dh, -1) + ap.bias_o
    if not pre_mlp:
        y = pool_mlp(y, ap)
    return y[:, 0] if ap.pool == "token" else y.mean(axis=1)


def pool_mlp(y: np.ndarray, ap: AttentionPoolWeights) -> np.ndarray:
    """The attention pool's residual MLP ``y + mlp(norm(y))`` on pooled vectors y (..., D)."""
    hidden = _activation(layer_norm(y, ap.norm) @ ap.mlp_in + ap.mlp_in_bias, ap.activation)
    return y + hidden @ ap.mlp_out + ap.mlp_out_bias


def encode_image(weights: VisionWeights, images: np.ndarray) -> np.ndarray:
    """Unnormalised image embeddings (N, E) from preprocessed images (N, 3, S, S), like open_clip encode_image."""
    x = patch_tokens(weights, np.asarray(images, dtype=np.float64))
    for lw in weights.layers:
        x = block(x, lw)
    if weights.attn_pool is not None:
        ap = weights.attn_pool
        out = attention_pool(layer_norm(x, weights.ln_post), ap)
        out = out @ ap.proj_out if ap.proj_out is not None else out
        return out + weights.proj_bias if weights.proj_bias is not None else out
    n = weights.stem.n_prefix
    if weights.ln_after_pool:
        pooled = x[:, 0] if weights.pool == "tok" else x[:, n:].mean(axis=1)
        pooled = layer_norm(pooled, weights.ln_post)
    else:
        x = layer_norm(x, weights.ln_post)
        pooled = x[:, 0] if weights.pool == "tok" else x[:, n:].mean(axis=1)
    out = pooled @ weights.proj
    return out + weights.proj_bias if weights.proj_bias is not None else out
