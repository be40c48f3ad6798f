"""Factored SVD == dense SVD on real-sized random-init open_clip ViTs (issue 2 acceptance); the VO and QK maps,
with and without ln_1 folded in, measured from the torch module itself on constructed inputs (issue 21)."""
import copy

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from weightscope import WeightscopeError, decompose_head, decompose_model, describe_model
from weightscope.decompose import head_factors

SEPARATED = 1e-3  # relative gap above which individual singular vectors are well defined


def _raw_vo(weights, layer, head):
    """W_VO of one head straight from the neutral arrays (no decompose code): read_v[h] @ write_o[h]."""
    attn = weights.layers[layer].attn
    return attn.read_v[head] @ attn.write_o[head]


def _check_against_dense(weights, layer, head, dense=None, kind="vo", **opts):
    """decompose_head == torch's dense SVD of ``dense`` (D, D), built by the caller without decompose code."""
    h = decompose_head(weights, layer, head, kind=kind, **opts)
    dense = _raw_vo(weights, layer, head) if dense is None else dense
    U, S, Vh = (t.numpy() for t in torch.linalg.svd(torch.from_numpy(dense)))
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
    assert np.linalg.norm(recon - dense) <= 1e-5 * np.linalg.norm(dense)


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


# ----------------------------------------------------------------------------------------------------------
# References measured from the torch module (float64 copy) on constructed inputs, sharing no decompose code.
# The asymmetric fixture has LayerNorm gains in 0.5-1.5 and non-zero biases, so a fold that drops, inverts or
# half-applies ln_1's gain, or a swapped query/key factor, moves these matrices far beyond the tolerances.

def _module_copy(model, layer):
    """A float64 copy of vision block ``layer`` with ln_1's shift zeroed (fold_ln folds the gain only)."""
    block = copy.deepcopy(model.visual.transformer.resblocks[layer]).double()
    with torch.no_grad():
        block.ln_1.bias.zero_()
    return block


def _standardised_basis(D):
    """D vectors with mean 0 and variance 1 spanning the mean-zero subspace: LayerNorm maps each b to gamma * b
    (up to 1/sqrt(1 + eps)). Also returns P (D, D), the projector onto that subspace (b_j = P e_j / P[0].std())."""
    P = np.eye(D) - 1.0 / D
    return P / P[0].std(), P


def _attention_scores(attn, queries, keys):
    """Bilinear part of each head's attention score, measured from the module's softmax output.

    queries (n, D), keys (m, D) are inputs of the attention module (already through ln_1, if any). Each
    sequence is [q_i, 0, k_1..k_m]; log p(q -> k_j) - log p(q -> 0) = s(q, k_j) - s(q, 0), and subtracting the
    same for the zero query leaves (q_i W_q)(k_j W_k)^T / sqrt(dh). Returns (H, n, m) = q W_QK^h k^T.
    """
    n, m, D = len(queries), len(keys), queries.shape[1]
    H = attn.num_heads
    x = torch.zeros(n + 1, m + 2, D, dtype=torch.float64)
    x[1:, 0] = torch.from_numpy(queries)
    x[:, 2:] = torch.from_numpy(keys)
    if not attn.batch_first:
        x = x.transpose(0, 1)
    with torch.no_grad():
        _, p = attn(x, x, x, need_weights=True, average_attn_weights=False)  # (B, H, L, L)
    logp = torch.log(p[:, :, 0, :]).numpy()  # row of the query token
    diff = logp[:, :, 2:] - logp[:, :, 1:2]  # (n+1, H, m): s(q, k_j) - s(q, 0)
    return (diff[1:] - diff[:1]).transpose(1, 0, 2) * np.sqrt(D // H)


def _value_output(attn, inputs, head):
    """Head ``head``'s output (n, D) for sequences of one repeated token (attention weights are then uniform, so
    the output is the token's value map exactly), minus the output for the zero token (the bias constant).
    The other heads are silenced by zeroing their out_proj columns in ``attn`` (a copy)."""
    D = inputs.shape[1]
    dh = D // attn.num_heads
    with torch.no_grad():
        keep = torch.zeros(D, dtype=torch.bool)
        keep[head * dh:(head + 1) * dh] = True
        attn.out_proj.weight[:, ~keep] = 0.0
        x = torch.zeros(len(inputs) + 1, 2, D, dtype=torch.float64)
        x[1:] = torch.from_numpy(inputs)[:, None, :]
        if not attn.batch_first:
            x = x.transpose(0, 1)
        out = attn(x, x, x, need_weights=False)[0]
        out = (out if attn.batch_first else out.transpose(0, 1))[:, 0].numpy()
    return out[1:] - out[:1]


def _rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def test_qk_singular_vectors_match_the_modules_attention_scores(asym_model):
    """Kind 3: left singular vectors of W_QK are query directions, right ones key directions (module's scores)."""
    weights = describe_model(asym_model)
    D = weights.width
    for layer in range(weights.n_layers):
        block = _module_copy(asym_model, layer)
        scores = _attention_scores(block.attn, np.eye(D), np.eye(D))  # (H, D, D): W_QK of each head
        for head in range(weights.n_heads):
            h = decompose_head(weights, layer, head, kind="qk")
            W = scores[head]
            assert _rel(W, W.T) > 0.5  # the matrix is far from symmetric: swapping query and key shows
            # u_i^T W = s_i v_i^T and W v_i = s_i u_i, against the measured scores
            np.testing.assert_allclose(h.read @ W, h.s[:, None] * h.write, atol=1e-9 * h.s[0])
            np.testing.assert_allclose(W @ h.write.T, h.read.T * h.s, atol=1e-9 * h.s[0])
            # the top query direction meets the top key direction with the largest score: s_0
            assert np.isclose(h.read[0] @ W @ h.write[0], h.s[0], rtol=1e-9)


def test_fold_ln_maps_equal_the_module_with_ln_1_shift_zeroed(asym_model):
    """Kind 1: fold_ln for VO and QK equals the map measured through ln_1 (gain only) and the attention module."""
    weights = describe_model(asym_model)
    D = weights.width
    basis, P = _standardised_basis(D)
    for layer in range(weights.n_layers):
        block = _module_copy(asym_model, layer)
        eps = block.ln_1.eps
        with torch.no_grad():
            ln_basis = block.ln_1(torch.from_numpy(basis)).numpy()  # gamma * b / sqrt(1 + eps)
        gamma = weights.layers[layer].ln_1.scale
        scores = _attention_scores(block.attn, ln_basis, ln_basis) * (1 + eps)  # P diag(g) W_QK diag(g) P
        for head in range(weights.n_heads):
            # QK: both sides see the gain
            A, B = head_factors(weights, layer, head, kind="qk", fold_ln=True)
            h = decompose_head(weights, layer, head, kind="qk", fold_ln=True)
            measured = scores[head] * P[0].std() ** 2
            assert _rel(P @ (h.read.T * h.s) @ h.write @ P, measured) <= 1e-9
            assert _rel(P @ A @ B @ P, measured) <= 1e-9
            # VO: the read side sees the gain; the write side optionally loses its mean
            vo = _value_output(copy.deepcopy(block.attn), ln_basis, head) * np.sqrt(1 + eps) * P[0].std()
            for center in (False, True):
                h = decompose_head(weights, layer, head, fold_ln=True, center_write=center)
                expect = vo @ P if center else vo  # P diag(g) W_VO (P)
                assert _rel(P @ (h.read.T * h.s) @ h.write, expect) <= 1e-9
            # the gains matter: the unfolded map is far from the folded one
            assert _rel(P @ _raw_vo(weights, layer, head), vo) > 0.1
        assert np.ptp(gamma) > 0.5


def test_unfolded_vo_equals_the_modules_value_output(asym_model):
    """Without options W_VO is the attention module's value-output map on its own input (no ln_1)."""
    weights = describe_model(asym_model)
    D = weights.width
    for layer in range(weights.n_layers):
        block = _module_copy(asym_model, layer)
        for head in range(weights.n_heads):
            measured = _value_output(copy.deepcopy(block.attn), np.eye(D), head)
            h = decompose_head(weights, layer, head)
            assert _rel((h.read.T * h.s) @ h.write, measured) <= 1e-9
            _check_against_dense(weights, layer, head, dense=measured)


def test_options_on_vit_b16_against_raw_parameters(vit_b16):
    """QK and fold_ln + centring on ViT-B-16, the dense reference built from the module's raw parameters."""
    weights = describe_model(vit_b16)
    blocks = vit_b16.visual.transformer.resblocks
    D, dh = weights.width, weights.width // weights.n_heads

    def rows(layer, part, head):  # (dh, D) rows of W_q / W_k / W_v for one head, from in_proj_weight
        w = blocks[layer].attn.in_proj_weight.detach().double().numpy()
        return w[part * D + head * dh: part * D + (head + 1) * dh]

    _check_against_dense(weights, 11, 0, dense=rows(11, 0, 0).T @ rows(11, 1, 0), kind="qk")
    gamma = blocks[3].ln_1.weight.detach().double().numpy()
    w_o = blocks[3].attn.out_proj.weight.detach().double().numpy()[:, 5 * dh:6 * dh]  # (D, dh)
    P = np.eye(D) - 1.0 / D
    _check_against_dense(weights, 3, 5, dense=(gamma[:, None] * rows(3, 2, 5).T) @ w_o.T @ P,
                         fold_ln=True, center_write=True)
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


def test_index_selection_and_options_pass_through(asym_model):
    from weightscope.decompose import check_index

    w = describe_model(asym_model)
    assert check_index(np.int64(-1), 4, "head") == 3 and check_index(0, 4, "head") == 0
    for bad in (True, 1.0, "1"):
        with pytest.raises(WeightscopeError, match="head index must be an integer"):
            check_index(bad, 4, "head")
    with pytest.raises(WeightscopeError, match=r"head -5 is out of range"):
        check_index(-5, 4, "head")
    heads = decompose_model(w, layers=1, heads=[3, -1, 0], progress=False)
    assert list(heads) == [(1, 0), (1, 3)]  # sorted, duplicates merged, negatives counted from the end
    assert len(decompose_model(w, layers=[0], progress=False)) == w.n_heads
    assert len(decompose_model(w, heads=2, progress=False)) == w.n_layers
    # every option reaches each head: kind, fold_ln, center_write and rtol
    ref = {(l, h): decompose_head(w, l, h, "qk", True, False, 0.5) for l in range(2) for h in range(4)}
    got = decompose_model(w, kind="qk", fold_ln=True, rtol=0.5, progress=False)
    for key, h in got.items():
        assert h.kind == "qk" and (h.layer, h.head) == key
        np.testing.assert_array_equal(h.s, ref[key].s)
        assert h.groups == ref[key].groups and h.groups  # rtol 0.5 ties many values
    centred = decompose_model(w, center_write=True, progress=False)[1, 1]
    np.testing.assert_allclose(centred.write.mean(axis=1), 0, atol=1e-12)
    # default rtol 1e-3: a relative gap of 0.9e-3 ties, 1.1e-3 does not (decompose_head and decompose_model)
    attn = w.layers[0].attn
    D, dh = attn.read_v.shape[1:]
    Vt = np.linalg.qr(np.random.default_rng(8).normal(size=(D, dh)))[0].T
    s = np.r_[1.0, 0.5, 0.5 - 0.9e-3, 0.2, 0.2 - 1.1e-3, np.linspace(0.1, 0.01, dh - 5)]
    attn.write_o[3] = np.linalg.solve(np.linalg.qr(attn.read_v[3])[1], s[:, None] * Vt)
    assert decompose_head(w, 0, 3).groups == [[1, 2]]
    assert decompose_model(w, layers=[0], heads=[3], progress=False)[0, 3].groups == [[1, 2]]
    # the defaults are the raw factors: no fold, no centring, value-output
    A, B = head_factors(w, 1, 1)
    assert np.array_equal(A, w.layers[1].attn.read_v[1]) and np.array_equal(B, w.layers[1].attn.write_o[1])
    # HeadSVD.matrix is U S V^T; rank is the number of singular values
    h = decompose_head(w, 1, 1)
    np.testing.assert_allclose(h.matrix(), _raw_vo(w, 1, 1), atol=1e-12)
    assert h.rank == w.width // w.n_heads
    assert decompose_head(w, 0, 0, rtol=1.0).groups == [list(range(h.rank))]


def _batched_equals_per_head(model, device, atol):
    weights = describe_model(model)
    for kind in ("vo", "qk"):
        per_head = decompose_model(weights, kind=kind, progress=False)
        batched = decompose_model(weights, kind=kind, progress=False, device=device)
        assert per_head.keys() == batched.keys()
        for key, a in per_head.items():
            b = batched[key]
            assert (a.rank, a.groups) == (b.rank, b.groups), key
            np.testing.assert_allclose(b.s, a.s, rtol=1e-12, atol=1e-14)
            r = a.rank   # directions above rounding level are unique up to the fixed sign
            np.testing.assert_allclose(b.read[:r], a.read[:r], atol=atol)
            np.testing.assert_allclose(b.write[:r], a.write[:r], atol=atol)


def test_batched_path_refuses_a_bad_device_in_one_line(asym_model):
    weights = describe_model(asym_model)
    with pytest.raises(WeightscopeError, match="not one of"):
        decompose_model(weights, progress=False, device="tpu")


def test_batched_device_path_equals_the_per_head_path(asym_model):
    """decompose_model(device=...) (one batched factored SVD of all heads, here on the CPU) == head by head."""
    _batched_equals_per_head(asym_model, "cpu", 1e-10)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run benchmarks/gpu_check.sh there)")
def test_batched_cuda_path_equals_the_per_head_path(asym_model):
    _batched_equals_per_head(asym_model, "cuda", 1e-8)
