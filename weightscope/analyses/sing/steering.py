"""Steering a classifier's feature inside its head's null space, with SING's scores taken through a translator T.

Source: SING (METHODS.md section 8). For a head with null space N ((F - r, F) orthonormal rows) every f + z N keeps
the logits of f; angles are taken after T (:mod:`.translator`): IS = angle(T(f), T(f~)),
AS = angle(T(f), t) - angle(T(f~), t), in degrees (positive AS: f~ moved closer to the text t).

- :func:`steer_through`, the optimal path (affine T: "linear" or "identity"). The images of the equivalent
  features are the affine set T(f) + S, S = row space of K = N M in E. Splitting T(f) into its S-perp part (fixed)
  and its S part (free) is exactly the structure of part 1 (:func:`.geometry.steer`), so that closed form runs on an
  E-space :class:`HeadGeometry` whose null space is S (:func:`translated_geometry`); the optimum e~ is mapped back
  by the minimum-norm z with z K = e~ - T(f), f~ = f + z N. When range(K) = E (generic once F - r >= E, e.g. a
  256-wide classifier with 8 classes into a 64-wide CLIP space) every direction of E is reachable and the optimum is
  the classifier-independent great circle from T(f) towards t: AS = theta - |IS - theta| with theta =
  angle(T(f), t) (towards); it tells nothing about the classifier, which is why the gradient path matters. (A
  64-wide 8-class classifier into a 64-wide space has a 56-d S: its optimum still depends on the classifier.)
- :func:`gradient_path`, SING's path (any T, also "mlp"): Euler steps of the flow of the null-space-projected
  gradient of +-cos(T(f~), t), f~ <- f~ + eta Pi_n grad_f cos(T(f~), t) (gradient through ``T.vjp``). eta makes
  T(f~) turn by at most ``max_step_deg`` per step (so IS grows by at most that); the last step is bisected so IS
  hits the requested value to 1e-6 deg. The flow's direction in E is bent by J Pi_n J^T (M^T Pi_n M for a linear
  T), so it depends on the classifier even where range(K) = E. Its AS is at most the optimal one (the optimum is
  the supremum over all equivalent features at that IS).

Both keep f's row component exactly (every move is projected through ``geom.split``), so the logits are f's to
rounding. All linear algebra goes through :mod:`weightscope.core.linalg`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...core import linalg
from ...core.errors import WeightscopeError
from .geometry import HeadGeometry, steer
from .translator import Translator

BISECT_TOL_DEG = 1e-6        # the gradient path's final IS is the requested one to this
_MAX_HALVINGS = 40           # step halvings before a flow counts as stalled (eta / 2^40)
_PATIENCE = 80               # steps without IS growth before a flow counts as stalled


@dataclass(frozen=True)
class TranslatedSteering:
    """One steered feature. Angles in degrees.

    f_tilde: (F,) the equivalent feature; e: (E,) T(f); e_tilde: (E,) T(f~) (recomputed); image_score: IS =
    angle(e, e~); attribute_score: AS = angle(e, t) - angle(e~, t); max_image_score: optimal path: the IS beyond
    which no finite optimum exists (part 1's limit), gradient path: the largest IS the flow reached; direction: +1
    towards t, -1 away; path: "optimal" or "gradient"; residual: |T(f~) - e~| of the closed-form optimum e~ mapped
    back (optimal path; None for the gradient path); n_steps: Euler steps taken (gradient path; None otherwise).
    """

    f_tilde: np.ndarray
    e: np.ndarray
    e_tilde: np.ndarray
    image_score: float
    attribute_score: float
    max_image_score: float
    direction: int
    path: str
    residual: float | None = None
    n_steps: int | None = None


def translated_scores(T: Translator, f, f_tilde, t) -> tuple[float, float]:
    """SING's (IS, AS) in degrees through T: angle(T(f), T(f~)), angle(T(f), t) - angle(T(f~), t).

    f, f~: (F,); t: (E,)."""
    e, et = T(np.reshape(f, -1)), T(np.reshape(f_tilde, -1))
    t = np.asarray(t, dtype=np.float64).reshape(-1)
    return (float(np.degrees(linalg.vector_angle(e, et))),
            float(np.degrees(linalg.vector_angle(e, t) - linalg.vector_angle(et, t))))


def translated_geometry(geom: HeadGeometry, T: Translator) -> tuple[HeadGeometry, np.ndarray]:
    """The E-space geometry of the equivalent images under an affine T, and K = N M (F - r, E).

    Returns (HeadGeometry whose ``null`` is an orthonormal basis of S = row(K) and ``row`` of its complement in E,
    with ``s`` = K's singular values and the head's rtol for K's rank; K). Raises WeightscopeError for an MLP T or
    mismatched widths.
    """
    if T.in_width != geom.n_features:
        raise WeightscopeError(f"translator maps width {T.in_width} -> {T.out_width} but the classifier's features "
                               f"have width {geom.n_features}")
    M, _ = T.linear_map
    K = geom.null @ M
    if K.shape[0] == 0:
        return HeadGeometry(np.zeros(0), np.eye(T.out_width), np.zeros((0, T.out_width)), geom.rtol), K
    s, row_k, null_k = linalg.row_null_bases(K, geom.rtol)
    # S, the span of the null space's images, plays the null space's part: roles swapped
    return HeadGeometry(s, null_k, row_k, geom.rtol), K


def _prepare(geom: HeadGeometry, T: Translator, f, t, image_score, direction):
    if not isinstance(geom, HeadGeometry):
        raise WeightscopeError(f"steering needs a HeadGeometry (sing.head_geometry(head)), got {type(geom).__name__}")
    if not isinstance(T, Translator):
        raise WeightscopeError(f"T must be a Translator, got {type(T).__name__}")
    f = geom._check(np.reshape(f, -1), "f")
    if T.in_width != geom.n_features:
        raise WeightscopeError(f"translator maps width {T.in_width} -> {T.out_width} but the classifier's features "
                               f"have width {geom.n_features}")
    t = np.asarray(t, dtype=np.float64).reshape(-1)
    if t.shape != (T.out_width,) or not np.isfinite(t).all() or not np.any(t):
        raise WeightscopeError(f"the text embedding must be a finite non-zero vector of width {T.out_width} "
                               f"(the translator's output), got shape {t.shape}")
    if direction not in (1, -1):
        raise WeightscopeError(f"direction must be +1 (towards t) or -1 (away from t), got {direction!r}")
    if not 0.0 <= float(image_score) < 180.0:
        raise WeightscopeError(f"image score {image_score} deg must lie in [0, 180)")
    e = T(f)
    if not np.any(e):
        raise WeightscopeError("T(f) is the zero vector: it has no direction to measure angles from")
    return f, t, e


def steer_through(geom: HeadGeometry, T: Translator, f, t, image_score: float = 40.0,
                  direction: int = 1) -> TranslatedSteering:
    """The equivalent feature f~ whose image T(f~) has the largest (direction=+1) or smallest (-1) AS at the given IS.

    Closed form for an affine T (module docstring). f: (F,); t: (E,) text embedding (a direction). Raises
    WeightscopeError for an MLP T, widths that do not match, an IS outside [0, 180) or beyond the reachable one, or a
    null space with no image (K = 0) at IS > 0.
    """
    f, t, e = _prepare(geom, T, f, t, image_score, direction)
    egeom, K = translated_geometry(geom, T)
    if egeom.null_dim == 0 and image_score > 0:
        raise WeightscopeError("the head's null space has no image through T (N M = 0): no equivalent feature "
                               "changes T(f), so no positive image score is reachable")
    opt = steer(egeom, e, t, image_score, direction)
    z = linalg.solve_rows(K, opt.f_tilde - e) if K.shape[0] else np.zeros(0)
    f_tilde = f + geom.split(z @ geom.null)[1]
    et = T(f_tilde)
    is_deg, as_deg = translated_scores(T, f, f_tilde, t)
    return TranslatedSteering(f_tilde, e, et, is_deg, as_deg, opt.max_image_score, direction, "optimal",
                              residual=float(np.linalg.norm(et - opt.f_tilde)))


def _cos(E, t_hat):
    return np.einsum("ij,ij->i", E, t_hat) / np.linalg.norm(E, axis=1)


class _Flow:
    """What the flow needs of T: an affine T runs in E (state: the accumulated sum of eta g, the image moving by
    eta g G, G = K^T K = M^T Pi_n M), any other T in feature space (state: the accumulated null-space move)."""

    def __init__(self, geom: HeadGeometry, T: Translator, F0: np.ndarray):
        self.geom, self.T, self.F0 = geom, T, F0
        self.affine = T.kind != "mlp"
        self.E0 = T(F0)
        if self.affine:
            self.M = T.linear_map[0]
            K = geom.null @ self.M
            self.G = K.T @ K
        self.state = np.zeros((F0.shape[0], T.out_width if self.affine else F0.shape[1]))

    def image(self, idx):
        """T(f~) of the flows ``idx``; for an MLP T also keeps its relu masks for :meth:`direction`."""
        if self.affine:
            return self.E0[idx] + self.state[idx] @ self.G
        e, self._masks = self.T._forward(self.F0[idx] + self.state[idx])
        return e

    def direction(self, idx, g):
        """(d, J d) at the point of the last :meth:`image` call: the projected gradient step in state coordinates
        and its image's first-order motion."""
        if self.affine:
            return g, g @ self.G
        d = self.geom.split(self.T._vjp(self._masks, g))[1]
        return d, self.T._jvp(self._masks, d)

    def trial(self, idx, e, d, jd, eta):
        if self.affine:
            return e + eta[:, None] * jd
        return self.T(self.F0[idx] + self.state[idx] + eta[:, None] * d)

    def features(self):
        move = self.state @ self.M.T if self.affine else self.state
        return self.F0 + self.geom.split(move)[1]       # f's row component kept exactly


def gradient_flow(geom: HeadGeometry, T: Translator, F0: np.ndarray, texts: np.ndarray, image_score: float,
                  directions: np.ndarray, max_step_deg: float = 0.25, max_steps: int | None = None, bar=None):
    """SING's projected-gradient flow for P (feature, text, direction) triples at once (module docstring).

    F0: (P, F) features; texts: (P, E) text embeddings (directions); directions: (P,) +1 / -1. Returns
    (F_tilde (P, F), reached (P,) bool, best_is (P,) largest IS reached in degrees, n_steps (P,)); where not
    reached F_tilde is the flow's last point. A flow stalls (not reached) when it cannot improve cos(T(f~), t) any
    more (at its maximum over the equivalent images), when IS has not grown for ``_PATIENCE`` steps, or after
    ``max_steps`` (default 20 * image_score / max_step_deg + 200). bar: an optional progress bar (tqdm), advanced
    by P in all: each flow counts by the share of the target IS it has reached (1 once it stops). Inputs are
    assumed checked (see gradient_path).
    """
    P = F0.shape[0]
    target = float(image_score)
    step = np.radians(max_step_deg)
    max_steps = int(20 * target / max_step_deg + 200) if max_steps is None else int(max_steps)
    t_hat = linalg.normalize_rows(texts)
    sign = np.asarray(directions, dtype=np.float64)
    flow = _Flow(geom, T, F0)
    cur_is, best = np.zeros(P), np.zeros(P)
    last_gain, n_steps = np.zeros(P, dtype=int), np.zeros(P, dtype=int)
    reached, active = np.zeros(P, dtype=bool), np.ones(P, dtype=bool)
    if target == 0.0:
        if bar is not None:
            bar.update(P)
        return F0.copy(), np.ones(P, dtype=bool), best, n_steps
    shown = 0
    for it in range(max_steps):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        e0, th, sg = flow.E0[idx], t_hat[idx], sign[idx]
        e = flow.image(idx)
        en = np.linalg.norm(e, axis=1)
        c = np.einsum("ij,ij->i", e, th) / en
        g = sg[:, None] * (th - c[:, None] * e / en[:, None]) / en[:, None]    # d(+-cos)/de
        d, jd = flow.direction(idx, g)
        nj = np.linalg.norm(jd, axis=1)
        ok = nj > 1e-300
        # eta: T(f~) moves by sin(step) |e| to first order, so it turns by at most `step` (exact for affine T)
        eta = np.where(ok, np.sin(step) * en / np.where(ok, nj, 1.0), 0.0)
        accept = np.zeros(idx.size, dtype=bool)
        new_is = cur_is[idx].copy()
        for _ in range(_MAX_HALVINGS):
            todo = np.flatnonzero(~accept & ok & (eta > 0))
            if todo.size == 0:
                break
            e_new = flow.trial(idx[todo], e[todo], d[todo], jd[todo], eta[todo])
            turn = linalg.vector_angle(e[todo], e_new)
            better = sg[todo] * _cos(e_new, th[todo]) > sg[todo] * c[todo]
            good = (turn <= step * (1 + 1e-9)) & better
            accept[todo[good]] = True
            new_is[todo[good]] = np.degrees(linalg.vector_angle(e0[todo[good]], e_new[good]))
            eta[todo[~good]] *= 0.5
        crossed = accept & (new_is >= target)
        if crossed.any():
            # bisect the crossing step so that IS lands on the target
            cj = np.flatnonzero(crossed)
            lo, hi, is_hi = np.zeros(cj.size), eta[cj].copy(), new_is[cj]
            for _ in range(200):
                if np.all(np.abs(is_hi - target) <= 0.1 * BISECT_TOL_DEG) or np.all(hi - lo <= 1e-15 * hi):
                    break
                mid = 0.5 * (lo + hi)
                is_mid = np.degrees(linalg.vector_angle(e0[cj], flow.trial(idx[cj], e[cj], d[cj], jd[cj], mid)))
                up = is_mid >= target
                hi, lo, is_hi = np.where(up, mid, hi), np.where(up, lo, mid), np.where(up, is_mid, is_hi)
            eta[cj], new_is[cj] = hi, is_hi
            crossed[cj[np.abs(is_hi - target) > BISECT_TOL_DEG]] = False
        moved = np.flatnonzero(accept)
        flow.state[idx[moved]] += eta[moved, None] * (d[moved])
        cur_is[idx[moved]] = new_is[moved]
        n_steps[idx[moved]] += 1
        grew = new_is > best[idx] + 1e-9
        best[idx] = np.maximum(best[idx], new_is)
        last_gain[idx[grew]] = it
        done_now = crossed | ~accept | (it - last_gain[idx] >= _PATIENCE)
        reached[idx[crossed]] = True
        active[idx[done_now]] = False
        if bar is not None:
            # every flow advances together, so count the share of the target IS reached, not finished flows
            # (which would all finish at the end and leave the bar at 0 until then)
            shown = _advance(bar, shown, np.where(active, np.minimum(best / target, 1.0), 1.0).sum())
    if bar is not None:
        _advance(bar, shown, P)
    return flow.features(), reached, best, n_steps


def _advance(bar, shown: int, progress: float) -> int:
    """Move a progress bar to ``progress`` flows' worth (whole units); returns the new position."""
    now = int(progress)
    if now > shown:
        bar.update(now - shown)
    return max(now, shown)


def gradient_path(geom: HeadGeometry, T: Translator, f, t, image_score: float = 40.0, direction: int = 1,
                  max_step_deg: float = 0.25, max_steps: int | None = None) -> TranslatedSteering:
    """SING's steering: follow the null-space-projected gradient of cos(T(f~), t) (direction +1) or of -cos (-1)
    until IS = ``image_score`` degrees (to 1e-6 deg); see :func:`gradient_flow`. Any T (linear, identity, mlp).

    f: (F,); t: (E,). Deterministic. Raises WeightscopeError for bad inputs (as :func:`steer_through`), a
    ``max_step_deg`` outside (0, 10], or when the flow stalls before the requested IS (the message gives the largest
    IS reached).
    """
    f, t, e = _prepare(geom, T, f, t, image_score, direction)
    if not isinstance(max_step_deg, (int, float)) or not 0.0 < max_step_deg <= 10.0:
        raise WeightscopeError(f"max_step_deg = {max_step_deg!r}; give a step in (0, 10] degrees, e.g. 0.25")
    if max_steps is not None and (not isinstance(max_steps, int) or max_steps < 1):
        raise WeightscopeError(f"max_steps = {max_steps!r}; give a positive integer or None")
    F_tilde, reached, best, n_steps = gradient_flow(geom, T, f[None], t[None], image_score, np.array([direction]),
                                                    max_step_deg, max_steps)
    if not reached[0]:
        raise WeightscopeError(f"image score {image_score:g} deg is out of reach on the gradient path for this feature "
                               f"and text: the flow stalls at IS = {best[0]:.2f} deg")
    f_tilde = F_tilde[0]
    is_deg, as_deg = translated_scores(T, f, f_tilde, t)
    return TranslatedSteering(f_tilde, e, T(f_tilde), is_deg, as_deg, float(best[0]), direction, "gradient",
                              n_steps=int(n_steps[0]))
