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
* MULTIPLE_PEAKS (issue 15): among the P_ALT thresholds that flag at most
  ``MULTIPLE_PEAKS_MAX_GOOD`` of the validation objects that are not outliers, the one with the
  largest completeness among the outliers minus that fraction (Youden's J), scanning the
  P_ALT values ``MULTIPLE_PEAKS_SCAN`` (0.02 to 0.5: a second peak under 2% is no second solution;
  ties: the larger threshold, fewer flags); the largest of them when none flags few enough
  good objects. With fewer than
  ``MIN_SELECTED`` outliers there is nothing to choose on: ``MULTIPLE_PEAKS_FALLBACK``.
  Without P_ALT (a set whose p(z) was not computed) the file gets no MPEAKPAL and the bit
  stays disabled.

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
MULTIPLE_PEAKS_MAX_GOOD = 0.10                  # at most this fraction of good objects flagged
MULTIPLE_PEAKS_SCAN = np.round(np.arange(0.02, 0.501, 0.005), 3)   # P_ALT thresholds tried
MULTIPLE_PEAKS_FALLBACK = 0.3


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


def choose_thresholds(z, zerr, z_true, snr_gi, val_features, train_features, z_min, z_max, p_alt=None):
    """(Thresholds, why): the thresholds and one line of reasoning for each.

    z, zerr: calibrated Z and ZERR of the validation objects; z_true, snr_gi: theirs;
    val_features: their backbone features; train_features: the training feature sample;
    p_alt: their P_ALT (None: MULTIPLE_PEAKS is left disabled).
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
    if p_alt is not None:
        multiple, reason = choose_multiple_peaks(z, z_true, p_alt)
        th = replace(th, multiple_peaks=multiple)
        why.append(reason)
    return th, why


def choose_multiple_peaks(z, z_true, p_alt) -> tuple[float, str]:
    """(threshold, why): the P_ALT above which MULTIPLE_PEAKS is set (module doc)."""
    from .metrics import OUTLIER_THRESHOLD
    z, z_true, p_alt = (np.asarray(v, dtype=float) for v in (z, z_true, p_alt))
    with np.errstate(invalid="ignore"):
        outlier = ~(np.abs(z - z_true) / (1.0 + z_true) <= OUTLIER_THRESHOLD)
    p_alt = np.where(np.isfinite(p_alt), p_alt, 0.0)
    n_out, n_good = int(outlier.sum()), int((~outlier).sum())
    if n_out < MIN_SELECTED or n_good < MIN_SELECTED:
        return MULTIPLE_PEAKS_FALLBACK, (
            f"MULTIPLE_PEAKS {MULTIPLE_PEAKS_FALLBACK:.3f}: fallback, {n_out} validation outliers and {n_good} "
            f"good objects are too few to choose on (at least {MIN_SELECTED} each).")
    best = None
    for t in MULTIPLE_PEAKS_SCAN:
        flagged = p_alt > t
        complete = float(flagged[outlier].mean())
        false = float(flagged[~outlier].mean())
        if false <= MULTIPLE_PEAKS_MAX_GOOD and (best is None or complete - false >= best[1] - best[2]):
            best = (float(t), complete, false)
    if best is None:
        t = float(MULTIPLE_PEAKS_SCAN[-1])
        flagged = p_alt > t
        return t, (f"MULTIPLE_PEAKS {t:.3f}: the largest P_ALT scanned; even it flags "
                   f"{flagged[~outlier].mean():.1%} of the good validation objects (more than "
                   f"{MULTIPLE_PEAKS_MAX_GOOD:.0%}), catching {flagged[outlier].mean():.0%} of the outliers.")
    t, complete, false = best
    return t, (f"MULTIPLE_PEAKS {t:.3f}: P_ALT above which the flag catches {complete:.0%} of the {n_out} "
               f"validation outliers (|dz|/(1+z) > {OUTLIER_THRESHOLD}) and flags {false:.1%} of the {n_good} "
               f"good objects; the largest catch-minus-false among thresholds flagging at most "
               f"{MULTIPLE_PEAKS_MAX_GOOD:.0%} of good objects.")
