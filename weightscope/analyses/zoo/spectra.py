"""Spectral diagnostics of weight matrices (METHODS.md section 13): heavy-tailed self-regularisation.

For a weight matrix W (N x M, transposed so N >= M) the empirical spectral density (ESD) is the set of eigenvalues
lambda_i = s_i^2 / N of W^T W / N (``core.linalg.empirical_spectral_density``). Figures per matrix:

- ``alpha``: exponent of the power law p(lambda) ~ lambda^-alpha fitted to the tail lambda >= ``xmin`` by maximum
  likelihood, ``xmin`` chosen to minimise the Kolmogorov-Smirnov distance ``ks`` between the tail and the fit
  (Clauset, Shalizi & Newman, SIAM Review 2009; the ``powerlaw`` package, as WeightWatcher: Martin & Mahoney,
  JMLR 22(165), 2021, sec. 5). Read as: about 2-6 well trained, > 6 under-trained (close to random), < 2
  over-fitted. ``n_tail``: eigenvalues in the fitted tail.
- ``stable_rank`` = ||W||_F^2 / ||W||_2^2; ``effective_rank`` = exp(H(p)), p_i = s_i / sum_j s_j (Roy & Vetterli,
  EUSIPCO 2007).
- ``mp_ks``: Kolmogorov-Smirnov distance between the ESD and the Marchenko-Pastur law of a random matrix of the same
  shape and variance (q = M / N, sigma^2 = mean lambda); ``spikes``: eigenvalues above the law's upper edge
  sigma^2 (1 + sqrt q)^2. A Gaussian W has mp_ks near 0 and no spikes (Marchenko & Pastur, 1967).

Matrices of a ViT block (``VisionWeights``): ``q``, ``k``, ``v`` (D x D, all heads), ``o`` (D x D), ``mlp_in``
(D x F), ``mlp_out`` (F x D). Per head (at most dh singular values, so no power-law fit: descriptive only, as
METHODS.md says) the value-output map ``vo`` and the query-key map ``qk``: stable and effective rank.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from ...core.errors import WeightscopeError
from ...core.linalg import factored_singular_values, singular_values

EXTRA = 'pip install -e ".[zoo]"'
MATRICES = ("q", "k", "v", "o", "mlp_in", "mlp_out")
HEAD_MAPS = ("vo", "qk")
#: fewer eigenvalues than this: no power-law fit (alpha NaN); the MLE's standard error is (alpha - 1) / sqrt(n_tail)
MIN_FIT = 50


def stable_rank(s: np.ndarray) -> float:
    """||W||_F^2 / ||W||_2^2 from the singular values s (any order); 0 for a zero matrix."""
    s = np.asarray(s, dtype=np.float64)
    top = float(np.max(s)) if s.size else 0.0
    return float(np.sum(s ** 2) / top ** 2) if top > 0 else 0.0


def effective_rank(s: np.ndarray) -> float:
    """exp of the Shannon entropy of p_i = s_i / sum s (Roy & Vetterli 2007); 0 for a zero matrix."""
    s = np.asarray(s, dtype=np.float64)
    total = float(np.sum(s))
    if total <= 0:
        return 0.0
    p = s[s > 0] / total
    return float(np.exp(-np.sum(p * np.log(p))))


def scan_xmin(eigenvalues: np.ndarray, min_tail: int = 10) -> float:
    """The lower cut-off of Clauset, Shalizi & Newman (2009, sec. 3.3): among the sorted positive values (each a
    candidate xmin leaving at least ``min_tail`` points), the one whose tail's maximum-likelihood power law
    (alpha = 1 + m / sum log(x / xmin)) has the smallest Kolmogorov-Smirnov distance
    max |i / m - (1 - (x_i / xmin)^(1 - alpha))|. The criterion of ``powerlaw.Fit`` (continuous data, no xmax),
    vectorised: one pass over all candidates instead of one fitted object per candidate (about 30x faster on 768
    eigenvalues). powerlaw also drops candidates it flags as noisy fits, so where two candidates' distances
    nearly tie the two can pick different cut-offs (tests/test_spectra.py bounds the difference)."""
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    lam = lam[lam > 0]
    cands = np.unique(lam[: max(lam.size - min_tail + 1, 1)])
    best, best_d = float(cands[0]), math.inf
    logs = np.log(lam)
    csum = np.concatenate([[0.0], np.cumsum(logs[::-1])])[::-1]      # csum[k] = sum(logs[k:])
    for chunk in np.array_split(cands, max(1, cands.size // 256)):
        k = np.searchsorted(lam, chunk, side="left")                  # first index of each candidate's tail
        m = lam.size - k
        with np.errstate(divide="ignore", invalid="ignore"):
            alpha = 1.0 + m / (csum[k] - m * np.log(chunk))
            j = np.arange(lam.size)[None, :]
            inside = j >= k[:, None]
            rank = (j - k[:, None] + 1) / m[:, None]
            fitted = 1.0 - (lam[None, :] / chunk[:, None]) ** (1.0 - alpha[:, None])
            dist = np.where(inside, np.abs(rank - fitted), 0.0).max(axis=1)
        dist = np.where(np.isfinite(alpha) & (alpha > 1), dist, np.inf)
        i = int(np.argmin(dist))
        if dist[i] < best_d:
            best, best_d = float(chunk[i]), float(dist[i])
    return best


def fit_power_law(eigenvalues: np.ndarray) -> dict:
    """{"alpha", "xmin", "ks", "n_tail"}: the power-law tail of ``eigenvalues``: maximum likelihood with xmin chosen
    by the minimum KS distance (:func:`scan_xmin`), alpha and ks then from ``powerlaw.Power_Law`` at that xmin (the
    library WeightWatcher uses). NaNs when fewer than ``MIN_FIT`` positive eigenvalues. Raises WeightscopeError
    naming the extra when ``powerlaw`` is not installed."""
    try:
        import powerlaw
    except ImportError:
        raise WeightscopeError(f"spectral diagnostics need the powerlaw package: {EXTRA}") from None
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    lam = lam[lam > 0]
    if lam.size < MIN_FIT:
        return {"alpha": math.nan, "xmin": math.nan, "ks": math.nan, "n_tail": 0}
    xmin = scan_xmin(lam)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        # powerlaw 2 bounds alpha to [0, 3] unless told otherwise; a random layer's tail is far steeper
        fit = powerlaw.Power_Law(xmin=xmin, data=lam, parameter_ranges={"alpha": [1.0, 100.0]})
    return {"alpha": float(fit.alpha), "xmin": float(xmin), "ks": float(fit.D), "n_tail": int(np.sum(lam >= xmin))}


def marchenko_pastur_cdf(x: np.ndarray, q: float, sigma2: float = 1.0) -> np.ndarray:
    """CDF of the Marchenko-Pastur law of the eigenvalues of W^T W / N, W (N x M) with i.i.d. entries of variance
    ``sigma2`` and ratio q = M / N in (0, 1]: the integral of the density sqrt((l+ - x)(x - l-)) / (2 pi sigma2 q x)
    on [l-, l+], l+- = sigma2 (1 +- sqrt q)^2. Computed with x = c - h cos(theta) (c, h: centre and half-width of
    the support), which makes the integrand smooth, on a 4097-point trapezoid grid (error below 1e-6)."""
    if not 0 < q <= 1:
        raise ValueError(f"q = M / N must lie in (0, 1], got {q}")
    lo, hi = (1 - math.sqrt(q)) ** 2, (1 + math.sqrt(q)) ** 2
    c, h = (lo + hi) / 2, (hi - lo) / 2
    theta = np.linspace(0.0, math.pi, 4097)
    xs = c - h * np.cos(theta)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(xs > 0, (h * np.sin(theta)) ** 2 / (2 * math.pi * q * xs), 0.0)
    if q == 1:   # the integrand tends to 2 h^2 / (2 pi c h) ... at theta = 0: its limit h / (pi q)
        f[0] = h / (math.pi * q)
    F = np.concatenate([[0.0], np.cumsum((f[1:] + f[:-1]) / 2 * np.diff(theta))])
    F /= F[-1]
    x = np.asarray(x, dtype=np.float64) / sigma2
    t = np.arccos(np.clip((c - x) / h, -1.0, 1.0))
    return np.interp(t, theta, F)


def marchenko_pastur_fit(eigenvalues: np.ndarray, shape: tuple[int, int]) -> dict:
    """{"mp_ks", "mp_edge", "spikes", "sigma2"}: how far the ESD of a matrix of ``shape`` is from Marchenko-Pastur
    with its own variance (sigma2 = mean eigenvalue; eigenvalues as ``empirical_spectral_density`` gives them)."""
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    n, m = max(shape), min(shape)
    q = m / n
    sigma2 = float(np.mean(lam)) if lam.size else 0.0
    if sigma2 <= 0:
        return {"mp_ks": math.nan, "mp_edge": 0.0, "spikes": 0, "sigma2": 0.0}
    F = marchenko_pastur_cdf(lam, q, sigma2)
    i = np.arange(1, lam.size + 1)
    ks = float(max(np.max(i / lam.size - F), np.max(F - (i - 1) / lam.size)))
    edge = sigma2 * (1 + math.sqrt(q)) ** 2
    return {"mp_ks": ks, "mp_edge": edge, "spikes": int(np.sum(lam > edge)), "sigma2": sigma2}


def matrix_spectrum(W: np.ndarray) -> dict:
    """Every per-matrix figure of the module doc for W (N x M): alpha, xmin, ks, n_tail, stable_rank,
    effective_rank, mp_ks, mp_edge, spikes, lambda_max (largest ESD eigenvalue), shape."""
    W = np.asarray(W, dtype=np.float64)
    s = singular_values(W)
    lam = np.sort(s ** 2 / max(W.shape))   # = core.linalg.empirical_spectral_density(W), from the same SVD
    return {"shape": list(W.shape), **fit_power_law(lam), "stable_rank": stable_rank(s),
            "effective_rank": effective_rank(s), **marchenko_pastur_fit(lam, W.shape),
            "lambda_max": float(lam[-1]) if lam.size else 0.0}


def block_matrices(layer) -> dict[str, np.ndarray]:
    """The matrices of one block (``LayerWeights``) by name (``MATRICES``), each as the map x -> x @ W."""
    a = layer.attn
    D = a.read_q.shape[1]
    cat = lambda r: np.transpose(r, (1, 0, 2)).reshape(D, -1)  # noqa: E731 -- (H, D, dh) -> (D, H dh)
    return {"q": cat(a.read_q), "k": cat(a.read_k), "v": cat(a.read_v),
            "o": np.asarray(a.write_o).reshape(-1, a.write_o.shape[-1]), "mlp_in": layer.mlp_in,
            "mlp_out": layer.mlp_out}


def model_spectra(weights, heads: bool = True) -> list[dict]:
    """Spectral figures of every block matrix (head -1) and, with ``heads``, of every head's VO and QK maps.

    weights: ``VisionWeights``. Returns rows {"layer", "matrix", "head", **figures}, layer-major, in ``MATRICES``
    then ``HEAD_MAPS`` order (plain floats: JSON-able)."""
    rows = []
    for li, layer in enumerate(weights.layers):
        for name, W in block_matrices(layer).items():
            rows.append({"layer": li, "matrix": name, "head": -1, **matrix_spectrum(W)})
        if not heads:
            continue
        a = layer.attn
        for h in range(a.read_q.shape[0]):
            for name, (A, B) in (("vo", (a.read_v[h], a.write_o[h])), ("qk", (a.read_q[h], a.read_k[h].T))):
                s = factored_singular_values(A, B)
                rows.append({"layer": li, "matrix": name, "head": h, "shape": [A.shape[0], B.shape[1]],
                             "stable_rank": stable_rank(s), "effective_rank": effective_rank(s)})
    return rows


def spectral_drift(base: list[dict], tuned: list[dict],
                   figures=("alpha", "stable_rank", "effective_rank", "mp_ks")) -> list[dict]:
    """Per (layer, matrix, head) of both: the tuned figure minus the base's, for each of ``figures`` present
    ("d_alpha", ...), with the base's alpha kept as "alpha_base". Rows in the base's order."""
    by = {(r["layer"], r["matrix"], r["head"]): r for r in tuned}
    out = []
    for r in base:
        t = by.get((r["layer"], r["matrix"], r["head"]))
        if t is None:
            continue
        row = {"layer": r["layer"], "matrix": r["matrix"], "head": r["head"]}
        for f in figures:
            if f in r and f in t:
                row[f"d_{f}"] = float(t[f]) - float(r[f])
        if "alpha" in r:
            row["alpha_base"], row["alpha"] = r["alpha"], t.get("alpha", math.nan)
        out.append(row)
    return out
