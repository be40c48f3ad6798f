"""Similarity measures between layers: linear CKA, response correlation, profile cosine, subspace overlap;
the relative-depth summary and rank correlations between matrices (METHODS.md section 10).

Every ``*_matrix`` function returns an (La, Lb) array for the layers of two models. With ``same=True`` (a model
compared with itself, La == Lb) the matrix is made exactly symmetric and its diagonal exactly 1: each measure is
1 for a layer with itself by definition, and rounding must not make self-similarity look like 0.99999.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

from ...core.errors import WeightscopeError
from ...core.linalg import principal_angles


def _finish(S: np.ndarray, same: bool) -> np.ndarray:
    S = np.clip(S, -1.0, 1.0)
    if same:
        if S.shape[0] != S.shape[1]:
            raise WeightscopeError(f"a model compared with itself needs a square matrix, got {S.shape}")
        S = (S + S.T) / 2
        np.fill_diagonal(S, 1.0)
    return S


def _centred_2d(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    return X - X.mean(axis=0)


def linear_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Linear CKA of two feature matrices on the same n inputs: X (n, p), Y (n, q) (extra axes are flattened).

    CKA = ||X^T Y||_F^2 / (||X^T X||_F ||Y^T Y||_F) on column-centred features (Kornblith et al. 2019, eq. via the
    feature-space form; METHODS.md section 10). In [0, 1]; invariant to orthogonal transforms and isotropic scaling
    of either side. A constant feature matrix has no variance: CKA 0 by convention.
    """
    if len(X) != len(Y):
        raise WeightscopeError(f"CKA needs the same inputs on both sides: {len(X)} vs {len(Y)} rows")
    Xc, Yc = _centred_2d(X), _centred_2d(Y)
    den = np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc)
    return float(np.linalg.norm(Xc.T @ Yc) ** 2 / den) if den > 0 else 0.0


def cka_matrix(feats_a: list[np.ndarray], feats_b: list[np.ndarray], same: bool = False) -> np.ndarray:
    """(La, Lb) linear CKA between every layer of A (list of (n, ...) arrays) and every layer of B."""
    if len({len(x) for x in [*feats_a, *feats_b]}) > 1:
        raise WeightscopeError("CKA needs the same inputs for every layer: feature arrays differ in length")
    # centre each layer and take its ||X^T X||_F once; the pairwise work is then one (p, q) product per pair
    A, B = [_centred_2d(x) for x in feats_a], [_centred_2d(y) for y in feats_b]
    na, nb = [np.linalg.norm(x.T @ x) for x in A], [np.linalg.norm(y.T @ y) for y in B]
    S = np.array([[np.linalg.norm(x.T @ y) ** 2 / (nx * ny) if nx * ny > 0 else 0.0 for y, ny in zip(B, nb)]
                  for x, nx in zip(A, na)])
    return _finish(S, same)


def correlation_matrix(resp_a: list[np.ndarray], resp_b: list[np.ndarray], same: bool = False) -> np.ndarray:
    """(La, Lb) Pearson correlation between responses of A's and B's layers to the same inputs.

    resp_*: one array per layer, all of one length after flattening (concept scores (n,) or concept maps
    (n, h, w) brought to one grid). A constant response correlates with nothing: 0 by convention.
    """
    def z(r):
        r = np.asarray(r, dtype=np.float64).ravel()
        r = r - r.mean()
        nrm = np.linalg.norm(r)
        return r / nrm if nrm > 0 else r

    Za, Zb = np.array([z(r) for r in resp_a]), np.array([z(r) for r in resp_b])
    if Za.shape[1] != Zb.shape[1]:
        raise WeightscopeError(f"responses cover different inputs: {Za.shape[1]} vs {Zb.shape[1]} values")
    return _finish(Za @ Zb.T, same)


def cosine_matrix(P: np.ndarray, Q: np.ndarray, same: bool = False) -> np.ndarray:
    """(La, Lb) cosine between rows of P (La, M) and Q (Lb, M) (concept profiles); an all-zero row gives 0."""
    def unit(X):
        X = np.asarray(X, dtype=np.float64)
        n = np.linalg.norm(X, axis=1, keepdims=True)
        return np.divide(X, n, out=np.zeros_like(X), where=n > 0)

    return _finish(unit(P) @ unit(Q).T, same)


def subspace_similarity(P: np.ndarray, Q: np.ndarray) -> float:
    """Mean squared cosine of the principal angles between the row spaces of P (p, E) and Q (q, E).

    1 when one space contains the other, 0 when they are orthogonal; ``linalg.principal_angles`` gives the angles.
    """
    theta = principal_angles(P, Q)
    return float(np.mean(np.cos(theta) ** 2)) if theta.size else 0.0


def subspace_matrix(spaces_a: list[np.ndarray], spaces_b: list[np.ndarray], same: bool = False) -> np.ndarray:
    """(La, Lb) :func:`subspace_similarity` between every layer subspace of A and of B."""
    return _finish(np.array([[subspace_similarity(p, q) for q in spaces_b] for p in spaces_a]), same)


def relative_depth(n_layers: int) -> np.ndarray:
    """Relative depth (i + 1) / L of layers i = 0 .. L-1 (the last layer is 1)."""
    return (np.arange(n_layers) + 1.0) / n_layers


def best_match_depths(S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each layer of A (rows of S (La, Lb)), its relative depth and that of its best-matching layer of B
    (argmax over the row, first on ties). Returns (depth_a (La,), depth_b (La,))."""
    S = np.asarray(S)
    return relative_depth(S.shape[0]), relative_depth(S.shape[1])[np.argmax(S, axis=1)]


def depth_alignment(pairs: list[np.ndarray]) -> dict:
    """The "similar relative depth" number over matrices of distinct model pairs (each (La, Lb), A != B).

    Best matches are taken in both directions (rows of S and of S^T); their points are pooled. Returns
    {"spearman": rank correlation between a layer's relative depth and its best match's, "mean_abs_diff": mean
    |depth_a - depth_b|, "n_points": count}. Spearman is NaN when either side is constant.
    """
    da, db = [], []
    for S in pairs:
        for M in (S, np.asarray(S).T):
            a, b = best_match_depths(M)
            da.append(a)
            db.append(b)
    if not da:
        raise WeightscopeError("depth alignment needs at least one pair of different models")
    a, b = np.concatenate(da), np.concatenate(db)
    rho = spearmanr(a, b).statistic if np.ptp(a) > 0 and np.ptp(b) > 0 else float("nan")
    return {"spearman": float(rho), "mean_abs_diff": float(np.mean(np.abs(a - b))), "n_points": int(a.size)}


def model_similarity(S: np.ndarray) -> float:
    """One number for two models from their layer matrix S (La, Lb): the mean of every layer's best match, taken
    from both sides and averaged (symmetric; 1 for a model with itself since the diagonal is 1)."""
    S = np.asarray(S)
    return float((S.max(axis=1).mean() + S.max(axis=0).mean()) / 2)


def off_diagonal_rank_correlation(S1: np.ndarray, S2: np.ndarray) -> float:
    """Spearman correlation between the strictly upper-triangular entries of two square layer matrices of one model
    (the diagonal is 1 by definition and would inflate agreement)."""
    S1, S2 = np.asarray(S1), np.asarray(S2)
    if S1.shape != S2.shape or S1.shape[0] != S1.shape[1]:
        raise WeightscopeError(f"rank correlation needs two square matrices of one shape, got {S1.shape} and {S2.shape}")
    iu = np.triu_indices(S1.shape[0], k=1)
    if iu[0].size < 3:
        raise WeightscopeError(f"rank correlation needs at least 3 layers, got {S1.shape[0]}")
    return float(spearmanr(S1[iu], S2[iu]).statistic)
