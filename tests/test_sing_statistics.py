"""SING part 2: multi-image attribute statistics (weightscope.analyses.sing.statistics).

References never share the code under test: hand-derived angles in a 6-d world, per-pair steering through the
single-feature functions, aggregates recomputed with plain numpy from the (n, m) arrays.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from weightscope.core.errors import WeightscopeError
from weightscope.models.linear_heads import head_from_arrays
from weightscope.analyses.sing import (SING_AS_THRESHOLD_DEG, SING_IS_THRESHOLD_DEG, AttributeStatistics, Translator,
                              attribute_statistics, flag_shares, gradient_path, head_geometry, identity_translator,
                              steer_through)


def _problem(seed=0, n=12, m=5, F=20, E=16, C=4):
    rng = np.random.default_rng(seed)
    head = head_from_arrays(rng.normal(size=(C, F)), rng.normal(size=C), [f"c{i}" for i in range(C)])
    T = Translator("linear", [rng.normal(size=(F, E)) / np.sqrt(F)], [0.3 * rng.normal(size=E)])
    texts = [f"text {j}" for j in range(m)]
    return head, head_geometry(head), T, rng.normal(size=(n, F)), texts, rng.normal(size=(m, E))


def test_batched_scores_equal_single_feature_steering():
    head, geom, T, X, texts, Tt = _problem(F=20, E=16)      # null space 16-d, image 16-d: everything reachable
    Tt[0] = T(X[0])                 # t parallel to T(f) for image 0: the closed form's degenerate case
    for path, single in (("optimal", steer_through), ("gradient", gradient_path)):
        st = attribute_statistics(geom, head, T, X[:6], texts, Tt, image_score=30.0, path=path)
        for i in range(6):
            for j in range(len(texts)):
                for d, arr in ((1, st.as_towards), (-1, st.as_away)):
                    try:
                        ref = single(geom, T, X[i], Tt[j], 30.0, d).attribute_score
                    except WeightscopeError:
                        ref = np.nan
                    assert (np.isnan(ref) and np.isnan(arr[i, j])) or abs(arr[i, j] - ref) <= 1e-6, (path, i, j, d)
        # T(f) already is t: no move brings it closer; the optimum turns away by IS, the flow cannot start
        assert (np.isnan(st.as_towards[0, 0]) if path == "gradient"
                else st.as_towards[0, 0] == pytest.approx(-30.0, abs=1e-9))
    # a classifier whose null space reaches only part of E: some pairs out of reach on the optimal path
    head, geom, T, X, texts, Tt = _problem(seed=1, F=12, E=16)
    st = attribute_statistics(geom, head, T, X, texts, Tt, image_score=60.0, path="optimal")
    assert st.image_dim == 8 and 0 < st.reachable.mean() <= 1
    for i, j in [(0, 0), (3, 2), (7, 4)]:
        for d, arr in ((1, st.as_towards), (-1, st.as_away)):
            try:
                ref = steer_through(geom, T, X[i], Tt[j], 60.0, d).attribute_score
                assert arr[i, j] == pytest.approx(ref, abs=1e-9)
            except WeightscopeError:
                assert np.isnan(arr[i, j])


def test_hand_checkable_world():
    # identity T in R^6; the head reads coords 0 and 1; images have row part on coord 0 only, null part on coord 3
    head = head_from_arrays(np.array([[1.0, 0, 0, 0, 0, 0], [0, 1.0, 0, 0, 0, 0]]), None, ["a", "b"])
    geom, I = head_geometry(head), identity_translator(6)
    X = np.array([[1.0, 0, 0, 1.0, 0, 0], [2.0, 0, 0, 2.0 * np.tan(np.radians(10)), 0, 0]])
    texts = ["row, unseen", "null", "row, seen"]
    Tt = np.eye(6)[[1, 2, 0]]
    for path in ("optimal", "gradient"):
        st = attribute_statistics(geom, head, I, X, texts, Tt, image_score=40.0, path=path,
                                  families={"row": ["row, unseen", "row, seen"], "null": ["null"]})
        # f_row = (x0, 0, ...): IS = atan(null / row part); coord-1 and coord-2 texts stay at 90 deg (AS 0),
        # coord 0 comes closer by exactly IS
        assert np.allclose(st.is_row, [45.0, 10.0], atol=1e-9)
        assert np.allclose(st.as_row, [[0, 0, 45.0], [0, 0, 10.0]], atol=1e-9)
        # a null text moves freely: |AS| = IS on the optimum, the most any move can give (triangle inequality); the
        # flow also shrinks f's coord-3 part (Pi_n of the gradient's -cos f^ term), so it stays a little below
        if path == "optimal":
            assert np.allclose(st.as_towards[:, 1], 40.0, atol=1e-9) and np.allclose(st.as_away[:, 1], -40.0, atol=1e-9)
        else:
            assert np.all((st.as_towards[:, 1] > 35.0) & (st.as_towards[:, 1] < 40.0))
            assert np.all((st.as_away[:, 1] < -35.0) & (st.as_away[:, 1] > -40.0))
        if path == "optimal":       # the orthogonal row text never moves: every f~ stays at 90 deg from it
            assert np.allclose(st.abs_as[:, 0], 0.0, atol=1e-9)
        else:                       # its projected gradient is zero: SING's flow cannot start
            assert np.isnan(st.abs_as[:, 0]).all() and st.per_text()[0]["share_reachable"] == 0.0
        fl = st.per_text()
        # IS_row 45 > 12 flags image 0 for every text; AS_row 10 > 4 flags image 1 for "row, seen" only
        assert [r["flagged_share"] for r in fl] == [0.5, 0.5, 1.0]
        assert list(st.predicted) == [0, 0]


def test_aggregates_equal_numpy_recomputation():
    # IS = 120 deg on a 4-d null space: many pairs out of reach; 8 classes over 30 images: one never predicted
    head, geom, T, X, texts, Tt = _problem(seed=2, n=30, m=6, F=12, E=16, C=8)
    fam = {"first": texts[:2], "rest": texts[2:]}
    st = attribute_statistics(geom, head, T, X, texts, Tt, families=fam, image_score=120.0, path="optimal")
    a = np.where(np.isnan(st.as_towards), -np.inf, np.abs(st.as_towards))
    b = np.where(np.isnan(st.as_away), -np.inf, np.abs(st.as_away))
    absas = np.maximum(a, b)
    absas[np.isinf(absas)] = np.nan
    assert np.isnan(absas).any() and not np.isnan(absas).all()     # the test covers the unreachable case
    assert np.array_equal(np.isnan(absas), np.isnan(st.abs_as)) and np.allclose(absas, st.abs_as, equal_nan=True)
    rows = st.per_text()
    for j, r in enumerate(rows):
        col = absas[:, j][~np.isnan(absas[:, j])]
        assert r["mean_abs_as"] == pytest.approx(col.mean() if col.size else np.nan, nan_ok=True)
        assert r["median_abs_as"] == pytest.approx(np.median(col) if col.size else np.nan, nan_ok=True)
        assert r["share_reachable"] == pytest.approx(col.size / len(X))
        assert r["mean_as_row"] == pytest.approx(st.as_row[:, j].mean())
        assert r["flagged_share"] == pytest.approx(np.mean((st.is_row > 12) | (np.abs(st.as_row[:, j]) > 4)))
    means = np.array([r["mean_abs_as"] for r in rows])
    pf = st.per_family()
    assert pf["first"]["mean_abs_as"] == pytest.approx(np.nanmean(means[:2]))
    assert pf["rest"]["mean_abs_as"] == pytest.approx(np.nanmean(means[2:])) and pf["rest"]["n_texts"] == 4
    pred = np.argmax(X @ head.weight.T + head.bias, axis=1)
    assert np.array_equal(st.predicted, pred)
    pc = st.per_class()
    assert not np.all([(pred == c).any() for c in range(head.n_classes)])
    for c in range(head.n_classes):
        if (pred == c).any():
            with np.errstate(invalid="ignore"):
                ref = np.array([np.nanmean(absas[pred == c, j]) if (~np.isnan(absas[pred == c, j])).any()
                                else np.nan for j in range(len(texts))])
            assert np.allclose(pc[c], ref, equal_nan=True)
        else:
            assert np.isnan(pc[c]).all()
    ov = st.overall()
    assert ov["mean_abs_as"] == pytest.approx(absas[~np.isnan(absas)].mean())
    assert ov["share_reachable"] == pytest.approx(np.mean(~np.isnan(absas)))
    ranked = [t for t, _ in st.leakage()["texts"]]
    finite = [texts[j] for j in np.argsort(-means, kind="stable") if np.isfinite(means[j])]
    assert ranked[: len(finite)] == finite
    # JSON: strict (no NaN), 6 digits
    d = st.to_dict(arrays=True)
    text = json.dumps(d, allow_nan=False)
    assert json.loads(text)["per_text"][0]["mean_abs_as"] == round(float(rows[0]["mean_abs_as"]), 6)
    assert d["thresholds"] == {"is_deg": 12.0, "as_deg": 4.0, "source": "SING demo"}
    assert None in [v for row in d["arrays"]["as_towards"] for v in row]
    assert "mean |AS| at IS = 120 deg" in st.summary()


def test_thresholds_are_sings_and_strict():
    assert (SING_IS_THRESHOLD_DEG, SING_AS_THRESHOLD_DEG) == (12.0, 4.0)
    is_row = np.array([12.0, np.nextafter(12.0, 13.0), 0.0, 0.0, np.nan])
    as_row = np.array([[4.0, -4.0], [0.0, 0.0], [np.nextafter(-4.0, -5.0), 3.9], [-4.0, 4.0], [np.nan, 5.0]])
    assert np.allclose(flag_shares(is_row, as_row), [2 / 5, 2 / 5])
    nan = np.full((5, 2), np.nan)
    st = AttributeStatistics(["x", "y"], ("a", "b"), {}, 40.0, "optimal", np.zeros(5, dtype=int), is_row, as_row,
                             nan, nan, 3, 3, 4)
    assert [r["flagged_share"] for r in st.per_text()] == pytest.approx([0.4, 0.4])
    assert st.overall()["mean_abs_as"] is not None and np.isnan(st.overall()["mean_abs_as"])
    assert st.to_dict()["overall"]["mean_abs_as"] is None


def test_mlp_translator_statistics_follow_the_single_gradient_path():
    rng = np.random.default_rng(3)
    head = head_from_arrays(rng.normal(size=(4, 12)), rng.normal(size=4))
    sizes = (12, 16, 8)
    T = Translator("mlp", [rng.normal(size=(a, b)) / np.sqrt(a) for a, b in zip(sizes[:-1], sizes[1:])],
                   [0.1 * rng.normal(size=b) for b in sizes[1:]])
    X, Tt = rng.normal(size=(5, 12)), rng.normal(size=(3, 8))
    st = attribute_statistics(head_geometry(head), head, T, X, ["a", "b", "c"], Tt, image_score=20.0, progress=True)
    assert st.image_dim is None and st.reachable.mean() > 0.5
    j, i = np.argwhere(st.reachable.T)[0]
    ref = gradient_path(head_geometry(head), T, X[i], Tt[j], 20.0, 1)
    assert st.as_towards[i, j] == pytest.approx(ref.attribute_score, abs=1e-6)


def test_bad_input_one_line():
    head, geom, T, X, texts, Tt = _problem()
    cases = {"family .f. names texts not in the list": dict(families={"f": ["nope"]}), "path": dict(path="straight"),
             "image score": dict(image_score=0.0), "max_step_deg": dict(max_step_deg=0.0)}
    for what, kw in cases.items():
        with pytest.raises(WeightscopeError, match=what) as err:
            attribute_statistics(geom, head, T, X, texts, Tt, **kw)
        assert "\n" not in str(err.value)
    with pytest.raises(WeightscopeError, match=r"expected \(5, 16\)"):
        attribute_statistics(geom, head, T, X, texts, Tt[:, :4])
    with pytest.raises(WeightscopeError, match="duplicates"):
        attribute_statistics(geom, head, T, X, ["a"] * 5, Tt)
    with pytest.raises(WeightscopeError, match="NaN"):
        attribute_statistics(geom, head, T, np.where(X > 2, np.nan, X), texts, Tt)
    with pytest.raises(WeightscopeError, match="maps width 16 -> 16 but the classifier's features have width 20"):
        attribute_statistics(geom, head, identity_translator(16), X, texts, Tt)
    mlp = Translator("mlp", [np.ones((20, 3)), np.ones((3, 16))], [np.zeros(3), np.zeros(16)])
    with pytest.raises(WeightscopeError, match="optimal path needs an affine translator"):
        attribute_statistics(geom, head, mlp, X, texts, Tt, path="optimal")


def test_blocks_of_images_give_the_same_result(monkeypatch):
    import weightscope.analyses.sing.statistics as stats

    head, geom, T, X, texts, Tt = _problem(seed=4, n=7, m=3, F=12, E=16, C=4)
    whole = {p: attribute_statistics(geom, head, T, X, texts, Tt, image_score=30.0, path=p) for p in stats.PATHS}
    monkeypatch.setattr(stats, "_BLOCK_FLOATS", 1)           # one image per block
    for p in stats.PATHS:
        part = attribute_statistics(geom, head, T, X, texts, Tt, image_score=30.0, path=p)
        for name in ("as_towards", "as_away", "as_row", "is_row"):
            assert np.allclose(getattr(part, name), getattr(whole[p], name), atol=1e-9, equal_nan=True), (p, name)


def test_gradient_flow_progress_counts_the_share_of_the_target_reached():
    """The bar moves while the flows advance together (not only when they finish) and ends at one per flow."""
    from weightscope.models.linear_heads import head_from_arrays
    from weightscope.analyses.sing import gradient_flow, head_geometry, identity_translator

    rng = np.random.default_rng(0)
    geom = head_geometry(head_from_arrays(rng.normal(size=(4, 16))))

    class Bar:
        def __init__(self):
            self.positions = [0]

        def update(self, k):
            assert k > 0
            self.positions.append(self.positions[-1] + k)

    bar = Bar()
    F_tilde, reached, _, _ = gradient_flow(geom, identity_translator(16), rng.normal(size=(30, 16)),
                                           rng.normal(size=(30, 16)), 40.0, np.ones(30), bar=bar)
    assert bar.positions[-1] == 30 and len(bar.positions) > 10
    assert reached.all()
