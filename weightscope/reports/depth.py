"""Similarity Depth report: per-cluster trees, a depth histogram, tables; CSV and JSON of every number.

Trees follow the seed paper's graph view (seed 003): each cluster's maximum spanning tree over the
classifier's class similarities, edges coloured by the WordNet depth of the two classes' lowest common
hypernym, and drawn thick when the same edge is also a tree edge of the confusion graph. The HTML page draws
them in the browser (``assets/depth.js``, D3): one cluster at a time as a collapsible tidy tree rooted at the
tree's centre, so labels never overlap at 100 or 1,000 classes. ``figure_trees`` and ``figure_histogram`` draw
the same views with matplotlib for notebooks.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from ..analyses.depth.core import PROTOCOL_NOTES, DepthResult, MethodResult
from ..core.errors import WeightscopeError
from ..core.fileio import dump_json, write_atomic
from .page import asset, esc, heading, num, page, table


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")  # files only: never open a window
    import matplotlib.pyplot as plt

    return plt


def _fmt(x, digits: int = 3) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _depth_range(result: DepthResult) -> tuple[int, int]:
    ds = [d for r in result.methods.values() for d in r.depths + (r.confusion_depths or [])]
    return (min(ds), max(ds)) if ds else (1, 2)


def figure_trees(result: DepthResult, method: str, max_panels: int = 24):
    """One panel per cluster with at least two classes (at most max_panels, largest first): the maximum
    spanning tree, edge colour = WordNet depth, thick red halo = also a confusion tree edge."""
    import networkx as nx

    plt = _plt()
    r = result.methods[method]
    names = result.class_names
    lo, hi = _depth_range(result)
    cmap, norm = plt.get_cmap("viridis"), plt.Normalize(vmin=lo, vmax=hi)
    shared = r.graph.edge_set & (r.confusion_graph.edge_set if r.confusion_graph else set())
    depth_of = {(i, j): d for (i, j, _), d in zip(r.graph.edges, r.depths)}
    clusters = sorted((c for c in r.graph.clusters if len(c) > 1), key=lambda c: (-len(c), c[0]))[:max_panels]
    if not clusters:
        fig, ax = plt.subplots(figsize=(5, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, "every cluster holds a single class: no tree edges", ha="center", va="center")
        return fig
    cols = min(4, len(clusters))
    rows = -(-len(clusters) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.ravel()[len(clusters):]:
        ax.axis("off")
    for ax, members in zip(axes.ravel(), clusters):
        T = nx.Graph()
        T.add_nodes_from(members)
        T.add_edges_from((i, j) for i, j, _ in r.graph.edges if i in members)
        pos = nx.kamada_kawai_layout(T) if T.number_of_edges() else nx.circular_layout(T)
        edges = sorted(tuple(sorted(e)) for e in T.edges)
        halo = [e for e in edges if e in shared]
        if halo:
            nx.draw_networkx_edges(T, pos, edgelist=halo, ax=ax, width=7, edge_color="#e41a1c", alpha=0.45)
        nx.draw_networkx_edges(T, pos, edgelist=edges, ax=ax, width=[3.2 if e in shared else 1.8 for e in edges],
                               edge_color=[cmap(norm(depth_of[e])) for e in edges])
        nx.draw_networkx_edge_labels(T, pos, edge_labels={e: depth_of[e] for e in edges}, ax=ax, font_size=7)
        nx.draw_networkx_nodes(T, pos, ax=ax, node_size=40, node_color="#333333")
        nx.draw_networkx_labels(T, pos, labels={i: names[i] for i in members}, ax=ax, font_size=7,
                                verticalalignment="bottom")
        sd = np.mean([depth_of[e] for e in edges]) if edges else float("nan")
        ax.set_title(f"{len(members)} classes, mean depth {sd:.2f}", fontsize=8)
        ax.margins(0.2)
        ax.axis("off")
    bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes.ravel().tolist(), shrink=0.6,
                       location="bottom", pad=0.04)  # below the panels: its label is never clipped
    bar.set_label("WordNet depth of the lowest common hypernym", fontsize=8)
    fig.suptitle(f"{method}: maximum spanning tree per cluster (red halo: also a confusion tree edge)", fontsize=10)
    return fig


def figure_histogram(result: DepthResult):
    """Histogram of edge depths per clustering method (similarity trees; confusion trees hatched)."""
    plt = _plt()
    lo, hi = _depth_range(result)
    bins = np.arange(lo, hi + 2) - 0.5
    methods = list(result.methods.values())
    fig, axes = plt.subplots(1, len(methods), figsize=(3.4 * len(methods), 2.8), squeeze=False, sharey=True)
    for ax, r in zip(axes[0], methods):
        ax.hist(r.depths, bins=bins, color="#1f77b4", alpha=0.75, label=f"similarity (SD {_fmt(r.sd, 2)})")
        if r.confusion_depths is not None:
            ax.hist(r.confusion_depths, bins=bins, histtype="step", hatch="//", color="#d62728",
                    label=f"confusion ({_fmt(r.confusion_sd, 2)})")
        ax.set_title(f"{r.method} ({r.n_clusters} cluster{'' if r.n_clusters == 1 else 's'})", fontsize=9)
        ax.set_xlabel("WordNet depth of the edge's lowest common hypernym", fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)  # depths and counts are whole numbers
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7)
    axes[0, 0].set_ylabel("tree edges")
    fig.tight_layout()
    return fig


def summary_rows(result: DepthResult) -> tuple[list[str], list[list]]:
    header = ["method", "clusters", "tree edges", "SD", "confusion depth", "shared edges",
              "direct: similarities confused", "direct: confusions explained",
              "extended: similarities confused", "extended: confusions explained"]
    rows = []
    for r in result.methods.values():
        d, e = r.direct or (None, None, None), r.extended or (None, None)
        rows.append([r.method, r.n_clusters, len(r.depths), _fmt(r.sd), _fmt(r.confusion_sd), "" if d[2] is None else d[2],
                     _fmt(d[0]), _fmt(d[1]), _fmt(e[0]), _fmt(e[1])])
    return header, rows


def _summary_table(result: DepthResult) -> str:
    """The summary as HTML, every number bound to its place in depth.json."""
    header = summary_rows(result)[0]
    rows = []
    for m, r in result.methods.items():
        p = f"methods/{m}"
        nan = lambda x: None if x is None or (isinstance(x, float) and math.isnan(x)) else x  # noqa: E731
        d, e = r.direct or (None, None, None), r.extended or (None, None)
        rows.append([m, num(r.n_clusters, "d", f"{p}/n_clusters"), num(len(r.depths), "d", f"{p}/edge_depths/#len"),
                     num(nan(r.sd), ".3f", f"{p}/sd"), num(nan(r.confusion_sd), ".3f", f"{p}/confusion_sd"),
                     num(d[2], "d", f"{p}/direct/shared_edges"),
                     num(nan(d[0]), ".3f", f"{p}/direct/similarity_edges_confused"),
                     num(nan(d[1]), ".3f", f"{p}/direct/confusions_explained"),
                     num(nan(e[0]), ".3f", f"{p}/extended/similarity_edges_confused"),
                     num(nan(e[1]), ".3f", f"{p}/extended/confusions_explained")])
    if all(r.confusion_graph is None for r in result.methods.values()):  # no confusion matrix: no empty columns
        header, rows = header[:4], [row[:4] for row in rows]
    return table(header, rows, table_id="summary", sortable=True)


def edge_rows(result: DepthResult, wordnet) -> tuple[list[str], list[list]]:
    """Every tree edge of every graph: method, graph, cluster, the two classes, affinity, depth, subsumer."""
    header = ["method", "graph", "cluster", "class_a", "class_b", "affinity", "depth", "subsumer", "subsumer_wnid",
              "in_other_tree"]
    rows = []
    names = result.class_names
    for r in result.methods.values():
        graphs = [("similarity", r.graph, r.confusion_graph)]
        if r.confusion_graph is not None:
            graphs.append(("confusion", r.confusion_graph, r.graph))
        for label, g, other in graphs:
            cl = g.cluster_of
            for i, j, w in g.edges:
                depth, sub = wordnet.lch_depth(result.synsets[i], result.synsets[j])
                rows.append([r.method, label, int(cl[i]), names[i], names[j], f"{w:.6g}", depth, wordnet.name(sub),
                             f"n{sub:08d}", "" if other is None else int((i, j) in other.edge_set)])
    return header, rows


def _csv(header, rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()




def _method_section(result: DepthResult, r: MethodResult) -> str:
    m = r.method
    names = result.class_names
    singles = [names[c[0]] for c in r.graph.clusters if len(c) == 1]
    nc = r.n_clusters
    parts = [heading(f"{m}: SD {_fmt(r.sd)} over {len(r.depths)} edges, {nc} cluster{'' if nc == 1 else 's'}",
                     f"trees-{m}", m)]
    if not r.graph.converged:
        parts.append("<p><b>Affinity Propagation did not converge</b>: every class is in one group.</p>")
    if r.graph.noise is not None:
        parts.append(f"<p class='muted'>{len(r.graph.clusters[r.graph.noise])} classes were left as noise by "
                     f"{esc(m)}; as in the authors' code they form one group.</p>")
    graph = ("<label>graph <select id='graph-{0}'><option value='similarity'>similarity</option>"
             "<option value='confusion'>confusion</option></select></label>".format(esc(m))
             if r.confusion_graph is not None else "")
    parts.append(f"<div class='controls'>{graph}<label>cluster <select id='cluster-{esc(m)}' style='max-width:48rem'>"
                 f"</select></label><span id='step-{esc(m)}'><button data-step='-1'>&larr; previous</button> "
                 f"<button data-step='1'>next &rarr;</button></span> <button id='expand-{esc(m)}'>expand all</button></div>"
                 f"<div id='tree-{esc(m)}' style='overflow:auto;max-height:80vh;border:1px solid #eee'></div>")
    if singles:
        parts.append(f"<p class='muted'>single-class clusters ({len(singles)}): {esc(', '.join(singles))}</p>")
    return "".join(parts)


def report_html(result: DepthResult, data: dict) -> str:
    """The page: summary, histograms, and per method one cluster's tree at a time (drawn in the page from
    ``data``, the depth.json content plus the subsumers' names)."""
    body = [f"<p>{esc(result.source)}: {len(result.class_names)} classes"
            + (f", accuracy {100 * result.accuracy:.1f} %" if result.accuracy is not None else "") + ". "
            "Similarity Depth (SD) = mean WordNet depth of the lowest common hypernym over the maximum-spanning-tree "
            "edges of each cluster of class templates (depth as NLTK's Wu-Palmer: entity = 1). Direct compliance: "
            "shared tree edges over the similarity graph's edges (similarities confused) and over the confusion "
            "graph's edges (confusions explained); extended: an edge counts when its classes share a cluster of the "
            "other graph.</p>", f"<p class='muted'>{esc(PROTOCOL_NOTES[result.protocol])}.</p>",
            heading("Summary", "summary", "summary"), _summary_table(result),
            heading("Depth of the tree edges", "depth-histograms", "depth histograms"),
            "<div id='histograms' style='display:flex;flex-wrap:wrap;gap:1rem'></div>"]
    body += [f"<p class='muted'>note: {esc(n)}</p>" for n in result.notes]
    body.append("<p class='muted'>Trees: each cluster's maximum spanning tree, rooted at its centre, one cluster at a "
                "time. Hover an edge for the WordNet depth and lowest common hypernym of its two classes; a thick "
                "edge is also a tree edge of the other graph. Click a node to fold or unfold its branch (red: "
                "folded). Search a class name at the top to open its cluster.</p><div id='legend'></div>")
    for r in result.methods.values():
        body.append(_method_section(result, r))
    if result.senses:  # the WordNet sense each class stands for, and what chose it
        body.append("<details><summary>WordNet synset of each class</summary>"
                    + table(["class", "synset", "wnid", "chosen by"],
                            [[c["class"], c["synset"], c["wnid"], c["chosen_by"]] for c in result.senses]) + "</details>")
    body.append("<p class='muted'>Numbers: depth.json, summary.csv, edges.csv, clusters.csv next to this page.</p>")
    return page("Similarity Depth", "".join(body), data=data, script=asset("depth.js"))


def write_report(result: DepthResult, out_dir: str | Path, wordnet=None) -> dict[str, Path]:
    """Write report.html, depth.json, summary.csv, edges.csv and clusters.csv to out_dir.

    Everything is rendered in memory first, so a failure leaves no partial set of files.
    Returns {name: path}.
    """
    from ..concepts.wordnet import load_wordnet

    if not result.methods:
        raise WeightscopeError("nothing to report: no clustering method was run")
    wordnet = wordnet or load_wordnet()
    data = result.to_json(wordnet)
    subs = {w for m in data["methods"].values() for w in m["edge_subsumers"]}
    page_data = {**data, "subsumer_names": {w: wordnet.name(int(w[1:])) for w in sorted(subs)}}
    cluster_rows = []
    for r in result.methods.values():
        for label, g in (("similarity", r.graph), ("confusion", r.confusion_graph)):
            if g is not None:
                cl = g.cluster_of
                cluster_rows += [[r.method, label, result.class_names[i], int(cl[i]), int(g.noise == cl[i]),
                                  f"n{result.synsets[i]:08d}", wordnet.name(result.synsets[i])] for i in range(len(cl))]
    files = {
        "report.html": report_html(result, page_data),
        "depth.json": dump_json(data),
        "summary.csv": _csv(*summary_rows(result)),
        "edges.csv": _csv(*edge_rows(result, wordnet)),
        "clusters.csv": _csv(["method", "graph", "class", "cluster", "noise", "wnid", "synset"], cluster_rows),
    }
    out = Path(out_dir)
    return {name: write_atomic(out / name, text) for name, text in files.items()}
