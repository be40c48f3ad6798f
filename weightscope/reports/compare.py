"""Reports of checkpoint comparisons: figures (matplotlib), a text table and a self-contained HTML page."""
from __future__ import annotations

import html
import io
import math
from pathlib import Path

import numpy as np

from ..analyses.compare import EPSILONS, KINDS, Comparison, comparisons_to_json
from ..analyses.compare.results import MATRICES
from ..core.errors import WeightscopeError
from ..core.fileio import write_atomic

KIND_COLOURS = {"stable": "#9e9e9e", "reweighted": "#1f77b4", "rotated": "#d62728"}


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")  # files only: never open a window
    import matplotlib.pyplot as plt

    return plt


def _short(name: str, n: int = 40) -> str:
    return name if len(name) <= n else "..." + name[-(n - 3):]


def figure_shares(comparisons: list[Comparison]):
    """Stacked bars: in-basis vs off-basis share of the change energy, one bar per tuned checkpoint."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.45 * len(comparisons)))
    names = [_short(c.tuned) for c in comparisons]
    rew = np.array([100 * c.in_basis_share for c in comparisons])
    rot = np.array([100 * c.off_basis_share for c in comparisons])
    y = np.arange(len(comparisons))
    ax.barh(y, rew, color=KIND_COLOURS["reweighted"], label="in-basis (rescaling base directions)")
    ax.barh(y, rot, left=rew, color=KIND_COLOURS["rotated"], label="off-basis (turning, new directions)")
    for yi, c in zip(y, comparisons):
        ax.text(101, yi, f"rel. change {c.rel_change:.3g}", va="center", fontsize=8)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlim(0, 130)
    ax.set_xlabel("share of ||W_tuned - W_base||_F^2 over all heads (%)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35 - 0.5 / len(comparisons)), ncol=2, fontsize=8,
              frameon=False)  # below the axes: never over a bar
    kind = comparisons[0].settings.get("kind", "vo") if comparisons else "vo"
    ax.set_title(f"How the {MATRICES.get(kind, kind)} matrices changed")
    return fig


def figure_heads(comparison: Comparison):
    """Two layer x head maps: relative change, and the in-basis share of each changed head."""
    plt = _plt()
    layers = comparison.layers
    n_heads = 1 + max(h for _, h in comparison.heads)
    rel = np.full((len(layers), n_heads), np.nan)
    share = np.full((len(layers), n_heads), np.nan)
    for (l, h), hc in comparison.heads.items():
        rel[layers.index(l), h] = hc.rel_change if np.isfinite(hc.rel_change) else np.nan
        if hc.changed:
            share[layers.index(l), h] = 100 * hc.in_basis_share
    fig, axes = plt.subplots(1, 2, figsize=(min(4 + 0.5 * n_heads, 16), 1.8 + 0.3 * len(layers)), layout="constrained")
    for ax, data, title, cmap, vmax in ((axes[0], rel, "relative change ||dW|| / ||W||", "viridis", None),
                                        (axes[1], share, "in-basis share (%)", "coolwarm_r", 100)):
        im = ax.imshow(data, aspect="auto", cmap=cmap, vmin=0, vmax=vmax)
        ax.set_yticks(range(len(layers)), [str(l) for l in layers])
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(_short(comparison.tuned, 60), fontsize=9)
    return fig


def figure_directions(comparison: Comparison):
    """Every direction of the changed heads: match cosine vs log2 |singular-value ratio|, by kind."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for kind in KINDS:
        pts = [(abs(d.cos), math.log2(min(max(abs(d.ratio), 1e-6), 1e6)),
                d.s_base / max(comparison[l, h].norm_base, 1e-300))
               for l, h, d in comparison.directions(kind) if comparison[l, h].changed]
        if pts:
            x, y, w = map(np.array, zip(*pts))
            ax.scatter(x, y, s=8 + 120 * w, alpha=0.6, color=KIND_COLOURS[kind], label=f"{kind} ({len(pts)})")
    if not comparison.changed_heads():
        ax.text(0.5, 0.5, "no head changed", ha="center", va="center", transform=ax.transAxes)
    ax.axvline(comparison.settings["cos_threshold"], color="k", lw=0.8, ls="--")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("match cosine |(u.u')(v.v')|")
    ax.set_ylabel("log2 |sigma_tuned / sigma_base|")
    ax.set_xlim(0, 1.02)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.set_title(f"directions of changed heads: {_short(comparison.tuned, 50)}", fontsize=9)
    return fig


def _layer_share(r: dict) -> float:
    """In-basis share of a layer, NaN (n/a) when nothing in it changed: 0 % would claim an off-basis change."""
    return 100 * r["in_basis_share"] if r["changed_heads"] and r["energy_total"] > 0 else float("nan")


def figure_layers(comparisons: list[Comparison]):
    """Per layer: change energy (linear: unchanged layers sit at 0) and its in-basis share (gaps where n/a)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
    for c in comparisons:
        rows = c.layer_summary()
        x = [r["layer"] for r in rows]
        axes[0].plot(x, [r["energy_total"] for r in rows], marker="o", label=_short(c.tuned, 30))
        axes[1].plot(x, [_layer_share(r) for r in rows], marker="o", label=_short(c.tuned, 30))
    axes[0].set_ylim(bottom=0)
    axes[0].set_title("change energy per layer ||dW||_F^2", fontsize=9)
    axes[1].set_title("in-basis share per layer (%; gaps: layer unchanged)", fontsize=9)
    axes[1].set_ylim(-2, 102)
    for ax in axes:
        ax.set_xlabel("layer")
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[1].legend(fontsize=7)
    return fig


def figure_checkpoints(comparisons: list[Comparison]):
    """Across checkpoints: relative change, in-basis share and intruder count (at the settings' epsilon)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(12, 0.9 + 0.35 * len(comparisons)), sharey=True, layout="constrained")
    y = np.arange(len(comparisons))
    eps = comparisons[0].settings.get("epsilon", 0.5)
    values = [([c.rel_change for c in comparisons], "relative change ||dW|| / ||W||"),
              ([100 * c.in_basis_share for c in comparisons], "in-basis share of the change energy (%)"),
              ([c.intruder_counts([eps])[float(eps)] for c in comparisons], f"intruder directions (eps {eps:g})")]
    if not any(values[2][0]):  # no intruders anywhere: say so in the text, draw no empty panel
        axes[2].remove()
    for k, (ax, (vals, title)) in enumerate(zip(axes, values if any(values[2][0]) else values[:2])):
        ax.barh(y, np.nan_to_num(np.asarray(vals, dtype=float), posinf=0.0), color="#4c72b0")
        ax.set_xlim(0, 100) if k == 1 else ax.set_xlim(left=0)
        ax.set_title(title, fontsize=9)
    axes[0].set_yticks(y, [_short(c.tuned, 30) for c in comparisons])
    axes[0].invert_yaxis()
    return fig


def figure_intruders(comparisons: list[Comparison]):
    """Intruder directions (all heads) against epsilon, one line per checkpoint (Shuttleworth et al. 2024, fig. 3)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for c in comparisons:
        counts = c.intruder_counts(c.settings.get("epsilons") or EPSILONS)
        ax.plot(list(counts), list(counts.values()), marker="o", label=_short(c.tuned, 30))
    ax.set_xlabel("epsilon (best |cos| with every base write direction below it)")
    ax.set_ylabel("intruder directions")
    ax.legend(fontsize=7)
    ax.set_title("intruder dimensions", fontsize=9)
    return fig


def figure_ratios(comparisons: list[Comparison]):
    """Distribution of log2 sigma ratios of matched (not rotated) directions of changed heads, per checkpoint."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    data = [np.clip(c.sigma_ratios(), -4, 4) for c in comparisons]
    reach = max([float(np.abs(d).max()) for d in data if d.size] + [0.0])
    span = min(2.0, max(0.01, 1.1 * reach))  # the range the ratios cover, at most +-2
    if any(d.size for d in data):
        ax.hist([d for d in data if d.size], bins=41, range=(-span, span), histtype="step",
                label=[_short(c.tuned, 30) for c, d in zip(comparisons, data) if d.size])
        ax.legend(fontsize=7)
    ax.set_xlabel("log2 sigma_tuned / sigma_base" + (" (clipped to +-2)" if span >= 2 else ""))
    ax.set_ylabel("directions")
    ax.set_title("sigma ratios of matched directions", fontsize=9)
    return fig


SUMMARY_HEADER = ["tuned checkpoint", "rel. change", "in-basis %", "off-basis %", "chance in-basis %",
                  "mean match cos", "stable", "reweighted", "rotated", "intruders", "most changed heads",
                  "amplified", "suppressed"]


def comparison_rows(comparisons: list[Comparison], n_concepts: int = 3) -> tuple[list[str], list[list]]:
    """(header, rows) of the one-line-per-checkpoint table used on stdout and in the HTML report."""
    rows = []
    for c in comparisons:
        k = c.counts()
        eps = c.settings.get("epsilon", 0.5)
        heads = ", ".join(f"L{h.layer}H{h.head}" for h in c.top_heads(3)) or "-"
        amp = ", ".join(x for x, _ in c.amplified_concepts(n_concepts)) if c.labelled else "(no labels)"
        sup = ", ".join(x for x, _ in c.suppressed_concepts(n_concepts)) if c.labelled else "(no labels)"
        rows.append([c.tuned, f"{c.rel_change:.4f}", f"{100 * c.in_basis_share:.1f}", f"{100 * c.off_basis_share:.1f}",
                     f"{100 * c.chance_in_basis_share:.2f}", f"{c.mean_match_cos:.3f}", k["stable"], k["reweighted"],
                     k["rotated"], c.intruder_counts([eps])[float(eps)], heads, amp or "-", sup or "-"])
    return list(SUMMARY_HEADER), rows


def _head_rows(c: Comparison, n: int) -> list[list]:
    rows = []
    eps = c.settings.get("epsilon", 0.5)
    for hc in c.top_heads(n):
        rot = hc.of_kind("rotated")
        rew = sorted(hc.of_kind("reweighted"), key=lambda d: -abs(math.log(max(abs(d.ratio), 1e-12))))
        lab = lambda d, which: ", ".join(x for x, _ in getattr(d, which)[:2])  # noqa: E731
        rot_txt = "; ".join(f"{d.index} ({d.angle:.0f} deg){': ' + lab(d, 'base_concepts') + ' -> ' + lab(d, 'tuned_concepts') if c.labelled else ''}"
                            for d in rot[:3]) or "-"
        rew_txt = "; ".join(f"{d.index} x{d.ratio:.2f}{': ' + lab(d, 'base_concepts') if c.labelled else ''}"
                            for d in rew[:3]) or "-"
        rows.append([f"L{hc.layer} H{hc.head}", f"{hc.rel_change:.4f}", f"{100 * hc.in_basis_share:.0f}",
                     f"{hc.angle_write:.1f}", f"{max(hc.top_angles_write, default=0.0):.1f}", len(rew), len(rot),
                     hc.intruders(eps), rew_txt, rot_txt])
    return rows


def _summary_table(comparisons: list[Comparison]) -> str:
    """comparison_rows as HTML, each number bound to its place in compare.json."""
    from .page import Markup, esc, num, table

    header, text_rows = comparison_rows(comparisons)
    rows = []
    for i, (c, text) in enumerate(zip(comparisons, text_rows)):
        t = f"comparisons/{i}/totals"
        eps = c.settings.get("epsilon", 0.5)
        key = f"intruders@{eps:g}"
        intr = num(text[9], "d", f"{t}/{key}" if key in c.totals() else None)  # totals hold the settings' epsilon
        rows.append([text[0], num(c.rel_change, ".4f", f"{t}/rel_change"),
                     num(c.in_basis_share, ".1f", f"{t}/in_basis_share", scale=100),
                     num(c.off_basis_share, ".1f", f"{t}/off_basis_share", scale=100),
                     num(c.chance_in_basis_share, ".2f", f"{t}/chance_in_basis_share", scale=100),
                     num(c.mean_match_cos, ".3f", f"{t}/mean_match_cos"), num(text[6], "d", f"{t}/stable"),
                     num(text[7], "d", f"{t}/reweighted"), num(text[8], "d", f"{t}/rotated"), intr,
                     Markup(esc(text[10])), text[11], text[12]])
    return table(header, rows, table_id="summary", sortable=True, name="summary")


def _layers_table(c: Comparison, i: int) -> str:
    """The per-layer table, bound to compare.json (shares read n/a where nothing in the layer changed)."""
    from .page import Markup, num, table

    eps = c.settings.get("epsilon", 0.5)
    rows = []
    for k, r in enumerate(c.layer_summary(eps)):
        p = f"comparisons/{i}/layers/{k}"
        changed = bool(r["changed_heads"] and r["energy_total"] > 0)
        rows.append([num(r["layer"], "d", f"{p}/layer"),
                     Markup(f"{num(r['changed_heads'], 'd', f'{p}/changed_heads')}/{num(r['heads'], 'd', f'{p}/heads')}"),
                     num(r["mean_rel_change"], ".4f", f"{p}/mean_rel_change"),
                     num(r["in_basis_share"] if changed else None, ".1f", f"{p}/in_basis_share", scale=100),
                     num(r["off_basis_share"] if changed else None, ".1f", f"{p}/off_basis_share", scale=100),
                     num(r["reweighted"], "d", f"{p}/reweighted"), num(r["rotated"], "d", f"{p}/rotated"),
                     num(r[f"intruders@{eps:g}"], "d", f"{p}/intruders@{eps:g}")])
    return table(["layer", "changed heads", "mean rel. change", "in-basis %", "off-basis %", "reweighted dirs",
                  "rotated dirs", f"intruders (eps {eps:g})"], rows, table_id=f"layers-{i}", sortable=True,
                 name=f"{_short(c.tuned, 30)}, layers")


def definitions_html(s: dict) -> str:
    """How every number of the report is defined (the settings of the first comparison)."""
    return (
        "<p>Each head's change ||W<sub>tuned</sub> &minus; W<sub>base</sub>||<sub>F</sub><sup>2</sup> ("
        f"{html.escape(MATRICES.get(s.get('kind', 'vo'), str(s.get('kind'))))} matrix) is split exactly, with no "
        "threshold, into two <b>energy shares</b>: <b>in-basis</b> = "
        "&Sigma;<sub>i</sub>(a<sub>i</sub> &minus; s<sub>i</sub>)<sup>2</sup>, the part that rescales the base's own "
        "singular directions (a<sub>i</sub> = u<sub>i</sub> W<sub>tuned</sub> v<sub>i</sub><sup>T</sup>; any factor, 0 "
        "and negative included), and <b>off-basis</b> = the rest: directions turning (a little everywhere or a lot "
        "somewhere) and new directions. Shares are energy-weighted over heads. A random change of the head factors "
        "would put 1/(2D &minus; r) in-basis (the <i>chance</i> column).</p>"
        "<p>The <b>direction counts</b> are thresholded: a base direction is <b>rotated</b> when its matched angle "
        f"arccos|(u&middot;u')(v&middot;v')| exceeds {s.get('max_angle', 0):.1f}&deg; (match cosine below "
        f"{s.get('cos_threshold', '')}), <b>reweighted</b> when it is matched and its singular-value ratio is off 1 by "
        f"more than {s.get('ratio_tol', '')} (or flipped, or rescaled to zero), else <b>stable</b>. Small turns of "
        "every direction make the off-basis share large with no rotated direction: the two answer different "
        "questions.</p>"
        f"<p><b>Intruders</b> (Shuttleworth et al. 2024): tuned directions whose best |cos| with every base write "
        f"direction is below &epsilon; = {s.get('epsilon', '')} (the figure sweeps &epsilon;). Write angles: the largest "
        f"principal angle between the base and tuned write spans of all r directions, and of the top "
        f"{s.get('top_k', '')} directions. Directions whose "
        f"singular values differ by at most {s.get('tie_factor', '')} &times; the head's change (spectral norm) are "
        f"matched as one subspace. <b>Noise floor</b>: storage precision read from the values ({s.get('precision_base', '?')}"
        f" base, per-checkpoint tuned); a head is unchanged when ||dW||<sub>F</sub> &le; max({s.get('change_tol', '')} "
        f"&times; ||W||<sub>F</sub>, {s.get('noise_factor', '')} &times; the expected rounding change "
        "sqrt(2(u<sub>b</sub><sup>2</sup> + u<sub>t</sub><sup>2</sup>)/3 &Sigma;<sub>j</sub>||A<sub>:j</sub>||<sup>2</sup>"
        "||B<sub>j:</sub>||<sup>2</sup>)).</p>")


def report_html(comparisons: list[Comparison], figures: dict[str, str] | None = None, n_heads: int = 10,
                rows: list[dict] | None = None, max_sections: int = 12) -> str:
    """A self-contained HTML page for one base and several tuned checkpoints; figures: {name: <img> html};
    rows: the harness's per-checkpoint rows (failed checkpoints are listed); per-checkpoint sections for the
    first ``max_sections`` checkpoints."""
    from .page import esc, heading, page, table

    figures = figures or {}
    base = comparisons[0].base if comparisons else "?"
    parts = [f"<p>Base checkpoint <code>{esc(base)}</code>, {len(comparisons)} tuned checkpoint(s).</p>",
             definitions_html(comparisons[0].settings if comparisons else {}),
             heading("Summary", "summary", "summary"), _summary_table(comparisons)]
    failed = [r for r in rows or [] if r.get("status") == "failed"]
    if failed:
        parts.append("<h3>Failed checkpoints</h3>")
        parts.append(table(["label", "checkpoint", "error"], [[r["label"], r["spec"], r["error"]] for r in failed]))
    titles = {"checkpoints": "Across checkpoints", "shares": "In-basis and off-basis shares",
              "intruders": "Intruder dimensions", "ratios": "Singular-value ratios", "layers": "Per layer"}
    for name in ("checkpoints", "shares", "intruders", "ratios", "layers"):
        if name in figures:
            parts.append(heading(titles[name], f"fig-{name}", titles[name].lower()) + figures[name])
    if "intruders" not in figures and comparisons:
        parts.append("<p class='muted'>No intruder direction at any epsilon in any checkpoint: no intruder figure.</p>")
    for i, c in enumerate(comparisons[:max_sections]):
        parts.append(heading(c.tuned, f"checkpoint-{i}", f"#{i + 1}: {_short(c.tuned, 24)}")
                     + f"<pre>{esc(c.summary().split(chr(10) + '  per layer:')[0])}</pre>")
        for name in (f"heads_{i}", f"directions_{i}"):
            if name in figures:
                parts.append(figures[name])
        eps = c.settings.get("epsilon", 0.5)
        parts.append("<h3>Per layer</h3>")
        parts.append(_layers_table(c, i))
        parts.append("<h3>Most changed heads</h3>")
        parts.append(table(["head", "rel. change", "in-basis %", "max write angle (deg)",
                            f"top-{c.settings.get('top_k', 8)} write angle (deg)", "# reweighted",
                            "# rotated", "# intruders", "top reweighted (index x ratio)", "top rotated (index, angle)"],
                           _head_rows(c, n_heads), table_id=f"heads-{i}", sortable=True, filter_box=True,
                           name=f"{_short(c.tuned, 30)}, heads"))
        if c.labelled:
            lost, gained = c.rotated_concepts(8)
            fmt = lambda items: ", ".join(f"{x} ({v:+.3f})" for x, v in items) or "-"  # noqa: E731
            parts.append(table(["", "concepts"], [["amplified", fmt(c.amplified_concepts(8))],
                                                  ["suppressed", fmt(c.suppressed_concepts(8))],
                                                  ["rotated away", fmt(lost)], ["rotated in", fmt(gained)]],
                               table_id=f"concepts-{i}", name=f"{_short(c.tuned, 30)}, concepts"))
    return page(f"weightscope compare: {base}", "".join(parts))


def write_report(comparisons: list[Comparison], out_dir: str | Path, png: bool = False, n_heads: int = 10,
                 rows: list[dict] | None = None, max_sections: int = 12) -> dict[str, Path]:
    """Write report.html (figures inlined) and compare.json to ``out_dir``; with png, each figure as a PNG too.

    rows: the harness's summary rows (failed checkpoints are listed). Returns {name: path} of everything written.
    """
    from .page import figure_to_img

    if not comparisons:
        raise WeightscopeError("nothing to report: no comparisons")
    out = Path(out_dir)  # the writer makes the folder when the files are committed, not before
    written: dict[str, Path] = {}
    figs = {"checkpoints": lambda: figure_checkpoints(comparisons), "shares": lambda: figure_shares(comparisons),
            "ratios": lambda: figure_ratios(comparisons), "layers": lambda: figure_layers(comparisons)}
    if any(n for c in comparisons for n in c.intruder_counts(c.settings.get("epsilons") or EPSILONS).values()):
        figs["intruders"] = lambda: figure_intruders(comparisons)
    if not any(c.sigma_ratios().size for c in comparisons):
        del figs["ratios"]
    for i, c in enumerate(comparisons[:max_sections]):
        figs[f"heads_{i}"] = lambda c=c: figure_heads(c)
        figs[f"directions_{i}"] = lambda c=c: figure_directions(c)
    imgs = {}
    for name, make in figs.items():
        fig = make()
        if png:
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
            written[name] = write_atomic(out / f"{name}.png", buf.getvalue())
        imgs[name] = figure_to_img(fig, name)
    written["json"] = out / "compare.json"
    comparisons_to_json(comparisons, written["json"])
    written["html"] = write_atomic(out / "report.html", report_html(comparisons, imgs, n_heads, rows, max_sections))
    return written
