"""SING on any trained classifier, through a translator into a CLIP image-embedding space (SING part 2).

    from weightscope.analyses.sing import classifier_analysis
    result = classifier_analysis("bundled-cnn")        # the shipped shapes CNN, the bundled CLIP, generated images
    print(result.summary())

Source: SING (seed 000; METHODS.md section 8). Steps:

1. the classifier (``weightscope.models.classifiers.load_classifier``): its last ``nn.Linear`` is the head, the input of
   that layer the feature f (F,); the head's row / null space as in part 1;
2. paired images: the classifier's features and the CLIP model's normalised image embeddings of the same images;
   the translator T (F -> E) is loaded (``translator=PATH``) or fitted on them (ridge with the penalty chosen by
   cross-validation by default, ``translator="mlp"`` for SING's MLP variant); its held-out fit is reported.
   For the shipped shapes classifiers the paired images are generated shapes-world scenes (``N_FIT_IMAGES``,
   seeded, disjoint from the analysed images);
3. the analysed images (a folder, or generated scenes for the shipped classifiers) and the texts (a file, or the
   shapes world's attribute texts, or "an image of a <class>" for each class): SING's statistics
   (``statistics.attribute_statistics``), on SING's gradient path and, for a linear T, on the optimal path;
   SING's class leakage (|AS| towards / away from "an image of a <predicted class>");
4. one image steered towards the text that moves most, and the gallery images nearest to T(f) and T(f~)
   (equivalent images by retrieval: the CLIP model's gallery, as in part 1).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ...core.errors import WeightscopeError
from ...core.fileio import dump_json
from .analysis import SingOptions, class_text, text_embeddings
from .inputs import MAX_FOLDER_IMAGES, _clip_embed_pil, clip_image_embeddings, folder_images, read_texts

TRANSLATOR_KINDS = ("linear", "mlp")


@dataclass
class ImageSet:
    """Images SING part 2 reads: uint8 arrays (N, S, S, 3) at the classifier's and CLIP's input size, or PIL
    images (each model's own preprocessing); description: how results name them; labels: (N,) true classes when
    known (the accuracy is then reported); n_found: images the source held when only some were used."""

    images: object
    description: str
    labels: np.ndarray | None = None
    n_found: int | None = None

    def __len__(self) -> int:
        return len(self.images)

    def first_image(self) -> np.ndarray:
        return self.images[0] if isinstance(self.images, np.ndarray) else np.asarray(self.images[0].convert("RGB"))


def folder_image_set(folder, max_images: int = MAX_FOLDER_IMAGES) -> ImageSet:
    """The images under ``folder`` as an :class:`ImageSet` (see :func:`.inputs.folder_images`)."""
    _, pil, n_found = folder_images(folder, max_images)
    return ImageSet(pil, f"folder {Path(folder).name}", None, n_found)


def paired_features(classifier, loaded, images: ImageSet, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(classifier features (N, F), CLIP's normalised image embeddings (N, E)) of the same images."""
    if isinstance(images.images, np.ndarray):
        return classifier.features(images.images, progress=progress), clip_image_embeddings(loaded, images.images)
    return classifier.features(images.images, progress=progress), _clip_embed_pil(loaded, images.images)


@dataclass
class ClassifierSingResult:
    """SING through a translator for one classifier. JSON-ready fields plus (not serialised) objects for the report.

    statistics: ``AttributeStatistics`` of the texts on SING's gradient path; optimal: the same on the optimal path
    (affine T only, else None); classes: ``AttributeStatistics`` of the class texts (gradient path), from which the
    class leakage (each image's own predicted class) is read; example: one image steered towards the text that
    moves most (scores, logit change, gallery neighbours of T(f) and T(f~)).
    """

    classifier: str
    clip_model: str
    class_names: list[str]
    n_features: int
    rank: int
    null_dim: int
    rtol: float
    singular_values: list[float]
    translator: dict
    n_embed: int
    images: str
    n_images: int
    accuracy: float | None
    image_score: float
    statistics: object
    optimal: object | None
    classes: object
    example: dict
    classifier_source: str = ""                   # where the classifier and its preprocessing came from
    preprocessing: dict = field(default_factory=dict)   # image_size, mean, std the classifier's input used
    notes: list = field(default_factory=list)     # what the run had to decide or noticed (see ``warnings``)
    vocabulary: str | None = None                 # the concepts of visibility and explanations (affine T only)
    visibility: object | None = None              # semantics.Visibility in E: share outside T(null space)
    families: dict = field(default_factory=dict)  # mean visibility per shapes-world attribute family
    directions: list = field(default_factory=list)  # semantics.SubspaceDirection: seen / null directions in E
    seen_dim: int | None = None                   # E - dim T(null space): what null moves cannot change
    gallery: object | None = field(default=None, repr=False)
    example_image: np.ndarray | None = field(default=None, repr=False)
    translator_object: object | None = field(default=None, repr=False)

    rank_by = "visibility"
    POOR_FIT_R2 = 0.1

    @property
    def warnings(self) -> list[str]:
        """What makes the numbers below mean little: an empty null space, a translator that explains little, and
        the run's notes (images left out, predictions collapsed onto one class, no class names)."""
        out = list(self.notes)
        if self.null_dim == 0:
            out.append("the head's null space is empty (rank = feature width): every change of the features moves "
                       "the logits, so there is nothing to steer and no score below is defined")
        fit = self.translator.get("report")
        if fit and fit["r2"] < self.POOR_FIT_R2:
            out.append(f"the translator explains little of the CLIP embeddings (held-out R^2 {fit['r2']:.2f} from "
                       f"{fit['n_train']} training pairs): scores through it mean little; fit it on more images")
        return out

    @property
    def chance_visibility(self) -> float | None:
        """Mean visibility of a random direction of E: (E - dim T(null space)) / E."""
        return None if self.seen_dim is None else self.seen_dim / self.n_embed

    @property
    def class_leakage(self) -> dict:
        """SING's class statistic: |AS| at the IS towards / away from "an image of a <predicted class>", per image
        its own predicted class; mean and median over the images where it is reached."""
        st = self.classes
        if st is None:
            return {"image_score": self.image_score, "n_images": self.n_images, "n_reachable": 0,
                    "mean_abs_as": None, "median_abs_as": None}
        own = st.abs_as[np.arange(len(st.predicted)), st.predicted]
        ok = np.isfinite(own)
        return {"image_score": self.image_score, "n_images": int(own.size), "n_reachable": int(ok.sum()),
                "mean_abs_as": float(own[ok].mean()) if ok.any() else None,
                "median_abs_as": float(np.median(own[ok])) if ok.any() else None}

    def summary(self) -> str:
        fit = self.translator.get("report") or {}
        lines = [f"{self.classifier}: {len(self.class_names)} classes x {self.n_features} features; rank {self.rank}, "
                 f"null space {self.null_dim}-d (rtol {self.rtol:g}); T into {self.clip_model} ({self.n_embed}-d)",
                 f"translator: {self.translator['kind']}, {self.translator['source']}"
                 + (f"; held-out mean cosine {fit['mean_cosine']:.3f}, R^2 {fit['r2']:.3f}" if fit else ""),
                 f"images: {self.images}, {self.n_images}"
                 + (f"; classifier accuracy on them {self.accuracy:.1%}" if self.accuracy is not None else "")]
        pre = self.preprocessing
        lines.append(f"classifier input: {pre.get('image_size')} px, mean {pre.get('mean')}, std {pre.get('std')}; "
                     f"source: {self.classifier_source}")
        lines += [f"note: {w}" for w in self.warnings]
        if self.visibility is not None:
            fmt = lambda pairs: ", ".join(f"{c} {v:.2f}" for c, v in pairs)  # noqa: E731
            lines += [f"visibility through T: share of a concept outside T(null space), i.e. in the "
                      f"{self.seen_dim}-d part of E={self.n_embed} that null moves cannot reach (chance "
                      f"{self.chance_visibility:.3f}; {self.vocabulary}):",
                      f"    most fixed by the logits: {fmt(self.visibility.ranked(8))}",
                      f"    most free in the null space: {fmt(self.visibility.ranked(8, blind=True))}"]
            if self.families:
                lines.append("    mean per family: " + ", ".join(f"{k} {v:.3f}" for k, v in self.families.items()))
        lines.append(f"steered to IS = {self.image_score:g} deg along SING's path (the null-space-projected gradient "
                     "of cos(T(f~), t)); |AS| is the larger of towards and away from t:")
        lines += ["    " + ln for ln in self.statistics.summary().splitlines()]
        if self.optimal is not None:
            lines.append("along the optimal path (closed form: the largest |AS| any equivalent feature reaches):")
            lines += ["    " + ln for ln in self.optimal.summary().splitlines() if not ln.startswith("f_row")]
        cl = self.class_leakage
        if cl["mean_abs_as"] is not None:
            lines.append(f"class leakage: mean |AS| at IS = {self.image_score:g} deg towards / away from 'an image of "
                         f"a <predicted class>' {cl['mean_abs_as']:.2f} deg over {cl['n_reachable']} of "
                         f"{cl['n_images']} images (SING's statistic; its demo calls |AS| > 4 deg substantial)")
        ex = self.example
        if ex:
            lines.append(f"example: image 0 steered {ex.get('direction', 'towards')} {ex['text']!r} on SING's path: IS "
                         f"{ex['image_score']:.1f} deg, AS {ex['attribute_score']:+.2f} deg, logits unchanged to "
                         f"{ex['logit_change']:.1e} relative, prediction {ex['prediction']!r} "
                         f"{'kept' if ex['prediction_kept'] else 'CHANGED'}")
            for which in ("f", "f_tilde"):
                if ex.get("neighbours", {}).get(which):
                    lines.append(f"    nearest gallery images to T({which}): "
                                 + "; ".join(c for _, c, _ in ex["neighbours"][which][:3]))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"format": "weightscope-sing-classifier/1", "classifier": self.classifier,
                "clip_model": self.clip_model, "classes": self.class_names, "n_features": self.n_features,
                "rank": self.rank, "null_dim": self.null_dim, "rtol": self.rtol,
                "singular_values": self.singular_values, "translator": self.translator, "n_embed": self.n_embed,
                "images": self.images, "n_images": self.n_images, "accuracy": self.accuracy,
                "image_score": self.image_score, "warnings": self.warnings, "statistics": self.statistics.to_dict(),
                "optimal": self.optimal.to_dict() if self.optimal is not None else None,
                "class_texts": None if self.classes is None else self.classes.to_dict(),
                "class_leakage": self.class_leakage, "classifier_source": self.classifier_source,
                "preprocessing": self.preprocessing,
                "example": self.example, "vocabulary": self.vocabulary, "seen_dim": self.seen_dim,
                "chance_visibility": self.chance_visibility,
                "visibility": None if self.visibility is None else {
                    c: round(float(v), 6) for c, v in zip(self.visibility.concepts, self.visibility.visibility)},
                "sees": None if self.visibility is None else self.visibility.ranked(20),
                "blind_to": None if self.visibility is None else self.visibility.ranked(20, blind=True),
                "families": self.families, "directions": [d.__dict__ for d in self.directions]}

    def to_json(self, path=None) -> str:
        return dump_json(self.to_dict(), path)


def _check_translator(T, spec, provenance: dict, n_features: int, n_embed: int | None = None) -> None:
    """One line when a loaded translator does not fit this run: widths, or fitted for another classifier / CLIP."""
    from .translator import check_widths

    where = "the given translator" if not isinstance(spec, (str, Path)) else f"translator {spec}"
    try:
        check_widths(T, n_features, n_embed)
    except WeightscopeError as err:
        raise WeightscopeError(f"{where}: {err}; omit --translator to fit one for this classifier") from None
    for key, what in (("classifier_sha256", "classifier"), ("preprocessing", "input preprocessing"),
                      ("clip_model", "CLIP model")):
        saved, now = (T.provenance or {}).get(key), provenance.get(key)
        if saved is not None and now is not None and saved != now:
            name = (T.provenance.get("classifier") if key == "classifier_sha256" else saved)
            current = provenance["classifier"] if key == "classifier_sha256" else now
            raise WeightscopeError(f"{where} was fitted for another {what} ({name}, not {current}); omit --translator "
                                   "to fit one for this run")


def check_translator_spec(spec) -> None:
    """Raise WeightscopeError unless spec is None, 'linear', 'mlp' or an existing file."""
    if spec is None or (isinstance(spec, str) and spec in TRANSLATOR_KINDS):
        return
    if not Path(spec).is_file():
        hint = "; did you mean linear (ridge regression)?" if str(spec).lower() in ("ridge", "ridgecv") else ""
        raise WeightscopeError(f"translator {spec!r} is neither a file nor a kind to fit; give a saved translator "
                               f"file or one of {', '.join(TRANSLATOR_KINDS)}{hint}")


# ---------------------------------------------------------------------------------------------------- analysis

def translator_provenance(classifier) -> dict:
    """What a translator records of the classifier it is fitted for: name, SHA-256 of its tensors, preprocessing."""
    from .gallery import model_hash

    preprocessing = {"image_size": classifier.image_size, "mean": [float(x) for x in classifier.mean],
                     "std": [float(x) for x in classifier.std]}
    return {"classifier": classifier.name, "classifier_sha256": model_hash(classifier.module),
            "preprocessing": preprocessing}


def load_checked_translator(spec, classifier):
    """A saved translator (file or ``Translator``) checked against ``classifier`` before any CLIP model is loaded;
    None for a kind to fit ("linear", "mlp") or None. Raises WeightscopeError (one line)."""
    from .translator import Translator, load_translator

    if isinstance(spec, Translator):
        T = spec
    else:
        check_translator_spec(spec)
        if spec is None or spec in TRANSLATOR_KINDS:
            return None
        T = load_translator(spec)
    _check_translator(T, spec, translator_provenance(classifier), classifier.head.n_features)
    return T


def fit_or_check_translator(spec, classifier, loaded, pairs: tuple[np.ndarray, np.ndarray], fit_images=None,
                            progress: bool = True):
    """(T, how it was obtained): the given or saved translator checked against this run, or one fitted ("linear"
    ridge by default, "mlp") on ``fit_images`` (an :class:`ImageSet`) or else on the analysed ``pairs``
    (features, CLIP embeddings). Its provenance (classifier, preprocessing, CLIP model) is recorded."""
    from .translator import Translator, fit_translator

    provenance = {**translator_provenance(classifier), "clip_model": loaded.identity}
    T = load_checked_translator(spec, classifier)
    if T is not None:
        _check_translator(T, spec, provenance, pairs[0].shape[1], pairs[1].shape[1])
        source = "given" if isinstance(spec, Translator) else f"loaded from {Path(spec).resolve()}"
    elif fit_images is not None:
        T = fit_translator(*paired_features(classifier, loaded, fit_images, progress), kind=spec or "linear")
        source = f"fitted on {len(fit_images)} {fit_images.description}"
    else:
        T = fit_translator(*pairs, kind=spec or "linear")
        source = f"fitted on the {len(pairs[0])} analysed images"
    if T.provenance is None:
        T.provenance = provenance
    return T, source


def check_classifier_inputs(classifier, images, texts, *, translator=None, gallery=None,
                            options: SingOptions = SingOptions()) -> list[str] | None:
    """What :func:`classifier_analysis` checks before any CLIP model is loaded; returns the texts as a list (None
    when none were given). Raises WeightscopeError (one line)."""
    from ...models.linear_heads import placeholder_class_names

    if not 0.0 < float(options.image_score) < 180.0:
        raise WeightscopeError(f"image score (--image-score) {options.image_score:g} deg must lie in (0, 180); "
                               "SING reports 40")
    if not isinstance(options.n_directions, (int, np.integer)) or options.n_directions < 1:
        raise WeightscopeError(f"n_directions = {options.n_directions!r}; give a positive integer")
    text_list = None
    if isinstance(texts, dict):
        text_list = [t for group in texts.values() for t in group]
    elif texts is not None:
        text_list = read_texts(texts) if isinstance(texts, (str, Path)) else [" ".join(str(t).split()) for t in texts]
        if not text_list or not all(text_list):
            raise WeightscopeError("texts must be non-empty strings, e.g. 'a red object'")
    if isinstance(gallery, (str, Path)) and not Path(gallery).is_dir():
        raise WeightscopeError(f"gallery folder not found: {gallery}")
    if images is None:
        raise WeightscopeError(f"{classifier.name} is not a shipped shapes classifier: give a folder of images "
                               "(--images DIR) to fit the translator on and to analyse")
    named = classifier.class_names != placeholder_class_names(len(classifier.class_names))
    if text_list is None and not named:
        raise WeightscopeError(f"{classifier.name} has no class names, so there are no class texts to score: give "
                               "texts (--texts FILE) or class_names in its JSON sidecar")
    load_checked_translator(translator, classifier)
    return text_list


def classifier_analysis(classifier, loaded, images: ImageSet, texts=None, explainer=None, *, translator=None,
                        fit_images: ImageSet | None = None, gallery=None, concept_families=None,
                        options: SingOptions = SingOptions(), progress: bool = True) -> ClassifierSingResult:
    """SING through a translator (module docstring; SING, seed 000, METHODS.md section 8).

    classifier: a ``Classifier`` (``weightscope.models.classifiers.load_classifier``; the shipped ones through
    ``weightscope.bundled.load_classifier``). loaded: the CLIP model T maps into. images: the analysed
    :class:`ImageSet`. texts: a list of texts, a file (one per line) or {family: [text, ...]} (statistics are then
    aggregated per family); default "an image of a <class>" per class. explainer: the ``ConceptExplainer`` of the
    visibility through T and the COMP explanations of the seen and null directions in E (affine T only: an MLP's
    null-space image is not a subspace; default vocabulary "general"). translator: a saved translator file or a
    Translator, or "linear" (default) / "mlp" to fit one on ``fit_images`` (default: the analysed images).
    gallery: a ``Gallery`` or a folder for equivalent images by retrieval. concept_families: {family: [concept]}
    whose mean visibilities are reported. Raises WeightscopeError (one line) for bad input.
    """
    from ...concepts.explainer import ConceptExplainer
    from ...models.linear_heads import placeholder_class_names
    from .geometry import head_geometry
    from .statistics import attribute_statistics

    text_list = check_classifier_inputs(classifier, images, texts, translator=translator, gallery=gallery,
                                        options=options)
    families = texts if isinstance(texts, dict) else None
    clf, names = classifier, list(classifier.class_names)
    named = clf.class_names != placeholder_class_names(len(clf.class_names))
    if text_list is None:
        text_list = [class_text(n) for n in clf.class_names]
    feats, embs = paired_features(clf, loaded, images, progress)
    T, source = fit_or_check_translator(translator, clf, loaded, (feats, embs), fit_images, progress)
    image_score = options.image_score

    text_embs = text_embeddings(loaded, text_list)
    notes = []
    if images.n_found is not None and images.n_found > len(images):
        notes.append(f"the folder holds {images.n_found} images; {len(images)} of them, evenly spaced over the sorted "
                     "paths, were used (max_images)")
    head = clf.head
    geom = head_geometry(head, options.rtol)
    stats = attribute_statistics(geom, head, T, feats, text_list, text_embs, families=families,
                                 image_score=image_score, path="gradient", progress=progress)
    optimal = (attribute_statistics(geom, head, T, feats, text_list, text_embs, families=families,
                                    image_score=image_score, path="optimal", progress=progress)
               if T.kind != "mlp" else None)
    classes = None
    if named:
        class_texts = [class_text(n) for n in names]
        classes = attribute_statistics(geom, head, T, feats, class_texts, text_embeddings(loaded, class_texts),
                                       image_score=image_score, path="gradient", progress=progress)
    semantics = {}
    if T.kind != "mlp":
        explainer = (explainer or ConceptExplainer()).with_defaults("general", "splice").check()
        semantics = _semantics(loaded, geom, T, explainer, options.n_directions, concept_families, progress)
    gallery_obj = gallery
    if isinstance(gallery, (str, Path)):
        from .gallery import folder_gallery

        gallery_obj = folder_gallery(loaded, gallery, cache_dir=explainer.cache_dir if explainer else None,
                                     progress=progress)
    example = _example(geom, head, T, feats[0], stats, text_list, text_embs, gallery_obj, options.n_neighbours)
    accuracy = float(np.mean(stats.predicted == images.labels)) if images.labels is not None else None
    counts = np.bincount(stats.predicted, minlength=len(names))
    if len(names) > 2 and len(feats) >= 20 and counts.max() >= 0.9 * len(feats):
        notes.append(f"the classifier predicts {names[int(counts.argmax())]!r} for {counts.max()} of {len(feats)} "
                     f"images: check its preprocessing ({clf.source})")
    if not named:
        notes.append("the classifier has no class names (give class_names in its JSON sidecar), so SING's class "
                     "leakage ('an image of a <class>') is not measured")
    preprocessing = translator_provenance(clf)["preprocessing"]
    return ClassifierSingResult(
        classifier=clf.name, clip_model=loaded.identity, class_names=names, n_features=geom.n_features,
        rank=geom.rank, null_dim=geom.null_dim, rtol=geom.rtol, singular_values=[float(s) for s in geom.s],
        translator={"kind": T.kind, "source": source, "report": None if T.report is None else asdict(T.report)},
        n_embed=embs.shape[1], images=images.description, n_images=len(feats), accuracy=accuracy,
        classifier_source=clf.source, preprocessing=preprocessing, notes=notes,
        image_score=float(image_score), statistics=stats, optimal=optimal, classes=classes, example=example,
        **semantics, gallery=gallery_obj, example_image=images.first_image(), translator_object=T)


def _semantics(loaded, geom, T, explainer, n_directions, concept_families, progress) -> dict:
    """Part 1's visibility and explanations, in E, on the translated geometry: its null space is T(null space) (what
    null moves can change), its row space the complement (what they cannot: what the classifier sees through T)."""
    from .geometry import HeadGeometry
    from .semantics import Visibility, concept_visibility, explain_subspaces, normalized_dictionary
    from .steering import translated_geometry

    concepts, normalize = explainer.concepts, explainer.normalize
    egeom, _ = translated_geometry(geom, T)
    raw = explainer.raw_embeddings(loaded, progress)
    # egeom.s are the singular values of N M (its null side); the seen side has none, so there is no gain to report
    seen = HeadGeometry(np.ones(egeom.rank), egeom.row, egeom.null, egeom.rtol)
    vis = concept_visibility(seen, raw, concepts, normalize)
    vis = Visibility(vis.concepts, vis.visibility, np.full(len(vis.concepts), np.nan))
    directions = explain_subspaces(egeom, normalized_dictionary(raw, normalize), explainer, n_directions,
                                   row_order="dictionary")
    return {"vocabulary": f"{explainer.description} ({len(concepts)} concepts)", "visibility": vis,
            "families": vis.family_means(concept_families) if concept_families else {},
            "directions": directions, "seen_dim": egeom.rank}


def _example(geom, head, T, f, stats, texts, text_embs, gallery, n_neighbours) -> dict:
    """Image 0 steered (gradient path) towards or away from the text that moves it most at the IS; its logits and
    gallery neighbours."""
    from .steering import gradient_path

    # the text that image 0 moves towards most; away from a text when no flow towards one reaches the IS
    for d, row in enumerate((stats.as_towards[0], np.abs(stats.as_away[0]))):
        if np.isfinite(row).any():
            j = int(np.argmax(np.where(np.isfinite(row), row, -np.inf)))
            break
    else:
        return {}
    st = gradient_path(geom, T, f, text_embs[j], stats.image_score, 1 if d == 0 else -1)
    base, moved = head.logits(f), head.logits(st.f_tilde)
    out = {"text": texts[j], "direction": "towards" if d == 0 else "away from",
           "image_score": st.image_score, "attribute_score": st.attribute_score,
           "logit_change": float(np.max(np.abs(moved - base)) / np.max(np.abs(base))),
           "prediction": head.class_names[int(np.argmax(base))],
           "prediction_kept": bool(np.argmax(moved) == np.argmax(base)), "neighbours": {}}
    if gallery is not None:
        for which, vec in (("f", st.e), ("f_tilde", st.e_tilde)):
            idx, cos = gallery.nearest(vec, n_neighbours)
            out["neighbours"][which] = [(int(i), gallery.captions[i], round(float(c), 6))
                                        for i, c in zip(idx[0], cos[0])]
    return out
