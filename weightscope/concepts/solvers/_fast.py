"""The fast driver: BLAS products with the dictionary + Numba per-signal kernels.

How a greedy pursuit (MP / OMP / NN-OMP / COMP) runs, per chunk of signals:
  1. XD = X D^T, one GEMM in the dictionary's precision (float32 dictionaries stay float32).
  2. Each later step needs <r, d_m> = XD[m] - sum_{s in S} c_s <d_s, d_m> (COMP adds
     lam/|S| sum_s <d_s, d_m>). The rows D d_s of the atoms selected so far come from a cache shared
     by all signals and chunks: one GEMM over the *distinct* newly selected atoms per step, so an atom
     chosen by many signals costs one row. Never an M x M Gram matrix: the cache is bounded by
     MEMORY_BUDGET_BYTES and evicts atoms no current signal needs.
  3. The argmax over M uses block bounds (max of XD and of |D d_s| per block of atoms) to skip,
     exactly, every block that cannot hold the winner (_kernels.gram_argmax).
  4. The re-fit is per signal in Numba, float64: incremental Cholesky of the support Gram matrix
     (OMP) or Lawson-Hanson active-set NNLS warm-started from the previous step (NN-OMP, COMP).
Signals whose atoms do not fit in the cache (and COMP with a separate coherence dictionary) use
one GEMM of their query vector with the dictionary per step instead, in dictionary blocks.
The cost is therefore one GEMM plus one GEMM row per distinct selected atom, plus linear passes.
"""
from __future__ import annotations

import contextlib
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar

import numpy as np
from tqdm.auto import tqdm

from weightscope.concepts.solvers._common import Explanation, Problem, prepare
from weightscope.core.compute import as_compute

_METHOD_CODE = {"mp": 0, "omp": 1, "nnomp": 2, "comp": 3}   # _kernels.MP, OMP, NNOMP, COMP


def _kern():
    """The Numba kernels, imported on first use: importing the solvers (for the torch backend, or to embed a
    vocabulary before solving) does not import Numba."""
    from weightscope.concepts.solvers import _kernels

    return _kernels

#: Bytes of the score block (signals x atoms) held at once; bounds memory whatever M is.
SCORE_BLOCK_BYTES = 128 * 2**20
#: Bytes for the Gram trick: X D^T of one chunk (chunk x M) and the cache of D d_s rows (shared by
#: all chunks). Raise it on a machine with memory to spare: more atoms stay cached.
MEMORY_BUDGET_BYTES = 1024 * 2**20
#: Largest default number of signals solved together.
DEFAULT_CHUNK = 4096
#: Work (signals x atoms x width x steps) above which a progress bar is shown by default.
_PROGRESS_WORK = 5e11


#: Below this many rows a kernel runs on the calling thread alone.
_MIN_ROWS_PER_THREAD = 32
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def _threads() -> int:
    # Numba's thread setting (NUMBA_NUM_THREADS / numba.set_num_threads) governs ours too.
    import numba

    return max(1, min(numba.get_num_threads(), os.cpu_count() or 1))


def _run_rows(kernel, n, *args):
    """kernel(a0, a1, *args) over rows 0..n-1, split into one contiguous range per thread. The
    kernels release the GIL and write disjoint rows, so the ranges run truly in parallel."""
    global _pool, _pool_size
    nt = min(_threads(), n // _MIN_ROWS_PER_THREAD)
    if nt <= 1:
        kernel(0, n, *args)
        return
    if _pool is None or _pool_size < nt:
        _pool_size = _threads()
        _pool = ThreadPoolExecutor(max_workers=_pool_size, thread_name_prefix="weightscope-solver")
    bounds = np.linspace(0, n, nt + 1).astype(np.int64)
    futures = [_pool.submit(kernel, int(bounds[t]), int(bounds[t + 1]), *args) for t in range(nt)]
    for f in futures:
        f.result()


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
        _run_rows(_kern().topk_block, N, S, m0, not p.positive, top_val, top_idx)
    bar.update(1)
    G = np.zeros((N, K, K))
    L = np.zeros((N, K, K))
    _run_rows(_kern().fit_fixed_support, N, X, D, top_idx, coef, p.positive, G, np.zeros((N, K)), L,
                           np.zeros((N, K), dtype=np.int64), np.zeros((N, K), dtype=np.bool_),
                           np.zeros((N, K)), np.zeros((N, K)), np.zeros((N, K), dtype=np.bool_))
    sel[:] = top_idx


class _GramCache:
    """Rows D d_s (M,) of selected atoms s, shared by all signals and kept across chunks.

    Slots are filled with the atoms most signals need first; when full, atoms that no signal of the
    current chunk still needs are evicted, least used first. Atoms that still do not fit leave their
    signals to the slow path (one dictionary product per step)."""

    def __init__(self, D, capacity):
        self.D = D
        self.rows = np.empty((capacity, D.shape[0]), dtype=D.dtype)
        # Block maxima of |row| (see _kernels.gram_argmax): bounds that skip most of a sweep.
        self.block_max = np.zeros((capacity, -(-D.shape[0] // _kern().PRUNE_BLOCK)))
        self.pos = np.full(D.shape[0], -1, dtype=np.int64)   # atom -> slot
        self.atom = np.full(capacity, -1, dtype=np.int64)    # slot -> atom
        self.uses = np.zeros(capacity, dtype=np.int64)
        # Rows are computed in pieces into this reusable buffer when their slots are not contiguous
        # (a fresh temporary would cost page faults on every step).
        self.piece = int(max(1, min(capacity, SCORE_BLOCK_BYTES // (D.shape[0] * D.itemsize))))
        self.tmp = None

    def add(self, wanted, counts, pinned):
        """Compute rows for the atoms wanted (not cached; needed by counts[i] signals), best first, as
        far as room allows without evicting pinned atoms (a bool mask over atoms)."""
        order = np.argsort(-counts, kind="stable")
        wanted = wanted[order]
        free = np.flatnonzero(self.atom < 0)
        if wanted.size > free.size:
            used = np.flatnonzero(self.atom >= 0)
            evictable = used[~pinned[self.atom[used]]]
            evictable = evictable[np.argsort(self.uses[evictable], kind="stable")]
            evict = evictable[: wanted.size - free.size]
            self.pos[self.atom[evict]] = -1
            self.atom[evict] = -1
            self.uses[evict] = 0
            free = np.sort(np.concatenate([free, evict]))
        wanted = wanted[: free.size]
        slots = free[: wanted.size]
        for a in range(0, wanted.size, self.piece):
            w, sl = wanted[a:a + self.piece], slots[a:a + self.piece]
            if sl[-1] - sl[0] == sl.size - 1:  # a contiguous run of slots is written in place
                np.matmul(self.D[w], self.D.T, out=self.rows[sl[0]:sl[-1] + 1])
            else:
                if self.tmp is None:
                    self.tmp = np.empty((self.piece, self.D.shape[0]), dtype=self.D.dtype)
                np.matmul(self.D[w], self.D.T, out=self.tmp[: w.size])
                self.rows[sl] = self.tmp[: w.size]
        self.pos[wanted] = slots
        self.atom[slots] = wanted
        _run_rows(_kern().block_max, slots.size, self.rows, slots, wanted, True, self.block_max)


#: The Gram rows shared by the explain calls inside ``shared_gram_rows()``: {"key": ..., "cache": _GramCache}.
_SHARED: ContextVar = ContextVar("weightscope_shared_gram_rows", default=None)


@contextlib.contextmanager
def shared_gram_rows():
    """Let the explain calls made inside this block share their Gram rows D d_s while they use the same dictionary.

    The rows are a function of the dictionary alone, so sharing changes no result; it spares every call the rows
    of the atoms popular with all of them. A whole-model inspect explains one layer per call (so that each layer
    is saved as it finishes): without sharing, its calls took 1.3x the time of one call over every layer (measured
    on ViT-B-16 with the 21,740 concepts of ``general``). Memory: the rows stay allocated, within
    ``MEMORY_BUDGET_BYTES``, until the block ends; a call with another dictionary replaces them.
    """
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


def _gram_cache(D, capacity: int, most: int) -> _GramCache:
    """A Gram cache for dictionary D: a fresh one of ``capacity`` rows, or inside ``shared_gram_rows`` the shared
    one (``most`` rows: what the budget allows, as later calls may need more than this one)."""
    shared = _SHARED.get()
    if shared is None:
        return _GramCache(D, capacity)
    key = (D.shape, D.dtype.str, zlib.crc32(memoryview(np.ascontiguousarray(D)).cast("B")))
    if shared.get("key") != key:
        shared.clear()   # the old rows go before the new ones are allocated
        shared.update(key=key, cache=_GramCache(D, most))
    cache = shared["cache"]
    cache.D = D   # equal to the one the rows came from: the caller's copy, so that only one stays referenced
    return cache


def _solve_greedy(p: Problem, X, sel, coef, bar, cache, xd_buf):
    """Greedy pursuit for the chunk signals X (C, E) float64 unit rows; fills sel, coef (C, K).

    With a cache (the Gram trick): step 1 computes XD = X D^T; at later steps the rows D d_s of newly
    selected atoms are computed in one product over the *distinct* atoms of all signals (an atom
    shared by many signals is paid for once, and stays cached for later chunks), and scores are
    XD - sum_s c_s D d_s (+ COMP's coherence), swept with exact block pruning. Without a cache, or for
    signals whose atoms did not fit in it: one product of the query vector with the dictionary per
    step, in dictionary blocks.
    """
    D = p.dictionary
    C_, K = sel.shape
    M, E = D.shape
    method = _METHOD_CODE[p.method]
    sep_coh = p.method == "comp" and p.coherence is not None
    Cd = (p.coherence if sep_coh else D) if p.method == "comp" else D[:0]
    # The query for COMP with a separate coherence dictionary is [r, lam * mean c_S] against [D, C]:
    # one product per step instead of two.
    Dq = np.ascontiguousarray(np.concatenate([D, p.coherence], axis=1)) if sep_coh else D

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
    Q = np.zeros((C_, Dq.shape[1]), dtype=D.dtype)
    Q[:, :E] = X
    signed = not p.positive
    exclude = p.method != "mp"
    comp = p.method == "comp"

    use_gram = cache is not None
    gram_ok = np.full(C_, use_gram)
    if use_gram:
        XD = xd_buf[: C_ * M].reshape(C_, M)  # reused across chunks: no fresh page faults
        np.matmul(Q, D.T, out=XD)
        XD_block_max = np.empty((C_, cache.block_max.shape[1]))
        _run_rows(_kern().block_max, C_, XD, np.arange(C_), np.full(C_, -1), signed, XD_block_max)
        pinned = np.zeros(M, dtype=np.bool_)

    for step in range(K):
        rows = np.flatnonzero(~done).astype(np.int64)
        if rows.size == 0:
            bar.update(K - step)
            break
        g_rows = rows[gram_ok[rows]]
        if step > 0 and g_rows.size:
            last = sel[g_rows, nsel[g_rows] - 1]
            missing = cache.pos[last] < 0
            if missing.any():
                wanted, counts = np.unique(last[missing], return_counts=True)
                pinned[:] = False
                pinned[sel[g_rows, :step].ravel()] = True
                cache.add(wanted, counts, pinned)
                lost = cache.pos[last] < 0
                if lost.any():
                    gram_ok[g_rows[lost]] = False
                    g_rows = g_rows[~lost]
            np.add.at(cache.uses, cache.pos[sel[g_rows, nsel[g_rows] - 1]], 1)
        r_rows = rows[~gram_ok[rows]]
        best_val = np.full(rows.size, -np.inf)
        best_idx = np.full(rows.size, -1, dtype=np.int64)
        ng = g_rows.size
        if ng:
            if step == 0:
                _run_rows(_kern().argmax_from_blocks, ng, XD, XD_block_max, g_rows, signed, best_val, best_idx)
            else:
                _run_rows(_kern().gram_argmax, ng, XD, XD_block_max, cache.rows, cache.block_max, cache.pos,
                          g_rows, sel, nsel, coef, p.lam, comp, signed, exclude, best_val, best_idx)
        if r_rows.size:
            bv, bi = best_val[ng:], best_idx[ng:]
            Qr = Q[r_rows]
            for m0, S in _score_blocks(Qr, Dq, _block_rows(r_rows.size, D.itemsize, M)):
                _run_rows(_kern().argmax_block, r_rows.size, S, m0, r_rows, sel, nsel, signed, exclude, bv, bi)
        _run_rows(_kern().greedy_update, rows.size, np.concatenate([g_rows, r_rows]), best_idx, best_val, X, D,
                  Cd, Q, sel, coef, nsel, done, G, bS, L, P, npas, inP, r, coh, z, rhs, blocked, method,
                  p.positive, p.lam, sep_coh)
        bar.update(1)


def explain(signals, dictionary, method="comp", k=5, lam=0.3, positive=None, both_signs=False,
            coherence_dictionary=None, chunk_size=None, progress=None, backend="numba") -> Explanation:
    """Sparse explanation of each signal by a few dictionary atoms (METHODS.md section 5).

    signals:   (B, E) array (or one signal (E,)); each is unit-normalised internally.
    dictionary: (M, E) array of atoms, unit-normalised internally (rows already unit are used as
               they are, no copy). float32 keeps the dictionary products, hence the selection
               scores, in float32 (about twice as fast; near-ties closer than ~1e-7 may then
               resolve differently than in float64); every re-fit is float64 either way.
    method:    "topk" | "mp" | "omp" | "nnomp" | "comp".
    k:         atoms per signal (1 <= k <= M).
    lam:       COMP coherence weight (>= 0): COMP picks argmax over m not in S of
               <r, d_m> + lam * <mean_{s in S} h_s, h_m>, h = coherence_dictionary rows (default d).
               An atom picked for its coherence alone may get NNLS coefficient 0; it stays listed.
    positive:  non-negative coefficients; default True except for "omp" (signed).
               "nnomp"/"comp" require True; "mp"/"topk" allow False (selection by |<r, d>|).
    both_signs: also explain -x; rows of the result are [+x_1..+x_B, -x_1..-x_B] (see
               ``Explanation.split_signs``).
    coherence_dictionary: (M, E2), COMP only: rows h_m for the coherence term (default: dictionary).
    chunk_size: signals solved together. Default: X D^T of a chunk takes a quarter of
               MEMORY_BUDGET_BYTES (1 GiB; at most 4096 signals), the cache of Gram rows the rest.
    progress:  show a progress bar (default: only for big problems).
    backend:   "numba" (default: BLAS products + Numba kernels, CPU), "torch" (batched torch solvers,
               ``weightscope.concepts.solvers._torch``; on CUDA if present, else MPS, else CPU), or a
               ``weightscope.core.compute.Compute`` naming device, precision and backend. Both backends give
               the same supports and coefficients within 1e-5 (float64 re-fits; METHODS.md section 14).

    Returns an :class:`Explanation` with indices (N, K) int64 in selection order (-1 padding when a
    pursuit stops early), coefficients (N, K), residual_norm (N,), fidelity (N,), N = B or 2B.
    Raises WeightscopeError on bad input.
    """
    compute = as_compute(backend)  # checked before any work
    p = prepare(signals, dictionary, method, k, lam, positive, both_signs, coherence_dictionary, chunk_size)
    if compute.solver_backend() == "torch":
        from weightscope.concepts.solvers import _torch
        return _torch.solve(p, compute, progress)
    X = p.signals
    N, E = X.shape
    K = p.k
    D = p.dictionary
    sel = np.full((N, K), -1, dtype=np.int64)
    coef = np.zeros((N, K))
    steps = 1 if p.method == "topk" else K
    M, item = D.shape[0], D.itemsize
    budget_rows = MEMORY_BUDGET_BYTES // (M * item)  # length-M rows that fit in the budget
    if p.chunk_size:
        chunk = p.chunk_size
    else:
        # A quarter of the budget for X D^T of a chunk, the rest for the shared cache.
        chunk = int(max(64, min(DEFAULT_CHUNK, budget_rows // 4)))
    chunk = min(chunk, N)
    chunk = -(-N // -(-N // chunk))  # equal chunks: no small tail with inefficient small products
    cache = xd_buf = None
    if p.method != "topk" and K > 1 and not (p.method == "comp" and p.coherence is not None):
        capacity = int(min(N * (K - 1), M, budget_rows - chunk))
        if capacity >= min(chunk, 64):
            cache = _gram_cache(D, capacity, int(min(M, budget_rows - chunk)))
            xd_buf = np.empty(chunk * M, dtype=D.dtype)
    n_chunks = -(-N // chunk)
    work = float(N) * M * D.shape[1] * steps
    show = (work > _PROGRESS_WORK) if progress is None else bool(progress)
    with tqdm(total=n_chunks * steps, desc=f"{p.method} k={K}", unit="step", disable=not show) as bar:
        for c0 in range(0, N, chunk):
            c1 = min(N, c0 + chunk)
            Xc = X[c0:c1]
            if p.method == "topk":
                _solve_topk(p, Xc, sel[c0:c1], coef[c0:c1], bar)
            else:
                _solve_greedy(p, Xc, sel[c0:c1], coef[c0:c1], bar, cache, xd_buf)
    res = np.zeros(N)
    fid = np.zeros(N)
    _run_rows(_kern().finalize, N, X, D, sel, coef, res, fid)
    return Explanation(sel, coef, res, fid, p.signal_norm.copy(), p.method, p.both_signs)
