"""SING's multi-image statistics: which attribute texts move when a classifier's features move in its null space.

Source: SING (METHODS.md section 8), "multi-image statistical evaluation". For n images (features f, (n, F)) and
m texts (embeddings t, (m, E)), through a translator T, in degrees:

(a) the released code's equivalent feature f_row = f - Pi_n f (what the head sees): IS_row = angle(T(f), T(f_row))
    per image and AS_row = angle(T(f), t) - angle(T(f_row), t) per image and text;
(b) the steered |AS| at a fixed IS (SING: 40 deg): the larger |AS| of steering towards and away from t, along the
    optimal path (closed form, affine T) or SING's gradient path (:mod:`.steering`); NaN where neither reaches it.

Aggregates (:class:`AttributeStatistics`): per text, per attribute family (mean over its texts), per predicted class
x text, per model; a leakage ranking by mean |AS| at the fixed IS; SING's demo flags (IS_row > 12 deg or |AS_row| >
4 deg, strict). Means skip NaN (unreachable) entries.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field

import numpy as np

from ...core import linalg
from ...core.errors import WeightscopeError
from ...models.linear_heads import LinearHead
from .geometry import HeadGeometry, steer
from .steering import gradient_flow, translated_geometry
from .translator import FitReport, Translator, check_widths

#: SING's demo thresholds ("substantial" leakage per its authors), not ours: IS of f_row above 12 deg ...
SING_IS_THRESHOLD_DEG = 12.0
#: ... or |AS| of f_row above 4 deg. Both strict: a value exactly at the threshold is not flagged.
SING_AS_THRESHOLD_DEG = 4.0
PATHS = ("gradient", "optimal")
_BLOCK_FLOATS = 1 << 23         # floats per block of images (64 MiB of float64)


def _nanmean(x, axis=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)        # all-NaN slices: NaN is the honest answer
        return np.nanmean(x, axis=axis)


def _nanmedian(x, axis=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(x, axis=axis)


def _round(x):
    """JSON-ready: floats rounded to 6 digits, NaN -> None, arrays -> lists."""
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_round(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return None if not np.isfinite(x) else round(float(x), 6)
    if isinstance(x, np.integer):
        return int(x)
    return x


def flag_shares(is_row: np.ndarray, as_row: np.ndarray) -> np.ndarray:
    """Per text (m,): share of images whose f_row has IS > SING_IS_THRESHOLD_DEG or |AS| > SING_AS_THRESHOLD_DEG.

    is_row: (n,), as_row: (n, m), degrees; NaN never flags."""
    flagged = (is_row[:, None] > SING_IS_THRESHOLD_DEG) | (np.abs(as_row) > SING_AS_THRESHOLD_DEG)
    return flagged.mean(axis=0)


@dataclass
class AttributeStatistics:
    """Per-image, per-text scores of a classifier's null space through T, and their aggregates (degrees).

    texts: m texts; class_names: the head's C classes; families: name -> texts (each in ``texts``); image_score: the
    fixed IS of the steered scores; path: "gradient" or "optimal"; predicted: (n,) argmax of the head's logits;
    is_row: (n,) IS of f_row; as_row: (n, m) AS of f_row; as_towards / as_away: (n, m) AS steered towards / away
    from each text at ``image_score`` (NaN: not reached); null_dim: the head's null space dimension; image_dim:
    dim of T(null space) in E (affine T; None for an MLP), equal to E when every direction is reachable;
    translator: T's fit report, if any.
    """

    texts: list[str]
    class_names: tuple[str, ...]
    families: dict[str, list[str]]
    image_score: float
    path: str
    predicted: np.ndarray
    is_row: np.ndarray
    as_row: np.ndarray
    as_towards: np.ndarray
    as_away: np.ndarray
    null_dim: int
    image_dim: int | None
    out_width: int
    translator: FitReport | None = None
    timing_s: float | None = field(default=None, compare=False)

    @property
    def abs_as(self) -> np.ndarray:
        """(n, m) |AS| at the fixed IS: the larger of |towards| and |away|; NaN where neither is reached."""
        return np.fmax(np.abs(self.as_towards), np.abs(self.as_away))

    @property
    def reachable(self) -> np.ndarray:
        """(n, m) whether at least one direction reaches the fixed IS."""
        return np.isfinite(self.abs_as)

    def per_text(self) -> list[dict]:
        """One dict per text: mean / median |AS| at the IS, share reachable, mean AS_row, flagged share (SING)."""
        a = self.abs_as
        mean, med, share = _nanmean(a, 0), _nanmedian(a, 0), self.reachable.mean(0)
        mean_row, flags = _nanmean(self.as_row, 0), flag_shares(self.is_row, self.as_row)
        return [{"text": t, "mean_abs_as": mean[j], "median_abs_as": med[j], "share_reachable": share[j],
                 "mean_as_row": mean_row[j], "mean_is_row": _nanmean(self.is_row), "flagged_share": flags[j]}
                for j, t in enumerate(self.texts)]

    def per_family(self) -> dict[str, dict]:
        """Per family: the mean over its texts of each text's mean |AS|, mean AS_row and flagged share."""
        rows = {r["text"]: r for r in self.per_text()}
        out = {}
        for name, members in self.families.items():
            out[name] = {k: _nanmean(np.array([rows[t][k] for t in members], dtype=float))
                         for k in ("mean_abs_as", "mean_as_row", "flagged_share")}
            out[name]["n_texts"] = len(members)
        return out

    def per_class(self) -> np.ndarray:
        """(C, m): mean |AS| at the IS over the images predicted as each class (NaN for a class never predicted)."""
        a = self.abs_as
        out = np.full((len(self.class_names), len(self.texts)), np.nan)
        for c in range(len(self.class_names)):
            rows = self.predicted == c
            if rows.any():
                out[c] = _nanmean(a[rows], 0)
        return out

    def overall(self) -> dict:
        """Per model: mean / median |AS| over all (image, text) pairs reached, share reached, mean IS_row and
        |AS_row|, flagged share over all pairs."""
        a = self.abs_as
        return {"n_images": int(a.shape[0]), "n_texts": int(a.shape[1]), "mean_abs_as": _nanmean(a),
                "median_abs_as": _nanmedian(a), "share_reachable": float(self.reachable.mean()),
                "mean_is_row": _nanmean(self.is_row), "mean_abs_as_row": _nanmean(np.abs(self.as_row)),
                "flagged_share": float(flag_shares(self.is_row, self.as_row).mean())}

    def leakage(self) -> dict:
        """Texts and families ranked by mean |AS| at the fixed IS, largest first (NaN last; ties by name)."""
        def rank(pairs):
            return sorted(pairs, key=lambda p: (not np.isfinite(p[1]), -p[1] if np.isfinite(p[1]) else 0.0, p[0]))
        texts = rank([(r["text"], float(r["mean_abs_as"])) for r in self.per_text()])
        fams = rank([(k, float(v["mean_abs_as"])) for k, v in self.per_family().items()])
        return {"image_score": self.image_score, "texts": texts, "families": fams}

    def to_dict(self, arrays: bool = False) -> dict:
        """JSON-ready (floats to 6 digits, NaN -> None); ``arrays`` adds the (n, m) distributions."""
        per_class = self.per_class()
        d = {"format": "weightscope-sing-statistics/1", "image_score": self.image_score, "path": self.path,
             "null_dim": self.null_dim, "image_dim": self.image_dim, "out_width": self.out_width,
             "thresholds": {"is_deg": SING_IS_THRESHOLD_DEG, "as_deg": SING_AS_THRESHOLD_DEG, "source": "SING demo"},
             "translator": None if self.translator is None else asdict(self.translator),
             "overall": self.overall(), "per_text": self.per_text(), "per_family": self.per_family(),
             "per_class": {c: dict(zip(self.texts, per_class[i])) for i, c in enumerate(self.class_names)},
             "predicted_counts": {c: int(np.sum(self.predicted == i)) for i, c in enumerate(self.class_names)},
             "leakage": self.leakage(), "timing_s": self.timing_s}
        if arrays:
            d["arrays"] = {"predicted": self.predicted.tolist(), "is_row": self.is_row, "as_row": self.as_row,
                           "as_towards": self.as_towards, "as_away": self.as_away}
        return _round(d)

    def summary(self, n: int = 8) -> str:
        o = self.overall()
        fmt = lambda v: "n/a" if not np.isfinite(v) else f"{v:.2f}"  # noqa: E731
        where = ("every direction of E is reachable" if self.image_dim == self.out_width
                 else f"{self.image_dim}-d of E={self.out_width}" if self.image_dim is not None else "MLP translator")
        lines = [f"{o['n_images']} images x {o['n_texts']} texts, {self.path} path, null space {self.null_dim}-d "
                 f"({where}): mean |AS| at IS = {self.image_score:g} deg {fmt(o['mean_abs_as'])} "
                 f"(median {fmt(o['median_abs_as'])}, reached {o['share_reachable']:.0%})",
                 f"f_row (head's view): mean IS {fmt(o['mean_is_row'])} deg, "
                 f"mean |AS| {fmt(o['mean_abs_as_row'])} deg; "
                 f"SING's demo flags (IS > {SING_IS_THRESHOLD_DEG:g} or |AS| > {SING_AS_THRESHOLD_DEG:g} deg): "
                 f"{o['flagged_share']:.0%} of image-text pairs"]
        leak = self.leakage()
        lines.append("moves most: " + ", ".join(f"{t} {fmt(v)}" for t, v in leak["texts"][:n]))
        if leak["families"]:
            lines.append("families: " + ", ".join(f"{t} {fmt(v)}" for t, v in leak["families"]))
        return "\n".join(lines)


def _optimal_as(egeom: HeadGeometry, E: np.ndarray, Tt: np.ndarray, image_score: float, direction: int) -> np.ndarray:
    """AS (n, m) of part 1's closed form (:func:`.geometry.steer`) on the E-space geometry, for all images E (n, E)
    and texts Tt (m, E) at once; NaN where out of reach. Pairs where the closed form is degenerate (t's part in
    reach parallel to T(f)) go through ``steer`` itself, so the result is steer's on every pair."""
    n, m = E.shape[0], Tt.shape[0]
    if egeom.null_dim == 0:
        return np.full((n, m), 0.0 if image_score == 0 else np.nan)
    S = egeom.null
    a = linalg.split_components(E, S)[1]                         # fixed part (n, E)
    ne, na = np.linalg.norm(E, axis=1), np.linalg.norm(a, axis=1)
    h = E / ne[:, None]
    has_a = na > 1e-12 * ne
    a_hat = np.where(has_a[:, None], a / np.where(has_a, na, 1.0)[:, None], 0.0)
    t_null = linalg.project_onto(Tt, S)                          # (m, E)
    g = (a_hat @ Tt.T)[:, :, None] * a_hat[:, None, :] + t_null[None]          # (n, m, E)
    g_perp = g - np.einsum("nme,ne->nm", g, h)[:, :, None] * h[:, None, :]
    norm_gp = np.linalg.norm(g_perp, axis=2)
    degenerate = norm_gp <= 1e-12 * np.maximum(np.linalg.norm(Tt, axis=1), 1.0)[None]
    w = direction * g_perp / np.where(degenerate, 1.0, norm_gp)[:, :, None]
    B = np.einsum("nme,ne->nm", w, a_hat)
    A = (na / ne)[:, None]
    theta = np.radians(image_score)
    max_is = np.where(has_a[:, None], np.degrees(np.arctan2(A, -B)), 180.0)
    ok = ~has_a[:, None] | ((image_score < max_is) & (np.cos(theta) * A + np.sin(theta) * B > 1e-12))
    u = np.cos(theta) * h[:, None, :] + np.sin(theta) * w
    out = np.degrees(linalg.vector_angle(h[:, None, :], Tt[None]) - linalg.vector_angle(u, Tt[None]))
    out = np.where(ok, out, np.nan)
    for i, j in zip(*np.nonzero(degenerate)):
        try:
            out[i, j] = steer(egeom, E[i], Tt[j], image_score, direction).attribute_score
        except WeightscopeError:
            out[i, j] = np.nan
    return out


def _check(geom, head, T, features, texts, text_embeddings, families, image_score, path, max_step_deg):
    if not isinstance(geom, HeadGeometry) or not isinstance(head, LinearHead) or not isinstance(T, Translator):
        raise WeightscopeError("attribute_statistics needs a HeadGeometry, a LinearHead and a Translator")
    if head.n_features != geom.n_features:
        raise WeightscopeError(f"the head takes width {head.n_features} but its geometry has width {geom.n_features}")
    X = np.asarray(features, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise WeightscopeError(f"features must be a non-empty (images, width) array, got shape {X.shape}")
    X = geom._check(X, "features")
    check_widths(T, geom.n_features)
    if isinstance(texts, str) or not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
        raise WeightscopeError("texts must be a non-empty list of non-empty strings")
    if len(set(texts)) != len(texts):
        raise WeightscopeError("texts hold duplicates; give each text once")
    Tt = np.asarray(text_embeddings, dtype=np.float64)
    if Tt.shape != (len(texts), T.out_width):
        raise WeightscopeError(f"text embeddings of shape {Tt.shape}; expected ({len(texts)}, {T.out_width}): one "
                               "embedding per text, of the translator's output width")
    if not np.isfinite(Tt).all() or not np.all(np.linalg.norm(Tt, axis=1) > 0):
        raise WeightscopeError("text embeddings must be finite non-zero vectors")
    families = dict(families or {})
    for name, members in families.items():
        missing = [t for t in members if t not in texts]
        if not members or missing:
            raise WeightscopeError(f"family {name!r} names texts not in the list "
                                   f"({', '.join(missing) or 'none given'})")
    if not isinstance(image_score, (int, float)) or not 0.0 < float(image_score) < 180.0:
        raise WeightscopeError(f"image score {image_score!r} deg must lie in (0, 180)")
    if path not in PATHS:
        raise WeightscopeError(f"path {path!r}; use 'gradient' (SING's) or 'optimal' (closed form, linear T)")
    if path == "optimal" and T.kind == "mlp":
        raise WeightscopeError("the optimal path needs an affine translator (linear or identity); use path='gradient'")
    if not isinstance(max_step_deg, (int, float)) or not 0.0 < max_step_deg <= 10.0:
        raise WeightscopeError(f"max_step_deg = {max_step_deg!r}; give a step in (0, 10] degrees, e.g. 0.25")
    return X, Tt, families


def attribute_statistics(geom: HeadGeometry, head: LinearHead, T: Translator, features, texts: list[str],
                         text_embeddings, *, families: dict[str, list[str]] | None = None, image_score: float = 40.0,
                         path: str = "gradient", max_step_deg: float = 0.25,
                         progress: bool = False) -> AttributeStatistics:
    """Scores (a) and (b) of the module docstring for every image (features (n, F)) and text (text_embeddings (m, E),
    used as directions), and the predicted class of each image (argmax of ``head.logits``).

    families: optional name -> texts (each must be in ``texts``). path: "gradient" (SING's, any T; all n x m x 2
    flows run at once, vectorised) or "optimal" (closed form, affine T). Raises WeightscopeError for bad input
    (before any work) or a feature whose image T(f) is zero.
    """
    import time

    from tqdm import tqdm

    X, Tt, families = _check(geom, head, T, features, texts, text_embeddings, families, image_score, path, max_step_deg)
    start = time.perf_counter()
    E = T(X)
    if not np.all(np.linalg.norm(E, axis=1) > 0):
        raise WeightscopeError("a feature's image T(f) is the zero vector: it has no direction")
    predicted = np.argmax(head.logits(X), axis=1)
    E_row = T(geom.split(X)[0])
    with np.errstate(invalid="ignore", divide="ignore"):        # T(f_row) = 0 has no angle: NaN
        is_row = np.degrees(linalg.vector_angle(E, E_row))
        as_row = np.degrees(linalg.vector_angle(E[:, None], Tt[None]) - linalg.vector_angle(E_row[:, None], Tt[None]))
    n, m = len(X), len(texts)
    image_dim = None
    if T.kind != "mlp":
        egeom, _ = translated_geometry(geom, T)
        image_dim = egeom.null_dim
    towards, away = np.empty((n, m)), np.empty((n, m))
    # images in blocks, so that memory stays bounded (the optimal path holds (block, m, E), the gradient path
    # (block * m * 2, max(F, E)) arrays)
    width = T.out_width if path == "optimal" else 2 * max(T.in_width, T.out_width)
    block = max(1, _BLOCK_FLOATS // (m * width))
    with tqdm(total=n * m * 2, desc=f"{path} steering", unit="path", disable=not progress, leave=False) as bar:
        for lo in range(0, n, block):
            sl = slice(lo, min(n, lo + block))
            if path == "optimal":
                towards[sl], away[sl] = (_optimal_as(egeom, E[sl], Tt, float(image_score), d) for d in (1, -1))
                bar.update(2 * m * (sl.stop - lo))
                continue
            k = sl.stop - lo
            F0 = np.repeat(X[sl], 2 * m, axis=0)                      # order: image, text, direction
            texts_rep = np.tile(np.repeat(Tt, 2, axis=0), (k, 1))
            F_tilde, reached, _, _ = gradient_flow(geom, T, F0, texts_rep, float(image_score),
                                                   np.tile([1.0, -1.0], k * m), max_step_deg, bar=bar)
            as_all = np.degrees(linalg.vector_angle(np.repeat(E[sl], 2 * m, axis=0), texts_rep)
                                - linalg.vector_angle(T(F_tilde), texts_rep))
            as_all = np.where(reached, as_all, np.nan).reshape(k, m, 2)
            towards[sl], away[sl] = as_all[..., 0], as_all[..., 1]
    return AttributeStatistics(list(texts), head.class_names, families, float(image_score), path, predicted,
                               is_row, as_row, towards, away, geom.null_dim, image_dim, T.out_width, T.report,
                               timing_s=time.perf_counter() - start)
