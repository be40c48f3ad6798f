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
def _row_max_into(v, signed, acc):
    """max(v) (or max |v|) using the caller's scratch acc (_LANES,). LLVM will not vectorise a plain
    max reduction here, but it does compile this 16-lane running maximum into wide compare/blend
    code (~4x faster on long rows). Scores are finite (inputs are checked), so fastmath's NaN
    assumptions hold."""
    n = v.shape[0]
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
def _row_max(v, signed):
    return _row_max_into(v, signed, np.empty(_LANES, v.dtype))


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


#: Atoms per block of the bounds that let gram_argmax skip most of the dictionary.
PRUNE_BLOCK = 128
#: Absolute slack added to those bounds: covers float64 rounding of O(1) scores many times over.
_BOUND_SLACK = 1e-9


@njit(cache=True, nogil=True, fastmath=True)
def block_max(a0, a1, A, idx, skip, signed, out):
    """out[idx[a], b] = max over atom block b (PRUNE_BLOCK atoms) of A[idx[a]] (of |A[idx[a]]| if
    signed), leaving out column skip[a] when it is >= 0 (the diagonal of a Gram row: an atom's own
    correlation 1 would otherwise dominate its block's bound, and the atom is never a candidate for
    the signals that use its row). Full blocks use _LANES running maxima written out inline
    (vectorised; see _row_max_into); values are finite, as fastmath assumes."""
    M = A.shape[1]
    nb = out.shape[1]
    acc = np.empty(_LANES, A.dtype)
    for a in range(a0, a1):
        i = idx[a]
        row = A[i]
        for b in range(nb):
            m0 = b * PRUNE_BLOCK
            m1 = min(M, m0 + PRUNE_BLOCK)
            if m1 - m0 == PRUNE_BLOCK and not (m0 <= skip[a] < m1):
                for j in range(_LANES):
                    acc[j] = abs(row[m0 + j]) if signed else row[m0 + j]
                for g in range(1, PRUNE_BLOCK // _LANES):
                    o = m0 + g * _LANES
                    for j in range(_LANES):
                        x = abs(row[o + j]) if signed else row[o + j]
                        acc[j] = x if x > acc[j] else acc[j]
                bv = acc[0]
                for j in range(1, _LANES):
                    if acc[j] > bv:
                        bv = acc[j]
            else:
                bv = -np.inf
                for m in range(m0, m1):
                    x = abs(row[m]) if signed else row[m]
                    if m != skip[a] and x > bv:
                        bv = x
            out[i, b] = bv


@njit(cache=True, nogil=True)
def argmax_from_blocks(a0, a1, A, amax, rows, signed, best_val, best_idx):
    """First step's best atom from block maxima amax (block_max of A, nothing excluded): the first
    block holding the row maximum, then the first atom in it (lowest index wins ties)."""
    M = A.shape[1]
    nb = amax.shape[1]
    for a in range(a0, a1):
        i = rows[a]
        ab = amax[i]
        bb = 0
        for b in range(1, nb):
            if ab[b] > ab[bb]:
                bb = b
        m0 = bb * PRUNE_BLOCK
        best_val[a] = ab[bb]
        best_idx[a] = m0 + _row_first(A[i, m0:min(M, m0 + PRUNE_BLOCK)], signed, ab[bb])


@njit(cache=True, nogil=True)
def _scores(xd, Gc, slot, w, nw, m0, m1, v):
    # v[:m1-m0] = exact scores of atoms m0..m1-1. Every path computes a score with these operations
    # in this order, so a score has the same bits however the sweep is cut up.
    n = m1 - m0
    xs = xd[m0:m1]
    for j in range(n):
        v[j] = xs[j]
    for q in range(nw):
        wq = w[q]
        g = Gc[slot[q], m0:m1]
        for j in range(n):
            v[j] += wq * g[j]


@njit(cache=True, nogil=True)
def _fold(v, n, m0, sel_i, t, exclude, signed, acc, best, bidx):
    # Fold scores v[:n] of atoms m0.. into (best, bidx): larger wins, equal goes to the lower index.
    if exclude:
        for q in range(t):
            s = sel_i[q]
            if m0 <= s < m0 + n:
                v[s - m0] = -np.inf if not signed else 0.0
    bm = _row_max_into(v[:n], signed, acc)
    if bm > best or (bm == best and m0 < bidx):
        j = _row_first(v[:n], signed, bm)
        if bm > best or m0 + j < bidx:
            best = bm
            bidx = m0 + j
    return best, bidx


@njit(cache=True, nogil=True)
def _atom_of_slot(sel_i, pos, sl, t):
    for q in range(t):
        if pos[sel_i[q]] == sl:
            return sel_i[q]
    return -1


@njit(cache=True, nogil=True)
def gram_argmax(a0, a1, XD, xbm, Gc, gbm, pos, rows, sel, nsel, coef, lam, comp, signed, exclude,
                best_val, best_idx):
    """Scores from the Gram trick, then the best atom, for chunk signals rows[a0:a1].

    <r, d_m> = <x, d_m> - sum_q coef_q <d_sel_q, d_m>, so with XD = X D^T (C, M) computed once and
    Gc[pos[s]] = D d_s (cached rows for selected atoms s) a step needs no product with the dictionary.
    COMP adds lam/|S| * sum_s <d_s, d_m>. Scores are accumulated in float64.

    Most of the sweep is skipped, exactly: with block maxima xbm[i, b] of XD[i] (of |XD[i]| if signed)
    and gbm[slot, b] of |Gc[slot]|, every score in block b is at most
    xbm[i, b] + sum_q |w_q| gbm[slot_q, b]; the block with the largest bound is scanned first and any
    block whose bound is below the best score found is never read (when the bounds are too loose
    to skip much, the whole row is swept instead). Ties and exclusion as in argmax_block (lowest
    index wins)."""
    nb = xbm.shape[1]
    M = XD.shape[1]
    K = sel.shape[1]
    ub = np.empty(nb)
    v = np.empty(PRUNE_BLOCK)
    tmp = np.empty(M)
    acc = np.empty(_LANES)
    w = np.empty(K)
    slot = np.empty(K, dtype=np.int64)
    for a in range(a0, a1):
        i = rows[a]
        t = nsel[i]
        nw = 0
        for q in range(t):
            wq = -coef[i, q]
            if comp:
                wq += lam / t
            if wq != 0.0:
                w[nw] = wq
                slot[nw] = pos[sel[i, q]]
                nw += 1
        xb = xbm[i]
        xd = XD[i]
        sel_i = sel[i]
        for b in range(nb):
            ub[b] = xb[b]
        if exclude:
            # The selected atoms are no candidates: their (large) XD values leave their blocks' bounds.
            for q in range(t):
                b = sel_i[q] // PRUNE_BLOCK
                bv = -np.inf
                for m in range(b * PRUNE_BLOCK, min(M, (b + 1) * PRUNE_BLOCK)):
                    x = abs(xd[m]) if signed else xd[m]
                    if x > bv:
                        own = False
                        for r in range(t):
                            if sel_i[r] == m:
                                own = True
                        if not own:
                            bv = x
                ub[b] = bv
        for q in range(nw):
            aw = abs(w[q])
            gb = gbm[slot[q]]
            for b in range(nb):
                ub[b] += aw * gb[b]
        if not exclude:
            # gbm leaves out the diagonal; MP may pick a selected atom again, so add it back.
            for q in range(nw):
                s_q = _atom_of_slot(sel_i, pos, slot[q], t)
                ub[s_q // PRUNE_BLOCK] += abs(w[q]) * abs(Gc[slot[q], s_q])
        bstar = 0
        for b in range(nb):
            ub[b] += _BOUND_SLACK
            if ub[b] > ub[bstar]:
                bstar = b
        m0 = bstar * PRUNE_BLOCK
        m1 = min(M, m0 + PRUNE_BLOCK)
        _scores(xd, Gc, slot, w, nw, m0, m1, v)
        best, bidx = _fold(v, m1 - m0, m0, sel_i, t, exclude, signed, acc, -np.inf, -1)
        left = 0
        for b in range(nb):
            if ub[b] >= best:
                left += 1
        if 4 * left > nb:
            # Bounds too loose (late steps): one straight sweep is cheaper than many short ones.
            _scores(xd, Gc, slot, w, nw, 0, M, tmp)
            best, bidx = _fold(tmp, M, 0, sel_i, t, exclude, signed, acc, -np.inf, -1)
        else:
            for b in range(nb):
                if b != bstar and ub[b] >= best:
                    m0 = b * PRUNE_BLOCK
                    m1 = min(M, m0 + PRUNE_BLOCK)
                    _scores(xd, Gc, slot, w, nw, m0, m1, v)
                    best, bidx = _fold(v, m1 - m0, m0, sel_i, t, exclude, signed, acc, best, bidx)
        best_val[a] = best
        best_idx[a] = bidx


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
