"""Report sections for query-key directions and MLP neurons (``Inspection.qk``, ``Inspection.neurons``).

``sections(result)`` returns HTML (empty when the inspection holds neither) that the inspection report appends.
"""
from __future__ import annotations

import numpy as np

from ..analyses.inspection import Inspection
from ..models.adapters.labels import layer_label
from .page import Markup, esc, figure_to_img, heading, num, table


def _position_figure(result: Inspection):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = sorted({l for l, _ in result.qk})
    heads = sorted({h for _, h in result.qk})
    grid = np.full((len(layers), len(heads)), np.nan)
    for (l, h), rep in result.qk.items():
        if rep.position:
            grid[layers.index(l), heads.index(h)] = max(rep.position)
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * len(heads), 1.0 + 0.35 * len(layers)))
    im = ax.imshow(grid, cmap="viridis", aspect="auto")
    fig.colorbar(im, ax=ax, label="x chance")
    ax.set_xticks(range(len(heads)), [f"H{h}" for h in heads], fontsize=8)
    ax.set_yticks(range(len(layers)), [layer_label(l) for l in layers], fontsize=8)
    ax.set_title("Positional variance along the most positional key direction", fontsize=10)
    return fig


def _qk_section(result: Inspection, n_directions: int) -> str:
    rows = []
    for i_head, ((l, h), rep) in enumerate(sorted(result.qk.items())):
        index = {(d.index, d.side, d.sign): j for j, d in enumerate(rep.directions)}
        for i in rep.explained("query")[:n_directions]:
            for sign in (1, -1):
                q, k = rep.direction(i, "query", sign), rep.direction(i, "key", sign)
                fq = num(q.fidelity, ".2f", f"qk/{i_head}/directions/{index[i, 'query', sign]}/fidelity") if q.concepts else "-"
                fk = num(k.fidelity, ".2f", f"qk/{i_head}/directions/{index[i, 'key', sign]}/fidelity") if k.concepts else "-"
                pos = num(rep.position[i], ".1f", f"qk/{i_head}/position/{i}") if i < len(rep.position) else "-"
                rows.append([f"L{l} H{h}", f"{i}{'+' if sign > 0 else '-'}", num(rep.s[i], ".3f", f"qk/{i_head}/s/{i}"),
                             q.label(3), k.label(3), Markup(f"{fq} / {fk}"), pos])
    return (heading("Query-key directions", "qk", "query-key")
            + "<p class='muted'>A large attention score needs the query token to contain "
            "the query concepts and the key token the key concepts (left / right singular vectors of W_QK; the sign "
            "flips both together). Position: the positional embedding's variance along the key direction, relative "
            "to a random direction's (1 = chance). Click a column to sort; type to filter.</p>"
            + figure_to_img(_position_figure(result), "positional key directions")
            + table(["head", "dir", "sigma", "query: attends from", "key: attends to", "fidelity q / k", "position"],
                    rows, table_id="qk-table", sortable=True, filter_box=True))


def _score_figure(result: Inspection):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    for l in sorted({l for l, _ in result.neurons}):
        scores = sorted((r.score for r in result.neurons.values() if r.layer == l), reverse=True)
        ax.plot(scores, label=layer_label(l), lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("neuron rank")
    ax.set_ylabel("|joint(write)| x |read|")
    ax.legend(fontsize=6, ncol=4)
    ax.set_title("Neuron scores per layer", fontsize=10)
    fig.tight_layout()
    return fig


def _mlp_section(result: Inspection, n_neurons: int) -> str:
    rows = []
    ordered = sorted(result.neurons.values(), key=lambda r: (r.layer, r.rank))  # the JSON's order
    for i_rep, rep in enumerate(ordered):
        if rep.rank >= n_neurons:
            continue
        cells = {(d.side, d.sign): (j, d) for j, d in enumerate(rep.directions)}

        def cell(key):
            if key not in cells:
                return "-"
            j, d = cells[key]
            fid = num(d.fidelity, ".2f", f"neurons/{i_rep}/directions/{j}/fidelity") if d.concepts else "-"
            return Markup(f"{esc(d.label(3))} [{fid}]")

        rows.append([layer_label(rep.layer), num(rep.neuron, "d", f"neurons/{i_rep}/neuron"), num(rep.score, ".3g", f"neurons/{i_rep}/score")]
                    + [cell(key) for key in (("write", 1), ("write", -1), ("read", 1))])
    return (heading("MLP neurons (data-free labels)", "mlp", "MLP neurons")
            + "<p class='muted'>Per layer, the leading neurons by score = norm "
            "of the write vector's joint-space image before normalisation x norm of the read vector (ln_2's scale "
            "folded in). Write +: what the neuron adds when it fires; write -: what it adds when its activation is "
            "negative; read +: what makes it fire. [fidelity]. Click a column to sort; type to filter.</p>"
            + figure_to_img(_score_figure(result), "neuron scores")
            + table(["layer", "neuron", "score", "write +", "write -", "read +"], rows, table_id="mlp-table",
                    sortable=True, filter_box=True))


def sections(result: Inspection, n_directions: int = 4, n_neurons: int = 8) -> str:
    """HTML sections for the query-key directions and MLP neurons of ``result`` ('' when it has neither)."""
    html = ""
    if result.qk:
        html += _qk_section(result, n_directions)
    if result.neurons:
        html += _mlp_section(result, n_neurons)
    return html
