"""Map residual-stream directions into CLIP's joint image-text space (METHODS.md section 3)."""
from __future__ import annotations

import numpy as np

from ..core.errors import WeightscopeError
from ..core.linalg import normalize_rows
from ..core.weights import VisionWeights

MODES = ("linear", "affine")


def to_joint(
    weights: VisionWeights, directions: np.ndarray, mode: str = "linear", image_mean: np.ndarray | None = None
) -> np.ndarray:
    """Unit joint-space images (n, E) of residual directions (n, D) or a single direction (D,).

    mode "linear" (default): ``normalize((gamma_post * (v - mean(v))) @ proj)``; ln_post's per-token scale is a
    positive scalar, so it does not change a direction. mode "affine": the full ln_post, shift included, as in
    SITH's code (the shift adds an offset unrelated to v). image_mean (E,): the mean normalised image embedding;
    when given it is subtracted and the result renormalised (modality-gap correction); it must be finite
    (WeightscopeError otherwise).
    """
    if mode not in MODES:
        raise WeightscopeError(f"unknown joint-space map {mode!r}: expected one of {', '.join(MODES)}")
    V = np.asarray(directions, dtype=np.float64)
    single = V.ndim == 1
    V = np.atleast_2d(V)
    if V.shape[1] != weights.width:
        raise WeightscopeError(f"directions have width {V.shape[1]}, the model's residual stream has {weights.width}")
    ln = weights.ln_post
    centred = V - V.mean(axis=1, keepdims=True)
    if mode == "affine":
        centred = centred / np.sqrt(centred.var(axis=1, keepdims=True) + ln.eps)
    Z = (centred * ln.scale) @ weights.proj
    if mode == "affine":
        Z = Z + ln.shift @ weights.proj
    Z = normalize_rows(Z)
    if image_mean is not None:
        mean = np.asarray(image_mean, dtype=np.float64).ravel()
        if mean.shape != (weights.embed_dim,):
            raise WeightscopeError(
                f"image_mean has shape {mean.shape}, expected ({weights.embed_dim},) for this model's joint space"
            )
        bad = int(np.count_nonzero(~np.isfinite(mean)))
        if bad:  # else every corrected direction becomes NaN and the solvers see "zero-norm signals"
            raise WeightscopeError(f"image_mean has {bad} non-finite (NaN or inf) entries of {mean.size}; "
                                   "recompute it from readable images")
        Z = normalize_rows(Z - mean)
    return Z[0] if single else Z
