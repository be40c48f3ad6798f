"""The torch solver backend equals the Numba one (same supports, coefficients within 1e-5; METHODS.md s.14) on a
planted random dictionary, on a coherent real CLIP dictionary, and on the bundled model's heads; its NNLS is exact
(KKT); the device settings are checked; CUDA variants run where a GPU exists."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from weightscope.concepts.solvers import explain
from weightscope.concepts.solvers._common import KKT_TOL
from weightscope.core.compute import Compute, as_compute
from weightscope.core.errors import WeightscopeError

VARIANTS = [("topk", True), ("topk", False), ("mp", True), ("mp", False), ("omp", False), ("omp", True),
            ("nnomp", True), ("comp", True)]
ATTRIBUTES = Path("/work/shared/data/clip-attribute-embeddings/embeddings.npy")
TOL = 1e-5
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run benchmarks/gpu_check.sh there)")


#: A pick whose coefficient is below this on both paths was made at rounding level: the residual was already
#: explained to the precision of the float32 scores, whose noise (~1e-8) then decides whether a pursuit stops.
ROUNDING_PICK = 1e-8


def assert_same(a, b, atol=TOL):
    """Same supports (apart from rounding-level picks, see ROUNDING_PICK), coefficients and fits within atol."""
    real = (np.abs(a.coefficients) > ROUNDING_PICK) | (np.abs(b.coefficients) > ROUNDING_PICK)
    if a.method == "topk":  # a pure ranking of scores: every pick must agree
        real[:] = True
    np.testing.assert_array_equal(np.where(real, a.indices, -1), np.where(real, b.indices, -1))
    assert real.any()
    np.testing.assert_allclose(a.coefficients, b.coefficients, atol=atol, rtol=0)
    np.testing.assert_allclose(a.residual_norm, b.residual_norm, atol=atol, rtol=0)
    np.testing.assert_allclose(a.fidelity, b.fidelity, atol=atol, rtol=0)
    assert a.method == b.method and a.both_signs == b.both_signs


def planted(seed=0, B=120, M=800, E=48, k=4, dtype=np.float32):
    """Signals that are non-negative mixtures of k random atoms plus a little noise."""
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((M, E)).astype(dtype)
    idx = np.stack([rng.choice(M, k, replace=False) for _ in range(B)])
    X = np.einsum("bk,bke->be", rng.uniform(0.5, 2.0, (B, k)), D[idx].astype(np.float64))
    return X + 0.01 * rng.standard_normal(X.shape), D, idx


@pytest.mark.parametrize("method,positive", VARIANTS)
def test_torch_equals_numba_on_planted_dictionary(method, positive):
    X, D, _ = planted()
    kw = dict(method=method, k=6, positive=positive, both_signs=True, progress=False)
    assert_same(explain(X, D, **kw), explain(X, D, backend="torch", **kw))


@pytest.mark.parametrize("method", ["omp", "nnomp", "comp"])
def test_torch_recovers_planted_supports(method):
    X, D, idx = planted(seed=1, k=3)
    ex = explain(X, D, method=method, k=3, backend="torch", progress=False)
    assert np.mean([set(a) == set(b) for a, b in zip(ex.indices, idx)]) > 0.95


@pytest.mark.parametrize("method,positive", [("topk", True), ("omp", False), ("nnomp", True), ("comp", True)])
def test_torch_equals_numba_in_float64_and_small_chunks(method, positive):
    X, D, _ = planted(seed=2, dtype=np.float64)
    kw = dict(method=method, k=5, positive=positive, progress=False)
    assert_same(explain(X, D, **kw), explain(X, D, backend="torch", chunk_size=7, **kw))


def test_torch_comp_with_separate_coherence_dictionary():
    X, D, _ = planted(seed=3)
    H = np.random.default_rng(4).standard_normal((D.shape[0], 20))
    kw = dict(method="comp", k=5, lam=0.5, coherence_dictionary=H, progress=False)
    assert_same(explain(X, D, **kw), explain(X, D, backend="torch", **kw))


def coherent_problem(dtype=np.float32):
    """A strongly coherent real dictionary (mean cosine ~0.74): NNLS drops atoms from its passive set here.

    Signals: each concept's mean embedding and mixtures dominated by a few concepts, each plus noise of 30 % of
    its norm, so that no signal is explained exactly (past an exact fit, picks are made on rounding noise)."""
    if not ATTRIBUTES.exists():
        pytest.skip(f"needs the shared data set {ATTRIBUTES.parent} (present in CI)")
    emb = np.load(ATTRIBUTES).astype(np.float64)          # (173, 6, 768)
    D = emb[:, :5].reshape(-1, 768)                        # every phrasing is an atom
    D = (D / np.linalg.norm(D, axis=1, keepdims=True)).astype(dtype)
    rng = np.random.default_rng(0)
    mix = np.einsum("bc,ce->be", rng.uniform(0, 1, (60, 173)) ** 8, emb[:, 5])  # few dominant concepts each
    X = np.vstack([emb[:, 5], mix])
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    noise = rng.standard_normal(X.shape)
    return X + 0.3 * noise / np.linalg.norm(noise, axis=1, keepdims=True), D


@pytest.mark.parametrize("method,positive", VARIANTS)
def test_torch_equals_numba_on_clip_attribute_embeddings(method, positive):
    X, D = coherent_problem()
    kw = dict(method=method, k=5, positive=positive, both_signs=True, progress=False)
    assert_same(explain(X, D, **kw), explain(X, D, backend="torch", **kw))


def test_torch_nnls_is_exact_on_coherent_atoms():
    """KKT of every non-negative fit: zero gradient on the positive coefficients, none above KKT_TOL elsewhere."""
    X, D = coherent_problem(np.float64)
    ex = explain(X, D, method="comp", k=12, backend="torch", progress=False)
    Du = D  # unit float64 rows: the solver uses them as they are
    Xu = X / np.linalg.norm(X, axis=1, keepdims=True)
    n_zero = 0
    for x, sel, c in zip(Xu, ex.indices, ex.coefficients):
        A = Du[sel[sel >= 0]]
        c = c[sel >= 0]
        grad = A @ (x - c @ A)
        assert (c >= 0).all()
        np.testing.assert_allclose(grad[c > 0], 0, atol=1e-9)
        assert (grad[c == 0] <= 1e-9 + KKT_TOL).all()
        n_zero += int((c == 0).sum())
    assert n_zero > 0  # the coherent atoms do exercise the active set's removals


def test_torch_equals_numba_on_the_bundled_model(tmp_path):
    """Every write and read direction of every head of the bundled model, explained as inspect does it (its
    vocabulary cut to general:300 to keep the test short: the embedding dominates its time)."""
    from weightscope.concepts.embed import embed_concepts
    from weightscope.concepts.vocab import parse_vocabulary_spec
    from weightscope.decompose.head_svd import decompose_model
    from weightscope.decompose.joint import to_joint
    from weightscope.models.adapters import describe_model
    from weightscope import load_model   # the top-level one knows the bundled model

    loaded = load_model()
    weights = describe_model(loaded)
    concepts, _ = parse_vocabulary_spec("shapes_world,general:300")
    D = embed_concepts(loaded.model, loaded.tokenizer, concepts, normalize="l2", cache_dir=tmp_path, progress=False)
    svds = decompose_model(weights, progress=False)
    X = np.vstack([to_joint(weights, v[:s.rank]) for s in svds.values() for v in (s.write, s.read)])
    assert X.shape[0] > 500
    for method in ("comp", "omp"):
        kw = dict(method=method, k=5, both_signs=True, progress=False)
        assert_same(explain(X, D, **kw), explain(X, D, backend="torch", **kw))


def test_compute_settings_are_checked():
    assert as_compute(None) == Compute()
    assert as_compute("torch").backend == "torch"
    assert Compute().solver_backend() == "numba"
    assert Compute(backend="torch").solver_backend() == "torch"
    for bad in (dict(device="tpu"), dict(precision="fp8"), dict(backend="jax"), dict(device="mps:1")):
        with pytest.raises(WeightscopeError):
            Compute(**bad)
    with pytest.raises(WeightscopeError, match="backend"):
        explain(np.ones((1, 3)), np.eye(3), backend="jax")
    if not torch.cuda.is_available():
        with pytest.raises(WeightscopeError, match="no CUDA"):
            Compute(device="cuda").torch_device()
        assert Compute(device="auto").torch_device().type in ("cpu", "mps")


def test_low_precision_scores_keep_float64_refits():
    """bf16 correlations may pick other atoms at near-ties, but every fit on the picked atoms stays exact."""
    X, D, _ = planted(seed=5, dtype=np.float64)
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    ex = explain(X, D, method="omp", k=4, backend=Compute(precision="bf16", backend="torch"), progress=False)
    Du = D
    Xu = X / np.linalg.norm(X, axis=1, keepdims=True)
    for x, sel, c in zip(Xu, ex.indices, ex.coefficients):
        A = Du[sel[sel >= 0]]
        np.testing.assert_allclose(A @ (x - c[sel >= 0] @ A), 0, atol=1e-10)


# ------------------------------------------------------------------------------------------ CUDA

@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("method,positive", VARIANTS)
def test_cuda_equals_cpu(method, positive):
    X, D, _ = planted(seed=6, B=400, M=4000)
    kw = dict(method=method, k=6, positive=positive, both_signs=True, progress=False)
    assert_same(explain(X, D, **kw), explain(X, D, backend=Compute(device="cuda", backend="torch"), **kw), atol=1e-4)


@pytest.mark.cuda
@cuda
def test_cuda_clip_attribute_embeddings():
    X, D = coherent_problem()
    kw = dict(method="comp", k=5, both_signs=True, progress=False)
    assert_same(explain(X, D, **kw), explain(X, D, backend=Compute(device="cuda"), **kw), atol=1e-4)


# ------------------------------------------------------------------------------------------ embedding on a device

def _embed(model, compute, tmp_path):
    import open_clip

    from weightscope.concepts.embed import embed_concepts

    return embed_concepts(model, open_clip.get_tokenizer("ViT-B-32"), ["red", "a striped cat", "two dogs", "sky"],
                          normalize="l2", cache_dir=tmp_path, progress=False, compute=compute)


def test_bf16_embedding_is_close_to_fp32_and_cached_apart(tiny_model, tmp_path):
    fp32 = _embed(tiny_model, None, tmp_path)
    bf16 = _embed(tiny_model, Compute(precision="bf16"), tmp_path)
    err = np.abs(fp32 - bf16).max()
    assert 0 < err < 0.05  # bf16 has 8 bits of mantissa: close, and really computed in bf16
    np.testing.assert_array_equal(_embed(tiny_model, Compute(precision="bf16"), tmp_path), bf16)  # its own cache
    np.testing.assert_array_equal(_embed(tiny_model, Compute(), tmp_path), fp32)
    assert next(tiny_model.parameters()).device.type == "cpu"


@pytest.mark.cuda
@cuda
def test_cuda_embedding_equals_cpu(tiny_model, tmp_path):
    cpu = _embed(tiny_model, None, tmp_path / "a")
    gpu = _embed(tiny_model, Compute(device="cuda"), tmp_path / "b")
    np.testing.assert_allclose(gpu, cpu, atol=1e-4)
    assert next(tiny_model.parameters()).device.type == "cpu"  # moved back


# ------------------------------------------------------------------------------------------ batched factored SVD

def test_batched_factored_svd_equals_the_per_head_path():
    from weightscope.core.linalg import factored_svd, factored_svd_batched

    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((6, 40, 8)), rng.standard_normal((6, 8, 40))
    U, s, Vh = factored_svd_batched(A, B)
    for i in range(6):
        u, si, vh = factored_svd(A[i], B[i])
        np.testing.assert_allclose(s[i], si, rtol=1e-12)
        np.testing.assert_allclose(U[i], u, atol=1e-10)
        np.testing.assert_allclose(Vh[i], vh, atol=1e-10)
    # float32 factors (the stored weights): QR in float32, float64 core; singular values to float32 rounding
    U32, s32, _ = factored_svd_batched(A.astype(np.float32), B.astype(np.float32))
    np.testing.assert_allclose(s32, s, rtol=1e-5)


@pytest.mark.cuda
@cuda
def test_cuda_batched_factored_svd():
    from weightscope.core.linalg import factored_svd_batched

    rng = np.random.default_rng(1)
    A, B = rng.standard_normal((32, 768, 64)), rng.standard_normal((32, 64, 768))
    _, s_cpu, _ = factored_svd_batched(A, B)
    _, s_gpu, _ = factored_svd_batched(A, B, device="cuda")
    np.testing.assert_allclose(s_gpu, s_cpu, rtol=1e-10)
