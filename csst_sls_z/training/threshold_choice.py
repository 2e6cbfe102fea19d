"""How the calibrate step chooses the ZWARN thresholds, with every number named.

On the validation set (calibrated Z and ZERR, the true z, SNR_GI and backbone features)
and a sample of the training features:

* LOW_SNR: the largest SNR_GI below which at least ``LOW_SNR_ETA`` of the validation
  objects are outliers, scanning SNR_GI percentiles ``LOW_SNR_SCAN`` (50 down to 1);
  the ``LOW_SNR_FALLBACK`` percentile when none qualifies;
* LARGE_ZERR: the smallest ZERR/(1+Z) above which at least ``LARGE_ZERR_ETA`` of them
  are outliers, scanning percentiles ``LARGE_ZERR_SCAN`` (50 up to 99.5); the
  ``LARGE_ZERR_FALLBACK`` percentile when none qualifies;
* a selection counts only with at least ``MIN_SELECTED`` objects;
* OUT_OF_DISTRIBUTION: the ``OOD_PERCENTILE`` percentile of the validation objects'
  Mahalanobis distance (per dimension) from the training features, whose covariance gets
  ``COVARIANCE_RIDGE`` on its diagonal before it is inverted.

The thresholds file's HISTORY says the same, with the values chosen.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

LOW_SNR_ETA = 0.25
LOW_SNR_SCAN = np.arange(50, 0, -1)           # SNR_GI percentiles, highest first
LOW_SNR_FALLBACK = 5                           # percentile
LARGE_ZERR_ETA = 0.5
LARGE_ZERR_SCAN = np.arange(50, 100, 0.5)      # ZERR/(1+Z) percentiles, lowest first
LARGE_ZERR_FALLBACK = 99                       # percentile
MIN_SELECTED = 20
OOD_PERCENTILE = 99.9
COVARIANCE_RIDGE = 1e-6


def choose_low_snr(z, z_true, snr_gi) -> float:
    from .metrics import outlier_fraction
    for s in np.percentile(snr_gi, LOW_SNR_SCAN):
        sel = snr_gi < s
        if sel.sum() >= MIN_SELECTED and outlier_fraction(z[sel], z_true[sel]) >= LOW_SNR_ETA:
            return float(s)
    return float(np.percentile(snr_gi, LOW_SNR_FALLBACK))


def choose_large_zerr(z, z_true, rel_err) -> float:
    from .metrics import outlier_fraction
    for t in np.percentile(rel_err, LARGE_ZERR_SCAN):
        sel = rel_err > t
        if sel.sum() >= MIN_SELECTED and outlier_fraction(z[sel], z_true[sel]) >= LARGE_ZERR_ETA:
            return float(t)
    return float(np.percentile(rel_err, LARGE_ZERR_FALLBACK))


def choose_thresholds(z, zerr, z_true, snr_gi, val_features, train_features, z_min, z_max):
    """(Thresholds, why): the thresholds and one line of reasoning for each.

    z, zerr: calibrated Z and ZERR of the validation objects; z_true, snr_gi: theirs;
    val_features: their backbone features; train_features: the training feature sample.
    """
    from ..reffiles.tables import Thresholds
    rel_err = zerr / (1 + z)
    low_snr = choose_low_snr(z, z_true, snr_gi)
    large = choose_large_zerr(z, z_true, rel_err)
    feats = np.asarray(train_features, np.float64)
    cov = np.cov(feats, rowvar=False) + COVARIANCE_RIDGE * np.eye(feats.shape[1])
    th = Thresholds(low_snr=low_snr, large_zerr=large, ood_max=0.0, ood_mean=feats.mean(axis=0),
                    ood_precision=np.linalg.inv(cov), z_min=z_min, z_max=z_max)
    ood_max = float(np.percentile(th.ood_distance(np.asarray(val_features, np.float64)), OOD_PERCENTILE))
    th = replace(th, ood_max=ood_max)
    why = [f"LOW_SNR {low_snr:.3f}: largest SNR_GI below which >= {LOW_SNR_ETA:.0%} of validation objects "
           "are outliers.",
           f"LARGE_ZERR {large:.5f}: smallest ZERR/(1+Z) above which >= {LARGE_ZERR_ETA:.0%} of validation "
           "objects are outliers.",
           f"OOD {ood_max:.3f}: {OOD_PERCENTILE:g}th percentile of validation feature Mahalanobis distance "
           "(per dim)."]
    return th, why
