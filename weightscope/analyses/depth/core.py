"""Similarity Depth: the class hierarchy a classifier perceives, and whether its errors follow it.

Source: Filus, Romaszewski, Zarski, "Semantic Depth Matters: Explaining Errors of Deep Vision Networks through
Perceived Class Similarities" (arXiv 2504.09956, seed 003; METHODS.md section 9), and the facts of its
authors' code (MatZar01/DeepHierarchy) where the paper leaves a choice open.

Pipeline, for C classes:
1. Class templates = rows of a linear head (C, F) (a torch classifier's last layer, or a CLIP zero-shot
   head's class text embeddings: :mod:`weightscope.models.linear_heads`); cosine similarity (C, C); or a similarity
   matrix given directly. Min-max normalised over the whole matrix, diagonal set to 1 (:func:`normalise`).
2. Clusters of classes (:func:`class_graph`): Affinity Propagation on the affinities (default; sklearn,
   preference = median, seeded), Louvain communities of the weighted graph (networkx, seeded), OPTICS or
   HDBSCAN on distances 1 - affinity (sklearn defaults, min_samples capped at C). As in the authors' code,
   the points OPTICS / HDBSCAN leave as noise form one group (flagged ``noise``), and a pair with affinity
   0 is not an edge of the graph.
3. A maximum spanning tree inside each cluster (networkx Kruskal; a forest where a cluster is not connected).
4. For each tree edge, the depth of the two classes' lowest common WordNet hypernym
   (:meth:`weightscope.concepts.wordnet.WordNet.lch_depth`: the authors' NLTK Wu-Palmer convention).
   Similarity Depth SD = mean depth over all tree edges of all clusters.
5. Compliance with errors: the same graph from a confusion matrix (rows normalised to sum 1, symmetrised
   (M + M^T) / 2, diagonal 1: :func:`confusion_affinity`). Direct compliance = shared tree edges / tree
   edges of the similarity graph ("similarities that cause confusions") and / tree edges of the confusion
   graph ("confusions that similarities explain"). Extended compliance = share of one graph's tree edges
   whose two classes lie in one cluster of the other graph, both ways.

Differences from the authors' code: no +-5e-8 symmetric noise is added to the similarity matrix (tied
weights are broken by class order instead); Louvain is networkx's implementation, not python-louvain's, so its
communities can differ (on their ConvNeXt both find 8; SD 7.554 here, 7.511 there). Affinity Propagation,
OPTICS and HDBSCAN reproduce the authors' ConvNeXt figures exactly (tests/test_depth.py).

All functions are deterministic for a fixed ``seed``; every bad input raises WeightscopeError (one line).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from ...core.defaults import CLUSTERING_METHODS
from ...core.errors import WeightscopeError

METHODS = CLUSTERING_METHODS
SEED = 42  # the authors' seed


def _square(matrix, what: str, n: int | None = None) -> np.ndarray:
    M = np.asarray(matrix, dtype=np.float64)
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise WeightscopeError(f"the {what} must be a square (classes x classes) matrix, got shape {M.shape}")
    if n is not None and M.shape[0] != n:
        raise WeightscopeError(f"the {what} is {M.shape[0]} x {M.shape[1]} but there are {n} classes; "
                               f"give a {n} x {n} matrix in the class order")
    if M.shape[0] < 3:
        raise WeightscopeError(f"Similarity Depth needs at least 3 classes, got {M.shape[0]}")
    if not np.isfinite(M).all():
        raise WeightscopeError(f"the {what} holds NaN or infinite values; give finite numbers")
    return M


def cosine_similarity(templates) -> np.ndarray:
    """Cosine similarity (C, C) of class templates (C, F) (rows of a head's weight). Raises for a zero row."""
    W = np.asarray(getattr(templates, "weight", templates), dtype=np.float64)
    if W.ndim != 2:
        raise WeightscopeError(f"class templates must be a 2-D (classes, features) array, got shape {W.shape}")
    if W.shape[0] < 3:
        raise WeightscopeError(f"Similarity Depth needs at least 3 classes, got {W.shape[0]}")
    if not np.isfinite(W).all():
        raise WeightscopeError("the class templates hold NaN or infinite values")
    norms = np.linalg.norm(W, axis=1)
    if (norms == 0).any():
        raise WeightscopeError(f"class template {int(np.argmin(norms))} is all zeros; its cosine is undefined")
    U = W / norms[:, None]
    S = np.clip(U @ U.T, -1.0, 1.0)
    np.fill_diagonal(S, 1.0)
    return S


def normalise(similarity) -> np.ndarray:
    """Min-max normalised similarity (C, C): (S - min) / (max - min) over all entries, then diagonal 1.

    Raises WeightscopeError when the matrix is not square, not symmetric (tolerance 1e-6 of its range), has
    fewer than 3 classes, or is constant.
    """
    S = _square(similarity, "similarity matrix")
    lo, hi = float(S.min()), float(S.max())
    if hi <= lo:
        raise WeightscopeError("the similarity matrix is constant; min-max normalisation needs a spread")
    if np.abs(S - S.T).max() > 1e-6 * (hi - lo):
        raise WeightscopeError("the similarity matrix is not symmetric; give a class-similarity matrix with S = S^T")
    A = (S - lo) / (hi - lo)
    A = (A + A.T) / 2  # exact symmetry for the graph
    np.fill_diagonal(A, 1.0)
    return A


def confusion_affinity(confusion, n_classes: int | None = None) -> np.ndarray:
    """Confusion matrix (C, C) (row = true class, column = predicted; counts or rates) -> affinity (C, C):
    rows normalised to sum 1, symmetrised (M + M^T) / 2, diagonal 1.

    Raises WeightscopeError for a matrix of the wrong shape, with negative or non-finite entries, or with
    a class (row) that has no samples.
    """
    M = _square(confusion, "confusion matrix", n_classes)
    if (M < 0).any():
        i, j = np.argwhere(M < 0)[0]
        raise WeightscopeError(f"the confusion matrix has a negative entry at ({i}, {j}); counts or rates are >= 0")
    rows = M.sum(axis=1)
    if (rows <= 0).any():
        raise WeightscopeError(f"row {int(np.argmin(rows))} of the confusion matrix sums to 0: that class has no "
                               "samples; every true class needs at least one")
    R = M / rows[:, None]
    A = (R + R.T) / 2
    np.fill_diagonal(A, 1.0)
    return A


@dataclass(frozen=True)
class ClassGraph:
    """Clusters of classes and the maximum spanning tree inside each.

    clusters: groups of class indices (each sorted), ordered by their first member; noise: index into
    clusters of the group OPTICS / HDBSCAN left as noise (None if none); edges: tree edges (i, j, affinity)
    with i < j, sorted; cluster_of: (C,) cluster index per class; converged: False when Affinity
    Propagation did not converge (sklearn then labels every class noise: one group).
    """

    method: str
    clusters: tuple[tuple[int, ...], ...]
    edges: tuple[tuple[int, int, float], ...]
    noise: int | None = None
    converged: bool = True

    @property
    def n_clusters(self) -> int:
        return len(self.clusters)

    @property
    def cluster_of(self) -> np.ndarray:
        out = np.empty(sum(len(c) for c in self.clusters), dtype=int)
        for k, members in enumerate(self.clusters):
            out[list(members)] = k
        return out

    @property
    def edge_set(self) -> set[tuple[int, int]]:
        return {(i, j) for i, j, _ in self.edges}


def _labels(A: np.ndarray, method: str, seed: int) -> tuple[np.ndarray, bool]:
    """Cluster labels (C,) (-1 = noise) of an affinity matrix, and whether the method converged."""
    from sklearn.exceptions import ConvergenceWarning

    C = A.shape[0]
    converged = True
    if method == "affinity":
        from sklearn.cluster import AffinityPropagation

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            labels = AffinityPropagation(affinity="precomputed", random_state=seed).fit(A).labels_
        converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    elif method == "louvain":
        import networkx as nx

        communities = nx.community.louvain_communities(_graph(A, self_loops=True), weight="weight", seed=seed)
        labels = np.empty(C, dtype=int)
        for k, members in enumerate(communities):
            labels[list(members)] = k
    elif method in ("optics", "hdbscan"):
        from sklearn.cluster import HDBSCAN, OPTICS

        D = 1.0 - A
        np.fill_diagonal(D, 0.0)
        est = OPTICS(metric="precomputed", min_samples=min(5, C)) if method == "optics" else \
            HDBSCAN(metric="precomputed", copy=True)
        labels = est.fit(D).labels_
    else:
        raise WeightscopeError(f"unknown clustering method {method!r}; choose one of {', '.join(METHODS)}")
    return np.asarray(labels, dtype=int), converged


def _graph(A: np.ndarray, self_loops: bool = False):
    """Weighted undirected graph over class indices: an edge wherever the affinity is positive (as the
    authors' networkx.from_pandas_adjacency does), self-loops only on request (Louvain's modularity
    counts them in the authors' code)."""
    import networkx as nx

    G = nx.Graph()
    C = A.shape[0]
    G.add_nodes_from(range(C))
    iu, ju = np.nonzero(np.triu(A, 0 if self_loops else 1) > 0)
    G.add_weighted_edges_from((int(i), int(j), float(A[i, j])) for i, j in zip(iu, ju))
    return G


def class_graph(affinity, method: str = "affinity", seed: int = SEED) -> ClassGraph:
    """Cluster the classes of an affinity matrix (C, C) (values in [0, 1], diagonal 1; from
    :func:`normalise` or :func:`confusion_affinity`) and take a maximum spanning tree in each cluster."""
    import networkx as nx

    A = _square(affinity, "affinity matrix")
    if method not in METHODS:
        raise WeightscopeError(f"unknown clustering method {method!r}; choose one of {', '.join(METHODS)}")
    labels, converged = _labels(A, method, seed)
    groups: dict[int, list[int]] = {}
    for i, lab in enumerate(labels):
        groups.setdefault(int(lab), []).append(i)
    order = sorted(groups, key=lambda lab: groups[lab][0])
    clusters = tuple(tuple(groups[lab]) for lab in order)
    noise = order.index(-1) if -1 in groups else None
    G = _graph(A)
    edges = []
    for members in clusters:
        tree = nx.maximum_spanning_tree(G.subgraph(members), weight="weight", algorithm="kruskal")
        edges += [(min(u, v), max(u, v), float(w)) for u, v, w in tree.edges(data="weight")]
    return ClassGraph(method, clusters, tuple(sorted(edges)), noise, converged)


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def direct_compliance(sim: ClassGraph, conf: ClassGraph) -> tuple[float, float, int]:
    """(shared / similarity edges, shared / confusion edges, shared): tree edges in both graphs."""
    shared = len(sim.edge_set & conf.edge_set)
    return _ratio(shared, len(sim.edges)), _ratio(shared, len(conf.edges)), shared


def extended_compliance(sim: ClassGraph, conf: ClassGraph) -> tuple[float, float]:
    """(share of similarity edges inside one confusion cluster, share of confusion edges inside one
    similarity cluster)."""
    cs, cc = sim.cluster_of, conf.cluster_of
    a = sum(cc[i] == cc[j] for i, j, _ in sim.edges)
    b = sum(cs[i] == cs[j] for i, j, _ in conf.edges)
    return _ratio(int(a), len(sim.edges)), _ratio(int(b), len(conf.edges))


@dataclass
class MethodResult:
    """Similarity Depth and compliance for one clustering method.

    depths / subsumers: per similarity tree edge (aligned with graph.edges), WordNet depth and the offset
    of the lowest common hypernym; sd: their mean (NaN when no cluster has two classes). With a confusion
    matrix, confusion_graph and confusion_depths (per confusion tree edge; their mean is the depth of the
    errors, the authors' "CCSM depth").
    """

    method: str
    graph: ClassGraph
    depths: list[int]
    subsumers: list[int]
    confusion_graph: ClassGraph | None = None
    confusion_depths: list[int] | None = None

    @property
    def confusion_sd(self) -> float | None:
        if self.confusion_depths is None:
            return None
        return float(np.mean(self.confusion_depths)) if self.confusion_depths else math.nan

    @property
    def sd(self) -> float:
        return float(np.mean(self.depths)) if self.depths else math.nan

    @property
    def n_clusters(self) -> int:
        return self.graph.n_clusters

    @property
    def direct(self) -> tuple[float, float, int] | None:
        return None if self.confusion_graph is None else direct_compliance(self.graph, self.confusion_graph)

    @property
    def extended(self) -> tuple[float, float] | None:
        return None if self.confusion_graph is None else extended_compliance(self.graph, self.confusion_graph)


@dataclass
class DepthResult:
    """Everything one Similarity Depth run measured (``to_json`` gives every number)."""

    class_names: list[str]
    synsets: list[int]
    similarity: np.ndarray          # (C, C) normalised affinities
    confusion: np.ndarray | None    # (C, C) confusion affinities, or None
    methods: dict[str, MethodResult]
    source: str = ""
    accuracy: float | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"Similarity Depth of {self.source or 'a classifier'}: {len(self.class_names)} classes"
                 + (f", accuracy {100 * self.accuracy:.1f} %" if self.accuracy is not None else "")]
        for r in self.methods.values():
            line = f"  {r.method:9s} SD {r.sd:6.3f}  ({_count(r.n_clusters, 'cluster')}, {_count(len(r.depths), 'tree edge')})"
            if r.confusion_graph is not None:
                d, e = r.direct, r.extended
                line += (f"  direct {_ratio_text(d[0])} / {_ratio_text(d[1])} ({d[2]} shared of {len(r.graph.edges)} and "
                         f"{len(r.confusion_graph.edges)})  extended {_ratio_text(e[0])} / {_ratio_text(e[1])}")
            if not r.graph.converged:
                line += "  [did not converge]"
            lines.append(line)
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])

    def to_json(self, wordnet=None) -> dict:
        from ...concepts.wordnet import wnid

        def graph_json(g: ClassGraph) -> dict:
            return {"n_clusters": g.n_clusters, "clusters": [list(c) for c in g.clusters], "noise_cluster": g.noise,
                    "converged": g.converged, "edges": [[i, j, w] for i, j, w in g.edges]}

        out = {"source": self.source, "accuracy": self.accuracy, "classes": self.class_names,
               "wnids": [wnid(s) for s in self.synsets], "notes": self.notes, "methods": {}}
        if wordnet is not None:
            out["synset_names"] = [wordnet.name(s) for s in self.synsets]
        for name, r in self.methods.items():
            m = {"sd": r.sd, "n_clusters": r.n_clusters, "similarity_graph": graph_json(r.graph),
                 "edge_depths": r.depths, "edge_subsumers": [wnid(s) for s in r.subsumers]}
            if r.confusion_graph is not None:
                d, e = r.direct, r.extended
                m.update(confusion_graph=graph_json(r.confusion_graph), confusion_sd=r.confusion_sd,
                         confusion_edge_depths=r.confusion_depths,
                         direct={"similarity_edges_confused": d[0], "confusions_explained": d[1], "shared_edges": d[2]},
                         extended={"similarity_edges_confused": e[0], "confusions_explained": e[1]})
            out["methods"][name] = m
        return _finite(out)


def _finite(obj):
    """NaN -> None throughout, so the JSON is standard (NaN marks a ratio with no edges to count)."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def similarity_depth(similarity, classes, *, confusion=None, methods=METHODS, overrides=None, names=None,
                     seed: int = SEED, source: str = "", accuracy: float | None = None, wordnet=None) -> DepthResult:
    """Similarity Depth of a classifier, per clustering method, with compliance when a confusion matrix is given.

    similarity: (C, C) raw class similarity (cosine of templates: :func:`cosine_similarity`), min-max
    normalised here. classes: C class names, nltk-style senses or WordNet ids (``weightscope.concepts.wordnet``).
    confusion: optional (C, C) confusion matrix (row = true class). overrides: {class name: synset} for
    names without a (right) first noun sense. names: C display names (default: classes). Everything is
    validated before any clustering.
    """
    from ...concepts.wordnet import load_wordnet

    wordnet = wordnet or load_wordnet()
    S = _square(similarity, "similarity matrix")
    classes = [str(c) for c in classes]
    if len(classes) != S.shape[0]:
        raise WeightscopeError(f"{len(classes)} class names for a {S.shape[0]} x {S.shape[0]} similarity matrix")
    names = classes if names is None else [str(n) for n in names]
    if len(names) != len(classes):
        raise WeightscopeError(f"{len(names)} display names for {len(classes)} classes")
    methods = [methods] if isinstance(methods, str) else list(methods)
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise WeightscopeError(f"unknown clustering method {bad[0] if bad else None!r}; choose from {', '.join(METHODS)}")
    synsets = wordnet.resolve_all(classes, overrides)
    A = normalise(S)
    K = None if confusion is None else confusion_affinity(confusion, len(classes))
    results = {}
    for m in methods:
        g = class_graph(A, m, seed)
        pairs = [wordnet.lch_depth(synsets[i], synsets[j]) for i, j, _ in g.edges]
        r = MethodResult(m, g, [d for d, _ in pairs], [s for _, s in pairs])
        if K is not None:
            r.confusion_graph = class_graph(K, m, seed)
            r.confusion_depths = [wordnet.lch_depth(synsets[i], synsets[j])[0] for i, j, _ in r.confusion_graph.edges]
        results[m] = r
    notes = []
    if len(set(synsets)) < len(synsets):
        notes.append("several classes map to the same synset; their edges have that synset's own depth")
    return DepthResult(names, synsets, A, K, results, source, accuracy, notes)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _ratio_text(x: float) -> str:
    """A compliance ratio; undefined (no edges to share) reads as n/a, not nan."""
    return "n/a" if x != x else f"{x:.3f}"
