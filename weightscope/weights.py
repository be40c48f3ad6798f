"""The neutral, framework-free description of a CLIP vision tower's weights.

Adapters (``weightscope.adapters``) fill these from a concrete model; everything downstream
(decomposition, joint-space map, edits, comparison) reads only these arrays and never a parameter name.

Conventions (row vectors, as in METHODS.md): residual width D, heads H, head width dh = D / H,
joint width E, MLP width F. A token x (D,) contributes ``ln_1(x) @ read_v[h] @ write_o[h]`` through head h.
All arrays are numpy float64 copies: editing them never touches the model they came from.
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
    write_o:                (H, dh, D)  -- value @ write_o[h] is what head h adds to the residual (B_h)
    bias_q, bias_k, bias_v: (H, dh)
    bias_o:                 (D,)
    """

    read_q: np.ndarray
    read_k: np.ndarray
    read_v: np.ndarray
    write_o: np.ndarray
    bias_q: np.ndarray
    bias_k: np.ndarray
    bias_v: np.ndarray
    bias_o: np.ndarray

    @property
    def n_heads(self) -> int:
        return self.read_v.shape[0]

    @property
    def head_width(self) -> int:
        return self.read_v.shape[2]


@dataclass
class LayerWeights:
    """One residual block: x += ls_1 * attn(ln_1(x)); x += ls_2 * mlp(ln_2(x)).

    mlp_in: (D, F), mlp_in_bias: (F,), mlp_out: (F, D), mlp_out_bias: (D,).
    layer_scale_attn / layer_scale_mlp: (D,) or None when the model has no LayerScale.
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
    layer_scale_attn: np.ndarray | None = None
    layer_scale_mlp: np.ndarray | None = None


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
    """

    family: str
    stem: StemWeights
    layers: list[LayerWeights]
    ln_post: LayerNormWeights
    proj: np.ndarray
    pool: str = "tok"
    ln_after_pool: bool = False
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
        return self.layers[0].attn.n_heads
