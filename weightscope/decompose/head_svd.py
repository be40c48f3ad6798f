"""Step 2 of the pipeline: per-head factored SVD of the value-output (and query-key) matrices.

For head h of layer l, W_VO = A B with A = read_v[h] (D, dh) and B = write_o[h] (dh, D). Its thin SVD comes from
the factors (``linalg.factored_svd``); the D x D matrix is never formed.

Directions at rounding level are no directions: a singular value of A B below ``2 eps |A|_F |B|_F`` (eps: the
weights' storage precision) can be produced by rounding the stored factors alone (Weyl's inequality with
``|dA B + A dB|_2 <= 2 eps |A|_F |B|_F``), so its vectors mean nothing. ``HeadSVD.rank`` counts the others; a
head with rank 0 writes nothing (a pruned head).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from ..core.compute import Compute
from ..core.errors import WeightscopeError
from ..core.linalg import degenerate_groups, factored_svd, factored_svd_batched, numerical_rank
from ..core.weights import VisionWeights

KINDS = ("vo", "qk")


@dataclass
class HeadSVD:
    """Thin SVD of one head's matrix: ``W = read.T @ diag(s) @ write``.

    read: (r, D) left singular vectors as rows (the input directions the head reads, or queries for "qk");
    s: (r,) singular values, descending; write: (r, D) right singular vectors as rows (what the head writes,
    or keys for "qk"); groups: index lists of near-degenerate singular values (only their span is defined).
    rank: how many leading directions stand above the rounding level of the weights (module docstring); only
    they are directions, the rest of ``s`` is kept for spectra. Default: ``linalg.numerical_rank`` of s.
    """

    layer: int
    head: int
    kind: str
    read: np.ndarray
    s: np.ndarray
    write: np.ndarray
    groups: list[list[int]] = field(default_factory=list)
    rank: int | None = None

    def __post_init__(self):
        if self.rank is None:
            self.rank = numerical_rank(self.s, shape=(self.read.shape[1], self.write.shape[1]))

    @property
    def dead(self) -> bool:
        """True when the head has no direction above rounding level (it writes, or reads, nothing)."""
        return self.rank == 0

    def matrix(self) -> np.ndarray:
        """The dense D x D matrix (for tests and small models only)."""
        return (self.read.T * self.s) @ self.write


def check_index(value: int, size: int, what: str) -> int:
    """Validate a layer/head index (negative counts from the end); return it as a non-negative int."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise WeightscopeError(f"{what} index must be an integer, got {value!r}")
    if not -size <= value < size:
        raise WeightscopeError(f"{what} {value} is out of range: the model has {size} {what}s (0-{size - 1})")
    return int(value) % size


def head_factors(
    weights: VisionWeights, layer: int, head: int, kind: str = "vo", fold_ln: bool = False, center_write: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The factors (A (D, dh), B (dh, D)) with ``W = A @ B`` for one head.

    fold_ln: multiply ln_1's scale into the read side(s) (A <- diag(gamma_1) A), so directions refer to the
    normalised-but-unscaled input. center_write: remove each write row's mean (ln_post cannot see it; "vo" only).
    """
    if kind not in KINDS:
        raise WeightscopeError(f"unknown matrix kind {kind!r}: expected one of {', '.join(KINDS)}")
    layer = check_index(layer, weights.n_layers, "layer")
    lw = weights.layers[layer]
    head = check_index(head, lw.attn.n_heads, "head")
    if kind == "vo":
        A, B = lw.attn.read_v[head], lw.attn.write_o[head]
    elif lw.attn.rope is not None:
        raise WeightscopeError(
            f"layer {layer} rotates queries and keys by position (RoPE), so its logits are a different bilinear form "
            "for every relative offset between two patches: the single 'qk' matrix does not describe it (the 'vo' "
            "decomposition does)")
    elif not lw.attn.dot_product_logits:
        raise WeightscopeError(
            f"layer {layer} normalises queries and keys (QK-norm or scaled cosine attention), so its logits are not "
            "the bilinear form x W_QK y^T: the 'qk' decomposition does not describe it (the 'vo' one does)")
    else:
        A, B = lw.attn.read_q[head], lw.attn.read_k[head].T
    if fold_ln and lw.ln_1 is not None:
        A = lw.ln_1.scale[:, None] * A
        if kind == "qk":
            B = B * lw.ln_1.scale[None, :]
    if center_write and kind == "vo":
        B = B - B.mean(axis=1, keepdims=True)
    return A, B


def decompose_head(
    weights: VisionWeights,
    layer: int,
    head: int,
    kind: str = "vo",
    fold_ln: bool = False,
    center_write: bool = False,
    rtol: float = 1e-3,
) -> HeadSVD:
    """Factored SVD of one head's value-output ("vo") or query-key ("qk") matrix; see :func:`head_factors`.

    rtol: singular values closer than ``rtol * s[0]`` are reported together in ``groups`` (directions only).
    Raises WeightscopeError for bad indices or kind, and for "qk" on layers whose logits are not bilinear.
    """
    A, B = head_factors(weights, layer, head, kind, fold_ln, center_write)
    return _head_svd(weights, layer, head, kind, A, B, factored_svd(A, B), rtol)


def _head_svd(weights: VisionWeights, layer: int, head: int, kind: str, A, B, usv, rtol: float) -> HeadSVD:
    """The HeadSVD of one head from its factors and their SVD (U, s, Vh)."""
    U, s, Vh = usv
    floor = 2.0 * weights.eps * np.linalg.norm(A) * np.linalg.norm(B)  # Frobenius norms: no SVD needed
    rank = numerical_rank(s, rtol=floor / s[0]) if s.size and s[0] > 0 else 0
    return HeadSVD(
        layer=check_index(layer, weights.n_layers, "layer"),
        head=check_index(head, weights.n_heads, "head"),
        kind=kind,
        read=np.ascontiguousarray(U.T),
        s=s,
        write=Vh,
        groups=degenerate_groups(s[:rank], rtol),
        rank=rank,
    )


def _select(indices, size: int, what: str) -> list[int]:
    if indices is None:
        return list(range(size))
    if isinstance(indices, (int, np.integer)):
        indices = [indices]
    return sorted({check_index(i, size, what) for i in indices})


def decompose_model(
    weights: VisionWeights,
    layers=None,
    heads=None,
    kind: str = "vo",
    fold_ln: bool = False,
    center_write: bool = False,
    rtol: float = 1e-3,
    progress: bool = True,
    device=None,
) -> dict[tuple[int, int], HeadSVD]:
    """Decompose every chosen head (default: all layers, all heads); keys are (layer, head) in order.

    device: None (default) decomposes head by head in numpy (``factored_svd``); a torch device ("cuda", "mps",
    "cpu") decomposes all chosen heads in one batched call there (``factored_svd_batched``: QR of the factors in
    float64, the r x r core in float64 where the device has it, float32 on MPS), equal to the numpy path to
    rounding. Raises WeightscopeError for an unknown device or one torch does not see. Sources: SITH (seed 001,
    section 3) and METHODS.md section 14.
    """
    chosen_layers = _select(layers, weights.n_layers, "layer")
    chosen_heads = _select(heads, weights.n_heads, "head")
    pairs = [(l, h) for l in chosen_layers for h in chosen_heads]
    if device is not None and pairs:
        device = Compute(device=str(device)).torch_device()   # one-line WeightscopeError for a bad or absent device
        factors = [head_factors(weights, l, h, kind, fold_ln, center_write) for l, h in pairs]
        U, sv, Vh = factored_svd_batched(np.stack([a for a, _ in factors]), np.stack([b for _, b in factors]),
                                         device=device)
        return {(l, h): _head_svd(weights, l, h, kind, a, b, (U[i], sv[i], Vh[i]), rtol)
                for i, ((l, h), (a, b)) in enumerate(zip(pairs, factors))}
    # Per-head problems are small (D x dh): threaded BLAS only adds synchronisation, and under load it spins
    # badly (measured 25x slower on 2 busy cores), so run them single-threaded.
    with threadpool_limits(limits=1, user_api="blas"):
        return {
            (l, h): decompose_head(weights, l, h, kind, fold_ln, center_write, rtol)
            for l, h in tqdm(pairs, desc=f"{kind.upper()} SVD", unit="head", disable=not progress)
        }
