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
class AttentionWeights:
    """Per-head factors of one multi-head attention block.

    read_q, read_k, read_v: (H, D, dh)  -- x @ read_v[h] is head h's value (A_h in METHODS.md)
    write_o:                (H, dh, D)  -- value @ write_o[h] is what head h adds to the residual stream (B_h),
                                           every output scale included
    bias_q, bias_k, bias_v: (H, dh)
    bias_o:                 (D,)        -- the constant the block adds to the residual stream, scales included
    norm_q, norm_k: LayerNorms over dh applied to every head's queries / keys before the logits (QK-norm,
        Dehghani et al. 2023, "Scaling Vision Transformers to 22B Parameters", s. 2), or None.
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

    @property
    def dot_product_logits(self) -> bool:
        """True when the logits are the bilinear form ``(x read_q + b_q)(y read_k + b_k)^T / sqrt(dh)``."""
        return self.norm_q is None and self.norm_k is None and self.logit_scale is None

    @property
    def n_heads(self) -> int:
        return self.read_v.shape[0]

    @property
    def head_width(self) -> int:
        return self.read_v.shape[2]


@dataclass
class LayerWeights:
    """One residual block: x += attn(ln_1(x)); x += ls_2 * mlp(ln_2(x)).

    The attention's LayerScale is folded into ``attn.write_o`` and ``attn.bias_o`` (see AttentionWeights).
    mlp: ``mlp_norm(act(ln_2(x) @ mlp_in + mlp_in_bias)) @ mlp_out + mlp_out_bias`` with mlp_in: (D, F),
    mlp_in_bias: (F,), mlp_out: (F, D), mlp_out_bias: (D,); mlp_norm: LayerNorm over F (NormFormer,
    Shleifer et al. 2021, s. 2) or None. layer_scale_mlp: (D,) or None when the model has no LayerScale.
    activation: "gelu" or "quick_gelu".
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


@dataclass
class StemWeights:
    """How image pixels become the first residual stream (used by the reference forward pass).

    patch_weight: (D, 3, p, p) patch-embedding convolution (stride p, no bias); class_embedding: (D,);
    positional_embedding: (T, D) with T = 1 + number of patches; ln_pre: LayerNorm or None.
    """

    patch_weight: np.ndarray
    class_embedding: np.ndarray
    positional_embedding: np.ndarray
    ln_pre: LayerNormWeights | None


@dataclass
class VisionWeights:
    """The whole vision tower as seen by weightscope.

    ln_post: the final LayerNorm; proj: (D, E) map from the residual stream to the joint space.
    pool: "tok" (class token) or "avg" (mean of patch tokens); ln_after_pool: ln_post applied after pooling.
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
