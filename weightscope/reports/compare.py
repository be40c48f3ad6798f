"""Reports of checkpoint comparisons: figures (matplotlib), a text table and a self-contained HTML page."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..compare import KINDS, Comparison, comparisons_to_json
from ..errors import WeightscopeError
from ..fileio import write_atomic

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
    """Stacked bars: share of the change energy that is reweighting vs rotation, one bar per tuned checkpoint."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.45 * len(comparisons)))
    names = [_short(c.tuned) for c in comparisons]
    rew = np.array([100 * c.reweight_share for c in comparisons])
    rot = np.array([100 * c.rotation_share for c in comparisons])
    y = np.arange(len(comparisons))
    ax.barh(y, rew, color=KIND_COLOURS["reweighted"], label="reweighting")
    ax.barh(y, rot, left=rew, color=KIND_COLOURS["rotated"], label="rotation")
    for yi, c in zip(y, comparisons):
        ax.text(101, yi, f"rel. change {c.rel_change:.3g}", va="center", fontsize=8)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlim(0, 130)
    ax.set_xlabel("share of ||W_tuned - W_base||_F^2 over all heads (%)")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("How the attention heads changed")
    return fig


def figure_heads(comparison: Comparison):
    """Two layer x head maps: relative change, and the reweighting share of each changed head."""
    plt = _plt()
    layers = comparison.layers
    n_heads = 1 + max(h for _, h in comparison.heads)
    rel = np.full((len(layers), n_heads), np.nan)
    share = np.full((len(layers), n_heads), np.nan)
    for (l, h), hc in comparison.heads.items():
        rel[layers.index(l), h] = hc.rel_change
        if hc.changed:
            share[layers.index(l), h] = 100 * hc.reweight_share
    fig, axes = plt.subplots(1, 2, figsize=(min(4 + 0.5 * n_heads, 16), 1.8 + 0.3 * len(layers)), layout="constrained")
    for ax, data, title, cmap, vmax in ((axes[0], rel, "relative change ||dW|| / ||W||", "viridis", None),
                                        (axes[1], share, "reweighting share (%)", "coolwarm_r", 100)):
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
        pts = [(abs(d.cos), math.log2(max(abs(d.ratio), 1e-6)), d.s_base / max(comparison[l, h].norm_base, 1e-300))
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


def figure_layers(comparisons: list[Comparison]):
    """Per layer: change energy (log scale) and its reweighting share, one line per tuned checkpoint."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for c in comparisons:
        rows = c.layer_summary()
        x = [r["layer"] for r in rows]
        axes[0].plot(x, [max(r["energy_total"], 1e-30) for r in rows], marker="o", label=_short(c.tuned, 30))
        axes[1].plot(x, [100 * r["reweight_share"] for r in rows], marker="o", label=_short(c.tuned, 30))
    axes[0].set_yscale("log")
    axes[0].set_title("change energy per layer", fontsize=9)
    axes[1].set_title("reweighting share per layer (%)", fontsize=9)
    axes[1].set_ylim(-2, 102)
    for ax in axes:
        ax.set_xlabel("layer")
    axes[1].legend(fontsize=7)
    return fig


def comparison_rows(comparisons: list[Comparison], n_concepts: int = 3) -> tuple[list[str], list[list]]:
    """(header, rows) of the one-line-per-checkpoint table used on stdout and in the HTML report."""
    header = ["tuned checkpoint", "rel. change", "reweighting %", "rotation %", "chance reweighting %",
              "mean match cos", "stable", "reweighted", "rotated", "most changed heads", "amplified", "suppressed"]
    rows = []
    for c in comparisons:
        k = c.counts()
        heads = ", ".join(f"L{h.layer}H{h.head}" for h in c.top_heads(3)) or "-"
        amp = ", ".join(x for x, _ in c.amplified_concepts(n_concepts)) if c.labelled else "(no labels)"
        sup = ", ".join(x for x, _ in c.suppressed_concepts(n_concepts)) if c.labelled else "(no labels)"
        rows.append([c.tuned, f"{c.rel_change:.4f}", f"{100 * c.reweight_share:.1f}", f"{100 * c.rotation_share:.1f}",
                     f"{100 * c.chance_reweight_share:.2f}", f"{c.mean_match_cos:.3f}", k["stable"], k["reweighted"], k["rotated"], heads, amp or "-", sup or "-"])
    return header, rows


def text_table(header: list[str], rows: list[list]) -> str:
    """A plain fixed-width table."""
    cells = [[str(x) for x in header]] + [[str(x) for x in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    fmt = lambda r: "  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(cells[0]), fmt(["-" * w for w in widths])] + [fmt(r) for r in cells[1:]])


def _head_rows(c: Comparison, n: int) -> list[list]:
    rows = []
    for hc in c.top_heads(n):
        rot = hc.of_kind("rotated")
        rew = sorted(hc.of_kind("reweighted"), key=lambda d: -abs(math.log(max(abs(d.ratio), 1e-12))))
        lab = lambda d, which: ", ".join(x for x, _ in getattr(d, which)[:2])  # noqa: E731
        rot_txt = "; ".join(f"{d.index} (cos {abs(d.cos):.2f}){': ' + lab(d, 'base_concepts') + ' -> ' + lab(d, 'tuned_concepts') if c.labelled else ''}"
                            for d in rot[:3]) or "-"
        rew_txt = "; ".join(f"{d.index} x{d.ratio:.2f}{': ' + lab(d, 'base_concepts') if c.labelled else ''}"
                            for d in rew[:3]) or "-"
        rows.append([f"L{hc.layer} H{hc.head}", f"{hc.rel_change:.4f}", f"{100 * hc.reweight_share:.0f}",
                     f"{hc.angle_write:.1f}", len(rew), len(rot), rew_txt, rot_txt])
    return rows


def report_html(comparisons: list[Comparison], figures: dict[str, str] | None = None, n_heads: int = 10) -> str:
    """A self-contained HTML page for one base and several tuned checkpoints; figures: {name: <img> html}."""
    from .page import esc, page, table

    figures = figures or {}
    base = comparisons[0].base if comparisons else "?"
    s = comparisons[0].settings if comparisons else {}
    parts = [
        f"<p>Base checkpoint <code>{esc(base)}</code>, {len(comparisons)} tuned checkpoint(s). Each head's change "
        f"||W_tuned - W_base||<sub>F</sub><sup>2</sup> (value-output matrix) is split exactly into <b>reweighting</b> "
        f"(rescaling base singular directions matched with match cosine |(u.u')(v.v')| &ge; {s.get('cos_threshold', '')}) "
        f"and <b>rotation</b> (everything else). Directions whose singular values differ by at most "
        f"{s.get('tie_factor', '')} &times; the head's change (spectral norm) are matched as one subspace. Heads with "
        f"relative change &le; {s.get('change_tol', '')} count as unchanged. A random change of the head factors would "
        f"put 1/(2D - r) of its energy on reweighting (the <i>chance</i> column).</p>",
        "<h2>Summary</h2>", table(*comparison_rows(comparisons)),
    ]
    for name in ("shares", "layers"):
        if name in figures:
            parts.append(figures[name])
    for i, c in enumerate(comparisons):
        parts.append(f"<h2>{esc(c.tuned)}</h2><pre>{esc(c.summary())}</pre>")
        for name in (f"heads_{i}", f"directions_{i}"):
            if name in figures:
                parts.append(figures[name])
        parts.append("<h3>Per layer</h3>")
        parts.append(table(["layer", "changed heads", "mean rel. change", "reweighting %", "rotation %",
                            "reweighted dirs", "rotated dirs"],
                           [[r["layer"], f"{r['changed_heads']}/{r['heads']}", f"{r['mean_rel_change']:.4f}",
                             f"{100 * r['reweight_share']:.1f}", f"{100 * r['rotation_share']:.1f}", r["reweighted"],
                             r["rotated"]] for r in c.layer_summary()]))
        parts.append("<h3>Most changed heads</h3>")
        parts.append(table(["head", "rel. change", "reweighting %", "max write angle (deg)", "# reweighted",
                            "# rotated", "top reweighted (index x ratio)", "top rotated (index, match cos)"],
                           _head_rows(c, n_heads)))
        if c.labelled:
            lost, gained = c.rotated_concepts(8)
            fmt = lambda items: ", ".join(f"{x} ({v:+.3f})" for x, v in items) or "-"  # noqa: E731
            parts.append(table(["", "concepts"], [["amplified", fmt(c.amplified_concepts(8))],
                                                  ["suppressed", fmt(c.suppressed_concepts(8))],
                                                  ["rotated away", fmt(lost)], ["rotated in", fmt(gained)]]))
    return page(f"weightscope compare: {base}", "".join(parts))


def write_report(comparisons: list[Comparison], out_dir: str | Path, png: bool = False, n_heads: int = 10) -> dict[str, Path]:
    """Write report.html (figures inlined) and compare.json to ``out_dir``; with png, each figure as a PNG too.

    Returns {name: path} of everything written.
    """
    from .page import figure_to_img

    if not comparisons:
        raise WeightscopeError("nothing to report: no comparisons")
    out = Path(out_dir)  # the writer makes the folder when the files are committed, not before
    written: dict[str, Path] = {}
    figs = {"shares": lambda: figure_shares(comparisons), "layers": lambda: figure_layers(comparisons)}
    for i, c in enumerate(comparisons):
        figs[f"heads_{i}"] = lambda c=c: figure_heads(c)
        figs[f"directions_{i}"] = lambda c=c: figure_directions(c)
    imgs = {}
    for name, make in figs.items():
        fig = make()
        if png:
            import io

            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
            written[name] = write_atomic(out / f"{name}.png", buf.getvalue())
        imgs[name] = figure_to_img(fig, name)
    written["json"] = out / "compare.json"
    comparisons_to_json(comparisons, written["json"])
    written["html"] = write_atomic(out / "report.html", report_html(comparisons, imgs, n_heads))
    return written
