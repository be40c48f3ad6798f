"""Spectral diagnostics (METHODS.md section 13) by construction: planted power-law spectra give back their
exponent, Gaussian matrices follow Marchenko-Pastur, the ranks match their definitions, and the xmin scan is
powerlaw's own."""
import math

import numpy as np
import pytest

from weightscope.analyses.zoo.spectra import (effective_rank, fit_power_law, marchenko_pastur_cdf, matrix_spectrum,
                                               model_spectra, scan_xmin, spectral_drift, stable_rank)

pytest.importorskip("powerlaw", reason="needs the zoo extra (in .[dev] too)")



def _within_tolerance(fit, alpha):
    """The stated tolerance on a planted exponent from 768 eigenvalues: within 3 standard errors of the MLE,
    (alpha - 1) / sqrt(n_tail) (Clauset et al. 2009, eq. 3.2), and within 10 % of alpha."""
    se = (fit["alpha"] - 1) / math.sqrt(fit["n_tail"])
    return abs(fit["alpha"] - alpha) <= min(3 * se, 0.1 * alpha)


def _planted(alpha, n, m, seed):
    """W (n x m) whose ESD W^T W / n is a sample of p(lambda) ~ lambda^-alpha, lambda >= 1, in random bases."""
    rng = np.random.default_rng(seed)
    lam = (1 - rng.random(m)) ** (-1 / (alpha - 1))
    U, _ = np.linalg.qr(rng.standard_normal((n, m)))
    V, _ = np.linalg.qr(rng.standard_normal((m, m)))
    return (U * np.sqrt(lam * n)) @ V.T, np.sort(lam)


@pytest.mark.parametrize("alpha", [2.0, 3.0, 4.5])
def test_planted_power_law_exponent_recovered(alpha):
    W, lam = _planted(alpha, 800, 768, seed=int(alpha * 10))
    got = matrix_spectrum(W)
    assert _within_tolerance(got, alpha), got
    assert got["n_tail"] >= 100 and got["spikes"] > 0            # a heavy tail sticks out of the MP bulk
    # more draws, from the eigenvalues alone (the matrix adds only rounding)
    for seed in range(5):
        lam = (1 - np.random.default_rng(seed).random(768)) ** (-1 / (alpha - 1))
        assert _within_tolerance(fit_power_law(lam), alpha), seed


def test_xmin_scan_is_powerlaws_own_scan():
    import powerlaw

    for seed in range(3):
        rng = np.random.default_rng(seed)
        lam = np.sort((1 - rng.random(600)) ** (-1 / 2.0) * (1 + 0.5 * rng.random(600)))  # a bend, then a tail
        ref = powerlaw.Fit(lam, xmin=(float(lam[0]), float(lam[-10])), verbose=False,
                           parameter_ranges={"alpha": [1.0, 100.0]})
        ours = fit_power_law(lam)
        assert abs(ours["alpha"] - ref.power_law.alpha) < 0.05
        assert scan_xmin(lam) == pytest.approx(ref.xmin, rel=0.1)


@pytest.mark.parametrize("shape", [(1200, 300), (500, 500)])
def test_gaussian_matrix_follows_marchenko_pastur(shape):
    rng = np.random.default_rng(3)
    W = 0.02 * rng.standard_normal(shape)
    got = matrix_spectrum(W)
    assert got["mp_ks"] < 0.03 and got["spikes"] == 0
    assert got["sigma2"] == pytest.approx(0.02 ** 2, rel=0.02)
    heavy, _ = _planted(2.5, *shape[::-1] if shape[0] < shape[1] else shape, seed=0)
    assert matrix_spectrum(heavy)["mp_ks"] > 0.2              # and a planted heavy tail does not


def test_marchenko_pastur_cdf_matches_its_density():
    from scipy import integrate

    for q in (0.1, 0.5, 1.0):
        lo, hi = (1 - math.sqrt(q)) ** 2, (1 + math.sqrt(q)) ** 2
        pdf = lambda x: math.sqrt(max((hi - x) * (x - lo), 0)) / (2 * math.pi * q * x)  # noqa: E731
        for x in np.linspace(lo + 1e-3, hi, 5):
            assert marchenko_pastur_cdf(x, q) == pytest.approx(integrate.quad(pdf, lo, x)[0], abs=1e-5)
        assert marchenko_pastur_cdf(hi * 1.01, q) == 1.0 and marchenko_pastur_cdf(lo * 0.99, q) == 0.0


def test_ranks_by_definition():
    s = np.array([4.0, 2.0, 2.0, 0.0])
    assert stable_rank(s) == pytest.approx((16 + 4 + 4) / 16)
    p = np.array([0.5, 0.25, 0.25])
    assert effective_rank(s) == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    assert effective_rank(np.ones(7)) == pytest.approx(7) and stable_rank(np.zeros(3)) == 0.0


def test_model_spectra_rows_and_drift():
    from weightscope.models.adapters import describe_model
    from weightscope.shapes import bundled

    base = describe_model(bundled.load("base")[0])
    rows = model_spectra(base)
    L, H = len(base.layers), base.layers[0].attn.read_q.shape[0]
    assert len([r for r in rows if r["head"] == -1]) == 6 * L and len([r for r in rows if r["head"] >= 0]) == 2 * H * L
    vo = next(r for r in rows if r["matrix"] == "vo" and r["layer"] == 1 and r["head"] == 2)
    a = base.layers[1].attn
    s = np.linalg.svd(a.read_v[2].astype(np.float64) @ a.write_o[2], compute_uv=False)
    assert vo["stable_rank"] == pytest.approx(stable_rank(s), rel=1e-9)
    drift = spectral_drift(rows, rows)
    assert all(r["d_stable_rank"] == 0 for r in drift) and len(drift) == len(rows)
