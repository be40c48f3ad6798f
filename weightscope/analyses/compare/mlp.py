"""The MLP of each block as one comparable unit (kind "mlp"): the SVD of its write matrix.

A block's MLP adds ``act(ln_2(x) W_in + b) W_out`` to the residual stream. The nonlinearity sits between W_in and
W_out, so there is no single linear map to decompose; what is linear is the write W (F, D): ``W_out`` times the
LayerScale when there is one (``neurons.neuron_vectors``). Its thin SVD ``W = read.T diag(s) write`` gives
directions in neuron space (read, (r, F): which mixture of neurons) and in the residual stream (write, (r, D):
what they add), r = min(F, D). The neuron basis is the same in both checkpoints (the nonlinearity acts per
neuron), so the VO machinery applies unchanged: each layer's MLP is the "head" (layer, 0), and matching,
reweighted / rotated verdicts, energy split, noise floor and intruders are :func:`matching.compare_heads`.

Rounding: W is stored (not a product of two stored factors), so a relative error u per entry gives
``E ||dW||_F^2 = u^2 / 3 ||W||_F^2`` per checkpoint, twice that with a stored LayerScale; ``rounding_scale``
returns the scale that :func:`noise.rounding_noise` (which counts two factors) turns into that figure. The
rank cut is Weyl's bound as in :mod:`weightscope.decompose`, with ``||dW||_2 <= eps ||W||_F`` per rounded factor.
"""
from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from ...decompose.head_svd import HeadSVD, _select
from ...core.errors import WeightscopeError
from ...core.linalg import degenerate_groups, factored_svd, numerical_rank
from ..neurons import neuron_vectors
from ...core.weights import VisionWeights


def mlp_write(weights: VisionWeights, layer: int, center_write: bool = False) -> np.ndarray:
    """(F, D) write matrix of block ``layer``'s MLP (LayerScale included); center_write: rows' means removed."""
    W, _ = neuron_vectors(weights, layer, fold_ln=False)
    return W - W.mean(axis=1, keepdims=True) if center_write else W


def _factors(weights: VisionWeights, layer: int) -> int:
    """How many rounded stored factors make up the write matrix (W_out, and LayerScale when present)."""
    return 1 if weights.layers[layer].layer_scale_mlp is None else 2


def decompose_mlp(weights: VisionWeights, layer: int, center_write: bool = False, rtol: float = 1e-3) -> HeadSVD:
    """Thin SVD of block ``layer``'s MLP write matrix as a HeadSVD keyed (layer, 0), kind "mlp" (module doc)."""
    W = mlp_write(weights, layer, center_write)
    U, s, Vh = factored_svd(W, np.eye(W.shape[1]))     # the QR of W is the thin SVD's cost; no D x D product
    floor = _factors(weights, layer) * weights.eps * np.linalg.norm(W)
    rank = numerical_rank(s, rtol=floor / s[0]) if s.size and s[0] > 0 else 0
    return HeadSVD(layer=layer, head=0, kind="mlp", read=np.ascontiguousarray(U.T), s=s, write=Vh,
                   groups=degenerate_groups(s[:rank], rtol), rank=rank)


def decompose_mlps(weights: VisionWeights, layers=None, heads=None, fold_ln: bool = False,
                   center_write: bool = False, rtol: float = 1e-3, progress: bool = True) -> dict:
    """{(layer, 0): HeadSVD} for the chosen layers (default all). heads: must be None (an MLP has no heads);
    fold_ln: no effect (ln_2 acts on the read side, the write matrix does not see it). Raises WeightscopeError."""
    if heads is not None:
        raise WeightscopeError("heads do not apply to the MLP comparison (each layer's MLP is one unit): "
                               "leave --heads out, or compare 'vo' / 'qk'")
    chosen = _select(layers, weights.n_layers, "layer")
    with threadpool_limits(limits=1, user_api="blas"):
        return {(l, 0): decompose_mlp(weights, l, center_write, rtol)
                for l in tqdm(chosen, desc="MLP SVD", unit="layer", disable=not progress)}


def rounding_scale(weights: VisionWeights, layer: int, center_write: bool = False) -> float:
    """The ``noise.rounding_scale`` equivalent for block ``layer``'s write matrix (module doc): k/2 ||W||_F^2
    for k rounded stored factors, since ``noise.rounding_noise`` counts 2 per scale unit."""
    W = mlp_write(weights, layer, center_write)
    return float(_factors(weights, layer) / 2.0 * np.sum(W * W))
