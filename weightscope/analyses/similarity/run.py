"""One entry point for the CLI and notebooks: load models, run the data-based and/or data-free measures."""
from __future__ import annotations

import numpy as np

from ...core.errors import WeightscopeError
from .databased import compare_probed, probe_model
from .datafree import datafree_similarity
from .result import Similarity, merge
from .sources import ArrayInputs, FolderInputs, ProbeData, clip_layers



def load_models(specs, loading=None) -> tuple[list, list[str]]:
    """LoadedModels and distinct display names from specs (``compare.SPEC_HELP``) or LoadedModels; the second and
    later bare checkpoint paths take the first model's architecture. loading: ``compare.SpecLoading``."""
    from ..compare import architecture_of, load_checkpoint
    from ...models.load import LoadedModel, load_model

    loaded = []
    for spec in specs:
        if isinstance(spec, LoadedModel):
            loaded.append(spec)
        elif isinstance(spec, str):
            loaded.append(load_checkpoint(spec, architecture_of(loaded[0]) if loaded else None, loading))
        else:
            loaded.append(load_model(spec))
    names = []
    for m in loaded:
        name, n = m.identity, 2
        while name in names:
            name, n = f"{m.identity}#{n}", n + 1
        names.append(name)
    return loaded, names


def layer_similarity(models, explainer=None, *, probes: ProbeData | None = None, data_free: bool | None = None,
                     layers=None, n_directions: int = 4, seed: int = 0, progress: bool = True) -> Similarity:
    """Layer x layer (and model x model) similarity of one or more CLIP vision towers.

    models: specs or LoadedModels. explainer: the ``ConceptExplainer`` of the data-free profiles (see
    ``datafree_similarity``). probes: images with concept annotations (:class:`ProbeData`: pixel masks and spatial
    probes on patch tokens, or image-level labels and probes on the class token); None: no data-based measures.
    data_free: profile and subspace measures (default: on when no probes are given). layers: block indices
    (default all). n_directions: the data-free explanation's leading directions per head. seed: the probes' seed.
    Everything is validated before any activation is computed or any head is explained.
    """
    data_free = probes is None if data_free is None else data_free
    if not data_free and probes is None:
        raise WeightscopeError("nothing to do: give --concepts shapes|cifar10 and/or --data-free")
    if data_free and explainer is not None and explainer.vocabulary is not None:
        explainer.check()  # a bad vocabulary or k must fail before any probe is fitted
    if not models:
        raise WeightscopeError("give at least one model to compare")
    loaded, names = load_models(list(models))
    hooks = [clip_layers(m, layers, spatial=probes is not None and probes.spatial)
             for m in loaded]  # validates layer indices
    settings = {"models": names, "concepts": probes.name if probes is not None else None, "data_free": data_free,
                "seed": seed}
    results = []
    if probes is not None:
        if isinstance(probes.images, np.ndarray):
            inputs = [ArrayInputs(probes.images, size) for _, _, _, size in hooks]
        else:
            for m in loaded:
                if m.preprocess is None:
                    raise WeightscopeError(f"{m.identity} came without its image preprocessing; load it by name")
            inputs = [FolderInputs(list(probes.images), m.preprocess) for m in loaded]
        annotations = probes.concepts
        probed = [probe_model(m.model, x, annotations, chosen, name=name, forward=fwd, reduce=reduce, seed=seed,
                              progress=progress)
                  for m, name, x, (chosen, reduce, fwd, _) in zip(loaded, names, inputs, hooks)]
        results.append(compare_probed(probed, {"n_images": len(annotations)}))
    if data_free:
        results.append(datafree_similarity(loaded, names, explainer, layers=layers, n_directions=n_directions,
                                           progress=progress))
    out = merge(*results)
    out.settings.update(settings)
    return out
