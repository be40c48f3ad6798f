"""The neutral, framework-free description of a CLIP vision tower's weights.

Adapters (``weightscope.models.adapters``) fill these from a concrete model; everything downstream
(decomposition, joint-space map, edits, comparison) reads only these arrays and never a parameter name.

Conventions (row vectors, as in METHODS.md): residual width D, heads H, head width dh = D / H,
joint width E, MLP width F. A token x (D,) contributes ``ln_1(x) @ read_v[h] @ write_o[h]`` through head h
(times its attention weight): ``write_o`` already holds everything that scales the head's output on its way
into the residual stream (per-head scales, LayerScale), so it is the map the head really adds. All arrays are numpy float64 copies: editing them never touches the model they came from.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class LayerNormWeights:
    """``y = (x - mean(x)) / sqrt(var(x) + eps) * scale + shift``; scale, shift: (D,)."""

    scale: np.ndarray
    shift: np.ndarray
    eps: float


@dataclass
class RotaryWeights:
    """Rotary position embedding as timm applies it: ``q' = q * cos + rot(q) * sin`` on the patch tokens.

    sin, cos: (P, dh) per patch token (row-major grid); n_prefix: leading tokens (class token) left unrotated;
    half: rot pairs coordinate i with i + dh/2 ("rotate half") instead of 2i with 2i + 1 (interleaved).
    """

    sin: np.ndarray
    cos: np.ndarray
    n_prefix: int
    half: bool = False


class _PerHead:
    """Shape facts of per-head factors: ``read_v`` is (H, D, dh)."""

    @property
    def n_heads(self) -> int:
        return self.read_v.shape[0]

    @property
    def head_width(self) -> int:
        return self.read_v.shape[2]


@dataclass
class AttentionWeights(_PerHead):
    """Per-head factors of one multi-head attention block.

    read_q, read_k, read_v: (H, D, dh)  -- x @ read_v[h] is head h's value (A_h in METHODS.md)
    write_o:                (H, dh, D)  -- value @ write_o[h] is what head h adds to the residual stream (B_h),
                                           every output scale included
    bias_q, bias_k, bias_v: (H, dh)
    bias_o:                 (D,)        -- the constant the block adds to the residual stream, scales included
    norm_q, norm_k: LayerNorms over dh applied to every head's queries / keys before the logits (QK-norm,
        Dehghani et al. 2023, "Scaling Vision Transformers to 22B Parameters", s. 2), or None.
    inner_norm_eps: set when a LayerNorm acts on the concatenated head outputs o (width H dh) before the output
        projection (EVA02's ``attn.norm``, open_clip's ``scale_attn_inner``; METHODS.md s. 12). Its centring and
        gain are linear and already inside ``write_o`` / ``bias_o``; what is left is one positive scalar per
        token, shared by all heads: head outputs are divided by ``sqrt(var(o) + inner_norm_eps)``. A head's write
        map is then exact in direction and comparable across the heads of a layer.
    rope: rotary position embedding of queries and keys (RoFormer, Su et al. 2021, s. 3.4), or None. It changes
        only the attention pattern, never the value-output map.
    logit_scale: (H,) or None. When set, the logits are cosine similarities of queries and keys times
        ``logit_scale[h]`` (scaled cosine attention, Liu et al. 2022, "Swin Transformer V2", s. 3.2) instead
        of ``q k^T / sqrt(dh)``. Both change only the attention pattern, never the value-output map A B.
    """

    read_q: np.ndarray
    read_k: np.ndarray
    read_v: np.ndarray
    write_o: np.ndarray
    bias_q: np.ndarray
    bias_k: np.ndarray
    bias_v: np.ndarray
    bias_o: np.ndarray
    norm_q: LayerNormWeights | None = None
    norm_k: LayerNormWeights | None = None
    logit_scale: np.ndarray | None = None
    inner_norm_eps: float | None = None
    rope: "RotaryWeights | None" = None

    @property
    def dot_product_logits(self) -> bool:
        """True when the logits are the bilinear form ``(x read_q + b_q)(y read_k + b_k)^T / sqrt(dh)``."""
        return self.norm_q is None and self.norm_k is None and self.logit_scale is None and self.rope is None


@dataclass
class LayerWeights:
    """One residual block: x += attn(ln_1(x)); x += ls_2 * mlp(ln_2(x)).

    The attention's LayerScale is folded into ``attn.write_o`` and ``attn.bias_o`` (see AttentionWeights).
    mlp: ``mlp_norm(act(ln_2(x) @ mlp_in + mlp_in_bias)) @ mlp_out + mlp_out_bias`` with mlp_in: (D, F),
    mlp_in_bias: (F,), mlp_out: (F, D), mlp_out_bias: (D,); mlp_norm: LayerNorm over F (NormFormer,
    Shleifer et al. 2021, s. 2) or None. layer_scale_mlp: (D,) or None when the model has no LayerScale.
    activation: "gelu", "quick_gelu" or "silu".
    mlp_gate (D, F), mlp_gate_bias (F,): set for gated MLPs (SwiGLU, Shazeer 2020, "GLU Variants Improve
    Transformer", s. 2): the hidden layer is ``act(ln_2(x) @ mlp_gate + mlp_gate_bias) * (ln_2(x) @ mlp_in +
    mlp_in_bias)`` (activation on the gate only); neuron i reads with two vectors (columns i of mlp_gate and
    mlp_in) and writes with one (row i of mlp_out).
    """

    ln_1: LayerNormWeights
    attn: AttentionWeights
    ln_2: LayerNormWeights
    mlp_in: np.ndarray
    mlp_in_bias: np.ndarray
    mlp_out: np.ndarray
    mlp_out_bias: np.ndarray
    activation: str
    layer_scale_mlp: np.ndarray | None = None
    mlp_norm: LayerNormWeights | None = None
    mlp_gate: np.ndarray | None = None
    mlp_gate_bias: np.ndarray | None = None


@dataclass
class StemWeights:
    """How image pixels become the first residual stream (used by the reference forward pass).

    patch_weight: (D, 3, p, p) patch-embedding convolution (stride p, no bias); class_embedding: (D,), or None
    for towers without a class token (SigLIP); positional_embedding: (T, D) with T = n_prefix + number of
    patches (a patch-embedding bias is folded into its patch rows); ln_pre: LayerNorm or None.
    """

    patch_weight: np.ndarray
    class_embedding: np.ndarray | None
    positional_embedding: np.ndarray
    ln_pre: LayerNormWeights | None

    @property
    def n_prefix(self) -> int:
        """Tokens before the patch tokens: 1 (the class token) or 0."""
        return 0 if self.class_embedding is None else 1


@dataclass
class AttentionPoolWeights(_PerHead):
    """An attention-pool (MAP) head (timm ``AttentionPoolLatent``; Zhai et al. 2023, SigLIP, s. 3; Lee et al. 2019,
    "Set Transformer", s. 3.2): learned latent queries attend over the final tokens (after ``ln_post``), then
    ``proj``, then ``x + mlp(norm(x))``; the output is the first latent (L = 1 for SigLIP) or the latents' mean.

    latent: (L, D); read_q: (H, D, dh), bias_q: (H, dh) -- the queries are ``latent @ read_q[h] + bias_q[h]``;
    read_k, read_v: (H, D, dh), bias_k, bias_v: (H, dh); write_o: (H, dh, D) (pooling head h's slice of proj),
    bias_o: (D,); norm: LayerNorm before the MLP; mlp_in (D, F), mlp_in_bias (F,), mlp_out (F, D),
    mlp_out_bias (D,), activation as in LayerWeights; pool: "token" or "avg" over the latents.
    proj_out: (D, E) linear head after the pool (open_clip ``timm_proj: linear``) or None (the pooled vector is
    the joint space, SigLIP). Pooling head h carries every token through the fixed map ``read_v[h] @ write_o[h]``
    (exact); the MLP is nonlinear.
    """

    latent: np.ndarray
    read_q: np.ndarray
    bias_q: np.ndarray
    read_k: np.ndarray
    bias_k: np.ndarray
    read_v: np.ndarray
    bias_v: np.ndarray
    write_o: np.ndarray
    bias_o: np.ndarray
    norm: LayerNormWeights | None
    mlp_in: np.ndarray
    mlp_in_bias: np.ndarray
    mlp_out: np.ndarray
    mlp_out_bias: np.ndarray
    activation: str
    pool: str = "token"
    proj_out: np.ndarray | None = None


@dataclass
class VisionWeights:
    """The whole vision tower as seen by weightscope.

    ln_post: the final LayerNorm; proj: (D, E) map from the residual stream to the joint space.
    pool: "tok" (class token), "avg" (mean of patch tokens) or "map" (the attention-pool head ``attn_pool``);
    ln_after_pool: ln_post applied after pooling. proj_bias: (E,) constant the joint projection adds, or None.
    attn_pool: the attention-pool head of "map" towers. There the output is not linear in the residual stream, so
    ``proj`` is a linearisation (all heads' value-output maps summed, the pool MLP's Jacobian; see
    ``meta["joint_map"]``, which records how it was built and its measured error); the exact per-head maps are in
    :mod:`weightscope.decompose.pooling`.
    family: which adapter produced this (for messages and reports).
    layers: one entry per residual block; None for a block left out by ``describe_model(model, layers=...)``
        (a partial description keeps memory low when only some layers are analysed).
    eps: machine epsilon of the precision the weights are stored in (float32: 1.19e-7); decompositions use
        it to tell directions from rounding noise.
    """

    family: str
    stem: StemWeights
    layers: list[LayerWeights]
    ln_post: LayerNormWeights
    proj: np.ndarray
    pool: str = "tok"
    ln_after_pool: bool = False
    eps: float = float(np.finfo(np.float32).eps)
    meta: dict = field(default_factory=dict)
    proj_bias: np.ndarray | None = None
    attn_pool: AttentionPoolWeights | None = None

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def width(self) -> int:
        return self.proj.shape[0]

    @property
    def embed_dim(self) -> int:
        return self.proj.shape[1]

    @property
    def n_heads(self) -> int:
        return next(l for l in self.layers if l is not None).attn.n_heads
