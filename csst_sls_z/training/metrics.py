"""Redshift-quality metrics of Zhou et al. 2024 (ApJ 977, 69, Sect. 4).

With dz = z_pred - z_true:

* sigma_NMAD = 1.48 * median(|dz - median(dz)| / (1 + z_true))   (the normalised
  median absolute deviation, as in the authors' public code);
* eta, the outlier fraction: objects with |dz| / (1 + z_true) > 0.02 (strictly
  greater, so an object exactly at the threshold is not an outlier);
* E-bar, the mean normalised uncertainty: mean(zerr / (1 + z_true));
* coverage: the fraction of truths inside [lo, hi] (bounds inclusive).

Non-finite predictions are handled consistently and never silently dropped from
the outlier count: an object whose z_pred is NaN/inf is a failure, so it counts as
an outlier in eta (the denominator is all objects), while it is excluded from
sigma_NMAD, which measures the scatter of the objects that do have a prediction
(NaN when none does). Likewise non-finite zerr are excluded from E-bar, and a
non-finite interval bound never covers the truth. z_true must be finite.
Empty inputs give NaN. Every metric returns a plain Python float.
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

OUTLIER_THRESHOLD = 0.02
NMAD_FACTOR = 1.48


def _as_1d(*arrays):
    out = [np.asarray(a, dtype=float).ravel() for a in arrays]
    n = out[0].size
    if any(a.size != n for a in out):
        raise ValueError(f"arrays of different lengths: {[a.size for a in out]}")
    return out


def _check_truth(z_true):
    if not np.all(np.isfinite(z_true)):
        raise ValueError("z_true contains non-finite values")


def sigma_nmad(z_pred, z_true) -> float:
    """1.48 * median(|dz - median(dz)| / (1 + z_true)) over objects with finite z_pred."""
    z_pred, z_true = _as_1d(z_pred, z_true)
    _check_truth(z_true)
    ok = np.isfinite(z_pred)
    if not ok.any():
        return float("nan")
    dz = z_pred[ok] - z_true[ok]
    return float(NMAD_FACTOR * np.median(np.abs(dz - np.median(dz)) / (1.0 + z_true[ok])))


def outlier_fraction(z_pred, z_true, threshold: float = OUTLIER_THRESHOLD) -> float:
    """eta: fraction with |dz| / (1 + z_true) > threshold; non-finite z_pred count as outliers."""
    z_pred, z_true = _as_1d(z_pred, z_true)
    _check_truth(z_true)
    if z_pred.size == 0:
        return float("nan")
    with np.errstate(invalid="ignore"):
        good = np.abs(z_pred - z_true) / (1.0 + z_true) <= threshold   # False for NaN/inf
    return float(1.0 - np.count_nonzero(good) / z_pred.size)


def mean_uncertainty(zerr, z_true) -> float:
    """E-bar: mean(zerr / (1 + z_true)) over objects with finite zerr."""
    zerr, z_true = _as_1d(zerr, z_true)
    _check_truth(z_true)
    ok = np.isfinite(zerr)
    if not ok.any():
        return float("nan")
    return float(np.mean(zerr[ok] / (1.0 + z_true[ok])))


def coverage(z_true, lo, hi) -> float:
    """Fraction of objects with lo <= z_true <= hi (a non-finite bound does not cover)."""
    z_true, lo, hi = _as_1d(z_true, lo, hi)
    _check_truth(z_true)
    if z_true.size == 0:
        return float("nan")
    with np.errstate(invalid="ignore"):
        inside = np.isfinite(lo) & np.isfinite(hi) & (lo <= z_true) & (z_true <= hi)
    return float(np.count_nonzero(inside) / z_true.size)


def binned(metric_fn, x, edges, *arrays) -> list:
    """metric_fn(*arrays restricted to the bin) in bins of x (e.g. redshift or SNR).

    Bins are [edges[i], edges[i+1]), the last one closed on the right; objects with
    non-finite x or outside the edges fall in no bin. Returns one dict per bin:
    {'lo': float, 'hi': float, 'n': int, 'value': float}, value NaN for an empty bin
    (metric_fn is not called then).
    Example: binned(sigma_nmad, z_true, edges, z_pred, z_true).
    """
    x = np.asarray(x, dtype=float).ravel()
    edges = np.asarray(edges, dtype=float).ravel()
    if edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError("edges must be strictly increasing with at least two entries")
    arrays = [np.asarray(a).ravel() for a in arrays]
    if any(a.size != x.size for a in arrays):
        raise ValueError("every array must have the length of x")
    out = []
    nb = edges.size - 1
    for i in range(nb):
        lo, hi = edges[i], edges[i + 1]
        sel = (x >= lo) & ((x <= hi) if i == nb - 1 else (x < hi))
        n = int(np.count_nonzero(sel))
        value = float(metric_fn(*(a[sel] for a in arrays))) if n else float("nan")
        out.append({"lo": float(lo), "hi": float(hi), "n": n, "value": value})
    return out
