"""The zoo report: one self-contained HTML page (``page.py`` helpers) of a ``analyses.zoo.analysis.Zoo``.

Sections: the family tree (figure and table: parent, weight distance, kurtosis), per checkpoint the change by
kind (VO / QK / MLP) over all layers and a layer x kind heat map, the concept labels of the main changes (from the
harness's comparisons when they were labelled), and spectral drift (alpha per layer matrix of the base and every
checkpoint; the change of alpha, stable and effective rank). Every number shown comes from the Zoo it is given.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .page import esc, figure_to_img, page, table


def _fmt(x, digits: int = 4) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else (
        f"{x:.{digits}g}" if isinstance(x, float) else str(x))


def _tree_figure(zoo):
    """Layered drawing: depth from the root downwards, children spread under their parent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tree = zoo.tree
    pos, leaves = {}, [0]

    def place(node, depth):
        kids = tree.children(node)
        if not kids:
            pos[node] = (leaves[0], -depth)
            leaves[0] += 1
        else:
            for c in kids:
                place(c, depth + 1)
            pos[node] = (float(np.mean([pos[c][0] for c in kids])), -depth)

    place(tree.root, 0)
    fig, ax = plt.subplots(figsize=(max(4, 1.6 * leaves[0]), 1.3 * (1 - min(y for _, y in pos.values())) + 0.6))
    i = {n: k for k, n in enumerate(tree.names)}
    for parent, child in tree.edges():
        (x0, y0), (x1, y1) = pos[parent], pos[child]
        ax.annotate("", xy=(x1, y1 + 0.12), xytext=(x0, y0 - 0.12), arrowprops={"arrowstyle": "->", "color": "#555"})
        ax.text((x0 + x1) / 2, (y0 + y1) / 2, f"{tree.distance[i[parent], i[child]]:.3g}", fontsize=8,
                color="#777", ha="center", va="center", backgroundcolor="white")
    for node, (x, y) in pos.items():
        ax.text(x, y, node, ha="center", va="center", fontsize=10,
                bbox={"boxstyle": "round", "fc": "#e8f0fe" if node != zoo.base else "#fde8e8", "ec": "#888"})
    ax.set_xlim(-0.7, leaves[0] - 0.3)
    ax.set_ylim(min(y for _, y in pos.values()) - 0.5, 0.5)
    ax.axis("off")
    return fig


def _heatmap(values: np.ndarray, rows: list[str], cols: list[str], title: str, cmap: str = "viridis",
             centre: bool = False):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.1 + 0.55 * len(cols), 0.9 + 0.32 * len(rows)))
    v = np.nanmax(np.abs(values)) if values.size and np.isfinite(values).any() else 1.0
    im = ax.imshow(values, aspect="auto", cmap=cmap, **({"vmin": -v, "vmax": v} if centre else {}))
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def zoo_html(zoo, comparisons=None) -> str:
    """The page's HTML text (see the module doc); comparisons: the harness's, for concept labels."""
    from ..analyses.zoo.analysis import KINDS

    tree = zoo.tree
    i = {n: k for k, n in enumerate(tree.names)}
    parts = [f"<p class='muted'>{len(zoo.members)} checkpoint(s) of base <code>{esc(zoo.base)}</code>. "
             "Tree: MoTHer (Horwitz et al., ICLR 2025): Euclidean weight distances place the edges, kurtosis "
             f"({esc(tree.settings.get('direction'))}s from parent to child) orients them, a minimum directed "
             "spanning tree joins them. Check it on a family you know before trusting it.</p>",
             "<h2>Family tree</h2>", figure_to_img(_tree_figure(zoo), "family tree"),
             table(["model", "parent", "distance to parent", "kurtosis"],
                   [[n, tree.parent[n] or "(root)",
                     _fmt(float(tree.distance[i[tree.parent[n]], i[n]])) if tree.parent[n] else "",
                     _fmt(float(tree.statistic[i[n]]))] for n in tree.names])]
    parts.append("<h2>Change from the base by kind</h2><p class='muted'>||W_t - W_b||_F / ||W_b||_F over all "
                 "layers; VO: value and output matrices, QK: query and key, MLP: both MLP matrices.</p>")
    parts.append(table(["checkpoint", *KINDS], [[m, *(_fmt(v) for v in zoo.kind_change(m).values())]
                                                for m in zoo.members]))
    cards = []
    for m in zoo.members:
        rows = [r for r in zoo.change[m] if r["matrix"] in KINDS]
        layers = sorted({r["layer"] for r in rows})
        grid = np.array([[next(r["rel_change"] for r in rows if r["layer"] == li and r["matrix"] == k)
                          for k in KINDS] for li in layers])
        cards.append(f"<div class='card'><h3>{esc(m)}</h3>" +
                     figure_to_img(_heatmap(grid, [f"L{li}" for li in layers], list(KINDS), "relative change"),
                                   f"change of {m} by layer and kind") + "</div>")
    parts.append(f"<div class='cards'>{''.join(cards)}</div>")
    labelled = [c for c in comparisons or [] if c.labelled]
    if labelled:
        parts.append("<h2>Concepts of the main changes</h2>")
        parts.append(table(["checkpoint", "amplified", "suppressed"], [
            [c.tuned, ", ".join(f"{k} ({v:.2g})" for k, v in c.amplified_concepts(5)),
             ", ".join(f"{k} ({v:.2g})" for k, v in c.suppressed_concepts(5))] for c in labelled]))
    parts.append("<h2>Spectral drift</h2><p class='muted'>alpha: power-law exponent of each layer matrix's "
                 "eigenvalue tail (MLE, xmin by KS distance; about 2-6 well trained, &gt; 6 under-trained, &lt; 2 "
                 "over-fitted; METHODS.md section 13). d_alpha: checkpoint minus base.</p>")
    base_rows = [r for r in zoo.spectra[zoo.base] if r["head"] == -1]
    cols = [f"L{r['layer']} {r['matrix']}" for r in base_rows]
    names = [zoo.base, *zoo.members]
    grid = np.array([[next((float(t.get("alpha", math.nan)) for t in zoo.spectra[n]
                            if t["head"] == -1 and t["layer"] == r["layer"] and t["matrix"] == r["matrix"]), math.nan)
                      for r in base_rows] for n in names])
    parts.append(figure_to_img(_heatmap(grid, names, cols, "alpha per layer matrix"), "alpha per layer matrix"))
    drift_rows = []
    for m in zoo.members:
        d = [r for r in zoo.drift[m] if r["head"] == -1]
        top = sorted(d, key=lambda r: -abs(r.get("d_alpha", 0.0) if math.isfinite(r.get("d_alpha", math.nan)) else 0))[:3]
        drift_rows.append([m, _fmt(float(np.nanmean([r.get("d_alpha", math.nan) for r in d])) if d else math.nan),
                           "; ".join(f"L{r['layer']} {r['matrix']} {_fmt(r.get('d_alpha'), 3)}" for r in top),
                           _fmt(float(np.mean([r.get("d_stable_rank", 0.0) for r in d])) if d else math.nan),
                           _fmt(float(np.mean([r.get("d_effective_rank", 0.0) for r in d])) if d else math.nan)])
    parts.append(table(["checkpoint", "mean d_alpha", "largest |d_alpha|", "mean d_stable_rank",
                        "mean d_effective_rank"], drift_rows))
    return page("weightscope zoo", "".join(parts))


def write_zoo_report(zoo, path: str | Path, comparisons=None) -> Path:
    """Write :func:`zoo_html` atomically to ``path``; returns the path."""
    from ..core.fileio import write_atomic

    return write_atomic(path, zoo_html(zoo, comparisons))
