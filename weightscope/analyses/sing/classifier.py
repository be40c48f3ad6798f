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
from ...core.linalg import RANK_RTOL
from .analysis import BUNDLED_VOCAB, GENERAL_VOCAB, class_text, shapes_families
from .inputs import MAX_FOLDER_IMAGES, _clip_embed_pil, _generated, clip_image_embeddings, folder_images, read_texts, shapes_texts

N_FIT_IMAGES = 8000          # generated images the shipped classifiers' translators are fitted on
FIT_SEED = 70_000
N_IMAGES = 256               # generated images analysed for the shipped classifiers
IMAGE_SEED = 80_000
TRANSLATOR_KINDS = ("linear", "mlp")


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


def shipped_translator(classifier, loaded, kind: str = "linear", n_images: int | None = None,
                       progress: bool = False):
    """The translator of a shipped shapes classifier (its name, or the loaded ``Classifier``) into ``loaded``'s
    image space, fitted on ``n_images`` generated scenes (default ``N_FIT_IMAGES``; seed ``FIT_SEED``, every
    attribute uniform; disjoint from the analysed images)."""
    from ...models.classifiers import Classifier, load_classifier
    from .translator import fit_translator

    clf = classifier if isinstance(classifier, Classifier) else load_classifier(classifier)
    images, _ = _generated(N_FIT_IMAGES if n_images is None else n_images, FIT_SEED)
    return fit_translator(clf.features(images, progress=progress), clip_image_embeddings(loaded, images), kind=kind)


# ---------------------------------------------------------------------------------------------------- analysis

def classifier_analysis(classifier="bundled-cnn", model=None, *, pretrained=None, checkpoint=None, translator=None,
                        images=None, texts=None, gallery=None, image_score: float = 40.0, rtol: float = RANK_RTOL,
                        trust: bool = False, n_images: int | None = None, n_fit_images: int | None = None,
                        max_images: int = MAX_FOLDER_IMAGES, vocabulary=None, n_directions: int = 4,
                        method: str = "comp", k: int = 5, lam: float = 0.3, normalize: str = "splice",
                        n_neighbours: int = 6, cache_dir=None, progress: bool = True) -> ClassifierSingResult:
    """SING through a translator (module docstring).

    classifier: "bundled-cnn", "bundled-vit", a classifier file (``weightscope.models.classifiers.load_classifier``), or a
    ``Classifier``. model: the CLIP model T maps into (a LoadedModel, a name with pretrained / checkpoint, or None:
    the bundled model). translator: a saved translator file (``save_translator``) or a Translator, or "linear"
    (default) / "mlp" to fit one on paired images (generated scenes for the shipped classifiers, else ``images``).
    images: a folder of images to analyse; required unless the classifier is a shipped one. texts: a list of texts or
    a file (one per line); default: the shapes world's attribute texts (shipped classifiers), else "an image of a
    <class>" per class. gallery: a folder for equivalent images by retrieval (default: the shapes-world gallery for
    the bundled CLIP model). image_score: IS in degrees at which |AS| is reported (SING: 40). n_images / n_fit_images:
    generated scenes analysed / the translator is fitted on (shipped classifiers; default ``N_IMAGES`` /
    ``N_FIT_IMAGES``); max_images: the most images read
    from ``images`` (evenly spaced over the sorted paths when there are more). vocabulary, n_directions, method, k, lam, normalize: the concepts whose
    visibility through T is measured and the COMP explanations of the seen and null directions in E, as in
    :func:`.analysis.sing_analysis` (affine T only: an MLP's null-space image is not a subspace).
    Every argument is checked before any model is loaded; bad input raises WeightscopeError (one line).
    """
    from ...models.classifiers import Classifier, load_classifier
    from ...concepts.embed import NORMALIZATIONS
    from ...decompose.linear_heads import placeholder_class_names
    from ..inspection import parse_vocabulary_spec
    from ...models.load import LoadedModel, load_model
    from .analysis import text_embeddings
    from .gallery import model_hash
    from .geometry import head_geometry
    from .statistics import attribute_statistics
    from .translator import Translator, fit_translator, load_translator

    # ----- everything a user can get wrong, before any loading
    n_images = N_IMAGES if n_images is None else n_images
    n_fit_images = N_FIT_IMAGES if n_fit_images is None else n_fit_images
    if not 0.0 < float(image_score) < 180.0:
        raise WeightscopeError(f"image score (--image-score) {image_score:g} deg must lie in (0, 180); SING reports 40")
    for what, n in (("n_images", n_images), ("n_fit_images", n_fit_images), ("max_images", max_images)):
        if not isinstance(n, (int, np.integer)) or n < (5 if what == "n_fit_images" else 1):
            raise WeightscopeError(f"{what} = {n!r}; give a positive integer (at least 5 to fit a translator)")
    if not isinstance(translator, Translator):
        check_translator_spec(translator)
    text_list, families = None, None
    if texts is not None:
        text_list = read_texts(texts) if isinstance(texts, (str, Path)) else [" ".join(str(t).split()) for t in texts]
        if not text_list or not all(text_list):
            raise WeightscopeError("texts must be non-empty strings, e.g. 'a red object'")
    if gallery is not None and not Path(gallery).is_dir():
        raise WeightscopeError(f"gallery folder not found: {gallery}")
    if normalize not in NORMALIZATIONS:
        raise WeightscopeError(f"normalize={normalize!r}; use one of {', '.join(NORMALIZATIONS)}")
    if not isinstance(n_directions, (int, np.integer)) or n_directions < 1:
        raise WeightscopeError(f"n_directions = {n_directions!r}; give a positive integer")
    if vocabulary is not None:
        concepts, vocab_desc = parse_vocabulary_spec(vocabulary)
    pil, n_found = (folder_images(images, max_images)[1:] if images is not None else (None, 0))
    clf = classifier if isinstance(classifier, Classifier) else load_classifier(str(classifier), trust=trust)
    shipped = clf.source == "bundled"
    if pil is None and not shipped:
        raise WeightscopeError(f"{clf.name} is not a shipped shapes classifier: give a folder of images (--images DIR) "
                               "to fit the translator on and to analyse")
    named = clf.class_names != placeholder_class_names(len(clf.class_names))
    if text_list is None and not shipped and not named:
        raise WeightscopeError(f"{clf.name} has no class names, so there are no class texts to score: give texts "
                               "(--texts FILE) or class_names in its JSON sidecar")
    T = None
    if isinstance(translator, Translator):
        T = translator
    elif translator is not None and translator not in TRANSLATOR_KINDS:
        T = load_translator(translator)
    preprocessing = {"image_size": clf.image_size, "mean": [float(x) for x in clf.mean],
                     "std": [float(x) for x in clf.std]}
    provenance = {"classifier": clf.name, "classifier_sha256": model_hash(clf.module), "preprocessing": preprocessing}
    if T is not None:
        _check_translator(T, translator, provenance, clf.head.n_features)
    loaded = model if isinstance(model, LoadedModel) else load_model(model, pretrained=pretrained,
                                                                    checkpoint=checkpoint)
    if text_list is None:
        if shipped:
            families = shapes_texts()
            text_list = [t for group in families.values() for t in group]
        else:
            text_list = [class_text(n) for n in clf.class_names]

    # ----- paired features and CLIP embeddings
    labels = None
    if pil is None:
        an_images, labels = _generated(n_images, IMAGE_SEED)
        feats, embs = clf.features(an_images, progress=progress), clip_image_embeddings(loaded, an_images)
        images_desc = f"generated shapes-world scenes (seed {IMAGE_SEED}, every attribute uniform)"
        example_image = an_images[0]
    else:
        feats, embs = clf.features(pil, progress=progress), _clip_embed_pil(loaded, pil)
        images_desc = f"folder {Path(images).name}"
        example_image = np.asarray(pil[0].convert("RGB"))
    provenance["clip_model"] = loaded.identity
    if T is not None:
        _check_translator(T, translator, provenance, feats.shape[1], embs.shape[1])
        source = "given" if isinstance(translator, Translator) else f"loaded from {Path(translator).resolve()}"
    elif shipped:
        T = shipped_translator(clf, loaded, translator or "linear", n_fit_images, progress=progress)
        source = f"fitted on {n_fit_images} generated scenes (seed {FIT_SEED})"
    else:
        T = fit_translator(feats, embs, kind=translator or "linear")
        source = f"fitted on the {len(feats)} analysed images"
    if T.provenance is None:
        T.provenance = provenance

    text_embs = text_embeddings(loaded, text_list)
    names = list(clf.class_names)
    notes = []
    if images is not None and n_found > len(pil):
        notes.append(f"the folder holds {n_found} images; {len(pil)} of them, evenly spaced over the sorted paths, "
                     "were used (max_images)")
    head = clf.head
    geom = head_geometry(head, rtol)
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
        if vocabulary is None:          # the default depends on the CLIP model, as in part 1
            concepts, vocab_desc = parse_vocabulary_spec(BUNDLED_VOCAB if loaded.source.startswith("bundled")
                                                         else GENERAL_VOCAB)
        semantics = _semantics(loaded, geom, T, concepts, vocab_desc, n_directions, method, k, lam, normalize,
                               cache_dir, progress)
    gallery_obj = _gallery(loaded, gallery, cache_dir, progress)
    example = _example(geom, head, T, feats[0], stats, text_list, text_embs, gallery_obj, n_neighbours)
    accuracy = float(np.mean(stats.predicted == labels)) if labels is not None else None
    counts = np.bincount(stats.predicted, minlength=len(names))
    if len(names) > 2 and len(feats) >= 20 and counts.max() >= 0.9 * len(feats):
        notes.append(f"the classifier predicts {names[int(counts.argmax())]!r} for {counts.max()} of {len(feats)} "
                     f"images: check its preprocessing ({clf.source})")
    if not named:
        notes.append("the classifier has no class names (give class_names in its JSON sidecar), so SING's class "
                     "leakage ('an image of a <class>') is not measured")
    return ClassifierSingResult(
        classifier=clf.name, clip_model=loaded.identity, class_names=names, n_features=geom.n_features,
        rank=geom.rank, null_dim=geom.null_dim, rtol=geom.rtol, singular_values=[float(s) for s in geom.s],
        translator={"kind": T.kind, "source": source, "report": None if T.report is None else asdict(T.report)},
        n_embed=embs.shape[1], images=images_desc, n_images=len(feats), accuracy=accuracy,
        classifier_source=clf.source, preprocessing=preprocessing, notes=notes,
        image_score=float(image_score), statistics=stats, optimal=optimal, classes=classes, example=example,
        **semantics, gallery=gallery_obj, example_image=example_image, translator_object=T)


def _semantics(loaded, geom, T, concepts, vocab_desc, n_directions, method, k, lam, normalize, cache_dir,
               progress) -> dict:
    """Part 1's visibility and explanations, in E, on the translated geometry: its null space is T(null space) (what
    null moves can change), its row space the complement (what they cannot: what the classifier sees through T)."""
    from ...concepts.embed import embed_concepts
    from .geometry import HeadGeometry
    from .semantics import Visibility, concept_visibility, explain_subspaces, normalized_dictionary
    from .steering import translated_geometry

    egeom, _ = translated_geometry(geom, T)
    raw = embed_concepts(loaded.model, loaded.tokenizer, concepts, normalize="none", model_name=loaded.name,
                         cache_dir=cache_dir, progress=progress)
    # egeom.s are the singular values of N M (its null side); the seen side has none, so there is no gain to report
    seen = HeadGeometry(np.ones(egeom.rank), egeom.row, egeom.null, egeom.rtol)
    vis = concept_visibility(seen, raw, concepts, normalize)
    vis = Visibility(vis.concepts, vis.visibility, np.full(len(vis.concepts), np.nan))
    directions = explain_subspaces(egeom, normalized_dictionary(raw, normalize), concepts, n_directions,
                                   method=method, k=k, lam=lam, row_order="dictionary")
    return {"vocabulary": f"{vocab_desc} ({len(concepts)} concepts)", "visibility": vis,
            "families": vis.family_means(shapes_families()) if loaded.source.startswith("bundled") else {},
            "directions": directions, "seen_dim": egeom.rank}


def _gallery(loaded, folder, cache_dir, progress):
    from . import gallery as gal

    if folder is not None:
        return gal.folder_gallery(loaded, folder, cache_dir=cache_dir, progress=progress)
    if loaded.source.startswith("bundled"):
        return gal.shapes_gallery(loaded, cache_dir=cache_dir, progress=progress)
    return None


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
