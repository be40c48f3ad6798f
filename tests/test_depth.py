"""Similarity Depth: a hand-built case with planted similarities and errors, the authors' real ConvNeXt case,
maximum spanning trees against brute force, the report files, and the CLI's one-line errors."""
import html.parser
import itertools
import json
import math
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest

from weightscope.cli import main
from weightscope.analyses.depth import (class_graph, confusion_affinity, cosine_similarity, normalise, read_matrix,
                               similarity_depth)
from weightscope.core.errors import WeightscopeError
from weightscope.models.linear_heads import head_from_arrays

SHARED = Path(os.environ.get("WEIGHTSCOPE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
CONVNEXT = SHARED / "data" / "deephierarchy-convnext"

NAMES = ["dog", "cat", "horse", "deer", "airplane", "ship", "truck", "automobile"]


def _planted_similarity() -> np.ndarray:
    """Two groups (animals, vehicles): 0.55 inside a group, 0.1 across, and a planted chain in each group:
    dog-cat 0.9, cat-horse 0.7, horse-deer 0.9; airplane-ship 0.9, ship-truck 0.7, truck-automobile 0.9."""
    S = np.full((8, 8), 0.1)
    S[:4, :4] = S[4:, 4:] = 0.55
    for a, b, v in [("dog", "cat", .9), ("cat", "horse", .7), ("horse", "deer", .9),
                    ("airplane", "ship", .9), ("ship", "truck", .7), ("truck", "automobile", .9)]:
        i, j = NAMES.index(a), NAMES.index(b)
        S[i, j] = S[j, i] = v
    np.fill_diagonal(S, 1.0)
    return S


def _templates(S: np.ndarray, width: int = 16, seed: int = 0) -> np.ndarray:
    """Templates (C, width) whose cosine matrix is S: a Gram factor, rotated and with rows rescaled."""
    vals, vecs = np.linalg.eigh(S)
    assert vals.min() > 0
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((width, width)))
    W = (vecs * np.sqrt(vals)) @ Q[: len(S)]
    return W * rng.uniform(0.5, 3.0, size=(len(S), 1))


def _planted_confusion() -> np.ndarray:
    """Counts (row = true class): animals confused along dog-cat, cat-deer, deer-horse (and weakly
    dog-horse, dog-deer, cat-horse); vehicles only within the pairs airplane-ship and truck-automobile."""
    K = np.zeros((8, 8))
    np.fill_diagonal(K, 60)
    for a, b, n in [("dog", "cat", 20), ("cat", "dog", 16), ("cat", "deer", 14), ("deer", "cat", 10),
                    ("deer", "horse", 18), ("horse", "deer", 14), ("dog", "horse", 6), ("horse", "dog", 6),
                    ("dog", "deer", 5), ("cat", "horse", 3), ("horse", "cat", 3), ("airplane", "ship", 9),
                    ("ship", "airplane", 5), ("truck", "automobile", 11), ("automobile", "truck", 7)]:
        K[NAMES.index(a), NAMES.index(b)] = n
    return K


def test_hand_built_case():
    S = _planted_similarity()
    head = head_from_arrays(_templates(S), class_names=NAMES)
    assert np.allclose(cosine_similarity(head), S, atol=1e-12)
    r = similarity_depth(cosine_similarity(head), NAMES, confusion=_planted_confusion(), methods=["affinity"])
    aff = r.methods["affinity"]
    # clusters = the two planted groups; the maximum spanning tree of each = its planted chain
    assert aff.graph.clusters == ((0, 1, 2, 3), (4, 5, 6, 7))
    assert [(i, j) for i, j, _ in aff.graph.edges] == [(0, 1), (1, 2), (2, 3), (4, 5), (5, 6), (6, 7)]
    # WordNet depths by hand (lowest common hypernym, longest root path + 1):
    # dog-cat carnivore 12, cat-horse placental 11, horse-deer ungulate 12,
    # airplane-ship craft 9, ship-truck vehicle 8, truck-automobile motor_vehicle 11
    assert aff.depths == [12, 11, 12, 9, 8, 11]
    assert aff.sd == pytest.approx(63 / 6, abs=1e-12)
    # confusion graph: {dog, cat, horse, deer} with tree dog-cat, cat-deer, horse-deer; {airplane, ship}; {truck, automobile}
    cg = aff.confusion_graph
    assert cg.clusters == ((0, 1, 2, 3), (4, 5), (6, 7))
    assert sorted(cg.edge_set) == [(0, 1), (1, 3), (2, 3), (4, 5), (6, 7)]
    # direct: shared dog-cat, horse-deer, airplane-ship, truck-automobile = 4 of 6 and of 5 edges
    assert aff.direct == (pytest.approx(4 / 6), pytest.approx(4 / 5), 4)
    # extended: every similarity edge but ship-truck lies in one confusion cluster (5/6); every confusion
    # edge lies in one similarity cluster (5/5)
    assert aff.extended == (pytest.approx(5 / 6), pytest.approx(1.0))
    # confusion tree depths: dog-cat 12, cat-deer 11 (placental: cat is a carnivore, deer an ungulate),
    # horse-deer 12, airplane-ship 9, truck-automobile 11
    assert aff.confusion_depths == [12, 11, 12, 9, 11]


def test_normalisation_and_confusion_affinity_by_hand():
    S = np.array([[1.0, 0.2, -0.2], [0.2, 1.0, 0.6], [-0.2, 0.6, 1.0]])
    # (S - (-0.2)) / 1.2: 0.2 -> 1/3, 0.6 -> 2/3, -0.2 -> 0
    assert np.allclose(normalise(S), [[1, 1 / 3, 0], [1 / 3, 1, 2 / 3], [0, 2 / 3, 1]])
    M = np.array([[8, 2, 0], [1, 3, 0], [0, 5, 5]])
    # rows / sums: [.8 .2 0], [.25 .75 0], [0 .5 .5]; symmetrised off-diagonals: (.2+.25)/2, 0, (0+.5)/2
    assert np.allclose(confusion_affinity(M), [[1, .225, 0], [.225, 1, .25], [0, .25, 1]])
    assert np.allclose(M, [[8, 2, 0], [1, 3, 0], [0, 5, 5]])  # input untouched


def _brute_force_best_tree(A: np.ndarray, nodes: tuple[int, ...]) -> float:
    """Largest total weight over all spanning trees of the complete graph on nodes (Pruefer sequences)."""
    n = len(nodes)
    if n == 1:
        return 0.0
    best = -math.inf
    for seq in itertools.product(range(n), repeat=n - 2):
        degree = [1] * n
        for s in seq:
            degree[s] += 1
        total, seq = 0.0, list(seq)
        for s in seq:
            leaf = min(i for i in range(n) if degree[i] == 1)
            total += A[nodes[leaf], nodes[s]]
            degree[leaf] -= 1
            degree[s] -= 1
        u, v = [i for i in range(n) if degree[i] == 1]
        best = max(best, total + A[nodes[u], nodes[v]])
    return best


@pytest.mark.parametrize("method", ["affinity", "louvain", "optics", "hdbscan"])
def test_trees_are_maximum_spanning_trees_and_runs_repeat(method):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((12, 5)) + np.repeat(rng.standard_normal((3, 5)) * 3, 4, axis=0)
    A = normalise(cosine_similarity(X))
    g = class_graph(A, method)
    assert sorted(i for c in g.clusters for i in c) == list(range(12))
    for members in g.clusters:
        tree = [(i, j, w) for i, j, w in g.edges if i in members]
        assert all(j in members for _, j, _ in tree) and len(tree) == len(members) - 1
        if len(members) <= 7:
            assert sum(w for *_, w in tree) == pytest.approx(_brute_force_best_tree(A, members))
    assert class_graph(A, method) == g


def _convnext():
    if not CONVNEXT.is_dir():
        pytest.skip("../shared/data/deephierarchy-convnext is not there")
    return (np.load(CONVNEXT / "class_similarity.npy"), np.load(CONVNEXT / "confusion.npy"),
            (CONVNEXT / "wnids.txt").read_text().split())


def _their_pipeline(S, K, method):
    """The authors' graph, rebuilt from their description with networkx, python-louvain and sklearn only (no
    weightscope code): seeded symmetric noise (U - 0.5) / 1e7 on each matrix as read, min-max normalisation of
    the similarity, (K + K^T) / 2 of the confusion rates, edges wherever non-zero, Kruskal per cluster.
    Returns the two sets of tree edges (i, j), i < j."""
    import community
    import networkx as nx
    from sklearn.cluster import AffinityPropagation

    def noise():
        U = (np.random.RandomState(42).rand(100, 100) - 0.5) / 1e7
        return (U + U.T) / 2

    Sn = S.astype(np.float64) + noise()
    A = (Sn - Sn.min()) / (Sn.max() - Sn.min())
    B = (K + K.T) / 2 + noise()
    trees = []
    for M in (A, B):
        np.fill_diagonal(M, 1.0)
        G = nx.from_numpy_array(M)
        if method == "louvain":
            part = community.best_partition(G, random_state=np.random.RandomState(42))
            labels = [part[i] for i in range(100)]
        else:
            labels = AffinityPropagation(affinity="precomputed", random_state=42).fit(M).labels_
        edges = set()
        for lab in set(labels):
            members = [i for i in range(100) if labels[i] == lab]
            edges |= {tuple(sorted(e)) for e in nx.maximum_spanning_tree(G.subgraph(members)).edges()}
        trees.append(edges)
    return trees


def test_authors_protocol_reproduces_their_convnext_figures():
    pytest.importorskip("community", reason="python-louvain (the dev extra) is not installed")
    S, K, wnids = _convnext()
    r = similarity_depth(S, wnids, confusion=K, protocol="authors")
    aff, lou = r.methods["affinity"], r.methods["louvain"]
    # the authors' printed figures (shared README and issue 27): SD, clusters, shared / similarity / confusion edges
    assert (round(aff.sd, 3), aff.n_clusters) == (7.294, 15)
    assert aff.direct == (pytest.approx(29 / 85), pytest.approx(29 / 76), 29)
    assert (round(aff.direct[0], 3), round(aff.direct[1], 3)) == (0.341, 0.382)
    assert (round(lou.sd, 3), lou.n_clusters) == (7.511, 8)
    assert lou.direct == (pytest.approx(19 / 92), pytest.approx(19 / 35), 19)
    assert (round(lou.direct[0], 3), round(lou.direct[1], 3)) == (0.207, 0.543)
    for m in ("optics", "hdbscan"):  # all 100 classes in one group: SD 7.333
        assert (round(r.methods[m].sd, 3), r.methods[m].n_clusters) == (7.333, 1)
    # the very trees of their pipeline, rebuilt independently; extended compliance counted on those trees
    for m in ("affinity", "louvain"):
        sim_edges, conf_edges = _their_pipeline(S, K, m)
        res = r.methods[m]
        assert res.graph.edge_set == sim_edges and res.confusion_graph.edge_set == conf_edges
        sim_of, conf_of = res.graph.cluster_of, res.confusion_graph.cluster_of
        ext = (np.mean([conf_of[i] == conf_of[j] for i, j in sim_edges]), np.mean([sim_of[i] == sim_of[j] for i, j in conf_edges]))
        assert res.extended == pytest.approx(ext, abs=0)
    # and their extended figures, which the default protocol does not give for Affinity Propagation
    assert (round(aff.extended[0], 3), round(aff.extended[1], 3)) == (0.435, 0.539)
    assert (round(lou.extended[0], 3), round(lou.extended[1], 3)) == (0.239, 0.829)


def _by_name(r, names):
    """Everything a result says, in class names: order-free, so two runs on permuted inputs compare equal."""
    out = {}
    for m, res in r.methods.items():
        graphs = [res.graph] + ([res.confusion_graph] if res.confusion_graph else [])
        out[m] = (res.sd, res.n_clusters, res.direct, res.extended, res.confusion_sd,
                  [({frozenset(names[i] for i in c) for c in g.clusters},
                    {frozenset((names[i], names[j])): w for i, j, w in g.edges}) for g in graphs],
                  sorted(zip((tuple(sorted((names[i], names[j]))) for i, j, _ in res.graph.edges), res.depths)))
    return out


def test_results_do_not_depend_on_the_order_of_the_classes():
    """Issue 26, kind 2: a consistent permutation of the classes gave Louvain 9 clusters and SD 7.626 instead of
    8 and 7.554 on the ConvNeXt matrices; ties in the confusion trees moved with the order too."""
    S, K, wnids = _convnext()
    base = similarity_depth(S, wnids, confusion=K)
    assert (round(base.methods["louvain"].sd, 3), base.methods["louvain"].n_clusters) == (7.554, 8)
    want = _by_name(base, wnids)
    for seed in (0, 1):
        p = np.random.default_rng(seed).permutation(100)
        r = similarity_depth(S[np.ix_(p, p)], [wnids[i] for i in p], confusion=K[np.ix_(p, p)])
        assert _by_name(r, [wnids[i] for i in p]) == want
        assert np.array_equal(r.similarity, base.similarity[np.ix_(p, p)])


def test_ties_are_broken_by_a_rule_not_by_the_input_order():
    """Another member of kind 2: every similarity but one equal (many spanning trees tie) and a confusion matrix
    of equal counts; trees, clusters and depths must be the same, in names, for every order of the classes."""
    names = ["dog", "cat", "horse", "ship", "truck"]
    S = np.full((5, 5), 0.5)
    S[0, 4] = S[4, 0] = 0.2   # dog-truck the least similar; every other pair ties at 0.375 once normalised
    np.fill_diagonal(S, 1.0)
    K = np.full((5, 5), 2.0) + 8 * np.eye(5)
    want = None
    for n, perm in enumerate(itertools.permutations(range(5))):
        if n % 5:
            continue  # 24 of the 120 orders
        p = list(perm)
        r = similarity_depth(S[np.ix_(p, p)], [names[i] for i in p], confusion=K)
        got = _by_name(r, [names[i] for i in p])
        want = want or got
        assert got == want, perm
    # the rule: exact ties go to the pair first in sorted-name order (cat, dog, horse, ship, truck), so a single
    # cluster's tree (OPTICS and HDBSCAN keep all five together here) is the star around 'cat'
    r = similarity_depth(S, names, methods=["optics", "hdbscan"])
    for res in r.methods.values():
        assert res.n_clusters == 1
        assert {frozenset((names[i], names[j])) for i, j, _ in res.graph.edges} == \
            {frozenset(("cat", x)) for x in ("dog", "horse", "ship", "truck")}


def test_report_files(tmp_path):
    from weightscope.reports.depth import write_report

    r = similarity_depth(_planted_similarity(), NAMES, confusion=_planted_confusion())
    written = write_report(r, tmp_path / "out")
    assert set(written) == {"report.html", "depth.json", "summary.csv", "edges.csv", "clusters.csv"}
    html = written["report.html"].read_text()
    # drawn in the page from the embedded result (issue 30), nothing fetched from the network
    assert "id='ws-data'" in html and re.search(r"(?:src|href)\s*=\s*['\"]?(?:https?:)?//", html) is None
    data = json.loads(written["depth.json"].read_text())
    assert data["methods"]["affinity"]["sd"] == pytest.approx(10.5)
    assert data["methods"]["affinity"]["edge_subsumers"][0] == "n02075296"    # carnivore.n.01
    edges = written["edges.csv"].read_text().splitlines()
    assert edges[1].startswith("affinity,similarity,0,dog,cat,") and ",12,carnivore.n.01," in edges[1]


def test_read_matrix_csv_with_labels(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text(",a,b,c\na,1,0.5,0\nb,0.5,1,0.25\nc,0,0.25,1\n")
    assert np.allclose(read_matrix(p, "similarity matrix"), [[1, .5, 0], [.5, 1, .25], [0, .25, 1]])
    (tmp_path / "bad.csv").write_text("1,2\n3,x\n")
    with pytest.raises(WeightscopeError, match="not a numeric matrix"):
        read_matrix(tmp_path / "bad.csv", "confusion matrix")


def test_classifier_head_from_a_state_dict(tmp_path):
    import torch

    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    torch.save({"state_dict": net.state_dict()}, tmp_path / "clf.pt")
    (tmp_path / "classes.txt").write_text("dog\ncat\nship\ntruck\n")
    from weightscope.analyses.depth import classifier_head

    head = classifier_head(tmp_path / "clf.pt", ["dog", "cat", "ship", "truck"])
    assert np.allclose(head.weight, net[2].weight.detach().double().numpy())
    assert main(["depth", "--classifier", str(tmp_path / "clf.pt"), "--classes", str(tmp_path / "classes.txt"),
                 "--clustering", "affinity", "--out", str(tmp_path / "o"), "--quiet"]) == 0
    assert (tmp_path / "o" / "report.html").is_file()


def _case(tmp_path, names, S=None, K=None):
    (tmp_path / "classes.txt").write_text("\n".join(names) + "\n")
    np.save(tmp_path / "S.npy", np.eye(len(names)) * 0.5 + 0.5 if S is None else S)
    args = ["depth", "--similarity", str(tmp_path / "S.npy"), "--classes", str(tmp_path / "classes.txt"),
            "--out", str(tmp_path / "out"), "--quiet"]
    if K is not None:
        np.save(tmp_path / "K.npy", K)
        args += ["--confusion", str(tmp_path / "K.npy")]
    return args


@pytest.mark.parametrize("kind,needle", [
    ("no synset", "'blorfwidget' has no WordNet noun synset and no override"),
    ("confusion shape", "confusion matrix is 4 x 4 but there are 3 classes"),
    ("negative", "negative entry at (0, 2)"),
    ("two classes", "needs at least 3 classes, got 2"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, kind, needle):
    names = ["dog", "cat", "ship"]
    S = np.array([[1, .8, .1], [.8, 1, .2], [.1, .2, 1]])
    if kind == "no synset":
        args = _case(tmp_path, ["dog", "blorfwidget", "ship"], S)
    elif kind == "confusion shape":
        args = _case(tmp_path, names, S, np.eye(4))
    elif kind == "negative":
        args = _case(tmp_path, names, S, np.array([[5, 1, -1], [0, 4, 0], [1, 0, 3]]))
    else:
        args = _case(tmp_path, ["dog", "cat"], np.array([[1, .5], [.5, 1]]))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_cli_default_bundled_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WEIGHTSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    t0 = time.perf_counter()
    assert main(["depth", "--out", str(tmp_path / "d")]) == 0
    assert time.perf_counter() - t0 < 60
    out = capsys.readouterr().out
    assert "8 classes" in out and "affinity" in out
    data = json.loads((tmp_path / "d" / "depth.json").read_text())
    assert data["classes"][:2] == ["circle", "oval"] and data["accuracy"] > 0.5
    assert data["synset_names"][2] == "ring.n.02"
    assert data["methods"]["affinity"]["direct"] is not None


def test_class_name_resolving_to_an_unrelated_sense_is_recorded_and_noted(tmp_path, capsys):
    """Issue 26, kind 3: in 'crane, tank, bus, limousine, minivan', crane's first noun sense is the writer Stephen
    Crane (crane.n.01). The synset of every class is recorded (JSON, CSV, report) and crane gets a note naming
    the sense taken and the override that picks another; 'kilogram' (a unit, not a physical object) is another
    member of the kind."""
    names = ["crane", "tank", "bus", "limousine", "minivan", "kilogram"]
    S = np.array([[1, .2, .3, .1, .2, .0], [.2, 1, .6, .4, .5, .1], [.3, .6, 1, .5, .7, .1],
                  [.1, .4, .5, 1, .8, .1], [.2, .5, .7, .8, 1, .1], [.0, .1, .1, .1, .1, 1]])
    args = _case(tmp_path, names, S) + ["--clustering", "affinity"]
    assert main([a for a in args if a != "--quiet"]) == 0  # the notes are printed
    out = capsys.readouterr().out
    data = json.loads((tmp_path / "out" / "depth.json").read_text())
    senses = {c["class"]: c for c in data["senses"]}
    assert senses["crane"] == {"class": "crane", "wnid": "n10914447", "synset": "crane.n.01", "chosen_by": "first sense"}
    assert senses["limousine"]["synset"] == "limousine.n.01" and senses["tank"]["chosen_by"] == "first sense"
    crane_note = [n for n in data["notes"] if n.startswith("class 'crane'")]
    assert len(crane_note) == 1 and "crane.n.01 (a writer)" in crane_note[0] and "crane.n.04 (a lifting device)" in crane_note[0]
    assert "crane<TAB>crane.n.03" in crane_note[0] and "--synsets FILE" in crane_note[0]   # not a person: Grus
    assert any(n.startswith("class 'kilogram'") and "not a physical object" in n for n in data["notes"])
    assert not any(n.startswith(("class 'limousine'", "class 'minivan'")) for n in data["notes"])  # one object sense each
    assert "crane.n.01 (a writer)" in out
    rows = (tmp_path / "out" / "clusters.csv").read_text().splitlines()
    assert rows[0].endswith(",wnid,synset") and any(r.startswith("affinity,similarity,crane,") and r.endswith(",n10914447,crane.n.01") for r in rows)
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<td>crane</td><td>crane.n.01</td><td>n10914447</td><td>first sense</td>" in html
    # choosing the machine through the overrides file: recorded as the user's override, no note
    (tmp_path / "syn.tsv").write_text("crane\tcrane.n.04\n")
    assert main(args + ["--synsets", str(tmp_path / "syn.tsv")]) == 0
    data = json.loads((tmp_path / "out" / "depth.json").read_text())
    assert data["senses"][0] == {"class": "crane", "wnid": "n03126707", "synset": "crane.n.04", "chosen_by": "override"}
    assert not any(n.startswith("class 'crane'") for n in data["notes"])


class _Tables(html.parser.HTMLParser):
    """Every <table> of a page as (header cells, body rows), text only."""

    def __init__(self):
        super().__init__()
        self.tables, self._cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append(([], []))
        elif tag == "tr" and self.tables:
            self._row = []
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(self._cell.strip())
            self._cell = None
        elif tag == "tr" and self.tables:
            head, body = self.tables[-1]
            if not head:
                head.extend(self._row)
            else:
                body.append(self._row)

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def test_report_shows_each_compliance_under_its_own_heading(tmp_path):
    """Issue 27, fault 7: the two direct-compliance columns swapped in the HTML went unnoticed. The planted case
    has different values for the two (4/6 and 4/5; extended 5/6 and 5/5), so every displayed compliance is
    parsed back from the page by its column heading and compared with depth.json and with the hand values."""
    from weightscope.reports.depth import write_report

    r = similarity_depth(_planted_similarity(), NAMES, confusion=_planted_confusion(), methods=["affinity"])
    written = write_report(r, tmp_path / "out")
    data = json.loads(written["depth.json"].read_text())["methods"]["affinity"]
    parser = _Tables()
    parser.feed(written["report.html"].read_text())
    head, body = next(t for t in parser.tables if "direct: similarities confused" in t[0])
    shown = dict(zip(head, body[0]))
    assert shown["method"] == "affinity"
    expect = {"direct: similarities confused": (data["direct"]["similarity_edges_confused"], 4 / 6),
              "direct: confusions explained": (data["direct"]["confusions_explained"], 4 / 5),
              "extended: similarities confused": (data["extended"]["similarity_edges_confused"], 5 / 6),
              "extended: confusions explained": (data["extended"]["confusions_explained"], 1.0),
              "SD": (data["sd"], 10.5)}
    for column, (from_json, by_hand) in expect.items():
        assert float(shown[column]) == pytest.approx(from_json, abs=5e-4) == pytest.approx(by_hand, abs=5e-4), column
    assert int(shown["shared edges"]) == data["direct"]["shared_edges"] == 4
    summary = written["summary.csv"].read_text().splitlines()
    assert dict(zip(summary[0].split(","), summary[1].split(","))) == shown


def test_cli_protocol_authors(tmp_path, capsys, monkeypatch):
    pytest.importorskip("community", reason="python-louvain (the dev extra) is not installed")
    S = _planted_similarity()
    args = _case(tmp_path, NAMES, S, _planted_confusion()) + ["--clustering", "louvain"]
    assert main(args + ["--protocol", "authors"]) == 0
    data = json.loads((tmp_path / "out" / "depth.json").read_text())
    assert data["protocol"] == "authors" and "python-louvain" in data["protocol_note"]
    expect = similarity_depth(S, NAMES, confusion=_planted_confusion(), protocol="authors", methods="louvain")
    assert data["methods"]["louvain"]["sd"] == pytest.approx(expect.methods["louvain"].sd)
    assert "authors' protocol" in html.unescape((tmp_path / "out" / "report.html").read_text())
    # without python-louvain: one line naming the extra, exit 2, before any work
    monkeypatch.setitem(__import__("sys").modules, "community", None)
    assert main(args + ["--protocol", "authors", "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "pip install -e '.[depth]'" in err and err.count("\n") == 1 and not (tmp_path / "o2").exists()
    # the default protocol never needs it
    assert main(args + ["--out", str(tmp_path / "o3")]) == 0


def test_authors_noise_is_theirs():
    """(U - 0.5) / 1e7, U = RandomState(42).rand(n, n), symmetrised: entries within 5e-8, first value by hand."""
    from weightscope.analyses.depth.core import authors_noise

    N = authors_noise(4)
    U = np.random.RandomState(42).rand(4, 4)
    assert N[0, 1] == pytest.approx(((U[0, 1] - 0.5) + (U[1, 0] - 0.5)) / 2e7, rel=1e-12)
    assert np.array_equal(N, N.T) and np.abs(N).max() <= 5e-8
    with pytest.raises(WeightscopeError, match="unknown protocol 'paper'"):
        similarity_depth(np.eye(3) + 0.1, ["dog", "cat", "ship"], protocol="paper")


def test_compliance_and_summaries_on_hand_made_graphs():
    """Graphs written by hand: similarity clusters {0,1,2} {3,4} with tree 0-1, 1-2, 3-4; confusion clusters
    {0,1} {2,3,4} with tree 0-1, 2-3, 2-4. Shared: 0-1 -> direct 1/3 both ways. Extended: similarity edges inside
    one confusion cluster 0-1, 3-4 -> 2/3; confusion edges inside one similarity cluster 0-1 only -> 1/3."""
    from weightscope.analyses.depth import ClassGraph, DepthResult, MethodResult, direct_compliance, extended_compliance

    sim = ClassGraph("affinity", ((0, 1, 2), (3, 4)), ((0, 1, .9), (1, 2, .8), (3, 4, .7)))
    conf = ClassGraph("affinity", ((0, 1), (2, 3, 4)), ((0, 1, .5), (2, 3, .4), (2, 4, .3)))
    assert sim.cluster_of.tolist() == [0, 0, 0, 1, 1] and sim.n_clusters == 2
    assert direct_compliance(sim, conf) == (pytest.approx(1 / 3), pytest.approx(1 / 3), 1)
    assert extended_compliance(sim, conf) == (pytest.approx(2 / 3), pytest.approx(1 / 3))
    assert extended_compliance(conf, sim) == (pytest.approx(1 / 3), pytest.approx(2 / 3))
    # no tree edges at all: every ratio is undefined (n/a in the summary, null in the JSON), never 0 or an error
    lonely = ClassGraph("louvain", ((0,), (1,), (2,), (3,), (4,)), ())
    r = MethodResult("louvain", lonely, [], [], lonely, [])
    assert math.isnan(r.sd) and math.isnan(r.confusion_sd) and math.isnan(r.direct[0]) and r.direct[2] == 0
    res = DepthResult(list("abcde"), [2084071] * 5, np.eye(5), np.eye(5), {"louvain": r}, "hand", 0.5, ["a note"])
    text = res.summary()
    assert text.splitlines()[0] == "Similarity Depth of hand: 5 classes, accuracy 50.0 % (default protocol)"
    assert "SD    nan" in text and "direct n/a / n/a (0 shared of 0 and 0)  extended n/a / n/a" in text
    assert text.endswith("  note: a note")
    js = res.to_json()
    assert js["methods"]["louvain"]["sd"] is None and js["methods"]["louvain"]["direct"]["shared_edges"] == 0
    assert js["methods"]["louvain"]["extended"] == {"similarity_edges_confused": None, "confusions_explained": None}
    assert js["wnids"] == ["n02084071"] * 5 and js["protocol"] == "default"


@pytest.mark.parametrize("call,needle", [
    (lambda: normalise(np.full((3, 3), 0.5)), "constant"),
    (lambda: normalise(np.array([[1, .2, .3], [.9, 1, .1], [.3, .1, 1]])), "not symmetric"),
    (lambda: normalise(np.array([[1, np.nan, 0], [np.nan, 1, 0], [0, 0, 1]])), "NaN or infinite"),
    (lambda: confusion_affinity(np.array([[3, 1, 0], [0, 0, 0], [1, 1, 5]])), "row 1 of the confusion matrix sums to 0"),
    (lambda: cosine_similarity(np.array([[1.0, 0], [0, 0], [1, 1]])), "class template 1 is all zeros"),
    (lambda: class_graph(np.eye(3), "kmeans"), "unknown clustering method 'kmeans'"),
    (lambda: similarity_depth(np.eye(3), ["dog", "cat"]), "2 class names for a 3 x 3"),
])
def test_bad_matrices_raise_one_line(call, needle):
    with pytest.raises(WeightscopeError, match=needle):
        call()


def test_a_bad_confusion_entry_is_named_in_the_input_order():
    """The default protocol works in a canonical (sorted) class order; messages still name the user's rows."""
    S = np.array([[1, .8, .1], [.8, 1, .2], [.1, .2, 1]])
    K = np.array([[5, 1, 0], [0, 4, -1], [1, 0, 3]])
    with pytest.raises(WeightscopeError, match=r"negative entry at \(1, 2\)"):
        similarity_depth(S, ["ship", "dog", "cat"], confusion=K)


def test_canonical_order_sorts_by_spec_then_name():
    from weightscope.analyses.depth.core import canonical_order

    assert canonical_order(["ship", "dog", "cat"]).tolist() == [2, 1, 0]
    # equal specs (one synset under two names) fall back on the display name; case only after casefolding
    assert canonical_order(["n02084071", "n02084071", "Cat"], ["puppy", "hound", "cat"]).tolist() == [2, 1, 0]
    assert canonical_order(["b", "A", "a"]).tolist() == [1, 2, 0]


def test_cosine_diagonal_is_exactly_one_and_non_convergence_is_reported(tmp_path):
    from weightscope.reports.depth import write_report

    W = np.random.default_rng(1).standard_normal((5, 7)) * [[1e-3], [1], [3], [7e2], [0.1]]
    assert np.all(np.diag(cosine_similarity(W)) == 1.0)
    # Affinity Propagation (seed 42) oscillates on this matrix; every run says so, not just the first
    S = np.array([[1.0, 1.0, 0.75, 0.25, 0.75, 1.0], [1.0, 1.0, 0.0, 1.0, 0.25, 0.5], [0.75, 0.0, 1.0, 0.0, 0.5, 0.0],
                  [0.25, 1.0, 0.0, 1.0, 0.25, 1.0], [0.75, 0.25, 0.5, 0.25, 1.0, 0.25], [1.0, 0.5, 0.0, 1.0, 0.25, 1.0]])
    names = ["ant", "bee", "cat", "dog", "eel", "fox"]  # already in canonical order
    import warnings

    for ignore in (False, True):  # even where the caller silences warnings
        with warnings.catch_warnings():
            if ignore:
                warnings.simplefilter("ignore")
            r = similarity_depth(S, names, methods=["affinity"])
        assert not r.methods["affinity"].graph.converged
        assert r.summary().splitlines()[1].endswith("[did not converge]")
    assert "did not converge" in write_report(r, tmp_path / "o")["report.html"].read_text()
