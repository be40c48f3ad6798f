"""The family tree of a zoo from its weights alone (MoTHer: Horwitz, Shul & Hoshen, "Unsupervised Model Tree
Heritage Recovery", ICLR 2025, arXiv 2405.18432, sec. 4; METHODS.md section 13).

Within a zoo of one architecture:

1. Edges: the pairwise weight distance D_ij, here the Euclidean (Frobenius) distance over every block matrix
   (``spectra.block_matrices``: q, k, v, o, mlp_in, mlp_out of every layer). A child sits closest to its parent.
2. Directions: a weight statistic that moves monotonically along fine-tuning. MoTHer uses the kurtosis of the
   weights; here the mean over block matrices of each matrix's excess kurtosis (Fisher), ``statistic``.
   ``direction="increase"`` (default) expects a child's kurtosis above its parent's (outlier weights grow while
   fine-tuning, the paper's generalisation stage); "decrease" the opposite (its memorisation stage).
   K_ij = 1 when an edge i -> j (i the parent) goes against that order.
3. The tree: a minimum directed spanning tree (Chu-Liu/Edmonds, ``networkx.minimum_spanning_arborescence``) of the
   merged cost M = D + lam K, lam = ``direction_weight`` x the largest distance, so with the default weight 1 the
   direction prior overrides distance and distance picks among edges that agree with it.

Check it on a constructed family before trusting it (``benchmarks/shapes_family_tree.py``): direction rests on
the statistic's monotonicity, which short fine-tunes need not show.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...core.errors import WeightscopeError


@dataclass
class FamilyTree:
    """names (n,); distance (n, n) Euclidean weight distances; statistic (n,) the direction statistic;
    parent {name: parent name or None (the root)}; cost (n, n) the merged matrix the tree minimises;
    settings: direction, direction_weight."""

    names: list[str]
    distance: np.ndarray
    statistic: np.ndarray
    parent: dict
    cost: np.ndarray
    settings: dict = field(default_factory=dict)

    @property
    def root(self) -> str:
        return next(n for n in self.names if self.parent[n] is None)

    def edges(self) -> list[tuple[str, str]]:
        """(parent, child) pairs in the order of ``names`` (children)."""
        return [(self.parent[n], n) for n in self.names if self.parent[n] is not None]

    def children(self, name: str) -> list[str]:
        return [c for c in self.names if self.parent[c] == name]

    def summary(self) -> str:
        i = {n: k for k, n in enumerate(self.names)}
        lines = [f"family tree of {len(self.names)} models (root {self.root}; direction: kurtosis "
                 f"{self.settings.get('direction', 'increase')}s from parent to child)"]

        def walk(node, depth):
            extra = "" if self.parent[node] is None else f"  (distance {self.distance[i[self.parent[node]], i[node]]:.4g})"
            lines.append(f"{'  ' * depth}{node}  kurtosis {self.statistic[i[node]]:.4f}{extra}")
            for c in self.children(node):
                walk(c, depth + 1)

        walk(self.root, 1)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"names": self.names, "parent": self.parent, "distance": self.distance.tolist(),
                "statistic": self.statistic.tolist(), "cost": self.cost.tolist(), "settings": self.settings}

    @classmethod
    def from_dict(cls, d: dict) -> "FamilyTree":
        return cls(list(d["names"]), np.asarray(d["distance"]), np.asarray(d["statistic"]), dict(d["parent"]),
                   np.asarray(d["cost"]), dict(d.get("settings", {})))


def excess_kurtosis(x: np.ndarray) -> float:
    """Fisher's excess kurtosis of the entries of x (0 for a Gaussian), in float64."""
    from scipy.stats import kurtosis

    return float(kurtosis(np.asarray(x, dtype=np.float64).ravel(), fisher=True, bias=True))


def weight_blocks(weights) -> list[np.ndarray]:
    """The block matrices of a ``VisionWeights`` (layer-major; ``spectra.block_matrices``), as float32 arrays."""
    from .spectra import block_matrices

    return [np.asarray(W, dtype=np.float32) for layer in weights.layers for W in block_matrices(layer).values()]


def family_tree(names: list[str], blocks: list[list[np.ndarray]], *, direction: str = "increase",
                direction_weight: float = 1.0) -> FamilyTree:
    """MoTHer's tree over models given as lists of same-shaped matrices (``weight_blocks`` of each model).

    names: (n,) unique; blocks: n lists of arrays, one shape per position. Raises WeightscopeError for fewer than
    two models, mismatched shapes or an unknown direction. Deterministic: ties are broken by input order
    (networkx's Edmonds on nodes added in that order)."""
    import networkx as nx

    n = len(names)
    if n < 2 or len(blocks) != n or len(set(names)) != n:
        raise WeightscopeError(f"a family tree needs at least two models with unique names; got {n}")
    if direction not in ("increase", "decrease"):
        raise WeightscopeError(f"direction must be 'increase' or 'decrease', got {direction!r}")
    shapes = [tuple(b.shape for b in bl) for bl in blocks]
    if any(s != shapes[0] for s in shapes):
        bad = names[next(i for i, s in enumerate(shapes) if s != shapes[0])]
        raise WeightscopeError(f"{bad} has other matrix shapes than {names[0]}: a family tree needs one architecture")
    sq = np.zeros((n, n))
    for p in range(len(blocks[0])):   # block by block: memory of one block of every model at a time
        X = np.stack([np.asarray(bl[p], dtype=np.float64).ravel() for bl in blocks])
        sq += ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1) if X.shape[1] * n * n < 5e7 else _pairwise_sq(X)
    distance = np.sqrt(np.maximum(sq, 0.0))
    stat = np.array([np.mean([excess_kurtosis(b) for b in bl]) for bl in blocks])
    against = (stat[None, :] < stat[:, None]) if direction == "increase" else (stat[None, :] > stat[:, None])
    lam = direction_weight * float(distance.max())
    cost = distance + lam * against
    g = nx.DiGraph()
    g.add_nodes_from(range(n))
    g.add_weighted_edges_from((i, j, float(cost[i, j])) for i in range(n) for j in range(n) if i != j)
    tree = nx.minimum_spanning_arborescence(g, attr="weight", preserve_attrs=True)
    parent = {str(names[j]): None for j in range(n)}
    for i, j in tree.edges():
        parent[str(names[j])] = str(names[i])
    return FamilyTree([str(x) for x in names], distance, stat, parent, cost,
                      {"direction": direction, "direction_weight": direction_weight, "statistic": "kurtosis",
                       "distance": "euclidean"})


def _pairwise_sq(X: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of X, row pair by row pair (exact, no Gram cancellation)."""
    n = X.shape[0]
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            d = X[i] - X[j]
            out[i, j] = out[j, i] = float(d @ d)
    return out


def lineage_of_checkpoints(members, *, model: str | None = None, loading=None, progress: bool = True,
                           **kwargs) -> FamilyTree:
    """:func:`family_tree` of checkpoints given as (name, spec) pairs (``compare`` specs), loaded one at a time
    (model: the architecture of bare paths; default: the first checkpoint's; loading: ``compare.SpecLoading``).

    Memory: every model's block matrices in float32 (about 4 bytes per weight per model). kwargs: direction,
    direction_weight."""
    from tqdm.auto import tqdm

    from ..compare import architecture_of, load_checkpoint
    from ...models.adapters import describe_model

    names, blocks = [], []
    for name, spec in tqdm(list(members), desc="lineage", unit="model", disable=not progress):
        loaded = load_checkpoint(spec, model, loading)
        model = model or architecture_of(loaded)   # bare paths after the first take its architecture
        names.append(name)
        blocks.append(weight_blocks(describe_model(loaded)))
    return family_tree(names, blocks, **kwargs)


def save_tree(tree: FamilyTree, path: str | Path) -> Path:
    from ...core.fileio import write_atomic

    return write_atomic(path, json.dumps(tree.to_dict(), indent=1))
