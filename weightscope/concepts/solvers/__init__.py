"""Sparse explanation of vectors by a concept dictionary: top-k, MP, OMP, NN-OMP and COMP (METHODS.md s.5).

    from weightscope.concepts.solvers import explain
    ex = explain(signals, dictionary, method="comp", k=5, lam=0.3)   # signals (B, E), dictionary (M, E)
    ex.indices, ex.coefficients, ex.residual_norm, ex.fidelity

``weightscope.concepts.solvers.reference.explain_reference`` is a slow plain-numpy twin used by the tests.
"""
from weightscope.concepts.solvers._common import METHODS, Explanation
from weightscope.concepts.solvers._fast import explain, shared_gram_rows

__all__ = ["explain", "shared_gram_rows", "Explanation", "METHODS"]
