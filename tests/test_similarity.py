"""Concept-based layer similarity: hooks, probes, measures (with independent references and invariances), a
planted case, the shapes-world masks, the data-free measures on the bundled pair, the report and the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.stats import ortho_group

from weightscope.concepts.explainer import ConceptExplainer
from weightscope.models.activations import collect_activations, pool_spatial
from weightscope.cli import main
from weightscope.core.errors import WeightscopeError
from weightscope.analyses.similarity import (Concepts, channels_last, cka_matrix, compare_probed, correlation_matrix,
                                    cosine_matrix, depth_alignment, linear_cka, probe_layer, probe_model,
                                    split_indices, subspace_matrix, subspace_similarity)

# ------------------------------------------------------------------------------------------- activations


def _convnet():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.Conv2d(4, 6, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(6, 2),
    )


def test_hooked_activations_equal_the_modules_own_forward_and_leave_the_model_untouched():
    net = _convnet().train()  # training mode: a forward would update batch-norm statistics
    stats = net[1].running_mean.clone()
    x = torch.randn(10, 3, 8, 8)
    got = collect_activations(net, x, ["2", "4", "7"], reduce=channels_last, batch_size=3, progress=False)
    net.eval()
    with torch.no_grad():
        ref2 = net[:3](x).permute(0, 2, 3, 1).numpy()
        ref4 = net[:5](x).permute(0, 2, 3, 1).numpy()
        ref7 = net(x).numpy()
    np.testing.assert_allclose(got["2"], ref2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["4"], ref4, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["7"], ref7, rtol=1e-5, atol=1e-6)
    net.train()
    assert torch.equal(net[1].running_mean, stats)
    pooled = collect_activations(net, x.numpy(), ["4"], reduce=pool_spatial, batch_size=4, progress=False)["4"]
    np.testing.assert_allclose(pooled, ref4.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    assert net.training and net[1].training  # flags restored


def test_unknown_layer_name_is_one_line():
    with pytest.raises(WeightscopeError, match="unknown layer name 'layer9'") as err:
        collect_activations(_convnet(), torch.zeros(2, 3, 8, 8), ["layer9"], progress=False)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------- measures


def _gram_cka(X, Y):
    """CKA from n x n Gram matrices, HSIC form tr(K H L H) (independent of the feature-space formula)."""
    n = len(X)
    H = np.eye(n) - np.ones((n, n)) / n
    K, L = X @ X.T, Y @ Y.T
    hsic = lambda A, B: np.trace(A @ H @ B @ H)  # noqa: E731
    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


def test_linear_cka_matches_the_gram_form_and_its_invariances():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 7))
    Y = X[:, :5] @ rng.normal(size=(5, 9)) + 0.5 * rng.normal(size=(40, 9))
    assert linear_cka(X, Y) == pytest.approx(_gram_cka(X, Y), abs=1e-12)
    assert cka_matrix([X, Y], [Y])[0, 0] == pytest.approx(_gram_cka(X, Y), abs=1e-12)
    Q = ortho_group.rvs(9, random_state=2)
    assert linear_cka(X, Y @ Q * 3.7) == pytest.approx(linear_cka(X, Y), abs=1e-12)
    assert linear_cka(X + 5.0, Y) == pytest.approx(linear_cka(X, Y), abs=1e-12)  # centring
    assert linear_cka(X, X @ ortho_group.rvs(7, random_state=3)) == pytest.approx(1.0, abs=1e-12)
    # not invariant to a general (anisotropic) linear map: the test would catch a whitening implementation
    assert abs(linear_cka(X, Y * np.arange(1, 10)) - linear_cka(X, Y)) > 1e-3


def test_every_measure_has_an_exact_unit_diagonal_and_is_symmetric_on_one_model():
    rng = np.random.default_rng(0)
    feats = [rng.normal(size=(30, 4)) * (i + 1) for i in range(4)]
    resp = [rng.normal(size=(30, 2, 2)) for _ in range(4)]
    profiles = np.abs(rng.normal(size=(4, 11)))
    spaces = [rng.normal(size=(3, 8)) for _ in range(4)]
    for S in (cka_matrix(feats, feats, same=True), correlation_matrix(resp, resp, same=True),
              cosine_matrix(profiles, profiles, same=True), subspace_matrix(spaces, spaces, same=True)):
        assert np.all(np.diag(S) == 1.0)
        assert np.array_equal(S, S.T)
        assert np.all(S <= 1.0)
    # a model against an independent copy of itself (not flagged same): the diagonal is 1 by computation too
    copy = [f.copy() for f in feats]
    np.testing.assert_allclose(np.diag(cka_matrix(feats, copy)), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.diag(subspace_matrix(spaces, [s.copy() for s in spaces])), 1.0, atol=1e-12)


def test_subspace_similarity_hand_values_and_basis_invariance():
    theta = 0.3
    a = np.array([[1.0, 0.0, 0.0]])
    b = np.array([[np.cos(theta), np.sin(theta), 0.0]])
    assert subspace_similarity(a, b) == pytest.approx(np.cos(theta) ** 2, abs=1e-12)
    assert subspace_similarity(a, np.array([[0.0, 0.0, 2.0]])) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(4)
    P, Q = rng.normal(size=(3, 10)), rng.normal(size=(4, 10))
    mix = rng.normal(size=(3, 3))  # any invertible change of basis of P's span
    assert subspace_similarity(mix @ P, Q) == pytest.approx(subspace_similarity(P, Q), abs=1e-10)
    assert subspace_similarity(P, np.vstack([P, Q[:1]])) == pytest.approx(1.0, abs=1e-12)


def test_concept_vector_responses_are_invariant_to_orthogonal_maps_and_isotropic_scaling():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, 6))
    y = (X[:, 0] + 0.5 * X[:, 1] + 0.7 * rng.normal(size=300)) > 0
    concepts = Concepts(["c"], y[:, None])
    train, test = split_indices(300)
    _, r1 = probe_layer(X, concepts, train, test, "a")
    _, r2 = probe_layer(X @ ortho_group.rvs(6, random_state=6) * 4.2, concepts, train, test, "b")
    np.testing.assert_allclose(r1, r2, atol=1e-5)
    S = correlation_matrix([r1[:, 0]], [r2[:, 0]])
    assert S[0, 0] == pytest.approx(1.0, abs=1e-9)


def test_depth_alignment_by_hand():
    S = np.array([[0.9, 0.1, 0.0, 0.0], [0.1, 0.2, 0.8, 0.1]])  # A (2 layers) -> B layers 0 and 2
    d = depth_alignment([S])
    # rows: (0.5 -> 0.25), (1.0 -> 0.75); columns: (0.25 -> 0.5), (0.5 -> 1.0), (0.75 -> 1.0), (1.0 -> 1.0)
    a = np.array([0.5, 1.0, 0.25, 0.5, 0.75, 1.0])
    b = np.array([0.25, 0.75, 0.5, 1.0, 1.0, 1.0])
    assert d["mean_abs_diff"] == pytest.approx(np.mean(np.abs(a - b)))
    assert d["n_points"] == 6


# ------------------------------------------------------------------------------------------- bad input


def test_bad_concepts_and_lengths_raise_one_line():
    with pytest.raises(WeightscopeError, match="one class"):
        Concepts(["always"], np.ones((10, 1), dtype=bool))
    concepts = Concepts(["c"], (np.arange(10) % 2 == 0)[:, None])
    with pytest.raises(WeightscopeError, match="12 images of activations but 10"):
        probe_layer(np.zeros((12, 3)), concepts, np.arange(5), np.arange(5, 10), "x")
    with pytest.raises(WeightscopeError, match="one label row per image|one per image"):
        probe_model(_convnet(), torch.zeros(12, 3, 8, 8), concepts, ["4"], name="m", progress=False)


# ------------------------------------------------------------------------------------------- planted case


class _Block(torch.nn.Module):
    """Passes the 8-d input state on and adds features: |x0 + x1| - |x0 - x1| pieces (ReLU) where the concept
    x0 * x1 > 0 is to be linearly decodable, random linear features of the state elsewhere (XOR is not linear)."""

    def __init__(self, decodable: bool, extra: int, seed: int, prev: torch.Tensor | None):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.decodable = decodable
        self.mix = torch.linalg.qr(torch.randn(8 + extra, 8 + extra, generator=g))[0]
        self.lin = torch.randn(8, extra, generator=g)
        self.extra = extra
        self.prev = prev  # the previous block's output rotation: undone to read the state back (a linear layer)

    def forward(self, s):
        s = (s if self.prev is None else s @ self.prev.T)[:, :8]
        if self.decodable:
            a, b = s[:, 0] + s[:, 1], s[:, 0] - s[:, 1]
            pieces = torch.stack([a.relu(), (-a).relu(), b.relu(), (-b).relu()], dim=1)
            feats = pieces.repeat(1, self.extra // 4)
        else:
            feats = s @ self.lin
        return torch.cat([s, feats], dim=1) @ self.mix


def _planted(depth: int, decodable: set[int], extra: int, seed: int):
    blocks = []
    for i in range(depth):
        blocks.append(_Block(i in decodable, extra, seed + i, blocks[-1].mix if blocks else None))
    return torch.nn.Sequential(*blocks)


def test_planted_concept_is_found_at_the_known_layers_only():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1200, 8)).astype(np.float32)
    concepts = Concepts(["xor"], (x[:, 0] * x[:, 1] > 0)[:, None])
    nets = {"A": (_planted(5, {2, 3}, 4, 10), {2, 3}), "B": (_planted(10, {5, 6, 7}, 8, 20), {5, 6, 7})}
    probed = []
    for name, (net, known) in nets.items():
        layers = [str(i) for i in range(len(net))]
        p = probe_model(net, torch.from_numpy(x), concepts, layers, name=name, progress=False)
        ap = np.array([vecs[0].quality for vecs in p.vectors])
        assert np.all(ap[sorted(known)] > 0.99), ap
        assert np.all(np.delete(ap, sorted(known)) < 0.7), ap
        probed.append(p)
    sim = compare_probed(probed)
    S = sim.matrix("concept", "A", "B")
    # every decodable layer of A is matched best by a decodable layer of B (and vice versa), strongly
    assert set(np.argmax(S[[2, 3]], axis=1)) <= {5, 6, 7}
    assert set(np.argmax(S[:, [5, 6, 7]], axis=0)) <= {2, 3}
    assert S[np.ix_([2, 3], [5, 6, 7])].min() > 0.95
    assert np.abs(S[np.ix_([2, 3], [0, 1, 2, 3, 4, 8, 9])]).max() < 0.3
    assert np.all(np.diag(sim.matrix("concept", "A")) == 1.0)


def test_spatial_probe_finds_a_planted_mask_channel():
    rng = np.random.default_rng(3)
    n, g = 200, 4
    masks = (rng.random((n, 1, 8, 8)) < 0.1).astype(np.float32)  # a cell is positive with p = 0.34
    frac = masks.reshape(n, 1, g, 2, g, 2).mean(axis=(3, 5))[:, 0]
    feats = rng.normal(size=(n, g, g, 5))
    feats[..., 2] += 4.0 * (frac >= 0.25)
    concepts = Concepts(["planted"], masks.any(axis=(2, 3)), masks)
    train, test = split_indices(n)
    vec, _ = probe_layer(feats, concepts, train, test, "x", mask_threshold=0.25)
    assert vec[0].metric == "IoU" and vec[0].quality > 0.9
    assert np.argmax(np.abs(vec[0].weight)) == 2
    vec, _ = probe_layer(rng.normal(size=(n, g, g, 5)), concepts, train, test, "noise", mask_threshold=0.25)
    assert vec[0].quality < 0.45  # about the IoU of calling every cell positive


# ------------------------------------------------------------------------------------------- shapes world


def test_concept_masks_cover_the_rendered_objects():
    from weightscope.shapes import world

    rng = np.random.default_rng(11)
    scenes = world.sample_scenes(60, rng, spurious_strength=None)
    images = world.render(scenes, rng).astype(float)
    masks = world.concept_masks(scenes)
    names = world.concept_names()
    assert masks.shape == (60, len(names), 48, 48)
    palette = np.array(list(world.COLOURS.values()), dtype=float)
    bgs = np.array(list(world.BACKGROUNDS.values()), dtype=float)
    obj = np.zeros((60, 48, 48), dtype=bool)
    hits = []  # per mask pixel: rendered colour closer to the object's colour than to the background's
    for i in range(60):
        for k in range(int(scenes.n_objects[i])):
            colour = palette[scenes.colour[i, k]] + scenes.tint[i, k]
            bg = bgs[scenes.background[i]] + scenes.bg_tint[i]
            m = masks[i, names.index(f"shape:{world.SHAPES[scenes.shape[i, k]]}")] & \
                masks[i, names.index(f"position:{world.POSITIONS[scenes.position[i, k]]}")]
            closer = np.linalg.norm(images[i][m] - colour, axis=1) < np.linalg.norm(images[i][m] - bg, axis=1)
            assert m.sum() > 20 and closer.mean() > 0.8  # edge pixels (coverage near 1/2) may go either way
            hits.append(closer)
            obj[i] |= m
        bg_mask = masks[i, names.index(f"background:{world.BACKGROUND_NAMES[scenes.background[i]]}")]
        assert np.array_equal(bg_mask, ~obj[i])  # background = everything outside the objects
    assert np.concatenate(hits).mean() > 0.97
    # every object concept group partitions the object pixels
    for group in ("shape", "colour", "size", "position"):
        idx = [j for j, n in enumerate(names) if n.startswith(group + ":")]
        assert np.array_equal(masks[:, idx].sum(axis=1), obj.astype(int))


@pytest.fixture(scope="module")
def bundled_pair():
    from weightscope.bundled import load_model

    return load_model(), load_model("bundled", pretrained="tuned")


def test_bundled_shapes_probes_and_side_by_side(bundled_pair, tmp_path):
    from weightscope.reports.similarity import write_report
    from weightscope.analyses.similarity import layer_similarity
    from weightscope.analyses.similarity.concepts import downsample_masks
    from weightscope.bundled import shapes_probes

    probes = shapes_probes(300, seed=7)
    sim = layer_similarity([bundled_pair[0]], ConceptExplainer("shapes_world", cache_dir=tmp_path / "cache"),
                           probes=probes, data_free=True, layers=[0, 3, 5], n_directions=2, progress=False)
    q = sim.probe_quality()
    # chance: the IoU of calling every patch positive = the concept's share of positive patches (3 x 3 map)
    concepts = probes.concepts
    share = (downsample_masks(concepts.masks, (3, 3)) >= 0.05).mean(axis=(0, 2, 3))
    for name, rate in zip(concepts.names, share):
        assert q[name]["metric"] == "IoU" and q[name]["best"] > 3 * rate, (name, q[name], rate)
        if name.startswith("background:"):
            assert q[name]["best"] > 0.95
    assert set(sim.main_measures) == {"concept", "cka", "profile", "subspace"}
    ranks = {(r["measure_a"], r["measure_b"]): r["spearman"] for r in sim.rank_correlations()}
    assert ("concept", "profile") in ranks and np.isfinite(ranks["concept", "profile"])
    written = write_report(sim, tmp_path / "out")
    back = json.loads(written["similarity.json"].read_text())
    assert {m["measure"] for m in back["matrices"]} >= {"concept", "cka", "profile", "subspace"}
    assert written["report.html"].read_text().count("data:image/png;base64") >= 5
    assert "probe_quality.csv" in written


def test_datafree_bundled_base_vs_tuned(bundled_pair, tmp_path):
    from weightscope.analyses.similarity import datafree_similarity

    base, tuned = bundled_pair
    sim = datafree_similarity([base, tuned, base], ["base", "tuned", "base-again"], explainer=ConceptExplainer("shapes_world", cache_dir=tmp_path), n_directions=2, progress=False)
    for m in ("profile", "subspace"):
        S = sim.matrix(m, "base")
        assert np.all(np.diag(S) == 1.0) and np.array_equal(S, S.T)
        np.testing.assert_allclose(np.diag(sim.matrix(m, "base", "base-again")), 1.0, atol=1e-9)
        cross = sim.matrix(m, "base", "tuned")
        # fine-tuning keeps each layer closest to itself
        assert np.array_equal(np.argmax(cross, axis=1), np.arange(len(cross)))
    names, M = sim.model_matrix("subspace")
    assert M[0, 0] == 1.0 and M[0, 2] == pytest.approx(1.0, abs=1e-9) and M[0, 1] < 1.0


# ------------------------------------------------------------------------------------------- CLI


def test_cli_writes_report_and_rejects_bad_input(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WEIGHTSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "out"
    assert main(["similarity", "--vocab", "shapes_world", "--layers", "4,5", "--directions", "2", "--quiet",
                 "--out", str(out)]) == 0
    assert "bundled:tuned" in capsys.readouterr().out
    assert (out / "report.html").is_file() and (out / "similarity_matrices.csv").is_file()
    data = json.loads((out / "similarity.json").read_text())
    assert len(data["models"]) == 2

    one = tmp_path / "one_class" / "cat"
    one.mkdir(parents=True)
    bad = [["similarity", "--layers", "99", "--quiet"],
           ["similarity", "bundled", "--concepts", "cifar10", "--images", str(tmp_path / "one_class"), "--quiet"],
           ["similarity", "bundled", "--concepts", "cifar10", "--quiet"],
           ["similarity", "--vocab", "shapes_world", "--k", "0", "--quiet"]]
    for argv in bad:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("weightscope similarity: error:") and "\n" not in err, err
