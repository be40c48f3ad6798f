"""Factored SVD == dense SVD on real-sized random-init open_clip ViTs (issue 2 acceptance)."""
import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from weightscope import WeightscopeError, decompose_head, decompose_model, describe_model
from weightscope.decompose import head_factors

SEPARATED = 1e-3  # relative gap above which individual singular vectors are well defined


def _check_against_dense(weights, layer, head, kind="vo", **opts):
    h = decompose_head(weights, layer, head, kind=kind, **opts)
    A, B = head_factors(weights, layer, head, kind=kind, **opts)
    dense = torch.from_numpy(A @ B)  # materialised only here, for the reference
    U, S, Vh = (t.numpy() for t in torch.linalg.svd(dense))
    r = h.rank
    S = S[:r]
    assert np.max(np.abs(h.s - S) / S) <= 1e-5
    gaps = np.minimum(np.abs(np.diff(S, prepend=np.inf)), np.abs(np.diff(S, append=-np.inf))) / S[0]
    ok = gaps > SEPARATED
    assert ok.sum() >= r // 2, "random heads should have mostly separated singular values"
    cos_read = np.abs(np.sum(h.read * U[:, :r].T, axis=1))
    cos_write = np.abs(np.sum(h.write * Vh[:r], axis=1))
    assert np.all(cos_read[ok] >= 1 - 1e-5) and np.all(cos_write[ok] >= 1 - 1e-5)
    recon = (h.read.T * h.s) @ h.write
    assert np.linalg.norm(recon - A @ B) <= 1e-5 * np.linalg.norm(A @ B)


@pytest.mark.parametrize("fixture", ["vit_b16_weights", "vit_l14_weights"])
def test_factored_equals_dense_svd(fixture, request):
    weights = request.getfixturevalue(fixture)
    for layer in (0, weights.n_layers - 1):
        for head in range(weights.n_heads):
            _check_against_dense(weights, layer, head)


def _frobenius_of_product(P, Q):
    """||P @ Q||_F without forming the product: P = Qp Rp, so ||P Q|| = ||Rp Q|| (no cancellation)."""
    return np.linalg.norm(np.linalg.qr(P)[1] @ Q)


@pytest.mark.parametrize("fixture", ["vit_b16_weights", "vit_l14_weights"])
def test_every_head_reconstructs(fixture, request):
    weights = request.getfixturevalue(fixture)
    heads = decompose_model(weights, progress=False)
    assert len(heads) == weights.n_layers * weights.n_heads
    with threadpool_limits(limits=1, user_api="blas"):
        for (layer, head), h in heads.items():
            A, B = head_factors(weights, layer, head)
            # U S V^T - A B as one rank-2r product [U, A] @ [S V^T; -B], measured without the D x D matrix
            error = _frobenius_of_product(np.hstack([h.read.T, A]), np.vstack([h.s[:, None] * h.write, -B]))
            assert error <= 1e-5 * _frobenius_of_product(A, B)


def test_frobenius_helper_matches_dense():
    rng = np.random.default_rng(0)
    P, Q = rng.normal(size=(40, 6)), rng.normal(size=(6, 30))
    assert np.isclose(_frobenius_of_product(P, Q), np.linalg.norm(P @ Q), rtol=1e-12)


def test_options_qk_fold_ln_and_centering(vit_b16):
    weights = describe_model(vit_b16)
    _check_against_dense(weights, 11, 0, kind="qk")
    _check_against_dense(weights, 3, 5, fold_ln=True, center_write=True)
    h = decompose_head(weights, 3, 5, center_write=True)
    assert np.allclose(h.write.mean(axis=1), 0, atol=1e-12)


def test_decomposition_is_deterministic(tiny_model):
    w = describe_model(tiny_model)
    a, b = decompose_head(w, 1, 2), decompose_head(describe_model(tiny_model), 1, 2)
    assert np.array_equal(a.read, b.read) and np.array_equal(a.write, b.write) and np.array_equal(a.s, b.s)


def test_degenerate_singular_values_are_grouped(tiny_model):
    w = describe_model(tiny_model)
    attn = w.layers[0].attn
    # plant an exactly repeated singular value: orthonormal factors with s = (3, 3, 1, ...)
    rng = np.random.default_rng(0)
    D, dh = attn.read_v.shape[1:]
    Q1 = np.linalg.qr(rng.normal(size=(D, dh)))[0]
    Q2 = np.linalg.qr(rng.normal(size=(D, dh)))[0]
    s = np.linspace(1.0, 0.1, dh)
    s[:2] = 3.0
    attn.read_v[0] = Q1 * s
    attn.write_o[0] = Q2.T
    h = decompose_head(w, 0, 0)
    assert h.groups[0] == [0, 1]
    assert np.allclose(h.s[:2], 3.0)


def test_bad_indices_are_clear(tiny_model):
    w = describe_model(tiny_model)
    with pytest.raises(WeightscopeError, match=r"layer 2 is out of range: the model has 2 layers \(0-1\)"):
        decompose_head(w, 2, 0)
    with pytest.raises(WeightscopeError, match=r"head 4 is out of range: the model has 4 heads"):
        decompose_head(w, 0, 4)
    with pytest.raises(WeightscopeError, match=r"head 9 is out of range"):
        decompose_model(w, heads=[0, 9], progress=False)
    with pytest.raises(WeightscopeError, match="unknown matrix kind 'ov'"):
        decompose_head(w, 0, 0, kind="ov")
    assert decompose_head(w, -1, -1).layer == 1
