"""Concept labels of compared directions, from ``inspect_model`` results of the two checkpoints."""
from __future__ import annotations

from ...core.errors import WeightscopeError
from .results import Comparison


def _write_labels(report, n_concepts: int) -> dict[int, list]:
    """{direction index: [[concept, coefficient], ...]} of a HeadReport's write directions, sign +1."""
    out = {}
    for d in getattr(report, "directions", []):
        if d.side == "write" and d.sign == 1:
            out[d.index] = [[c, float(w)] for c, w in zip(d.concepts[:n_concepts], d.coefficients[:n_concepts])]
    return out


def label_comparison(comparison: Comparison, base_inspection=None, tuned_inspection=None,
                     n_concepts: int = 5) -> Comparison:
    """Attach concept labels to every compared direction, in place; returns ``comparison``.

    base_inspection / tuned_inspection: ``inspect_model`` results (``.heads[(layer, head)]`` with ``.directions``) of
    the base and tuned checkpoints, made with the decomposition defaults (fold_ln=False, center_write=False, as
    here); either may be None (not both: WeightscopeError). A base direction gets its own write explanation, its
    tuned partner's goes to ``tuned_concepts``. Inside a tie group the canonical direction is labelled with the
    explanation of its row index (the ``group`` field says the label stands for a subspace). Only value-output
    comparisons can be labelled (the inspections explain VO write directions): another kind -> WeightscopeError.
    """
    if comparison.settings.get("kind", "vo") != "vo":
        raise WeightscopeError(f"concept labels explain value-output directions; this comparison is of "
                               f"{comparison.settings['kind']!r} matrices: compare 'vo' to label, or drop the labels")
    if base_inspection is None and tuned_inspection is None:
        raise WeightscopeError("label_comparison needs an inspection of the base and/or the tuned checkpoint")
    for key, hc in comparison.heads.items():
        base_rep = getattr(base_inspection, "heads", {}).get(key) if base_inspection is not None else None
        tuned_rep = getattr(tuned_inspection, "heads", {}).get(key) if tuned_inspection is not None else None
        bl = _write_labels(base_rep, n_concepts) if base_rep is not None else {}
        tl = _write_labels(tuned_rep, n_concepts) if tuned_rep is not None else {}
        for d in hc.directions:
            d.base_concepts = bl.get(d.index, [])
            d.tuned_concepts = tl.get(d.tuned_index, [])
    comparison.labelled = True
    return comparison


def inspect_for_labels(loaded, explainer, n_directions, layers=None, heads=None, progress=True):
    """``inspect_model`` on the write side with the options a comparison's labels need (``explainer``: the
    ``ConceptExplainer`` of the labels)."""
    from ..inspection import inspect_model

    return inspect_model(loaded, explainer, layers=layers, heads=heads, n_directions=n_directions,
                         sides=("write",), progress=progress)
