"""Similarity Depth (seed 003, METHODS.md section 9): ``core`` the method, ``inputs`` class lists, matrices
from files, classifier heads and zero-shot confusion matrices. Reports live in ``weightscope.reports.depth``."""
from .core import METHODS, SEED, ClassGraph, DepthResult, MethodResult, class_graph, confusion_affinity, cosine_similarity, direct_compliance, extended_compliance, normalise, similarity_depth
from .inputs import BUILTIN_CLASSES, classifier_head, read_classes, read_matrix, zero_shot_confusion

__all__ = [
    "BUILTIN_CLASSES", "METHODS", "SEED", "ClassGraph", "DepthResult", "MethodResult", "class_graph",
    "classifier_head", "confusion_affinity", "cosine_similarity", "direct_compliance", "extended_compliance",
    "normalise", "read_classes", "read_matrix", "similarity_depth", "zero_shot_confusion",
]
