"""Similarity Depth (seed 003, METHODS.md section 9): ``core`` the method, ``inputs`` class lists, matrices
from files, classifier heads and the shapes-world confusion matrix. Reports live in ``weightscope.reports.depth``."""
from .core import METHODS, SEED, ClassGraph, DepthResult, MethodResult, class_graph, confusion_affinity, cosine_similarity, direct_compliance, extended_compliance, normalise, similarity_depth
from .inputs import BUILTIN_CLASSES, classifier_head, read_classes, read_matrix, shapes_confusion

__all__ = [
    "BUILTIN_CLASSES", "METHODS", "SEED", "ClassGraph", "DepthResult", "MethodResult", "class_graph",
    "classifier_head", "confusion_affinity", "cosine_similarity", "direct_compliance", "extended_compliance",
    "normalise", "read_classes", "read_matrix", "shapes_confusion", "similarity_depth",
]
