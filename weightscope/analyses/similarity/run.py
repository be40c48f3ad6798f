"""One entry point for the CLI and notebooks: load models, run the data-based and/or data-free measures."""
from __future__ import annotations

from pathlib import Path

from ...core.errors import WeightscopeError
from .databased import compare_probed, probe_model
from .datafree import datafree_similarity
from .result import Similarity, merge
from .sources import ArrayInputs, FolderInputs, clip_layers, folder_concepts, shapes_concepts

CONCEPT_SOURCES = ("shapes", "cifar10")
DEFAULT_MODELS = ("bundled", "bundled:tuned")


def load_models(specs) -> tuple[list, list[str]]:
    """LoadedModels and distinct display names from specs (``compare.SPEC_HELP``) or LoadedModels; the second and
    later bare checkpoint paths take the first model's architecture."""
    from ..compare import architecture_of, load_checkpoint
    from ...models.load import LoadedModel, load_model

    loaded = []
    for spec in specs:
        if isinstance(spec, LoadedModel):
            loaded.append(spec)
        elif isinstance(spec, str):
            loaded.append(load_checkpoint(spec, architecture_of(loaded[0]) if loaded else None))
        else:
            loaded.append(load_model(spec))
    names = []
    for m in loaded:
        name, n = m.identity, 2
        while name in names:
            name, n = f"{m.identity}#{n}", n + 1
        names.append(name)
    return loaded, names


def layer_similarity(
    models=None,
    *,
    concepts: str | None = None,
    data_free: bool | None = None,
    images: str | Path | None = None,
    n_images: int | None = None,
    layers=None,
    vocabulary=None,
    k: int = 5,
    lam: float = 0.3,
    n_directions: int = 4,
    seed: int = 0,
    progress: bool = True,
    cache_dir=None,
) -> Similarity:
    """Layer x layer (and model x model) similarity of one or more CLIP vision towers.

    models: specs or LoadedModels (default: the bundled base and tuned checkpoints). concepts: "shapes" (pixel-mask
    concepts of the shapes world, spatial probes on patch tokens) or "cifar10" (image-level class concepts of the
    folder ``images``, one subfolder per class; probes on the class token); None: no data-based measures.
    data_free: profile and subspace measures (default: on when no concepts are given). n_images: images for the
    probes (shapes default 2000; folders default all). layers: block indices (default all). vocabulary, k, lam,
    n_directions: the data-free explanation (see ``datafree_similarity``).
    Everything is validated before any activation is computed or any head is explained.
    """
    if concepts is not None and concepts not in CONCEPT_SOURCES:
        raise WeightscopeError(f"unknown concepts {concepts!r}: choose one of {', '.join(CONCEPT_SOURCES)}")
    if concepts == "cifar10" and images is None:
        raise WeightscopeError("--concepts cifar10 needs the test images: pass --images DIR (one subfolder per class)")
    if images is not None and concepts != "cifar10":
        raise WeightscopeError("--images is read only with --concepts cifar10")
    if n_images is not None and (not isinstance(n_images, int) or n_images < 20):
        raise WeightscopeError(f"n_images must be an integer of at least 20, got {n_images!r}")
    data_free = concepts is None if data_free is None else data_free
    if not data_free and concepts is None:
        raise WeightscopeError("nothing to do: give --concepts shapes|cifar10 and/or --data-free")
    if data_free and vocabulary is not None:  # a bad vocabulary or k must fail before any probe is fitted
        from ..inspection import parse_vocabulary_spec

        size = len(parse_vocabulary_spec(vocabulary)[0])
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= size:
            raise WeightscopeError(f"k = {k} must be between 1 and the vocabulary size ({size})")
    loaded, names = load_models(list(models) if models else list(DEFAULT_MODELS))
    hooks = [clip_layers(m, layers, spatial=concepts == "shapes") for m in loaded]  # validates layer indices
    settings = {"models": names, "concepts": concepts, "data_free": data_free, "seed": seed}
    results = []
    if concepts == "shapes":
        imgs, annotations = shapes_concepts(n_images or 2000, seed=seed + 7)
        inputs = [ArrayInputs(imgs, size) for _, _, _, size in hooks]
    elif concepts == "cifar10":
        files, annotations = folder_concepts(images, n_images, seed)
        for m in loaded:
            if m.preprocess is None:
                raise WeightscopeError(f"{m.identity} came without its image preprocessing; load it by name")
        inputs = [FolderInputs(files, m.preprocess) for m in loaded]
    if concepts is not None:
        probed = [probe_model(m.model, x, annotations, chosen, name=name, forward=fwd, reduce=reduce, seed=seed,
                              progress=progress)
                  for m, name, x, (chosen, reduce, fwd, _) in zip(loaded, names, inputs, hooks)]
        results.append(compare_probed(probed, {"n_images": len(annotations)}))
    if data_free:
        results.append(datafree_similarity(loaded, names, layers=layers, vocabulary=vocabulary, k=k, lam=lam,
                                           n_directions=n_directions, progress=progress, cache_dir=cache_dir))
    out = merge(*results)
    out.settings.update(settings)
    return out
