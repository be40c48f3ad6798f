"""A reference forward pass of the vision tower computed from the neutral description alone (float64 numpy).

It checks adapters by construction (describe(model) must reproduce model.encode_image) and predicts what an
edited model must output (edit factors -> forward here == forward of the written-back torch model).
"""
from __future__ import annotations

import numpy as np
from scipy.special import erf, softmax

from ..core.weights import AttentionWeights, LayerNormWeights, LayerWeights, VisionWeights


def layer_norm(x: np.ndarray, ln: LayerNormWeights | None) -> np.ndarray:
    if ln is None:
        return x
    mu = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + ln.eps) * ln.scale + ln.shift


def _activation(x: np.ndarray, kind: str) -> np.ndarray:
    if kind == "quick_gelu":
        return x / (1.0 + np.exp(-1.702 * x))
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def patch_tokens(weights: VisionWeights, images: np.ndarray) -> np.ndarray:
    """Residual stream entering block 0: images (N, 3, S, S) preprocessed -> tokens (N, T, D)."""
    stem = weights.stem
    D, _, p, _ = stem.patch_weight.shape
    N, C, S, _ = images.shape
    g = S // p
    patches = images[:, :, : g * p, : g * p].reshape(N, C, g, p, g, p).transpose(0, 2, 4, 1, 3, 5).reshape(N, g * g, C * p * p)
    x = patches @ stem.patch_weight.reshape(D, -1).T
    cls = np.broadcast_to(stem.class_embedding, (N, 1, D))
    x = np.concatenate([cls, x], axis=1) + stem.positional_embedding
    return layer_norm(x, stem.ln_pre)


def _logits(q: np.ndarray, k: np.ndarray, a: AttentionWeights) -> np.ndarray:
    """Attention logits (N, H, T, T) from queries and keys (N, H, T, dh), as open_clip computes them."""
    if a.logit_scale is not None:  # scaled cosine attention: F.normalize (eps 1e-12), then a per-head temperature
        qn = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
        kn = k / np.maximum(np.linalg.norm(k, axis=-1, keepdims=True), 1e-12)
        return qn @ kn.transpose(0, 1, 3, 2) * a.logit_scale[None, :, None, None]
    q, k = layer_norm(q, a.norm_q), layer_norm(k, a.norm_k)
    return q @ k.transpose(0, 1, 3, 2) / np.sqrt(a.head_width)


def block(x: np.ndarray, lw: LayerWeights) -> np.ndarray:
    """One residual block on tokens x (N, T, D). The attention's output scales are inside write_o / bias_o."""
    a = lw.attn
    h = layer_norm(x, lw.ln_1)
    q = np.einsum("ntd,hde->nhte", h, a.read_q) + a.bias_q[None, :, None, :]
    k = np.einsum("ntd,hde->nhte", h, a.read_k) + a.bias_k[None, :, None, :]
    v = np.einsum("ntd,hde->nhte", h, a.read_v) + a.bias_v[None, :, None, :]
    attn = softmax(_logits(q, k, a), axis=-1)
    x = x + np.einsum("nhte,hed->ntd", attn @ v, a.write_o) + a.bias_o
    hidden = layer_norm(_activation(layer_norm(x, lw.ln_2) @ lw.mlp_in + lw.mlp_in_bias, lw.activation), lw.mlp_norm)
    m = hidden @ lw.mlp_out + lw.mlp_out_bias
    return x + (m * lw.layer_scale_mlp if lw.layer_scale_mlp is not None else m)


def encode_image(weights: VisionWeights, images: np.ndarray) -> np.ndarray:
    """Unnormalised image embeddings (N, E) from preprocessed images (N, 3, S, S), like open_clip encode_image."""
    x = patch_tokens(weights, np.asarray(images, dtype=np.float64))
    for lw in weights.layers:
        x = block(x, lw)
    if weights.ln_after_pool:
        pooled = x[:, 0] if weights.pool == "tok" else x[:, 1:].mean(axis=1)
        pooled = layer_norm(pooled, weights.ln_post)
    else:
        x = layer_norm(x, weights.ln_post)
        pooled = x[:, 0] if weights.pool == "tok" else x[:, 1:].mean(axis=1)
    return pooled @ weights.proj
