"""What the fast solvers and the numpy reference share: the result type, input checks, normalisation.

Both implementations go through :func:`prepare`, so they see bit-identical unit signals and unit atoms
and apply the same stopping rules; any difference between them is in the algorithms, which is what the
tests compare.
"""
from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np

from weightscope.core.errors import WeightscopeError

# Tolerances live next to the Numba kernels, which bake them in as compile-time constants (Numba's
# cache notices edits to _kernels.py only, so that is the one place to change them). They are read from there on
# first use (module __getattr__), so that importing the solvers does not import Numba (47 MB resident).
_TOLERANCES = ("SELECT_TOL", "DEPENDENT_TOL", "KKT_TOL")


def __getattr__(name: str):
    if name in _TOLERANCES:
        from weightscope.concepts.solvers import _kernels

        return getattr(_kernels, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["METHODS", "DEFAULT_POSITIVE", "SELECT_TOL", "DEPENDENT_TOL", "KKT_TOL", "Explanation", "Problem",
           "prepare"]

#: Method names accepted by ``explain``; see METHODS.md section 5.
METHODS = ("topk", "mp", "omp", "nnomp", "comp")

#: Default sign constraint per method: OMP is the signed one, everything else non-negative.
DEFAULT_POSITIVE = {"topk": True, "mp": True, "omp": False, "nnomp": True, "comp": True}

@dataclass
class Explanation:
    """Sparse explanations of N signals by atoms of a dictionary.

    indices:       (N, K) int64, selected dictionary rows in selection order; -1 pads a signal whose
                   pursuit stopped early (exact fit, or nothing left with a positive score).
                   MP may select the same atom more than once (each entry is one step).
    coefficients:  (N, K) float64, coefficient of each selected atom (0 where padded; NNLS may also
                   leave a selected atom at exactly 0). They refer to the unit-normalised signal and
                   unit-normalised atoms: the reconstruction of ``x / |x|`` is
                   ``sum_k coefficients[:, k] * D_unit[indices[:, k]]``.
    residual_norm: (N,) float64, ``| x/|x| - reconstruction |`` (between 0 and 1 for fitted methods).
    fidelity:      (N,) float64, cosine between the signal and its reconstruction (0 if it is zero).
    signal_norm:   (N,) float64, ``|x|`` of each input signal (multiply coefficients by it to get
                   coefficients for the raw signal).
    method:        the method that produced it.
    both_signs:    True if the rows are ``[+x_1..+x_B, -x_1..-x_B]`` (N = 2B); see :meth:`split_signs`.
    """

    indices: np.ndarray
    coefficients: np.ndarray
    residual_norm: np.ndarray
    fidelity: np.ndarray
    signal_norm: np.ndarray
    method: str
    both_signs: bool = False

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def _rows(self, sl: slice) -> "Explanation":
        return Explanation(
            self.indices[sl], self.coefficients[sl], self.residual_norm[sl], self.fidelity[sl],
            self.signal_norm[sl], self.method, False,
        )

    def split_signs(self) -> tuple["Explanation", "Explanation"]:
        """``(plus, minus)``: explanations of ``+x`` and of ``-x`` (each B rows) from a both_signs result."""
        if not self.both_signs:
            raise WeightscopeError("split_signs needs an Explanation computed with both_signs=True")
        b = len(self) // 2
        return self._rows(slice(0, b)), self._rows(slice(b, 2 * b))


@dataclass
class Problem:
    """Validated, normalised inputs (internal)."""

    signals: np.ndarray          # (N, E) float64, unit rows (N = 2B with both_signs)
    signal_norm: np.ndarray      # (N,)
    dictionary: np.ndarray       # (M, E) float32 or float64 (the dictionary's own precision), unit rows
    coherence: np.ndarray | None  # (M, E2) same dtype, unit rows, or None (= use dictionary)
    method: str
    k: int
    lam: float
    positive: bool
    both_signs: bool
    chunk_size: int | None


def _as_float_matrix(a, name: str, what: str) -> np.ndarray:
    try:
        arr = np.asarray(a)
    except Exception as exc:  # ragged lists and the like
        raise WeightscopeError(f"{name} must be a 2-D numeric array ({what}); could not convert it: {exc}")
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
                                   or arr.dtype == bool):
        raise WeightscopeError(f"{name} must be a real numeric array ({what}), got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise WeightscopeError(f"{name} must be 2-D ({what}), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise WeightscopeError(f"{name} must not be empty ({what}), got shape {arr.shape}")
    return arr


def _check_finite(arr: np.ndarray, name: str) -> None:
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise WeightscopeError(f"{name} contains NaN or inf (first at row {bad[0]}, column {bad[1]}); "
                               "pass finite values")


def _unit_rows(arr: np.ndarray, name: str, noun: str, dtype) -> tuple[np.ndarray, np.ndarray]:
    # Norms in float64 whatever the storage, so a float32 dictionary is normalised as well as it can be.
    norms = np.sqrt(np.einsum("ij,ij->i", arr, arr, dtype=np.float64))
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise WeightscopeError(f"{name} has {zero.size} zero-norm {noun}(s) (first: row {zero[0]}); "
                               f"every {noun} needs a direction, drop or replace them")
    # Rows already unit to within rounding (a prepared concept dictionary) are used as they are:
    # saves a copy of the whole dictionary on every call.
    tol = 4 * np.finfo(dtype).eps * np.sqrt(arr.shape[1])
    if arr.dtype == dtype and np.abs(norms - 1.0).max() <= tol:
        return np.ascontiguousarray(arr), norms
    if dtype == np.float32:
        unit = arr.astype(np.float32) * (1.0 / norms).astype(np.float32)[:, None]
    else:
        unit = (arr / norms[:, None]).astype(dtype, copy=False)
    return np.ascontiguousarray(unit), norms


def prepare(signals, dictionary, method, k, lam, positive, both_signs, coherence_dictionary,
            chunk_size) -> Problem:
    """Check every argument of ``explain`` and return unit-normalised arrays (raises WeightscopeError)."""
    if not isinstance(method, str) or method.lower() not in METHODS:
        raise WeightscopeError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    method = method.lower()

    D = _as_float_matrix(dictionary, "dictionary", "M atoms x E")
    X = np.asarray(signals) if not isinstance(signals, np.ndarray) else signals
    if isinstance(X, np.ndarray) and X.ndim == 1:
        X = X[None, :]  # one signal
    X = _as_float_matrix(X, "signals", "B signals x E, or one signal of length E")
    if X.shape[1] != D.shape[1]:
        raise WeightscopeError(f"signals have width {X.shape[1]} but dictionary atoms have width {D.shape[1]}; "
                               "both must live in the same space (same E)")
    M = D.shape[0]

    if isinstance(k, bool) or not isinstance(k, Integral):
        raise WeightscopeError(f"k must be an integer number of atoms, got {k!r}")
    k = int(k)
    if k < 1:
        raise WeightscopeError(f"k must be at least 1, got {k}")
    if k > M:
        raise WeightscopeError(f"k={k} exceeds the dictionary size M={M}; use k <= {M}")

    if isinstance(lam, bool) or not isinstance(lam, Real) or not np.isfinite(lam):
        raise WeightscopeError(f"lam must be a finite number >= 0, got {lam!r}")
    lam = float(lam)
    if lam < 0:
        raise WeightscopeError(f"lam must be >= 0 (coherence weight), got {lam}")

    if positive is None:
        positive = DEFAULT_POSITIVE[method]
    if not isinstance(positive, (bool, np.bool_)):
        raise WeightscopeError(f"positive must be True, False or None, got {positive!r}")
    positive = bool(positive)
    if not positive and method in ("nnomp", "comp"):
        raise WeightscopeError(f"method {method!r} is non-negative by definition; use positive=None/True, "
                               "or method='omp' for signed coefficients")

    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, Integral) or chunk_size < 1:
            raise WeightscopeError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
        chunk_size = int(chunk_size)

    # The dictionary keeps its precision (float32 makes the big products twice as fast); anything
    # else is computed in float64.
    ddtype = D.dtype if D.dtype in (np.float32, np.float64) else np.float64
    _check_finite(D, "dictionary")
    Dn, _ = _unit_rows(D, "dictionary", "atom", ddtype)

    C = None
    if coherence_dictionary is not None:
        if method != "comp":
            raise WeightscopeError(f"coherence_dictionary only applies to method='comp', not {method!r}")
        C = _as_float_matrix(coherence_dictionary, "coherence_dictionary", "M atoms x E2")
        if C.shape[0] != M:
            raise WeightscopeError(f"coherence_dictionary has {C.shape[0]} rows but the dictionary has {M}; "
                                   "row m of both must describe the same concept")
        _check_finite(C, "coherence_dictionary")
        C, _ = _unit_rows(C, "coherence_dictionary", "atom", ddtype)

    _check_finite(X, "signals")
    Xn, norms = _unit_rows(X, "signals", "signal", np.float64)
    if both_signs:
        Xn = np.concatenate([Xn, -Xn], axis=0)
        norms = np.concatenate([norms, norms])

    return Problem(Xn, norms, Dn, C, method, k, lam, positive, bool(both_signs), chunk_size)
