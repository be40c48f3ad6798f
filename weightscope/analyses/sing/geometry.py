"""The null space of a linear head, its equivalence classes, and SING's image / attribute scores (closed form).

Source: SING (seed 000; METHODS.md section 8). A head maps a feature f (F,) to logits f W^T + b. With the SVD
W = P S Q^T and numerical rank r (relative tolerance, ``linalg.RANK_RTOL``), the row space is spanned by Q_r and
the null space N by the rest; Pi_n = I - Q_r^T Q_r. Every f + Pi_n delta has the logits of f: the equivalence class
of f. All linear algebra goes through :mod:`weightscope.core.linalg`.

Steering (:func:`steer`). Scores in degrees: IS = angle(f, f~), AS = angle(f, t) - angle(f~, t). For a given IS
we want the equivalent f~ with the largest (or smallest) AS. Closed form, for a feature space where angles are
taken directly (SING's translator T is the identity: CLIP zero-shot heads, whose features are image embeddings):

- write f = a + b, a = f_row (fixed: f~ must keep it for the logits to stay), b = Pi_n f. An equivalent f~ is
  a + n for any n in N, so its direction u = f~/|f~| ranges over the unit vectors of V = span(a) + N whose
  coordinate alpha = <u, a^> along a^ = a/|a| is positive (f~ = (|a| / alpha) u).
- angles are scale-free and f, f~ lie in V, so only g = P_V t = <t, a^> a^ + Pi_n t matters; with h = f/|f|,
  maximising <u, g> subject to <u, h> = cos(IS) on the sphere of V gives u = cos(IS) h + sin(IS) w with
  w = (g - <g, h> h) / |g - <g, h> h| (minimising: -w). The move f~ - f lies in N and in span(a, b, Pi_n t),
  hence in span(Pi_n f, Pi_n t).
- it is feasible while alpha(IS) = cos(IS) A + sin(IS) B > 0, A = |a|/|f|, B = <w, a^>, i.e. for
  IS < IS_max = atan2(A, -B). Beyond it the supremum is approached only as |f~| -> infinity; we refuse there.
- f is used as given (not normalised): IS and AS do not depend on its scale, and f~ scales with f, keeping
  f's row component exactly, so the head's logits of f~ and f are identical (of the raw vectors; a CLIP
  pipeline that renormalises the image embedding would rescale them, same ranking). t is only used as a
  direction.

With a non-orthogonal translator T between a classifier's features and CLIP space (SING's ridge map) the angles
are taken after T and this closed form does not apply; for such heads pass features already in the angle space.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...core import linalg
from ...core.errors import WeightscopeError
from ...models.linear_heads import LinearHead

_TINY = 1e-12


@dataclass(frozen=True)
class HeadGeometry:
    """Row and null space of a head. s: (min(C, F),) singular values; row: (r, F) and null: (F - r, F) orthonormal
    bases (row in singular-value order); rtol: the relative rank tolerance used."""

    s: np.ndarray
    row: np.ndarray
    null: np.ndarray
    rtol: float

    @property
    def rank(self) -> int:
        return int(self.row.shape[0])

    @property
    def null_dim(self) -> int:
        return int(self.null.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.row.shape[1])

    def _check(self, X: np.ndarray, what: str) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.shape[-1] != self.n_features:
            raise WeightscopeError(f"{what} has width {X.shape[-1]} but the head's features have width {self.n_features}")
        if not np.isfinite(X).all():
            raise WeightscopeError(f"{what} holds NaN or infinite values")
        return X

    def split(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(X_row, X_null)`` of features X (n, F) or (F,): what the head sees and what it is blind to."""
        return linalg.split_components(self._check(X, "features"), self.row)

    def null_share(self, X: np.ndarray) -> np.ndarray:
        """Share of each feature's squared norm in the null space, (n,) in [0, 1] (NaN for a zero feature)."""
        return 1.0 - linalg.subspace_energy(self._check(X, "features"), self.row)

    def equivalent(self, f: np.ndarray, delta: np.ndarray) -> np.ndarray:
        """``f + Pi_n delta``: a feature with the logits of f. f, delta: (F,) or (n, F)."""
        f, delta = self._check(f, "f"), self._check(delta, "delta")
        return f + linalg.split_components(delta, self.row)[1]


def head_geometry(head: LinearHead, rtol: float = linalg.RANK_RTOL) -> HeadGeometry:
    """SVD of the head's weight (C, F) -> :class:`HeadGeometry` (rank by the relative tolerance ``rtol``)."""
    if not isinstance(rtol, (int, float)) or not 0.0 <= rtol < 1.0:
        raise WeightscopeError(f"rtol = {rtol!r}; give a relative tolerance in [0, 1), e.g. 1e-6")
    s, row, null = linalg.row_null_bases(head.weight, rtol)
    return HeadGeometry(s, row, null, float(rtol))


@dataclass(frozen=True)
class Steering:
    """One steered equivalent feature. Angles in degrees.

    f_tilde: (F,) the equivalent feature; image_score: IS = angle(f, f~); attribute_score: AS =
    angle(f, t) - angle(f~, t) (positive: f~ is closer to t); angle_f_t / angle_ft_t: the two angles;
    max_image_score: the IS beyond which no finite f~ on this optimal path exists; direction: +1 towards t,
    -1 away from it.
    """

    f_tilde: np.ndarray
    image_score: float
    attribute_score: float
    angle_f_t: float
    angle_ft_t: float
    max_image_score: float
    direction: int


def _plane(f: np.ndarray, t: np.ndarray, geom: HeadGeometry, direction: int):
    """(a, |a|, h, w, A, B) of the closed form in the module docstring; a = 0 handled with V = N."""
    a, b = geom.split(f)
    t_row, t_null = geom.split(t)
    norm_f, norm_a = np.linalg.norm(f), np.linalg.norm(a)
    h = f / norm_f
    if norm_a > _TINY * norm_f:
        a_hat = a / norm_a
        g = (t @ a_hat) * a_hat + t_null
    else:      # f has no row component: any direction of N is equivalent (the logits are those of 0)
        a_hat, g = None, t_null
    g_perp = g - (g @ h) * h
    if np.linalg.norm(g_perp) <= 1e-12 * max(np.linalg.norm(t), 1.0):
        # t's part in V is parallel to f: every move changes the angle to t the same way; take the null
        # direction farthest from f, so that the result is still deterministic
        cand = geom.null - np.outer(geom.null @ h, h)
        g_perp = cand[int(np.argmax(np.linalg.norm(cand, axis=1)))]
    w = direction * g_perp / np.linalg.norm(g_perp)
    A = norm_a / norm_f
    B = float(w @ a_hat) if a_hat is not None else 0.0
    return a, norm_a, a_hat, h, w, A, B


def steer(head_or_geometry, f, t, image_score: float = 40.0, direction: int = 1) -> Steering:
    """The equivalent feature f~ = f + Pi_n delta with the largest (direction=+1) or smallest (-1) attribute score
    for a given image score (degrees). Closed form; derivation in the module docstring.

    head_or_geometry: a LinearHead or HeadGeometry; f: (F,) feature (any scale); t: (F,) text direction in the same
    space. Raises WeightscopeError for an empty null space with image_score > 0, a zero f or t, an image score
    outside [0, 180) or at / beyond the largest reachable one (the message gives it).
    """
    if not isinstance(head_or_geometry, (HeadGeometry, LinearHead)):
        raise WeightscopeError(f"steer needs a LinearHead or a HeadGeometry, got {type(head_or_geometry).__name__}")
    geom = head_or_geometry if isinstance(head_or_geometry, HeadGeometry) else head_geometry(head_or_geometry)
    f = geom._check(np.reshape(f, -1), "f")
    t = geom._check(np.reshape(t, -1), "t")
    if direction not in (1, -1):
        raise WeightscopeError(f"direction must be +1 (towards t) or -1 (away from t), got {direction!r}")
    if not 0.0 <= float(image_score) < 180.0:
        raise WeightscopeError(f"image score {image_score} deg must lie in [0, 180)")
    if np.linalg.norm(f) == 0 or np.linalg.norm(t) == 0:
        raise WeightscopeError("f and t must be non-zero vectors (they are used as directions)")
    if geom.null_dim == 0:
        if image_score > 0:
            raise WeightscopeError("the head's null space is empty (rank = feature width): every move changes the "
                                   "logits, so no equivalent feature has a positive image score")
        max_is = 0.0
        f_tilde = f.copy()
    else:
        a, norm_a, a_hat, h, w, A, B = _plane(f, t, geom, direction)
        max_is = float(np.degrees(np.arctan2(A, -B))) if a_hat is not None else 180.0
        theta = np.radians(float(image_score))
        u = np.cos(theta) * h + np.sin(theta) * w
        if a_hat is None:
            f_tilde = np.linalg.norm(f) * u
        else:
            if image_score >= max_is or np.cos(theta) * A + np.sin(theta) * B <= _TINY:
                raise WeightscopeError(
                    f"image score {image_score:g} deg is out of reach for this feature and text: an equivalent "
                    f"feature on the optimal path exists only below {max_is:.2f} deg")
            alpha = float(u @ a_hat)
            # rebuild as a + (null part) so that the row component is f's to the last bit the projection allows
            f_tilde = a + geom.split((norm_a / alpha) * u)[1]
    is_deg = float(np.degrees(linalg.vector_angle(f, f_tilde)))
    ang_f = float(np.degrees(linalg.vector_angle(f, t)))
    ang_ft = float(np.degrees(linalg.vector_angle(f_tilde, t)))
    return Steering(f_tilde, is_deg, ang_f - ang_ft, ang_f, ang_ft, max_is, direction)


def scores(f, f_tilde, t) -> tuple[float, float]:
    """SING's (IS, AS) in degrees for any pair f, f~ and text t: angle(f, f~), angle(f, t) - angle(f~, t)."""
    f, f_tilde, t = (np.asarray(x, dtype=np.float64) for x in (f, f_tilde, t))
    return (float(np.degrees(linalg.vector_angle(f, f_tilde))),
            float(np.degrees(linalg.vector_angle(f, t) - linalg.vector_angle(f_tilde, t))))
