"""Data-free semantics of a CLIP head's row and null spaces: concept visibility and subspace explanations.

Source: METHODS.md section 8 (SING's question, answered without images for heads that live in the joint space).

- Visibility of a concept: the share of its embedding's energy in the head's row space, after the dictionary
  normalisation of ``weightscope.concepts.embed`` ("splice": unit rows, minus the dictionary mean, unit rows again), so
  the common direction every text shares does not count as seen. 1 = the head reads the concept entirely;
  0 = the concept lies in the null space (equivalent features differ only in it). A random direction scores
  rank / F on average. Gain: |d W^T| / (s[0] |d|), the logit response relative to the head's strongest direction
  (useful when the null space is empty, e.g. 1,000 classes in a 768-d space).
- Principal directions: of the row space, the right singular vectors of W (by singular value); of the null
  space, the leading principal directions of the dictionary's null components (the null directions along which
  the concepts vary most: the null space itself has no preferred direction). Both are explained with COMP (or any
  solver) through ``weightscope.concepts.solvers.explain``, with both signs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...core import linalg
from ...concepts.embed import normalize_embeddings
from ...core.errors import WeightscopeError
from .geometry import HeadGeometry


@dataclass(frozen=True)
class Visibility:
    """Per-concept visibility to a head: concepts (M,), visibility (M,) in [0, 1], gain (M,) in [0, 1]."""

    concepts: tuple[str, ...]
    visibility: np.ndarray
    gain: np.ndarray

    def ranked(self, n: int = 15, blind: bool = False, by: str = "visibility") -> list[tuple[str, float]]:
        """The n most visible concepts (blind=False) or the n least visible (blind=True), ties by vocabulary order.
        by: "visibility", or "gain" (the informative ranking when the null space is empty and every visibility is 1)."""
        if by not in ("visibility", "gain"):
            raise WeightscopeError(f"by={by!r}; rank by 'visibility' or 'gain'")
        values = getattr(self, by)
        order = np.argsort(values if blind else -values, kind="stable")[:n]
        return [(self.concepts[i], float(values[i])) for i in order]

    def of(self, names) -> np.ndarray:
        """Visibilities of the named concepts (raises WeightscopeError for a name not in the vocabulary)."""
        index = {c: i for i, c in enumerate(self.concepts)}
        missing = [n for n in names if n not in index]
        if missing:
            raise WeightscopeError(f"concepts not in the vocabulary: {', '.join(missing[:5])}")
        return self.visibility[[index[n] for n in names]]

    def family_means(self, families: dict[str, list[str]]) -> dict[str, float]:
        """Mean visibility of each family of concepts (names absent from the vocabulary are skipped)."""
        present = set(self.concepts)
        out = {}
        for fam, names in families.items():
            names = [n for n in names if n in present]
            if names:
                out[fam] = float(self.of(names).mean())
        return out


def normalized_dictionary(embeddings, normalize: str = "splice") -> np.ndarray:
    """The dictionary as visibility and the explanations use it: ``embed.normalize_embeddings`` in float64."""
    return normalize_embeddings(embeddings, normalize).astype(np.float64)


def concept_visibility(geom: HeadGeometry, embeddings, concepts, normalize: str = "splice") -> Visibility:
    """Visibility of every concept to the head. embeddings: (M, F) raw concept embeddings (rows in the head's
    feature space, e.g. the model's text features, or any array), normalised here with ``normalize``; concepts: M
    names. One float32 GEMM with the row basis: O(M F r); visibilities are accurate to about 1e-6."""
    concepts = tuple(str(c) for c in concepts)
    D = normalize_embeddings(embeddings, normalize)          # (M, F) float32
    if D.shape != (len(concepts), geom.n_features):
        raise WeightscopeError(f"embeddings have shape {D.shape}; expected ({len(concepts)} concepts, "
                               f"{geom.n_features} features) to match the names and the head")
    # (M, r) coordinates in the row space: the one GEMM, in float32 (the normalised dictionary's own precision;
    # shares come out to ~1e-6), then energies in float64
    coords = D @ geom.row.T.astype(np.float32)
    sq = np.square(coords, out=coords)                      # in place: no second (M, r) array
    norm2 = np.einsum("ij,ij->i", D, D, dtype=np.float64)
    vis = np.minimum(sq.sum(axis=1, dtype=np.float64) / norm2, 1.0)
    s = geom.s[:geom.rank]
    gain = (np.sqrt(np.maximum(sq @ (s / s[0]).astype(np.float32) ** 2, 0.0) / norm2) if geom.rank
            else np.zeros(len(concepts)))
    return Visibility(concepts, vis, gain)


@dataclass(frozen=True)
class SubspaceDirection:
    """One principal direction of the row or null space, explained with both signs.

    space: "row" or "null"; index: its rank within the space; weight: singular value of W (row) or of the
    dictionary's null components (null); plus / minus: [(concept, coefficient)] explaining +v and -v;
    fidelity_plus / fidelity_minus: cosine of each reconstruction with the signal.
    """

    space: str
    index: int
    weight: float
    plus: list[tuple[str, float]]
    minus: list[tuple[str, float]]
    fidelity_plus: float
    fidelity_minus: float


def explain_subspaces(geom: HeadGeometry, dictionary: np.ndarray, explainer, n_directions: int = 4,
                      row_order: str = "singular") -> list[SubspaceDirection]:
    """Explain the leading principal directions of the row space and of the null space (module docstring).

    dictionary: (M, F) normalised concept embeddings (``normalized_dictionary``), rows matching
    ``explainer.concepts``; explainer: the ``ConceptExplainer`` whose solver settings are used. row_order:
    "singular" (the row space's directions are W's right singular vectors, weight = singular value) or
    "dictionary" (like the null space: the leading principal directions of the concepts' row components, for a
    geometry whose row basis carries no singular values, e.g. ``steering.translated_geometry``). Returns the row
    directions then the null directions (fewer when a space is smaller, none for an empty one).
    """
    if row_order not in ("singular", "dictionary"):
        raise WeightscopeError(f"row_order={row_order!r}; use 'singular' or 'dictionary'")
    concepts = list(explainer.concepts)
    if not isinstance(n_directions, (int, np.integer)) or n_directions < 1:
        raise WeightscopeError(f"n_directions must be a positive integer, got {n_directions!r}")
    signals, meta = [], []
    row_part, null_part = geom.split(dictionary)
    if row_order == "singular":
        for i in range(min(n_directions, geom.rank)):
            signals.append(geom.row[i])
            meta.append(("row", i, float(geom.s[i])))
    spaces = [("null", null_part, geom.null_dim)]
    if row_order == "dictionary":
        spaces.insert(0, ("row", row_part, geom.rank))
    for space, part, dim in spaces:
        if dim:
            dirs, weights = linalg.principal_directions(part, min(n_directions, dim))
            for i, (v, w) in enumerate(zip(dirs, weights)):
                if w > 0:
                    signals.append(v)
                    meta.append((space, i, float(w)))
    if not signals:
        return []
    ex = explainer.explain(np.vstack(signals), dictionary, both_signs=True, progress=False)
    plus, minus = ex.split_signs()

    def atoms(e, row):
        keep = np.flatnonzero((e.indices[row] >= 0) & (e.coefficients[row] != 0))
        keep = keep[np.argsort(-np.abs(e.coefficients[row][keep]), kind="stable")]
        return [(concepts[int(e.indices[row][j])], round(float(e.coefficients[row][j]), 6)) for j in keep]

    return [SubspaceDirection(space, i, w, atoms(plus, n), atoms(minus, n),
                              float(plus.fidelity[n]), float(minus.fidelity[n]))
            for n, (space, i, w) in enumerate(meta)]
