"""SING on a CLIP model's zero-shot head, end to end and data-free: classes -> head -> null space -> semantics.

    from weightscope.analyses.sing import sing_analysis
    result = sing_analysis()                 # bundled shapes-world model, its 8 shape classes
    print(result.summary())
    result.to_json("sing.json")

Steps: the zero-shot head of the classes (prompt ensembles of the model's own text tower); its row / null space;
the visibility of every vocabulary concept; COMP explanations of the leading row and null directions; a feature f
(an image, a gallery image, or a class prompt's text embedding standing in for one) steered inside the null space
towards and away from texts at a fixed image score; SING's leakage statistic (mean |AS| at that IS when steering
gallery images towards / away from "an image of a <predicted class>"); the nearest gallery images to f and f~.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...core.errors import WeightscopeError
from ...core.fileio import dump_json
from ...models.linear_heads import DEFAULT_TEMPLATES, LinearHead
from ...core.linalg import RANK_RTOL
from .gallery import Gallery
from .geometry import HeadGeometry, steer
from .semantics import SubspaceDirection, Visibility

CLASS_PROMPT = "an image of {}"        # SING's class text, "an image of a <class>", with the right article
BUNDLED_VOCAB = "shapes_world"
GENERAL_VOCAB = "general"
N_LEAKAGE = 256                       # gallery images in the leakage statistic


def class_text(name: str) -> str:
    """SING's class text: "an image of a <class>" (with the right article)."""
    return CLASS_PROMPT.format(f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name}")


@dataclass(frozen=True)
class ClassSet:
    """Classes of a zero-shot head: names, the prompt templates averaged per class, and how they were given."""

    names: list[str]
    templates: tuple[str, ...]
    description: str


@dataclass(frozen=True)
class SingOptions:
    """The settings SING's analyses share (parts 1 and 2).

    image_score: IS in degrees at which |AS| is reported (SING: 40); rtol: relative rank tolerance of the head;
    n_directions: leading row / null directions explained with concepts; n_neighbours: gallery neighbours shown.
    """

    image_score: float = 40.0
    rtol: float = RANK_RTOL
    n_directions: int = 4
    n_neighbours: int = 6


def parse_classes(spec) -> tuple[list[str], tuple[str, ...], str]:
    """(class names, prompt templates, description) from a class spec.

    spec: a :class:`ClassSet` (used as it is; ``weightscope.bundled.shape_classes`` gives the shapes world's); a
    built-in vocabulary name (e.g. "cifar10"); a file with one class per line; "a,b,c"; or a sequence of names. At
    least 2 classes, no duplicates (compared case-insensitively). Raises WeightscopeError naming the problem.
    """
    from ...concepts.vocab import concept_key, list_vocabularies, load_vocabulary, validate_concepts

    templates = tuple(DEFAULT_TEMPLATES)
    if isinstance(spec, ClassSet):
        names, templates, desc = list(spec.names), tuple(spec.templates), spec.description
    elif isinstance(spec, str):
        text = spec.strip()
        if "," in text:
            names, desc = [part.strip() for part in text.split(",")], "list"
        elif Path(text).is_file():
            try:
                lines = Path(text).read_text(encoding="utf-8").splitlines()
            except (UnicodeDecodeError, OSError) as err:
                raise WeightscopeError(f"cannot read class file {text}: {err}") from None
            names, desc = [ln.strip() for ln in lines if ln.strip()], f"file {Path(text).name}"
        elif "/" not in text and os.sep not in text and text in list_vocabularies():
            names, desc = load_vocabulary(text), text
        elif "/" in text or os.sep in text or Path(text).suffix:
            raise WeightscopeError(f"class file not found: {text} (give a file with one class per line, "
                                   "'a,b,c', 'shapes' or a built-in list such as cifar10)")
        else:
            raise WeightscopeError(f"--classes {text!r} names a single class; a head needs at least 2: "
                                   "give 'a,b,c', a file, 'shapes' or a built-in list such as cifar10")
    else:
        names, desc = [str(n) for n in spec], "list"
    if any(not n for n in names):
        raise WeightscopeError("a class name is empty; write e.g. 'cat,dog,bird'")
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        j = seen.setdefault(concept_key(n), i)
        if j != i:
            raise WeightscopeError(f"duplicate class {n!r} (entries {j} and {i}); give each class once")
    if len(names) < 2:
        raise WeightscopeError(f"{len(names)} class given; a head needs at least 2 classes")
    return validate_concepts(names, duplicates="error", what="class list"), templates, desc


@dataclass
class SteeringRow:
    """One text's steering of f at the requested image score (degrees); None where out of reach."""

    text: str
    angle_f_t: float
    as_towards: float | None
    as_away: float | None
    max_is_towards: float
    max_is_away: float

    @property
    def abs_as(self) -> float | None:
        got = [abs(x) for x in (self.as_towards, self.as_away) if x is not None]
        return max(got) if got else None


@dataclass
class SingResult:
    """The analysis of one head. JSON-ready fields plus (not serialised) the arrays the report draws from."""

    model: str
    classes: list[str]
    feature_space: str
    singular_values: list[float]
    rank: int
    null_dim: int
    rtol: float
    vocabulary: str
    normalize: str
    visibility: Visibility
    families: dict[str, float]
    directions: list[SubspaceDirection]
    image_score: float
    feature: str
    main_text: str
    steering: list[SteeringRow]
    curve: list[tuple[float, float, float]]           # (IS, AS towards, AS away) for the main text
    logit_change: float                               # max |logits(f~) - logits(f)| / max |logits(f)|
    leakage: dict | None
    neighbours: dict = field(default_factory=dict)    # "f" / "f_tilde": [(index, caption, cosine)]
    gallery: Gallery | None = field(default=None, repr=False)
    f_image: np.ndarray | None = field(default=None, repr=False)   # (H, W, 3) uint8 picture of f, when it has one

    @property
    def n_features(self) -> int:
        return self.rank + self.null_dim

    @property
    def rank_by(self) -> str:
        """What the ranked lists use: visibility, or the gain when the null space is empty (every visibility is 1)."""
        return "visibility" if self.null_dim else "gain"

    @property
    def chance_visibility(self) -> float:
        """Mean visibility of a uniformly random direction: rank / F."""
        return self.rank / self.n_features

    def summary(self, n: int = 8) -> str:
        fmt = lambda pairs: ", ".join(f"{c} {v:.2f}" for c, v in pairs)  # noqa: E731
        lines = [f"{self.model}: {len(self.classes)} classes in a {self.n_features}-d {self.feature_space} space; "
                 f"rank {self.rank}, null space {self.null_dim}-d (rtol {self.rtol:g}); chance visibility "
                 f"{self.chance_visibility:.3f}",
                 f"sees ({self.rank_by}):     {fmt(self.visibility.ranked(n, by=self.rank_by))}",
                 f"blind to ({self.rank_by}): {fmt(self.visibility.ranked(n, blind=True, by=self.rank_by))}"]
        if self.families:
            lines.append("mean visibility per family: " + ", ".join(f"{k} {v:.3f}" for k, v in self.families.items()))
        for d in self.directions:
            lines.append(f"{d.space} direction {d.index} (weight {d.weight:.3g}): + {fmt(d.plus[:3])} | - {fmt(d.minus[:3])}")
        lines.append(f"f = {self.feature}; |AS| at IS = {self.image_score:g} deg (logits unchanged to "
                     f"{self.logit_change:.1e} relative):")
        for row in self.steering:
            towards = "out of reach" if row.as_towards is None else f"{row.as_towards:+.2f}"
            away = "out of reach" if row.as_away is None else f"{row.as_away:+.2f}"
            lines.append(f"    {row.text!r}: AS towards {towards}, away {away} (angle to f {row.angle_f_t:.1f})")
        if self.leakage and self.leakage["mean_abs_as"] is not None:
            lines.append(f"leakage: mean |AS| at IS = {self.image_score:g} deg over {self.leakage['n_images']} gallery "
                         f"images towards/away from 'an image of a <predicted class>': "
                         f"{self.leakage['mean_abs_as']:.2f} deg")
        for which in ("f", "f_tilde"):
            if self.neighbours.get(which):
                lines.append(f"nearest gallery images to {which}: " + "; ".join(c for _, c, _ in self.neighbours[which][:3]))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        vis = self.visibility
        return {
            "format": "weightscope-sing/1", "model": self.model, "classes": self.classes,
            "feature_space": self.feature_space, "n_features": self.n_features, "rank": self.rank,
            "null_dim": self.null_dim, "rtol": self.rtol, "singular_values": self.singular_values,
            "vocabulary": self.vocabulary, "normalize": self.normalize, "chance_visibility": self.chance_visibility,
            "visibility": {c: round(float(v), 6) for c, v in zip(vis.concepts, vis.visibility)},
            "gain": {c: round(float(v), 6) for c, v in zip(vis.concepts, vis.gain)},
            "ranked_by": self.rank_by, "sees": vis.ranked(20, by=self.rank_by),
            "blind_to": vis.ranked(20, blind=True, by=self.rank_by), "families": self.families,
            "directions": [d.__dict__ for d in self.directions],
            "image_score": self.image_score, "feature": self.feature, "main_text": self.main_text,
            "steering": [{**r.__dict__, "abs_as": r.abs_as} for r in self.steering],
            "curve": self.curve, "logit_change": self.logit_change, "leakage": self.leakage,
            "neighbours": self.neighbours,
        }

    def to_json(self, path=None) -> str:
        return dump_json(self.to_dict(), path)


def text_embeddings(loaded, texts: list[str]) -> np.ndarray:
    """Unit text embeddings (len(texts), E) float64 of a LoadedModel's own text tower (no cache: a few texts)."""
    from ...concepts.embed import encode_texts
    from ...core.linalg import normalize_rows

    return normalize_rows(encode_texts(loaded.model, loaded.tokenizer, texts, progress=False).astype(np.float64))


def _steering_row(geom: HeadGeometry, f, t, text: str, image_score: float) -> SteeringRow:
    res = {}
    for direction in (1, -1):
        probe = steer(geom, f, t, 0.0, direction)          # IS = 0 is always reachable: gives the limit
        res[direction] = (steer(geom, f, t, image_score, direction).attribute_score
                          if image_score < probe.max_image_score else None, probe.max_image_score)
    return SteeringRow(text, probe.angle_f_t, res[1][0], res[-1][0], res[1][1], res[-1][1])


def _curve(geom: HeadGeometry, f, t, max_is: float, points: int = 37) -> list[tuple[float, float, float]]:
    out = []
    for theta in np.linspace(0.0, max_is, points):
        vals = []
        for direction in (1, -1):
            try:
                vals.append(round(steer(geom, f, t, float(theta), direction).attribute_score, 6))
            except WeightscopeError:            # beyond this direction's reachable image score
                vals.append(None)
        out.append((round(float(theta), 4), *vals))
    return out


def leakage(head: LinearHead, geom: HeadGeometry, features: np.ndarray, class_texts: np.ndarray,
            image_score: float = 40.0) -> dict:
    """SING's statistic: for each feature (n, F), |AS| at ``image_score`` (the larger of steering towards and away)
    for the text of its predicted class (class_texts (C, F)); mean over the features where reachable."""
    pred = np.argmax(head.logits(features), axis=1)
    vals = []
    for f, c in zip(features, pred):
        row = _steering_row(geom, f, class_texts[c], "", image_score)
        if row.abs_as is not None:
            vals.append(row.abs_as)
    return {"n_images": len(features), "n_reachable": len(vals), "image_score": image_score,
            "mean_abs_as": float(np.mean(vals)) if vals else None,
            "median_abs_as": float(np.median(vals)) if vals else None}


def check_sing_inputs(classes, explainer=None, *, image=None, texts=None, gallery=None,
                      options: SingOptions = SingOptions()) -> tuple[list[str], tuple[str, ...], list[str] | None]:
    """Every argument of :func:`sing_analysis` that a user can get wrong, checked before any model is loaded:
    (class names, templates, texts). Raises WeightscopeError (one line)."""
    from . import gallery as gal

    names, templates, _ = parse_classes(classes)
    if explainer is not None and explainer.vocabulary is not None:
        explainer.check()
    if not 0.0 <= float(options.image_score) < 180.0:
        raise WeightscopeError(f"image score {options.image_score} deg must lie in [0, 180)")
    if texts is not None:
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
            raise WeightscopeError("texts must be non-empty strings, e.g. 'a blue background'")
    if image is not None:
        gal._open_image(Path(image))
    if isinstance(gallery, (str, os.PathLike)) and not Path(gallery).is_dir():
        raise WeightscopeError(f"gallery folder not found: {gallery}")
    return names, templates, texts


def sing_analysis(model, classes, explainer=None, *, image=None, texts=None, gallery=None, families=None,
                  options: SingOptions = SingOptions(), progress: bool = True) -> SingResult:
    """Run SING's null-space analysis on a CLIP zero-shot head (module docstring; SING, seed 000, METHODS.md 8).

    model: a LoadedModel (or a spec ``load_model`` takes). classes: a :class:`ClassSet` or a spec
    :func:`parse_classes` reads. explainer: the ``ConceptExplainer`` of the visibility and the row / null
    explanations (default: vocabulary "general", SpLiCE normalisation). image: an image file for f (default: the
    first gallery image, else the text embedding of the first class prompt). texts: texts to steer towards / away
    from (default: the concept the head is most blind to). gallery: a ``Gallery`` or a folder of images (default
    none). families: {family: [concept, ...]} whose mean visibilities are reported (default none). options:
    :class:`SingOptions`. Raises WeightscopeError (one line) for bad input, before the model is used.
    """
    from ..zeroshot import zero_shot_head
    from ...concepts.explainer import ConceptExplainer
    from ...models.load import LoadedModel, load_model
    from . import gallery as gal
    from .geometry import head_geometry
    from .semantics import concept_visibility, explain_subspaces, normalized_dictionary

    names, templates, texts = check_sing_inputs(classes, explainer, image=image, texts=texts, gallery=gallery,
                                                options=options)
    explainer = (explainer or ConceptExplainer()).with_defaults("general", "splice").check()
    concepts, vocab_desc, normalize = explainer.concepts, explainer.description, explainer.normalize
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    image_score, n_neighbours = options.image_score, options.n_neighbours

    head = zero_shot_head(loaded, names, templates)
    geom = head_geometry(head, options.rtol)
    raw = explainer.raw_embeddings(loaded, progress)
    vis = concept_visibility(geom, raw, concepts, normalize)
    directions = explain_subspaces(geom, normalized_dictionary(raw, normalize), explainer, options.n_directions)

    gallery_obj = gallery
    if isinstance(gallery, (str, os.PathLike)):
        gallery_obj = gal.folder_gallery(loaded, gallery, cache_dir=explainer.cache_dir, progress=progress)
    f_image = None
    if image is not None:
        f, feature = gal.embed_image(loaded, image), f"image {Path(image).name}"
        f_image = np.asarray(gal._open_image(Path(image)))
    elif gallery_obj is not None:
        f, feature = gallery_obj.embeddings[0].astype(np.float64), f"gallery image 0 ({gallery_obj.captions[0]})"
        f_image = gallery_obj.image(0)
    else:
        prompt = templates[0].format(names[0])
        f, feature = text_embeddings(loaded, [prompt])[0], f"text embedding of {prompt!r} (no image given)"

    if texts is None:
        texts = [vis.ranked(1, blind=True, by="visibility" if geom.null_dim else "gain")[0][0]]
    class_texts = [class_text(n) for n in names]
    T = text_embeddings(loaded, texts + class_texts)
    rows = [_steering_row(geom, f, t, text, image_score) for t, text in zip(T, texts + class_texts)]
    main = rows[0]
    max_is = min(179.0, max(main.max_is_towards, main.max_is_away))
    curve = _curve(geom, f, T[0], max_is * 0.999) if geom.null_dim else []

    neighbours, logit_change = {}, 0.0
    if geom.null_dim and main.as_towards is not None:
        f_tilde = steer(geom, f, T[0], image_score, 1).f_tilde
        base = head.logits(f)
        logit_change = float(np.max(np.abs(head.logits(f_tilde) - base)) / np.max(np.abs(base)))
        if gallery_obj is not None:
            for which, vec in (("f", f), ("f_tilde", f_tilde)):
                idx, cos = gallery_obj.nearest(vec, n_neighbours)
                neighbours[which] = [(int(i), gallery_obj.captions[i], round(float(c), 6)) for i, c in zip(idx[0], cos[0])]
    leak = None
    if gallery_obj is not None and geom.null_dim:
        feats = gallery_obj.embeddings[:N_LEAKAGE].astype(np.float64)
        leak = leakage(head, geom, feats, T[len(texts):], image_score)

    return SingResult(
        model=loaded.identity, classes=list(names), feature_space=head.feature_space,
        singular_values=[float(x) for x in geom.s], rank=geom.rank, null_dim=geom.null_dim, rtol=geom.rtol,
        vocabulary=f"{vocab_desc} ({len(concepts)} concepts)", normalize=normalize, visibility=vis,
        families=vis.family_means(families) if families else {}, directions=directions,
        image_score=float(image_score), feature=feature, main_text=texts[0], steering=rows, curve=curve,
        logit_change=logit_change, leakage=leak, neighbours=neighbours, gallery=gallery_obj,
        f_image=f_image)
