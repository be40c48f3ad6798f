"""Concept-based comparison of layers and models (seed 002; METHODS.md section 10).

- ``activations`` (weightscope.models.activations): forward hooks on named modules of any torch model, batched, reduced
  per batch.
- ``concepts``: Net2Vec-style concept vectors (logistic-regression probes), spatial with masks, image-level without;
  quality = held-out IoU or AP.
- ``databased``: concept vectors of two layers or models compared by the correlation of their responses on the
  same held-out inputs; linear CKA beside it.
- ``datafree``: the weight-space analogue for CLIP ViTs: concept profiles from inspections and joint-space write
  subspaces (profile cosine, principal angles).
- ``measures``: the measures, the relative-depth summary and rank correlations; ``result``: the ``Similarity``.
- ``run.layer_similarity``: the CLI's entry point.
"""
from .concepts import Concepts, ConceptVector, fit_concept_vector, probe_layer, split_indices
from .databased import ProbedModel, ProbeOptions, channels_last, compare_probed, probe_model
from .datafree import datafree_similarity, layer_profiles, layer_subspaces
from .measures import cka_matrix, correlation_matrix, cosine_matrix, depth_alignment, linear_cka, model_similarity, off_diagonal_rank_correlation, relative_depth, subspace_matrix, subspace_similarity
from .result import Similarity, merge
from .run import layer_similarity, load_models
from .sources import ProbeData, clip_layers, folder_concepts, folder_probes, mask_concepts

__all__ = [
    "ConceptVector", "Concepts", "ProbedModel", "Similarity", "channels_last", "cka_matrix", "clip_layers",
    "compare_probed", "correlation_matrix", "cosine_matrix", "datafree_similarity", "depth_alignment",
    "fit_concept_vector", "folder_concepts", "layer_profiles", "layer_similarity", "load_models", "layer_subspaces", "linear_cka",
    "merge", "model_similarity", "off_diagonal_rank_correlation", "probe_layer", "probe_model", "relative_depth",
    "ProbeData", "ProbeOptions", "folder_probes", "mask_concepts", "split_indices", "subspace_matrix", "subspace_similarity",
]
