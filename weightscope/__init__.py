"""weightscope: explain what a CLIP vision transformer has learned from its weights alone.

Pipeline: load -> describe (adapters) -> decompose -> embed concepts -> explain -> report / edit / compare.
"""
from .adapters import describe_model
from .decompose import HeadSVD, decompose_head, decompose_model
from .errors import WeightscopeError
from .inspection import Inspection, inspect_model
from .joint import to_joint
from .load import LoadedModel, load_model

__version__ = "0.1.0"

__all__ = [
    "HeadSVD",
    "Inspection",
    "LoadedModel",
    "WeightscopeError",
    "decompose_head",
    "decompose_model",
    "describe_model",
    "inspect_model",
    "load_model",
    "to_joint",
]
