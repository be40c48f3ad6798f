"""The noise floor of a comparison: how much two checkpoints differ from storage rounding alone.

Storage precision is read from the values themselves (any loader, any file format): a checkpoint whose attention
factors are all exactly representable in bfloat16 was stored in bf16, else fp16, else fp32, else fp64. Its unit
roundoff u (bf16 2^-8, fp16 2^-11, fp32 2^-24, fp64 2^-53) bounds each stored entry's relative rounding error.

Rounding each entry x of the factors A (D, r) and B (r, D) of W = A B independently by a relative error drawn
uniformly in [-u, u] (variance u^2 / 3) changes W, to first order, by dA B + A dB with expected energy

    E ||dW||_F^2 = (2 u^2 / 3) sum_j ||A[:, j]||^2 ||B[j, :]||^2       (one term for dA B, one for A dB)

(the sum of the variances of independent terms). Both checkpoints may be rounded: u^2 = u_base^2 + u_tuned^2.
The head's *noise* is the square root; a head whose ||W_t - W_b||_F is at most ``noise_factor`` x noise is
unchanged, and singular values below ``noise_factor`` x noise are not resolved (Weyl: rounding moves each
singular value by at most ||dW||_2 <= ||dW||_F). Measured on a random-init model re-saved in fp16 and bf16 the
actual ||dW||_F is 0.70-0.74 x noise (relative changes 2.9e-4 and 2.3e-3: both above the default change_tol 1e-4,
which is why a floor from the dtype is needed), so the default factor 3 leaves a margin of 4x.
"""
from __future__ import annotations

import numpy as np

PRECISIONS = (("bf16", 2.0 ** -8), ("fp16", 2.0 ** -11), ("fp32", 2.0 ** -24))
FP64 = ("fp64", 2.0 ** -53)


def _representable(x: np.ndarray, name: str) -> bool:
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    return bool(torch.equal(t.to(dtype).to(torch.float64), t))


def storage_precision(weights, kind: str = "vo") -> tuple[str, float]:
    """(name, unit roundoff) of the coarsest float format holding every compared factor of ``weights`` exactly.

    weights: a VisionWeights; kind: "vo" (value and output factors), "qk" (query and key factors) or "mlp" (the
    MLP output weights and LayerScale). bf16 is tried before fp16 (it is coarser); a tower with no layers is fp64.
    """
    if kind == "mlp":
        arrays = [a for lw in weights.layers for a in (lw.mlp_out, lw.layer_scale_mlp) if a is not None]
    else:
        names = ("read_q", "read_k") if kind == "qk" else ("read_v", "write_o")
        arrays = [getattr(lw.attn, n) for lw in weights.layers for n in names]
    if not arrays:
        return FP64
    for name, u in PRECISIONS:
        if all(_representable(a, name) for a in arrays):
            return name, u
    return FP64


def rounding_scale(A: np.ndarray, B: np.ndarray) -> float:
    """sum_j ||A[:, j]||^2 ||B[j, :]||^2 for W = A B (A (D, r), B (r, D)); see the module doc."""
    return float(np.sum(np.sum(A * A, axis=0) * np.sum(B * B, axis=1)))


def rounding_noise(scale: float, u_base: float, u_tuned: float) -> float:
    """Expected ||W_t - W_b||_F from rounding alone: sqrt(2 (u_base^2 + u_tuned^2) / 3 x scale)."""
    return float(np.sqrt(2.0 * (u_base ** 2 + u_tuned ** 2) / 3.0 * scale))
