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

Two protocols (``protocol=``; the CLI's ``--protocol``):

- ``"default"``: deterministic and invariant to the order of the classes. The classes are put in a canonical
  order (sorted by class spec, then display name) before anything is clustered, so seeded algorithms see the
  same graph and exactly tied tree edges are broken by that order whatever the order of the input files;
  results come back in the input's order. No noise is added; Louvain is networkx's.
- ``"authors"``: the authors' pipeline, to reproduce their printed figures. Their reader adds a symmetric
  noise ``((U - 0.5) / 1e7 + its transpose) / 2``, U uniform from ``numpy.random.RandomState(seed)`` over the
  (C, C) matrix in the input's class order (entries of order 5e-8), to each matrix as read: to the raw
  similarity before the min-max normalisation, and to the confusion rates before they are symmetrised; the
  noise breaks the exact ties the trees would otherwise meet. Their graph has an edge wherever the affinity
  is non-zero (a negative noisy confusion rate included) and a self-loop on every class; Louvain is
  python-louvain's ``best_partition`` with a fresh ``RandomState(seed)`` (the optional extra ``depth``:
  ``pip install -e '.[depth]'``). Results depend on the input's class order, as theirs do. On the authors'
  ConvNeXt matrices it gives their figures to the printed digits (tests/test_depth.py).

Affinity Propagation, OPTICS and HDBSCAN are the same sklearn estimators in both protocols. Extended compliance
counts the classes of a cluster; the authors' code counts those that lie on one of the cluster's tree edges.
The two agree whenever each class of a cluster of two or more lies on a tree edge, which their noise ensures
(every pair but the least similar one is an edge) unless a cluster is exactly that least similar pair. The depth rule
is asymmetric when one class's synset is an ancestor of the other's (:meth:`WordNet.lowest_common_hypernym`):
the class first in the protocol's order (canonical, or the input's as in the authors' networkx edges) goes first.

All functions are deterministic for a fixed ``seed``; every bad input raises WeightscopeError (one line).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from ...core.defaults import CLUSTERING_METHODS
from ...core.errors import WeightscopeError
from ...concepts.wordnet import wnid as wnid_of

METHODS = CLUSTERING_METHODS
SEED = 42  # the authors' seed
PROTOCOLS = ("default", "authors")
NOISE_SCALE = 1e7  # the authors' (U - 0.5) / 10e6


def authors_noise(n: int, seed: int = SEED) -> np.ndarray:
    """The authors' symmetric tie-breaking noise (n, n): ((U - 0.5) / 1e7 + transpose) / 2 with U uniform from
    ``numpy.random.RandomState(seed).rand(n, n)``; entries within +-5e-8."""
    U = (np.random.RandomState(seed).rand(n, n) - 0.5) / NOISE_SCALE
    return (U + U.T) / 2


#: how each protocol differs from the other, in one sentence (JSON, report)
PROTOCOL_NOTES = {
    "default": ("default protocol: classes are clustered in a canonical order (sorted by name) so the results do "
                "not depend on the order of the input, exact ties are broken by that order, and Louvain is "
                "networkx's; the authors' code instead adds a tiny seeded noise (+-5e-8) to both matrices and uses "
                "python-louvain (--protocol authors reproduces their figures)"),
    "authors": ("authors' protocol: their seeded noise (+-5e-8, seed as given) added to both matrices before "
                "normalisation, edges wherever the affinity is non-zero, python-louvain; results depend on the "
                "order of the classes in the input, as theirs do"),
}


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise WeightscopeError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")


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


def require_python_louvain():
    """The python-louvain module (``community``), or WeightscopeError naming the extra that installs it."""
    try:
        import community as community_louvain
    except ImportError:
        raise WeightscopeError("Louvain under the authors' protocol needs python-louvain: pip install -e '.[depth]'") from None
    if not hasattr(community_louvain, "best_partition"):  # another package named 'community'
        raise WeightscopeError("the installed 'community' module is not python-louvain: pip install -e '.[depth]'")
    return community_louvain


def _louvain_authors(A: np.ndarray, seed: int) -> np.ndarray:
    community_louvain = require_python_louvain()
    partition = community_louvain.best_partition(_graph(A, self_loops=True, nonzero=True),
                                                 random_state=np.random.RandomState(seed))
    return np.array([partition[i] for i in range(A.shape[0])], dtype=int)


def _labels(A: np.ndarray, method: str, seed: int, protocol: str = "default") -> tuple[np.ndarray, bool]:
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
    elif method == "louvain" and protocol == "authors":
        labels = _louvain_authors(A, seed)
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


def _graph(A: np.ndarray, self_loops: bool = False, nonzero: bool = False, nodes=None):
    """Weighted undirected graph over class indices (all, or ``nodes``, ascending), edges added in row-major
    order of the upper triangle: an edge wherever the affinity is positive (``nonzero``: wherever it is not
    0, as the authors' networkx.from_pandas_adjacency does with their noisy matrices), self-loops only on
    request (Louvain's modularity counts them in the authors' code)."""
    import networkx as nx

    G = nx.Graph()
    idx = np.arange(A.shape[0]) if nodes is None else np.sort(np.asarray(nodes, dtype=int))
    G.add_nodes_from(int(i) for i in idx)
    sub = np.triu(A[np.ix_(idx, idx)], 0 if self_loops else 1)
    iu, ju = np.nonzero(sub != 0 if nonzero else sub > 0)
    iu, ju = idx[iu], idx[ju]
    G.add_weighted_edges_from((int(i), int(j), float(A[i, j])) for i, j in zip(iu, ju))
    return G


def class_graph(affinity, method: str = "affinity", seed: int = SEED, protocol: str = "default") -> ClassGraph:
    """Cluster the classes of an affinity matrix (C, C) (values in [0, 1], diagonal 1; from
    :func:`normalise` or :func:`confusion_affinity`) and take a maximum spanning tree in each cluster.

    Tree edges of exactly equal weight are broken by class index (networkx's Kruskal, a stable sort over edges
    added in row-major order); :func:`similarity_depth` makes that order canonical. ``protocol="authors"``:
    python-louvain and non-zero edges (module docstring). Raises WeightscopeError for an unknown method or
    protocol, or a matrix that is not square and finite with at least 3 classes."""
    import networkx as nx

    A = _square(affinity, "affinity matrix")
    _check_protocol(protocol)
    if method not in METHODS:
        raise WeightscopeError(f"unknown clustering method {method!r}; choose one of {', '.join(METHODS)}")
    labels, converged = _labels(A, method, seed, protocol)
    groups: dict[int, list[int]] = {}
    for i, lab in enumerate(labels):
        groups.setdefault(int(lab), []).append(i)
    order = sorted(groups, key=lambda lab: groups[lab][0])
    clusters = tuple(tuple(groups[lab]) for lab in order)
    noise = order.index(-1) if -1 in groups else None
    edges = []
    for members in clusters:
        # a graph of its own per cluster, not a subgraph view: a view's node order can follow a set's
        G = _graph(A, nonzero=protocol == "authors", nodes=members)
        tree = nx.maximum_spanning_tree(G, weight="weight", algorithm="kruskal")
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
    protocol: str = "default"
    senses: list[dict] = field(default_factory=list)  # per class: class, wnid, synset, chosen_by

    def summary(self) -> str:
        lines = [f"Similarity Depth of {self.source or 'a classifier'}: {len(self.class_names)} classes"
                 + (f", accuracy {100 * self.accuracy:.1f} %" if self.accuracy is not None else "")
                 + f" ({self.protocol} protocol)"]
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

        out = {"source": self.source, "accuracy": self.accuracy, "protocol": self.protocol,
               "protocol_note": PROTOCOL_NOTES[self.protocol], "classes": self.class_names,
               "wnids": [wnid(s) for s in self.synsets], "senses": self.senses, "notes": self.notes, "methods": {}}
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


def canonical_order(classes, names=None) -> np.ndarray:
    """Indices (C,) that sort the classes by (spec, display name): the order the default protocol computes
    in, whatever the order of the input. Classes with equal spec and name cannot be told apart; they keep
    their relative input order."""
    names = classes if names is None else names
    keys = [(str(c).casefold(), str(c), str(n).casefold(), str(n)) for c, n in zip(classes, names)]
    return np.array(sorted(range(len(keys)), key=keys.__getitem__), dtype=int)


def _relabel(g: ClassGraph, order: np.ndarray) -> ClassGraph:
    """A graph computed on classes order[0], order[1], ... expressed in the input's indices."""
    clusters = sorted((tuple(sorted(int(order[i]) for i in c)) for c in g.clusters), key=lambda c: c[0])
    noise = None if g.noise is None else clusters.index(tuple(sorted(int(order[i]) for i in g.clusters[g.noise])))
    edges = tuple(sorted((min(int(order[i]), int(order[j])), max(int(order[i]), int(order[j])), w) for i, j, w in g.edges))
    return ClassGraph(g.method, tuple(clusters), edges, noise, g.converged)


def similarity_depth(similarity, classes, *, confusion=None, methods=METHODS, overrides=None, names=None,
                     seed: int = SEED, source: str = "", accuracy: float | None = None, wordnet=None,
                     protocol: str = "default") -> DepthResult:
    """Similarity Depth of a classifier, per clustering method, with compliance when a confusion matrix is given.

    similarity: (C, C) raw class similarity (cosine of templates: :func:`cosine_similarity`), min-max
    normalised here. classes: C class names, nltk-style senses or WordNet ids (``weightscope.concepts.wordnet``).
    confusion: optional (C, C) confusion matrix (row = true class). overrides: {class name: synset} for
    names without a (right) first noun sense. names: C display names (default: classes). protocol:
    "default" (order-invariant) or "authors" (their noise and python-louvain; module docstring). Everything
    is validated before any clustering; bad input raises WeightscopeError.
    """
    from ...concepts.wordnet import load_wordnet

    _check_protocol(protocol)
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
    resolved = [wordnet.resolve_how(c, overrides) for c in classes]
    synsets = [off for off, _ in resolved]
    C = len(classes)
    if protocol == "authors":  # their order, their noise on each matrix as read (module docstring)
        order = np.arange(C)
        A = normalise(np.triu(S) + np.triu(S, 1).T + authors_noise(C, seed))
    else:  # every sum and tie from here on sees the canonical order
        order = canonical_order(classes, names)
        A = normalise(S[np.ix_(order, order)])
    K = None
    if confusion is not None:
        K = confusion_affinity(confusion, C)  # validated in the input's order, so messages name its indices
        if protocol != "authors":
            K = confusion_affinity(np.asarray(confusion, dtype=np.float64)[np.ix_(order, order)], C)
        else:
            K = K + authors_noise(C, seed)
            np.fill_diagonal(K, 1.0)
    rank = np.empty(C, dtype=int)
    rank[order] = np.arange(C)

    def graph(M: np.ndarray, m: str) -> ClassGraph:
        return _relabel(class_graph(M, m, seed, protocol), order)

    def depths(g: ClassGraph) -> list[tuple[int, int]]:  # the class first in the protocol's order goes first
        return [wordnet.lch_depth(*(synsets[i], synsets[j])[:: 1 if rank[i] < rank[j] else -1]) for i, j, _ in g.edges]

    results = {}
    for m in methods:
        g = graph(A, m)
        pairs = depths(g)
        r = MethodResult(m, g, [d for d, _ in pairs], [s for _, s in pairs])
        if K is not None:
            r.confusion_graph = graph(K, m)
            r.confusion_depths = [d for d, _ in depths(r.confusion_graph)]
        results[m] = r
    notes = [n for (off, how), c in zip(resolved, classes) if (n := wordnet.sense_note(c, off, how))]
    if len(set(synsets)) < len(synsets):
        notes.append("several classes map to the same synset; their edges have that synset's own depth")
    senses = [{"class": n, "wnid": wnid_of(off), "synset": wordnet.name(off), "chosen_by": how}
              for n, (off, how) in zip(names, resolved)]
    back = np.ix_(rank, rank)  # matrices in the input's class order
    return DepthResult(names, synsets, A[back], None if K is None else K[back], results, source, accuracy, notes,
                       protocol, senses)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _ratio_text(x: float) -> str:
    """A compliance ratio; undefined (no edges to share) reads as n/a, not nan."""
    return "n/a" if x != x else f"{x:.3f}"
