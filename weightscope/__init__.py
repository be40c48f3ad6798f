"""weightscope: explain what a CLIP vision transformer has learned from its weights alone.

Pipeline: load -> describe (adapters) -> decompose -> embed concepts -> explain -> report / edit / compare.
"""
from .adapters import describe_model
from .compare import Comparison, compare_models
from .decompose import HeadSVD, decompose_head, decompose_model
from .edit import Edit, apply_edits, save_checkpoint
from .embed import embed_concepts
from .errors import WeightscopeError
from .inspection import Inspection, inspect_model
from .joint import to_joint
from .load import LoadedModel, load_model
from .solvers import explain
from .vocab import load_vocabulary

__version__ = "0.1.0"

__all__ = [
    "Comparison",
    "Edit",
    "HeadSVD",
    "Inspection",
    "LoadedModel",
    "WeightscopeError",
    "apply_edits",
    "compare_models",
    "decompose_head",
    "decompose_model",
    "describe_model",
    "embed_concepts",
    "explain",
    "inspect_model",
    "load_model",
    "load_vocabulary",
    "save_checkpoint",
    "to_joint",
]
