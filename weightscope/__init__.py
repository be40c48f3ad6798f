"""weightscope: explain what a CLIP vision transformer has learned from its weights alone.

Pipeline: load -> describe (adapters) -> decompose -> embed concepts -> explain -> report / edit / compare.
The public names below are imported on first use (PEP 562), so ``import weightscope`` and the command line's
``--help`` do not pay for torch, open_clip and numba.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_WHERE = {
    "Comparison": "compare",
    "Edit": "edit",
    "HeadSVD": "decompose",
    "Inspection": "inspection",
    "LoadedModel": "load",
    "WeightscopeError": "errors",
    "apply_edits": "edit",
    "compare_models": "compare",
    "decompose_head": "decompose",
    "decompose_model": "decompose",
    "describe_model": "adapters",
    "embed_concepts": "embed",
    "explain": "solvers",
    "inspect_model": "inspection",
    "load_model": "load",
    "load_vocabulary": "vocab",
    "save_checkpoint": "edit",
    "to_joint": "joint",
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
