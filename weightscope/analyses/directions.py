"""Explained directions: one singular direction with its concepts (``Direction``) and one head's directions
(``HeadReport``). Shared by head inspection (value-output) and the neuron / query-key explanations, which is why
they live apart from both."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from ..core.errors import WeightscopeError
from ..core.linalg import numerical_rank

NO_CONCEPT = "(no concept)"
COEFFICIENT_DECIMALS = 6  # coefficients are stored rounded to this many decimals


@dataclass
class Direction:
    """One singular direction of a head, explained with one sign.

    index: position in the head's singular values; side: "write" (right singular vector, what the head adds to
    the residual stream) or "read" (left singular vector, what it responds to); sign: +1 explains v, -1 explains -v;
    concepts / coefficients: the sparse explanation, largest coefficient first (atoms
    the refit set to zero are dropped); fidelity: cosine between the direction's
    joint-space image and its reconstruction; group: the degenerate group it belongs to (only the span is defined).
    """

    index: int
    side: str
    sign: int
    concepts: list[str]
    coefficients: list[float]
    fidelity: float
    group: list[int] | None = None

    def label(self, n: int = 3) -> str:
        """The first n concepts with their coefficients, or "(no concept)" when the explanation is empty."""
        if not self.concepts:
            return NO_CONCEPT
        return ", ".join(f"{c} ({format_coefficient(w)})" for c, w in zip(self.concepts[:n], self.coefficients[:n]))

    def fidelity_label(self) -> str:
        """The fidelity to 2 decimals; "-" for an empty explanation (it reconstructs nothing)."""
        return f"{self.fidelity:.2f}" if self.concepts else "-"


def format_coefficient(w: float) -> str:
    """Two decimals, or two significant digits below 0.01: a kept (non-zero) coefficient never reads 0.00."""
    return f"{w:.2f}" if abs(w) >= 0.01 else f"{w:.2g}"


@dataclass
class HeadReport:
    """One head: singular values s (r,), degenerate groups, its explained directions, and its rank.

    rank: how many leading singular values stand above the rounding level of the weights
    (``decompose.HeadSVD.rank``); only those are directions, explained and counted in the theme. A head of
    rank 0 is dead: it writes nothing. Default (older JSON): ``linalg.numerical_rank`` of s.
    """

    layer: int
    head: int
    s: list[float]
    groups: list[list[int]]
    directions: list[Direction]
    rank: int | None = None

    def __post_init__(self):
        if self.rank is None:
            self.rank = numerical_rank(np.asarray(self.s, dtype=np.float64))

    @property
    def dead(self) -> bool:
        return self.rank == 0

    def explained(self, side: str = "write") -> list[int]:
        """Indices of the directions explained on ``side``, ascending."""
        return sorted({d.index for d in self.directions if d.side == side})

    def direction(self, index: int, side: str = "write", sign: int = 1) -> Direction:
        for d in self.directions:
            if d.index == index and d.side == side and d.sign == sign:
                return d
        raise WeightscopeError(
            f"layer {self.layer} head {self.head} has no explained {side} direction {index} with sign {sign:+d}"
        )

    def theme(self, n_directions: int = 4, side: str = "write") -> str:
        """The head's dominant concept: coefficient x singular value, summed over its leading directions."""
        score: dict[str, float] = defaultdict(float)
        for d in self.directions:
            if d.side == side and d.index < n_directions:
                for c, w in zip(d.concepts, d.coefficients):
                    score[c] += w * self.s[d.index]
        return max(sorted(score), key=score.__getitem__) if score else ""


def explained_direction(ex, row: int, concepts: list[str], index: int, side: str, sign: int,
                        group: list[int] | None = None) -> Direction:
    """Row ``row`` of an Explanation as a :class:`Direction`, atoms by weight, largest first.

    The least-squares refit can zero an early pick, and a coefficient that rounds to zero in the stored precision
    is dropped too (never a zero-weight concept).
    """
    coef = np.round(ex.coefficients[row], COEFFICIENT_DECIMALS)
    picked = np.flatnonzero((ex.indices[row] >= 0) & (coef != 0))
    picked = picked[np.argsort(-np.abs(coef[picked]), kind="stable")]
    return Direction(index=index, side=side, sign=sign, concepts=[concepts[j] for j in ex.indices[row][picked]],
                     coefficients=[float(c) for c in coef[picked]], fidelity=round(float(ex.fidelity[row]), 6),
                     group=group)
