import numpy as np
import pytest

from weightscope.core import linalg


def test_factored_svd_matches_dense_on_random_factors():
    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(50, 6)), rng.normal(size=(6, 40))
    U, s, Vh = linalg.factored_svd(A, B)
    s_ref = np.linalg.svd(A @ B, compute_uv=False)[:6]
    assert np.allclose(s, s_ref, rtol=1e-12)
    assert np.allclose((U * s) @ Vh, A @ B, atol=1e-12)
    assert np.allclose(U.T @ U, np.eye(6), atol=1e-12) and np.allclose(Vh @ Vh.T, np.eye(6), atol=1e-12)


def test_signs_are_deterministic_and_follow_the_convention():
    rng = np.random.default_rng(1)
    A, B = rng.normal(size=(30, 4)), rng.normal(size=(4, 30))
    U1, _, V1 = linalg.factored_svd(A, B)
    # the same matrix from differently-scaled factors gives identical vectors
    U2, _, V2 = linalg.factored_svd(-2.0 * A, -0.5 * B)
    assert np.array_equal(np.sign(U1), np.sign(U2)) and np.allclose(U1, U2) and np.allclose(V1, V2)
    pivot = np.argmax(np.abs(U1), axis=0)
    assert np.all(U1[pivot, np.arange(4)] > 0)


def test_degenerate_groups():
    s = np.array([10.0, 9.9995, 5.0, 3.0, 2.9999, 2.99985, 1.0])
    assert linalg.degenerate_groups(s, rtol=1e-4) == [[0, 1], [3, 4, 5]]
    assert linalg.degenerate_groups(np.array([3.0, 2.0, 1.0])) == []


def test_null_space_and_projections():
    rng = np.random.default_rng(2)
    W = rng.normal(size=(3, 8))
    N = linalg.null_space(W)
    assert N.shape == (5, 8)
    assert np.allclose(W @ N.T, 0, atol=1e-12)
    x = rng.normal(size=(4, 8))
    inside = linalg.project_onto(x, N)
    assert np.allclose(W @ (x - inside).T, W @ x.T)  # moving inside the null space keeps W x
    assert np.allclose(linalg.project_out(x, N) + inside, x)
    assert np.allclose(W @ inside.T, 0, atol=1e-12)


def test_principal_angles_against_known_configuration():
    e = np.eye(4)
    P = e[[0, 1]]
    theta = 0.3
    Q = np.stack([e[0], np.cos(theta) * e[1] + np.sin(theta) * e[2]])
    ang = linalg.principal_angles(P, Q)
    assert np.allclose(ang, [0.0, theta], atol=1e-7)


def test_factored_svd_rejects_mismatched_factors():
    with pytest.raises(ValueError, match=r"A \(D, r\) and B \(r, N\)"):
        linalg.factored_svd(np.ones((4, 2)), np.ones((3, 4)))


def test_nearest_orthogonal_is_scipys_procrustes_and_recovers_a_rotation():
    from scipy.linalg import orthogonal_procrustes

    rng = np.random.default_rng(4)
    M = rng.standard_normal((5, 5))
    Q = linalg.nearest_orthogonal(M)
    np.testing.assert_allclose(Q @ Q.T, np.eye(5), atol=1e-12)
    np.testing.assert_allclose(Q, orthogonal_procrustes(np.eye(5), M)[0], atol=1e-12)
    # a rotation scaled by positive weights is recovered exactly
    R = np.linalg.qr(rng.standard_normal((4, 4)))[0]
    np.testing.assert_allclose(linalg.nearest_orthogonal(np.diag([3.0, 2.0, 1.0, 0.5]) @ R), R, atol=1e-12)
    with pytest.raises(ValueError, match="square"):
        linalg.nearest_orthogonal(np.ones((2, 3)))


# ------------------------------------------------------------------------------------------------ edges (issue 21)

def test_fix_signs_edges():
    # an all-zero column has no sign to fix: it stays as it is and its row of Vh is not zeroed
    U = np.array([[0.0, -2.0], [0.0, 1.0], [0.0, 2.0]])
    Vh = np.array([[1.0, 2.0], [3.0, 4.0]])
    U2, V2 = linalg.fix_signs(U, Vh)
    np.testing.assert_array_equal(U2, [[0.0, 2.0], [0.0, -1.0], [0.0, -2.0]])  # tie |-2| = |2|: the first wins
    np.testing.assert_array_equal(V2, [[1.0, 2.0], [-3.0, -4.0]])
    E, F = linalg.fix_signs(np.zeros((3, 0)), np.zeros((0, 4)))
    assert E.shape == (3, 0) and F.shape == (0, 4)


def test_factored_singular_values_match_dense():
    rng = np.random.default_rng(7)
    A, B = rng.normal(size=(30, 5)), rng.normal(size=(5, 25))
    np.testing.assert_allclose(linalg.factored_singular_values(A, B), np.linalg.svd(A @ B, compute_uv=False)[:5],
                               rtol=1e-12)


def test_degenerate_group_edges():
    assert linalg.degenerate_groups(np.array([2.0, 2.0])) == [[0, 1]]
    assert linalg.degenerate_groups(np.array([2.0])) == []
    assert linalg.degenerate_groups(np.zeros(3)) == []
    # the tolerance is relative to the largest value and inclusive: a gap of exactly rtol * s[0] ties
    assert linalg.degenerate_groups(np.array([4.0, 3.0, 2.5]), rtol=0.125) == [[1, 2]]
    assert linalg.degenerate_groups(np.array([4.0, 3.0, 2.5]), rtol=0.124) == []
    assert linalg.linked_runs(np.array([True, False, True, True])) == [[0, 1], [2, 3, 4]]
    assert linalg.linked_runs(np.array([False, False])) == []


def test_rank_and_bases():
    assert linalg.numerical_rank(np.array([1.0, 1e-17])) == 1
    assert linalg.numerical_rank(np.array([1.0, 1e-3]), rtol=1e-3) == 1  # strictly above rtol * s[0]
    assert linalg.numerical_rank(np.array([1.0, 2e-3]), rtol=1e-3) == 2
    assert linalg.numerical_rank(np.array([1.0, 1e-14]), shape=(10, 10)) == 2  # default rtol: 10 * eps
    assert linalg.numerical_rank(np.array([1.0, 1e-15]), shape=(10, 10)) == 1
    assert linalg.numerical_rank(np.zeros(2)) == 0 and linalg.numerical_rank(np.zeros(0)) == 0
    B = linalg.orthonormal_basis(np.array([[1.0, 0, 0], [2.0, 0, 0], [0, 0, 3.0]]))
    assert B.shape == (2, 3)
    np.testing.assert_allclose(B @ B.T, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(np.abs(B).sum(axis=0), [1.0, 0.0, 1.0], atol=1e-12)
    assert linalg.orthonormal_basis(np.zeros((2, 3))).shape == (0, 3)
    assert linalg.null_space(np.array([[1.0, 0.0, 0.0]])).shape == (2, 3)
    assert linalg.null_space(np.array([[1.0, 1e-3, 0.0]]), rtol=1e-2).shape == (2, 3)


def test_angles_and_normalisation_edges():
    assert linalg.angles_from_cosines(np.zeros((0, 3))).shape == (0,)
    # rounding can push a cosine past 1: it is clipped, not NaN
    np.testing.assert_array_equal(linalg.angles_from_cosines(np.array([[1.0 + 1e-12]])), [0.0])
    e = np.eye(3)
    np.testing.assert_allclose(linalg.principal_angles(e[[0]], e[[1]]), [np.pi / 2], atol=1e-12)
    X = np.array([[3.0, 4.0], [0.0, 0.0], [1e-13, 0.0]])
    np.testing.assert_array_equal(linalg.normalize_rows(X), [[0.6, 0.8], [0.0, 0.0], [0.0, 0.0]])
    np.testing.assert_array_equal(linalg.normalize_rows(X, eps=1e-14)[2], [1.0, 0.0])
    np.testing.assert_array_equal(linalg.normalize_rows(np.array([[0.5, 0.0]]), eps=0.5), [[0.0, 0.0]])  # strict


def test_plain_sequences_and_single_vectors_are_accepted():
    assert linalg.degenerate_groups([2.0, 2.0, 1.0]) == [[0, 1]]
    B = linalg.orthonormal_basis(np.array([3.0, 4.0]))  # one vector (D,) is one row
    np.testing.assert_allclose(np.abs(B), [[0.6, 0.8]], atol=1e-12)
    assert linalg.orthonormal_basis([[0.0, 0.0]]).shape == (0, 2)
    np.testing.assert_allclose(linalg.normalize_rows([[0.0, 2.0]]), [[0.0, 1.0]])
    np.testing.assert_allclose(linalg.normalize_rows(np.array([[3, 4]])), [[0.6, 0.8]])  # integers are fine
    assert linalg.null_space([1.0, 0.0]).shape == (1, 2)


def test_basis_tolerance_is_relative_and_empty_inputs():
    assert linalg.orthonormal_basis(np.diag([100.0, 1e-9])).shape == (1, 2)  # 1e-9 < 1e-10 * 100
    assert linalg.orthonormal_basis(np.diag([100.0, 1e-7])).shape == (2, 2)
    assert linalg.orthonormal_basis(np.zeros((0, 3))).shape == (0, 3)
    assert linalg.null_space(np.zeros((0, 3))).shape == (3, 3)
