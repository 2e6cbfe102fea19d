"""Calibration of Gaussian predictive distributions: Beta map and single scale factor.

Synthetic validation sets: n = 20000 objects with varied reported sigmas; fits use the
first half, coverages are measured on the second half (fixed seeds, so deterministic).
"""
import json
import math

import numpy as np
import pytest
from scipy.special import ndtri

from csst_sls_z.calibration import BetaCalibration, ScaleCalibration, calibrated_summary, calibration_from_dict
from csst_sls_z.training.calibration_fit import fit_beta, fit_scale, pit, reliability_curve

N = 20000
HALF = N // 2


def make_set(seed, factor=1.0, shift=0.0):
    """z_true = mean + shift*sigma + factor*sigma*N(0,1) with sigma the *reported* sigma."""
    rng = np.random.default_rng(seed)
    mean = rng.uniform(0.0, 1.5, N)
    sigma = rng.uniform(0.002, 0.03, N) * (1.0 + mean)
    z_true = mean + shift * sigma + factor * sigma * rng.standard_normal(N)
    fit = (mean[:HALF], sigma[:HALF], z_true[:HALF])
    test = (mean[HALF:], sigma[HALF:], z_true[HALF:])
    return fit, test


def cover(calib, test):
    """(68% coverage, 95% coverage, fraction below the calibrated median, fraction below Z_LO)."""
    mean, sigma, z = test
    s = calibrated_summary(calib, mean, sigma)
    c68 = np.mean((z >= s["Z_LO"]) & (z <= s["Z_HI"]))
    c95 = np.mean((z >= s["Z_LO95"]) & (z <= s["Z_HI95"]))
    return c68, c95, np.mean(z <= s["Z"]), np.mean(z < s["Z_LO"])


@pytest.fixture(scope="module")
def too_small():
    return make_set(1, factor=2.0)


@pytest.fixture(scope="module")
def too_large():
    return make_set(2, factor=0.5)


@pytest.fixture(scope="module")
def biased():
    return make_set(3, shift=0.5)


# 1 ---------------------------------------------------------------------------------
def test_identity_gives_gaussian_quantiles():
    mean = np.array([0.1, 0.8, 1.4])
    sigma = np.array([0.01, 0.02, 0.05])
    q = np.array([0.025, 0.15865, 0.5, 0.84135, 0.975])
    gauss = mean[:, None] + sigma[:, None] * ndtri(q)
    for ident in (BetaCalibration.IDENTITY, BetaCalibration.identity(), ScaleCalibration.IDENTITY):
        zq = ident.quantiles(mean, sigma, q)
        assert zq.shape == (3, 5)
        np.testing.assert_allclose(zq, gauss, rtol=0, atol=1e-12)
        assert ident.quantiles(mean, sigma, 0.5).shape == (3,)
    F = np.linspace(0.0, 1.0, 11)
    np.testing.assert_allclose(BetaCalibration.IDENTITY.cdf_map(F), F, atol=1e-12)
    s = calibrated_summary(BetaCalibration.IDENTITY, mean, sigma)
    assert set(s) == {"Z", "Z_LO", "Z_HI", "ZERR", "Z_LO95", "Z_HI95"}
    np.testing.assert_allclose(s["Z"], mean, atol=1e-12)
    np.testing.assert_allclose(s["ZERR"], sigma * ndtri(0.84135), rtol=1e-9)
    np.testing.assert_allclose(s["Z_HI95"], mean + 1.959963984540054 * sigma, rtol=1e-9)


# 2 ---------------------------------------------------------------------------------
def test_sigmas_too_small_by_two(too_small):
    fit, test = too_small
    raw68, raw95, _, _ = cover(BetaCalibration.IDENTITY, test)
    assert raw68 < 0.45 and raw95 < 0.7          # P(|N| < 0.5) = 0.38: badly over-confident
    c68, c95, med, _ = cover(fit_beta(*fit), test)
    assert abs(c68 - 0.6827) < 0.03
    assert abs(c95 - 0.95) < 0.03
    assert abs(med - 0.5) < 0.02
    sc = fit_scale(*fit)
    assert sc.scale == pytest.approx(2.0, rel=0.05)
    c68, c95, _, _ = cover(sc, test)
    assert abs(c68 - 0.6827) < 0.03 and abs(c95 - 0.95) < 0.03
    assert fit_scale(*fit, method="coverage68").scale == pytest.approx(2.0, rel=0.05)


def test_pure_beta_family_limit(too_small):
    # Without the width pre-scale the 3-parameter Beta map cannot follow the map a factor-2
    # sigma error needs (its tails go as F**a): 68% is fine, the 95% interval stays ~0.92.
    fit, test = too_small
    calib = fit_beta(*fit, prescale=False)
    assert calib.scale == 1.0
    c68, c95, _, _ = cover(calib, test)
    assert abs(c68 - 0.6827) < 0.03
    assert 0.90 < c95 < 0.95


# 3 ---------------------------------------------------------------------------------
def test_sigmas_too_large_by_two(too_large):
    fit, test = too_large
    raw68, _, _, _ = cover(BetaCalibration.IDENTITY, test)
    assert raw68 > 0.9                            # P(|N| < 2) = 0.95: under-confident
    for calib in (fit_beta(*fit), fit_beta(*fit, prescale=False), fit_scale(*fit)):
        c68, c95, _, _ = cover(calib, test)
        assert abs(c68 - 0.6827) < 0.03, calib
        assert abs(c95 - 0.95) < 0.03, calib
    assert fit_scale(*fit).scale == pytest.approx(0.5, rel=0.05)


# 4 ---------------------------------------------------------------------------------
def test_bias_corrected_by_beta_not_by_scale(biased):
    fit, test = biased
    beta = fit_beta(*fit)
    assert beta.c < -0.2                          # c absorbs the shift (truth lies high)
    b68, b95, bmed, blo = cover(beta, test)
    s68, s95, smed, slo = cover(fit_scale(*fit), test)
    assert abs(b68 - 0.6827) < 0.03 and abs(b95 - 0.95) < 0.03
    assert abs(bmed - 0.5) < 0.02                 # median recovered ...
    assert abs(blo - 0.15865) < 0.02              # ... and the interval is not lopsided
    assert abs(smed - 0.5) > 0.15                 # a scale cannot move the median: Phi(-0.5) = 0.31
    assert abs(slo - 0.15865) > 0.08
    assert abs(bmed - 0.5) < abs(smed - 0.5)


# 5 ---------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["too_small", "too_large", "biased"])
def test_map_monotone_endpoints_and_inverse(which, request):
    fit, _ = request.getfixturevalue(which)
    for calib in (fit_beta(*fit), fit_beta(*fit, prescale=False)):
        assert calib.a > 0 and calib.b > 0 and calib.scale > 0
        assert calib.cdf_map(0.0) == 0.0 and calib.cdf_map(1.0) == 1.0
        F = np.linspace(0.0, 1.0, 2001)
        G = calib.cdf_map(F)
        assert np.all(np.diff(G) > 0)
        Fi = np.concatenate([np.logspace(-8, -1, 15), np.linspace(0.1, 0.9, 17),
                             1 - np.logspace(-1, -8, 15)])
        Gi = calib.cdf_map(Fi)
        # where G itself has rounded to (nearly) 0 or 1 in double precision F cannot come back
        ok = (Gi > 1e-10) & (Gi < 1 - 1e-10)
        assert ok.sum() >= 15
        np.testing.assert_allclose(calib.inverse(Gi[ok]), Fi[ok], rtol=1e-6, atol=1e-9)
        q = np.array([[0.025, 0.5], [0.84135, 0.975]])
        np.testing.assert_allclose(calib.cdf_map(calib.inverse(q)), q, rtol=1e-9)
        assert calib.inverse(q).shape == (2, 2)
        assert calib.inverse(0.0) == 0.0 and calib.inverse(1.0) == 1.0


def test_inverse_closed_form_matches_root_search():
    sym = BetaCalibration(0.5, 0.5, 0.3)           # a == b: closed form
    near = BetaCalibration(0.5, 0.5 + 1e-12, 0.3)  # a != b: brentq
    q = np.array([0.001, 0.1, 0.5, 0.9, 0.999])
    np.testing.assert_allclose(sym.inverse(q), near.inverse(q), rtol=1e-9)
    with pytest.raises(ValueError):
        BetaCalibration(-1.0, 1.0, 0.0)
    with pytest.raises(ValueError):
        ScaleCalibration(0.0)


# 6 ---------------------------------------------------------------------------------
def test_dict_round_trip(biased):
    beta = fit_beta(*biased[0])
    scale = fit_scale(*biased[0])
    for calib in (beta, scale):
        d = calib.to_dict()
        assert all(type(v) is float for k, v in d.items() if k != "kind")
        d2 = json.loads(json.dumps(d))
        assert type(calib).from_dict(d2) == calib
        assert calibration_from_dict(d2) == calib
    with pytest.raises(ValueError):
        BetaCalibration.from_dict(scale.to_dict())
    # a stored pure-Beta entry without 'scale' reads back with scale = 1
    assert BetaCalibration.from_dict({"a": 2.0, "b": 1.5, "c": 0.1}) == BetaCalibration(2.0, 1.5, 0.1, 1.0)


# 7 ---------------------------------------------------------------------------------
def test_reliability_curve_by_hand():
    F = np.array([0.5, 0.1, 0.9, 0.3, np.nan])
    exp, obs = reliability_curve(F, n_bins=2)
    np.testing.assert_allclose(exp, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(obs, [0.25, 0.5, 1.0])       # |F - 0.5| = 0, .4, .4, .2
    _, obs_cdf = reliability_curve(F, n_bins=2, kind="cdf")
    np.testing.assert_allclose(obs_cdf, [0.0, 0.75, 1.0])


@pytest.mark.parametrize("which", ["too_small", "too_large", "biased"])
def test_reliability_of_calibrated_pits(which, request):
    fit, test = request.getfixturevalue(which)
    F = pit(*test)
    exp, raw = reliability_curve(F, kind="cdf")
    assert np.max(np.abs(raw - exp)) > 0.1       # uncalibrated is visibly off
    calib = fit_beta(*fit)
    for kind in ("central", "cdf"):
        exp, obs = reliability_curve(calib.cdf_map(F), n_bins=20, kind=kind)
        assert exp.shape == obs.shape == (21,)
        assert np.max(np.abs(obs - exp)) < 0.03, kind


def test_fit_ignores_bad_objects(too_small):
    mean, sigma, z = (a.copy() for a in too_small[0])
    mean[:50] = np.nan
    sigma[50:100] = 0.0
    calib = fit_beta(mean, sigma, z)
    assert math.isfinite(calib.a) and calib.scale == pytest.approx(2.0, rel=0.05)
    with pytest.raises(ValueError):
        fit_beta(mean[:5], sigma[:5], z[:5])


# Weighted fits -----------------------------------------------------------------------
def test_unit_weights_reproduce_the_unweighted_fit(too_small):
    fit, _ = too_small
    w = np.full(HALF, 3.7)
    for prescale in (True, False):
        a, b = fit_beta(*fit, prescale=prescale), fit_beta(*fit, prescale=prescale, weights=w)
        np.testing.assert_allclose([b.a, b.b, b.c, b.scale], [a.a, a.b, a.c, a.scale], rtol=1e-6, atol=1e-9)
    for method in ("nll", "coverage68"):
        assert fit_scale(*fit, method=method, weights=w).scale == pytest.approx(
            fit_scale(*fit, method=method).scale, rel=1e-12)


def test_weights_carry_the_fit_to_a_shifted_population():
    """Sigmas are right at low z and too small by 2.5 at high z; the target lives at low z.

    The validation set is flat in z; weighting it by n_target(z) / n_val(z) must give the
    target's coverage, which the unweighted fit (dominated by high z) misses.
    """
    rng = np.random.default_rng(7)

    def draw(z):
        sigma = 0.01 * (1 + z)
        factor = np.where(z < 0.5, 1.0, 2.5)
        return z + factor * sigma * rng.standard_normal(z.size), sigma, z

    z_val = rng.uniform(0.0, 1.5, 20000)
    val = draw(z_val)
    target_pdf = lambda z: np.where(z < 0.5, 0.9 / 0.5, 0.1 / 1.0)     # 90% of the target at z < 0.5
    weights = target_pdf(z_val) / (1 / 1.5)
    u = rng.random(20000)
    z_target = np.where(u < 0.9, rng.uniform(0, 0.5, 20000), rng.uniform(0.5, 1.5, 20000))
    target = draw(z_target)
    weighted68, weighted95, _, _ = cover(fit_beta(*val, weights=weights), target)
    plain68, _, _, _ = cover(fit_beta(*val), target)
    assert abs(weighted68 - 0.6827) < 0.02 and abs(weighted95 - 0.9545) < 0.03
    assert plain68 > 0.76                       # the unweighted map widens the low-z majority too much
    assert abs(cover(fit_scale(*val, method="coverage68", weights=weights), target)[0] - 0.6827) < 0.02


def test_weights_must_match_and_be_usable(too_small):
    fit, _ = too_small
    with pytest.raises(ValueError, match="weights"):
        fit_beta(*fit, weights=np.ones(HALF - 1))
    w = np.ones(HALF)
    w[:HALF - 5] = 0.0                            # only 5 objects keep a weight
    with pytest.raises(ValueError, match="at least"):
        fit_scale(*fit, weights=w)


def test_central_interval_matched_despite_catastrophic_outliers():
    """A quarter of the objects are catastrophic outliers (heavy tails): the log-loss Beta fit
    alone misses the central 68% level; matching the scale afterwards hits it, on the fit set
    exactly and on a fresh draw within sampling error."""
    def draw(seed):
        rng = np.random.default_rng(seed)
        mean = rng.uniform(0.0, 1.5, N)
        sigma = rng.uniform(0.002, 0.03, N) * (1.0 + mean)
        outlier = rng.random(N) < 0.25
        z = mean + sigma * np.where(outlier, 15.0 * rng.standard_normal(N), 1.3 * rng.standard_normal(N))
        return mean, sigma, z
    fit, fresh = draw(11), draw(12)
    plain = fit_beta(*fit, match_central=False)
    matched = fit_beta(*fit)
    assert (matched.a, matched.b, matched.c) == (plain.a, plain.b, plain.c)      # only the width moves
    assert abs(cover(plain, fit)[0] - 0.6827) > 0.01                               # the compromise misses
    assert cover(matched, fit)[0] == pytest.approx(0.6827, abs=2.0 / N)
    assert cover(matched, fresh)[0] == pytest.approx(0.6827, abs=0.015)
    pure = fit_beta(*fit, prescale=False)
    assert pure.scale == 1.0                                                       # pure Beta: untouched
