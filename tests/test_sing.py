"""SING (weightscope.analyses.sing): null-space geometry, closed-form steering, visibility, galleries, CLI, real models.

References never share the code under test: null spaces and projectors from scipy.linalg, angles from arccos,
optimal moves from random search and scipy.optimize, the ResNet heads through torch's own nn.Linear forward.
"""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import scipy.optimize

from weightscope.core import linalg
from weightscope.cli import main
from weightscope.core.errors import WeightscopeError
from weightscope.models.linear_heads import head_from_arrays
from weightscope.analyses.sing import (concept_visibility, head_geometry, scores, steer)
from weightscope.concepts.explainer import ConceptExplainer

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CLIP_ATTR = SHARED / "data" / "clip-attribute-embeddings"
CIFAR_MODELS = SHARED / "models" / "cifar10-resnets"
CIFAR_DATA = SHARED / "data" / "cifar10-test"


def _ref_null_projector(W):
    N = scipy.linalg.null_space(W)               # (F, F - r), scipy's own SVD and tolerance
    return N @ N.T


def _rel_logit_change(W, b, f, g):
    base = f @ W.T + b
    return np.max(np.abs((g @ W.T + b) - base)) / np.max(np.abs(base))


def _deg(x, y):
    return np.degrees(np.arccos(np.clip(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)), -1, 1)))


# ------------------------------------------------------------------------------------------------ linalg additions

def test_row_null_bases_match_scipy_and_are_orthonormal():
    rng = np.random.default_rng(0)
    W = rng.normal(size=(5, 12))
    s, row, null = linalg.row_null_bases(W)
    assert row.shape == (5, 12) and null.shape == (7, 12)
    assert np.allclose(s, scipy.linalg.svdvals(W), rtol=1e-12)
    basis = np.vstack([row, null])
    assert np.allclose(basis @ basis.T, np.eye(12), atol=1e-12)
    assert np.allclose(linalg.projector(null), _ref_null_projector(W), atol=1e-12)
    assert np.allclose(W @ null.T, 0, atol=1e-12)
    # the row basis is the right singular vectors in order: W's gain along row[i] is s[i]
    assert np.allclose(np.linalg.norm(W @ row.T, axis=0), s, rtol=1e-12)


def test_rank_tolerance_is_relative():
    rng = np.random.default_rng(1)
    # 6 classes whose rows span only 4 dimensions, stored in float32 (rounding ~1e-7 relative)
    W = (rng.normal(size=(6, 4)) @ rng.normal(size=(4, 30))).astype(np.float32).astype(np.float64)
    for scale in (1e-9, 1.0, 1e7):           # the rank does not depend on the head's scale
        s, row, null = linalg.row_null_bases(scale * W)
        assert row.shape[0] == 4 and null.shape[0] == 26, scale
    # with the tolerance below the float32 rounding, the noise directions count as rank
    assert linalg.row_null_bases(W, rtol=1e-12)[1].shape[0] == 6
    with pytest.raises(ValueError, match="rtol"):
        linalg.row_null_bases(W, rtol=1.5)


def test_split_energy_principal_directions_and_angles():
    rng = np.random.default_rng(2)
    basis = scipy.linalg.orth(rng.normal(size=(9, 3))).T       # (3, 9) orthonormal rows
    X = rng.normal(size=(20, 9))
    inside, outside = linalg.split_components(X, basis)
    P = basis.T @ basis
    assert np.allclose(inside, X @ P) and np.allclose(inside + outside, X)
    assert np.allclose(linalg.subspace_energy(X, basis), (np.linalg.norm(X @ P, axis=1) / np.linalg.norm(X, axis=1)) ** 2)
    dirs, sv = linalg.principal_directions(X, 4)
    _, s_ref, vh_ref = scipy.linalg.svd(X, full_matrices=False)
    assert np.allclose(sv, s_ref[:4], rtol=1e-10)
    assert np.allclose(np.abs(np.sum(dirs * vh_ref[:4], axis=1)), 1.0, atol=1e-10)
    assert np.all(dirs[np.arange(4), np.argmax(np.abs(dirs), axis=1)] > 0)
    x = rng.normal(size=9)
    y = rng.normal(size=9)
    assert abs(np.degrees(linalg.vector_angle(x, y)) - _deg(x, y)) < 1e-9
    # small angles keep their digits (arccos of a cosine would return 0 or ~1e-8 noise here)
    e1, e2 = np.eye(9)[0], np.eye(9)[1]
    assert abs(linalg.vector_angle(e1, e1 + 1e-10 * e2) - 1e-10) < 1e-20


# ------------------------------------------------------------------------------------------------ equivalence

def test_equivalent_features_keep_logits_on_a_random_head():
    rng = np.random.default_rng(3)
    W, b = rng.normal(size=(10, 64)), rng.normal(size=10)
    geom = head_geometry(head_from_arrays(W, b))
    assert (geom.rank, geom.null_dim) == (10, 54)
    f, delta = rng.normal(size=(50, 64)), 10 * rng.normal(size=(50, 64))
    g = geom.equivalent(f, delta)
    assert np.allclose(g - f, delta @ _ref_null_projector(W), atol=1e-9)
    assert _rel_logit_change(W, b, f, g) <= 1e-12
    f_row, f_null = geom.split(f)
    assert np.allclose(f_null, f @ _ref_null_projector(W), atol=1e-12)
    assert np.allclose(geom.null_share(f), (np.linalg.norm(f_null, axis=1) / np.linalg.norm(f, axis=1)) ** 2)


# ------------------------------------------------------------------------------------------------ steering

def _frame(F=6, seed=4):
    """A head whose row space is span(e1, e2) in a random orthonormal frame Q (rows e_i -> Q[i])."""
    Q = scipy.linalg.orth(np.random.default_rng(seed).normal(size=(F, F))).T
    W = np.array([[2.0, 0.5], [-0.3, 1.0]]) @ Q[:2]          # rank 2, rows mix e1 and e2
    return head_from_arrays(W, [0.1, -0.2]), Q


@pytest.mark.parametrize("theta", [0.0, 5.0, 17.5, 40.0, 60.0])
def test_analytic_angles_on_a_synthetic_head(theta):
    head, Q = _frame()
    e = Q                      # e[i]: basis vector i in the frame; e[0], e[1] span the row space
    beta, gamma = 70.0, 25.0
    rb, rg, rt = np.radians(beta), np.radians(gamma), np.radians(theta)
    # 1. f in the row space, t in the plane (f, null e3): the best move rotates f towards t: AS = IS
    f, t = 3.0 * e[0], np.cos(rb) * e[0] + np.sin(rb) * e[2]
    st = steer(head, f, t, theta)
    assert abs(st.image_score - theta) < 1e-6 and abs(st.attribute_score - theta) < 1e-6
    assert np.allclose(st.f_tilde, 3.0 * (e[0] + np.tan(rt) * e[2]), atol=1e-12)
    assert _rel_logit_change(head.weight, head.bias, f, st.f_tilde) < 1e-12
    # 2. t's row part orthogonal to f is invisible to the move: angle(f~, t) = arccos(sin IS sin beta)
    t2 = np.cos(rb) * e[1] + np.sin(rb) * e[2]
    st = steer(head, f, t2, theta)
    assert abs(st.attribute_score - (90.0 - np.degrees(np.arccos(np.sin(rt) * np.sin(rb))))) < 1e-6
    assert abs(steer(head, f, t2, theta, direction=-1).attribute_score
               - (90.0 - np.degrees(np.arccos(-np.sin(rt) * np.sin(rb))))) < 1e-6
    # 3. f with a null component, t along it: the optimal path ends where f~ would need an infinite norm,
    #    at IS_max = 90 - gamma; below it AS = IS
    f3, t3 = np.cos(rg) * e[0] + np.sin(rg) * e[2], e[2]
    if theta < 90.0 - gamma:
        st = steer(head, f3, t3, theta)
        assert abs(st.attribute_score - theta) < 1e-6 and abs(st.image_score - theta) < 1e-6
        assert abs(st.max_image_score - (90.0 - gamma)) < 1e-6
        assert _rel_logit_change(head.weight, head.bias, f3, st.f_tilde) < 1e-12
    else:
        with pytest.raises(WeightscopeError, match="out of reach.*65.00"):
            steer(head, f3, t3, theta)


def test_steered_feature_keeps_logits_and_scores_agree():
    head, Q = _frame()
    rng = np.random.default_rng(5)
    for _ in range(20):
        f, t = rng.normal(size=6), rng.normal(size=6)
        for d in (1, -1):
            st = steer(head, f, t, 10.0, d)
            assert _rel_logit_change(head.weight, head.bias, f, st.f_tilde) < 1e-12
            is_ref, as_ref = _deg(f, st.f_tilde), _deg(f, t) - _deg(st.f_tilde, t)
            assert abs(st.image_score - is_ref) < 1e-6 and abs(st.attribute_score - as_ref) < 1e-6
            assert np.allclose(scores(f, st.f_tilde, t), (st.image_score, st.attribute_score), atol=1e-9)
            # the move lies in span(Pi_n f, Pi_n t)
            Pn = _ref_null_projector(head.weight)
            span = scipy.linalg.orth(np.stack([Pn @ f, Pn @ t], axis=1))
            move = st.f_tilde - f
            assert np.linalg.norm(move - span @ (span.T @ move)) < 1e-9 * np.linalg.norm(move)


def _random_move_scores(f, t, Pn, theta, rng, n):
    """AS of n random null-space moves f + s Pi_n delta, each scaled (brentq) so that IS = theta exactly."""
    out = []
    while len(out) < n:
        m = Pn @ rng.normal(size=f.size)
        if _deg(f, m) <= theta + 1e-3:          # rays along m never get that far from f
            continue
        s = scipy.optimize.brentq(lambda s: _deg(f, f + s * m) - theta, 0.0, 1e6 * np.linalg.norm(f) / np.linalg.norm(m),
                                  xtol=1e-14)
        g = f + s * m
        out.append(_deg(f, t) - _deg(g, t))
    return np.array(out)


@pytest.mark.parametrize("theta", [10.0, 25.0, 40.0])
def test_steering_is_optimal_against_random_and_optimised_moves(theta):
    rng = np.random.default_rng(6)
    W = rng.normal(size=(4, 10))
    head = head_from_arrays(W)
    Pn = _ref_null_projector(W)
    N = scipy.linalg.null_space(W)
    checked = 0
    for _ in range(4):
        f, t = rng.normal(size=10), rng.normal(size=10)
        f = f - 0.5 * Pn @ f                     # keep a sizeable row part so that IS = 40 stays reachable
        best, worst = steer(head, f, t, theta, 1), None
        if theta >= best.max_image_score:
            continue
        worst = steer(head, f, t, theta, -1) if theta < steer(head, f, t, 0.0, -1).max_image_score else None
        got = _random_move_scores(f, t, Pn, theta, rng, 250)
        assert got.max() <= best.attribute_score + 1e-9
        if worst is not None:
            assert got.min() >= worst.attribute_score - 1e-9
        # a local optimiser over the null coordinates, from random starts, never beats the closed form and finds it
        cons = {"type": "eq", "fun": lambda c: _deg(f, f + N @ c) - theta}
        found = []
        for _ in range(5):
            res = scipy.optimize.minimize(lambda c: _deg(f + N @ c, t), rng.normal(size=N.shape[1]) * 0.3,
                                          constraints=[cons], method="SLSQP", options={"ftol": 1e-12, "maxiter": 500})
            if res.success and abs(cons["fun"](res.x)) < 1e-6:
                found.append(_deg(f, t) - _deg(f + N @ res.x, t))
        assert found and max(found) <= best.attribute_score + 1e-6
        assert max(found) >= best.attribute_score - 1e-4
        checked += 1
    assert checked >= 3


def test_steering_edge_cases():
    head, Q = _frame()
    f_null = Q[3] + 0.5 * Q[4]                    # no row component: every null direction is equivalent
    st = steer(head, f_null, Q[5], 30.0)
    assert abs(st.attribute_score - 30.0) < 1e-6 and st.max_image_score == 180.0
    assert np.allclose(head.logits(st.f_tilde), head.logits(f_null), atol=1e-12)
    full = head_from_arrays(np.random.default_rng(7).normal(size=(6, 6)))
    with pytest.raises(WeightscopeError, match="null space is empty"):
        steer(full, np.ones(6), np.arange(6.0), 10.0)
    assert steer(full, np.ones(6), np.arange(6.0), 0.0).attribute_score == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(WeightscopeError, match=r"\[0, 180\)"):
        steer(head, Q[0], Q[2], 190.0)
    with pytest.raises(WeightscopeError, match="width"):
        steer(head, np.ones(5), np.ones(6))
    with pytest.raises(WeightscopeError, match="non-zero"):
        steer(head, np.zeros(6), np.ones(6))


# ------------------------------------------------------------------------------------------------ visibility

def _ref_visibility(W, raw):
    """Visibility by hand: unit rows, minus the mean, unit rows; energy through scipy's orthonormal row basis."""
    X = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    X = X - X.mean(axis=0)
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    R = scipy.linalg.orth(W.T)
    return np.linalg.norm(X @ R, axis=1) ** 2


def test_visibility_matches_a_hand_computation_and_planted_concepts():
    rng = np.random.default_rng(8)
    W = rng.normal(size=(3, 16))
    raw = rng.normal(size=(40, 16))
    raw[0] = W[0] + raw[1:].mean(axis=0)         # the mean is subtracted: this concept is W[0] plus the mean
    vis = concept_visibility(head_geometry(head_from_arrays(W)), raw, [f"c{i}" for i in range(40)])
    assert np.allclose(vis.visibility, _ref_visibility(W, raw), atol=1e-6)   # float32 GEMM
    assert vis.ranked(1)[0][0] == "c0" and vis.visibility[0] > 0.9
    s = scipy.linalg.svdvals(W)
    centred = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    centred = centred - centred.mean(axis=0)
    assert np.allclose(vis.gain, np.linalg.norm(centred @ W.T, axis=1) / (s[0] * np.linalg.norm(centred, axis=1)), atol=1e-6)
    with pytest.raises(WeightscopeError, match="expected"):
        concept_visibility(head_geometry(head_from_arrays(W)), raw, ["only one name"])


@pytest.fixture(scope="module")
def bundled():
    from weightscope.bundled import load_model

    return load_model()


@pytest.fixture(scope="module")
def bundled_result(bundled, tmp_path_factory):
    from weightscope.bundled import sing_analysis

    return sing_analysis(bundled, "shapes", ConceptExplainer(cache_dir=tmp_path_factory.mktemp("cache")), progress=False)


def test_bundled_zero_shot_head_equivalence(bundled):
    from weightscope.analyses.zeroshot import zero_shot_head
    from weightscope.shapes import world
    from weightscope.shapes.evaluate import TASKS

    head = zero_shot_head(bundled, *TASKS["shape"])
    geom = head_geometry(head)
    assert (geom.rank, geom.null_dim) == (8, 56)
    rng = np.random.default_rng(9)
    f = rng.normal(size=(100, 64))
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    for scale in (0.1, 1.0, 10.0):
        g = f + scale * rng.normal(size=(100, 64)) @ _ref_null_projector(head.weight)
        assert _rel_logit_change(head.weight, head.bias, f, geom.equivalent(f, g - f)) <= 1e-6
        assert _rel_logit_change(head.weight, head.bias, f, g) <= 1e-6
    assert head.class_names == world.SHAPES


def test_shapes_world_ground_truth_visibility(bundled_result):
    """The 8-shape head reads shape words; colour and position words lie mostly in its null space.

    Measured (shapes_world vocabulary, splice normalisation): shape 0.940, size 0.726, background 0.529,
    colour 0.166, position 0.129 (chance 8/64 = 0.125). Margins asserted at about 80 % of those measured.
    """
    r = bundled_result
    fam = r.families
    assert r.null_dim == 56 and r.chance_visibility == 8 / 64
    assert fam["shape"] - fam["colour"] > 0.6            # measured 0.774
    assert fam["shape"] - fam["position"] > 0.65         # measured 0.811
    assert fam["shape"] - fam["background"] > 0.33       # measured 0.411
    vis = r.visibility
    from weightscope.shapes import world

    assert vis.of(world.SHAPES).min() > vis.of(world.COLOUR_NAMES).max() + 0.25     # measured 0.894 vs 0.544
    # the spurious correlation of the training data (round -> blue, angular -> green backgrounds) shows in
    # the shape head: the two home backgrounds are more visible than the others (measured 0.634 vs 0.424)
    home = vis.of(["blue background", "green background"]).mean()
    other = vis.of(["gray background", "black background"]).mean()
    assert home - other > 0.15


def test_clip_attribute_embeddings_visibility_ranking():
    """Zero-shot heads from real CLIP (ViT-L/14 space) attribute embeddings: colour words and shape words.

    Measured mean visibility of each family (chance 11/768 = 0.014 and 20/768 = 0.026):
    colour head: photographic 0.052 > materials 0.034 > textures 0.025 ~ shapes 0.024 ~ scenes 0.024 > parts 0.012,
    its top non-colour concepts monochrome 0.26, high contrast 0.21, low contrast 0.16;
    shape head: textures 0.095 > parts 0.087 > photographic 0.078 > scenes 0.071 > materials 0.055 > colours 0.041.
    """
    if not CLIP_ATTR.is_dir():
        pytest.skip(f"real CLIP attribute embeddings not found at {CLIP_ATTR}")
    emb = np.load(CLIP_ATTR / "embeddings.npy").astype(np.float64)[:, 5]       # mean over 5 phrasings
    names = [n for n in (CLIP_ATTR / "concepts.txt").read_text().splitlines() if n]
    sizes = [("colour", 11), ("texture", 47), ("material", 15), ("scene", 40), ("part", 20), ("shape", 20), ("photo", 20)]
    family = np.array(sum(([f] * n for f, n in sizes), []))
    means, top = {}, {}
    for head_family in ("colour", "shape"):
        rows = emb[family == head_family]
        head = head_from_arrays(rows / np.linalg.norm(rows, axis=1, keepdims=True),
                                class_names=[n for n, f in zip(names, family) if f == head_family])
        vis = concept_visibility(head_geometry(head), emb, names)      # the same path as a model's own text tower
        assert np.allclose(vis.visibility, _ref_visibility(head.weight, emb), atol=1e-6)
        means[head_family] = {f: vis.visibility[family == f].mean() for f, _ in sizes}
        top[head_family] = [c for c, _ in vis.ranked(40) if c not in head.class_names]
    m = means["colour"]
    assert m["photo"] > m["material"] + 0.01 > max(m["texture"], m["scene"], m["shape"]) + 0.005
    assert min(m["texture"], m["scene"], m["shape"]) > m["part"] + 0.006
    assert set(top["colour"][:3]) == {"monochrome", "high contrast", "low contrast"}
    m = means["shape"]
    assert min(v for f, v in m.items() if f not in ("colour", "shape")) > m["colour"] + 0.007
    assert m["texture"] > m["part"] > m["photo"] > m["scene"] > m["material"]
    # double dissociation: geometric textures are seen by the shape head, photographic colour words by the colour head
    geometric = [names.index(c) for c in ("striped", "grid", "lined", "zigzagged", "crosshatched", "spiralled")]
    tonal = [names.index(c) for c in ("monochrome", "high contrast", "low contrast", "high saturation")]
    # measured mean visibilities: geometric 0.176 (shape head) vs 0.019 (colour head), tonal 0.179 vs 0.076
    for head_family, idx, other, ratio in (("shape", geometric, "colour", 5.0), ("colour", tonal, "shape", 1.9)):
        vis_by = {}
        for hf in (head_family, other):
            rows = emb[family == hf]
            g = head_geometry(head_from_arrays(rows / np.linalg.norm(rows, axis=1, keepdims=True)))
            vis_by[hf] = concept_visibility(g, emb, names).visibility[idx].mean()
        assert vis_by[head_family] > ratio * vis_by[other], (head_family, vis_by)


# ------------------------------------------------------------------------------------------------ galleries

def test_shapes_gallery_is_cached_checked_and_rebuilt(bundled, tmp_path, monkeypatch):
    import torch

    from weightscope.shapes.evaluate import images_to_tensor
    from weightscope import bundled as B
    from weightscope.analyses.sing import gallery as gal

    g1 = B.shapes_gallery(bundled, n=16, seed=3, cache_dir=tmp_path, progress=False)
    with torch.no_grad():
        ref = torch.nn.functional.normalize(bundled.model.encode_image(images_to_tensor(g1.images)), dim=-1).numpy()
    assert np.allclose(g1.embeddings, ref, atol=1e-6)
    files = sorted((tmp_path / "embeddings").glob("*.wsemb"))
    assert len(files) == 1 and files[0].name.startswith("shapes-vit-gallery-")

    def no_encoding(*args, **kwargs):
        raise AssertionError("the cache should have answered")

    with monkeypatch.context() as m:
        m.setattr(gal, "_encode", no_encoding)
        g2 = B.shapes_gallery(bundled, n=16, seed=3, cache_dir=tmp_path, progress=False)
    assert np.array_equal(g1.embeddings, g2.embeddings) and g1.captions == g2.captions
    raw = files[0].read_bytes()
    files[0].write_bytes(raw[:-8] + bytes(8))                     # damaged data: the checksum no longer matches
    with pytest.warns(UserWarning, match="corrupt"):
        g3 = B.shapes_gallery(bundled, n=16, seed=3, cache_dir=tmp_path, progress=False)
    assert np.array_equal(g1.embeddings, g3.embeddings) and files[0].read_bytes() == raw
    B.shapes_gallery(bundled, n=16, seed=4, cache_dir=tmp_path, progress=False)   # another key, another file
    assert len(list((tmp_path / "embeddings").glob("*.wsemb"))) == 2
    assert not [p for p in (tmp_path / "embeddings").iterdir() if p.name.endswith(".tmp")]
    idx, cos = g1.nearest(g1.embeddings[[3, 7]], k=2)
    assert list(idx[:, 0]) == [3, 7] and np.allclose(cos[:, 0], 1.0, atol=1e-6)


def test_folder_gallery_and_image_errors(bundled, tmp_path):
    from PIL import Image

    from weightscope.shapes import world
    from weightscope.analyses.sing import gallery as gal

    images, _ = world.single_objects(3, seed=1)
    for i, im in enumerate(images):
        Image.fromarray(im).save(tmp_path / f"{i}.png")
    g = gal.folder_gallery(bundled, tmp_path, cache_dir=tmp_path / "cache", progress=False)
    assert len(g) == 3 and g.captions == ("0.png", "1.png", "2.png")
    f = gal.embed_image(bundled, tmp_path / "1.png")
    assert g.nearest(f, 1)[0][0, 0] == 1
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(WeightscopeError, match="cannot decode image .*broken.png"):
        gal.embed_image(bundled, tmp_path / "broken.png")


# ------------------------------------------------------------------------------------------------ analysis and CLI

def test_bundled_analysis_steers_within_the_equivalence_class(bundled_result):
    r = bundled_result
    assert r.logit_change <= 1e-6
    main_row = r.steering[0]
    assert r.main_text == r.visibility.ranked(1, blind=True)[0][0] == main_row.text
    assert main_row.as_towards > 0 > main_row.as_away
    # SING's class texts follow, one per class, with their articles
    assert [row.text for row in r.steering[1:]] == [f"an image of {'an' if c[0] in 'aeiou' else 'a'} {c}" for c in r.classes]
    assert r.leakage["n_reachable"] > 200 and r.leakage["mean_abs_as"] > 0
    assert [d.space for d in r.directions] == ["row"] * 4 + ["null"] * 4
    assert all(d.plus and d.minus for d in r.directions)
    assert r.neighbours["f"][0][0] == 0                      # f is gallery image 0: its own nearest neighbour
    data = json.loads(r.to_json())
    assert data["null_dim"] == 56 and len(data["visibility"]) == len(r.visibility.concepts)


def test_cli_no_arguments_writes_json_and_report(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WEIGHTSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["sing"]) == 0
    out = tmp_path / "weightscope-out"
    data = json.loads((out / "sing.json").read_text())
    assert data["rank"] == 8 and data["null_dim"] == 56 and data["classes"][0] == "circle"
    html = (out / "sing.html").read_text()
    assert "Equivalent images" in html and html.count("data:image/png;base64") >= 3
    assert "null space 56-d" in capsys.readouterr().out


def _conv_only_checkpoint(path):
    import torch

    torch.save({"conv.weight": torch.zeros(4, 3, 3, 3), "bn.weight": torch.ones(4)}, path)
    return path


@pytest.mark.parametrize("args, message", [
    (["--classes", "no/such/classes.txt"], "class file not found"),
    (["--classes", "circle"], "at least 2"),
    (["--classes", "circle,square,Circle"], "duplicate class 'Circle'"),
    (["--image", "IMAGE"], "cannot decode image"),
    (["--classifier", "CONV"], "no 2-D weight: a classifier needs a linear head"),
    (["--classes", ","], "empty"),
    (["ViT-B-32"], "give --classes"),
    (["--vocab", "no-such-vocabulary"], "neither a built-in name"),
])
def test_cli_bad_input_is_one_line_and_exit_2(args, message, tmp_path, monkeypatch, capsys):
    import weightscope.models.load

    def no_loading(*a, **k):
        raise AssertionError("bad input must be refused before the model is loaded")

    monkeypatch.setattr(weightscope.models.load, "load_model", no_loading)
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    args = [{"IMAGE": str(tmp_path / "bad.png"), "CONV": str(_conv_only_checkpoint(tmp_path / "c.pt"))}.get(a, a)
            for a in args]
    assert main(["sing", *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err and err.startswith("weightscope sing: error:")
    assert not (tmp_path / "out").exists()


def test_analysis_with_an_image_texts_and_a_folder_gallery(bundled, tmp_path):
    from PIL import Image

    from weightscope.shapes import world
    from weightscope.analyses.sing import SingOptions
    from weightscope.bundled import sing_analysis

    images, scenes = world.single_objects(6, seed=2, spurious_strength=None)
    for i, im in enumerate(images):
        Image.fromarray(im).save(tmp_path / f"{i}.png")
    r = sing_analysis(bundled, "circle,square,star", ConceptExplainer("shapes_world", cache_dir=tmp_path / "c"), image=tmp_path / "2.png", texts=["a red object", "a blue background"], gallery=tmp_path,
                      options=SingOptions(n_directions=2), progress=False)
    assert (r.rank, r.null_dim) == (3, 61) and r.feature == "image 2.png" and r.f_image.shape == (48, 48, 3)
    assert [s.text for s in r.steering] == ["a red object", "a blue background", "an image of a circle",
                                            "an image of a square", "an image of a star"]
    assert r.neighbours["f"][0][:2] == (2, "2.png") and len(r.neighbours["f_tilde"]) == 6
    assert r.logit_change <= 1e-6 and r.families["shape"] > r.families["colour"]
    assert r.leakage["n_images"] == 6


def test_parse_classes_sources(tmp_path):
    from weightscope.analyses.sing import parse_classes

    (tmp_path / "classes.txt").write_text("cat\n\n dog \nbird\n")
    assert parse_classes(str(tmp_path / "classes.txt"))[0] == ["cat", "dog", "bird"]
    assert parse_classes("cat, dog")[0] == ["cat", "dog"]
    assert parse_classes("cifar10")[0][:2] == ["airplane", "automobile"]
    from weightscope.bundled import shape_classes

    names, templates, _ = parse_classes(shape_classes())
    assert len(names) == 8 and "a photo of a {}" in templates


# ------------------------------------------------------------------------------------------------ CIFAR-10 ResNets

def _cifar():
    if not (CIFAR_MODELS.is_dir() and CIFAR_DATA.is_dir()):
        pytest.skip(f"CIFAR-10 ResNets or test images not found under {SHARED}")
    sys.path.insert(0, str(REPO / "benchmarks"))
    import cifar_resnets

    return cifar_resnets


@pytest.mark.parametrize("depth", [20, 32, 44, 56])
def test_resnet_heads_null_dimension_and_equivalence(depth):
    import torch

    cr = _cifar()
    from weightscope.models.linear_heads import linear_head
    from weightscope.models.checkpoints import read_checkpoint

    head = linear_head(read_checkpoint(cr.weights_path(depth)).state_dict, cr.CLASSES)
    assert head.feature_space == "input of module.linear.weight" and head.weight.shape == (10, 64)  # as saved
    net = cr.load_resnet(depth)
    assert np.array_equal(linear_head(net).weight, head.weight)          # module path: the same last nn.Linear
    geom = head_geometry(head)
    assert (geom.rank, geom.null_dim) == (10, 54)
    lin = net.linear.double()
    rng = np.random.default_rng(depth)
    f = np.abs(rng.normal(size=(64, 64)))                                  # post-ReLU-like features
    for scale in (0.1, 1.0, 10.0):
        g = geom.equivalent(f, scale * rng.normal(size=(64, 64)) * np.linalg.norm(f, axis=1, keepdims=True))
        with torch.no_grad():
            a, b = lin(torch.from_numpy(f)).numpy(), lin(torch.from_numpy(g)).numpy()
        assert np.max(np.abs(a - b)) / np.max(np.abs(a)) <= 1e-6


def test_resnet_null_components_swap_on_real_images():
    """Replace each image's null component by another image's: every prediction stays (4 ResNets, 50 images)."""
    import torch

    cr = _cifar()
    from weightscope.models.linear_heads import linear_head

    x, y = cr.load_cifar_test(per_class=5)
    perm = np.random.default_rng(0).permutation(len(y))
    for depth in cr.DEPTHS:
        net = cr.load_resnet(depth)
        feats = cr.penultimate_features(net, x)
        with torch.no_grad():
            logits = net(x).double().numpy()
        assert np.allclose(feats @ net.linear.weight.detach().double().numpy().T + net.linear.bias.detach().double().numpy(), logits,
                           atol=1e-4)                                       # the features are linear's input
        geom = head_geometry(linear_head(net))
        row, null = geom.split(feats)
        swapped = row + null[perm]
        share = geom.null_share(feats)
        assert np.all((share > 0.05) & (share < 0.95))                     # the swapped parts are not negligible
        assert np.linalg.norm(swapped - feats) > 0.3 * np.linalg.norm(feats)
        with torch.no_grad():
            lin = net.linear.double()
            a, b = lin(torch.from_numpy(feats)).numpy(), lin(torch.from_numpy(swapped)).numpy()
        assert np.max(np.abs(a - b)) / np.max(np.abs(a)) <= 1e-6
        assert np.array_equal(a.argmax(1), b.argmax(1)) and (a.argmax(1) == y).mean() > 0.6


def test_cli_head_on_a_resnet_checkpoint(tmp_path, capsys):
    cr = _cifar()
    assert main(["sing", "--classifier", str(cr.weights_path(20)), "--classes", "cifar10", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "sing.json").read_text())
    assert (data["n_classes"], data["n_features"], data["rank"], data["null_dim"]) == (10, 64, 10, 54)
    assert "null space 54-d" in capsys.readouterr().out and (tmp_path / "sing.html").stat().st_size > 5000
