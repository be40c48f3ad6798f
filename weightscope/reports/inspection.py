"""The inspection explorer: spectra, a layer x head theme map, one card per head with sort / filter controls, a
layer index, and a search over every concept of every head and direction (the full result, embedded compactly).

Every number on a card is bound to its place in ``inspection.json`` (``page.num``), so tests check the page
against the JSON it was written with.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..analyses.inspection import NO_CONCEPT, Inspection, format_coefficient
from ..core.fileio import write_atomic
from ..models.adapters.labels import head_label, layer_label
from .neurons import sections as neuron_sections
from .page import Markup, asset, esc, figure_to_img, heading, num, page, table

DEAD = "dead (writes nothing)"
SIDE_CODE = {"write": 0, "read": 1, "query": 2, "key": 3}


def _spectra_figure(result: Inspection):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = result.layers
    cols = min(4, len(layers))
    rows = -(-len(layers) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False, sharey=True)
    for ax in axes.ravel()[len(layers):]:
        ax.axis("off")
    for ax, layer in zip(axes.ravel(), layers):
        for (l, h), rep in sorted(result.heads.items()):
            if l == layer:
                ax.plot(np.arange(len(rep.s)), rep.s, marker=".", ms=3, lw=1, label=f"H{h}")
        ax.set_title(layer_label(layer), fontsize=9)
        ax.set_xlabel("direction index", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0, 0].set_ylabel("singular value", fontsize=8)
    axes[0, 0].legend(fontsize=6, ncol=2)
    fig.suptitle("Value-output singular-value spectra", fontsize=10)
    fig.tight_layout()
    return fig


def theme_colours(themes: list[str]) -> dict[str, str]:
    """One light colour per theme, as CSS hex: hues a golden-ratio step apart (distinct for any number of themes;
    the text in each cell names the theme, so colour only groups)."""
    import colorsys

    out = {}
    for i, t in enumerate(sorted(set(themes))):
        r, g, b = colorsys.hls_to_rgb((i * 0.618033988749895) % 1.0, 0.82, 0.55)
        out[t] = "#%02x%02x%02x" % (int(r * 255), int(g * 255), int(b * 255))
    return out


def _anchor(l: int, h: int) -> str:
    return f"head-{l}-{h}"


def _theme_map(result: Inspection) -> str:
    """Layer x head grid as an HTML table: a cell per head, coloured by theme, linking to its card."""
    heads = sorted({h for _, h in result.heads})
    themes = {key: DEAD if rep.dead else (rep.theme() or NO_CONCEPT) for key, rep in result.heads.items()}
    colour = theme_colours(list(themes.values()))
    rows = []
    for l in result.layers:
        cells = []
        for h in heads:
            if (l, h) not in themes:
                cells.append(Markup(""))
                continue
            t = themes[l, h]
            cells.append(Markup(f"<a data-text href='#{_anchor(l, h)}' title='{esc(head_label(l, h))}: {esc(t)}' "
                                f"style='display:block;background:{colour[t]}'>{esc(t)}</a>"))
        rows.append([Markup(f"<a href='#layer-{l}'>{esc(layer_label(l))}</a>")] + cells)
    return ("<p class='muted'>Each cell: the head's theme (hover for the full name, click for its card).</p>"
            "<div style='overflow-x:auto'>" + table([""] + [f"H{h}" for h in heads], rows).replace(
                "<table>", "<table class='grid-map'>", 1) + "</div>")


def _concepts_cell(d, i_head: int, j: int) -> Markup:
    if not d.concepts:
        return Markup(esc(NO_CONCEPT))
    parts = []
    for c, (name, w) in enumerate(zip(d.concepts[:5], d.coefficients[:5])):
        path = f"heads/{i_head}/directions/{j}/coefficients/{c}"
        parts.append(f"{esc(name)} (<span data-path='{path}'>{esc(format_coefficient(w))}</span>)")
    return Markup(", ".join(parts))


def _card(result: Inspection, key, i_head: int, n_directions: int) -> str:
    rep = result.heads[key]
    l, h = key
    title = head_label(l, h)
    title = title[0].upper() + title[1:]
    shown_fid = []
    rows = []
    if not rep.dead:
        index = {(d.index, d.side, d.sign): j for j, d in enumerate(rep.directions)}
        for side in result.settings["sides"]:
            for i in rep.explained(side)[:n_directions]:
                for sign in (1, -1):
                    j = index[i, side, sign]
                    d = rep.directions[j]
                    tied = f" ~{d.group}" if d.group else ""
                    fid = num(d.fidelity, ".2f", f"heads/{i_head}/directions/{j}/fidelity") if d.concepts else "-"
                    if d.concepts:
                        shown_fid.append(d.fidelity)
                    rows.append([f"{side[0]}{i}{'+' if sign > 0 else '-'}{tied}", num(rep.s[i], ".3f",
                                 f"heads/{i_head}/s/{i}"), _concepts_cell(d, i_head, j), fid])
    theme = DEAD if rep.dead else rep.theme()
    attrs = (f"id='{_anchor(l, h)}' data-layer='{l}' data-head='{h}' data-theme='{esc(theme)}' "
             f"data-sigma='{rep.s[0] if rep.s else 0:.6g}' data-fidelity='{np.mean(shown_fid) if shown_fid else 0:.6g}'")
    head = f"<div class='card' {attrs}><h3>{esc(title)} &mdash; "
    if rep.dead:
        largest = f"{rep.s[0]:.2g}" if rep.s else "none"
        return (head + f"{DEAD}</h3><p class='muted'>No singular value stands above the rounding level of the "
                f"weights (largest: {largest}): the head has no direction to explain.</p></div>")
    return head + f"{esc(rep.theme())}</h3>" + table(["dir", "sigma", "concepts (coefficient)", "fidelity"], rows) + "</div>"


def _controls(result: Inspection) -> str:
    themes = sorted({DEAD if rep.dead else rep.theme() for rep in result.heads.values()})
    opts = "".join(f"<option value='{esc(t)}'>{esc(t)}</option>" for t in themes)
    layers = "".join(f"<option value='{l}'>{esc(layer_label(l))}</option>" for l in result.layers)
    index = " ".join(f"<a id='layer-{l}' href='#{_anchor(l, min(h for ll, h in result.heads if ll == l))}'>"
                     f"{esc(layer_label(l))}</a>" for l in result.layers)
    return ("<div class='controls'><label>sort <select id='ws-sort'><option value='order'>layer, head</option>"
            "<option value='theme'>theme</option><option value='sigma'>leading singular value (high first)</option>"
            "<option value='fidelity'>mean fidelity of shown directions (high first)</option></select></label>"
            f"<label>theme <select id='ws-theme'><option value=''>all</option>{opts}</select></label>"
            f"<label>layer <select id='ws-layer'><option value=''>all</option>{layers}</select></label>"
            "<span id='ws-count' class='muted'></span></div>"
            f"<p class='muted'>Jump to a layer: {index}</p>")


def search_index(result: Inspection) -> dict:
    """Every concept of every explained direction (all heads, sides, signs), compact enough for a whole ViT-L-14:
    a concept table and, per concept, flat [code delta, coefficient x 1000] pairs, where a direction's
    code = ((head * 4 + side) * n_index + index) * 2 + (sign > 0) (head: position in ``heads``; side: index in
    ``sides``) and the codes of one concept ascend, stored as differences from the previous one."""
    concepts: dict[str, int] = {}
    codes: list[list[tuple[int, int]]] = []
    items = sorted(result.heads.items())
    n_index = 1 + max((d.index for _, rep in items for d in rep.directions), default=0)
    for i_head, (_, rep) in enumerate(items):
        for d in rep.directions:
            code = ((i_head * len(SIDE_CODE) + SIDE_CODE.get(d.side, 0)) * n_index + d.index) * 2 + (d.sign > 0)
            for c, w in zip(d.concepts, d.coefficients):
                k = concepts.setdefault(c, len(concepts))
                if k == len(codes):
                    codes.append([])
                codes[k].append((code, round(1000 * w)))
    hits = []
    for pairs in codes:
        flat, last = [], 0
        for code, w in sorted(pairs):
            flat += [code - last, w]
            last = code
        hits.append(flat)
    return {"concepts": list(concepts), "hits": hits, "heads": [list(key) for key, _ in items],
            "sides": list(SIDE_CODE), "n_index": n_index}


def write_report(result: Inspection, path: str | Path, n_directions: int = 4) -> Path:
    """Write the HTML report of ``result`` to ``path`` (atomically); returns the path."""
    s = result.settings
    intro = (f"<p>Model <code>{esc(result.model)}</code>; vocabulary <code>{esc(result.vocabulary)}</code> "
             f"({result.vocabulary_size} concepts); solver {esc(s['method'])}, k = {s['k']}, lambda = {s['lam']}; "
             f"concept normalisation {esc(s.get('normalize', 'splice'))}; joint map {esc(s['joint_mode'])}{', image mean subtracted' if s['image_mean'] else ''}.</p>"
             "<p class='muted'>Directions: w = write (right singular vector), r = read (left); + explains v, - explains -v; "
             "~[i, j] marks a degenerate group (only the span is defined). Fidelity: cosine between the direction's "
             "joint-space image and its sparse reconstruction. Singular values at the rounding level of the weights "
             "are no directions and are not explained; a head with none is dead.</p>"
             "<p class='muted'>A head's theme: for each concept in the explanations of its four leading write "
             "directions (both signs), coefficient times the direction's singular value, summed; the concept with "
             "the largest sum (ties: alphabetical). Each distinct theme has its own colour in the map. The search box "
             "looks through every concept of every explained direction of every head, not only those on the cards.</p>")
    title = f"weightscope inspection: {result.model}"
    data = search_index(result)
    if not result.heads:  # only query-key directions and / or MLP neurons were asked for
        return write_atomic(path, page(title, intro + neuron_sections(result)))
    body = (intro + heading("Singular-value spectra", "spectra", "spectra")
            + figure_to_img(_spectra_figure(result), "spectra")
            + heading("Head themes", "themes", "theme map") + _theme_map(result)
            + heading("Heads", "heads", "heads") + _controls(result) + "<div class='cards'>"
            + "".join(_card(result, key, i, n_directions) for i, key in enumerate(sorted(result.heads))) + "</div>"
            + neuron_sections(result))
    return write_atomic(path, page(title, body, data=data, script=asset("inspection.js")))
