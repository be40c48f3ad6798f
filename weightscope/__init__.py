"""weightscope: explain what a CLIP vision transformer has learned from its weights alone.

Pipeline: load -> describe (adapters) -> decompose -> embed concepts -> explain -> report / edit / compare.
The public names below are imported on first use (PEP 562), so ``import weightscope`` and the command line's
``--help`` do not pay for torch, open_clip and numba.
"""
from __future__ import annotations

import importlib

from .core.version import __version__  # noqa: F401  (weightscope.__version__)

_WHERE = {
    "Comparison": "analyses.compare",
    "ConceptExplainer": "concepts.explainer",
    "ModelSpec": "bundled",
    "classifier_analysis": "bundled",
    "load_classifier": "bundled",
    "sing_analysis": "bundled",
    "Edit": "analyses.edit",
    "HeadSVD": "decompose",
    "Inspection": "analyses.inspection",
    "LoadedModel": "models.load",
    "WeightscopeError": "core.errors",
    "apply_edits": "analyses.edit",
    "compare_models": "bundled",
    "decompose_head": "decompose",
    "decompose_model": "decompose",
    "describe_model": "models.adapters",
    "embed_concepts": "concepts.embed",
    "explain": "concepts.solvers",
    "inspect_model": "bundled",
    "load_model": "bundled",
    "load_vocabulary": "concepts.vocab",
    "save_checkpoint": "analyses.edit",
    "to_joint": "decompose.joint",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'weightscope' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
