"""Similarity Depth: a hand-built case with planted similarities and errors, the authors' real ConvNeXt case,
maximum spanning trees against brute force, the report files, and the CLI's one-line errors."""
import itertools
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from weightscope.cli import main
from weightscope.analyses.depth import (class_graph, confusion_affinity, cosine_similarity, normalise, read_matrix,
                               similarity_depth)
from weightscope.core.errors import WeightscopeError
from weightscope.models.linear_heads import head_from_arrays

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
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


@pytest.mark.skipif(not CONVNEXT.is_dir(), reason="../shared/data/deephierarchy-convnext is not there")
def test_reproduces_the_authors_convnext_figures():
    S = np.load(CONVNEXT / "class_similarity.npy")
    K = np.load(CONVNEXT / "confusion.npy")
    wnids = (CONVNEXT / "wnids.txt").read_text().split()
    r = similarity_depth(S, wnids, confusion=K)
    aff = r.methods["affinity"]
    # the authors' own code on these matrices (shared README): SD 7.294 with 15 clusters; 29 shared edges
    # of 85 (similarity) and 76 (confusion)
    assert (round(aff.sd, 3), aff.n_clusters) == (7.294, 15)
    assert aff.direct == (pytest.approx(29 / 85), pytest.approx(29 / 76), 29)
    for m in ("optics", "hdbscan"):  # all 100 classes in one group: SD 7.333
        assert (round(r.methods[m].sd, 3), r.methods[m].n_clusters) == (7.333, 1)
    assert r.methods["louvain"].n_clusters == 8  # the authors' python-louvain also finds 8 (SD 7.511)


def test_report_files(tmp_path):
    from weightscope.reports.depth import write_report

    r = similarity_depth(_planted_similarity(), NAMES, confusion=_planted_confusion())
    written = write_report(r, tmp_path / "out")
    assert set(written) == {"report.html", "depth.json", "summary.csv", "edges.csv", "clusters.csv"}
    html = written["report.html"].read_text()
    assert html.count("data:image/png;base64,") == 5 and "http" not in html.replace("http-equiv", "")
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
