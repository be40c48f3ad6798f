"""Reports of layer similarity: heatmaps (layer x layer, model x model), relative-depth alignment, probe
qualities; a self-contained HTML page plus the matrices as JSON and CSV."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.errors import WeightscopeError
from ..core.fileio import write_atomic
from ..analyses.similarity.measures import best_match_depths
from ..analyses.similarity.result import Similarity, describe_measure
from ..models.adapters.labels import layer_label
from .page import esc, figure_to_img, heading, num, page, table


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")  # files only: never open a window
    import matplotlib.pyplot as plt

    return plt


def short_model(name: str, n: int = 28) -> str:
    return name if len(name) <= n else "..." + name[-(n - 3):]


def _heatmap(ax, S, rows, cols, title, vmin=0.0, values: bool | None = None):
    """One matrix on the report's shared colour scale [vmin, 1], its values written in the cells when it is small
    enough to read them (values=None: up to 16 x 16)."""
    im = ax.imshow(S, vmin=vmin, vmax=1.0, cmap="viridis", aspect="auto")
    step_r, step_c = max(1, len(rows) // 16), max(1, len(cols) // 16)
    ax.set_yticks(range(0, len(rows), step_r), [rows[i] for i in range(0, len(rows), step_r)], fontsize=7)
    ax.set_xticks(range(0, len(cols), step_c), [cols[i] for i in range(0, len(cols), step_c)], fontsize=7, rotation=90)
    ax.set_title(title, fontsize=8)
    if values or (values is None and S.shape[0] <= 16 and S.shape[1] <= 16):
        mid = vmin + 0.6 * (1.0 - vmin)
        for i in range(S.shape[0]):
            for j in range(S.shape[1]):
                if np.isfinite(S[i, j]):
                    ax.text(j, i, f"{S[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="k" if S[i, j] > mid else "w")  # readable on viridis' light and dark ends
    return im


def _vmin(sim: Similarity) -> float:
    """The lower end of the one colour scale every heatmap of the report shares: 0, or -1 when a measure
    (concept cosines) goes negative."""
    lows = [float(np.nanmin(sim.matrix(m, a, b))) for m in sim.main_measures for a, b in sim.pairs(m)]
    return -1.0 if lows and min(lows) < 0 else 0.0


def figure_layer_matrices(sim: Similarity, measure: str):
    """One heatmap per compared model pair of ``measure`` (rows: first model's layers, columns: second's)."""
    plt = _plt()
    pairs = sim.pairs(measure)
    ncol = min(len(pairs), 4)
    nrow = -(-len(pairs) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 4.8 * nrow), squeeze=False, layout="constrained")
    vmin = _vmin(sim)
    for ax, (a, b) in zip(axes.ravel(), pairs):
        im = _heatmap(ax, sim.matrix(measure, a, b), [layer_label(x) for x in sim.models[a]],
                      [layer_label(x) for x in sim.models[b]], f"{short_model(a)}\nvs {short_model(b)}", vmin)
    for ax in axes.ravel()[len(pairs):]:
        ax.axis("off")
    fig.colorbar(im, ax=axes, shrink=0.7)
    fig.suptitle(describe_measure(measure), fontsize=9)
    return fig


def figure_model_matrices(sim: Similarity):
    """Model x model similarity, one heatmap per measure (needs two or more models)."""
    plt = _plt()
    measures = sim.main_measures
    fig, axes = plt.subplots(1, len(measures), figsize=(3.8 * len(measures), 3.6), squeeze=False, layout="constrained")
    vmin = _vmin(sim)
    for ax, m in zip(axes[0], measures):
        names, M = sim.model_matrix(m)
        labels = [short_model(n, 20) for n in names]
        im = _heatmap(ax, M, labels, labels, m, vmin, values=True)
    fig.colorbar(im, ax=axes, shrink=0.7)
    return fig


def figure_depth(sim: Similarity, measure: str):
    """Relative depth of each layer against that of its best match in the other model (both directions)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for a, b in sim.pairs(measure):
        if a == b:
            continue
        S = sim.matrix(measure, a, b)
        for M, x, y in ((S, a, b), (S.T, b, a)):
            da, db = best_match_depths(M)
            ax.plot(da, db, marker="o", ms=3, lw=0.8, alpha=0.7, label=f"{short_model(x, 16)} -> {short_model(y, 16)}")
    ax.plot([0, 1], [0, 1], color="k", lw=0.6, ls="--")
    d = sim.depth(measure)
    ax.set_title(f"{measure}: Spearman {d['spearman']:.2f}, mean |diff| {d['mean_abs_diff']:.2f}", fontsize=9)
    ax.set_xlabel("relative depth of a layer")
    ax.set_ylabel("relative depth of its best match")
    ax.set_xlim(0, 1.05)
    ax.set_ylim(0, 1.05)
    if len(ax.get_legend_handles_labels()[0]) <= 12:
        ax.legend(fontsize=6)
    return fig


def figure_probes(sim: Similarity, model: str):
    """Held-out probe quality (IoU or AP) of every concept in every layer of one model."""
    plt = _plt()
    recs = [r for r in sim.probes if r["model"] == model]
    concepts = list(dict.fromkeys(r["concept"] for r in recs))
    layers = sim.models[model]
    Q = np.full((len(concepts), len(layers)), np.nan)
    for r in recs:
        Q[concepts.index(r["concept"]), layers.index(r["layer"])] = r["quality"]
    fig, ax = plt.subplots(figsize=(2.6 + 0.55 * len(layers), 1.2 + 0.24 * len(concepts)), layout="constrained")
    im = _heatmap(ax, Q, concepts, [layer_label(x) for x in layers], f"probe {recs[0]['metric']}: {short_model(model)}",
                  values=len(layers) <= 16)
    ax.set_yticks(range(len(concepts)), concepts, fontsize=6)
    fig.colorbar(im, ax=ax, shrink=0.7)
    return fig


def report_html(sim: Similarity, imgs: dict[str, str]) -> str:
    s = sim.summary()
    models = [[m, num(len(l), "d", f"models/{m}/#len"), f"{layer_label(l[0])} ... {layer_label(l[-1])}" if l else "-"]
              for m, l in sim.models.items()]
    parts = [f"<p>{esc(len(sim.models))} model(s), measures: {esc(', '.join(sim.main_measures))}. Every heatmap shares "
             "one colour scale; a cell's value is written in it when the matrix is small enough to read.</p>",
             heading("Models and layers", "models", "models"), table(["model", "layers", "compared"], models, table_id="models", name="models")]
    if s["depth_alignment"]:
        p = "summary/depth_alignment"
        rows = [[m, num(d["spearman"], ".3f", f"{p}/{m}/spearman"), num(d["mean_abs_diff"], ".3f", f"{p}/{m}/mean_abs_diff"),
                 num(d["n_points"], "d", f"{p}/{m}/n_points")] for m, d in s["depth_alignment"].items()]
        parts += [heading("Relative depth of best-matching layers", "depth", "depth alignment"),
                  table(["measure", "Spearman", "mean |depth difference|", "layers"], rows, table_id="depth-alignment",
                        name="depth alignment")]
    if s["rank_correlations"]:
        rows = [[r["model"], r["measure_a"], r["measure_b"], num(r["spearman"], ".3f", f"summary/rank_correlations/{i}/spearman")]
                for i, r in enumerate(s["rank_correlations"])]
        parts += [heading("Agreement between measures (Spearman of off-diagonal entries)", "agreement", "agreement"),
                  table(["model", "measure", "measure", "Spearman"], rows, table_id="agreement", sortable=True)]
    for i, (key, img) in enumerate(imgs.items()):
        parts.append(heading(key, f"fig-{i}", key) + img)
    return page("Layer similarity", "".join(parts))


def write_report(sim: Similarity, out_dir: str | Path, per_concept: bool = False) -> dict[str, Path]:
    """Write report.html, similarity.json, similarity_matrices.csv (and probe_quality.csv) into out_dir.

    Everything is rendered in memory first, so a failure writes nothing. per_concept: also a heatmap per concept.
    Returns {name: path}.
    """
    if not sim.matrices:
        raise WeightscopeError("nothing to report: the similarity result has no matrices")
    imgs: dict[str, str] = {}
    for m in sim.main_measures:
        imgs[f"layer x layer: {m}"] = figure_to_img(figure_layer_matrices(sim, m), m)
    if len(sim.models) > 1:
        imgs["model x model"] = figure_to_img(figure_model_matrices(sim), "model x model")
        for m in sim.main_measures:
            if sim.depth(m) is not None:  # measured between two different models
                imgs[f"relative depth: {m}"] = figure_to_img(figure_depth(sim, m), f"depth {m}")
    if per_concept:
        for m in sim.measures:
            if m.startswith("concept:"):
                imgs[f"layer x layer: {m}"] = figure_to_img(figure_layer_matrices(sim, m), m)
    for model in sim.models:
        if any(r["model"] == model for r in sim.probes):
            imgs[f"probe quality: {model}"] = figure_to_img(figure_probes(sim, model), f"probes {model}")
    files = {"report.html": report_html(sim, imgs), "similarity.json": sim.to_json(), **sim.csv_tables()}
    out = Path(out_dir)
    return {name: write_atomic(out / name, text) for name, text in files.items()}
