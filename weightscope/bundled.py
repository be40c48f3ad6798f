"""The bundled shapes-world models as the default inputs of every analysis: the one door to ``weightscope.shapes``.

The analyses take their inputs as arguments (a loaded model, classes, texts, images, a gallery, probe data); this
module supplies them when a user names none, for the top-level API (``weightscope.load_model()``,
``weightscope.inspect_model()`` ...) and the command line. Nothing below this layer imports the shapes world
(``tests/test_architecture.py``).

- ``load_model``: ``None`` / ``"bundled"`` (``pretrained="tuned"`` for the fine-tuned sibling) / ``"shapes-vit"``
  and the shipped checkpoint files; any other spec goes to :func:`weightscope.models.load.load_model`.
- ``load_classifier``: ``"bundled-cnn"`` / ``"bundled-vit"`` and weightscope classifier files (safetensors + JSON).
- defaults of head inspection, SING (parts 1 and 2), Similarity Depth, concept similarity and compare.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .analyses.sing.analysis import ClassSet
from .concepts.explainer import ConceptExplainer
from .core.errors import WeightscopeError
from .models.load import BUNDLED, LoadedModel
from .shapes import bundled as _assets
from .shapes import evaluate as _evaluate
from .shapes import world as _world

MODEL_NAME = _assets.MODEL_NAME
CLASSIFIERS = ("bundled-cnn", "bundled-vit")
#: head inspection's vocabulary for the bundled model, normalised with "l2" (see ``inspect_model``)
INSPECT_VOCAB = "shapes_world"  # in-domain: general words were never seen by this text tower (README, issue 31)
#: SING's vocabulary for the bundled model (parts 1 and 2)
SING_VOCAB = "shapes_world"
#: the bundled checkpoints by spec tag, for content keys of saved comparisons
CHECKPOINT_FILES = {tag: str(path) for tag, path in _assets.CHECKPOINTS.items()}


# --------------------------------------------------------------------------------------------------- models

def is_bundled(loaded) -> bool:
    """True for the shapes-world architecture, shipped or edited (its defaults apply)."""
    return isinstance(loaded, LoadedModel) and loaded.name == MODEL_NAME


def _shipped(path) -> str | None:
    resolved = Path(path).resolve()
    return next((tag for tag, p in _assets.CHECKPOINTS.items() if p.resolve() == resolved), None)


@dataclass(frozen=True)
class ModelSpec:
    """A model named the way the command line names one (MODEL [--pretrained TAG | --checkpoint PATH]), loaded only
    when an analysis has checked everything else: pass it where a model is taken."""

    model: str | None = None
    pretrained: str | None = None
    checkpoint: str | None = None
    trust_checkpoint: bool = False


def load_model(model=None, pretrained=None, checkpoint=None, tokenizer=None, trust_checkpoint: bool = False,
               lazy: bool = False):
    """:func:`weightscope.models.load.load_model` plus the bundled shapes-world model (offline).

    ``load_model()`` / ``load_model("bundled")``: the shipped base checkpoint; ``pretrained="tuned"``: its fine-tuned
    sibling; ``"shapes-vit"`` is the architecture's name, usable like any open_clip name; a checkpoint with no name
    and no sidecar is read as that architecture. lazy: see :func:`weightscope.models.load.load_model`. Returns a
    LoadedModel; raises WeightscopeError (one line).
    """
    from .models.checkpoints import architecture, read_sidecar
    from .models.load import load_model as load_any

    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, ModelSpec):
        model, pretrained, checkpoint, trust_checkpoint = (model.model, model.pretrained, model.checkpoint,
                                                           model.trust_checkpoint)
    _assets.register()  # makes "shapes-vit" an open_clip name (idempotent, no I/O beyond its small config)
    if isinstance(model, str) and model.lower().endswith((".safetensors", ".pt", ".pth", ".bin")):
        tag = _shipped(model) if Path(model).is_file() else None
        if tag is not None and read_sidecar(model) is None:
            model, pretrained = BUNDLED, tag
    tag = pretrained if pretrained is not None and not Path(str(pretrained)).is_file() else None
    if pretrained is not None and tag is None:
        checkpoint, pretrained = pretrained, None
    if model in (None, BUNDLED, MODEL_NAME) and tag is not None:
        return _load_shipped(tag, tokenizer)
    if model is None and checkpoint is not None and architecture(read_sidecar(checkpoint)) is None:
        model = MODEL_NAME  # a bare checkpoint with no sidecar: the bundled architecture
    if model in (None, BUNDLED):
        if checkpoint is None:
            return _load_shipped("base", tokenizer)
        model = MODEL_NAME
    return load_any(model, pretrained=pretrained, checkpoint=checkpoint, tokenizer=tokenizer,
                    trust_checkpoint=trust_checkpoint, lazy=lazy)


def _load_shipped(which: str, tokenizer) -> LoadedModel:
    from .models.load import load_model as load_any

    if which not in _assets.CHECKPOINTS:
        raise WeightscopeError(f"the bundled model has checkpoints 'base' and 'tuned', not {which!r} "
                               "(a file goes in checkpoint=)")
    loaded = load_any(MODEL_NAME, checkpoint=_assets.checkpoint_path(which), tokenizer=tokenizer)
    loaded.source = loaded.model._weightscope_provenance["source"]["source"] = f"bundled:{which}"
    return loaded


def spec_loading(trust_checkpoint: bool = False, model: str | None = None):
    """``compare.SpecLoading`` that also knows the bundled checkpoints ("bundled", "bundled:tuned" specs)."""
    from .analyses.compare import SpecLoading

    return SpecLoading(trust_checkpoint, load_model, model, CHECKPOINT_FILES)


def load_classifier(spec="bundled-cnn", trust: bool = False, class_names=None):
    """:func:`weightscope.models.classifiers.load_classifier` plus the shipped shapes classifiers
    ("bundled-cnn", "bundled-vit") and weightscope classifier files (safetensors with a JSON config)."""
    from .models.classifiers import classifier_from_module, load_classifier as load_any
    from .shapes import classifiers as shipped

    spec = str(spec)
    if spec.startswith("bundled-") and not Path(spec).exists():
        if spec not in CLASSIFIERS:
            raise WeightscopeError(f"unknown bundled classifier {spec!r}; choose one of {', '.join(CLASSIFIERS)}")
        path = shipped.bundled_path(spec.removeprefix("bundled-"))
        if not path.is_file():
            raise WeightscopeError(f"bundled classifier {path} is missing; reinstall weightscope or recreate it with "
                                   "`python -m weightscope.shapes.train_classifiers --reproduce DIR`")
        module, config = shipped.load_classifier_file(path)
        return classifier_from_module(spec, module, config, "bundled", class_names)
    path = Path(spec)
    if path.is_file() and path.suffix == ".safetensors" and shipped.read_config(path) is not None:
        module, config = shipped.load_classifier_file(path)
        return classifier_from_module(path.name, module, config, str(path), class_names)
    return load_any(spec, trust=trust, class_names=class_names)


# --------------------------------------------------------------------------------------------------- analyses

def is_shipped(loaded) -> bool:
    """True for a shipped checkpoint of the bundled model (not an edited copy): SING's defaults apply."""
    return isinstance(loaded, LoadedModel) and str(loaded.source).startswith(BUNDLED)


def explainer_for(loaded, explainer: ConceptExplainer | None, analysis: str) -> ConceptExplainer | None:
    """The explainer with the bundled model's defaults of ``analysis`` ("inspect": the architecture, shipped or
    edited; "sing": a shipped checkpoint) filled in where the user left them open; other models keep the
    analysis's own defaults."""
    if not (is_bundled(loaded) if analysis == "inspect" else is_shipped(loaded)):
        return explainer
    explainer = explainer or ConceptExplainer()
    if analysis == "inspect":
        # its text tower never saw the general words, which sit in one tight cluster that dominates the dictionary
        # mean: SpLiCE's centring would turn their residual noise into strong false matches (23 % vs 77 % of the
        # leading directions explained by a shapes-world concept on the shipped base), so "l2"
        return explainer.with_defaults(INSPECT_VOCAB, "l2")
    return explainer.with_defaults(SING_VOCAB, "splice")


def compare_models(base="bundled", tuned="bundled:tuned", **options):
    """:func:`weightscope.analyses.compare.compare_models` that also reads the bundled checkpoints' specs
    ("bundled", "bundled:tuned"; the shipped pair by default)."""
    from .analyses.compare import compare_models as compare

    options.setdefault("loading", spec_loading())
    return compare(base, tuned, **options)


def explainer_for_spec(spec: str, explainer: ConceptExplainer | None) -> ConceptExplainer:
    """Head inspection's explainer for a checkpoint spec (``compare``'s grammar): the bundled defaults when the
    spec names the bundled architecture, before anything is loaded."""
    from .analyses.compare import parse_checkpoint_spec

    explainer = explainer or ConceptExplainer()
    if parse_checkpoint_spec(spec, "architecture")["model"] in (BUNDLED, MODEL_NAME):
        return explainer.with_defaults(INSPECT_VOCAB, "l2")
    return explainer


def inspect_model(model=None, explainer: ConceptExplainer | None = None, **options):
    """:func:`weightscope.analyses.inspection.inspect_model` with the bundled model and its vocabulary as defaults."""
    from .analyses.inspection import inspect_model as inspect

    loaded = load_model(model, lazy=True)  # a random-init name: blocks built as inspect reads them
    return inspect(loaded, explainer_for(loaded, explainer, "inspect"), **options)


def shape_classes() -> ClassSet:
    """The shapes world's 8 shapes with the prompts the bundled model's own evaluation uses."""
    names, templates = _evaluate.TASKS["shape"]
    return ClassSet(list(names), tuple(templates), "shapes")


def shapes_families() -> dict[str, list[str]]:
    """The shapes world's attribute families as concept names of the shapes_world vocabulary."""
    return {"shape": list(_world.SHAPES), "colour": list(_world.COLOUR_NAMES), "size": list(_world.SIZES),
            "position": list(_world.POSITIONS),
            "background": [f"{b} background" for b in _world.BACKGROUND_NAMES]}


def shapes_texts() -> dict[str, list[str]]:
    """The shapes world's attribute families as texts: {family: [text, ...]}, each phrased with the first prompt
    template of the bundled model's evaluation."""
    def phrase(template: str, name: str) -> str:
        text = template.format(name)
        return "an " + text[2:] if text.startswith("a ") and text[2] in "aeiou" else text

    return {fam: [phrase(_evaluate.TASKS[fam][1][0], name) for name in _evaluate.TASKS[fam][0]]
            for fam in ("shape", "colour", "size", "position", "background")}


def shapes_scenes(n: int, seed: int):
    """n seeded one-object scenes with every attribute uniform: (uint8 images (n, S, S, 3), shape labels (n,))."""
    images, scenes = _world.single_objects(int(n), seed, spurious_strength=None)
    return images, scenes.shape[:, 0]


def shapes_gallery(loaded, n: int = 1024, seed: int = 90_000, *, cache_dir=None, progress: bool = True):
    """SING's default gallery for the bundled model: n seeded one-object scenes, captions naming every attribute."""
    from .analyses.sing.gallery import array_gallery

    images, scenes = _world.single_objects(int(n), seed, spurious_strength=None)
    captions = tuple(_world.full_caption(scenes, i) for i in range(len(scenes)))
    return array_gallery(loaded, images, captions, {"kind": "shapes", "n": int(n), "seed": seed},
                         cache_dir=cache_dir, progress=progress)


def _shipped_defaults(loaded, gallery, explainer, progress: bool):
    """(attribute families, gallery) for SING on a shipped bundled checkpoint: the shapes world's families and, unless
    a gallery was given, the shapes gallery; (None, gallery) for any other model."""
    if not is_shipped(loaded):
        return None, gallery
    if gallery is None:
        gallery = shapes_gallery(loaded, cache_dir=explainer.cache_dir if explainer else None, progress=progress)
    return shapes_families(), gallery


def sing_analysis(model=None, classes="shapes", explainer: ConceptExplainer | None = None, *, image=None,
                  texts=None, gallery=None, options=None, progress: bool = True):
    """:func:`weightscope.analyses.sing.sing_analysis` with the bundled defaults: the bundled model, its 8 shape
    classes ("shapes"), and for a shipped checkpoint the shapes gallery, the attribute families and the
    "shapes_world" vocabulary. Every argument is checked before the model is loaded."""
    from .analyses.sing.analysis import SingOptions, check_sing_inputs, sing_analysis as run

    options = options or SingOptions()
    classes = shape_classes() if classes in (None, "shapes") else classes
    check_sing_inputs(classes, explainer, image=image, texts=texts, gallery=gallery, options=options)
    loaded = load_model(model)
    families, gallery = _shipped_defaults(loaded, gallery, explainer, progress)
    return run(loaded, classes, explainer_for(loaded, explainer, "sing"), image=image, texts=texts, gallery=gallery,
               families=families, options=options, progress=progress)


#: generated scenes of SING part 2 for the shipped classifiers: analysed, and the translator's fitting set
N_IMAGES, IMAGE_SEED = 256, 80_000
N_FIT_IMAGES, FIT_SEED = 8000, 70_000


def shipped_image_sets(n_images: int | None = None, n_fit_images: int | None = None):
    """(analysed, fitting) image sets of the shipped classifiers: seeded generated scenes, disjoint seeds."""
    from .analyses.sing.classifier import ImageSet

    n_images = N_IMAGES if n_images is None else n_images
    n_fit_images = N_FIT_IMAGES if n_fit_images is None else n_fit_images
    for what, n in (("n_images", n_images), ("n_fit_images", n_fit_images)):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < (5 if what == "n_fit_images" else 1):
            raise WeightscopeError(f"{what} = {n!r}; give a positive integer (at least 5 to fit a translator)")
    images, labels = shapes_scenes(n_images, IMAGE_SEED)
    analysed = ImageSet(images, f"generated shapes-world scenes (seed {IMAGE_SEED}, every attribute uniform)", labels)
    fit = ImageSet(shapes_scenes(n_fit_images, FIT_SEED)[0], f"generated scenes (seed {FIT_SEED})")
    return analysed, fit


def shipped_translator(classifier, loaded, kind: str = "linear", n_images: int | None = None,
                       progress: bool = False):
    """The translator of a shipped shapes classifier (its name, or the loaded ``Classifier``) into ``loaded``'s
    image space, fitted on ``n_images`` generated scenes (default ``N_FIT_IMAGES``; seed ``FIT_SEED``, every
    attribute uniform; disjoint from the analysed images)."""
    from .analyses.sing.classifier import paired_features
    from .analyses.sing.translator import fit_translator
    from .models.classifiers import Classifier

    clf = classifier if isinstance(classifier, Classifier) else load_classifier(classifier)
    fit = shipped_image_sets(1, n_images)[1]
    return fit_translator(*paired_features(clf, loaded, fit, progress), kind=kind)


def classifier_analysis(classifier="bundled-cnn", model=None, *, translator=None, images=None, texts=None,
                        gallery=None, explainer: ConceptExplainer | None = None, options=None, n_images=None,
                        n_fit_images=None, trust: bool = False, progress: bool = True):
    """:func:`weightscope.analyses.sing.classifier_analysis` with the bundled defaults: a classifier spec
    ("bundled-cnn" default, "bundled-vit", a file); for the shipped classifiers generated scenes to analyse
    (``n_images``) and to fit the translator on (``n_fit_images``) and the attribute texts; the bundled CLIP with
    its gallery, vocabulary and attribute families. images: a folder (read up to ``MAX_FOLDER_IMAGES``, evenly
    spaced). Every argument is checked before the CLIP model is loaded."""
    from .analyses.sing.analysis import SingOptions
    from .analyses.sing.classifier import (ImageSet, check_classifier_inputs, classifier_analysis as run,
                                           folder_image_set)
    from .models.classifiers import Classifier

    options = options or SingOptions()
    analysed = fit = None
    if images is not None:  # a folder, or an ImageSet already read (e.g. several files)
        analysed = images if isinstance(images, ImageSet) else folder_image_set(images)
    clf = classifier if isinstance(classifier, Classifier) else load_classifier(str(classifier), trust=trust)
    if clf.source == "bundled":
        scenes, fit = shipped_image_sets(n_images, n_fit_images)
        analysed = analysed or scenes   # the translator is fitted on generated scenes even for a folder
        texts = shapes_texts() if texts is None else texts
    check_classifier_inputs(clf, analysed, texts, translator=translator, gallery=gallery, options=options)
    loaded = load_model(model)
    concept_families, gallery = _shipped_defaults(loaded, gallery, explainer, progress)
    return run(clf, loaded, analysed, texts, explainer_for(loaded, explainer, "sing"), translator=translator,
               fit_images=fit, gallery=gallery, concept_families=concept_families, options=options,
               progress=progress)


def read_depth_classes(spec: str):
    """Similarity Depth's class list ``spec``: "shapes" (the 8 shapes) or any list ``read_classes`` reads."""
    from .analyses.depth import read_classes

    return (list(_world.SHAPES), list(_world.SHAPES)) if spec == "shapes" else read_classes(spec)


def shapes_confusion(loaded, n_images: int = 2000, seed: int = 20_000, batch_size: int = 500):
    """Zero-shot shape classification of the bundled model on n generated one-object images: (head, confusion
    counts (8, 8) with row = true shape, accuracy); the head is the one the model's own evaluation uses."""
    from .analyses.depth import zero_shot_confusion

    names, templates = _evaluate.TASKS["shape"]
    images, scenes = _world.single_objects(n_images, seed)
    labels = _evaluate.task_labels("shape", scenes)
    return zero_shot_confusion(loaded, names, templates, images, labels, batch_size=batch_size)


def shapes_probes(n_images: int = 2000, seed: int = 7):
    """Concept-similarity probes of the shapes world: images with pixel-mask concepts (spatial probes)."""
    from .analyses.similarity.sources import ProbeData, mask_concepts, subset_scenes

    if isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 20:
        raise WeightscopeError(f"the shapes concepts need at least 20 images, got {n_images!r}")
    rng = np.random.default_rng(seed)
    scenes = _world.sample_scenes(n_images, rng, spurious_strength=None)
    images = _world.render(scenes, rng)
    concepts = mask_concepts(_world.concept_names(), n_images,
                             lambda sl: _world.concept_masks(subset_scenes(scenes, sl)))
    return ProbeData(images, concepts, spatial=True, name="shapes")


EDIT_EVAL_IMAGES = 400


def shapes_accuracies(loaded, n: int = EDIT_EVAL_IMAGES, seed: int = 20_000) -> dict[str, float]:
    """Zero-shot accuracy of a shapes-world model on the world's tasks (shape, colour, size, position, background,
    family) over ``n`` generated one-object scenes (every attribute uniform, a seed far from training's), the
    images embedded once: {task: accuracy in [0, 1]}. What ``weightscope edit`` reports before and after an edit of
    the bundled model."""
    from .analyses.zeroshot import build_classifier, encode_images, images_to_tensor

    images, scenes = _world.single_objects(int(n), seed, spurious_strength=None)
    feats = encode_images(loaded.model, images_to_tensor(images))
    out = {}
    for task, (names, templates) in _evaluate.TASKS.items():
        clf = build_classifier(loaded.model, loaded.tokenizer, names, templates)
        out[task] = float(np.mean(np.argmax(feats @ np.asarray(clf).T, axis=1) == _evaluate.task_labels(task, scenes)))
    return out
