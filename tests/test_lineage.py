"""MoTHer lineage (METHODS.md section 13) on families built by construction: each child is its parent plus a
change that raises the weights' kurtosis (a few growing outliers), so distance places the edges and kurtosis
orients them; and the constructed shapes-world family's recorded result."""
import numpy as np
import pytest

from weightscope.analyses.zoo.lineage import FamilyTree, excess_kurtosis, family_tree
from weightscope.core.errors import WeightscopeError


def _child(parent, rng, step=0.05):
    """The parent plus small Gaussian noise, with a random fifth of its largest 10 % of weights (by magnitude)
    grown by 20 %: siblings differ by two independent changes, parent and child by one."""
    out = []
    for W in parent:
        d = step * rng.standard_normal(W.shape) * W.std()
        top = np.argsort(-np.abs(W), axis=None)[: max(5, W.size // 10)]
        idx = rng.choice(top, size=len(top) // 5, replace=False)
        d.flat[idx] += 0.2 * W.flat[idx]                              # outliers grow: kurtosis rises
        out.append(W + d)
    return out


def _family(seed):
    """base -> A -> (A1, A2); base -> B; A1 -> A11 (names listed shuffled)."""
    rng = np.random.default_rng(seed)
    base = [rng.standard_normal((40, 30)), rng.standard_normal((30, 60))]
    models = {"base": base}
    truth = {"A": "base", "B": "base", "A1": "A", "A2": "A", "A11": "A1"}
    for child, parent in truth.items():
        models[child] = _child(models[parent], rng)
    names = [str(n) for n in rng.permutation(list(models))]
    return names, [models[n] for n in names], truth


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_constructed_family_recovered_with_directions(seed):
    names, blocks, truth = _family(seed)
    tree = family_tree(names, blocks)
    assert tree.root == "base"
    assert {c: tree.parent[c] for c in truth} == truth
    # kurtosis rises along every true edge, as constructed
    k = dict(zip(tree.names, tree.statistic))
    assert all(k[c] > k[p] for c, p in truth.items())
    # the distances are the Frobenius distances over all blocks
    i, j = tree.names.index("A"), tree.names.index("B")
    direct = np.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(blocks[names.index("A")], blocks[names.index("B")])))
    assert tree.distance[i, j] == pytest.approx(direct, rel=1e-12)
    assert FamilyTree.from_dict(tree.to_dict()).parent == tree.parent


def test_wrong_direction_prior_reverses_edges():
    names, blocks, truth = _family(0)
    tree = family_tree(names, blocks, direction="decrease")
    assert tree.root != "base"        # the prior, not the data, sets the orientation: said in the docs


def test_bad_families_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(WeightscopeError, match="at least two models"):
        family_tree(["a"], [[rng.standard_normal((2, 2))]])
    with pytest.raises(WeightscopeError, match="one architecture"):
        family_tree(["a", "b"], [[np.zeros((2, 2))], [np.zeros((3, 2))]])
    assert excess_kurtosis(rng.standard_normal(200_000)) == pytest.approx(0.0, abs=0.05)
