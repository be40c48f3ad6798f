"""SING part 2: the translator T (weightscope.analyses.sing.translator) and steering through it (weightscope.analyses.sing.steering).

References never share the code under test: the ridge against its closed-form normal equations and a brute-force
leave-one-out in numpy, the MLP forward against scikit-learn's own predict and its products against central finite
differences, the optimum against random search over the null space, angles from arccos, logits from W f + b.
"""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPRegressor

from weightscope.core.errors import WeightscopeError
from weightscope.models.linear_heads import head_from_arrays
from weightscope.analyses.sing import (Translator, check_widths, fit_translator, gradient_path, head_geometry,
                              identity_translator, load_translator, save_translator, steer, steer_through,
                              translated_geometry, translated_scores)


def _deg(x, y):
    return np.degrees(np.arccos(np.clip(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)), -1, 1)))


def _rel_logit_change(head, f, g):
    base = head.weight @ f + head.bias
    return np.max(np.abs(head.weight @ g + head.bias - base)) / np.max(np.abs(base))


def _random_linear(rng, F, E):
    return Translator("linear", [rng.normal(size=(F, E)) / np.sqrt(F)], [0.3 * rng.normal(size=E)])


def _random_mlp(rng, F, E, hidden=(48, 32)):
    sizes = (F, *hidden, E)
    return Translator("mlp", [rng.normal(size=(a, b)) / np.sqrt(a) for a, b in zip(sizes[:-1], sizes[1:])],
                      [0.1 * rng.normal(size=b) for b in sizes[1:]])


# ------------------------------------------------------------------------------------------------ fitting

def test_planted_linear_map_is_recovered():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 24))
    M0, c0 = rng.normal(size=(24, 12)), rng.normal(size=12)
    T = fit_translator(X, X @ M0 + c0)
    rep = T.report
    assert (rep.kind, rep.n_train, rep.n_test, rep.in_width, rep.out_width) == ("linear", 160, 40, 24, 12)
    assert rep.r2 >= 0.99 and rep.mean_cosine >= 0.99
    M, c = T.linear_map
    assert np.allclose(M, M0, atol=1e-4) and np.allclose(c, c0, atol=1e-4)
    assert np.allclose(T(X[:5]), X[:5] @ M0 + c0, atol=1e-4) and T(X[0]).shape == (12,)


def test_ridge_equals_normal_equations_and_brute_force_loo_choice():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 6))
    Y = X @ rng.normal(size=(6, 3)) + 1.5 * rng.normal(size=(40, 3)) + 2.0
    alphas = [1e-3, 1.0, 10.0, 100.0, 1e4]
    T = fit_translator(X, Y, alphas=alphas, seed=3)

    def ridge(Xa, Ya, alpha):      # intercept unpenalised: centre, solve the normal equations
        xm, ym = Xa.mean(0), Ya.mean(0)
        M = np.linalg.solve((Xa - xm).T @ (Xa - xm) + alpha * np.eye(Xa.shape[1]), (Xa - xm).T @ (Ya - ym))
        return M, ym - xm @ M

    X_tr, X_te, Y_tr, Y_te = train_test_split(X, Y, test_size=0.2, random_state=3)
    loo = []
    for a in alphas:
        err = 0.0
        for i in range(len(X_tr)):
            keep = np.arange(len(X_tr)) != i
            M, c = ridge(X_tr[keep], Y_tr[keep], a)
            err += np.sum((X_tr[i] @ M + c - Y_tr[i]) ** 2)
        loo.append(err)
    assert T.report.alpha == alphas[int(np.argmin(loo))]
    # held-out figures of the training-split fit, recomputed by hand
    M, c = ridge(X_tr, Y_tr, T.report.alpha)
    pred = X_te @ M + c
    r2 = 1 - np.sum((Y_te - pred) ** 2) / np.sum((Y_te - Y_te.mean(0)) ** 2)
    cos = np.mean(np.sum(pred * Y_te, 1) / (np.linalg.norm(pred, axis=1) * np.linalg.norm(Y_te, axis=1)))
    assert T.report.r2 == pytest.approx(r2, abs=1e-9) and T.report.mean_cosine == pytest.approx(cos, abs=1e-9)
    # the returned translator is the refit on all pairs at that alpha
    M_all, c_all = ridge(X, Y, T.report.alpha)
    assert np.allclose(T.linear_map[0], M_all, atol=1e-9) and np.allclose(T.linear_map[1], c_all, atol=1e-9)


def test_mlp_forward_matches_sklearn_and_products_match_finite_differences():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(120, 10))
    Y = np.tanh(X @ rng.normal(size=(10, 5)))
    T = fit_translator(X, Y, "mlp", hidden=(16, 12), max_iter=60, seed=4)
    assert T.kind == "mlp" and T.report.alpha is None and T.report.n_iter == 60 and len(T.weights) == 3
    ref = MLPRegressor(hidden_layer_sizes=(16, 12), activation="relu", random_state=4, max_iter=60)
    with pytest.warns(Warning):          # sklearn's own refit on all pairs (unconverged at 60 epochs)
        ref.fit(X, Y)
    assert np.allclose(T(X), ref.predict(X), atol=1e-12)
    f, g, v, h = X[0], rng.normal(size=5), rng.normal(size=10), 1e-6
    fd = (T(f + h * v) - T(f - h * v)) / (2 * h)
    assert T.vjp(f, g) @ v == pytest.approx(fd @ g, rel=1e-6)
    assert np.allclose(T.jvp(f, v), fd, atol=1e-7)
    batch = T.vjp(X[:4], np.tile(g, (4, 1)))
    assert np.allclose(batch[0], T.vjp(f, g)) and batch.shape == (4, 10)


def test_fit_is_deterministic_and_checks_input_before_fitting(monkeypatch):
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(30, 4)), rng.normal(size=(30, 3))
    a, b = fit_translator(X, Y), fit_translator(X, Y)
    assert np.array_equal(a.linear_map[0], b.linear_map[0]) and a.report == b.report
    import sklearn.linear_model
    monkeypatch.setattr(sklearn.linear_model, "RidgeCV", None)      # any fit attempt would crash, not one line
    bad = {"NaN": (np.where(np.eye(30, 4) > 0, np.nan, X), Y, {}),
           "30 feature rows but 29": (X, Y[:29], {}),
           "too few": (X[:4], Y[:4], {}),
           "kind": (X, Y, {"kind": "cubic"}),
           "alphas": (X, Y, {"alphas": [-1.0]}),
           "test_size": (X, Y, {"test_size": 1.5}),
           "2-D": (X[:, 0], Y, {})}
    for what, (x, y, kw) in bad.items():
        with pytest.raises(WeightscopeError, match=what) as err:
            fit_translator(x, y, **kw)
        assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------------ save / load

def test_save_load_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(50, 6))
    for T in (fit_translator(X, X @ rng.normal(size=(6, 4))), _random_mlp(rng, 6, 4), identity_translator(6)):
        path = save_translator(T, tmp_path / f"{T.kind}.safetensors")
        U = load_translator(path)
        assert (U.kind, U.in_width, U.out_width, U.report) == (T.kind, T.in_width, T.out_width, T.report)
        assert all(np.array_equal(a, b) for a, b in zip(U.weights + U.biases, T.weights + T.biases))
        assert np.array_equal(U(X), T(X))


def test_wrong_width_and_corrupt_files_get_one_line(tmp_path):
    from safetensors.numpy import save

    T = identity_translator(8)
    with pytest.raises(WeightscopeError, match=r"maps width 8 -> 8 but the classifier's features have width 16 "
                                               r"\(and the CLIP space 8\)"):
        check_widths(T, 16, 8)
    check_widths(T, 8, 8)
    good = save_translator(_random_mlp(np.random.default_rng(5), 8, 4), tmp_path / "t.safetensors").read_bytes()
    cases = {"truncated": good[: len(good) // 2], "garbage": b"\x00\x01 not a translator",
             "empty": b"", "foreign": save({"weight": np.zeros((2, 2))}),
             "lying header": good.replace(b'"n_layers":"3"', b'"n_layers":"2"')}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(WeightscopeError) as err:
            load_translator(tmp_path / name)
        assert "\n" not in str(err.value) and name in str(err.value), name
    with pytest.raises(WeightscopeError, match="not found"):
        load_translator(tmp_path / "missing.safetensors")


# ------------------------------------------------------------------------------------------------ steering

@pytest.fixture(scope="module")
def clip_head():
    from weightscope.concepts.embed import encode_texts
    from weightscope.analyses.zeroshot import zero_shot_head
    from weightscope.core.linalg import normalize_rows
    from weightscope.bundled import load_model
    from weightscope.shapes import world

    loaded = load_model()
    head = zero_shot_head(loaded, world.SHAPES)
    texts = ["a photo of a circle.", "a red shape", "a blue background", "a small shape"]
    return head, normalize_rows(encode_texts(loaded.model, loaded.tokenizer, texts, progress=False).astype(float))


def test_identity_translator_reproduces_part_one_on_the_bundled_clip_head(clip_head):
    head, T_text = clip_head
    geom = head_geometry(head)
    I = identity_translator(head.n_features)
    rng = np.random.default_rng(6)
    rand = rng.normal(size=head.n_features)
    worst = 0.0
    for f in (T_text[0], rand / np.linalg.norm(rand)):
        for t in T_text[1:]:
            for direction in (1, -1):
                for IS in (5.0, 40.0):
                    ref = steer(geom, f, t, IS, direction)
                    got = steer_through(geom, I, f, t, IS, direction)
                    worst = max(worst, abs(got.image_score - ref.image_score),
                                abs(got.attribute_score - ref.attribute_score))
                    assert got.max_image_score == pytest.approx(ref.max_image_score, abs=1e-6)
                    assert _rel_logit_change(head, f, got.f_tilde) <= 1e-6
    assert worst <= 1e-6


@pytest.mark.parametrize("F,E", [(64, 64), (64, 32), (96, 64), (40, 64)])
def test_steered_features_keep_logits_and_prediction(F, E):
    rng = np.random.default_rng(F + E)
    head = head_from_arrays(rng.normal(size=(8, F)), rng.normal(size=8))
    geom = head_geometry(head)
    for T in (_random_linear(rng, F, E), _random_mlp(rng, F, E)):
        for k in range(3):
            f, t = rng.normal(size=F), rng.normal(size=E)
            results = [gradient_path(geom, T, f, t, 30.0, d) for d in (1, -1)]
            if T.kind == "linear":
                results += [steer_through(geom, T, f, t, 30.0, d) for d in (1, -1)]
            for r in results:
                assert _rel_logit_change(head, f, r.f_tilde) <= 1e-6
                assert np.argmax(head.weight @ r.f_tilde) == np.argmax(head.weight @ f)
                assert np.linalg.norm(head.weight @ (r.f_tilde - f)) <= 1e-9 * np.linalg.norm(r.f_tilde - f)
                assert abs(_deg(T(f), T(r.f_tilde)) - 30.0) <= 1e-6          # IS hit to 1e-6 degrees
                assert r.attribute_score == pytest.approx(_deg(T(f), t) - _deg(T(r.f_tilde), t), abs=1e-6)
                assert (r.attribute_score > 0) == (r.direction == 1)


def test_closed_form_is_the_supremum_and_bounds_the_gradient_path():
    rng = np.random.default_rng(7)
    F, E = 40, 64                                     # null space 32-d: T(f) + S is a proper subspace of E
    for trial in range(4):
        head = head_from_arrays(rng.normal(size=(8, F)))
        geom = head_geometry(head)
        T = _random_linear(rng, F, E)
        assert translated_geometry(geom, T)[0].null_dim == 32
        f, t = rng.normal(size=F), rng.normal(size=E)
        # random search over equivalent features: none beats the optimum at its own image score
        Z = rng.normal(size=(3000, 32)) * rng.uniform(0.01, 3.0, size=(3000, 1)) * np.linalg.norm(f) / 6
        for z in Z[:: 60]:
            g = f + z @ geom.null
            IS, AS = _deg(T(f), T(g)), _deg(T(f), t) - _deg(T(g), t)
            try:
                best = steer_through(geom, T, f, t, IS, 1).attribute_score
            except WeightscopeError:
                continue
            assert AS <= best + 1e-9
        for d in (1, -1):
            try:
                opt = steer_through(geom, T, f, t, 25.0, d)
            except WeightscopeError:
                continue
            path = gradient_path(geom, T, f, t, 25.0, d)
            assert d * path.attribute_score <= d * opt.attribute_score + 1e-9
            assert opt.residual <= 1e-9


def test_full_range_optimum_is_the_great_circle_and_isotropic_flow_follows_it():
    rng = np.random.default_rng(8)
    # F - r = 56 >= E = 32: every direction of E is reachable, the optimum ignores the classifier
    for seed in range(2):
        head = head_from_arrays(rng.normal(size=(8, 64)))
        geom, T = head_geometry(head), _random_linear(rng, 64, 32)
        assert translated_geometry(geom, T)[0].null_dim == 32
        f, t = rng.normal(size=64), rng.normal(size=32)
        theta = _deg(T(f), t)
        for IS in (10.0, 40.0, theta + 10.0):
            got = steer_through(geom, T, f, t, IS, 1).attribute_score
            assert got == pytest.approx(theta - abs(IS - theta), abs=1e-6)
    # isotropic: head reads coords 0-2, T maps null coords 3-6 orthogonally onto E = 4, so M^T Pi_n M = I and the
    # flow is the great circle from T(f) to t: AS = IS before t is reached, as the closed form
    W = np.zeros((3, 12))
    W[:, :3] = rng.normal(size=(3, 3))
    M = np.zeros((12, 4))
    M[:3] = rng.normal(size=(3, 4))
    M[3:7] = np.linalg.qr(rng.normal(size=(4, 4)))[0]
    head, T = head_from_arrays(W), Translator("linear", [M], [np.zeros(4)])
    geom = head_geometry(head)
    f, t = rng.normal(size=12), rng.normal(size=4)
    theta = _deg(T(f), t)
    for IS in (5.0, min(40.0, theta - 1.0)):
        path, opt = gradient_path(geom, T, f, t, IS, 1), steer_through(geom, T, f, t, IS, 1)
        assert path.attribute_score == pytest.approx(opt.attribute_score, abs=1e-6)
        assert path.attribute_score == pytest.approx(IS, abs=1e-6)


def test_steering_errors_are_one_line():
    rng = np.random.default_rng(9)
    head = head_from_arrays(rng.normal(size=(4, 10)))
    geom = head_geometry(head)
    f = rng.normal(size=10)
    mlp = _random_mlp(rng, 10, 6)
    with pytest.raises(WeightscopeError, match="MLP translator has no single linear map"):
        steer_through(geom, mlp, f, rng.normal(size=6))
    with pytest.raises(WeightscopeError, match="maps width 12 -> 12 but the classifier's features have width 10"):
        steer_through(geom, identity_translator(12), f, rng.normal(size=12))
    with pytest.raises(WeightscopeError, match="width 6"):
        gradient_path(geom, mlp, f, rng.normal(size=5))
    # f and t both in the null space, 20 deg apart: the flow reaches t at IS = 20 and stalls there
    I = identity_translator(10)
    u, v = geom.null[0], geom.null[1]
    t = np.cos(np.radians(20)) * u + np.sin(np.radians(20)) * v
    with pytest.raises(WeightscopeError, match=r"stalls at IS = 20\.00 deg") as err:
        gradient_path(geom, I, u, t, 40.0)
    assert "\n" not in str(err.value)
    assert gradient_path(geom, I, u, t, 15.0).attribute_score == pytest.approx(15.0, abs=1e-6)
    assert translated_scores(I, u, t, t) == pytest.approx((20.0, 20.0), abs=1e-9)
