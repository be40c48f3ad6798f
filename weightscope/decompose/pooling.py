"""The attention-pool (MAP) head of SigLIP-style towers, per pooling head, in weight space (METHODS.md s. 12).

A latent query attends over the final tokens (after ``ln_post``); pooling head h adds
``sum_t a_{h,t} (ln_post(x_t) @ read_v[h] + bias_v[h]) @ write_o[h]`` with ``a_{h,.} >= 0`` summing to 1. So every
token goes through the same fixed linear map ``M_h = diag(gamma_post) read_v[h] write_o[h]`` (on the centred token,
up to ln_post's one positive scalar per token): its SVD and the images of residual directions through it are exact.
The query is a constant, so head h's logit for token t is ``ln_post(x_t) . k_h + const``, with the key direction
``k_h = diag(gamma_post) read_k[h] (latent read_q[h] + bias_q[h]) / sqrt(dh)`` centred (ln_post removes the mean):
what pooling head h looks for, data-free. The pool's MLP (``x + mlp(norm(x))``) is nonlinear and not part of
these maps; the description's single joint map ``VisionWeights.proj`` is a labelled linearisation of it.
"""
from __future__ import annotations

import numpy as np

from ..core.errors import WeightscopeError
from ..core.linalg import degenerate_groups, factored_svd, numerical_rank
from ..core.weights import VisionWeights
from .head_svd import HeadSVD, check_index

#: HeadSVD.kind of a pooling head's value-output map
KIND = "pool_vo"


def _pool(weights: VisionWeights):
    if weights.attn_pool is None:
        raise WeightscopeError(f"{weights.family} tower pools with {weights.pool!r}, not an attention-pool (MAP) "
                               "head; pooling heads exist only in SigLIP-style towers")
    return weights.attn_pool


def pool_head_factors(weights: VisionWeights, head: int) -> tuple[np.ndarray, np.ndarray]:
    """(A (D, dh), B (dh, D)) with ``M_h = A @ B``: residual direction (before ln_post) -> what pooling head ``head``
    adds to the pooled vector (before the pool MLP) per unit of attention. A = diag(gamma_post) read_v[h] with its
    rows centred (ln_post removes each token's mean), B = write_o[h]."""
    ap = _pool(weights)
    h = check_index(head, ap.n_heads, "pooling head")
    A = weights.ln_post.scale[:, None] * ap.read_v[h]
    return A - A.mean(axis=0, keepdims=True), ap.write_o[h]


def decompose_pool_head(weights: VisionWeights, head: int, rtol: float = 1e-3) -> HeadSVD:
    """Factored SVD of pooling head ``head``'s map ``M_h`` (see :func:`pool_head_factors`), as a HeadSVD with
    ``layer = n_layers`` (the pool sits after the last block) and ``kind = "pool_vo"``; rank and groups as in
    :func:`weightscope.decompose.head_svd.decompose_head`."""
    A, B = pool_head_factors(weights, head)
    U, s, Vh = factored_svd(A, B)
    floor = 2.0 * weights.eps * np.linalg.norm(A) * np.linalg.norm(B)
    rank = numerical_rank(s, rtol=floor / s[0]) if s.size and s[0] > 0 else 0
    return HeadSVD(layer=weights.n_layers, head=check_index(head, weights.attn_pool.n_heads, "pooling head"),
                   kind=KIND, read=np.ascontiguousarray(U.T), s=s, write=Vh,
                   groups=degenerate_groups(s[:rank], rtol), rank=rank)


def pool_key_directions(weights: VisionWeights) -> np.ndarray:
    """Key directions (L, H, D) of the pooling heads for each latent query: token t's logit under head h is
    ``(x_t - mean(x_t)) / sigma_t . k[l, h] + c[l, h]`` (sigma_t: ln_post's per-token scale; c: a per-head constant
    that the softmax ignores). Units: logit per unit of normalised token."""
    ap = _pool(weights)
    q = np.einsum("ld,hde->lhe", ap.latent, ap.read_q) + ap.bias_q[None]
    k = np.einsum("hde,lhe->lhd", ap.read_k, q) * weights.ln_post.scale / np.sqrt(ap.head_width)
    return k - k.mean(axis=-1, keepdims=True)


def pool_logits(weights: VisionWeights, tokens: np.ndarray) -> np.ndarray:
    """Logits (N, L, H, T) of the pooling heads over final tokens (N, T, D) (residual stream before ln_post),
    computed from the key directions alone, up to the per-head constant (softmax over T gives the attention)."""
    x = np.asarray(tokens, dtype=np.float64)
    xc = x - x.mean(axis=-1, keepdims=True)
    sigma = np.sqrt((xc ** 2).mean(axis=-1, keepdims=True) + weights.ln_post.eps)
    return np.einsum("ntd,lhd->nlht", xc / sigma, pool_key_directions(weights))


def pool_head_image(weights: VisionWeights, head: int, directions: np.ndarray) -> np.ndarray:
    """Images (n, D_out) of residual directions (n, D) through pooling head ``head``'s exact map ``M_h`` (before the
    pool MLP; through ``proj_out`` when the tower has one). Not normalised."""
    A, B = pool_head_factors(weights, head)
    Z = (np.atleast_2d(np.asarray(directions, dtype=np.float64)) @ A) @ B
    ap = weights.attn_pool
    return Z @ ap.proj_out if ap.proj_out is not None else Z
