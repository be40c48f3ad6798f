"""Numba kernels of the sparse solvers: per-signal greedy bookkeeping, incremental Cholesky, exact NNLS.

The dictionary products (the heavy part) are BLAS matrix products done by the caller in numpy; these
kernels do what is left, signal by signal: pick the best atom from a block of scores, grow the
support, re-fit, and write the next query vector. The batched kernels take a row range [a0, a1)
and release the GIL, and the caller runs disjoint ranges on a thread pool: Numba's own
``parallel=True`` would do the same but triples compile time. Everything per signal is float64
(the dictionary may be float32; its entries are promoted when read).

All functions are compiled with ``cache=True`` so a later process loads machine code instead of
compiling again (the first import in a fresh environment takes a while).

Layout of the per-signal state (C signals in a chunk, K = max atoms):
  sel (C, K) int64       selected atoms in order, -1 beyond nsel
  coef (C, K) float64    coefficient of sel[:, q]
  G (C, K, K) float64    Gram matrix of the selected atoms (support order)
  bS (C, K) float64      <x, d_sel[q]>
  L (C, K, K) float64    Cholesky factor of G restricted to the passive set, in passive order P
  P (C, K) int64         support positions in the passive set (order of L's rows)
  npas (C,) int64, inP (C, K) bool
"""
from __future__ import annotations

import numpy as np
from numba import njit

MP, OMP, NNOMP, COMP = 0, 1, 2, 3

#: A greedy step stops (and pads with -1) when the best selection score is not above this.
#: Signals and atoms are unit vectors, so scores are O(1); this only catches exact fits and
#: "nothing left that a non-negative coefficient could use".
SELECT_TOL = 1e-10

#: An atom whose squared distance to the span of the atoms already in a least-squares fit is below
#: this is treated as linearly dependent: OMP stops there, NNLS leaves it at zero.
DEPENDENT_TOL = 1e-10

#: Lawson-Hanson's optimality test: a zero coefficient stays zero when its gradient is not above this.
KKT_TOL = 1e-12


# ---------------------------------------------------------------------------------------------
# Small dense linear algebra on one signal's support
# ---------------------------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def chol_append(L, n, gcol, gdiag, eps):
    """Grow the n x n lower Cholesky factor L (of G) by one variable with G-column gcol (n,) and
    diagonal gdiag. Returns False (and leaves the size at n) if the new variable's squared distance
    to the span of the others is <= eps."""
    s_tot = 0.0
    for i in range(n):
        s = gcol[i]
        for q in range(i):
            s -= L[i, q] * L[n, q]
        v = s / L[i, i]
        L[n, i] = v
        s_tot += v * v
    d = gdiag - s_tot
    if d <= eps:
        return False
    L[n, n] = np.sqrt(d)
    return True


@njit(cache=True, nogil=True)
def chol_solve(L, n, rhs, out):
    """Solve (L L^T) out = rhs for the leading n x n block."""
    for i in range(n):
        s = rhs[i]
        for q in range(i):
            s -= L[i, q] * out[q]
        out[i] = s / L[i, i]
    for i in range(n - 1, -1, -1):
        s = out[i]
        for q in range(i + 1, n):
            s -= L[q, i] * out[q]
        out[i] = s / L[i, i]


@njit(cache=True, nogil=True)
def chol_delete(L, n, k):
    """Remove variable k from the n x n factor: rows below k shift up, and the trailing block absorbs
    the dropped column as a rank-one update (Givens), O(n^2) instead of refactoring."""
    m = n - k - 1
    x = np.empty(m)
    for i in range(m):
        x[i] = L[k + 1 + i, k]
    for i in range(k + 1, n):
        for j in range(k):
            L[i - 1, j] = L[i, j]
        for j in range(k + 1, i + 1):
            L[i - 1, j - 1] = L[i, j]
    # L33' L33'^T = L33 L33^T + x x^T
    for i in range(m):
        a = L[k + i, k + i]
        rr = np.sqrt(a * a + x[i] * x[i])
        c = rr / a
        s = x[i] / a
        L[k + i, k + i] = rr
        for j in range(i + 1, m):
            v = (L[k + j, k + i] + s * x[j]) / c
            L[k + j, k + i] = v
            x[j] = c * x[j] - s * v


@njit(cache=True, nogil=True)
def nnls_active_set(G, b, t, c, P, npas, inP, L, z, rhs, blocked):
    """Lawson-Hanson NNLS on the first t variables, warm-started from a feasible (c, passive set).

    min_c ||x - c A||^2, c >= 0, given G = A A^T and b = A x. On entry c[P[:npas]] > 0 and every
    other c is 0, and L is the Cholesky factor of G[P, P]; on exit the same holds for the optimum,
    which satisfies the KKT conditions: gradient b - G c is 0 on the passive set and <= KKT_TOL
    elsewhere (variables dependent on the passive ones excepted: they stay 0). Returns the new npas.
    """
    for j in range(t):
        blocked[j] = False
    maxit = 3 * t + 10
    it = 0
    while True:
        jb = -1
        best = KKT_TOL
        for j in range(t):
            if inP[j] or blocked[j]:
                continue
            w = b[j]
            for q in range(npas):
                i = P[q]
                w -= G[j, i] * c[i]
            if w > best:
                best = w
                jb = j
        if jb < 0:
            break
        for q in range(npas):
            rhs[q] = G[jb, P[q]]
        if not chol_append(L, npas, rhs, G[jb, jb], DEPENDENT_TOL):
            blocked[jb] = True
            continue
        P[npas] = jb
        npas += 1
        inP[jb] = True
        first = True
        while True:
            it += 1
            for q in range(npas):
                rhs[q] = b[P[q]]
            chol_solve(L, npas, rhs, z)
            feasible = True
            for q in range(npas):
                if z[q] <= 0.0:
                    feasible = False
                    break
            if feasible or it > maxit:
                for q in range(npas):
                    c[P[q]] = max(z[q], 0.0)
                break
            if first and z[npas - 1] <= 0.0:
                # jb only looked useful through rounding: take it out again and keep it out.
                npas -= 1
                inP[jb] = False
                blocked[jb] = True
                c[jb] = 0.0
                break
            first = False
            # Walk from c towards z until the first passive coefficient hits zero.
            alpha = np.inf
            qmin = -1
            for q in range(npas):
                if z[q] <= 0.0:
                    i = P[q]
                    a = c[i] / (c[i] - z[q])
                    if a < alpha:
                        alpha = a
                        qmin = q
            for q in range(npas):
                i = P[q]
                c[i] += alpha * (z[q] - c[i])
            c[P[qmin]] = 0.0
            for q in range(npas - 1, -1, -1):
                i = P[q]
                if c[i] <= 0.0:
                    chol_delete(L, npas, q)
                    for qq in range(q, npas - 1):
                        P[qq] = P[qq + 1]
                    npas -= 1
                    inP[i] = False
                    c[i] = 0.0
    return npas


@njit(cache=True, nogil=True)
def _dot_row(x, D, j):
    s = 0.0
    for e in range(x.shape[0]):
        s += x[e] * D[j, e]
    return s


@njit(cache=True, nogil=True)
def _dot_rows(D, i, j):
    s = 0.0
    for e in range(D.shape[1]):
        s += np.float64(D[i, e]) * D[j, e]
    return s


@njit(cache=True, nogil=True)
def _residual(x, D, sel, coef, n, r):
    for e in range(x.shape[0]):
        r[e] = x[e]
    for q in range(n):
        c = coef[q]
        if c != 0.0:
            j = sel[q]
            for e in range(x.shape[0]):
                r[e] -= c * D[j, e]


# ---------------------------------------------------------------------------------------------
# Batched kernels: rows a0 .. a1-1, one signal at a time (the caller splits rows over threads)
# ---------------------------------------------------------------------------------------------

_LANES = 16


@njit(cache=True, nogil=True, fastmath=True)
def _row_max(v, signed):
    """max(v) (or max |v|). LLVM will not vectorise a plain max reduction here, but it does compile
    this 16-lane running maximum into wide compare/blend code: ~4x faster on long rows. Scores are
    finite (inputs are checked), so fastmath's NaN assumptions hold."""
    n = v.shape[0]
    acc = np.empty(_LANES, v.dtype)
    for j in range(_LANES):
        acc[j] = -np.inf
    nb = n // _LANES
    if signed:
        for b in range(nb):
            base = b * _LANES
            for j in range(_LANES):
                x = abs(v[base + j])
                acc[j] = x if x > acc[j] else acc[j]
    else:
        for b in range(nb):
            base = b * _LANES
            for j in range(_LANES):
                x = v[base + j]
                acc[j] = x if x > acc[j] else acc[j]
    bv = acc[0]
    for j in range(1, _LANES):
        if acc[j] > bv:
            bv = acc[j]
    for m in range(nb * _LANES, n):
        x = abs(v[m]) if signed else v[m]
        if x > bv:
            bv = x
    return bv


@njit(cache=True, nogil=True)
def _row_first(v, signed, target):
    # First (lowest) index holding the maximum: deterministic tie-breaking.
    for m in range(v.shape[0]):
        x = abs(v[m]) if signed else v[m]
        if x == target:
            return m
    return -1


@njit(cache=True, nogil=True)
def argmax_block(a0, a1, S, m0, rows, sel, nsel, signed, exclude, best_val, best_idx):
    """Fold a block of scores S (n, mb) -- columns are atoms m0 .. m0+mb-1, row a belongs to chunk
    signal rows[a] -- into the running best (best_val, best_idx) (n,). The block is scanned in
    increasing atom order and must beat the running best strictly, so the lowest index wins exact
    ties. signed: compare |score|. exclude: skip atoms already selected for that signal (their
    entries of S are overwritten with -inf)."""
    mb = S.shape[1]
    for a in range(a0, a1):
        i = rows[a]
        row = S[a]
        if exclude:
            for q in range(nsel[i]):
                j = sel[i, q] - m0
                if 0 <= j < mb:
                    row[j] = -np.inf if not signed else 0.0
        bv = _row_max(row, signed)
        if bv > best_val[a]:
            best_val[a] = bv
            best_idx[a] = m0 + _row_first(row, signed, bv)


@njit(cache=True, nogil=True)
def gram_argmax(a0, a1, XD, Gc, pos, rows, sel, nsel, coef, lam, comp, signed, exclude, best_val, best_idx):
    """Scores from the Gram trick, then the best atom, for chunk signals rows (n,).

    <r, d_m> = <x, d_m> - sum_q coef_q <d_sel_q, d_m>, so with XD = X D^T (C, M) computed once and
    Gc[pos[s]] = D d_s (cached rows for selected atoms s) a step costs a few length-M axpys per
    signal instead of a product with the whole dictionary. COMP adds lam/|S| * sum_s <d_s, d_m>.
    Scores are accumulated in float64. Ties and exclusion as in argmax_block."""
    M = XD.shape[1]
    tmp = np.empty(M)
    for a in range(a0, a1):
        i = rows[a]
        t = nsel[i]
        xd = XD[i]
        for m in range(M):
            tmp[m] = xd[m]
        for q in range(t):
            w = -coef[i, q]
            if comp:
                w += lam / t
            if w != 0.0:
                g = Gc[pos[sel[i, q]]]
                for m in range(M):
                    tmp[m] += w * g[m]
        if exclude:
            for q in range(t):
                tmp[sel[i, q]] = -np.inf if not signed else 0.0
        bv = _row_max(tmp, signed)
        best_val[a] = bv
        best_idx[a] = _row_first(tmp, signed, bv)


@njit(cache=True, nogil=True)
def topk_block(a0, a1, S, m0, signed, top_val, top_idx):
    """Fold a block of scores S (n, mb) into each row's running top-K list (top_val, top_idx) (n, K),
    kept sorted by decreasing score; a later atom must beat an equal score strictly, so the lowest
    index wins ties."""
    mb = S.shape[1]
    K = top_val.shape[1]
    for a in range(a0, a1):
        worst = top_val[a, K - 1]
        for m in range(mb):
            v = np.float64(S[a, m])
            if signed:
                v = abs(v)
            if v > worst:
                p = K - 1
                while p > 0 and top_val[a, p - 1] < v:
                    top_val[a, p] = top_val[a, p - 1]
                    top_idx[a, p] = top_idx[a, p - 1]
                    p -= 1
                top_val[a, p] = v
                top_idx[a, p] = m0 + m
                worst = top_val[a, K - 1]


@njit(cache=True, nogil=True)
def greedy_update(a0, a1, rows, best_idx, best_val, X, D, Cd, Q, sel, coef, nsel, done, G, bS, L, P, npas, inP,
                  r, coh, z, rhs, blocked, method, positive, lam, sep_coh):
    """One greedy step for the chunk signals rows (n,): take atom best_idx[a] (score best_val[a]),
    re-fit, update the residual r, and write the signal's next query row Q[rows[a]] (gemm dtype):
    r for MP/OMP/NN-OMP; r + lam * mean(coherence atoms of S) for COMP (as extra columns when the
    coherence dictionary Cd is separate, sep_coh). Signals that stop get done[i] = True."""
    K = sel.shape[1]
    E = X.shape[1]
    for a in range(a0, a1):
        i = rows[a]
        j = best_idx[a]
        if j < 0 or best_val[a] <= SELECT_TOL:
            done[i] = True
            continue
        t = nsel[i]
        x = X[i]
        ri = r[i]
        if method == MP:
            cj = _dot_row(ri, D, j)
            if (positive and cj <= SELECT_TOL) or ((not positive) and abs(cj) <= SELECT_TOL):
                done[i] = True
                continue
            sel[i, t] = j
            coef[i, t] = cj
            nsel[i] = t + 1
            for e in range(E):
                ri[e] -= cj * D[j, e]
        else:
            Gi = G[i]
            for q in range(t):
                g = _dot_rows(D, sel[i, q], j)
                Gi[t, q] = g
                Gi[q, t] = g
            Gi[t, t] = _dot_rows(D, j, j)
            bS[i, t] = _dot_row(x, D, j)
            if method == OMP:
                if not chol_append(L[i], t, Gi[t, :t], Gi[t, t], DEPENDENT_TOL):
                    done[i] = True
                    continue
                sel[i, t] = j
                nsel[i] = t + 1
                P[i, t] = t
                npas[i] = t + 1
                chol_solve(L[i], t + 1, bS[i], coef[i])
            else:
                sel[i, t] = j
                nsel[i] = t + 1
                coef[i, t] = 0.0
                inP[i, t] = False
                npas[i] = nnls_active_set(Gi, bS[i], t + 1, coef[i], P[i], npas[i], inP[i], L[i],
                                          z[i], rhs[i], blocked[i])
            _residual(x, D, sel[i], coef[i], t + 1, ri)
        if method == COMP:
            for e in range(Cd.shape[1]):
                coh[i, e] += Cd[j, e]
        if nsel[i] >= K:
            done[i] = True
            continue
        if method == COMP:
            w = lam / nsel[i]
            if sep_coh:
                for e in range(E):
                    Q[i, e] = ri[e]
                for e in range(Cd.shape[1]):
                    Q[i, E + e] = w * coh[i, e]
            else:
                for e in range(E):
                    Q[i, e] = ri[e] + w * coh[i, e]
        else:
            for e in range(E):
                Q[i, e] = ri[e]


@njit(cache=True, nogil=True)
def fit_fixed_support(a0, a1, X, D, top_idx, coef, positive, G, bS, L, P, inP, z, rhs, blocked):
    """Top-k re-fit: coefficients of each signal on its K given atoms, by NNLS (positive) or by least
    squares over the atoms independent of those before them (the rest stay 0)."""
    K = top_idx.shape[1]
    for i in range(a0, a1):
        Gi = G[i]
        for p in range(K):
            jp = top_idx[i, p]
            for q in range(p):
                g = _dot_rows(D, top_idx[i, q], jp)
                Gi[p, q] = g
                Gi[q, p] = g
            Gi[p, p] = _dot_rows(D, jp, jp)
            bS[i, p] = _dot_row(X[i], D, jp)
            coef[i, p] = 0.0
            inP[i, p] = False
        if positive:
            nnls_active_set(Gi, bS[i], K, coef[i], P[i], 0, inP[i], L[i], z[i], rhs[i], blocked[i])
        else:
            n = 0
            for p in range(K):
                for q in range(n):
                    rhs[i, q] = Gi[p, P[i, q]]
                if chol_append(L[i], n, rhs[i], Gi[p, p], DEPENDENT_TOL):
                    P[i, n] = p
                    n += 1
            for q in range(n):
                rhs[i, q] = bS[i, P[i, q]]
            chol_solve(L[i], n, rhs[i], z[i])
            for q in range(n):
                coef[i, P[i, q]] = z[i, q]


@njit(cache=True, nogil=True)
def finalize(a0, a1, X, D, sel, coef, residual_norm, fidelity):
    """Residual norm and cosine(signal, reconstruction) from the final supports and coefficients."""
    K = sel.shape[1]
    E = X.shape[1]
    for i in range(a0, a1):
        rec = np.zeros(E)
        for q in range(K):
            j = sel[i, q]
            if j >= 0 and coef[i, q] != 0.0:
                c = coef[i, q]
                for e in range(E):
                    rec[e] += c * D[j, e]
        rr = 0.0
        xr = 0.0
        nr = 0.0
        for e in range(E):
            d = X[i, e] - rec[e]
            rr += d * d
            xr += X[i, e] * rec[e]
            nr += rec[e] * rec[e]
        residual_norm[i] = np.sqrt(rr)
        fidelity[i] = xr / np.sqrt(nr) if nr > 0.0 else 0.0
