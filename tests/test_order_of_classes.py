"""Issue 26 kind 2 (SING and similarity parts): results do not depend on the order of the classes, the concepts
or the texts; ties are broken by an order-independent rule. Checked with random permutations."""
import numpy as np
import pytest

import weightscope
from weightscope.analyses.sing.analysis import ClassSet, SingOptions, sing_analysis
from weightscope.analyses.sing.geometry import head_geometry
from weightscope.analyses.sing.semantics import Visibility
from weightscope.concepts.explainer import ConceptExplainer
from weightscope.concepts.vocab import load_vocabulary
from weightscope.models.linear_heads import LinearHead


@pytest.fixture(scope="module")
def loaded():
    return weightscope.load_model()


def _summary(r):
    vis = dict(zip(r.visibility.concepts, r.visibility.visibility))
    dirs = [(d.space, d.index, round(d.weight, 6), [c for c, _ in d.plus], [c for c, _ in d.minus])
            for d in r.directions]
    steer = {row.text: (row.as_towards, row.as_away) for row in r.steering}
    return vis, dirs, steer, r.main_text, r.feature, r.singular_values, r.rank, r.logit_change


def test_order_of_classes_sing(loaded):
    """SING on the bundled head with its 8 classes and its vocabulary, then with both permuted at random: the
    same visibilities, explanations, default text, default feature, steering and logit change."""
    base = weightscope.bundled.shape_classes()
    vocab = load_vocabulary("shapes_world")
    runs = []
    for seed in (None, 1, 2):
        names, words = list(base.names), list(vocab)
        if seed is not None:
            rng = np.random.default_rng(seed)
            names = [names[i] for i in rng.permutation(len(names))]
            words = [words[i] for i in rng.permutation(len(words))]
        classes = ClassSet(names, base.templates, "shapes")
        r = sing_analysis(loaded, classes, ConceptExplainer(words, normalize="splice"),
                          options=SingOptions(n_directions=3), progress=False)
        runs.append(_summary(r))
    ref = runs[0]
    for got in runs[1:]:
        assert got[0].keys() == ref[0].keys()
        np.testing.assert_allclose([got[0][c] for c in ref[0]], list(ref[0].values()), rtol=0, atol=1e-6)
        assert got[1] == ref[1]                    # directions: same atoms in the same order
        assert got[3] == ref[3] and got[4] == ref[4]
        for text, (tw, aw) in ref[2].items():
            assert got[2][text][0] == pytest.approx(tw, abs=1e-6) and got[2][text][1] == pytest.approx(aw, abs=1e-6)
        np.testing.assert_allclose(got[5], ref[5], rtol=1e-10)
        assert got[6] == ref[6] and got[7] == pytest.approx(ref[7], abs=1e-9)


def test_order_of_classes_ties_and_bases():
    """Other members: tied visibilities ranked by name, not by vocabulary order; a head with equal singular values
    (a degenerate group) gets the same row basis whatever the order of its rows."""
    vis = Visibility(("zebra", "apple", "mango"), np.array([0.5, 0.5, 0.2]), np.zeros(3))
    vis_p = Visibility(("mango", "apple", "zebra"), np.array([0.2, 0.5, 0.5]), np.zeros(3))
    assert vis.ranked(2) == vis_p.ranked(2) == [("apple", 0.5), ("zebra", 0.5)]
    assert vis.ranked(1, blind=True) == vis_p.ranked(1, blind=True) == [("mango", 0.2)]
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.standard_normal((16, 4)))
    W = 3.0 * Q.T                                   # 4 classes, all singular values 3: any rotation is an SVD
    for _ in range(3):
        perm = rng.permutation(4)
        a = head_geometry(LinearHead(W, np.zeros(4), tuple(str(i) for i in range(4)), "test"))
        b = head_geometry(LinearHead(W[perm], np.zeros(4), tuple(str(i) for i in perm), "test"))
        np.testing.assert_array_equal(a.row, b.row)
        np.testing.assert_array_equal(a.null, b.null)
