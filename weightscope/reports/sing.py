"""The self-contained HTML report of a SING analysis: dimensions, visibility chart, subspace explanations,
steering scores and the equivalent-images strip (gallery retrieval)."""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from ..core.fileio import write_atomic
from ..analyses.inspection import format_coefficient
from ..analyses.sing.analysis import SingResult
from .page import Markup, esc, figure_to_img, num, page, table


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _visibility_figure(result, n: int = 15, titles: tuple[str, str] = ("most visible (row space)",
                                                                      "least visible (null space)"),
                       xlabel: str = "share of energy in the row space"):
    """Most and least visible concepts (and family means) of a SingResult or ClassifierSingResult."""
    plt = _plt()
    by = result.rank_by
    seen, blind = result.visibility.ranked(n, by=by), result.visibility.ranked(n, blind=True, by=by)
    if by != "visibility":
        titles = ("largest gain (null space empty)", "smallest gain")
    panels = [(titles[0], seen, "#2b7bba"), (titles[1], blind, "#d95f02")]
    if result.families:
        panels.append(("mean per attribute family", sorted(result.families.items(), key=lambda kv: -kv[1]), "#555"))
    # a panel of bars that all read 0.00 shows nothing: it is said in words by visibility_note instead
    panels = [p for p in panels if p[1] and max(abs(v) for _, v in p[1]) >= 0.005] or panels[:1]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 0.26 * n + 1.2))
    for ax, (title, pairs, colour) in zip(np.atleast_1d(axes), panels):
        names = [c for c, _ in pairs][::-1]
        ax.barh(range(len(pairs)), [v for _, v in pairs][::-1], color=colour)
        ax.set_yticks(range(len(pairs)), names, fontsize=7)
        ax.axvline(result.chance_visibility, color="k", ls=":", lw=1)
        # small values (e.g. visibility through a translator) get an axis they can be read on
        ax.set_xlim(0, min(1.0, 1.15 * max([v for _, v in pairs] + [result.chance_visibility, 0.05])))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel if by == "visibility" or "family" in title
                      else "gain |W d| / (s[0] |d|)", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle(f"Concept visibility (dotted: a random direction, {result.chance_visibility:.3f})", fontsize=10)
    fig.tight_layout()
    return fig


def visibility_note(result, n: int = 15, title: str = "least visible (null space)") -> str:
    """HTML saying which ranked concepts all read 0.00 (their panel is left out of the figure); '' when none."""
    blind = result.visibility.ranked(n, blind=True, by=result.rank_by)
    if not blind or max(abs(v) for _, v in blind) >= 0.005:
        return ""
    return (f"<p class='muted'>{esc(title)}: the {len(blind)} lowest concepts all read 0.00 (below 0.005), so no "
            f"panel is drawn for them: {esc(', '.join(c for c, _ in blind))}.</p>")


def _curve_figure(result: SingResult):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.0, 3.0))
    data = np.array([[x if x is not None else np.nan for x in row] for row in result.curve], dtype=float)
    ax.plot(data[:, 0], data[:, 1], label="towards t (max AS)")
    ax.plot(data[:, 0], data[:, 2], label="away from t (min AS)")
    ax.axvline(result.image_score, color="k", ls=":", lw=1)
    ax.axhline(0, color="#999", lw=0.6)
    ax.set_xlabel("image score IS (deg)", fontsize=8)
    ax.set_ylabel("attribute score AS (deg)", fontsize=8)
    ax.set_title(f"Optimal null-space moves, t = {result.main_text!r}", fontsize=9)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def _neighbour_strip(gallery, neighbours: dict, image, labels: tuple[str, str], text: str, title: str):
    """Two rows of gallery images: the nearest to f (after the input image, when there is one) and to f~."""
    plt = _plt()
    k = len(neighbours["f"])
    fig, axes = plt.subplots(2, k + 1, figsize=(1.6 * (k + 1), 5.0), gridspec_kw={"hspace": 0.7})
    for r, which in enumerate(("f", "f_tilde")):
        ax = axes[r, 0]
        if r == 0 and image is not None:
            ax.imshow(image)
            ax.set_title(f"{labels[0]} (input)", fontsize=7)
        else:
            ax.text(0.5, 0.5, f"{labels[r]}:\nsteered\n{text}", ha="center", va="center", fontsize=6,
                    wrap=True)
        for j, (idx, caption, cos) in enumerate(neighbours[which]):
            axes[r, j + 1].imshow(gallery.image(idx))
            axes[r, j + 1].set_title(f"cos {cos:.2f}", fontsize=6)
            axes[r, j + 1].set_xlabel(textwrap.fill(caption, 24), fontsize=6)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
    fig.suptitle(title, fontsize=8)
    return fig


def _strip_figure(result: SingResult):
    return _neighbour_strip(result.gallery, result.neighbours, result.f_image, ("f", "f~"),
                            f"towards\n{result.main_text!r}",
                            "Nearest gallery images to f (top) and to the equivalent f~ (bottom): same logits")


def _fmt(pairs, n: int = 4) -> str:
    """'concept (0.45), ...': a kept coefficient never reads 0.00 (two significant digits below 0.01)."""
    return ", ".join(f"{c} ({format_coefficient(w)})" for c, w in pairs[:n])


def _directions_table(directions) -> str:
    """Bound to sing.json's ``directions`` (same order)."""
    p = "directions/{}/".format
    return table(["space", "#", "weight", "+v", "fid", "-v", "fid"],
                 [[d.space, num(d.index, "d", p(i) + "index"), num(d.weight, ".3g", p(i) + "weight"), _fmt(d.plus),
                   num(d.fidelity_plus, ".2f", p(i) + "fidelity_plus"), _fmt(d.minus),
                   num(d.fidelity_minus, ".2f", p(i) + "fidelity_minus")] for i, d in enumerate(directions)],
                 table_id="directions", sortable=True,
                 filter_box=True, name="row / null directions")


def render_report(result: SingResult) -> str:
    """The HTML page (one self-contained string) of a SING analysis."""
    r = result
    dims = table(["classes", "feature width F", "rank r", "null-space dimension F - r", "relative rank tolerance",
                  "chance visibility r / F"],
                 [[num(len(r.classes), "d", "classes/#len"), num(r.n_features, "d", "n_features"), num(r.rank, "d", "rank"),
                   num(r.null_dim, "d", "null_dim"), num(r.rtol, "g", "rtol"),
                   num(r.chance_visibility, ".3f", "chance_visibility")]])
    spectrum = ", ".join(f"{s:.3g}" for s in r.singular_values[:16])
    body = (f"<p>Model <code>{esc(r.model)}</code>; {len(r.classes)} classes: {esc(', '.join(r.classes[:20]))}"
            f"{' ...' if len(r.classes) > 20 else ''}. Features: {esc(r.feature_space)}. Vocabulary "
            f"<code>{esc(r.vocabulary)}</code>, normalisation <code>{esc(r.normalize)}</code>.</p>"
            "<h2>Null space</h2>" + dims + f"<p class='muted'>Singular values of W: {esc(spectrum)}. Any "
            "f + &Pi;<sub>n</sub>&delta; has the logits of f.</p>")
    body += ("<h2>What the head sees and what it is blind to</h2><p class='muted'>Visibility: the share of a concept's "
             "normalised embedding in the head's row space (1 = fully read by the logits; 0 = entirely in the null "
             "space).</p>" + figure_to_img(_visibility_figure(r), "visibility chart") + visibility_note(r))
    if r.families:
        body += table(["attribute family", "mean visibility"], [[k, num(v, ".3f", f"families/{k}")]
                                                                for k, v in r.families.items()],
                      table_id="families", sortable=True, name="families")
    body += ("<h2>Explanations of the row and null spaces</h2><p class='muted'>Row directions: right singular vectors "
             "of W (weight: singular value). Null directions: leading principal directions of the concepts' null "
             "components (weight: their singular value). Each explained as +v and -v.</p>"
             + _directions_table(r.directions))
    p = "steering/{}/".format
    srows = [[s.text, num(s.angle_f_t, ".1f", p(i) + "angle_f_t"), num(s.as_towards, "+.2f", p(i) + "as_towards", na="-"),
              num(s.as_away, "+.2f", p(i) + "as_away", na="-"), num(s.abs_as, ".2f", p(i) + "abs_as", na="-"),
              Markup(f"{num(s.max_is_towards, '.1f', p(i) + 'max_is_towards')} / "
                     f"{num(s.max_is_away, '.1f', p(i) + 'max_is_away')}")] for i, s in enumerate(r.steering)]
    body += (f"<h2>Steering inside the null space</h2><p>f = {esc(r.feature)}. At IS = {r.image_score:g} deg "
             f"(closed form; logits of f~ equal those of f to {r.logit_change:.1e} relative):</p>"
             + table(["text t", "angle(f, t)", "AS towards", "AS away", "|AS|", "largest IS towards / away"], srows,
                     table_id="steering", sortable=True, name="steering"))
    if r.curve:
        body += figure_to_img(_curve_figure(r), "AS versus IS")
    if r.leakage and r.leakage.get("mean_abs_as") is not None:
        lk = r.leakage
        body += (f"<p>Leakage (SING's statistic): mean |AS| at IS = {lk['image_score']:g} deg over "
                 f"{lk['n_reachable']} of {lk['n_images']} gallery images, steering towards / away from 'an image of a "
                 f"&lt;predicted class&gt;': <b>{lk['mean_abs_as']:.2f} deg</b> (median {lk['median_abs_as']:.2f}). "
                 "SING's demo flags |AS| &gt; 4 deg as substantial.</p>")
    if r.neighbours and r.gallery is not None:
        body += "<h2>Equivalent images (retrieval)</h2>" + figure_to_img(_strip_figure(r), "equivalent images")
    return page(f"weightscope SING: {r.model}", body)


def write_report(result: SingResult, path: str | Path) -> Path:
    """Write the HTML report of ``result`` to ``path`` (atomically); returns the path."""
    return write_atomic(path, render_report(result))


def render_head_page(summary: dict) -> str:
    """A short page for a plain classifier head (no joint space, so no semantics): dimensions and spectrum.

    summary: the dict ``weightscope sing --head`` writes (source, n_classes, n_features, rank, null_dim, rtol,
    singular_values)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 2.6))
    s = np.asarray(summary["singular_values"])
    ax.semilogy(np.arange(len(s)), np.maximum(s, 1e-300), marker=".")
    ax.axhline(summary["rtol"] * s[0], color="k", ls=":", lw=1, label="rank tolerance")
    ax.set_xlabel("index", fontsize=8)
    ax.set_ylabel("singular value", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    dims = table(["classes", "feature width F", "rank r", "null-space dimension", "relative rank tolerance"],
                 [[summary["n_classes"], summary["n_features"], summary["rank"], summary["null_dim"],
                   f"{summary['rtol']:g}"]])
    body = (f"<p>Head <code>{esc(summary['source'])}</code> ({esc(summary['feature_space'])}). Its features are not "
            "in a vision-language space, so only the geometry is reported.</p>" + dims
            + figure_to_img(fig, "singular values"))
    return page(f"weightscope SING: {summary['source']}", body)


# ----------------------------------------------------------------------------------- SING through a translator

def _family_columns(stats) -> tuple[list[str], list[list[int]]]:
    """Family names and the text columns of each (one column per text when there are no families)."""
    if stats.families:
        names = list(stats.families)
        return names, [[stats.texts.index(t) for t in stats.families[f]] for f in names]
    return list(stats.texts), [[j] for j in range(len(stats.texts))]


def _leakage_figure(result):
    """Left: mean |AS| at the IS per family, SING's gradient path vs the optimum. Right: its distribution."""
    import matplotlib

    from ..analyses.sing.statistics import SING_AS_THRESHOLD_DEG

    plt = _plt()
    st, opt = result.statistics, result.optimal
    names, cols = _family_columns(st)
    a = st.abs_as
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.32 * len(names) + 1.6))
    y = np.arange(len(names))[::-1]
    grad = [np.nanmean(a[:, c]) for c in cols]
    axes[0].barh(y + 0.2, grad, height=0.4, color="#2b7bba", label="SING's gradient path")
    if opt is not None:
        axes[0].barh(y - 0.2, [np.nanmean(opt.abs_as[:, c]) for c in cols], height=0.4, color="#bbb",
                     label="optimal path (supremum)")
    axes[0].axvline(SING_AS_THRESHOLD_DEG, color="#d95f02", ls=":", lw=1,
                    label=f"SING demo threshold {SING_AS_THRESHOLD_DEG:g} deg")
    axes[0].set_yticks(y, names, fontsize=7)
    axes[0].set_xlabel(f"mean |AS| at IS = {result.image_score:g} deg", fontsize=8)
    axes[0].legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.25 - 0.6 / len(names)), ncol=3,
                   frameon=False)
    data = [a[:, c].ravel() for c in cols]
    # matplotlib 3.10 renamed vert=False to orientation="horizontal" (and deprecated the old spelling)
    sideways = ({"orientation": "horizontal"} if tuple(int(x) for x in matplotlib.__version__.split(".")[:2]) >= (3, 10)
                else {"vert": False})
    axes[1].boxplot([d[np.isfinite(d)] if np.isfinite(d).any() else [np.nan] for d in data][::-1], widths=0.6,
                    flierprops={"markersize": 2}, **sideways)
    axes[1].set_yticks(np.arange(1, len(names) + 1), names[::-1], fontsize=7)
    axes[1].set_xlabel("|AS| per image and text (deg), gradient path", fontsize=8)
    for ax in axes:
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle(f"How far each attribute's texts move inside the null space at IS = {result.image_score:g} deg",
                 fontsize=9)
    fig.tight_layout()
    return fig


def _class_figure(result):
    """Mean |AS| per predicted class x family (gradient path)."""
    plt = _plt()
    st = result.statistics
    names, cols = _family_columns(st)
    per_class = st.per_class()
    grid = np.array([[np.nanmean(row[c]) if np.isfinite(row[c]).any() else np.nan for c in cols] for row in per_class])
    fig, ax = plt.subplots(figsize=(0.6 * len(names) + 2.5, 0.3 * len(st.class_names) + 1.5))
    im = ax.imshow(grid, cmap="viridis", aspect="auto", vmin=0, vmax=max(1.0, float(np.nanmax(grid))))
    ax.set_xticks(range(len(names)), names, fontsize=7, rotation=45, ha="right")
    ax.set_yticks(range(len(st.class_names)), st.class_names, fontsize=7)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            if np.isfinite(grid[i, j]):
                dark = grid[i, j] < 0.6 * im.norm.vmax        # white on the dark end of viridis, black on the light
                ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", fontsize=6, color="w" if dark else "k")
    fig.colorbar(im, ax=ax, label="mean |AS| (deg)")
    ax.set_title("Mean |AS| per predicted class (SING's path)", fontsize=9)
    fig.tight_layout()
    return fig


def _classifier_strip(result):
    ex = result.example
    return _neighbour_strip(result.gallery, ex["neighbours"], result.example_image, ("f", "T(f~)"),
                            f"{ex.get('direction', 'towards')}\n{ex['text']!r}",
                            "Nearest gallery images to T(f) (top) and T(f~) (bottom): f and f~ have the same logits")


def _num(x, fmt: str = ".2f") -> str:
    return "-" if x is None or not np.isfinite(x) else format(x, fmt)


def _bound(x, path: str, fmt: str = ".2f"):
    """A statistic bound to its place in sing.json ('-' when it is missing or not finite)."""
    return num(None if x is None or not np.isfinite(x) else float(x), fmt, path, na="-")


def _share(x, path: str):
    """A share in whole per cent, bound to sing.json."""
    return Markup(f"{num(float(x), '.0f', path, scale=100)}%") if x is not None and np.isfinite(x) else "-"


def write_classifier_report(result, path: str | Path) -> Path:
    """Write the HTML report of a ``sing.classifier_analysis`` result to ``path`` (atomically); returns the path."""
    return write_atomic(path, render_classifier_report(result))


def render_classifier_report(result) -> str:
    """The HTML page of ``sing.classifier_analysis``: null space, translator fit, statistics, equivalent images."""
    from ..analyses.sing.statistics import SING_AS_THRESHOLD_DEG, SING_IS_THRESHOLD_DEG

    r, st = result, result.statistics
    fit = r.translator.get("report")
    body = (f"<p>Classifier <code>{esc(r.classifier)}</code> ({len(r.class_names)} classes: "
            f"{esc(', '.join(r.class_names[:20]))}{' ...' if len(r.class_names) > 20 else ''}), read in the image "
            f"space of <code>{esc(r.clip_model)}</code> through a translator T. Images: {esc(r.images)}, "
            f"{r.n_images}" + (f"; classifier accuracy on them {r.accuracy:.1%}" if r.accuracy is not None else "")
            + f". Classifier input: {r.preprocessing.get('image_size')} px, mean {r.preprocessing.get('mean')}, std "
            f"{r.preprocessing.get('std')} ({esc(r.classifier_source)}).</p>"
            + "".join(f"<p><b>Note:</b> {esc(w)}.</p>" for w in r.warnings))
    reach = "every direction" if st.image_dim == r.n_embed else (f"{st.image_dim}-d" if st.image_dim is not None
                                                                  else "(MLP: not a subspace)")
    body += ("<h2>Null space</h2>" + table(
        ["feature width F", "rank r", "null-space dimension", "CLIP width E", "T(null space) in E"],
        [[num(r.n_features, "d", "n_features"), num(r.rank, "d", "rank"), num(r.null_dim, "d", "null_dim"),
          num(r.n_embed, "d", "n_embed"), Markup(f"<span data-text>{esc(reach)}</span>")]])
        + f"<p class='muted'>Singular values of the head: {esc(', '.join(f'{s:.3g}' for s in r.singular_values[:16]))}"
        ". Any f + &Pi;<sub>n</sub>&delta; has the logits of f.</p>")
    body += (f"<h2>Translator</h2><p>{esc(r.translator['kind'])}, {esc(r.translator['source'])}.</p>")
    if fit:
        body += table(["kind", "train / held-out pairs", "ridge penalty (CV)", "held-out mean cosine", "held-out R^2"],
                      [[fit["kind"], Markup(f"{num(fit['n_train'], 'd', 'translator/report/n_train')} / "
                                            f"{num(fit['n_test'], 'd', 'translator/report/n_test')}"),
                        num(fit["alpha"], ".3g", "translator/report/alpha", na="-"),
                        num(fit["mean_cosine"], ".3f", "translator/report/mean_cosine"),
                        num(fit["r2"], ".3f", "translator/report/r2")]])
    if r.visibility is not None:
        body += (f"<h2>What the classifier sees through T</h2><p class='muted'>In the CLIP space, null moves reach "
                 f"T(null space) ({r.n_embed - r.seen_dim}-d); the {r.seen_dim}-d complement only moves when the "
                 "logits do. Visibility: the share of a concept's normalised embedding in that complement (1: the "
                 "classifier's logits must change for T(f) to move along it; 0: it moves freely inside the "
                 f"equivalence class). Vocabulary <code>{esc(r.vocabulary)}</code>.</p>"
                 + figure_to_img(_visibility_figure(r, titles=("most fixed by the logits", "most free in the null "
                                                               "space"), xlabel="share outside T(null space)"),
                                 "visibility through T") + visibility_note(r, title="most free in the null space"))
        if r.directions:
            body += ("<p class='muted'>Leading principal directions of the concepts' components in each part, "
                     "explained with COMP as +v and -v (weight: their singular value).</p>"
                     + _directions_table(r.directions))
    elif r.translator["kind"] == "mlp":
        body += "<p class='muted'>An MLP translator maps the null space onto a curved set, not a subspace: " \
                "no visibility or subspace explanations; the statistics below still apply.</p>"
    o = st.overall()
    body += (f"<h2>Statistics</h2><p>Image score IS = angle(T(f), T(f~)), attribute score AS = angle(T(f), t) - "
             f"angle(T(f~), t), in degrees. Steered: |AS| at IS = {r.image_score:g} deg, the larger of steering "
             "towards and away from t, along SING's path (the null-space-projected gradient of cos(T(f~), t)) and, "
             "for a linear T, along the optimal path (the largest |AS| any equivalent feature reaches at that IS). "
             "f<sub>row</sub>: f with its null component removed (what the head sees), SING's released-code "
             f"equivalent. SING's demo calls IS &gt; {SING_IS_THRESHOLD_DEG:g} deg or |AS| &gt; "
             f"{SING_AS_THRESHOLD_DEG:g} deg substantial; those thresholds are its authors', shown for reference.</p>"
             f"<p>Over all {o['n_images']} images x {o['n_texts']} texts: mean |AS| {_num(o['mean_abs_as'])} deg "
             f"(reached {o['share_reachable']:.0%}); f<sub>row</sub>: mean IS {_num(o['mean_is_row'])} deg, mean |AS| "
             f"{_num(o['mean_abs_as_row'])} deg.</p>")
    reached = bool(np.isfinite(st.abs_as).any())      # no figures of nothing (e.g. an empty null space)
    if reached:
        body += figure_to_img(_leakage_figure(r), "leakage per family")
    fams, ofams = st.per_family(), (r.optimal.per_family() if r.optimal is not None else {})
    if fams:
        sf, of = "statistics/per_family/{}/".format, "optimal/per_family/{}/".format
        body += table(["family", "texts", "mean |AS| (gradient)", "mean |AS| (optimal)", "mean AS of f_row",
                       "flagged (f_row, SING thresholds)"],
                      [[k, num(v["n_texts"], "d", sf(k) + "n_texts"), _bound(v["mean_abs_as"], sf(k) + "mean_abs_as"),
                        _bound(ofams.get(k, {}).get("mean_abs_as"), of(k) + "mean_abs_as"),
                        _bound(v["mean_as_row"], sf(k) + "mean_as_row"), _share(v["flagged_share"], sf(k) + "flagged_share")]
                       for k, v in fams.items()], table_id="families", sortable=True, name="families")
    texts = st.per_text()  # sing.json's order; shown largest movement first
    order = sorted(range(len(texts)), key=lambda j: -(texts[j]["mean_abs_as"] if np.isfinite(texts[j]["mean_abs_as"]) else -1))
    pt = "statistics/per_text/{}/".format
    body += ("<h3>Per text (largest movement first)</h3>" + table(
        ["text", "mean |AS|", "median |AS|", "reached", "mean AS of f_row", "flagged"],
        [[texts[j]["text"], _bound(texts[j]["mean_abs_as"], pt(j) + "mean_abs_as"),
          _bound(texts[j]["median_abs_as"], pt(j) + "median_abs_as"), _share(texts[j]["share_reachable"], pt(j) + "share_reachable"),
          _bound(texts[j]["mean_as_row"], pt(j) + "mean_as_row"), _share(texts[j]["flagged_share"], pt(j) + "flagged_share")]
         for j in order], table_id="per-text", sortable=True, filter_box=True, name="texts"))
    if reached:
        body += figure_to_img(_class_figure(r), "per class")
    cl = r.class_leakage
    if cl["mean_abs_as"] is not None:
        body += (f"<p>Class leakage (SING's statistic): mean |AS| at IS = {r.image_score:g} deg towards / away from "
                 f"'an image of a &lt;predicted class&gt;' <b>{cl['mean_abs_as']:.2f} deg</b> (median "
                 f"{cl['median_abs_as']:.2f}) over {cl['n_reachable']} of {cl['n_images']} images.</p>")
    ex = r.example
    if ex:
        body += (f"<h2>Equivalent images (retrieval)</h2><p>Image 0 steered {esc(ex.get('direction', 'towards'))} "
                 f"{esc(repr(ex['text']))}: IS "
                 f"{ex['image_score']:.1f} deg, AS {ex['attribute_score']:+.2f} deg; logits unchanged to "
                 f"{ex['logit_change']:.1e} relative (prediction {esc(ex['prediction'])}"
                 f"{' kept' if ex['prediction_kept'] else ' CHANGED'}).</p>")
        if ex.get("neighbours") and r.gallery is not None:
            body += figure_to_img(_classifier_strip(r), "equivalent images")
    return page(f"weightscope SING: {r.classifier} through {r.clip_model}", body)
