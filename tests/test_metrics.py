"""Paper metrics on a 6-object array whose expected values are worked out by hand below."""
import math

import numpy as np
import pytest

from csst_sls_z.training.metrics import (binned, coverage, mean_uncertainty, outlier_fraction,
                                         sigma_nmad)

Z_TRUE = np.array([0.0, 0.5, 1.0, 1.0, 0.0, 3.0])
Z_PRED = np.array([0.02, 0.5, 1.06, 0.99, 0.01, 2.0])
# dz            = [0.02, 0.0, 0.06, -0.01, 0.01, -1.0]
# |dz| / (1+z)  = [0.02 (exactly at threshold: not an outlier), 0, 0.03, 0.005, 0.01, 0.25]
ZERR = np.array([0.01, 0.03, 0.02, 0.04, 0.005, 0.4])
# zerr / (1+z)  = [0.01, 0.02, 0.01, 0.02, 0.005, 0.1], sum 0.165


def test_sigma_nmad_by_hand():
    # median(dz) = (0.0 + 0.01)/2 = 0.005; |dz - 0.005| = [0.015, 0.005, 0.055, 0.015, 0.005, 1.005]
    # / (1+z) = [0.015, 0.003333, 0.0275, 0.0075, 0.005, 0.25125]; median = (0.0075 + 0.015)/2
    value = sigma_nmad(Z_PRED, Z_TRUE)
    assert type(value) is float
    assert value == pytest.approx(1.48 * 0.01125, rel=1e-12)


def test_outlier_fraction_by_hand():
    # outliers: 0.03 and 0.25; the object at exactly 0.02 is not one (strict >)
    value = outlier_fraction(Z_PRED, Z_TRUE)
    assert type(value) is float
    assert value == pytest.approx(2 / 6, rel=1e-12)
    # a looser threshold keeps only the catastrophic one; 0.0 makes everything with dz != 0 an outlier
    assert outlier_fraction(Z_PRED, Z_TRUE, threshold=0.1) == pytest.approx(1 / 6, rel=1e-12)
    assert outlier_fraction(Z_PRED, Z_TRUE, threshold=0.0) == pytest.approx(5 / 6, rel=1e-12)


def test_mean_uncertainty_by_hand():
    value = mean_uncertainty(ZERR, Z_TRUE)
    assert type(value) is float
    assert value == pytest.approx(0.165 / 6, rel=1e-12)


def test_coverage_by_hand_bounds_inclusive():
    lo = np.array([0.0, 0.4, 1.04, 0.95, -0.1, 1.6])
    hi = np.array([0.03, 0.6, 1.08, 1.03, 0.0, 2.4])
    # covered: 0 (lo == z), 1, 3, 4 (hi == z); not: 2 (above), 5 (below)
    value = coverage(Z_TRUE, lo, hi)
    assert type(value) is float
    assert value == pytest.approx(4 / 6, rel=1e-12)
    lo_nan = lo.copy()
    lo_nan[1] = np.nan                 # a missing bound never covers
    assert coverage(Z_TRUE, lo_nan, hi) == pytest.approx(3 / 6, rel=1e-12)


def test_nan_predictions():
    z_pred = Z_PRED.copy()
    z_pred[1] = np.nan                 # the perfect prediction is lost
    # counts as an outlier: 3 of 6
    assert outlier_fraction(z_pred, Z_TRUE) == pytest.approx(3 / 6, rel=1e-12)
    z_inf = Z_PRED.copy()
    z_inf[1] = np.inf
    assert outlier_fraction(z_inf, Z_TRUE) == pytest.approx(3 / 6, rel=1e-12)
    # excluded from sigma_nmad: dz = [0.02, 0.06, -0.01, 0.01, -1.0], median 0.01,
    # |dz - 0.01| / (1+z) = [0.01, 0.025, 0.01, 0.0, 0.2525], median 0.01
    assert sigma_nmad(z_pred, Z_TRUE) == pytest.approx(1.48 * 0.01, rel=1e-12)
    all_nan = np.full(6, np.nan)
    assert math.isnan(sigma_nmad(all_nan, Z_TRUE))
    assert outlier_fraction(all_nan, Z_TRUE) == 1.0
    zerr = ZERR.copy()
    zerr[5] = np.nan                   # E-bar over the 5 finite errors: 0.065 / 5
    assert mean_uncertainty(zerr, Z_TRUE) == pytest.approx(0.065 / 5, rel=1e-12)
    assert math.isnan(mean_uncertainty(all_nan, Z_TRUE))
    with pytest.raises(ValueError):
        sigma_nmad(Z_PRED, np.where(np.arange(6) == 0, np.nan, Z_TRUE))


def test_empty_inputs_give_nan():
    e = np.array([])
    assert math.isnan(sigma_nmad(e, e))
    assert math.isnan(outlier_fraction(e, e))
    assert math.isnan(mean_uncertainty(e, e))
    assert math.isnan(coverage(e, e, e))


def test_binned_counts_and_values():
    edges = [0.0, 0.75, 3.0]
    # bin [0, 0.75): objects 0, 1, 4; last bin [0.75, 3.0] is closed, so z = 3.0 is in it
    eta = binned(outlier_fraction, Z_TRUE, edges, Z_PRED, Z_TRUE)
    assert [b["n"] for b in eta] == [3, 3]
    assert [(b["lo"], b["hi"]) for b in eta] == [(0.0, 0.75), (0.75, 3.0)]
    assert eta[0]["value"] == 0.0
    assert eta[1]["value"] == pytest.approx(2 / 3, rel=1e-12)
    # sigma_nmad in the first bin: dz = [0.02, 0, 0.01], median 0.01,
    # |dz - 0.01| / (1+z) = [0.01, 0.01/1.5, 0], median 0.01/1.5
    nmad = binned(sigma_nmad, Z_TRUE, edges, Z_PRED, Z_TRUE)
    assert nmad[0]["value"] == pytest.approx(1.48 * 0.01 / 1.5, rel=1e-12)
    assert all(type(b["value"]) is float and type(b["n"]) is int for b in nmad)
    # bin on another quantity (here zerr as a stand-in for SNR); an empty bin gives NaN
    by_err = binned(mean_uncertainty, ZERR, [0.0, 0.015, 0.1, 1.0, 2.0], ZERR, Z_TRUE)
    assert [b["n"] for b in by_err] == [2, 3, 1, 0]
    assert by_err[0]["value"] == pytest.approx((0.01 + 0.005) / 2, rel=1e-12)
    assert math.isnan(by_err[3]["value"])
    with pytest.raises(ValueError):
        binned(sigma_nmad, Z_TRUE, [1.0, 0.0], Z_PRED, Z_TRUE)
