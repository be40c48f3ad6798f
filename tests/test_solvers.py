"""Tests of weightscope.concepts.solvers: agreement with scikit-learn / scipy / the numpy reference, exact NNLS
(KKT), planted-support recovery, tie-breaking, layouts, and bad input."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import nnls as scipy_nnls
from sklearn.linear_model import orthogonal_mp

from weightscope.core.errors import WeightscopeError
from weightscope.concepts.solvers import METHODS, Explanation, _fast, explain
from weightscope.concepts.solvers import _kernels as kern
from weightscope.concepts.solvers._common import KKT_TOL
from weightscope.concepts.solvers.reference import explain_reference, nnls_reference

VARIANTS = [("topk", True), ("topk", False), ("mp", True), ("mp", False), ("omp", False), ("omp", True),
            ("nnomp", True), ("comp", True)]


def unit(a):
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def problem(seed, B=12, M=150, E=24):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((B, E)), rng.standard_normal((M, E))


def assert_same(a: Explanation, b: Explanation, atol=1e-9):
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.coefficients, b.coefficients, atol=atol, rtol=0)
    np.testing.assert_allclose(a.residual_norm, b.residual_norm, atol=atol, rtol=0)
    np.testing.assert_allclose(a.fidelity, b.fidelity, atol=atol, rtol=0)


# ------------------------------------------------------------------------------------------ agreement

@pytest.mark.parametrize("seed", range(4))
def test_omp_matches_sklearn(seed):
    X, D = problem(seed, B=15, M=200, E=40)
    X, D = unit(X), unit(D)  # sklearn does not normalise; ours does, so give both unit vectors
    K = 8
    ex = explain(X, D, method="omp", k=K)
    ref = orthogonal_mp(D.T, X.T, n_nonzero_coefs=K)  # atoms in columns: (M, B) coefficients
    for i in range(X.shape[0]):
        support = np.flatnonzero(ref[:, i])
        assert set(ex.indices[i]) == set(support)
        np.testing.assert_allclose(ex.coefficients[i], ref[ex.indices[i], i], atol=1e-6, rtol=0)


@pytest.mark.parametrize("method,positive", VARIANTS)
@pytest.mark.parametrize("seed", range(3))
def test_numba_equals_reference(method, positive, seed):
    X, D = problem(seed)
    a = explain(X, D, method=method, k=7, positive=positive)
    b = explain_reference(X, D, method=method, k=7, positive=positive)
    assert_same(a, b)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), B=st.integers(1, 6), M=st.integers(3, 60), E=st.integers(2, 12),
       k=st.integers(1, 15), variant=st.sampled_from(VARIANTS), lam=st.sampled_from([0.0, 0.3, 1.0]))
def test_numba_equals_reference_property(seed, B, M, E, k, variant, lam):
    # Small widths make k > E common: pursuits then stop early (exact fit / dependent atoms) and pad -1.
    method, positive = variant
    X, D = problem(seed, B, M, E)
    k = min(k, M)
    a = explain(X, D, method=method, k=k, positive=positive, lam=lam)
    b = explain_reference(X, D, method=method, k=k, positive=positive, lam=lam)
    # The residual of a (NN)LS fit is unique, so supports and fit quality must agree always; the
    # coefficients only where the selected atoms are independent (otherwise several optima exist).
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.residual_norm, b.residual_norm, atol=1e-7, rtol=0)
    np.testing.assert_allclose(a.fidelity, b.fidelity, atol=1e-7, rtol=0)
    Dn = unit(D)
    for i in range(len(a)):
        S = a.indices[i][a.indices[i] >= 0]
        if method == "mp" or (S.size and np.linalg.eigvalsh(Dn[S] @ Dn[S].T).min() > 1e-6):
            np.testing.assert_allclose(a.coefficients[i], b.coefficients[i], atol=1e-7, rtol=0)


@pytest.mark.parametrize("method,positive", VARIANTS)
def test_pruned_sweeps_match_reference_on_planted_signals(method, positive):
    # Planted sparse signals over a 24-block dictionary: the Gram-trick sweep skips most blocks
    # (step-to-step bounds included), and must still pick exactly what a full sweep picks.
    rng = np.random.default_rng(23)
    M, E, B = 24 * kern.PRUNE_BLOCK, 48, 30
    D = rng.standard_normal((M, E))
    support = np.stack([rng.choice(M, 6, replace=False) for _ in range(B)])
    X = np.einsum("bk,bke->be", rng.uniform(0.5, 1.5, (B, 6)), unit(D)[support])
    X += 0.01 * rng.standard_normal((B, E))
    a = explain(X, D, method=method, k=8, positive=positive)
    assert_same(a, explain_reference(X, D, method=method, k=8, positive=positive))


def test_comp_with_lambda_zero_is_nnomp():
    X, D = problem(7, B=30, M=400, E=32)
    a = explain(X, D, method="comp", k=10, lam=0.0)
    b = explain(X, D, method="nnomp", k=10)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.coefficients, b.coefficients, atol=1e-12)


def test_comp_lambda_changes_selection_and_matches_reference():
    X, D = problem(8, B=30, M=400, E=32)
    a = explain(X, D, method="comp", k=6, lam=0.5)
    assert not np.array_equal(a.indices, explain(X, D, method="nnomp", k=6).indices)
    assert_same(a, explain_reference(X, D, method="comp", k=6, lam=0.5))


def test_comp_separate_coherence_dictionary():
    X, D = problem(9, B=20, M=300, E=24)
    Cd = np.random.default_rng(1).standard_normal((300, 10))
    a = explain(X, D, method="comp", k=6, lam=0.4, coherence_dictionary=Cd)
    assert_same(a, explain_reference(X, D, method="comp", k=6, lam=0.4, coherence_dictionary=Cd))
    # Passing the dictionary itself as coherence dictionary is the default behaviour.
    assert_same(explain(X, D, method="comp", k=6, lam=0.4, coherence_dictionary=D),
                explain(X, D, method="comp", k=6, lam=0.4))


def test_float32_dictionary_close_to_float64():
    X, D = problem(10, B=40, M=500, E=64)
    a = explain(X, D.astype(np.float32), method="comp", k=5)
    b = explain_reference(X, D, method="comp", k=5)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.coefficients, b.coefficients, atol=1e-5)


def test_chunks_and_dictionary_blocks_do_not_change_results(monkeypatch):
    X, D = problem(11, B=23, M=700, E=16)
    for method in METHODS:
        whole = explain(X, D, method=method, k=5)
        monkeypatch.setattr(_fast, "SCORE_BLOCK_BYTES", 8 * 5 * 256)  # forces 256-atom blocks
        pieces = explain(X, D, method=method, k=5, chunk_size=5)
        monkeypatch.undo()
        assert_same(whole, pieces, atol=1e-12)


@pytest.mark.parametrize("chunk,budget_rows", [(23, 0), (23, 30), (23, 10_000), (5, 12)])
@pytest.mark.parametrize("method,positive", VARIANTS)
def test_gram_trick_and_fallback_paths_agree(monkeypatch, method, positive, chunk, budget_rows):
    # budget_rows: length-M rows in the memory budget besides X D^T of a chunk. 0 = no Gram trick (one
    # product per step); 30 = the cache overflows and some signals fall back mid-way; 10_000 =
    # everything cached; chunks of 5 with 12 rows = atoms are evicted between chunks.
    X, D = problem(17, B=23, M=700, E=16)
    D[5] = D[9]  # repeated atoms make MP re-select and signals share cached rows
    monkeypatch.setattr(_fast, "MEMORY_BUDGET_BYTES", (chunk + budget_rows) * 700 * 8 if budget_rows else 0)
    a = explain(X, D, method=method, k=6, positive=positive, chunk_size=chunk)
    assert_same(a, explain_reference(X, D, method=method, k=6, positive=positive))


def _independent_pursuit(x, D, method, k, lam):
    """One raw signal x (E,) against raw atoms D (M, E), from METHODS.md section 5 with its own normalisation,
    scipy's NNLS and numpy's least squares: shares nothing with weightscope.concepts.solvers (not even ``prepare``)."""
    x = x / np.linalg.norm(x)
    D = D / np.linalg.norm(D, axis=1, keepdims=True)
    if method == "topk":
        S = list(np.argsort(-(D @ x), kind="stable")[:k])
        return S, scipy_nnls(D[S].T, x)[0]
    S, c, r = [], np.zeros(0), x
    for _ in range(k):
        score = D @ r
        if method == "comp" and S:
            score = score + lam * (D @ D[S].mean(axis=0))
        if method == "omp":
            score = np.abs(score)
        if method != "mp":
            score[S] = -np.inf
        j = int(np.argmax(score))
        if score[j] <= 1e-10:
            break
        S.append(j)
        if method == "mp":
            c = np.append(c, D[j] @ r)
            r = r - c[-1] * D[j]
            continue
        c = np.linalg.lstsq(D[S].T, x, rcond=None)[0] if method == "omp" else scipy_nnls(D[S].T, x)[0]
        r = x - c @ D[S]
    return S, c


@pytest.mark.parametrize("method", METHODS)
def test_explain_matches_an_independent_pursuit_on_raw_inputs(method):
    """Un-normalised signals and atoms (row scales 0.1-10), both signs: every output field against the pursuit
    above, which normalises by itself; the numpy reference shares ``prepare`` with the fast path, this does not."""
    rng = np.random.default_rng(31)
    X, D = problem(32, B=6, M=90, E=20)
    X *= rng.uniform(0.1, 10, (6, 1))
    D *= rng.uniform(0.1, 10, (90, 1))
    ex = explain(X, D, method=method, k=4, lam=0.3, both_signs=True)
    assert ex.indices.shape == (12, 4)
    for row, x in enumerate(np.concatenate([X, -X])):
        S, c = _independent_pursuit(x, D, method, 4, 0.3)
        n = len(S)
        np.testing.assert_array_equal(ex.indices[row, :n], S)
        assert (ex.indices[row, n:] == -1).all()
        np.testing.assert_allclose(ex.coefficients[row, :n], c, atol=1e-8)
        xu, rec = x / np.linalg.norm(x), c @ (D[S] / np.linalg.norm(D[S], axis=1, keepdims=True))
        assert ex.residual_norm[row] == pytest.approx(np.linalg.norm(xu - rec), abs=1e-8)
        assert ex.fidelity[row] == pytest.approx(xu @ rec / np.linalg.norm(rec), abs=1e-8)
        assert ex.signal_norm[row] == pytest.approx(np.linalg.norm(x), rel=1e-12)


# ------------------------------------------------------------------------------------------ NNLS

def _kernel_nnls(A, x):
    """Run the Numba active-set NNLS from c = 0 on A (n, E), x (E,)."""
    n = A.shape[0]
    G, b = A @ A.T, A @ x
    c = np.zeros(n)
    P = np.zeros(n, dtype=np.int64)
    kern.nnls_active_set(G, b, n, c, P, 0, np.zeros(n, dtype=np.bool_), np.zeros((n, n)), np.zeros(n),
                         np.zeros(n), np.zeros(n, dtype=np.bool_))
    return c, G, b


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 12), extra=st.integers(0, 20))
def test_nnls_kkt_and_scipy(seed, n, extra):
    rng = np.random.default_rng(seed)
    E = n + extra  # full column rank (almost surely): unique optimum
    A = rng.standard_normal((n, E))
    x = rng.standard_normal(E)
    c, G, b = _kernel_nnls(A, x)
    grad = b - G @ c  # = A (x - c A): minus half the gradient of the objective
    assert (c >= 0).all()
    assert np.all(np.abs(grad[c > 0]) <= 1e-9)       # stationarity on the passive set
    assert np.all(grad[c == 0] <= 1e-9)              # no zero coefficient wants to grow
    ref, _ = scipy_nnls(A.T, x)
    np.testing.assert_allclose(c, ref, atol=1e-8)
    np.testing.assert_allclose(nnls_reference(G, b), ref, atol=1e-8)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(2, 10), k=st.integers(0, 9))
def test_cholesky_delete_is_factor_of_reduced_gram(seed, n, k):
    k = k % n
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, n + 3))
    G = A @ A.T
    L = np.zeros((n, n))
    for i in range(n):
        assert kern.chol_append(L, i, G[i, :i].copy(), G[i, i], 1e-12)
    kern.chol_delete(L, n, k)
    keep = [i for i in range(n) if i != k]
    Lr = np.tril(L[: n - 1, : n - 1])
    np.testing.assert_allclose(Lr @ Lr.T, G[np.ix_(keep, keep)], atol=1e-9)
    assert (np.diag(Lr) > 0).all()


@pytest.mark.parametrize("method", ["nnomp", "comp", "topk"])
def test_nonnegative_fits_satisfy_kkt(method):
    X, D = problem(12, B=40, M=300, E=20)
    ex = explain(X, D, method=method, k=8)
    Xn, Dn = unit(X), unit(D)
    for i in range(len(ex)):
        S = ex.indices[i][ex.indices[i] >= 0]
        c = ex.coefficients[i][: S.size]
        assert (c >= 0).all()
        grad = Dn[S] @ (Xn[i] - c @ Dn[S])
        assert np.all(np.abs(grad[c > 0]) <= 1e-9)
        assert np.all(grad[c == 0] <= KKT_TOL + 1e-12)


def test_omp_residual_orthogonal_to_support():
    X, D = problem(13, B=20, M=300, E=30)
    ex = explain(X, D, method="omp", k=10)
    Xn, Dn = unit(X), unit(D)
    for i in range(len(ex)):
        S = ex.indices[i]
        r = Xn[i] - ex.coefficients[i] @ Dn[S]
        assert np.abs(Dn[S] @ r).max() < 1e-10
        assert np.isclose(np.linalg.norm(r), ex.residual_norm[i])
        rec = Xn[i] - r
        assert np.isclose(ex.fidelity[i], Xn[i] @ rec / np.linalg.norm(rec))


def _gram_argmax_direct(XD, Gc, sel, coef, lam, comp, signed, exclude=True):
    """Run the pruned Gram-trick kernel on hand-made arrays; Gc rows are the sorted distinct atoms of sel."""
    C, M = XD.shape
    nb = -(-M // kern.PRUNE_BLOCK)
    xbm, gbm = np.empty((C, nb)), np.empty((Gc.shape[0], nb))
    uniq = np.unique(sel)
    kern.block_max(0, C, XD, np.arange(C), np.full(C, -1), signed, xbm)
    kern.block_max(0, uniq.size, Gc, np.arange(uniq.size), uniq, True, gbm)
    pos = np.full(M, -1)
    pos[uniq] = np.arange(uniq.size)
    rows = np.arange(C)
    nsel = np.full(C, sel.shape[1])
    bv, bi = np.full(C, -np.inf), np.full(C, -1)
    kern.gram_argmax(0, C, XD, xbm, Gc, gbm, pos, rows, sel, nsel, coef, lam, comp, signed, exclude, bv, bi)
    return bv, bi


@pytest.mark.parametrize("signed,comp,exclude", [(False, False, True), (False, True, True), (True, False, True),
                                                 (False, False, False), (True, False, False)])
def test_pruned_gram_sweep_equals_brute_force(signed, comp, exclude):
    # exclude=False is MP, which may pick a selected atom again: the bounds must allow for that.
    rng = np.random.default_rng(21)
    C, M, t = 40, 1000, 3
    sel = np.stack([rng.choice(M, t, replace=False) for _ in range(C)])
    uniq = np.unique(sel)
    D = unit(rng.standard_normal((M, 24)))
    x = unit(rng.standard_normal((C, 24)))
    XD = (x @ D.T).astype(np.float32)
    Gc = (D[uniq] @ D.T).astype(np.float32)  # slot order = sorted atoms, as pos maps them
    coef = rng.uniform(0, 0.5, (C, t)) * (-1 if not exclude else 1)
    bv, bi = _gram_argmax_direct(XD, Gc, sel, coef, 0.3, comp, signed, exclude)
    w = -coef + (0.3 / t if comp else 0.0)
    score = XD.astype(np.float64)
    for q in range(t):
        score = score + w[:, q:q + 1] * Gc[np.searchsorted(uniq, sel[:, q])].astype(np.float64)
    if signed:
        score = np.abs(score)
    if exclude:
        np.put_along_axis(score, sel, -np.inf if not signed else 0.0, axis=1)
    else:  # negative coefficients push the selected atoms' own scores up: they must be found
        assert (score.argmax(axis=1)[:, None] == sel).any()
    np.testing.assert_array_equal(bi, score.argmax(axis=1))
    np.testing.assert_allclose(bv, score.max(axis=1), rtol=1e-12)


def test_pruned_gram_sweep_breaks_ties_across_blocks_by_lowest_index():
    M = 3 * kern.PRUNE_BLOCK
    XD = np.zeros((2, M))
    # Row 0: equal maxima in blocks 0 and 2, and block 2 has the larger bound (scanned first).
    XD[0, 5] = XD[0, 300] = 0.5
    XD[0, 301] = -0.4
    # Row 1: the same, with the maxima in blocks 1 and 2.
    XD[1, 200] = XD[1, 260] = 0.5
    Gc = np.zeros((1, M))
    Gc[0, 301] = 1.0   # raises block 2's bound only
    sel = np.array([[7], [7]])
    coef = np.array([[0.5], [0.5]])
    bv, bi = _gram_argmax_direct(XD, Gc, sel, coef, 0.0, False, False)
    np.testing.assert_array_equal(bi, [5, 200])
    np.testing.assert_array_equal(bv, [0.5, 0.5])


# ------------------------------------------------------------------------------------------ recovery

@pytest.mark.parametrize("method", ["nnomp", "comp"])
def test_planted_sparse_supports_are_recovered(method):
    rng = np.random.default_rng(2024)
    M, E, K, B = 20_000, 512, 5, 200
    D = unit(rng.standard_normal((M, E))).astype(np.float32)
    support = np.stack([rng.choice(M, K, replace=False) for _ in range(B)])
    coef = rng.uniform(0.5, 1.5, (B, K))
    clean = np.einsum("bk,bke->be", coef, D[support].astype(np.float64))
    noise = rng.standard_normal((B, E))
    # 30 dB SNR: noise power is 1/1000 of the signal power, per signal.
    noise *= np.linalg.norm(clean, axis=1, keepdims=True) / np.linalg.norm(noise, axis=1, keepdims=True)
    X = clean + noise * 10 ** (-30 / 20)
    ex = explain(X, D, method=method, k=K, lam=0.3)
    hits = sum(len(set(ex.indices[i]) & set(support[i])) for i in range(B))
    precision = hits / np.count_nonzero(ex.indices >= 0)
    recall = hits / support.size
    f1 = 2 * precision * recall / (precision + recall)
    assert f1 >= 0.95, f1
    assert np.median(ex.fidelity) > 0.99


# ------------------------------------------------------------------------------------------ behaviour

def test_exact_ties_pick_the_lowest_index():
    rng = np.random.default_rng(14)
    D = rng.standard_normal((50, 8))
    D[31] = D[4]   # duplicate atoms: identical scores everywhere
    D[17] = D[40]
    X = np.stack([D[4], D[40] + 0.1 * D[4]])
    for Dt in (D, D.astype(np.float32)):
        for method in METHODS:
            ex = explain(X, Dt, method=method, k=3)
            assert ex.indices[0, 0] == 4, method
            assert 31 not in ex.indices[1] or 4 in ex.indices[1]
            assert ex.indices[1, 0] == 17, method
    top = explain(D[4], D, method="topk", k=2)
    np.testing.assert_array_equal(top.indices[0], [4, 31])
    # Duplicates far apart (different blocks of the pruned sweep), first and later steps.
    big = rng.standard_normal((3 * kern.PRUNE_BLOCK, 8))
    big[300] = big[20]
    big[290] = big[150]
    sig = np.stack([big[300], 2 * big[7] + big[290]])
    for method in ("nnomp", "comp", "omp", "mp"):
        ex = explain(sig, big, method=method, k=2, lam=0.0)
        assert ex.indices[0, 0] == 20, method
        assert list(ex.indices[1]) == [7, 150], method


def test_both_signs_layout():
    X, D = problem(15, B=9, M=120, E=16)
    ex = explain(X, D, method="comp", k=4, both_signs=True)
    assert ex.indices.shape == (18, 4)
    plus, minus = ex.split_signs()
    assert_same(plus, explain(X, D, method="comp", k=4), atol=0)
    assert_same(minus, explain(-X, D, method="comp", k=4), atol=0)
    assert_same(ex, explain_reference(X, D, method="comp", k=4, both_signs=True))
    with pytest.raises(WeightscopeError, match="both_signs"):
        explain(X, D, k=4).split_signs()


def test_early_stop_pads_with_minus_one():
    # Every atom is negatively correlated with the signal: no non-negative combination helps.
    D = -np.eye(6)[:4] - 0.01
    x = np.ones(6)
    ex = explain(x, D, method="nnomp", k=3)
    np.testing.assert_array_equal(ex.indices, [[-1, -1, -1]])
    assert ex.fidelity[0] == 0 and np.isclose(ex.residual_norm[0], 1)
    # Signed OMP fits a signal in the span of 2 atoms exactly, then has nothing left to select.
    D2 = np.random.default_rng(3).standard_normal((10, 5))
    ex = explain(2 * D2[3] - D2[7], D2, method="omp", k=4)
    assert set(ex.indices[0, :2]) == {3, 7} and (ex.indices[0, 2:] == -1).all()
    assert ex.fidelity[0] > 1 - 1e-12


def test_signal_scale_is_irrelevant_and_reported():
    X, D = problem(16, B=5, M=80, E=12)
    a = explain(X, D, method="comp", k=3)
    b = explain(X * 1000.0, D * 3.0, method="comp", k=3)
    assert_same(a, b, atol=1e-12)
    np.testing.assert_allclose(b.signal_norm, 1000 * np.linalg.norm(X, axis=1))


# ------------------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("kwargs,match", [
    (dict(method="lasso"), "unknown method"),
    (dict(k=0), "k must be at least 1"),
    (dict(k=-2), "k must be at least 1"),
    (dict(k=31), "exceeds the dictionary size"),
    (dict(k=2.5), "k must be an integer"),
    (dict(lam=-0.1), "lam must be >= 0"),
    (dict(lam=float("nan")), "lam must be a finite"),
    (dict(method="nnomp", positive=False), "non-negative by definition"),
    (dict(method="comp", positive=False), "non-negative by definition"),
    (dict(chunk_size=0), "chunk_size"),
    (dict(method="omp", coherence_dictionary=np.ones((30, 4))), "only applies to method='comp'"),
    (dict(coherence_dictionary=np.ones((29, 4))), "29 rows but the dictionary has 30"),
])
def test_bad_arguments(kwargs, match):
    X, D = problem(0, B=3, M=30, E=6)
    with pytest.raises(WeightscopeError, match=match):
        explain(X, D, **kwargs)
    with pytest.raises(WeightscopeError, match=match):
        explain_reference(X, D, **kwargs)


def test_bad_arrays():
    X, D = problem(0, B=3, M=30, E=6)
    bad = X.copy()
    bad[1, 2] = np.nan
    with pytest.raises(WeightscopeError, match="signals contains NaN or inf .*row 1, column 2"):
        explain(bad, D)
    badD = D.copy()
    badD[5, 0] = np.inf
    with pytest.raises(WeightscopeError, match="dictionary contains NaN or inf"):
        explain(X, badD)
    with pytest.raises(WeightscopeError, match="coherence_dictionary contains NaN"):
        explain(X, D, coherence_dictionary=np.full((30, 3), np.nan))
    zero = X.copy()
    zero[2] = 0
    with pytest.raises(WeightscopeError, match="zero-norm signal.*row 2"):
        explain(zero, D)
    zeroD = D.copy()
    zeroD[7] = 0
    with pytest.raises(WeightscopeError, match="zero-norm atom.*row 7"):
        explain(X, zeroD)
    with pytest.raises(WeightscopeError, match="width 5 but dictionary atoms have width 6"):
        explain(X[:, :5], D)
    with pytest.raises(WeightscopeError, match="2-D"):
        explain(X[None], D)
    with pytest.raises(WeightscopeError, match="dictionary must be 2-D"):
        explain(X, D[0])
    with pytest.raises(WeightscopeError, match="real numeric"):
        explain(X.astype(complex), D)
    with pytest.raises(WeightscopeError, match="must not be empty"):
        explain(X, D[:0])


def test_shared_gram_rows_reuses_rows_and_changes_no_result(monkeypatch):
    """Calls inside shared_gram_rows() on the same dictionary share one Gram cache (built once, not per call) and
    give exactly the results of separate calls; another dictionary gets its own rows."""
    from weightscope.concepts.solvers import shared_gram_rows

    rng = np.random.default_rng(0)
    D = rng.standard_normal((600, 24))
    batches = [rng.standard_normal((200, 24)) for _ in range(3)]
    kw = dict(method="comp", k=4, lam=0.3, both_signs=True, chunk_size=64)
    alone = [explain(X, D, **kw) for X in batches]
    other_alone = explain(batches[0], D[::-1].copy(), **kw)
    built = []
    real = _fast._GramCache

    class Counting(real):
        def __init__(self, *a):
            built.append(a[1])
            super().__init__(*a)

    monkeypatch.setattr(_fast, "_GramCache", Counting)
    with shared_gram_rows():
        together = [explain(X, D.copy(), **kw) for X in batches]   # an equal copy: the rows are shared
        other = explain(batches[0], D[::-1].copy(), **kw)
    assert len(built) == 2   # one for D, one for the other dictionary
    for a, b in zip(alone, together):
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_array_equal(a.coefficients, b.coefficients)
    np.testing.assert_array_equal(other.indices, other_alone.indices)
    np.testing.assert_array_equal(other.coefficients, other_alone.coefficients)
    assert _fast._SHARED.get() is None   # outside the block nothing is kept
