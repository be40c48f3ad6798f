"""The fast driver: batched BLAS products over dictionary blocks + Numba per-signal kernels."""
from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from weightscope.solvers import _kernels as kern
from weightscope.solvers._common import Explanation, Problem, prepare

_METHOD_CODE = {"mp": kern.MP, "omp": kern.OMP, "nnomp": kern.NNOMP, "comp": kern.COMP}

#: Bytes of the score block (signals x atoms) held at once; bounds memory whatever M is.
SCORE_BLOCK_BYTES = 128 * 2**20
#: Default number of signals solved together (their per-signal state is small; K x K matrices).
DEFAULT_CHUNK = 4096
#: Work (signals x atoms x width x steps) above which a progress bar is shown by default.
_PROGRESS_WORK = 5e11


def _score_blocks(Q, Dq, block_rows):
    """Yield (m0, Q @ Dq[m0:m0+block]^T) over the dictionary, reusing one output buffer."""
    M = Dq.shape[0]
    n = Q.shape[0]
    buf = np.empty(n * min(block_rows, M), dtype=Dq.dtype)
    for m0 in range(0, M, block_rows):
        m1 = min(M, m0 + block_rows)
        out = buf[: n * (m1 - m0)].reshape(n, m1 - m0)
        np.matmul(Q, Dq[m0:m1].T, out=out)
        yield m0, out


def _block_rows(n_rows: int, itemsize: int, M: int) -> int:
    return int(max(256, min(M, SCORE_BLOCK_BYTES // max(1, n_rows * itemsize))))


def _solve_topk(p: Problem, X, sel, coef, bar):
    D = p.dictionary
    N, K = sel.shape
    top_val = np.full((N, K), -np.inf)
    top_idx = np.full((N, K), -1, dtype=np.int64)
    Q = X.astype(D.dtype)
    rows = _block_rows(N, D.itemsize, D.shape[0])
    for m0, S in _score_blocks(Q, D, rows):
        kern.topk_block(S, m0, not p.positive, top_val, top_idx)
    bar.update(1)
    G = np.zeros((N, K, K))
    L = np.zeros((N, K, K))
    kern.fit_fixed_support(X, D, top_idx, coef, p.positive, G, np.zeros((N, K)), L,
                           np.zeros((N, K), dtype=np.int64), np.zeros((N, K), dtype=np.bool_),
                           np.zeros((N, K)), np.zeros((N, K)), np.zeros((N, K), dtype=np.bool_))
    sel[:] = top_idx


def _solve_greedy(p: Problem, X, sel, coef, bar):
    """Greedy pursuit for the chunk signals X (C, E) float64 unit rows; fills sel, coef (C, K)."""
    D = p.dictionary
    C_, K = sel.shape
    E = X.shape[1]
    method = _METHOD_CODE[p.method]
    sep_coh = p.method == "comp" and p.coherence is not None
    Cd = (p.coherence if sep_coh else D) if p.method == "comp" else D[:0]
    # The query for COMP with a separate coherence dictionary is [r, lam * mean c_S] against [D, C]:
    # one product per step instead of two.
    Dq = np.ascontiguousarray(np.concatenate([D, p.coherence], axis=1)) if sep_coh else D
    Eq = Dq.shape[1]

    nsel = np.zeros(C_, dtype=np.int64)
    done = np.zeros(C_, dtype=np.bool_)
    G = np.zeros((C_, K, K))
    bS = np.zeros((C_, K))
    L = np.zeros((C_, K, K))
    P = np.zeros((C_, K), dtype=np.int64)
    npas = np.zeros(C_, dtype=np.int64)
    inP = np.zeros((C_, K), dtype=np.bool_)
    r = X.copy()
    coh = np.zeros((C_, Cd.shape[1]))
    z = np.zeros((C_, K))
    rhs = np.zeros((C_, K))
    blocked = np.zeros((C_, K), dtype=np.bool_)

    Q = np.zeros((C_, Eq), dtype=D.dtype)
    Q[:, :E] = X
    rows = np.arange(C_, dtype=np.int64)
    signed = not p.positive
    exclude = p.method != "mp"
    for step in range(K):
        if rows.size == 0:
            bar.update(K - step)
            break
        best_val = np.full(rows.size, -np.inf)
        best_idx = np.full(rows.size, -1, dtype=np.int64)
        block = _block_rows(rows.size, D.itemsize, D.shape[0])
        for m0, S in _score_blocks(Q, Dq, block):
            kern.argmax_block(S, m0, rows, sel, nsel, signed, exclude, best_val, best_idx)
        kern.greedy_update(rows, best_idx, best_val, X, D, Cd, Q, sel, coef, nsel, done, G, bS, L, P,
                           npas, inP, r, coh, z, rhs, blocked, method, p.positive, p.lam, sep_coh)
        bar.update(1)
        keep = ~done[rows]
        if not keep.all():
            # Signals that stopped drop out of later products.
            rows = rows[keep]
            Q = np.ascontiguousarray(Q[keep])


def explain(signals, dictionary, method="comp", k=5, lam=0.3, positive=None, both_signs=False,
            coherence_dictionary=None, chunk_size=None, progress=None) -> Explanation:
    """Sparse explanation of each signal by a few dictionary atoms (METHODS.md section 5).

    signals:   (B, E) array (or one signal (E,)); each is unit-normalised internally.
    dictionary: (M, E) array of atoms, unit-normalised internally. float32 keeps the dictionary
               products in float32 (about twice as fast); every re-fit is float64 either way.
    method:    "topk" | "mp" | "omp" | "nnomp" | "comp".
    k:         atoms per signal (1 <= k <= M).
    lam:       COMP coherence weight (>= 0); score_m = <r, d_m> + lam * <mean_{s in S} c_s, c_m>.
    positive:  non-negative coefficients; default True except for "omp" (signed).
               "nnomp"/"comp" require True; "mp"/"topk" allow False (selection by |<r, d>|).
    both_signs: also explain -x; rows of the result are [+x_1..+x_B, -x_1..-x_B] (see
               ``Explanation.split_signs``).
    coherence_dictionary: (M, E2), COMP only: atoms c_m for the coherence term (default: dictionary).
    chunk_size: signals solved together (memory ~ chunk * (K^2 + E) * 8 bytes + 128 MiB of scores).
    progress:  show a progress bar (default: only for big problems).

    Returns an :class:`Explanation` with indices (N, K) int64 in selection order (-1 padding when a
    pursuit stops early), coefficients (N, K), residual_norm (N,), fidelity (N,), N = B or 2B.
    Raises WeightscopeError on bad input.
    """
    p = prepare(signals, dictionary, method, k, lam, positive, both_signs, coherence_dictionary, chunk_size)
    X = p.signals
    N, E = X.shape
    K = p.k
    D = p.dictionary
    sel = np.full((N, K), -1, dtype=np.int64)
    coef = np.zeros((N, K))
    chunk = p.chunk_size or DEFAULT_CHUNK
    steps = 1 if p.method == "topk" else K
    n_chunks = -(-N // chunk)
    work = float(N) * D.shape[0] * D.shape[1] * steps
    show = (work > _PROGRESS_WORK) if progress is None else bool(progress)
    with tqdm(total=n_chunks * steps, desc=f"{p.method} k={K}", unit="step", disable=not show) as bar:
        for c0 in range(0, N, chunk):
            c1 = min(N, c0 + chunk)
            Xc = X[c0:c1]
            if p.method == "topk":
                _solve_topk(p, Xc, sel[c0:c1], coef[c0:c1], bar)
            else:
                _solve_greedy(p, Xc, sel[c0:c1], coef[c0:c1], bar)
    res = np.zeros(N)
    fid = np.zeros(N)
    kern.finalize(X, D, sel, coef, res, fid)
    return Explanation(sel, coef, res, fid, p.signal_norm.copy(), p.method, p.both_signs)
