"""Data-free layer similarity for CLIP vision transformers, from the weights alone (METHODS.md section 10).

Per layer l (its H heads, each with its n leading value-output singular directions):

- concept profile p_l (M,): sum over the heads' write directions i of sigma_i times the coefficients of the
  direction's explanation (both signs, +v and -v, since a head writes sigma (u . x) v with either sign) over
  the vocabulary (``inspect_model``); layers compare by the cosine of their profiles;
- write subspace: the span of the directions' joint-space images (``to_joint``), H * n vectors in R^E; layers
  compare by the mean squared cosine of the principal angles between their subspaces (``linalg.principal_angles``).

Both work across checkpoints of one architecture (base vs tuned or edited) and across architectures that share
a joint space width (the subspace measure) or a vocabulary (the profile measure).
"""
from __future__ import annotations

import numpy as np

from ...models.adapters import block_modules, describe_model
from ...decompose.head_svd import check_index, decompose_model
from ..inspection import inspect_model
from ...decompose.joint import to_joint
from .measures import cosine_matrix, subspace_matrix
from .result import Similarity


def layer_profiles(inspection, layers: list[int], index: dict[str, int]) -> np.ndarray:
    """(L, M) concept profiles of the chosen layers from an Inspection (write side), over concepts ``index``."""
    P = np.zeros((len(layers), len(index)))
    row = {l: i for i, l in enumerate(layers)}
    for (l, _h), rep in inspection.heads.items():
        if l not in row:
            continue
        for d in rep.directions:
            if d.side == "write":
                for c, w in zip(d.concepts, d.coefficients):
                    P[row[l], index[c]] += rep.s[d.index] * abs(w)
    return P


def layer_subspaces(weights, layers: list[int], n_directions: int, progress: bool = True) -> list[np.ndarray]:
    """Per layer, the joint-space images (H * n, E) of every head's n leading write directions."""
    svds = decompose_model(weights, layers=layers, progress=progress)
    return [np.vstack([to_joint(weights, svd.write[:n_directions]) for (l, _), svd in svds.items() if l == layer])
            for layer in layers]


def datafree_similarity(models: list, names: list[str], explainer=None, *, layers=None, n_directions: int = 4,
                        progress: bool = True) -> Similarity:
    """Profile and subspace layer matrices of every pair of models (LoadedModels), each model with itself too.

    names: one distinct name per model; explainer: the ``ConceptExplainer`` of the profiles (``inspect_model``'s
    default when None); layers: block indices (default all); n_directions: leading singular directions per head
    that form a layer's profile and subspace. Layer names are the blocks' module names, as the data-based measures
    use them.
    """
    from ...concepts.explainer import ConceptExplainer

    explainer = explainer or ConceptExplainer()
    spaces, layer_names = [], {}
    insps = []
    for loaded, name in zip(models, names):
        weights = describe_model(loaded)
        chosen = list(range(weights.n_layers)) if layers is None else \
            sorted({check_index(i, weights.n_layers, "layer") for i in layers})
        layer_names[name] = [block_modules(loaded)["names"][i] for i in chosen]
        insps.append((chosen, inspect_model(loaded, explainer, layers=chosen, n_directions=n_directions,
                                            sides=("write",), progress=progress)))
        spaces.append(layer_subspaces(weights, chosen, n_directions, progress))
    vocab = sorted({c for _, insp in insps for rep in insp.heads.values() for d in rep.directions for c in d.concepts})
    index = {c: i for i, c in enumerate(vocab)}
    profiles = [layer_profiles(insp, chosen, index) for chosen, insp in insps]
    result = Similarity(layer_names, settings={"vocabulary": insps[0][1].vocabulary, "k": int(explainer.k),
                                               "lam": float(explainer.lam), "n_directions": n_directions})
    for i, a in enumerate(names):
        for j in range(i, len(names)):
            same = i == j
            result.matrices["profile", a, names[j]] = cosine_matrix(profiles[i], profiles[j], same=same)
            result.matrices["subspace", a, names[j]] = subspace_matrix(spaces[i], spaces[j], same=same)
    return result
