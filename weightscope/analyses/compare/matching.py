"""One head of two checkpoints: tie groups, matching, verdicts, energy split, intruders (see the package doc)."""
from __future__ import annotations

import math

import numpy as np
from scipy.optimize import linear_sum_assignment

from ...decompose.head_svd import HeadSVD
from ...core.errors import WeightscopeError
from ...core.linalg import angles_from_cosines, factored_singular_values, linked_runs, nearest_orthogonal, symmetric_eigh
from .results import DirectionChange, HeadChange


def _eigenbasis_near_identity(S: np.ndarray) -> np.ndarray:
    """Orthonormal eigenvectors of a symmetric k x k matrix as columns, ordered and signed to stay closest to the
    current basis: column k is the eigenvector assigned (Hungarian on |E|) to basis vector k, with E[k, k] >= 0.

    A group whose basis already diagonalises S keeps its indices, and ties broken by the tuning keep as much of
    each direction's identity as the new axes allow.
    """
    _, E = symmetric_eigh(S)
    _, cols = linear_sum_assignment(-np.abs(E))
    E = E[:, cols]
    signs = np.sign(np.diag(E))
    signs[signs == 0] = 1.0
    return E * signs


def _delta_norms(base: HeadSVD, tuned: HeadSVD) -> tuple[float, float]:
    """(||W_t - W_b||_F^2, ||W_t - W_b||_2) from the two SVDs, without a D x D matrix.

    W_t - W_b = [U_b, U_t] diag(-s_b, s_t) [V_b; V_t], a rank-2r product measured from its factors: exact to the
    rounding of the change itself (||W_t||^2 + ||W_b||^2 - 2 <W_t, W_b> would lose a small change).
    """
    sv = factored_singular_values(np.vstack([base.read, tuned.read]).T,
                                  np.concatenate([-base.s, tuned.s])[:, None] * np.vstack([base.write, tuned.write]))
    return float(np.sum(sv ** 2)), float(sv[0]) if sv.size else 0.0


def _tie_groups(s: np.ndarray, groups: list[list[int]], tie: float) -> list[list[int]]:
    """Index groups of s (descending) in which neighbours are linked by a gap <= ``tie`` or by a shared group."""
    linked = np.zeros(max(s.size - 1, 0), dtype=bool)
    if s.size > 1:
        linked |= (s[:-1] - s[1:]) <= tie
    for g in groups:
        for i, j in zip(sorted(g)[:-1], sorted(g)[1:]):
            linked[i:j] = True  # decomposition groups are runs of neighbours
    return linked_runs(linked)


def _largest_angle(C: np.ndarray) -> float:
    angles = angles_from_cosines(C)
    return float(np.degrees(angles.max())) if angles.size else 0.0


def _align_tuned_group(Cu_S: np.ndarray, Cv_S: np.ndarray) -> np.ndarray:
    """The rotation Q of a tuned tie group (rows: new tuned rows in group coordinates) that best pairs it with
    base rows: Procrustes on the read cosines, the write cosines, or both (whichever gives the largest
    sum of per-row best |(Cu Q^T)(Cv Q^T)|). Read and write alone matter when a sign flip inside the group makes
    Cu_S + Cv_S cancel."""
    best, best_score = None, -1.0
    for M in (Cu_S + Cv_S, Cu_S, Cv_S):
        Q = nearest_orthogonal(M)
        score = float(np.abs((Cu_S @ Q.T) * (Cv_S @ Q.T)).max(axis=1).sum())
        if score > best_score + 1e-12:
            best, best_score = Q, score
    return best


def compare_heads(
    base: HeadSVD,
    tuned: HeadSVD,
    cos_threshold: float = 0.8,
    ratio_tol: float = 0.05,
    change_tol: float = 1e-4,
    tie_factor: float = 0.25,
    noise: float = 0.0,
    noise_factor: float = 3.0,
    top_k: int = 8,
) -> HeadChange:
    """Compare one head of two checkpoints (method: the package doc).

    base, tuned: HeadSVD of the same (layer, head), same rank r and width D. cos_threshold: match cosine below
    which a direction is rotated; ratio_tol: |ratio - 1| above which a matched direction is reweighted (or any
    flip); change_tol: relative change ||dW||_F / ||W_b||_F at or below which the head is unchanged; tie_factor:
    neighbours whose singular values differ by at most tie_factor x ||dW||_2 are compared as one subspace; noise:
    expected ||dW||_F from storage rounding (``noise.rounding_noise``; 0 for exact checkpoints); noise_factor: the
    floor is noise_factor x noise, for the head's change and for singular values; top_k: size of the leading
    subspaces whose principal angles are reported. Raises WeightscopeError for mismatched shapes.
    """
    if base.read.shape != tuned.read.shape:
        raise WeightscopeError(f"layer {base.layer} head {base.head}: base directions {base.read.shape} vs tuned "
                               f"{tuned.read.shape}; compare heads of the same architecture")
    sb, st = base.s.astype(np.float64), tuned.s.astype(np.float64)
    r = sb.size
    Cu, Cv = base.read @ tuned.read.T, base.write @ tuned.write.T   # r x r cosines; groups rotate rows / columns
    energy_total, change_norm = _delta_norms(base, tuned)
    k = min(top_k, r)
    top_angles = [float(a) for a in np.degrees(angles_from_cosines(Cv[:k, :k]))]
    angle_read, angle_write = _largest_angle(Cu), _largest_angle(Cv)
    norm_base = float(np.sqrt(np.sum(sb ** 2)))
    tolerance = max(change_tol * norm_base, noise_factor * noise)
    changed = energy_total > 0 and math.sqrt(energy_total) > tolerance
    s_floor = max(noise_factor * noise, 1e-9 * max(sb[0] if r else 0.0, st[0] if r else 0.0))

    base_groups = _tie_groups(sb, base.groups, tie_factor * change_norm)
    tuned_groups = _tie_groups(st, tuned.groups, tie_factor * change_norm)
    X = (Cu * st) @ Cv.T                              # X_ij = u_i W_t v_j^T in base coordinates
    Bdiag = np.diag(sb)                               # W_b in base coordinates
    group_of: dict[int, list[int]] = {}
    # base groups: the eigenbasis of the symmetric part of W_t on the group (the axes the tuning rescaled)
    for g in base_groups:
        R = _eigenbasis_near_identity(0.5 * (X[np.ix_(g, g)] + X[np.ix_(g, g)].T)).T
        Cu[g], Cv[g] = R @ Cu[g], R @ Cv[g]
        X[g, :] = R @ X[g, :]
        X[:, g] = X[:, g] @ R.T
        Bdiag[np.ix_(g, g)] = R @ Bdiag[np.ix_(g, g)] @ R.T
        for i in g:
            group_of[i] = g
    # geometric mean of ||u_i W_t|| and ||W_t v_i^T|| (what is left of base direction i in the tuned map), taken
    # while the tuned side is still its SVD basis (W_t diagonal in it)
    image = np.sqrt(np.sqrt(np.sum((Cu * st) ** 2, axis=1) * np.sum((Cv * st) ** 2, axis=1)))
    # tuned groups: rotate to best pair with the base rows they overlap most
    st_eff = st.copy()
    for g in tuned_groups:
        weight = np.linalg.norm(Cu[:, g], axis=1) * np.linalg.norm(Cv[:, g], axis=1)
        near = np.sort(np.argsort(-weight, kind="stable")[: len(g)])
        Q = _align_tuned_group(Cu[np.ix_(near, g)], Cv[np.ix_(near, g)])
        Cu[:, g], Cv[:, g] = Cu[:, g] @ Q.T, Cv[:, g] @ Q.T
        st_eff[g] = np.einsum("ij,j,ij->i", Q, st[g], Q)  # diagonal of Q diag(s_g) Q^T

    C = Cu * Cv
    rows, cols = linear_sum_assignment(-np.abs(C))
    match = np.empty(r, dtype=int)
    match[rows] = cols
    a, b = np.diag(X).copy(), np.diag(Bdiag).copy()

    directions, energy_in = [], 0.0
    for i in range(r):
        j = int(match[i])
        cos, s_t = float(C[i, j]), float(st_eff[j])
        base_dead, tuned_dead = b[i] <= s_floor, s_t <= s_floor
        e = float((a[i] - b[i]) ** 2)
        if base_dead:
            ratio = 1.0 if tuned_dead else math.inf
        else:
            ratio = math.copysign(s_t / b[i], cos)
        if tuned_dead and not base_dead and image[i] <= s_floor:
            cos, ratio = 1.0, s_t / b[i]          # rescaled to (numerically) zero: its partner's vectors are arbitrary
        if not changed or (base_dead and tuned_dead):
            kind = "stable"
        elif base_dead or abs(cos) < cos_threshold:
            kind = "rotated"                        # a new direction (from nothing) or one that turned too far
        elif cos < 0 or abs(ratio - 1.0) > ratio_tol:
            kind = "reweighted"
        else:
            kind = "stable"
        if not base_dead:
            energy_in += e                          # a direction born from nothing has no base component to rescale
        directions.append(DirectionChange(
            index=i, tuned_index=j, s_base=float(b[i]), s_tuned=s_t, ratio=float(ratio),
            cos=cos, cos_read=float(abs(Cu[i, j])), cos_write=float(abs(Cv[i, j])),
            gain=float(a[i] / b[i]) if not base_dead else 0.0, energy=e, kind=kind, group=group_of.get(i),
        ))
    energy_in = min(energy_in, energy_total)
    live = st_eff > s_floor
    intruder_cos = [float(c) for c in np.abs(Cv[:, live]).max(axis=0)] if r and live.any() else []
    return HeadChange(
        layer=base.layer, head=base.head, norm_base=norm_base, norm_tuned=float(np.sqrt(np.sum(st ** 2))),
        energy_total=energy_total, energy_in_basis=energy_in, energy_off_basis=energy_total - energy_in,
        noise=float(noise), tolerance=float(tolerance), angle_read=angle_read, angle_write=angle_write,
        changed=bool(changed), top_angles_write=top_angles, intruder_cos=intruder_cos, directions=directions,
    )
