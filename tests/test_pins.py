"""Pins for summary statistics and report numbers that a planted fault once changed without a test noticing
(issue 27, part 2). Each expected value is computed by hand (written out in the comments) or independently of
weightscope (open_clip's own forward, plain numpy angles), never taken from today's output."""
import copy
import math

import numpy as np
import pytest
import torch

from weightscope.analyses.compare.results import KINDS, Comparison, DirectionChange, HeadChange
from weightscope.analyses.sing.statistics import AttributeStatistics, flag_shares
from weightscope.analyses.similarity.measures import (best_match_depths, model_similarity,
                                                      off_diagonal_rank_correlation)

NAN = math.nan


# ---- fault 1: sing/statistics.py, |AS| at the fixed IS is the LARGER of towards / away
def _attribute_statistics() -> AttributeStatistics:
    """3 images x 2 texts by hand. |AS| = fmax(|towards|, |away|) = [[4, 1], [5, 6], [1, NaN]] (the smaller
    would be [[3, 1], [5, 2], [1, NaN]]). Flags (IS_row > 12 or |AS_row| > 4, strict): image 0 (IS 13) both
    texts; image 1 only 'a dog' (|4.5| > 4, |4| is not); image 2 none (IS exactly 12)."""
    return AttributeStatistics(
        texts=["red", "a dog"], class_names=("cat", "dog"), families={"colour": ["red"], "animal": ["a dog"]},
        image_score=40.0, path="optimal", predicted=np.array([0, 1, 1]),
        is_row=np.array([13.0, 2.0, 12.0]), as_row=np.array([[1.0, -2.0], [4.0, 4.5], [-3.0, 0.0]]),
        as_towards=np.array([[3.0, NAN], [-5.0, 2.0], [NAN, NAN]]),
        as_away=np.array([[-4.0, 1.0], [NAN, -6.0], [1.0, NAN]]),
        null_dim=5, image_dim=3, out_width=4)


def test_sing_statistics_by_hand():
    st = _attribute_statistics()
    np.testing.assert_array_equal(st.abs_as, [[4, 1], [5, 6], [1, NAN]])
    np.testing.assert_array_equal(st.reachable, [[True, True], [True, True], [True, False]])
    np.testing.assert_allclose(flag_shares(st.is_row, st.as_row), [1 / 3, 2 / 3])
    red, dog = st.per_text()
    # red: |AS| 4, 5, 1 -> mean 10/3, median 4; AS_row 1, 4, -3 -> mean 2/3; mean IS_row (13 + 2 + 12) / 3 = 9
    assert red == pytest.approx({"text": "red", "mean_abs_as": 10 / 3, "median_abs_as": 4.0, "share_reachable": 1.0,
                                 "mean_as_row": 2 / 3, "mean_is_row": 9.0, "flagged_share": 1 / 3})
    # a dog: |AS| 1, 6 (one unreachable) -> mean 3.5, median 3.5, reached 2/3; AS_row -2, 4.5, 0 -> 2.5/3
    assert dog == pytest.approx({"text": "a dog", "mean_abs_as": 3.5, "median_abs_as": 3.5, "share_reachable": 2 / 3,
                                 "mean_as_row": 2.5 / 3, "mean_is_row": 9.0, "flagged_share": 2 / 3})
    assert st.per_family()["colour"]["mean_abs_as"] == pytest.approx(10 / 3)
    assert st.per_family()["animal"] == pytest.approx({"mean_abs_as": 3.5, "mean_as_row": 2.5 / 3,
                                                       "flagged_share": 2 / 3, "n_texts": 1})
    # per predicted class: cat = image 0 -> [4, 1]; dog = images 1, 2 -> red (5 + 1) / 2 = 3, a dog 6
    np.testing.assert_allclose(st.per_class(), [[4, 1], [3, 6]])
    # overall over the 5 reached pairs 4, 1, 5, 6, 1: mean 17/5, median 4; |AS_row| sum 14.5 over 6 pairs
    assert st.overall() == pytest.approx({"n_images": 3, "n_texts": 2, "mean_abs_as": 3.4, "median_abs_as": 4.0,
                                          "share_reachable": 5 / 6, "mean_is_row": 9.0, "mean_abs_as_row": 14.5 / 6,
                                          "flagged_share": 0.5})
    leak = st.leakage()
    assert [t for t, _ in leak["texts"]] == ["a dog", "red"] and [f for f, _ in leak["families"]] == ["animal", "colour"]
    d = st.to_dict()
    assert d["overall"]["mean_abs_as"] == pytest.approx(3.4) and d["per_class"]["dog"]["red"] == pytest.approx(3.0)


# ---- fault 2: sing/analysis.py, leakage uses the PREDICTED class's text
def _angle(a, b) -> float:
    return math.degrees(math.acos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1)))


def test_sing_leakage_uses_the_predicted_class_text():
    """Head rows e1, e2 of R^3: the null space is the line e3 and both features lie in the row space, so the
    only equivalent features at IS = 40 deg are f +- |f| tan(40 deg) e3; |AS| at that IS = the larger
    |angle(f, t) - angle(f~, t)| of the two, for t = the text of the class with the LARGER logit."""
    from weightscope.analyses.sing.analysis import leakage
    from weightscope.analyses.sing.geometry import head_geometry
    from weightscope.models.linear_heads import head_from_arrays

    head = head_from_arrays(np.array([[1.0, 0, 0], [0, 1.0, 0]]), None, ["a", "b"])
    feats = np.array([[2.0, 1.0, 0.0], [1.0, 3.0, 0.0]])      # logits (2, 1) -> class a; (1, 3) -> class b
    texts = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, -2.0]])

    def by_hand(f, t):
        s = np.linalg.norm(f) * math.tan(math.radians(40))
        return max(abs(_angle(f, t) - _angle(f + sign * s * np.array([0, 0, 1.0]), t)) for sign in (1, -1))

    want = [by_hand(feats[0], texts[0]), by_hand(feats[1], texts[1])]
    wrong = [by_hand(feats[0], texts[1]), by_hand(feats[1], texts[0])]
    assert abs(np.mean(want) - np.mean(wrong)) > 1  # the case tells the two apart
    got = leakage(head, head_geometry(head), feats, texts, 40.0)
    assert got["n_images"] == 2 and got["n_reachable"] == 2
    assert got["mean_abs_as"] == pytest.approx(np.mean(want), abs=1e-9)
    assert got["median_abs_as"] == pytest.approx(np.median(want), abs=1e-9)


# ---- fault 3: similarity/measures.py, rank correlation over the strictly off-diagonal entries
def test_similarity_summaries_by_hand():
    # upper entries (0,1), (0,2), (1,2): 0.2, 0.5, 0.9 against 0.9, 0.5, 0.2 -> ranks exactly reversed: -1
    # (with the unit diagonal included the entries would be 1, .2, .5, 1, .9, 1 and the value far from -1)
    S1 = np.array([[1, .2, .5], [.2, 1, .9], [.5, .9, 1]])
    S2 = np.array([[1, .9, .5], [.9, 1, .2], [.5, .2, 1]])
    assert off_diagonal_rank_correlation(S1, S2) == pytest.approx(-1.0)
    # 4 layers: upper ranks 1..6 against 2, 1, 4, 3, 6, 5: sum d^2 = 6, rho = 1 - 6 * 6 / (6 * 35) = 29/35
    iu = np.triu_indices(4, 1)
    A, B = np.eye(4), np.eye(4)
    A[iu] = [.1, .2, .3, .4, .5, .6]
    B[iu] = [.2, .1, .4, .3, .6, .5]
    assert off_diagonal_rank_correlation(A + np.triu(A, 1).T, B + np.triu(B, 1).T) == pytest.approx(29 / 35)
    # model similarity: row maxima .8, .5, .9 (mean 11/15), column maxima .9, .8 (mean .85); average 0.791666...
    S = np.array([[.2, .8], [.5, .4], [.9, .1]])
    assert model_similarity(S) == pytest.approx((11 / 15 + 0.85) / 2)
    # best matches: rows -> columns 1, 0, 0; relative depths (i + 1) / L; a tie goes to the first column
    da, db = best_match_depths(np.vstack([S, [.5, .5]]))
    np.testing.assert_allclose(da, [.25, .5, .75, 1])
    np.testing.assert_allclose(db, [1, .5, .5, .5])
    # the relative-depth agreement: best matches pooled both ways (rows 0.5 -> 1/3... by hand below), Spearman from
    # scipy on the pooled points, which are not constant, so it is a number, not NaN
    from scipy.stats import spearmanr

    from weightscope.analyses.similarity.measures import depth_alignment, linear_cka, subspace_similarity

    M = np.array([[0.9, 0.1, 0.0, 0.0], [0.1, 0.2, 0.8, 0.1]])
    a, b = [0.5, 1.0, 0.25, 0.5, 0.75, 1.0], [0.25, 0.75, 0.5, 1.0, 1.0, 1.0]
    assert depth_alignment([M])["spearman"] == pytest.approx(spearmanr(a, b).statistic)
    # conventions for nothing to compare: a constant feature matrix has CKA 0, an empty row space similarity 0
    assert linear_cka(np.ones((5, 3)), np.arange(10.0).reshape(5, 2)) == 0.0
    assert subspace_similarity(np.zeros((1, 4)), np.eye(4)[:2]) == 0.0


# ---- fault 4: compare/results.py, log2 sigma ratios and the most-changed heads first
def _direction(ratio, kind="reweighted", s_base=1.0, concepts=()):
    return DirectionChange(index=0, tuned_index=0, s_base=s_base, s_tuned=s_base * abs(ratio), ratio=ratio, cos=0.99,
                           cos_read=0.99, cos_write=0.99, gain=ratio, energy=0.0, kind=kind,
                           base_concepts=[list(c) for c in concepts])


def _head(layer, head, energy, norm_base, directions, changed=True, in_basis=None):
    return HeadChange(layer=layer, head=head, norm_base=norm_base, norm_tuned=norm_base, energy_total=energy,
                      energy_in_basis=energy if in_basis is None else in_basis,
                      energy_off_basis=0.0 if in_basis is None else energy - in_basis, noise=0.0, tolerance=0.0,
                      angle_read=0.0, angle_write=0.0, changed=changed, directions=directions)


def test_comparison_summaries_by_hand():
    # rel_change = sqrt(energy) / norm_base: (0, 0) 3/10 = 0.3; (0, 1) 4/5 = 0.8; (1, 0) 1/2 = 0.5; (1, 1) unchanged
    heads = {
        (0, 0): _head(0, 0, 9.0, 10.0, [_direction(4.0, concepts=[("red", 1.0)]), _direction(-0.5),
                                        _direction(2.0, kind="rotated")], in_basis=6.0),
        (0, 1): _head(0, 1, 16.0, 5.0, [_direction(0.25, s_base=3.0, concepts=[("dog", 0.5)]),
                                        _direction(4.0, s_base=4.0, concepts=[("red", 1.0)]), _direction(math.inf)]),
        (1, 0): _head(1, 0, 1.0, 2.0, [_direction(0.0), _direction(1.0)]),
        (1, 1): _head(1, 1, 0.0, 3.0, [_direction(8.0)], changed=False),
    }
    c = Comparison("base", "tuned", {"ratio_tol": 0.05}, heads)
    assert [(h.layer, h.head) for h in c.changed_heads()] == [(0, 1), (1, 0), (0, 0)]
    assert [(h.layer, h.head) for h in c.top_heads(2)] == [(0, 1), (1, 0)]
    # log2 |ratio| of matched, finite, non-zero ratios of changed heads: 4 -> 2, -0.5 -> -1, 0.25 -> -2, 4 -> 2,
    # 1 -> 0 (rotated, inf, 0 and the unchanged head's 8 are left out)
    assert sorted(c.sigma_ratios().tolist()) == [-2.0, -1.0, 0.0, 2.0, 2.0]
    # energy over changed heads: 9 + 16 + 1 = 26, in basis 6 + 16 + 1 = 23; base energy 100 + 25 + 4 + 9 = 138
    assert c.energy_total == 26 and c.in_basis_share == pytest.approx(23 / 26)
    assert c.rel_change == pytest.approx(math.sqrt(26 / 138))
    # concept scores: coef x log2|ratio| x s_base / ||s_base of the head||; head (0, 0): norm sqrt(3),
    # red += 1 x 2 x 1/sqrt(3); head (0, 1): norm sqrt(1 + 9 + 16) = sqrt(26), dog += .5 x -2 x 3/sqrt(26),
    # red += 1 x 2 x 4/sqrt(26)
    red, dog = 2 / math.sqrt(3) + 8 / math.sqrt(26), -3 / math.sqrt(26)
    assert c.concept_scores() == pytest.approx({"red": red, "dog": dog})
    assert c.amplified_concepts() == [("red", pytest.approx(red))]
    assert c.suppressed_concepts() == [("dog", pytest.approx(dog))]
    # a count over every compared head, unchanged ones too: 2 + 3 + 2 + 1 reweighted, 1 rotated
    assert c.counts() == {**{k: 0 for k in KINDS}, "reweighted": 8, "rotated": 1}
    rows = {r["layer"]: r for r in c.layer_summary()}
    assert rows[0]["energy_total"] == 25 and rows[0]["in_basis_share"] == pytest.approx(22 / 25)
    assert rows[1]["changed_heads"] == 1 and rows[1]["mean_rel_change"] == pytest.approx((0.5 + 0.0) / 2)
    assert rows[0]["energy_off_basis"] == 3 and rows[0]["off_basis_share"] == pytest.approx(3 / 25)
    # a saved comparison read back equals the original and the dict it came from is left as it was
    import copy as _copy

    data = c.to_dict()
    kept = _copy.deepcopy(data)
    again = Comparison.from_dict(data)
    assert data == kept and again.changed_heads()[0].rel_change == pytest.approx(0.8)


# ---- fault 5: neurons.py, read vectors folded with ln_2 (the MLP's LayerNorm), on the asymmetric model
def test_neuron_read_vectors_fold_ln_2_exactly(asym_model):
    """c_fc(ln_2(x)) = (W * gamma_2) xhat + (W beta_2 + b): the pre-activations of the model's own modules equal
    the folded read vectors applied to the normalised input, for every neuron (ln_1's gains differ here)."""
    from weightscope import describe_model
    from weightscope.analyses.neurons import neuron_vectors

    w = describe_model(asym_model)
    blk = copy.deepcopy(asym_model.visual.transformer.resblocks[1]).double()  # the shared fixture stays float32
    assert not torch.allclose(blk.ln_1.weight, blk.ln_2.weight)
    _, read = neuron_vectors(w, 1)
    x = torch.randn(5, blk.ln_2.normalized_shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ln = torch.nn.LayerNorm(x.shape[1], eps=blk.ln_2.eps, elementwise_affine=False).double()
        xhat = ln(x).numpy()
        pre = blk.mlp.c_fc(blk.ln_2(x)).numpy()
        shift = (blk.mlp.c_fc.weight @ blk.ln_2.bias + blk.mlp.c_fc.bias).numpy()
    np.testing.assert_allclose(xhat @ read.T + shift, pre, rtol=1e-9, atol=1e-9)


# ---- fault 6: inspection.py, the image mean is the mean of NORMALISED image embeddings
def test_image_mean_from_folder_averages_unit_embeddings(tiny_name, tmp_path):
    """Three flat-colour PNGs; the expected mean is computed with open_clip's own preprocessing and
    encode_image, each embedding divided by its norm before averaging."""
    from PIL import Image

    from weightscope.analyses.inspection import image_mean_from_folder
    from weightscope.models.load import load_model

    loaded = load_model(tiny_name)
    colours = [(200, 30, 30), (20, 160, 40), (240, 240, 240)]
    for i, c in enumerate(colours):
        Image.new("RGB", (40, 30), c).save(tmp_path / f"{i}.png")
    with torch.no_grad():
        embs = [loaded.model.encode_image(loaded.preprocess(Image.open(tmp_path / f"{i}.png").convert("RGB"))[None])
                .double()[0].numpy() for i in range(3)]
    want = np.mean([e / np.linalg.norm(e) for e in embs], axis=0)
    assert abs(np.linalg.norm(embs[0]) - 1) > 1e-3  # unnormalised embeddings would give another mean
    got = image_mean_from_folder(loaded, tmp_path, batch_size=2, progress=False)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(image_mean_from_folder(loaded, tmp_path, max_images=1, progress=False),
                               embs[0] / np.linalg.norm(embs[0]), rtol=1e-5, atol=1e-6)


# ---- more of kind 1 / 2 (found by the mutation run): the steered scores on a one-dimensional null space, and
# the edges of reach
def _line_null_head():
    from weightscope.analyses.sing.geometry import head_geometry
    from weightscope.models.linear_heads import head_from_arrays

    head = head_from_arrays(np.array([[1.0, 0, 0], [0, 1.0, 0]]), None, ["a", "b"])
    return head, head_geometry(head)


def test_batched_steered_scores_on_a_one_dimensional_null_space():
    """Features in the row space, null space the line e3: at IS = 40 deg the two equivalent features are
    f +- |f| tan(40 deg) e3; towards t takes the larger AS of the two, away the smaller (plain numpy angles)."""
    from weightscope.analyses.sing.statistics import _optimal_as

    _, geom = _line_null_head()
    E = np.array([[2.0, 1.0, 0.0], [1.0, 3.0, 0.0]])
    T = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, -2.0], [1.0, 1.0, 0.5]])

    def both(f, t):
        s = np.linalg.norm(f) * math.tan(math.radians(40))
        return [_angle(f, t) - _angle(f + sign * s * np.array([0, 0, 1.0]), t) for sign in (1, -1)]

    want = np.array([[both(f, t) for t in T] for f in E])
    np.testing.assert_allclose(_optimal_as(geom, E, T, 40.0, 1), want.max(axis=2), atol=1e-9)
    np.testing.assert_allclose(_optimal_as(geom, E, T, 40.0, -1), want.min(axis=2), atol=1e-9)


def test_an_image_score_just_below_the_reach_limit_is_refused_by_both_paths():
    """Within 1e-12 of the limit the optimal path's feature would be unbounded: steer refuses it and the batched
    statistics give NaN there, the same answer."""
    from weightscope.analyses.sing.geometry import steer
    from weightscope.analyses.sing.statistics import _optimal_as
    from weightscope.core.errors import WeightscopeError

    _, geom = _line_null_head()
    f, t = np.array([1.0, 0.0, 5.0]), np.array([1.0, 0.0, -0.1])
    for d in (1, -1):
        limit = steer(geom, f, t, 0.0, d).max_image_score
        near = limit - 1e-11
        assert near < limit < 180
        with pytest.raises(WeightscopeError, match="out of reach"):
            steer(geom, f, t, near, d)
        assert np.isnan(_optimal_as(geom, f[None], t[None], near, d)[0, 0])
        assert np.isfinite(_optimal_as(geom, f[None], t[None], limit - 1e-3, d)[0, 0])


def test_leakage_skips_a_direction_whose_reach_is_below_one_degree():
    """f almost all in the null space: steering away from t reaches only 0.573 deg (atan(0.01)), so at IS = 0.5
    that direction counts and at IS = 0.6 only the other one does; nothing raises."""
    from weightscope.analyses.sing.analysis import leakage

    head, geom = _line_null_head()
    f, t = np.array([[0.01, 0.0, 1.0]]), np.array([[1.0, 0.0, -0.5], [0.0, 1.0, 0.0]])
    assert leakage(head, geom, f, t, 0.6)["n_reachable"] == 1
    assert leakage(head, geom, f, t, 0.5)["n_reachable"] == 1
    from weightscope.analyses.sing.analysis import _steering_row

    row = _steering_row(geom, f[0], t[0], "t", 0.6)
    assert row.as_away is None and row.as_towards is not None
    assert row.max_is_away == pytest.approx(math.degrees(math.atan(0.01)), abs=1e-9)
