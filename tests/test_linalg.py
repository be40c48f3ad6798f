import numpy as np
import pytest

from weightscope import linalg


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
