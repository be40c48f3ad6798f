"""Data-based layer similarity: concept vectors per layer (``concepts``), compared by the correlation of their
responses on the same held-out inputs (seed 002, Mikriukov et al. 2023), with linear CKA beside it.

    probed = [probe_model(net, inputs, concepts, layers, name=...) for net in nets]   # one model at a time
    result = compare_probed(probed)                                                   # a Similarity

Works for any torch model whose named modules output (N, C, H, W) maps, (N, C) vectors, or (with a custom
``reduce``) anything else; ``clip_layers`` gives the hooks and reducer for an open_clip vision tower (patch tokens
form the spatial map, the class token is the image-level feature).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ...models.activations import collect_activations, pool_spatial
from ...core.errors import WeightscopeError
from .concepts import ConceptVector, Concepts, probe_layer, split_indices
from .measures import cka_matrix, correlation_matrix
from .result import Similarity


def channels_last(name: str, out: torch.Tensor) -> np.ndarray:
    """Reducer keeping spatial maps: (N, C, H, W) -> (N, H, W, C) float32; (N, C) kept."""
    if out.ndim == 4:
        out = out.permute(0, 2, 3, 1)
    elif out.ndim != 2:
        raise WeightscopeError(f"layer {name} outputs shape {tuple(out.shape)}; give a reduce function for it")
    return out.detach().to("cpu", torch.float32).numpy()


@dataclass
class ProbedModel:
    """One model's concept vectors and held-out responses, layer by layer (features themselves are dropped).

    vectors[l][c]: ConceptVector of concept c in layer l; responses[l]: (n_test, [h, w,] C) concept scores;
    cka_features[l]: (n_test, d) float32 flattened held-out features (None when CKA was not asked for).
    """

    name: str
    layers: list[str]
    concepts: list[str]
    vectors: list[list[ConceptVector]]
    responses: list[np.ndarray]
    cka_features: list[np.ndarray] | None
    test: np.ndarray


@dataclass(frozen=True)
class ProbeOptions:
    """How concept probes are fitted: the held-out share, the mask-cell threshold of a positive patch, the logistic
    regression's inverse penalty C, whether linear CKA features are kept, and the activation batch size."""

    test_fraction: float = 0.5
    mask_threshold: float = 0.05
    C: float = 1.0
    cka: bool = True
    batch_size: int = 256


def probe_model(model: torch.nn.Module, inputs, concepts: Concepts, layers: Sequence[str], *, name: str,
                forward: Callable | None = None, reduce: Callable | None = None, seed: int = 0,
                options: ProbeOptions = ProbeOptions(), progress: bool = True) -> ProbedModel:
    """Concept vectors of every concept in every layer of one model, fitted on a seeded split of the inputs.

    inputs: (N, ...) tensor, array or lazy sliceable loader; concepts: their annotations (len N). reduce: per-batch
    reducer of a layer's output (default: ``channels_last`` for masked concepts, global average pooling otherwise).
    options: :class:`ProbeOptions`.
    Only reduced features are kept, and only until the layer's probes are fitted. Raises WeightscopeError for
    unknown layer names, len(inputs) != len(concepts), or a concept with one class in either split.
    """
    if len(inputs) != len(concepts):
        raise WeightscopeError(f"{len(inputs)} images but {len(concepts)} rows of concept labels; give one per image")
    test_fraction, mask_threshold, C, cka = options.test_fraction, options.mask_threshold, options.C, options.cka
    batch_size = options.batch_size
    train, test = split_indices(len(concepts), test_fraction, seed)
    feats = collect_activations(model, inputs, layers, reduce=reduce or (channels_last if concepts.spatial else pool_spatial),
                                forward=forward, batch_size=batch_size, progress=progress, desc=f"activations {name}")
    vectors, responses, cka_feats = [], [], [] if cka else None
    for layer in list(feats):
        x = feats.pop(layer)  # free each layer once probed
        vecs, resp = probe_layer(x, concepts, train, test, layer, mask_threshold=mask_threshold, C=C, seed=seed)
        vectors.append(vecs)
        responses.append(resp.astype(np.float32))
        if cka:
            cka_feats.append(x[test].reshape(len(test), -1).astype(np.float32))
    return ProbedModel(name, list(layers), list(concepts.names), vectors, responses, cka_feats, test)


def _common_grid(maps: list[np.ndarray]) -> list[np.ndarray]:
    """Concept maps (n, h, w) brought to the finest grid among them (bilinear), so locations correspond."""
    h = max(m.shape[1] for m in maps)
    w = max(m.shape[2] for m in maps)
    out = []
    for m in maps:
        if m.shape[1:] != (h, w):
            t = torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32))[:, None]
            m = torch.nn.functional.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)[:, 0].numpy()
        out.append(m)
    return out


def compare_probed(probed: list[ProbedModel], settings: dict | None = None) -> Similarity:
    """Layer x layer similarity of every pair of probed models (each model with itself too).

    Per concept: Pearson correlation of the two layers' responses on the same held-out inputs ("concept:<name>");
    "concept": their mean over concepts; "cka": linear CKA of the held-out features. Probes' qualities are kept.
    """
    if not probed:
        raise WeightscopeError("nothing to compare: no probed models")
    ref = probed[0]
    names = [p.name for p in probed]
    if len(set(names)) != len(names):
        raise WeightscopeError(f"model names repeat: {names}; give each model a distinct name")
    for p in probed[1:]:
        if p.concepts != ref.concepts or not np.array_equal(p.test, ref.test):
            raise WeightscopeError(f"{p.name} was probed on other concepts or held-out images than {ref.name}")
    result = Similarity({p.name: p.layers for p in probed}, settings=dict(settings or {}))
    for p in probed:
        result.probes.extend(v.record(p.name) for layer in p.vectors for v in layer)
    for i, a in enumerate(probed):
        for b in probed[i:]:
            same = a is b
            per_concept = []
            for c, concept in enumerate(ref.concepts):
                ra = [r[..., c] for r in a.responses]
                rb = [r[..., c] for r in b.responses]
                if ra[0].ndim == 3:
                    both = _common_grid(ra + rb)
                    ra, rb = both[:len(ra)], both[len(ra):]
                S = correlation_matrix(ra, rb, same=same)
                result.matrices[f"concept:{concept}", a.name, b.name] = S
                per_concept.append(S)
            mean = np.mean(per_concept, axis=0)
            if same:
                np.fill_diagonal(mean, 1.0)
            result.matrices["concept", a.name, b.name] = mean
            if a.cka_features is not None and b.cka_features is not None:
                result.matrices["cka", a.name, b.name] = cka_matrix(a.cka_features, b.cka_features, same=same)
    return result
