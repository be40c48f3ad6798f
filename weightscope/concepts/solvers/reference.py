"""Plain numpy implementation of every solver, one signal at a time, written for clarity not speed.

It is the yardstick for the Numba solvers in tests: same signature, same normalisation and stopping
rules (from ``_common``), but direct formulas everywhere -- full correlations ``D @ r`` at every step,
least squares and NNLS re-solved from scratch with ``np.linalg.solve`` on the support's Gram matrix.
All arithmetic is float64 (a float32 dictionary is upcast after normalisation).
"""
from __future__ import annotations

import numpy as np

from weightscope.concepts.solvers._common import (
    DEPENDENT_TOL, KKT_TOL, SELECT_TOL, Explanation, prepare,
)


def nnls_reference(G: np.ndarray, b: np.ndarray, max_iter: int | None = None) -> np.ndarray:
    """min_c ||x - c A||^2 s.t. c >= 0, given the Gram matrix G = A A^T (n, n) and b = A x (n,).

    Lawson-Hanson active set from c = 0, each sub-problem solved from scratch. A variable whose
    column is (numerically) dependent on the passive ones is left at zero. Returns c (n,).
    """
    n = b.shape[0]
    c = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    blocked = np.zeros(n, dtype=bool)
    max_iter = 3 * n + 10 if max_iter is None else max_iter
    it = 0
    while True:
        w = b - G @ c
        w[passive | blocked] = -np.inf
        j = int(np.argmax(w)) if n else 0
        if n == 0 or w[j] <= KKT_TOL:
            break
        P = np.flatnonzero(passive)
        # Squared distance of column j to the span of the passive columns.
        if P.size:
            sol = np.linalg.solve(G[np.ix_(P, P)], G[P, j])
            dist2 = G[j, j] - G[j, P] @ sol
        else:
            dist2 = G[j, j]
        if dist2 <= DEPENDENT_TOL:
            blocked[j] = True
            continue
        passive[j] = True
        first = True
        while True:
            it += 1
            P = np.flatnonzero(passive)
            z = np.zeros(n)
            z[P] = np.linalg.solve(G[np.ix_(P, P)], b[P])
            if (z[P] > 0).all() or it > max_iter:
                c = z if (z[P] > 0).all() else np.maximum(z, 0)
                break
            if first and z[j] <= 0:
                # j only looked useful through rounding: keep it out.
                passive[j] = False
                blocked[j] = True
                break
            first = False
            neg = P[z[P] <= 0]
            alphas = c[neg] / (c[neg] - z[neg])
            q = neg[int(np.argmin(alphas))]
            alpha = alphas.min()
            c = c + alpha * (z - c)
            c[q] = 0.0
            passive &= c > 0
            c[~passive] = 0.0
    return c


def _ls_independent(G: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Unconstrained least squares on a Gram matrix, taking columns in order and leaving out (coefficient 0)
    any column within DEPENDENT_TOL (squared distance) of the span of the columns kept before it."""
    n = b.shape[0]
    keep: list[int] = []
    for j in range(n):
        if keep:
            sol = np.linalg.solve(G[np.ix_(keep, keep)], G[keep, j])
            dist2 = G[j, j] - G[j, keep] @ sol
        else:
            dist2 = G[j, j]
        if dist2 > DEPENDENT_TOL:
            keep.append(j)
    c = np.zeros(n)
    if keep:
        c[keep] = np.linalg.solve(G[np.ix_(keep, keep)], b[keep])
    return c


def _pursue_one(x, D, C, method, k, lam, positive):
    """Indices and coefficients (length <= k) for one unit signal x (E,) against unit atoms D (M, E)."""
    corr0 = D @ x
    if method == "topk":
        key = corr0 if positive else np.abs(corr0)
        # Stable sort of -key: largest first, lowest index first among exact ties.
        idx = np.argsort(-key, kind="stable")[:k]
        A = D[idx]
        G, b = A @ A.T, A @ x
        coef = nnls_reference(G, b) if positive else _ls_independent(G, b)
        return list(idx), list(coef)

    sel: list[int] = []
    coef = np.zeros(0)
    r = x.copy()
    for _ in range(k):
        score = D @ r
        if method == "comp" and sel:
            mean_atom = C[sel].mean(axis=0)
            score = score + lam * (C @ mean_atom)
        if not positive:
            score = np.abs(score)
        if method != "mp" and sel:
            score[sel] = -np.inf
        j = int(np.argmax(score))  # first maximum: lowest index wins exact ties
        if score[j] <= SELECT_TOL:
            break
        if method == "mp":
            c_j = float(D[j] @ r)
            sel.append(j)
            coef = np.append(coef, c_j)
            r = r - c_j * D[j]
            continue
        A = D[sel + [j]]
        G, b = A @ A.T, A @ x
        if method == "omp":
            if sel:
                sol = np.linalg.solve(G[:-1, :-1], G[:-1, -1])
                if G[-1, -1] - G[:-1, -1] @ sol <= DEPENDENT_TOL:
                    break
            sel.append(j)
            coef = np.linalg.solve(G, b)
        else:  # nnomp, comp
            sel.append(j)
            coef = nnls_reference(G, b)
        r = x - coef @ A
    return sel, list(coef)


def explain_reference(signals, dictionary, method="comp", k=5, lam=0.3, positive=None, both_signs=False,
                      coherence_dictionary=None, chunk_size=None, progress=None) -> Explanation:
    """Same contract as :func:`weightscope.concepts.solvers.explain` (see there); slow, for testing.
    chunk_size and progress are checked but have no effect."""
    p = prepare(signals, dictionary, method, k, lam, positive, both_signs, coherence_dictionary, chunk_size)
    D = p.dictionary.astype(np.float64)
    C = D if p.coherence is None else p.coherence.astype(np.float64)
    N = p.signals.shape[0]
    indices = np.full((N, p.k), -1, dtype=np.int64)
    coefs = np.zeros((N, p.k))
    res = np.zeros(N)
    fid = np.zeros(N)
    for i in range(N):
        x = p.signals[i]
        sel, c = _pursue_one(x, D, C, p.method, p.k, p.lam, p.positive)
        n = len(sel)
        indices[i, :n] = sel
        coefs[i, :n] = c
        recon = np.asarray(c) @ D[sel] if n else np.zeros_like(x)
        res[i] = np.linalg.norm(x - recon)
        rn = np.linalg.norm(recon)
        fid[i] = float(x @ recon / rn) if rn > 0 else 0.0
    return Explanation(indices, coefs, res, fid, p.signal_norm.copy(), p.method, p.both_signs)
