"""The self-contained HTML report of an inspection: spectra, a layer x head theme map, one card per head."""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from ..core.fileio import write_atomic
from .page import esc, figure_to_img, page, table
from ..analyses.inspection import Inspection
from .neurons import sections as neuron_sections

DEAD = "dead (writes nothing)"


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
        ax.set_title(f"layer {layer}", fontsize=9)
        ax.set_xlabel("direction index", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0, 0].set_ylabel("singular value", fontsize=8)
    axes[0, 0].legend(fontsize=6, ncol=2)
    fig.suptitle("Value-output singular-value spectra", fontsize=10)
    fig.tight_layout()
    return fig


def theme_colormap(n: int):
    """A colormap with ``n`` distinct colours, one per theme: tab20, tab20b, tab20c, then evenly spaced hues."""
    import matplotlib
    from matplotlib.colors import ListedColormap, hsv_to_rgb

    colors = [c for name in ("tab20", "tab20b", "tab20c") for c in matplotlib.colormaps[name].colors]
    extra = max(0, n - len(colors))
    colors += [tuple(hsv_to_rgb((i / extra, 0.55, 0.9))) for i in range(extra)]
    return ListedColormap(colors[:max(n, 1)])


def _theme_map_figure(result: Inspection):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = result.layers
    heads = sorted({h for _, h in result.heads})
    themes = {key: DEAD if rep.dead else rep.theme() for key, rep in result.heads.items()}
    palette = {t: i for i, t in enumerate(sorted(set(themes.values())))}
    grid = np.full((len(layers), len(heads)), np.nan)
    for (l, h), t in themes.items():
        grid[layers.index(l), heads.index(h)] = palette[t]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(heads)), max(2.5, 0.6 * len(layers))))
    ax.imshow(grid, cmap=theme_colormap(len(palette)), aspect="auto", vmin=-0.5, vmax=len(palette) - 0.5)
    for (l, h), t in themes.items():
        ax.text(heads.index(h), layers.index(l), textwrap.fill(t, 14), ha="center", va="center", fontsize=6)
    ax.set_xticks(range(len(heads)), [f"H{h}" for h in heads], fontsize=8)
    ax.set_yticks(range(len(layers)), [f"L{l}" for l in layers], fontsize=8)
    ax.set_title("Dominant theme of each head (leading write directions)", fontsize=10)
    return fig


def _card(result: Inspection, key, n_directions: int) -> str:
    rep = result.heads[key]
    title = f"<div class='card'><h3>Layer {key[0]}, head {key[1]} &mdash; "
    if rep.dead:
        largest = f"{rep.s[0]:.2g}" if rep.s else "none"
        return (title + f"{DEAD}</h3><p class='muted'>No singular value stands above the rounding level of the "
                f"weights (largest: {largest}): the head has no direction to explain.</p></div>")
    rows = []
    for side in result.settings["sides"]:
        for i in rep.explained(side)[:n_directions]:
            for sign in (1, -1):
                d = rep.direction(i, side, sign)
                tied = f" ~{d.group}" if d.group else ""
                rows.append([f"{side[0]}{i}{'+' if sign > 0 else '-'}{tied}", f"{rep.s[i]:.3f}", d.label(5),
                             d.fidelity_label()])
    return title + f"{esc(rep.theme())}</h3>" + table(["dir", "sigma", "concepts (coefficient)", "fidelity"], rows) + "</div>"


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
             "the largest sum (ties: alphabetical). Each distinct theme has its own colour in the map.</p>")
    if not result.heads:  # only query-key directions and / or MLP neurons were asked for
        return write_atomic(path, page(f"weightscope inspection: {result.model}", intro + neuron_sections(result)))
    body = (intro + "<h2>Singular-value spectra</h2>" + figure_to_img(_spectra_figure(result), "spectra")
            + "<h2>Head themes</h2>" + figure_to_img(_theme_map_figure(result), "theme map")
            + "<h2>Heads</h2><div class='cards'>"
            + "".join(_card(result, key, n_directions) for key in sorted(result.heads)) + "</div>"
            + neuron_sections(result))
    return write_atomic(path, page(f"weightscope inspection: {result.model}", body))
