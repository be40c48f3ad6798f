"""SING: the null space of a classifier head and what it hides (METHODS.md section 8; seed 000).

- :mod:`.geometry`: row / null space of a :class:`~weightscope.models.linear_heads.LinearHead`, equivalent features
  ``f + Pi_n delta``, and the closed-form steering with SING's image and attribute scores (degrees).
- :mod:`.semantics`: data-free visibility of concepts to a CLIP head and COMP explanations of its subspaces.
- :mod:`.gallery`: image galleries (the shapes world, or a folder) for equivalent images by retrieval.
- :mod:`.analysis`: :func:`sing_analysis`, everything above on a CLIP model's zero-shot head.
- :mod:`.translator`: T from any classifier's penultimate features into a CLIP image space (ridge, MLP, identity).
- :mod:`.steering`: steering through T, the optimal closed form (affine T) and SING's projected-gradient path.
- :mod:`.statistics`: SING's scores over image sets x attribute texts, aggregated per text / family / class / model.
- :mod:`.inputs`: the texts and images SING part 2 reads (attribute texts, texts files, image folders, scenes).
- :mod:`.classifier`: :func:`classifier_analysis`, all of it on any trained classifier through a translator.
"""
from .analysis import ClassSet, SingOptions, SingResult, check_sing_inputs, leakage, parse_classes, sing_analysis, text_embeddings
from .classifier import ClassifierSingResult, ImageSet, classifier_analysis, folder_image_set
from .inputs import clip_image_embeddings
from .gallery import Gallery, array_gallery, folder_gallery
from .geometry import HeadGeometry, Steering, head_geometry, scores, steer
from .semantics import SubspaceDirection, Visibility, concept_visibility, explain_subspaces, normalized_dictionary
from .statistics import SING_AS_THRESHOLD_DEG, SING_IS_THRESHOLD_DEG, AttributeStatistics, attribute_statistics, flag_shares
from .steering import TranslatedSteering, gradient_flow, gradient_path, steer_through, translated_geometry, translated_scores
from .translator import FitReport, Translator, check_widths, fit_translator, identity_translator, load_translator, save_translator

__all__ = [
    "Gallery", "HeadGeometry", "SingResult", "Steering", "SubspaceDirection", "Visibility", "concept_visibility",
    "explain_subspaces", "folder_gallery", "head_geometry", "leakage", "normalized_dictionary", "parse_classes",
    "scores", "array_gallery", "sing_analysis", "steer", "ClassSet", "SingOptions", "check_sing_inputs",
    "AttributeStatistics", "FitReport", "SING_AS_THRESHOLD_DEG", "SING_IS_THRESHOLD_DEG", "TranslatedSteering",
    "Translator", "attribute_statistics", "check_widths", "fit_translator", "flag_shares", "gradient_flow",
    "gradient_path", "identity_translator", "load_translator", "save_translator", "steer_through",
    "translated_geometry", "translated_scores", "ClassifierSingResult", "classifier_analysis",
    "clip_image_embeddings", "text_embeddings", "ImageSet", "folder_image_set",
]
