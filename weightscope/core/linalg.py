"""The one linear-algebra core: factored SVD, sign conventions, degenerate groups, projections,
null spaces and subspace angles. Decomposition, edits, comparison, SING and depth all call these.

Everything is numpy float64. Shapes follow numpy.linalg: ``U (D, r)``, ``s (r,)``, ``Vh (r, D)``.
"""
from __future__ import annotations

import numpy as np


def fix_signs(U: np.ndarray, Vh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Make each singular pair's sign deterministic: the largest-magnitude entry of each column of U is positive
    (ties: the lowest index), and the matching row of Vh flips with it, so ``U diag(s) Vh`` is unchanged.

    U: (D, r), Vh: (r, D). Returns new arrays.
    """
    if U.shape[1] == 0:
        return U.copy(), Vh.copy()
    pivot = np.argmax(np.abs(U), axis=0)  # argmax returns the first maximum: deterministic ties
    signs = np.sign(U[pivot, np.arange(U.shape[1])])
    signs[signs == 0] = 1.0
    return U * signs, Vh * signs[:, None]


def factored_svd(A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin SVD of ``W = A @ B`` without forming W.

    A: (D, r), B: (r, N) with r <= min(D, N). Returns U (D, r), s (r,) descending, Vh (r, N) such that
    ``U @ diag(s) @ Vh == A @ B`` to rounding, with signs fixed by :func:`fix_signs`.
    Cost O((D + N) r^2): QR of A and B^T, then the SVD of the r x r core Ra Rb^T.
    """
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[0]:
        raise ValueError(f"factored_svd needs A (D, r) and B (r, N); got {A.shape} and {B.shape}")
    Qa, Ra = np.linalg.qr(A)
    Qb, Rb = np.linalg.qr(B.T)
    Uc, s, Vch = np.linalg.svd(Ra @ Rb.T)
    U, Vh = fix_signs(Qa @ Uc, Vch @ Qb.T)
    return U, s, Vh


def factored_singular_values(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Singular values (r,) of ``A @ B`` (A (D, r), B (r, N)) from the factors alone, as in :func:`factored_svd`.

    Exact to rounding of the product itself, so it measures small differences (A = [U1, U2], B = [-S1 V1; S2 V2])
    without the cancellation of ||W1||^2 + ||W2||^2 - 2 <W1, W2>.
    """
    Ra = np.linalg.qr(np.asarray(A, dtype=np.float64), mode="r")
    Rb = np.linalg.qr(np.asarray(B, dtype=np.float64).T, mode="r")
    return np.linalg.svd(Ra @ Rb.T, compute_uv=False)


def degenerate_groups(s: np.ndarray, rtol: float = 1e-3) -> list[list[int]]:
    """Group indices of singular values whose neighbours are within ``rtol`` relative gap.

    s: (r,) descending. Two neighbours i, i+1 are tied when ``(s[i] - s[i+1]) <= rtol * s[0]``
    (relative to the largest value, so near-zero tails group together instead of amplifying noise).
    Returns only groups of size >= 2, each a sorted list of indices; only their span is meaningful.
    """
    s = np.asarray(s, dtype=np.float64)
    if s.size < 2 or s[0] <= 0:
        return []
    return linked_runs((s[:-1] - s[1:]) <= rtol * s[0])


def linked_runs(linked: np.ndarray) -> list[list[int]]:
    """Maximal runs of indices 0..n joined by ``linked`` (n,), where linked[i] ties i to i + 1; runs of size >= 2."""
    runs, current = [], [0]
    for i, tied in enumerate(np.asarray(linked, dtype=bool), start=1):
        if tied:
            current.append(i)
        else:
            if len(current) > 1:
                runs.append(current)
            current = [i]
    if len(current) > 1:
        runs.append(current)
    return runs


def orthonormal_basis(X: np.ndarray, rtol: float = 1e-10) -> np.ndarray:
    """Orthonormal basis (k, D) of the row space of X (n, D), dropping directions below ``rtol`` * largest."""
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    _, s, Vh = np.linalg.svd(X, full_matrices=False)
    if s.size == 0 or s[0] == 0:
        return np.zeros((0, X.shape[1]))
    return Vh[s > rtol * s[0]]


def numerical_rank(s: np.ndarray, rtol: float | None = None, shape: tuple[int, int] | None = None) -> int:
    """Number of singular values above ``rtol * s[0]`` (default rtol: max(shape) * machine epsilon, as numpy)."""
    s = np.asarray(s)
    if s.size == 0 or s[0] == 0:
        return 0
    if rtol is None:
        rtol = (max(shape) if shape else s.size) * np.finfo(np.float64).eps
    return int(np.sum(s > rtol * s[0]))


def null_space(W: np.ndarray, rtol: float | None = None) -> np.ndarray:
    """Orthonormal basis (n - rank, n) of the right null space of W (m, n): rows z with ``W @ z == 0``."""
    W = np.atleast_2d(np.asarray(W, dtype=np.float64))
    _, s, Vh = np.linalg.svd(W, full_matrices=True)
    r = numerical_rank(s, rtol, W.shape)
    return Vh[r:]


def project_onto(X: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Project rows of X (n, D) onto the span of the orthonormal rows of ``basis`` (k, D)."""
    return (X @ basis.T) @ basis


def project_out(X: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Remove from rows of X (n, D) their component in the span of the orthonormal rows of ``basis`` (k, D)."""
    return X - project_onto(X, basis)


def principal_angles(P: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """Principal angles (radians, ascending) between the row spaces of P (p, D) and Q (q, D).

    Rows need not be orthonormal; each is orthonormalised first. Returns min(p, q) angles.
    """
    Bp, Bq = orthonormal_basis(P), orthonormal_basis(Q)
    return angles_from_cosines(Bp @ Bq.T)


def angles_from_cosines(C: np.ndarray) -> np.ndarray:
    """Principal angles (radians, ascending) from the cosine matrix ``C = P Q^T`` (p, q) of two orthonormal bases
    (rows of P and Q): the cosines of the angles are C's singular values. Use it when the bases are already
    orthonormal (singular vectors are), skipping principal_angles' re-orthonormalisation."""
    if C.size == 0:
        return np.zeros(0)
    return np.arccos(np.clip(np.linalg.svd(C, compute_uv=False), -1.0, 1.0))


def nearest_orthogonal(M: np.ndarray) -> np.ndarray:
    """The orthogonal k x k matrix Q that maximises trace(M Q^T) for a square M (k, k): Q = U V^T from M's SVD.

    This is the orthogonal Procrustes solution: the rotation (or reflection) best aligned with M.
    """
    M = np.asarray(M, dtype=np.float64)
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"nearest_orthogonal needs a square matrix, got shape {M.shape}")
    U, _, Vh = np.linalg.svd(M)
    return U @ Vh


def normalize_rows(X: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of X scaled to unit L2 norm (rows with norm below eps are left at zero)."""
    X = np.asarray(X, dtype=np.float64)
    n = np.linalg.norm(X, axis=-1, keepdims=True)
    return np.divide(X, n, out=np.zeros_like(X), where=n > eps)


# ------------------------------------------------------------------------------------------------
# Row and null spaces of a linear map (SING, METHODS.md section 8)
# ------------------------------------------------------------------------------------------------

#: Default relative rank tolerance of :func:`row_null_bases`: a singular value counts as zero when it is at most
#: ``RANK_RTOL * s[0]``. Relative, so a head's scale (temperature-scaled logits, weight decay) does not move its
#: rank, unlike SING's absolute 1e-5. Float32-stored weights perturb singular values by about
#: eps32 * (1 + sqrt(C / F)) * s[0] ~ 1e-7 * s[0], so 1e-6 reads a head that is rank-deficient in exact arithmetic
#: as such, while any direction that moves the logits by more than a millionth of the largest gain stays in the
#: row space.
RANK_RTOL = 1e-6


def row_null_bases(W: np.ndarray, rtol: float = RANK_RTOL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Singular values and orthonormal bases of the row space and the right null space of W, from one SVD.

    W: (C, F). Returns ``s`` (min(C, F),) descending, ``row`` (r, F) and ``null`` (F - r, F), where the numerical
    rank r counts singular values above ``rtol * s[0]`` (relative tolerance, see :data:`RANK_RTOL`). ``row`` holds
    the right singular vectors in singular-value order, signs fixed as in :func:`fix_signs` (on the left vectors);
    ``null`` is only defined as a subspace: each row's largest-magnitude entry is made positive for determinism.
    Together the rows of ``row`` and ``null`` form an orthonormal basis of R^F. Raises ValueError for a W that is
    not 2-D or an rtol outside [0, 1).
    """
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2:
        raise ValueError(f"row_null_bases needs a 2-D matrix, got shape {W.shape}")
    if not 0.0 <= rtol < 1.0:
        raise ValueError(f"rtol must lie in [0, 1), got {rtol}")
    # Vh must be square (a basis of all of R^F); with C >= F the thin SVD already gives that, without the C x C U
    U, s, Vh = np.linalg.svd(W, full_matrices=W.shape[0] < W.shape[1])
    r = int(np.sum(s > rtol * s[0])) if s.size and s[0] > 0 else 0
    U, row = fix_signs(U[:, :r], Vh[:r])
    null = Vh[r:]
    if null.shape[0]:
        pivot = np.argmax(np.abs(null), axis=1)
        null = null * np.where(null[np.arange(null.shape[0]), pivot] < 0, -1.0, 1.0)[:, None]
    return s, row, null


def projector(basis: np.ndarray) -> np.ndarray:
    """The orthogonal projector (D, D) onto the span of the orthonormal rows of ``basis`` (k, D): ``basis^T basis``."""
    basis = np.asarray(basis, dtype=np.float64)
    return basis.T @ basis


def split_components(X: np.ndarray, basis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(X_in, X_out)``: the components of the rows of X (n, D) (or one vector (D,)) inside and orthogonal to the
    span of the orthonormal rows of ``basis`` (k, D); ``X_in + X_out == X`` up to rounding."""
    X = np.asarray(X, dtype=np.float64)
    inside = (X @ basis.T) @ basis
    return inside, X - inside


def subspace_energy(X: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Share of each row's squared norm inside the span of the orthonormal rows of ``basis`` (k, D): values in
    [0, 1], shape (n,) for X (n, D). A zero row gets NaN (it has no direction)."""
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    inside = np.einsum("ij,ij->i", X @ basis.T, X @ basis.T)
    total = np.einsum("ij,ij->i", X, X)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, np.minimum(inside / total, 1.0), np.nan)


def principal_directions(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k leading principal directions (k, D) of the rows of X (n, D), uncentred, and their singular values (k,).

    The right singular vectors of X, computed from the D x D Gram matrix X^T X (one GEMM, then a symmetric
    eigendecomposition; cheap when n >> D). Signs: each direction's largest-magnitude entry is positive.
    """
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    k = int(min(k, X.shape[1]))
    evals, evecs = np.linalg.eigh(X.T @ X)
    order = np.argsort(-evals, kind="stable")[:k]
    dirs = evecs[:, order].T
    pivot = np.argmax(np.abs(dirs), axis=1)
    dirs = dirs * np.where(dirs[np.arange(k), pivot] < 0, -1.0, 1.0)[:, None]
    return dirs, np.sqrt(np.maximum(evals[order], 0.0))


def vector_angle(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Angle in radians between x and y along the last axis (broadcasting), accurate at small and large angles:
    ``2 atan2(|x^ - y^|, |x^ + y^|)`` with x^, y^ the unit vectors (arccos of the cosine loses digits near 0 and pi)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    xn = x / np.linalg.norm(x, axis=-1, keepdims=True)
    yn = y / np.linalg.norm(y, axis=-1, keepdims=True)
    return 2.0 * np.arctan2(np.linalg.norm(xn - yn, axis=-1), np.linalg.norm(xn + yn, axis=-1))


def solve_rows(M: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """Minimum-norm least-squares X with ``X @ M ~= Z``: M (D, E), Z (n, E) or (E,) -> X (n, D) or (D,).

    Used for pre-images through a linear map (e.g. a joint-space vector back to the residual stream).
    """
    Z = np.asarray(Z, dtype=np.float64)
    X = np.linalg.lstsq(np.asarray(M, dtype=np.float64).T, np.atleast_2d(Z).T, rcond=None)[0].T
    return X[0] if Z.ndim == 1 else X


def symmetric_eigh(S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and orthonormal eigenvectors (columns) of a symmetric matrix (k, k), float64.

    The one symmetric eigendecomposition of the package (LAPACK ``syevd`` through numpy); callers choose the order
    and signs they need, since a symmetric problem has no canonical sign convention of its own.
    """
    return np.linalg.eigh(np.asarray(S, dtype=np.float64))


# ------------------------------------------------------------------------------------------------
# Spectra of weight matrices (METHODS.md section 13)
# ------------------------------------------------------------------------------------------------


def singular_values(W: np.ndarray) -> np.ndarray:
    """Singular values (min(N, M),) of W (N, M), descending, in float64 (no singular vectors are formed)."""
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2:
        raise ValueError(f"singular_values needs a 2-D matrix, got shape {W.shape}")
    return np.linalg.svd(W, compute_uv=False)


def empirical_spectral_density(W: np.ndarray, normalize: bool = True) -> np.ndarray:
    """Eigenvalues (M,) of the correlation matrix X = W^T W / N of W (N, M) with N >= M (W is transposed when
    N < M), ascending: lambda_i = s_i^2 / N (``normalize=False``: s_i^2). The ESD of heavy-tailed
    self-regularisation (Martin & Mahoney, JMLR 2021, sec. 3)."""
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2:
        raise ValueError(f"empirical_spectral_density needs a 2-D matrix, got shape {W.shape}")
    n = max(W.shape)
    lam = singular_values(W) ** 2
    return np.sort(lam / n if normalize else lam)


# ------------------------------------------------------------------------------------------------
# Batched factored SVDs on a torch device (METHODS.md sections 2 and 14)
# ------------------------------------------------------------------------------------------------

def factored_svd_batched(A, B, device=None, core_dtype=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin SVDs of ``W_i = A_i @ B_i`` for a batch (heads of one or many layers), without forming any W_i.

    A: (n, D, r), B: (n, r, N) (numpy or torch), r <= min(D, N). Returns numpy float64 U (n, D, r), s (n, r)
    descending, Vh (n, r, N), signs fixed per item as :func:`fix_signs` does. Same method as
    :func:`factored_svd` (QR of both factors, SVD of the r x r core), batched in torch: the QRs run in the
    factors' precision (float64 when given float64: then equal to the per-head path to rounding), the r x r
    core and its SVD in ``core_dtype`` (default float64, float32 on MPS, which has no float64).
    device: a torch device or name (default cpu).
    """
    import torch

    dev = torch.device(device) if device is not None else torch.device("cpu")
    if core_dtype is None:
        core_dtype = torch.float32 if dev.type == "mps" else torch.float64
    A = torch.as_tensor(A).to(dev)
    B = torch.as_tensor(B).to(dev)
    if A.ndim != 3 or B.ndim != 3 or A.shape[0] != B.shape[0] or A.shape[2] != B.shape[1]:
        raise ValueError(f"factored_svd_batched needs A (n, D, r) and B (n, r, N); got {tuple(A.shape)} and "
                         f"{tuple(B.shape)}")
    work = A.dtype if A.dtype in (torch.float32, torch.float64) else torch.float32
    Qa, Ra = torch.linalg.qr(A.to(work))
    Qb, Rb = torch.linalg.qr(B.to(work).transpose(1, 2))
    core = Ra.to(core_dtype) @ Rb.to(core_dtype).transpose(1, 2)
    Uc, s, Vch = torch.linalg.svd(core)
    U = (Qa.to(core_dtype) @ Uc).double().cpu().numpy()
    Vh = (Vch @ Qb.to(core_dtype).transpose(1, 2)).double().cpu().numpy()
    s = s.double().cpu().numpy()
    # fix_signs per item, vectorised: the largest-|U| entry of each column is made positive
    n, _, r = U.shape
    pivot = np.argmax(np.abs(U), axis=1)  # (n, r), first maximum
    signs = np.sign(np.take_along_axis(U, pivot[:, None, :], axis=1)[:, 0, :])
    signs[signs == 0] = 1.0
    return U * signs[:, None, :], s, Vh * signs[:, :, None]
